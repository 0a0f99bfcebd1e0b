"""/healthz, /readyz and /metrics on the real daemon process's metrics listener.

The bus outage is a vhost of this test's own, deleted under the running daemon (the broker closes the
connections in it) and created again: the shared broker's process is never touched. Neutron is a
scripted noauth endpoint.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_proc import NeutronStub, RpcDaemon, Vhost, free_port, http_get, l3_config, wait_until


@pytest.fixture
def vhost() -> Iterator[Vhost]:
    v = Vhost()
    v.create()
    yield v
    with contextlib.suppress(AssertionError):  # the test deleted it and failed before creating it again
        v.delete()


@pytest.fixture
def stub() -> Iterator[NeutronStub]:
    s = NeutronStub()
    s.start()
    yield s
    s.stop()


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
        wait_until(lambda: "metrics on http://127.0.0.1" in daemon.stderr(), 20, "the metrics listener")
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
        assert daemon.running()
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    err = daemon.stderr()
    assert "Traceback" not in err
    assert "guest:guest" not in err  # the broker's password never reaches the log
