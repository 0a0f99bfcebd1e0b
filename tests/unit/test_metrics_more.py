"""The metrics a dashboard needs, each fed through the real service (``metrics_world.World``: build_plugin's plugin
on the FakeNeutron, an injected clock and wall clock): heartbeat age per agent computed at scrape time,
routers/networks per agent, action durations, API errors by class, bus reconnects, last successful pass, paused,
build info; and a standby exports the agent metrics but no action metric."""

from __future__ import annotations

import io
import platform
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu.connection import Connection
from tests.kit.clock import Clock
from tests.kit.service import make_service
from tests.unit.metrics_world import LATENCY, START, TICK, WALL, World

from rpcdaemon import __version__
from rpcdaemon.acting.api import ErrorKind
from rpcdaemon.coordination.leader import Leadership
from rpcdaemon.model import OVS_AGENT, Heartbeat
from rpcdaemon.plugins.dump import DumpPlugin
from rpcdaemon.telemetry.metrics import Metrics

AGE = "rpcdaemon_agent_heartbeat_age_seconds"
RESOURCES = "rpcdaemon_agent_resources"
DURATION = "rpcdaemon_action_duration_seconds"


@pytest.fixture
def worlds() -> Iterator[list[World]]:
    made: list[World] = []
    yield made
    for w in made:
        w.close()


def world(worlds: list[World], plugin: str = "L3Agent", **kw: Any) -> World:
    w = World(plugin, **kw)
    worlds.append(w)
    return w


def seed(w: World) -> None:
    """Three routers (or networks) on agent a, one on b, none on c."""
    for i, host in enumerate("aaab", start=1):
        if w.plugin.name == "L3Agent":
            w.api.add_router(router_id=f"r{i}")
            w.api.place_router(f"r{i}", host)
        else:
            w.api.add_network(network_id=f"n{i}")
            w.api.place_network(f"n{i}", host)


def fail_over(w: World) -> None:
    """Agent a falls silent and is judged dead; its work moves to b and c."""
    w.run(2 * TICK)
    w.silent.add("a")
    w.run(60)


# -- heartbeat age ----------------------------------------------------------------------------------------


def test_heartbeat_age_is_computed_at_scrape_time_and_leaves_with_the_agent(worlds: list[World]) -> None:
    w = world(worlds)
    w.api.add_agent(OVS_AGENT, "host-a", agent_id="ovs-a")  # listed and heard, but no plugin watches its type
    w.registry.record(Heartbeat(OVS_AGENT, "host-a", w.clock.now))
    w.tick()  # the reconcile lists the agents
    heard = w.last_spoke["a"]
    assert w.sample(AGE, **w.agent_labels("a")) == pytest.approx(w.clock.now - heard)
    w.clock.advance(7.0)  # no pass, no step: the scrape itself reads the clock
    assert w.sample(AGE, **w.agent_labels("a")) == pytest.approx(w.clock.now - heard)
    assert w.sample(AGE, **w.agent_labels("a")) >= 7.0  # type: ignore[operator]
    assert w.sample(AGE, agent_type=OVS_AGENT, host="host-a", agent_id="ovs-a") is None
    w.api.delete_agent("b")  # deleted from Neutron: gone from the metric at the next reconcile
    del w.last_spoke["b"]
    w.run(60)
    assert w.sample(AGE, **w.agent_labels("b")) is None
    assert w.sample(AGE, **w.agent_labels("c")) == pytest.approx(w.clock.now - w.last_spoke["c"])


def test_an_agent_listed_but_never_heard_has_no_heartbeat_age(worlds: list[World]) -> None:
    w = world(worlds, hosts=("a",))
    w.silent.add("z")
    w.api.add_agent(w.agent_type, "host-z", agent_id="z")
    w.tick()
    assert w.sample(AGE, **w.agent_labels("a")) is not None
    assert w.sample(AGE, **w.agent_labels("z")) is None


# -- resources per agent, action durations ----------------------------------------------------------------


@pytest.mark.parametrize("plugin", ["L3Agent", "DHCPAgent"])
def test_resources_per_agent_follow_the_cache_after_each_pass(worlds: list[World], plugin: str) -> None:
    w = world(worlds, plugin)
    seed(w)
    w.tick()
    assert {h: w.sample(RESOURCES, **w.agent_labels(h)) for h in "abc"} == {"a": 3, "b": 1, "c": 0}
    fail_over(w)
    after = {h: w.sample(RESOURCES, **w.agent_labels(h)) for h in "abc"}
    assert after["a"] == 0
    assert after["b"] + after["c"] == 4  # type: ignore[operator]
    assert after == {"a": 0, "b": 2, "c": 2}  # spread: the least-loaded target first


def test_action_durations_are_a_histogram_by_plugin_and_kind(worlds: list[World]) -> None:
    w = world(worlds)
    seed(w)
    fail_over(w)
    labels = {"plugin": "L3Agent", "kind": "move-router"}
    assert w.sample(f"{DURATION}_count", **labels) == 3
    # Each move is an unbind and a bind of LATENCY each on the rig's clock: the outcome's own seconds.
    assert w.sample(f"{DURATION}_sum", **labels) == pytest.approx(3 * 2 * LATENCY)
    assert w.sample(f"{DURATION}_bucket", le="0.5", **labels) == 0
    assert w.sample(f"{DURATION}_bucket", le="1.0", **labels) == 3


# -- API errors, bus reconnects ----------------------------------------------------------------------------


def test_api_errors_are_counted_by_class_from_the_plugin_and_from_its_executor(worlds: list[World]) -> None:
    w = world(worlds)
    seed(w)
    w.tick()
    for kind in ErrorKind:  # every class is there from the start, at 0
        assert w.sample("rpcdaemon_api_errors_total", plugin="L3Agent", kind=kind.value) == 0
    w.api.fail_next(2, ErrorKind.TEMPORARY, method="list_agents")  # the plugin's own reconcile, twice
    w.plugin.request_reconcile()
    w.tick()
    w.tick()
    assert w.sample("rpcdaemon_api_errors_total", plugin="L3Agent", kind="temporary") == 2
    # Only the executor unbinds: one refused unbind is one PERMANENT error (the move fails; a later pass redoes it).
    w.api.fail_next(1, ErrorKind.PERMANENT, method="unbind_router")
    fail_over(w)
    assert w.sample("rpcdaemon_api_errors_total", plugin="L3Agent", kind="permanent") == 1
    assert w.sample("rpcdaemon_actions_total", plugin="L3Agent", kind="move-router", status="failed") == 1
    assert w.sample("rpcdaemon_api_errors_total", plugin="L3Agent", kind="temporary") == 2
    assert w.sample("rpcdaemon_api_errors_total", plugin="L3Agent", kind="conflict") == 0


class _CuttableConnection(Connection):
    """kombu's in-memory connection whose next ``cut`` drains fail as a lost link would."""

    cut = 0

    def drain_events(self, **kwargs: Any) -> Any:
        if self.cut:
            self.cut -= 1
            raise OSError("link cut")
        return super().drain_events(**kwargs)


def test_bus_reconnects_count_each_listeners_lost_links() -> None:
    made: list[_CuttableConnection] = []

    def connect() -> _CuttableConnection:
        made.append(_CuttableConnection("memory://"))
        return made[-1]

    svc = make_service(dump=DumpPlugin("neutron", None, out=io.StringIO()), connection_factory=connect)
    listener = svc.listeners[0]
    svc.start()
    try:
        deadline = time.monotonic() + 10
        while not listener.link().connected:
            assert time.monotonic() < deadline, "the memory bus never connected"
            time.sleep(0.01)
        svc.step()
        assert svc.metrics.registry.get_sample_value("rpcdaemon_bus_reconnects_total", {"listener": listener.name}) == 0
        made[0].cut = 1
        while not (listener.link().outages == 1 and listener.link().connected):
            assert time.monotonic() < deadline, "the listener never reconnected"
            time.sleep(0.01)
        svc.step()
        assert svc.metrics.registry.get_sample_value("rpcdaemon_bus_reconnects_total", {"listener": listener.name}) == 1
        svc.step()  # counted once, not at every check
        assert svc.metrics.registry.get_sample_value("rpcdaemon_bus_reconnects_total", {"listener": listener.name}) == 1
    finally:
        svc.shutdown()


# -- last pass, paused, build info -------------------------------------------------------------------------


def test_the_last_pass_time_is_wall_clock_and_stands_still_while_passes_fail(worlds: list[World]) -> None:
    w = world(worlds)
    w.tick()
    assert w.sample("rpcdaemon_last_pass_timestamp_seconds", plugin="L3Agent") == WALL + TICK
    w.api.outage = True
    w.plugin.request_reconcile()
    w.run(3 * TICK)
    assert w.plugin.last.ok is False
    assert w.sample("rpcdaemon_last_pass_timestamp_seconds", plugin="L3Agent") == WALL + TICK
    w.api.outage = False
    w.tick()
    assert w.plugin.last.ok is True
    assert w.sample("rpcdaemon_last_pass_timestamp_seconds", plugin="L3Agent") == w.wall.now == WALL + 5 * TICK


def test_build_info_names_the_versions_and_paused_is_0() -> None:
    metrics = Metrics()
    assert metrics.registry.get_sample_value(
        "rpcdaemon_build_info", {"version": __version__, "python": platform.python_version()}) == 1
    assert metrics.registry.get_sample_value("rpcdaemon_paused") == 0


# -- a standby ---------------------------------------------------------------------------------------------


class _Lock:
    """A ``LockBackend`` this instance holds while ``held``."""

    name = "rpcdaemon.leader.metrics-test"
    lease = 3.0

    def __init__(self) -> None:
        self.held = True

    def describe(self) -> str:
        return "test lock"

    def acquire(self) -> bool:
        return self.held

    def confirm(self) -> bool:
        return self.held

    def release(self) -> None:
        self.held = False

    def is_backend_error(self, exc: BaseException) -> bool:
        return False

    def explain(self, exc: BaseException) -> str:
        return str(exc)


def test_a_dry_run_is_never_the_active_instance_for_the_alerts(worlds: list[World]) -> None:
    """A dry run plans as if it were active, but moves nothing: rpcdaemon_leader 1 there would hide the real
    active instance's absence from RpcdaemonNoActiveInstance."""
    live, dry = world(worlds), world(worlds, dry_run=True)
    for w in (live, dry):
        seed(w)
        w.tick()
    assert live.sample("rpcdaemon_leader") == 1
    assert dry.sample("rpcdaemon_leader") == 0
    assert dry.sample(RESOURCES, **dry.agent_labels("a")) == 3  # it still exports what it sees


def test_a_standby_exports_the_agent_metrics_but_no_action_metrics(worlds: list[World]) -> None:
    clock, lock = Clock(START), _Lock()
    lead = Leadership(lock, clock=clock)
    w = world(worlds, leadership=lead, clock=clock)
    w.before_step = lead.step  # the lease confirmed right before each check (its thread, in the daemon)
    seed(w)
    w.tick()
    assert w.sample("rpcdaemon_leader") == 1
    assert w.sample(RESOURCES, **w.agent_labels("a")) == 3
    active_pass = w.sample("rpcdaemon_last_pass_timestamp_seconds", plugin="L3Agent")
    assert active_pass == w.wall.now

    lock.held = False  # another instance has the lock now
    w.silent.add("a")
    w.run(90)  # a standby now: it judges a dead (once its agent read, every 60 s, has Neutron agree) and moves nothing
    assert w.sample("rpcdaemon_leader") == 0
    assert w.sample("rpcdaemon_agent_verdict", verdict="dead", **w.agent_labels("a")) == 1
    assert w.sample(AGE, **w.agent_labels("b")) == pytest.approx(w.clock.now - w.last_spoke["b"])
    assert w.sample(AGE, **w.agent_labels("a")) > 30  # type: ignore[operator]
    for h in "abc":
        assert w.sample(RESOURCES, **w.agent_labels(h)) is None  # its cache is a past term's: not exported
    assert w.sample("rpcdaemon_last_pass_timestamp_seconds", plugin="L3Agent") == active_pass
    assert w.sample(f"{DURATION}_count", plugin="L3Agent", kind="move-router") is None
    assert not [s for m in w.metrics.registry.collect() if m.name == "rpcdaemon_actions" for s in m.samples]
    assert w.api.router_bindings()["r1"] == frozenset({"a"})
