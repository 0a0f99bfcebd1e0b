"""/healthz, /readyz and /metrics on the real daemon process's metrics listener.

The bus outage is a vhost of this test's own, deleted under the running daemon (the broker closes the
connections in it) and created again: the shared broker's process is never touched. Neutron is a
scripted noauth endpoint. The flood is a daemon allowed 128 descriptors and 300 idle connections to its
metrics port, renewed 100 a second.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.daemon_proc import IdleFlood, NeutronStub, RpcDaemon, Vhost, http_get, l3_config, open_files_limit
from tests.kit.metrics import scrape
from tests.kit.poll import wait_until
from tests.kit.ports import free_port

from rpcdaemon.broker.connection import publish_raw
from rpcdaemon.demo.scenario import heartbeat_body
from rpcdaemon.model import L3_AGENT, Agent


@pytest.fixture
def vhost() -> Iterator[Vhost]:
    v = Vhost()
    v.create()
    yield v
    with contextlib.suppress(AssertionError):  # the test deleted it and failed before creating it again
        v.delete()


def readyz(port: int) -> tuple[int, dict[str, object]]:
    code, content_type, body = http_get(port, "/readyz")
    assert content_type == "application/json"
    return code, json.loads(body)


def test_health_endpoints_through_a_bus_outage(tmp_path: Path, vhost: Vhost, stub: NeutronStub) -> None:
    port = free_port()
    daemon = RpcDaemon(tmp_path, l3_config(bus_url=vhost.url, endpoint=stub.url, neutron_conf=tmp_path / "n.conf",
                                           metrics_port=port))
    daemon.start()
    try:
        wait_until(lambda: "metrics on http://127.0.0.1" in daemon.log(), 20, "the metrics listener")
        wait_until(lambda: readyz(port)[0] == 200, 20, "/readyz 200")
        assert readyz(port) == (200, {"ready": True, "role": "active", "bus": "connected",
                                      "api": {"L3Agent": True}, "reasons": []})
        code, content_type, body = http_get(port, "/healthz")
        assert (code, content_type) == (200, "application/json")
        health = json.loads(body)
        assert health["status"] == "ok"
        assert 0 <= health["loop_age_s"] < 5
        code, content_type, body = http_get(port, "/metrics")
        assert code == 200
        assert content_type.startswith("text/plain")
        assert "rpcdaemon_heartbeats_total" in body.decode()
        wait_until(lambda: "rpcdaemon_bus_connected 1.0" in http_get(port, "/metrics")[2].decode(), 10,
                   "the bus gauge at 1 (set by the next check)")
        code, _, body = http_get(port, "/favicon.ico")
        assert code == 404

        vhost.delete()  # the bus goes away under the daemon
        wait_until(lambda: readyz(port)[0] == 503, 20, "/readyz 503 with the bus down")
        code, doc = readyz(port)
        assert doc["bus"] == "down"
        assert doc["reasons"] == ["bus: not connected"]
        assert doc["api"] == {"L3Agent": True}
        assert http_get(port, "/healthz")[0] == 200  # alive: the loop runs, only the bus is gone
        wait_until(lambda: "rpcdaemon_bus_connected 0.0" in http_get(port, "/metrics")[2].decode(), 10,
                   "the bus gauge at 0")

        vhost.create()  # back: the listener reconnects by itself
        wait_until(lambda: readyz(port)[0] == 200, 30, "/readyz 200 after the bus came back")
        assert daemon.running
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    err = daemon.log()
    assert "Traceback" not in err
    assert "guest:guest" not in err  # the broker's password never reaches the log


def heartbeats_counted(port: int) -> float:
    [(_, count)] = scrape(port)["rpcdaemon_heartbeats_total"]
    return count


def test_more_idle_connections_than_descriptors_starve_nothing(tmp_path: Path, vhost: Vhost,
                                                              stub: NeutronStub) -> None:
    """Idle connections, more than the daemon has descriptors: /healthz and /readyz still answer, heartbeats
    are still consumed, and a bus that drops meanwhile is connected again (it needs new descriptors)."""
    port = free_port()
    daemon = RpcDaemon(tmp_path, l3_config(bus_url=vhost.url, endpoint=stub.url, neutron_conf=tmp_path / "n.conf",
                                           metrics_port=port))
    daemon.start(open_files=128)
    assert daemon.proc is not None
    pid = daemon.proc.pid
    flood = IdleFlood(port, 300)
    try:
        wait_until(lambda: "metrics on http://127.0.0.1" in daemon.log(), 20, "the metrics listener")
        wait_until(lambda: readyz(port)[0] == 200, 30, "/readyz 200")
        assert open_files_limit(pid) == (128, 128)  # the daemon cannot raise it: the flood outnumbers it
        flood.start()
        wait_until(lambda: flood.opened >= 500, 30, "the flood to open 300 connections and renew 200")
        for _ in range(20):  # each within http_get's 5 s: a starved listener never answers at all
            code, _, body = http_get(port, "/healthz")
            assert code == 200
            assert json.loads(body)["status"] == "ok"
        # The listener took the flood's connections and closed the oldest idle ones: it was at its cap.
        wait_until(lambda: flood.dropped >= 100, 30, "the listener to close 100 idle connections")

        before = heartbeats_counted(port)
        agent = Agent(id="l3-x", agent_type=L3_AGENT, host="net-x")
        for _ in range(5):
            publish_raw(vhost.url, "neutron", "q-reports-plugin", heartbeat_body(agent, start_flag=False))
        wait_until(lambda: heartbeats_counted(port) >= before + 5, 20, "the five heartbeats consumed")

        opened = flood.opened
        vhost.delete()  # the broker closes the daemon's connections: reconnecting needs new descriptors
        wait_until(lambda: readyz(port)[0] == 503, 20, "/readyz 503 with the bus down")
        vhost.create()
        wait_until(lambda: readyz(port)[0] == 200, 30, "/readyz 200 after the bus came back, under the flood")
        assert flood.opened > opened  # the flood went on all along
        assert daemon.running
        flood.stop()
        assert daemon.stop() == 0
    finally:
        flood.stop()
        daemon.cleanup()
    err = daemon.log()
    assert "Too many open files" not in err
    assert "Traceback" not in err
    assert "metrics listener: 16 connections open, its limit" in err
