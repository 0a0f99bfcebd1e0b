"""The Dump plugin on the real broker: readable lines for real oslo traffic, filters, bad filters."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from tests.component.oslo_sender import OsloSender, dhcp_state, l3_state
from tests.component.rabbit import AMQP_URL, OSLO_URL, declare_fanout
from tests.kit.poll import wait_until

from rpcdaemon.broker.connection import publish_raw
from rpcdaemon.broker.link import RawMessage, Subscription
from rpcdaemon.observing.listener import BusListener
from rpcdaemon.plugins.dump import DumpFilterError, DumpPlugin

Start = Callable[..., tuple[BusListener, threading.Event]]
NOON = datetime(2026, 11, 25, 12, 0, 0, 250_000).timestamp()


@pytest.fixture
def sender() -> Iterator[OsloSender]:
    s = OsloSender(OSLO_URL)
    yield s
    s.close()


def lines_with(out: io.StringIO, *needles: str) -> list[str]:
    return [line for line in out.getvalue().splitlines() if any(n in line for n in needles)]


def test_prints_one_readable_line_per_message(start_listener: Start, sender: OsloSender) -> None:
    out = io.StringIO()
    dump = DumpPlugin("neutron", None, out, wallclock=lambda: NOON)
    # A DHCP agent is connected: its fanout consumer declared the exchange. (Without one, a fanout cast
    # reaches no queue at all, ours included; a late exchange is bound within a second: test_bus_health.)
    declare_fanout("dhcp_agent")
    listener, _ = start_listener(dump.subscriptions(), dump.handle, name="dump")
    assert "dhcp_agent_fanout" not in listener.pending_exchanges()
    host, net, tag = f"l3-{uuid.uuid4().hex[:8]}", f"net-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    sender.report_state(l3_state(host, start_flag=True))
    sender.network_delete_fanout(net)
    publish_raw(AMQP_URL, "neutron", f"junk.{tag}", b"\xff\xfe not json")

    wait_until(lambda: len(lines_with(out, host, net, tag)) == 3, 10, "three dumped lines")
    heartbeat, deleted, junk = (lines_with(out, needle)[0] for needle in (host, net, tag))
    assert heartbeat.startswith(
        f'2026-11-25 12:00:00.250 neutron/q-reports-plugin report_state host={host} type="L3 agent" {{'
    )
    assert '"start_flag":true' in heartbeat  # the inner oslo.message is decoded, not an escaped string
    assert "_context_request_id" not in heartbeat
    assert '"_context_*":"<' in heartbeat
    assert f"dhcp_agent_fanout/(none) network_delete_end network={net} " in deleted
    assert f"neutron/junk.{tag} <undecodable: not UTF-8" in junk


def test_verbose_shows_the_context(start_listener: Start, sender: OsloSender) -> None:
    out = io.StringIO()
    dump = DumpPlugin("neutron", None, out, verbose=True)
    start_listener(dump.subscriptions(), dump.handle, name="dumpv")
    host = f"v-{uuid.uuid4().hex[:8]}"
    sender.report_state(dhcp_state(host))
    line = wait_until(lambda: lines_with(out, host), 10, "the dumped heartbeat")[0]
    assert '"_context_request_id":"req-' in line
    assert '"_context_is_admin":true' in line


def test_filter_selects_messages(start_listener: Start, sender: OsloSender) -> None:
    wanted, other = f"w-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    out = io.StringIO()
    dump = DumpPlugin("neutron", f"method == 'report_state' && host == '{wanted}'", out)
    start_listener(dump.subscriptions(), dump.handle, name="dumpf")
    sender.report_state(l3_state(other))
    sender.report_state(l3_state(wanted))
    sender.report_state(dhcp_state(other), topic="q-plugin")
    wait_until(lambda: lines_with(out, wanted), 10, "the wanted heartbeat")
    wait_until(lambda: dump.filtered_out >= 2, 5, "the others filtered out")
    assert lines_with(out, other) == []
    assert all(wanted in line for line in out.getvalue().splitlines())


def raw(body: bytes, routing_key: str = "q-reports-plugin") -> RawMessage:
    return RawMessage("neutron", routing_key, body, "application/json", "utf-8", 0.0)


def test_filter_on_the_decoded_body_and_runtime_type_errors() -> None:
    out = io.StringIO()
    dump = DumpPlugin("neutron", "length(body.args.payload.network_id) > `3`", out)
    dump.handle(raw(b'{"method": "network_delete_end", "args": {"payload": {"network_id": "net-42"}}}', ""))
    dump.handle(raw(b'{"method": "network_delete_end", "args": {"payload": {"network_id": 42}}}', ""))  # type error
    dump.handle(raw(b"garbage"))
    assert (dump.printed, dump.filtered_out) == (1, 2)
    assert "network=net-42" in out.getvalue()


@pytest.mark.parametrize("expression", ["method ==", "[?", "host == 'a' &&", "`unterminated"])
def test_bad_filter_is_rejected_at_start_up_with_the_expression(expression: str) -> None:
    with pytest.raises(DumpFilterError) as err:
        DumpPlugin("neutron", expression, io.StringIO())
    assert isinstance(err.value, ValueError)
    assert repr(expression) in str(err.value)
    assert "JMESPath" in str(err.value)
    assert "\n" not in str(err.value)


def test_subscriptions() -> None:
    neutron = DumpPlugin("neutron", None, io.StringIO()).subscriptions()
    assert neutron == [
        Subscription("neutron", "#", "topic", durable=False, auto_delete=False),
        Subscription("dhcp_agent_fanout", "", "fanout", durable=False, auto_delete=True),
        Subscription("l3_agent_fanout", "", "fanout", durable=False, auto_delete=True),
    ]
    assert DumpPlugin("nova", None, io.StringIO()).subscriptions() == [Subscription("nova", "#")]
    assert DumpPlugin("dhcp_agent_fanout", "", io.StringIO()).subscriptions() == [
        Subscription("dhcp_agent_fanout", "", "fanout", durable=False, auto_delete=True)
    ]
