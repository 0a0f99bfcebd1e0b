"""The listener on the real RabbitMQ when things are not as they should be: a bounded queue under a
stalled consumer, Neutron's exchanges declared with other properties or not yet at all, and
connections that fail in ways that are not the broker's. Each test that declares exchanges uses a
vhost of its own (created and deleted here), so the shared broker's ``neutron`` exchange is untouched.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.component.rabbit import AMQP_URL, Collector, declare_oslo_exchange, rabbitmqctl
from tests.kit.poll import wait_until
from tests.kit.service import make_service

from rpcdaemon.broker.connection import make_connection, publish_raw
from rpcdaemon.broker.link import RawMessage, fanout_subscription, neutron_subscription
from rpcdaemon.exits import EXIT_FAILED
from rpcdaemon.observing.listener import MAX_UNEXPECTED, BusListener
from rpcdaemon.plugins.dump import DumpPlugin

HEARTBEATS = [neutron_subscription("q-reports-plugin")]


@pytest.fixture
def vhost() -> Iterator[str]:
    name = f"rpcd-health-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    rabbitmqctl("delete_vhost", name)


def test_a_stalled_consumer_keeps_the_queue_bounded_and_counts_the_drops(start_listener: Any, vhost: str) -> None:
    declare_oslo_exchange(url=vhost)
    release = threading.Event()
    got = Collector()

    def stalled(raw: RawMessage) -> None:
        release.wait(30)
        got(raw)

    listener, _ = start_listener(HEARTBEATS, stalled, url=vhost, name="stall", queue_max_length=10)
    sent = 400
    with make_connection(vhost) as conn:
        for i in range(sent):
            publish_raw(conn, "neutron", "q-reports-plugin", f'{{"n": {i}}}')
    # 256 in flight to the stalled consumer (prefetch), at most 10 waiting: the rest were dropped.
    wait_until(lambda: _ready(vhost, listener.queue_name) == 10, 10, "the bounded queue to fill")
    release.set()
    wait_until(lambda: len(got.snapshot()) == 266 and listener.counts.dropped == sent - 266, 10, "drops counted")
    assert [r.body for r in got.snapshot()][-1] == b'{"n": 399}'  # drop-head: the newest survive
    assert listener.link().connected


def _ready(vhost_url: str, queue: str) -> int | None:
    vhost = vhost_url.rsplit("/", 1)[1]
    for line in rabbitmqctl("list_queues", "-p", vhost, "name", "messages_ready").splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    return None


def test_durable_neutron_exchange_is_used_passively_and_stays_as_the_server_made_it(
    start_listener: Any, vhost: str
) -> None:
    """amqp_durable_queues = true: the server's exchange is durable; the daemon must not redeclare it."""
    declare_oslo_exchange(url=vhost, durable=True)
    got = Collector()
    start_listener(HEARTBEATS, got, url=vhost, name="durable")
    declare_oslo_exchange(url=vhost, durable=True)  # the "server" reconnects: no PRECONDITION_FAILED
    publish_raw(vhost, "neutron", "q-reports-plugin", b"{}", durable=True)
    wait_until(lambda: got.snapshot(), 10, "a message through the durable exchange")
    rows = rabbitmqctl("list_exchanges", "-p", vhost.rsplit("/", 1)[1], "name", "durable").splitlines()
    assert "neutron\ttrue" in rows


def test_missing_neutron_exchange_is_waited_for_not_created(
    start_listener: Any, vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon.observing")
    got = Collector()
    listener, _ = start_listener(HEARTBEATS, got, url=vhost, name="waiter", wait_connected=False,
                                 reconnect_backoff=(0.1, 0.3))
    wait_until(lambda: "does not exist yet" in caplog.text, 10, "the WARNING about the missing exchange")
    threading.Event().wait(1.0)  # several more tries
    assert not listener.link().connected  # deaf: no window may start
    names = rabbitmqctl("list_exchanges", "-p", vhost.rsplit("/", 1)[1], "name").split()
    assert "neutron" not in names  # never created by the daemon
    waits = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(waits) == 1, [r.getMessage() for r in waits]
    declare_oslo_exchange(url=vhost, durable=True)  # neutron-server starts, durable queues on
    wait_until(lambda: listener.link().connected, 10, "the link once the exchange exists")
    publish_raw(vhost, "neutron", "q-reports-plugin", b"{}", durable=True)
    wait_until(lambda: got.snapshot(), 10, "a heartbeat")


def test_heartbeats_flow_while_the_fanout_exchange_is_missing_and_it_is_bound_later(
    start_listener: Any, vhost: str
) -> None:
    declare_oslo_exchange(url=vhost)
    got = Collector()
    listener, _ = start_listener([*HEARTBEATS, fanout_subscription("dhcp_agent")], got, url=vhost, name="fan")
    assert listener.pending_exchanges() == ["dhcp_agent_fanout"]
    publish_raw(vhost, "neutron", "q-reports-plugin", b'{"hb": 1}')
    wait_until(lambda: got.snapshot(), 10, "a heartbeat without the fanout exchange")
    # a DHCP agent connects: its consumer declares the fanout exchange; the listener binds it at once
    publish_raw(vhost, "dhcp_agent_fanout", "", b"lost", exchange_type="fanout", auto_delete=True)
    appeared = time.monotonic()
    wait_until(lambda: not listener.pending_exchanges(), 10, "the fanout binding")
    assert time.monotonic() - appeared < 2.0  # Dump shows fanout traffic about a second after it exists
    publish_raw(vhost, "dhcp_agent_fanout", "", b'{"fan": 1}', exchange_type="fanout", auto_delete=True)
    wait_until(lambda: any(r.exchange == "dhcp_agent_fanout" for r in got.snapshot()), 10, "a fanout message")


class _Broken:
    """A real connection whose channel() fails the way a bug would (not a broker error)."""

    def __init__(self, url: str) -> None:
        self._conn = make_connection(url)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def channel(self) -> Any:
        raise TypeError("a bug in the listener's own code path")


def test_unexpected_errors_are_logged_retried_then_fatal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon.observing")
    stop = threading.Event()
    listener = BusListener(AMQP_URL, HEARTBEATS, Collector(), stop=stop, name="broken",
                           reconnect_backoff=(0.01, 0.05), connection_factory=lambda: _Broken(AMQP_URL))  # type: ignore[arg-type,return-value]
    listener.start()
    listener.join(10)
    stop.set()
    assert not listener.is_alive()
    assert listener.fatal is not None
    assert "unexpected errors" in listener.fatal
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == MAX_UNEXPECTED
    assert all(r.exc_info for r in errors)  # each with its traceback
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)


def test_a_connection_factory_that_raises_ends_the_service_non_zero(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    stop = threading.Event()

    def factory() -> Any:
        raise ValueError("Port could not be cast to integer value")

    svc = make_service(bus_url=AMQP_URL, check_interval=0.05, dump=DumpPlugin("neutron", None, out=io.StringIO()),
                       stop=stop, connection_factory=factory)
    done: list[int] = []
    runner = threading.Thread(target=lambda: done.append(svc.run()), daemon=True)
    runner.start()
    runner.join(30)
    stop.set()
    assert done == [EXIT_FAILED]
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert any("bus listener bus-dump gave up" in m for m in critical), critical
