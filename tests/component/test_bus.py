"""BusListener on the real RabbitMQ, fed by oslo.messaging itself; plus the memory transport and URLs.

Host names are unique per test, so traffic from anything else on the shared broker (a neutron-server
under test, real agents) is ignored rather than breaking the assertions.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.component.oslo_sender import OsloSender, dhcp_state, l3_state
from tests.component.rabbit import (
    AMQP_URL,
    OSLO_URL,
    Collector,
    declare_fanout,
    declare_oslo_exchange,
    rabbitmqctl,
    wait_broker_up,
)
from tests.kit.poll import wait_until

from rpcdaemon.broker.amqpurl import normalise_url, url_for_log
from rpcdaemon.broker.connection import publish_raw
from rpcdaemon.broker.link import RawMessage, Subscription, fanout_subscription, neutron_subscription
from rpcdaemon.model import Heartbeat, NetworkDeleted
from rpcdaemon.observing.decode import Rejected, decode_message
from rpcdaemon.observing.listener import BusListener

HEARTBEATS = [neutron_subscription("q-reports-plugin"), neutron_subscription("q-plugin")]
Start = Callable[..., tuple[BusListener, threading.Event]]


@pytest.fixture
def sender() -> Iterator[OsloSender]:
    s = OsloSender(OSLO_URL)
    yield s
    s.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def decoded(raws: list[RawMessage]) -> list[Any]:
    return [decode_message(r.body, routing_key=r.routing_key, received_at=r.received_at) for r in raws]


def heartbeats_from(collector: Collector, hosts: set[str]) -> dict[str, tuple[RawMessage, Heartbeat]]:
    found = {}
    for raw in collector.snapshot():
        hb = decode_message(raw.body, routing_key=raw.routing_key, received_at=raw.received_at)
        if isinstance(hb, Heartbeat) and hb.host in hosts:
            found[hb.host] = (raw, hb)
    return found


# -- the real wire format ---------------------------------------------------------------------


def test_oslo_heartbeats_arrive_decoded_on_both_keys(start_listener: Start, sender: OsloSender) -> None:
    ticks = iter(range(1000, 10**6))
    clock = lambda: float(next(ticks))  # noqa: E731 - a fake monotonic clock, one tick per read
    got = Collector()
    listener, _ = start_listener(HEARTBEATS, got, clock=clock, name="test")
    l3, dhcp = unique("l3"), unique("dhcp")
    sender.report_state(l3_state(l3, agent_mode="dvr_snat", start_flag=True, az="az-1"))
    sender.report_state(dhcp_state(dhcp), topic="q-plugin")

    found = wait_until(lambda: f if len(f := heartbeats_from(got, {l3, dhcp})) == 2 else None, 10, "2 heartbeats")
    raw, hb = found[l3]
    assert (raw.exchange, raw.routing_key, raw.content_type, raw.content_encoding) == (
        "neutron",
        "q-reports-plugin",
        "application/json",
        "utf-8",
    )
    assert (hb.agent_type, hb.binary, hb.topic, hb.agent_mode, hb.availability_zone, hb.start_flag) == (
        "L3 agent",
        "neutron-l3-agent",
        "l3_agent",
        "dvr_snat",
        "az-1",
        True,
    )
    assert hb.sent_at is not None
    assert hb.sent_at.startswith(time.strftime("%Y-", time.gmtime()))
    assert hb.received_at >= 1000.0  # stamped on the injected clock, not the agent's
    assert 1000.0 <= listener.link().since < hb.received_at  # link state on the same clock
    raw, hb = found[dhcp]
    assert raw.routing_key == "q-plugin"
    assert (hb.agent_type, hb.agent_mode, hb.start_flag) == ("DHCP agent", None, False)

    # The envelope is the one captured from real agents in neutron.md.
    outer = json.loads(raw.body)
    assert set(outer) == {"oslo.version", "oslo.message"}
    assert outer["oslo.version"] == "2.0"
    inner = json.loads(outer["oslo.message"])
    assert inner["method"] == "report_state"
    assert inner["version"] == "1.4"
    assert inner["args"]["agent_state"]["agent_state"]["host"] == dhcp
    assert any(k.startswith("_context_") for k in inner)
    wait_until(lambda: listener.counts.acked == listener.counts.received, 5, "every message acked")


def test_own_bounded_exclusive_queue_never_neutrons(start_listener: Start) -> None:
    declare_fanout("dhcp_agent")
    listener, _ = start_listener(
        [*HEARTBEATS, fanout_subscription("dhcp_agent")], Collector(), name="qtest", queue_expire=45
    )
    queue = listener.queue_name
    assert queue.startswith("rpcdaemon.qtest.")
    rows = [
        line.split("\t")
        for line in rabbitmqctl("list_queues", "name", "exclusive", "auto_delete", "arguments").splitlines()
    ]
    ours = [r for r in rows if r[0] == queue]
    assert ours, f"{queue} not found in {rows}"
    assert ours[0][1:3] == ["true", "true"]
    assert "x-expires" in ours[0][3]
    assert "45000" in ours[0][3]
    for bound in ("x-max-length", "x-max-length-bytes", "drop-head", "x-dead-letter-routing-key"):
        assert bound in ours[0][3]
    assert listener.dropped_queue in ours[0][3]
    bindings = {
        tuple(line.split("\t"))
        for line in rabbitmqctl("list_bindings", "source_name", "destination_name", "routing_key").splitlines()
    }
    assert ("neutron", queue, "q-reports-plugin") in bindings
    assert ("neutron", queue, "q-plugin") in bindings
    assert ("dhcp_agent_fanout", queue, "") in bindings
    exchanges = {
        line.split("\t")[0]: line.split("\t")[1:]
        for line in rabbitmqctl("list_exchanges", "name", "type", "durable", "auto_delete").splitlines()
    }
    assert exchanges["neutron"] == ["topic", "false", "false"]  # exactly as oslo.messaging declared it
    assert exchanges["dhcp_agent_fanout"] == ["fanout", "false", "true"]


def test_network_deletion_on_fanout_and_notifications(start_listener: Start, sender: OsloSender) -> None:
    existed = "notifications.info" in rabbitmqctl("list_queues", "name").split()
    declare_fanout("dhcp_agent")  # a DHCP agent is connected
    got = Collector()
    start_listener([fanout_subscription("dhcp_agent"), neutron_subscription("notifications.info")], got)
    net_a, net_b, net_c = unique("net"), unique("net"), unique("net")
    try:
        sender.network_delete_fanout(net_a)
        sender.notify("network.delete.end", {"network_id": net_b, "network": {"id": net_b}})
        sender.notify("network.delete.end", {"network_id": net_c}, driver="messaging")  # v1: no envelope
        wanted = {net_a, net_b, net_c}

        def deletions() -> dict[str, RawMessage] | None:
            seen = {}
            for raw, event in zip(got.snapshot(), decoded(got.snapshot()), strict=True):
                if isinstance(event, NetworkDeleted) and event.network_id in wanted:
                    seen[event.network_id] = raw
            return seen if len(seen) == 3 else None

        seen = wait_until(deletions, 10, "three network deletions")
        assert (seen[net_a].exchange, seen[net_a].routing_key) == ("dhcp_agent_fanout", "")
        assert (seen[net_b].exchange, seen[net_b].routing_key) == ("neutron", "notifications.info")
    finally:
        if not existed:  # oslo's notifier declares this queue so notifications wait for a consumer
            rabbitmqctl("delete_queue", "notifications.info")


# -- poison messages ----------------------------------------------------------------------------

UNPICKLED: list[str] = []


def mark_unpickled() -> str:
    UNPICKLED.append("yes")
    return "pwned"


class Trap:
    def __reduce__(self) -> tuple[Callable[[], str], tuple[()]]:
        return (mark_unpickled, ())


def test_garbage_is_acked_counted_and_never_unpickled(start_listener: Start, sender: OsloSender) -> None:
    results: list[Any] = []

    def on_message(raw: RawMessage) -> None:
        if raw.body == b"raise please":
            raise RuntimeError("handler bug")
        results.append(decode_message(raw.body, routing_key=raw.routing_key, received_at=raw.received_at))

    listener, _ = start_listener(HEARTBEATS, on_message, name="poison")
    junk: list[tuple[bytes, str]] = [
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"{not json", "application/json"),
        (b"x" * (2 * 1024 * 1024), "application/json"),
        (b"[" * 200_000, "application/json"),
        (pickle.dumps(Trap()), "application/x-python-serialize"),
        (b"raise please", "text/plain"),
    ]
    for body, content_type in junk:
        publish_raw(AMQP_URL, "neutron", "q-reports-plugin", body, content_type=content_type)
    host = unique("after-junk")
    sender.report_state(l3_state(host))

    wait_until(lambda: any(isinstance(r, Heartbeat) and r.host == host for r in results), 10, "the heartbeat")
    rejected = [r for r in results if isinstance(r, Rejected)]
    assert {r.kind for r in rejected} >= {"not UTF-8", "not JSON", "too large", "too deep"}
    assert not UNPICKLED, "a message body was unpickled"
    assert listener.is_alive()
    assert listener.counts.failed >= 1
    wait_until(lambda: listener.counts.acked == listener.counts.received, 5, "every message acked")
    assert listener.counts.received >= len(junk) + 1
    rows = rabbitmqctl("list_queues", "name", "messages").splitlines()
    assert f"{listener.queue_name}\t0" in rows  # nothing left behind, nothing redelivered


# -- outages ----------------------------------------------------------------------------------


class LinkWatcher(threading.Thread):
    """Samples link() every 10 ms, to see short outages that a test's own polling could miss."""

    def __init__(self, listener: BusListener) -> None:
        super().__init__(daemon=True)
        self.listener = listener
        self.seen: list[bool] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            connected = self.listener.link().connected
            if not self.seen or self.seen[-1] != connected:
                self.seen.append(connected)


@pytest.mark.disruptive
def test_survives_close_all_connections(start_listener: Start) -> None:
    got = Collector()
    listener, _ = start_listener(HEARTBEATS, got, name="closeall", reconnect_backoff=(0.5, 2.0))
    before = listener.link()
    watcher = LinkWatcher(listener)
    watcher.start()
    try:
        rabbitmqctl("close_all_connections", "rpcdaemon component test")
        after = wait_until(lambda: link if (link := listener.link()).connected and link.outages == 1 else None, 15,
                           "the link to come back")
        wait_until(lambda: len(watcher.seen) >= 3, 2, "the watcher to sample the restored link")
    finally:
        watcher.done.set()
        watcher.join()
    assert watcher.seen[:3] == [True, False, True]
    assert after.since > before.since
    host = unique("after-close")
    s = OsloSender(OSLO_URL)  # a fresh sender: the broker closed the fixture's connections too
    try:
        s.report_state(l3_state(host))
        wait_until(lambda: heartbeats_from(got, {host}), 10, "a heartbeat after the reconnect")
    finally:
        s.close()


@pytest.mark.disruptive
def test_survives_a_broker_restart(start_listener: Start, caplog: pytest.LogCaptureFixture) -> None:
    """rabbitmqctl stop_app / start_app: non-durable exchanges vanish too and must be redeclared."""
    caplog.set_level(logging.INFO, logger="rpcdaemon.observing")
    got = Collector()
    listener, _ = start_listener(HEARTBEATS, got, name="restart", reconnect_backoff=(0.2, 1.0))
    before = listener.link()
    try:
        rabbitmqctl("stop_app")
        down = wait_until(lambda: None if (link := listener.link()).connected else link, 15, "the link to drop")
        assert down.outages == 1
        time.sleep(2.0)  # several failed reconnect attempts while the broker is away
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        wait_broker_up()
    # The reset broker lost the non-durable `neutron` exchange. The listener must not create it (its
    # owner may declare it durable): it waits, link down, until neutron-server has declared it again.
    time.sleep(2.0)
    assert not listener.link().connected
    declare_oslo_exchange()
    up = wait_until(lambda: link if (link := listener.link()).connected else None, 20, "the link to come back")
    assert up.since > down.since > before.since
    assert up.outages == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "bus restart: " in r.getMessage()
                and "exchange" not in r.getMessage()]  # the reset broker lost `neutron` until oslo declares it
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one line per outage, not per attempt
    assert "lost the link" in warnings[0].getMessage()
    assert any("without the bus" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)

    host = unique("after-restart")
    s = OsloSender(OSLO_URL)
    try:
        s.report_state(dhcp_state(host))
        wait_until(lambda: heartbeats_from(got, {host}), 15, "a heartbeat after the restart")
    finally:
        s.close()


def test_unreachable_broker_logs_once_hides_password_and_stops_fast(
    start_listener: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rpcdaemon.observing")
    url = "amqp://guest:s3cret-pw@127.0.0.1:1//"  # nothing listens on port 1
    listener, stop = start_listener(
        HEARTBEATS, Collector(), url=url, wait_connected=False, name="nobroker", reconnect_backoff=(0.1, 0.2)
    )
    time.sleep(1.5)
    link = listener.link()
    assert (link.connected, link.outages) == (False, 0)
    assert "s3cret" not in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "cannot listen on amqp://guest:***@127.0.0.1:1//" in warnings[0]
    started = time.monotonic()
    stop.set()
    listener.join(2.0)
    assert not listener.is_alive()
    assert time.monotonic() - started < 2.0


def test_stop_joins_within_two_seconds_while_connected(start_listener: Start) -> None:
    listener, stop = start_listener(HEARTBEATS, Collector(), name="stopper")
    started = time.monotonic()
    stop.set()
    listener.join(2.0)
    assert not listener.is_alive()
    assert time.monotonic() - started < 2.0
    assert not listener.link().connected
    assert listener.queue_name not in rabbitmqctl("list_queues", "name").split()


def test_exchange_with_other_properties_is_used_as_it_is(start_listener: Start, sender: OsloSender) -> None:
    """A deployment with amqp_durable_queues=True has a durable exchange: bind to it, do not fail."""
    got = Collector()
    durable_view = Subscription("neutron", "q-reports-plugin", durable=True)
    start_listener([durable_view], got, name="mismatch")
    host = unique("mismatch")
    sender.report_state(l3_state(host))
    wait_until(lambda: heartbeats_from(got, {host}), 10, "a heartbeat through the passive binding")


# -- the in-memory transport (the demo) ---------------------------------------------------------


def test_memory_transport() -> None:
    got = Collector()
    stop = threading.Event()
    listener = BusListener("memory://", HEARTBEATS, got, stop=stop, name="memory")
    listener.start()
    try:
        wait_until(lambda: listener.link().connected, 5, "the memory link")
        host = unique("mem")
        state = l3_state(host)
        body = json.dumps(
            {
                "oslo.version": "2.0",
                "oslo.message": json.dumps({"method": "report_state", "args": {"agent_state": {"agent_state": state}}}),
            }
        )
        publish_raw("memory://", "neutron", "q-reports-plugin", body)
        publish_raw("memory://", "neutron", "q-plugin", b"\x00 junk")
        publish_raw("memory://", "neutron", "elsewhere", body)  # not subscribed: never delivered
        wait_until(lambda: len(got.snapshot()) >= 2, 5, "two memory deliveries")
        events = decoded(got.snapshot())
        assert isinstance(events[0], Heartbeat)
        assert events[0].host == host
        assert isinstance(events[1], Rejected)
        assert [r.routing_key for r in got.snapshot()] == ["q-reports-plugin", "q-plugin"]
        wait_until(lambda: listener.counts.acked == 2, 5, "both acked")
    finally:
        stop.set()
        listener.join(2.0)
    assert not listener.is_alive()


# -- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rpchost", "url"),
    [
        ("10.0.0.5", "amqp://guest:guest@10.0.0.5:5672//"),
        ("rabbit.example.org", "amqp://guest:guest@rabbit.example.org:5672//"),
        ("rabbit.example.org:5673", "amqp://guest:guest@rabbit.example.org:5673//"),
        ("fd00::5", "amqp://guest:guest@[fd00::5]:5672//"),
        ("[fd00::5]:5673", "amqp://guest:guest@[fd00::5]:5673//"),
        ("rabbit://guest:guest@127.0.0.1:5672/", "amqp://guest:guest@127.0.0.1:5672//"),
        ("rabbit://u:p@h1:5672,u:p@h2:5672/vhost", "amqp://u:p@h1:5672/vhost;amqp://u:p@h2:5672/vhost"),
        ("rabbit://u:p@h1,u:p@h2", "amqp://u:p@h1//;amqp://u:p@h2//"),
        ("rabbit://u:pa/ss@h1:5672/v", "amqp://u:pa/ss@h1:5672/v"),
        ("amqp://guest:guest@localhost//", "amqp://guest:guest@localhost//"),
        ("memory://", "memory://"),
    ],
)
def test_normalise_url(rpchost: str, url: str) -> None:
    assert normalise_url(rpchost) == url


@pytest.mark.parametrize("bad", ["", "   ", "host:notaport", "host:70000"])
def test_normalise_url_rejects_clearly(bad: str) -> None:
    with pytest.raises(ValueError, match="rpchost"):
        normalise_url(bad)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@host//", "amqp://guest:***@host//"),
        ("amqp://u:p@h1:5672/v;amqp://u:q@h2:5672/v", "amqp://u:***@h1:5672/v;amqp://u:***@h2:5672/v"),
        ("rabbit://u:p1@h1:5672,w:p2@h2:5672/v", "rabbit://u:***@h1:5672,w:***@h2:5672/v"),
        ("amqp://u:pa/ss@h//", "amqp://u:***@h//"),
        ("amqp://host//", "amqp://host//"),
        ("memory://", "memory://"),
        ("10.0.0.5", "10.0.0.5"),
    ],
)
def test_url_for_log_hides_passwords(url: str, shown: str) -> None:
    assert url_for_log(url) == shown


def test_listener_rejects_bad_arguments() -> None:
    stop = threading.Event()
    with pytest.raises(ValueError, match="at least one subscription"):
        BusListener(AMQP_URL, [], print, stop=stop)
    with pytest.raises(ValueError, match="default exchange"):
        BusListener(AMQP_URL, [Subscription("", "q")], print, stop=stop)
    with pytest.raises(ValueError, match="reconnect_backoff"):
        BusListener(AMQP_URL, HEARTBEATS, print, stop=stop, reconnect_backoff=(5.0, 1.0))
