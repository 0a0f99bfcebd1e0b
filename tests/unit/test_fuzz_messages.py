"""The fuzz corpus (``tests/fuzz_messages.py``) against the decoder alone: fast, no broker.

Checks the generator is what the e2e fuzz test relies on: deterministic, every category present, and
each message decoded as its ``expect`` says (rejections with one of the decoder's fixed reasons),
without the decoder ever raising. The e2e test then only has to show the daemon process agrees.
The same for the control channel's records (``generate_records``) against their parsers.
"""

from __future__ import annotations

import os
import pickle
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu.compression import decompress
from tests.fuzz_messages import (
    ACCEPTED,
    CONTROL_STATE,
    HEARTBEAT,
    LIVE_VIEW,
    NETWORK,
    REJECTED,
    ROLL_CALL,
    UNPACKABLE,
    WEIGHTS,
    FuzzMessage,
    FuzzRecord,
    as_delivered,
    generate,
    generate_records,
)

from rpcdaemon.control.state import MAX_TEXT, ControlState, DaemonView, Presence, RecordError
from rpcdaemon.model import Heartbeat, NetworkChanged, NetworkDeleted
from rpcdaemon.observing.decode import Rejected, decode_message

KINDS = {"too large", "not UTF-8", "not JSON", "too deep", "bad envelope", "not handled", "bad heartbeat",
         "bad network event"}
FLEET = (("f-l3-a", "L3 agent"), ("f-dhcp-a", "DHCP agent"))


def decoded(m: FuzzMessage) -> str:
    body = as_delivered(m)
    if body is None:
        return UNPACKABLE
    got = decode_message(body, routing_key=m.routing_key, received_at=1.0)
    if isinstance(got, Rejected):
        assert got.kind in KINDS, got.reason
        return REJECTED
    if isinstance(got, Heartbeat):
        assert (got.host, got.agent_type) not in FLEET, f"{m.category} spoofs a real agent: {got}"
        return HEARTBEAT
    assert isinstance(got, (NetworkDeleted, NetworkChanged)), got
    return NETWORK


def test_every_message_decodes_as_expected_and_the_decoder_never_raises() -> None:
    messages = list(generate(3000, seed=11, host_prefix="f-", fleet=FLEET, huge=3))
    began = time.perf_counter()
    wrong = [(m.category, m.expect, decoded(m), m.body[:120]) for m in messages if decoded(m) != m.expect]
    took = time.perf_counter() - began
    assert wrong == [], wrong[:5]
    assert {m.category for m in messages} >= {"non-json", "binary", "truncated", "deep", "pickle", "compressed",
                                              "envelope", "bad-heartbeat", "numbers", "odd-heartbeat",
                                              "notification", "unknown-network", "fanout", "big", "huge", "charset"}
    assert sum(m.expect == REJECTED for m in messages) > 0.8 * len(messages)
    assert took < 30, f"decoding 3000 fuzz messages took {took:.1f} s"


def test_the_stream_is_deterministic_and_covers_the_routing_keys() -> None:
    first = list(generate(500, seed=3))
    assert first == list(generate(500, seed=3))
    assert first != list(generate(500, seed=4))
    assert {(m.exchange, m.routing_key) for m in first} == {
        ("neutron", "q-reports-plugin"), ("neutron", "q-plugin"), ("neutron", "notifications.info"),
        ("dhcp_agent_fanout", "")}
    assert len({m.category for m in generate(len(WEIGHTS), seed=1, huge=0)}) >= len(WEIGHTS) - 1


def test_exactly_the_huge_messages_are_near_a_megabyte() -> None:
    sizes = [len(m.body) for m in generate(2000, seed=5, huge=3)]
    assert sum(size > 700_000 for size in sizes) == 3
    assert max(sizes) > 1024 * 1024


def test_bad_compression_headers_are_what_kombu_cannot_unpack() -> None:
    messages = list(generate(2000, seed=2))
    bad = [m for m in messages if m.expect == UNPACKABLE]
    assert bad
    # py-amqp turns a body with a text content_encoding into str, which kombu cannot decompress.
    assert all(m.content_encoding == "binary" for m in messages if m.compression and m.expect != UNPACKABLE)
    for m in bad:
        assert m.compression is not None
        with pytest.raises((zlib.error, OSError, KeyError)):
            decompress(m.body, m.compression)


def test_the_pickle_canary_fires_only_when_unpickled(tmp_path: Path) -> None:
    canary = tmp_path / "unpickled"
    pickles = [m for m in generate(1000, seed=7, canary=str(canary)) if m.category == "pickle"]
    assert pickles
    assert all(m.routing_key == "notifications.info" for m in pickles)
    assert all(decoded(m) == REJECTED for m in pickles)
    assert not canary.exists()
    pickle.loads(pickles[0].body)  # what a consumer with pickle enabled would do
    assert canary.is_dir()
    os.rmdir(canary)


RECORD_PARSERS: dict[str, Callable[[bytes], ControlState | DaemonView | Presence]] = {
    CONTROL_STATE: ControlState.from_json, LIVE_VIEW: DaemonView.from_json, ROLL_CALL: Presence.from_json}


def parsed(r: FuzzRecord) -> str:
    try:
        value = RECORD_PARSERS[r.category](r.body)
    except RecordError as exc:
        problem: str | None = exc.problem
    else:
        problem = None
    if problem is not None:
        assert "malformed (" not in problem, (r.shape, problem)  # a field reader named it
        return REJECTED
    texts = [value.by, value.event] if isinstance(value, ControlState) else [value.instance, value.version]
    assert all(len(t) <= MAX_TEXT and "\n" not in t and "\x1b" not in t for t in texts)
    return ACCEPTED


def test_every_record_parses_as_expected_and_the_parsers_never_raise_otherwise() -> None:
    records = list(generate_records(3000, seed=11))
    began = time.perf_counter()
    wrong = [(r.category, r.shape, r.expect, r.body[:120]) for r in records if parsed(r) != r.expect]
    took = time.perf_counter() - began
    assert wrong == [], wrong[:5]
    assert {(r.category, r.shape) for r in records} == {
        (c, s) for c in (CONTROL_STATE, LIVE_VIEW, ROLL_CALL)
        for s in ("raw", "huge-int", "non-finite", "deep", "number", "text", "object", "version", "oversize",
                  "unknown-fields", "odd-text", "well-formed")}
    assert sum(r.expect == REJECTED for r in records) > 0.6 * len(records)
    assert list(generate_records(300, seed=3)) == list(generate_records(300, seed=3))
    assert took < 30, f"parsing 3000 fuzz records took {took:.1f} s"
