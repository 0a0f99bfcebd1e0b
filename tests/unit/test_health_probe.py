"""The service's proof of life and readiness: ``Service.probe``, ``/healthz`` and ``/readyz`` over real HTTP,
READY/STATUS/WATCHDOG/STOPPING on a real datagram socket, and the executor's progress callbacks.

The bus is kombu's in-memory transport, Neutron the in-memory fake (with a gate where a call must hang),
the health server really listens on 127.0.0.1. A wedged loop is made honestly: a Neutron call the loop
thread makes that does not return until the test lets it.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.kit.clock import Clock
from tests.kit.poll import wait_until
from tests.kit.service import make_service

from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.daemon.plugin_factory import AgentPluginConfig, build_plugin
from rpcdaemon.daemon.service import Service
from rpcdaemon.deciding.liveness import BrakePolicy, Judged, LivenessPolicy, Verdict
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import L3_AGENT, Action, ActionKind, Agent
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import Timing
from rpcdaemon.plugins.dump import DumpPlugin
from rpcdaemon.plugins.report import PassReport
from rpcdaemon.telemetry.health import Probe
from rpcdaemon.telemetry.metrics import Metrics
from rpcdaemon.telemetry.sdnotify import Notifier


class GatedNeutron(FakeNeutron):
    """list_agents blocks while ``hang`` is set, until ``release``: a call that does not return."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()

    def list_agents(self) -> list[Agent]:
        if self.hang.is_set():
            self.entered.set()
            self.release.wait(30)
        return super().list_agents()


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    directory = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    path = str(directory / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path, sock
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def received(sock: socket.socket) -> list[str]:
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        return got


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def l3_service(api: FakeNeutron, stop: threading.Event, *, clock: Callable[[], float] = time.monotonic,
               notifier: Notifier | None = None, metrics: Metrics | None = None) -> Service:
    registry = AgentRegistry(10.0)
    cfg = AgentPluginConfig(
        liveness=LivenessPolicy(down_time=10.0, startup_grace=10.0, revive_hold=0.0),
        timing=Timing(reconcile_interval=5.0, retry_reconcile_after=0.2),
        executor=ExecutorPolicy(workers=2, backoff_min=0.0, backoff_max=0.0),
        brake=BrakePolicy(max_dead_fraction=0.5),
        max_moves=10,
    )
    holder: dict[str, Service] = {}
    plugin = build_plugin("L3Agent", api, registry, cfg, bus_since=lambda: holder["svc"].bus_since(),
                          stop=stop, clock=clock)
    svc = make_service(registry=registry, plugins=[plugin], check_interval=0.05, stop=stop, clock=clock,
                       notifier=notifier, metrics=metrics)
    holder["svc"] = svc
    return svc


def run_service(svc: Service) -> threading.Thread:
    thread = threading.Thread(target=svc.run, name="test-loop", daemon=True)
    thread.start()
    return thread


def test_ready_waits_for_the_api_then_status_watchdog_and_stopping(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    api = FakeNeutron()
    api.add_agent(L3_AGENT, "net-a", agent_id="l3-a")
    api.outage = True  # the API does not answer yet
    stop = threading.Event()
    metrics = Metrics()
    svc = l3_service(api, stop, notifier=Notifier(path), metrics=metrics)
    metrics.serve("127.0.0.1", 0)
    assert metrics.port is not None
    thread = run_service(svc)
    try:
        wait_until(lambda: svc.probe().bus, what="the bus listener to connect")
        wait_until(lambda: svc.plugins[0].api_ok is False, what="a failed API call")
        time.sleep(0.5)  # several checks with the bus up and the API down
        seen = received(sock)
        assert not [m for m in seen if "READY=1" in m], seen
        assert any(m.startswith("STATUS=active; L3Agent ") and "Neutron API failing" in m and m.endswith("bus up")
                   for m in seen), seen
        status, _, body = get(metrics.port, "/readyz")
        assert status == 503
        doc = json.loads(body)
        assert doc == {"ready": False, "role": "active", "bus": "connected", "api": {"L3Agent": False},
                       "reasons": ["L3Agent: Neutron API call failed; retrying"]}
        assert get(metrics.port, "/healthz")[0] == 200  # alive all the same

        api.outage = False
        ready = wait_until(lambda: [m for m in received(sock) if m.startswith("READY=1")], what="READY=1")
        assert ready[0].startswith("READY=1\nSTATUS=active; L3Agent ")
        assert get(metrics.port, "/readyz")[0] == 200
        pings: list[str] = []

        def two_pings() -> bool:
            pings.extend(m for m in received(sock) if m == "WATCHDOG=1")
            return len(pings) >= 2

        wait_until(two_pings, timeout=5, what="two watchdog pings")
        assert not [m for m in received(sock) if m.startswith("READY")]  # once only
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert "STOPPING=1" in received(sock)


def test_a_wedged_loop_stops_the_pings_and_fails_healthz(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    api = GatedNeutron()
    api.add_agent(L3_AGENT, "net-a", agent_id="l3-a")
    clock = Clock()
    stop = threading.Event()
    metrics = Metrics()
    svc = l3_service(api, stop, clock=clock, notifier=Notifier(path), metrics=metrics)
    metrics.serve("127.0.0.1", 0)
    port = metrics.port
    assert port is not None
    thread = run_service(svc)
    try:
        wait_until(lambda: svc.plugins[0].api_ok, what="the first reconcile")
        status, headers, body = get(port, "/healthz")
        assert (status, headers["Content-Type"]) == (200, "application/json")
        assert json.loads(body)["status"] == "ok"

        api.hang.set()
        clock.advance(6.0)  # the next reconcile is due: the loop thread calls list_agents, which hangs
        assert api.entered.wait(10)
        received(sock)
        time.sleep(1.5)  # longer than the ping interval: a live loop would have pinged
        assert received(sock) == []
        # Calls from other threads are no proof of the loop's life: neither a ping nor a younger loop age.
        side = threading.Thread(target=svc.plugins[0].api.list_routers)
        side.start()
        side.join(5)
        assert received(sock) == []
        clock.advance(31.0)
        status, _, body = get(port, "/healthz")
        assert status == 503
        assert json.loads(body) == {"status": "stuck", "loop_age_s": 31.0,
                                    "reason": "check loop silent for 31s (limit 30s)"}
        status, _, body = get(port, "/readyz")
        assert status == 503
        assert "check loop silent for 31s (limit 30s)" in json.loads(body)["reasons"]

        api.release.set()  # the call returns; the loop goes on and pings again
        wait_until(lambda: "WATCHDOG=1" in received(sock), timeout=5, what="pings after the release")
        assert get(port, "/healthz")[0] == 200
    finally:
        api.release.set()
        stop.set()
        thread.join(10)


def test_endpoints_metrics_404_and_head() -> None:
    stop = threading.Event()
    metrics = Metrics()
    svc = l3_service(FakeNeutron(), stop, metrics=metrics)
    metrics.serve("127.0.0.1", 0)
    port = metrics.port
    assert port is not None
    try:
        status, headers, body = get(port, "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        assert b"rpcdaemon_bus_connected" in body
        status, headers, body = get(port, "/metrics", method="HEAD")
        assert (status, body) == (200, b"")
        status, _, body = get(port, "/nothing-here")
        assert status == 404
        assert b"/healthz" in body
        status, _, body = get(port, "/readyz?verbose=1")  # a query is ignored
        assert status == 503
        doc = json.loads(body)
        assert doc["bus"] == "down"  # never started
        assert doc["api"] == {"L3Agent": None}
        assert doc["reasons"] == ["bus: not connected", "L3Agent: Neutron API not reached yet"]
        assert get(port, "/healthz")[0] == 200
    finally:
        svc.shutdown()


def test_a_dump_only_daemon_is_ready_on_the_bus_alone(notify_socket: tuple[str, socket.socket]) -> None:
    import io

    path, sock = notify_socket
    stop = threading.Event()
    svc = make_service(dump=DumpPlugin("neutron", None, out=io.StringIO()), check_interval=0.05, stop=stop,
                       notifier=Notifier(path))
    thread = run_service(svc)
    try:
        ready = wait_until(lambda: [m for m in received(sock) if m.startswith("READY=1")], what="READY=1")
        assert ready == ["READY=1\nSTATUS=active; Dump; bus up"]
    finally:
        stop.set()
        thread.join(10)


def test_status_text_counts_verdicts_per_plugin() -> None:
    stop = threading.Event()
    svc = l3_service(FakeNeutron(), stop)
    plugin = svc.plugins[0]
    agents = {f"a{i}": Agent(id=f"a{i}", agent_type=L3_AGENT, host=f"h{i}", alive=True, admin_state_up=True)
              for i in range(4)}
    verdicts = [Verdict.ALIVE, Verdict.ALIVE, Verdict.DEAD, Verdict.WARMING]
    plugin.last = PassReport(judged={aid: Judged(a, v, "test") for (aid, a), v in zip(agents.items(), verdicts,
                                                                                        strict=True)})
    assert svc.status_text(svc.probe()) == "active; L3Agent waiting for the Neutron API; bus down"
    plugin.api_ok = True
    assert svc.status_text(svc.probe()) == "active; L3Agent 2 alive 1 warming 1 dead; bus down"
    plugin.api_ok = False
    assert svc.status_text(svc.probe()) == "active; L3Agent 2 alive 1 warming 1 dead, Neutron API failing; bus down"
    svc.shutdown()


@pytest.mark.parametrize(("role", "api", "reasons"), [
    ("active", (("L3Agent", True), ("DHCPAgent", True)), ()),
    ("active", (("L3Agent", True), ("DHCPAgent", None)), ("DHCPAgent: Neutron API not reached yet",)),
    ("standby", (("L3Agent", None),), ()),  # a standby makes no API calls: the bus is what it needs
    ("starting", (("L3Agent", True),), ("role: starting (not yet active or standby)",)),
])
def test_readiness_by_role(role: str, api: tuple[tuple[str, bool | None], ...], reasons: tuple[str, ...]) -> None:
    probe = Probe(role=role, bus=True, api=api, loop_age=1.0, loop_limit=30.0)
    assert probe.reasons == reasons
    status, body = probe.readyz()
    assert status == (503 if reasons else 200)
    assert body["role"] == role
    assert body["reasons"] == list(reasons)


# -- the executor's progress -----------------------------------------------------------------------


class GatedMoves(FakeNeutron):
    """Every unbind and bind waits for a permit: the test decides when each call ends."""

    def __init__(self) -> None:
        super().__init__()
        self.permits = threading.Semaphore(0)
        self.waiting = threading.Semaphore(0)

    def _gate(self) -> None:
        self.waiting.release()
        assert self.permits.acquire(timeout=30)

    def unbind_router(self, agent_id: str, router_id: str) -> None:
        self._gate()
        super().unbind_router(agent_id, router_id)

    def bind_router(self, agent_id: str, router_id: str) -> None:
        self._gate()
        super().bind_router(agent_id, router_id)


def test_executor_progress_comes_in_the_callers_thread_only_as_calls_end() -> None:
    api = GatedMoves()
    src = api.add_agent(L3_AGENT, "net-a", agent_id="l3-a", alive=False)
    dst = api.add_agent(L3_AGENT, "net-b", agent_id="l3-b")
    for rid in ("r1", "r2"):
        api.add_router(rid, router_id=rid)
        api.place_router(rid, src.id)
    calls: list[int] = []
    executor = Executor(api, ExecutorPolicy(workers=2, backoff_min=0, backoff_max=0), stop=threading.Event(),
                        on_progress=lambda: calls.append(threading.get_ident()))
    actions = [Action(ActionKind.MOVE_ROUTER, rid, src, dst, "agent dead", source_dead=True) for rid in ("r1", "r2")]
    runner: list[int] = []

    def run() -> None:
        runner.append(threading.get_ident())
        executor.run(actions)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert api.waiting.acquire(timeout=5)
        assert api.waiting.acquire(timeout=5)  # both unbinds are in Neutron, neither returns
        time.sleep(0.6)  # three of the waiting loop's looks: nothing ended, nothing reported
        assert calls == []
        api.permits.release()  # one unbind returns
        wait_until(lambda: calls, timeout=2, what="progress after a call ended")
        first = len(calls)
        time.sleep(0.6)
        assert len(calls) == first  # the other calls still hang: no more callbacks
        api.permits.release(3)  # the other unbind and both binds
        thread.join(10)
        assert not thread.is_alive()
    finally:
        api.permits.release(10)
        thread.join(10)
        executor.close()
    assert len(calls) >= 3  # one per ended call at least: two actions finished besides
    assert set(calls) == set(runner)  # never from a worker thread
    assert api.router_bindings() == {"r1": frozenset({dst.id}), "r2": frozenset({dst.id})}
