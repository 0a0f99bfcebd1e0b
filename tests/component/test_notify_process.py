"""sd_notify from the real daemon process: ``$NOTIFY_SOCKET`` is a datagram socket this test reads, the
bus the real RabbitMQ, Neutron a scripted noauth endpoint that is down at first.

READY=1 comes only once both the bus is connected and the API answered; STATUS= names the role;
WATCHDOG=1 keeps coming, about once a second, and stops while the check loop is wedged for real: the
endpoint accepts the loop's API call and never answers it (``timeout = 600``), so the loop thread is
blocked in that call with no executor progress. The process stays up (it is not SIGSTOPped): only the
loop is stuck, and the pings resume when the call is answered.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.daemon_proc import NeutronStub, NotifySocket, RpcDaemon, http_get, l3_config
from tests.component.rabbit import AMQP_URL
from tests.kit.poll import wait_until
from tests.kit.ports import free_port
from tests.kit.process import clean_env


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def stub() -> Iterator[NeutronStub]:
    """Not started (conftest's is): the API is down when the daemon starts, and comes up in the test."""
    s = NeutronStub()
    yield s
    s.stop()


def pings(messages: list[tuple[float, str]]) -> list[float]:
    return [at for at, m in messages if m == "WATCHDOG=1"]


def test_ready_after_bus_and_api_watchdog_stops_while_the_loop_is_wedged(
    tmp_path: Path, notify: NotifySocket, stub: NeutronStub
) -> None:
    port = free_port()
    daemon = RpcDaemon(tmp_path, l3_config(bus_url=AMQP_URL, endpoint=stub.url, neutron_conf=tmp_path / "n.conf",
                                           metrics_port=port, timeout=600))
    daemon.start(env=clean_env(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="120000000"))
    try:
        # timeout = 600 would make the unit's WatchdogSec=120 kill a healthy daemon: said at start.
        wait_until(lambda: "systemd watchdog (WatchdogSec=120s) is short" in daemon.log(), 20, "the warning")
        assert "set WatchdogSec to at least 1220s" in daemon.log()
        # The API endpoint does not listen yet: the bus comes up, READY does not.
        status = notify.wait_for(lambda m: m.startswith("STATUS=") and m.endswith("bus up"), 20,
                                 "a STATUS with the bus up")
        assert status.startswith("STATUS=active; L3Agent ")
        time.sleep(2.0)  # ten checks with the bus up and the API refusing
        assert not [m for _, m in notify.poll() + notify.seen if "READY=1" in m], notify.seen
        assert any("Neutron API failing" in m for _, m in notify.seen), notify.seen
        code, _, body = http_get(port, "/readyz")
        assert code == 503
        assert json.loads(body)["reasons"] == ["L3Agent: Neutron API call failed; retrying"]

        stub.start()
        ready = notify.wait_for(lambda m: "READY=1" in m, 20, "READY=1 once the API answers")
        assert ready.startswith("READY=1\nSTATUS=active; L3Agent no agents; bus up"), ready

        # Pings keep coming, at most one a second.
        notify.poll()
        time.sleep(3.5)
        alive = pings(notify.poll())
        assert len(alive) >= 2, notify.seen[-10:]
        assert all(b - a >= 0.9 for a, b in itertools.pairwise(alive)), alive

        # Wedge the loop: its next reconcile (every second) is accepted and never answered.
        stub.hang()
        assert stub.hanging.wait(10), "the daemon's reconcile never reached the endpoint"
        time.sleep(0.3)
        notify.poll()
        time.sleep(4.0)
        assert pings(notify.poll()) == [], "pings went on while the check loop was blocked"
        assert daemon.running
        code, _, body = http_get(port, "/healthz")  # alive still: 4 s is well within 30 s
        assert code == 200
        assert json.loads(body)["loop_age_s"] >= 4.0

        stub.release()
        notify.wait_for(lambda m: m == "WATCHDOG=1", 10, "pings after the call was answered")
        assert daemon.stop() == 0
        assert "STOPPING=1" in [m for _, m in notify.poll()]
    finally:
        stub.release()
        daemon.cleanup()
    assert "Traceback" not in daemon.log()


def test_no_notify_socket_no_notifications_and_debug_stays_the_foreground_default(
    tmp_path: Path, stub: NeutronStub
) -> None:
    """Outside systemd nothing changes: no socket is looked for, -d logs at DEBUG."""
    stub.start()
    daemon = RpcDaemon(tmp_path, l3_config(bus_url=AMQP_URL, endpoint=stub.url, neutron_conf=tmp_path / "n.conf"))
    daemon.start()
    try:
        wait_until(lambda: "Neutron API reachable" in daemon.log(), 20, "the first reconcile")
        wait_until(lambda: "ready: active; L3Agent no agents; bus up" in daemon.log(), 20, "the ready line")
        assert " DEBUG " in daemon.log()
        daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert daemon.proc.wait(20) == 0  # type: ignore[union-attr]
    finally:
        daemon.cleanup()


def test_under_systemd_the_journal_gets_info(tmp_path: Path, stub: NeutronStub, notify: NotifySocket) -> None:
    stub.start()
    daemon = RpcDaemon(tmp_path, l3_config(bus_url=AMQP_URL, endpoint=stub.url, neutron_conf=tmp_path / "n.conf"))
    daemon.start(env=clean_env(NOTIFY_SOCKET=notify.path, JOURNAL_STREAM="8:1"))
    try:
        notify.wait_for(lambda m: "READY=1" in m, 20, "READY=1")
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    text = daemon.log()
    assert "rpcdaemon exiting (status 0)" in text
    assert " DEBUG " not in text
