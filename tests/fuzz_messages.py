"""A seeded generator of hostile bus messages, and a fast publisher for them.

Used by the e2e fuzz test (``tests/e2e/test_fuzz.py``), its unit check against the decoder
(``tests/unit/test_fuzz_messages.py``) and the soak benchmark (``bench/bench_fuzz.py``). The same
``seed`` always gives the same messages. Each ``FuzzMessage`` says what ``decode_message`` must make
of it (``expect``): most are rejected; some are well-formed but useless to the daemon (heartbeats
of hosts Neutron does not know, deletes of networks that do not exist) and must change nothing.

``generate_records`` is the same for the control channel's records (``rpcdaemon.control``): a category
per record kind (``control-state``, ``live-view``, ``roll-call``), each ``FuzzRecord`` hostile bytes for
that kind's queue (the 400-digit time, the 100,000-deep nest, NaN, 1e400, wrong types, out-of-range
times and counts, oversize, another version) or a well-formed one the parser must take (unknown fields,
control characters in its texts). Its unit check is there too; the control-state one goes to a real
daemon in ``tests/component/test_control_records_process.py``.

Every report_state carries ``time`` = 2000-01-01: neutron-server, which consumes the same routing
keys, skips reports older than its own start ("Stale message received"), so the flood registers no
junk agents in Neutron; the daemon ignores the agents' clock. Junk host names start with
``host_prefix`` so that a test's cleanup of its hosts' agents covers them too.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import random
import socket
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

REJECTED = "rejected"  # decode_message gives Rejected
HEARTBEAT = "heartbeat"  # a Heartbeat, of a host or type the fleet does not have
NETWORK = "network"  # NetworkDeleted / NetworkChanged for a network that does not exist
UNPACKABLE = "unpackable"  # kombu cannot unpack it (bad compression header): never reaches decode

NEUTRON = "neutron"
DHCP_FANOUT = "dhcp_agent_fanout"
REPORTS, PLUGIN, NOTIFICATIONS = "q-reports-plugin", "q-plugin", "notifications.info"
STALE_TIME = "2000-01-01T00:00:00.000000"  # older than any neutron-server start: it skips these
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class FuzzMessage:
    category: str
    exchange: str
    routing_key: str
    body: bytes
    expect: str = REJECTED
    content_type: str = JSON
    content_encoding: str = "utf-8"
    compression: str | None = None  # the kombu ``compression`` header, when set


@dataclass(frozen=True, slots=True)
class PublishStats:
    count: int
    seconds: float
    bytes: int
    by_category: dict[str, int]
    by_expect: dict[str, int]

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def describe(self) -> str:
        return (f"{self.count} fuzz messages ({self.bytes / 1e6:.1f} MB) published in {self.seconds:.2f} s, "
                f"{self.rate:,.0f} msg/s; expected: {dict(sorted(self.by_expect.items()))}")


def as_delivered(m: FuzzMessage) -> bytes | None:
    """The body the daemon's listener hands to the decoder, or None if kombu cannot unpack it.

    py-amqp decodes a body by its ``content_encoding`` when Python knows that codec (the listener
    re-encodes it as UTF-8); kombu then undoes the ``compression`` header, which only takes bytes.
    """
    body: bytes | str = m.body
    with contextlib.suppress(LookupError, ValueError):
        body = m.body.decode(m.content_encoding)
    if m.compression:
        if isinstance(body, str):
            return None
        from kombu.compression import decompress

        try:
            body = decompress(body, m.compression)
        except Exception:
            return None
    return body.encode() if isinstance(body, str) else body


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def envelope(msg: Any) -> bytes:
    """The oslo.messaging 2.0 envelope around ``msg``."""
    return _wrap(json.dumps(msg))


def _wrap(inner: str) -> bytes:
    return _dumps({"oslo.version": "2.0", "oslo.message": inner})


def report_state(state: Any, **extra: Any) -> dict[str, Any]:
    return {"method": "report_state", "version": "1.4",
            "args": {"agent_state": {"agent_state": state}, "time": STALE_TIME}, **extra}


def agent_state(host: Any, agent_type: Any = "L3 agent", **fields: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"binary": "neutron-l3-agent", "host": host, "topic": "l3_agent",
                             "agent_type": agent_type, "availability_zone": "nova",
                             "configurations": {"agent_mode": "legacy", "routers": 0}}
    state.update(fields)
    return {k: v for k, v in state.items() if v is not _MISSING}


_MISSING: Any = object()


class _Gen:
    """One stream: ``rng`` drives every choice; ``n`` numbers the junk hosts and networks."""

    def __init__(self, seed: int, host_prefix: str, fleet: Sequence[tuple[str, str]], canary: str | None) -> None:
        self.rng = random.Random(seed)
        self.prefix = host_prefix
        self.fleet = list(fleet)
        self.canary = canary
        self.n = 0

    def host(self) -> str:
        self.n += 1
        return f"{self.prefix}fuzz-{self.n}"

    def uuid(self) -> str:
        a, b, c, d, e = (self.rng.getrandbits(bits) for bits in (32, 16, 16, 16, 48))
        return f"{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}"

    def heartbeat_key(self) -> str:
        return self.rng.choice((REPORTS, REPORTS, REPORTS, PLUGIN))

    def any_key(self) -> str:
        return self.rng.choice((REPORTS, REPORTS, REPORTS, REPORTS, PLUGIN, PLUGIN, NOTIFICATIONS, ""))

    def msg(self, category: str, body: bytes, expect: str = REJECTED, key: str | None = None,
            **props: Any) -> FuzzMessage:
        """``key`` None: a heartbeat key for heartbeats, any key the daemon binds for other junk;
        "" is the DHCP fanout exchange."""
        if key is None:
            key = self.heartbeat_key() if category.endswith("heartbeat") or category == "numbers" else self.any_key()
        exchange = DHCP_FANOUT if key == "" else NEUTRON
        return FuzzMessage(category, exchange, key, body, expect, **props)

    # -- the categories -------------------------------------------------------------------------

    def non_json(self) -> FuzzMessage:
        r = self.rng
        text = r.choice([
            "", "{", "}{", "[", "nul\x00l", "True", "undefined", "{'single': 'quotes'}", "{\"a\":}",
            "1", "\"just a string\"", "null", "[1, 2, 3]", "{\"oslo.version\": \"2.0\", \"oslo.message\": }",
            "".join(r.choice("abcdef{}[]:,\" \\") for _ in range(r.randrange(1, 300))),
        ])
        return self.msg("non-json", text.encode(), content_type=r.choice((JSON, "text/plain")))

    def binary(self) -> FuzzMessage:
        body = b"\xff" + self.rng.randbytes(self.rng.randrange(0, 4096))  # 0xff: never UTF-8
        return self.msg("binary", body, content_type="application/octet-stream", content_encoding="binary")

    def truncated(self) -> FuzzMessage:
        whole = envelope(report_state(agent_state(self.host())))
        return self.msg("truncated", whole[: self.rng.randrange(1, len(whole) - 1)])

    def deep(self) -> FuzzMessage:
        r, depth = self.rng, 10_000
        kind = r.randrange(5)
        if kind == 0:
            body = b"[" * depth + b"]" * depth
        elif kind == 1:
            body = b'{"a":' * depth + b"1" + b"}" * depth
        elif kind == 2:  # deep inside the envelope's string
            body = _dumps({"oslo.version": "2.0", "oslo.message": "[" * depth + "]" * depth})
        elif kind == 3:  # deep where a heartbeat keeps data: configurations
            text = json.dumps(report_state(agent_state(self.host())))
            body = _wrap(text.replace('{"agent_mode"', '{"deep": ' + "[" * depth + "]" * depth + ', "agent_mode"'))
        else:  # parseable, but deeper than the decoder keeps
            nested: Any = 1
            for _ in range(r.randrange(10, 200)):
                nested = {"x": nested}
            body = envelope(report_state(agent_state(self.host(), configurations=nested)))
        return self.msg("deep", body)

    def content_type(self) -> FuzzMessage:
        r = self.rng
        kind = r.randrange(6)
        hb = report_state(agent_state(self.host()))
        if kind == 0:
            # A pickle that, if anything ever unpickled it, would create the canary directory.
            payload: Any = _Canary(self.canary) if self.canary else hb
            body = pickle.dumps(payload, protocol=4)
            return self.msg("pickle", body, key=NOTIFICATIONS if self.canary else None,
                            content_type="application/x-python-serialize", content_encoding="binary")
        if kind == 1:
            return self.msg("content-type", b"method: report_state\nargs: {agent_state: 1}\n",
                            content_type="application/x-yaml")
        if kind == 2:
            return self.msg("content-type", b"\x81\xa6method\xacreport_state", content_type="application/x-msgpack",
                            content_encoding="binary")
        if kind == 3:  # JSON in another charset: py-amqp decodes by content_encoding, so it is read
            return self.msg("charset", json.dumps(hb).encode("utf-16"), HEARTBEAT, content_encoding="utf-16")
        if kind == 4:  # compressed as announced, but what is inside is not JSON
            # (binary: py-amqp hands a body with a text content_encoding over as str, which no codec takes)
            return self.msg("compressed", zlib.compress(b"\x00not json" * 10), compression="application/x-gzip",
                            content_encoding="binary")
        return self.msg("compressed", b"not compressed at all", UNPACKABLE,
                        compression=r.choice(("application/x-gzip", "application/x-bz2", "evil")))

    def bad_envelope(self) -> FuzzMessage:
        r = self.rng
        inner = r.choice([1, 2.5, None, True, [1, 2], {"method": "report_state"}, "not json", "[1,2]",
                          '"str"', "NaN", '{"method": 1}', json.dumps(report_state(agent_state(self.host())))[:-1]])
        version = r.choice(["2.0", "2.0", "1.0", 2, None, "", "2.0" * 100])
        outer: dict[str, Any] = {"oslo.message": inner}
        if version is not None:
            outer["oslo.version"] = version
        return self.msg("envelope", _dumps(outer))

    def bad_heartbeat(self) -> FuzzMessage:
        r, h = self.rng, self.host()
        bad: list[Callable[[], Any]] = [
            lambda: agent_state(_MISSING),
            lambda: agent_state(""),
            lambda: agent_state(h + "x" * 100_000),
            lambda: agent_state(r.choice([1, 2.5, True, [h], {"h": h}])),
            lambda: agent_state(h, agent_type=r.choice([None, 3, ["L3 agent"], ""])),
            lambda: agent_state(h, configurations=r.choice(["legacy", ["a"], 7, True])),
            lambda: agent_state(h, start_flag=r.choice(["true", 1, None, "yes", [True]])),
            lambda: agent_state(h, binary=r.choice([1, ["x"]])),
            lambda: agent_state(h, topic={"t": 1}),
        ]
        state = r.choice(bad)()
        return self.msg("bad-heartbeat", envelope(report_state(state)))

    def bad_heartbeat_shape(self) -> FuzzMessage:
        r, h = self.rng, self.host()
        shapes: list[Any] = [
            {"method": "report_state"},
            {"method": "report_state", "args": None},
            {"method": "report_state", "args": [1]},
            {"method": "report_state", "args": {"agent_state": "up"}},
            {"method": "report_state", "args": {"agent_state": {"agent_state": "up"}}},
            {"method": 42, "args": {}},
            {"method": None},
            {"args": {"agent_state": agent_state(h)}},
        ]
        body = envelope(r.choice(shapes)) if r.random() < 0.8 else _dumps(r.choice(shapes))
        return self.msg("bad-heartbeat", body)

    def bad_numbers(self) -> FuzzMessage:
        """Non-finite numbers and ints beyond Python's 4300-digit limit: not JSON to the decoder."""
        r, h = self.rng, self.host()
        text = json.dumps(report_state(agent_state(h)))
        token = r.choice(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000])
        return self.msg("numbers", _wrap(text.replace('"routers": 0', f'"routers": {token}')))

    def odd_heartbeat(self) -> FuzzMessage:
        """Well-formed heartbeats the daemon may record, of hosts or types the fleet does not have."""
        r, h = self.rng, self.host()
        odd = [
            # Control characters: a newline must not forge a log line, ANSI codes not repaint a terminal.
            lambda: agent_state(h + r.choice(["\nINJECTED rpcdaemon INFO moved router", "\x1b[31mred\x1b[0m",
                                              "\r\x00\u2028", " space", "\t", "-" * 200])),
            lambda: agent_state(h, agent_type=r.choice(["Bogus agent", "l3 agent", "L3 agent ", "DHCP agent\n"])),
            lambda: agent_state(h, configurations={"routers": "12", "agent_mode": r.choice([5, None, "dvr"]),
                                                   "big": 10 ** 400, "f": 1.5e308}),
            lambda: agent_state(h, configurations=None, start_flag=True),
            lambda: agent_state(h, binary="x" * 2000, topic="\x1b[2J", uuid=[1, 2], availability_zone=""),
        ]
        if self.fleet:  # a fleet host with a type it does not run (a key of its own in the registry)
            host, kind = r.choice(self.fleet)
            other = r.choice([t for t in ("L3 agent", "DHCP agent", "Bogus agent") if t != kind])
            odd.append(lambda: agent_state(host, agent_type=other, binary="neutron-bogus-agent"))
        state = r.choice(odd)()
        if r.random() < 0.2:  # the older, once-nested layout
            msg: dict[str, Any] = {"method": "report_state", "args": {"agent_state": state, "time": STALE_TIME}}
        else:
            msg = report_state(state)
        return self.msg("odd-heartbeat", envelope(msg) if r.random() < 0.9 else _dumps(msg), HEARTBEAT)

    def notification(self) -> FuzzMessage:
        r = self.rng
        event = r.choice(["network.delete.end", "network.create.end", "subnet.update.end"])
        payloads: list[Any] = [None, [], "x", {}, {"network_id": 5}, {"network_id": ""},
                               {"network_id": "n" * 300}, {"network": "id"}, {"subnet": {"network_id": None}}]
        msg: dict[str, Any] = {"event_type": r.choice([event, event, 7, None, "compute.instance.create.end"]),
                               "payload": r.choice(payloads), "priority": "INFO", "message_id": self.uuid()}
        return self.msg("notification", envelope(msg) if r.random() < 0.7 else _dumps(msg), key=NOTIFICATIONS)

    def unknown_network(self) -> FuzzMessage:
        """Deletes and changes of networks that do not exist: the daemon must do nothing about them."""
        r, nid = self.rng, self.uuid()
        kind = r.randrange(4)
        if kind == 0:
            msg: dict[str, Any] = {"event_type": "network.delete.end", "payload": {"network_id": nid}}
        elif kind == 1:
            msg = {"event_type": "network.create.end", "payload": {"network": {"id": nid}}}
        elif kind == 2:
            msg = {"event_type": "subnet.delete.end", "payload": {"subnet": {"network_id": nid, "id": self.uuid()}}}
        else:
            cast = {"method": "network_delete_end", "args": {"payload": {"network_id": nid}}, "version": "1.0"}
            return self.msg("unknown-network", envelope(cast), NETWORK, key="")
        return self.msg("unknown-network", envelope({**msg, "priority": "INFO"}), NETWORK, key=NOTIFICATIONS)

    def fanout(self) -> FuzzMessage:
        r = self.rng
        msg = r.choice([
            {"method": "network_delete_end", "args": {}},
            {"method": "network_delete_end", "args": {"payload": {"network_id": 1}}},
            {"method": "network_delete_end", "args": {"payload": "n"}},
            {"method": "port_update_end", "args": {"payload": {}}},
            {"method": "agent_updated", "args": {"payload": {"admin_state_up": False}}},
        ])
        return self.msg("fanout", envelope(msg), key="")

    def big(self) -> FuzzMessage:
        """10-50 kB: an unknown method with a long argument (every 1 MB one is in ``huge``)."""
        size = self.rng.randrange(10_000, 50_000)
        return self.msg("big", envelope({"method": "get_everything", "args": {"blob": "b" * size}}))

    def huge(self, which: int) -> FuzzMessage:
        mb = 1024 * 1024
        kind = which % 3
        if kind == 0:  # over the decoder's limit
            return self.msg("huge", b" " * mb + b"{}", key=REPORTS)
        if kind == 1:  # just under it, an unknown method
            return self.msg("huge", envelope({"method": "x", "args": {"blob": "y" * (mb - 200_000)}}), key=REPORTS)
        # A heartbeat of a junk host with a big configuration: recorded, then forgotten.
        state = agent_state(self.host(), configurations={"blob": "z" * (mb - 300_000)})
        return self.msg("huge", envelope(report_state(state)), HEARTBEAT, key=REPORTS)


CONTROL_STATE, LIVE_VIEW, ROLL_CALL = "control-state", "live-view", "roll-call"
ACCEPTED = "accepted"  # a record the parser must take


@dataclass(frozen=True, slots=True)
class FuzzRecord:
    category: str  # which record: CONTROL_STATE, LIVE_VIEW or ROLL_CALL
    shape: str  # what is hostile about it (for a failing test's message)
    body: bytes
    expect: str = REJECTED


_NOW = 1_800_000_000.0  # 2027: a plausible wall-clock time


def _hold(by: str) -> dict[str, Any]:
    return {"reason": "kernel upgrade", "by": by, "at": _NOW, "until": _NOW + 600}


def control_state() -> dict[str, Any]:
    return {"v": 1, "pause": _hold("alice@ctl-1"), "brake_release": None, "event": "pause", "by": "alice@ctl-1",
            "at": _NOW}


def live_view(agents: int = 3) -> dict[str, Any]:
    return {"v": 1, "instance": "ctl-1:4242", "at": _NOW, "version": "1.0", "role": "active", "dry_run": False,
            "paused": None, "brake_release": None,
            "plugins": [{"name": "L3Agent", "agent_type": "L3 agent", "down_time": 75.0, "brake": None, "held": [],
                         "pending": 2,
                         "agents": [{"id": f"{i:08x}-0000-4000-8000-000000000000", "host": f"net-{i}",
                                     "verdict": "alive", "why": "heard 2s ago", "heard_ago": 2.0}
                                    for i in range(agents)]}]}


def roll_call_entry() -> dict[str, Any]:
    return {"v": 1, "instance": "ctl-1:4242", "role": "active", "at": _NOW, "since": _NOW - 3600, "version": "1.0",
            "dry_run": False, "plugins": ["L3Agent"]}


_RECORDS: dict[str, Callable[[], dict[str, Any]]] = {CONTROL_STATE: control_state, LIVE_VIEW: live_view,
                                                      ROLL_CALL: roll_call_entry}
# Where each record keeps its numbers, its texts and its objects: (path of keys and list indexes).
_NUMBERS: dict[str, list[tuple[Any, ...]]] = {
    CONTROL_STATE: [("at",), ("pause", "at"), ("pause", "until")],
    LIVE_VIEW: [("at",), ("plugins", 0, "down_time"), ("plugins", 0, "pending"),
                ("plugins", 0, "agents", 1, "heard_ago")],
    ROLL_CALL: [("at",), ("since",)],
}
_TEXTS: dict[str, list[tuple[Any, ...]]] = {
    CONTROL_STATE: [("by",), ("event",), ("pause", "reason"), ("pause", "by")],
    LIVE_VIEW: [("instance",), ("version",), ("plugins", 0, "name"), ("plugins", 0, "agents", 0, "host"),
                ("plugins", 0, "agents", 2, "why")],
    ROLL_CALL: [("instance",), ("version",), ("plugins", 0)],
}
_OBJECTS: dict[str, list[tuple[Any, ...]]] = {
    CONTROL_STATE: [("pause",), ("brake_release",)],
    LIVE_VIEW: [("paused",), ("plugins",), ("plugins", 0), ("plugins", 0, "agents"), ("plugins", 0, "agents", 0)],
    ROLL_CALL: [("plugins",)],
}
_BIG = {CONTROL_STATE: 70_000, LIVE_VIEW: 2_200_000, ROLL_CALL: 70_000}  # over each kind's bound


def _set(record: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    node: Any = record
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return record


def _token(record: dict[str, Any], path: tuple[Any, ...], token: str) -> bytes:
    """``record`` as JSON with the value at ``path`` replaced by ``token`` as it stands (not valid JSON)."""
    marker = "\u0000MARK\u0000"
    return _dumps(_set(record, path, marker)).replace(json.dumps(marker).encode(), token.encode())


class _Records:
    """Hostile records of each kind: ``rng`` drives every choice."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def record(self, category: str) -> FuzzRecord:
        r = self.rng
        base = _RECORDS[category]()
        kind = r.randrange(12)
        if kind == 0:
            return self._raw(category, base)
        if kind == 1:  # the issue's: a number too long for a float
            path = r.choice(_NUMBERS[category])
            return FuzzRecord(category, "huge-int", _token(base, path, "1" + "0" * r.choice([25, 400, 4000])))
        if kind == 2:
            path, token = r.choice(_NUMBERS[category]), r.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
            return FuzzRecord(category, "non-finite", _token(base, path, token))
        if kind == 3:  # the issue's: deeper than any stack
            depth, path = r.choice([9, 1000, 100_000]), r.choice([*_NUMBERS[category], ("extra",)])
            opener, closer = r.choice([("[", "]"), ('{"a":', "}")])
            nest = opener * depth + ("1" if opener != "[" else "") + closer * depth
            return FuzzRecord(category, "deep", _token(base, path, nest if r.random() < 0.8 else opener * depth))
        if kind == 4:
            path = r.choice(_NUMBERS[category])
            value: object = r.choice([-1, -0.5, 1e12, 1e300, 10**19, True, False, "1800000000", None, [1], {"t": 1}])
            if value is None and path[-1] in ("until", "heard_ago"):
                value = -5  # None is allowed there
            return FuzzRecord(category, "number", _dumps(_set(base, path, value)))
        if kind == 5:
            path = r.choice(_TEXTS[category])
            value = r.choice([1, 2.5, True, None, ["x"], {"x": 1}])  # null is no text either
            return FuzzRecord(category, "text", _dumps(_set(base, path, value)))
        if kind == 6:
            path = r.choice(_OBJECTS[category])
            return FuzzRecord(category, "object", _dumps(_set(base, path, r.choice([1, "x", True, [1], [[1]]]))))
        if kind == 7:
            version = r.choice([0, 2, "1", 1.0, True, None, [1], {"v": 1}])
            return FuzzRecord(category, "version", _dumps({**base, "v": version}))
        if kind == 8:
            return FuzzRecord(category, "oversize", _dumps({**base, "pad": "p" * _BIG[category]}))
        if kind == 9:  # a newer version's extra fields: taken, and never trusted
            extra = {"future": r.choice([1, "x", [1, 2], {"deep": {"er": [1]}}]), "v2_only": None}
            return FuzzRecord(category, "unknown-fields", _dumps({**base, **extra}), ACCEPTED)
        if kind == 10:  # control characters and long texts: taken, cleaned
            path = r.choice(_TEXTS[category])
            text = r.choice(["\x1b[2J\x1b[31mred", "line\nINJECTED rpcdaemon WARNING", "\r\x00\u2028tail", "w" * 5000])
            return FuzzRecord(category, "odd-text", _dumps(_set(base, path, text)), ACCEPTED)
        return FuzzRecord(category, "well-formed", _dumps(base), ACCEPTED)

    def _raw(self, category: str, base: dict[str, Any]) -> FuzzRecord:
        r, whole = self.rng, _dumps(base)
        body = r.choice([
            b"", b"{", b"not json", b"[1]", b"null", b'"v"', b"\xff\xfe" + r.randbytes(40),
            json.dumps(base).encode("utf-16"), whole[: r.randrange(1, len(whole) - 1)],
            bytes(r.choice(b'{}[]:,"\\ 0123456789.eE-') for _ in range(r.randrange(1, 400))),
        ])
        return FuzzRecord(category, "raw", body)


def generate_records(count: int, *, seed: int = 6) -> Iterator[FuzzRecord]:
    """``count`` hostile records, the kinds in turn (so every kind and shape comes up in a short run)."""
    gen = _Records(seed)
    kinds = (CONTROL_STATE, LIVE_VIEW, ROLL_CALL)
    for i in range(count):
        yield gen.record(kinds[i % len(kinds)])


class _Canary:
    """Unpickling this calls ``os.mkdir(path)``: the proof that someone unpickled a bus message."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.mkdir, (self.path,)


# name -> weight; all the others are equally hostile, these are the common shapes on a real bus.
WEIGHTS: dict[str, int] = {
    "non_json": 8, "binary": 8, "truncated": 8, "deep": 4, "content_type": 4, "bad_envelope": 10,
    "bad_heartbeat": 16, "bad_heartbeat_shape": 8, "bad_numbers": 6, "odd_heartbeat": 10,
    "notification": 6, "unknown_network": 4, "fanout": 4, "big": 1,
}


def generate(count: int, *, seed: int = 6, host_prefix: str = "", fleet: Sequence[tuple[str, str]] = (),
             huge: int = 3, canary: str | None = None) -> Iterator[FuzzMessage]:
    """``count`` messages: ``huge`` of about 1 MB spread through them, the rest drawn by ``WEIGHTS``.

    ``fleet`` is (host, agent_type) of the real agents, spoofed with other types; ``canary`` a path
    that only an unpickling consumer would create (the pickles then go to notifications.info only).
    """
    gen = _Gen(seed, host_prefix, fleet, canary)
    names, weights = list(WEIGHTS), list(WEIGHTS.values())
    huge_at = {(i + 1) * count // (huge + 1) for i in range(huge)} if count > huge else set()
    huge_done = 0
    for i in range(count):
        if i in huge_at:
            yield gen.huge(huge_done)
            huge_done += 1
        elif i < len(names):  # every category at least once, even in a short run
            yield getattr(gen, names[i])()
        else:
            yield getattr(gen, gen.rng.choices(names, weights)[0])()


def publish(url: str, messages: Iterable[FuzzMessage]) -> PublishStats:
    """Publish every message over one kombu connection; the exchanges are declared as oslo does."""
    from kombu.connection import Connection
    from kombu.entity import Exchange
    from kombu.messaging import Producer

    exchanges = {NEUTRON: Exchange(NEUTRON, type="topic", durable=False, auto_delete=False),
                 DHCP_FANOUT: Exchange(DHCP_FANOUT, type="fanout", durable=False, auto_delete=True)}
    by_category: Counter[str] = Counter()
    by_expect: Counter[str] = Counter()
    total = 0
    # py-amqp's TCP_USER_TIMEOUT is 1 s by default: a flood meets RabbitMQ's flow control, and on a loaded
    # machine the broker may leave the publisher's bytes unacknowledged longer than that (ETIMEDOUT).
    settings = {socket.TCP_USER_TIMEOUT: 60_000}
    with Connection(url, connect_timeout=5, transport_options={"socket_settings": settings}) as conn:
        producer = Producer(conn.channel(), auto_declare=False)
        for exchange in exchanges.values():
            exchange(producer.channel).declare()
        began = time.perf_counter()
        for m in messages:
            headers = {"compression": m.compression} if m.compression else {}
            producer.publish(m.body, exchange=exchanges[m.exchange], routing_key=m.routing_key,
                             content_type=m.content_type, content_encoding=m.content_encoding, headers=headers)
            by_category[m.category] += 1
            by_expect[m.expect] += 1
            total += len(m.body)
        seconds = time.perf_counter() - began
    return PublishStats(sum(by_category.values()), seconds, total, dict(by_category), dict(by_expect))
