"""Readiness following on FakeNeutron with an injected clock: ready, timeout, bulk reads, no idle calls.

The fake re-binds a router's ports to its new agent's host on a bind and makes them ACTIVE after that
agent's up delay (``None``: never), as the real server does once the agent syncs and its L2 agent
reports the ports up. The plugin-level cases run the real L3Agent/DHCPAgent plugin pass by pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from tests.kit.clock import Clock

from rpcdaemon.acting.api import ErrorKind
from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.acting.readiness import ReadinessFollower, ReadinessPolicy
from rpcdaemon.acting.resources import NETWORK, ROUTER, ResourceKind, network_ready, router_ready
from rpcdaemon.deciding.dhcp import DhcpPolicy
from rpcdaemon.deciding.l3 import L3Policy
from rpcdaemon.deciding.liveness import LivenessPolicy
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import (
    DHCP_AGENT,
    L3_AGENT,
    PORT_DHCP,
    PORT_ROUTER_DISTRIBUTED,
    PORT_ROUTER_GATEWAY,
    PORT_ROUTER_HA,
    PORT_ROUTER_INTERFACE,
    Action,
    ActionKind,
    Agent,
    Heartbeat,
    Outcome,
    OutcomeStatus,
    PortState,
)
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.plugins.dhcpagent import DHCPAgentPlugin
from rpcdaemon.plugins.l3agent import L3AgentPlugin
from rpcdaemon.plugins.report import PassReport
from rpcdaemon.telemetry.metrics import Metrics


@pytest.fixture
def api(clock: Clock) -> FakeNeutron:
    return FakeNeutron(clock=clock, sleep=lambda s: None)


def moved(router_id: str, source: Agent, target: Agent, kind: ActionKind = ActionKind.MOVE_ROUTER) -> Outcome:
    return Outcome(Action(kind, router_id, source, target), OutcomeStatus.DONE, 0.1)


def follower(api: FakeNeutron, clock: Clock, kind: ResourceKind = ROUTER, **policy: object) -> ReadinessFollower:
    return ReadinessFollower(api, ReadinessPolicy(**policy), kind=kind, plugin="L3Agent", clock=clock)  # type: ignore[arg-type]


def world(api: FakeNeutron, routers: int = 1) -> tuple[Agent, Agent, list[str]]:
    a = api.add_agent(L3_AGENT, "host-a", agent_id="a")
    b = api.add_agent(L3_AGENT, "host-b", agent_id="b")
    ids = []
    for i in range(routers):
        rid = api.add_router(router_id=f"r{i}").id
        api.place_router(rid, "a")
        api.add_router_ports(rid, interfaces=2, gateway=True, host="host-a")
        ids.append(rid)
    return a, b, ids


def move(api: FakeNeutron, rid: str, source: Agent, target: Agent) -> Outcome:
    api.unbind_router(source.id, rid)
    api.bind_router(target.id, rid)
    return moved(rid, source, target)


# -- the pure judges ---------------------------------------------------------------------------------

def port(owner: str, host: str, status: str = "ACTIVE") -> PortState:
    return PortState(f"p-{owner}-{host}", "r", owner, host, status)


def test_a_router_is_ready_when_its_hosted_ports_are_active_on_the_target() -> None:
    assert router_ready([], "b")  # no ports: nothing to wait for
    assert router_ready([port(PORT_ROUTER_INTERFACE, "b"), port(PORT_ROUTER_GATEWAY, "b")], "b")
    assert not router_ready([port(PORT_ROUTER_INTERFACE, "b"), port(PORT_ROUTER_GATEWAY, "a")], "b")
    assert not router_ready([port(PORT_ROUTER_INTERFACE, "b", "DOWN")], "b")
    # Distributed and HA ports live on other hosts by design: they do not count.
    assert router_ready([port(PORT_ROUTER_INTERFACE, "b"), port(PORT_ROUTER_DISTRIBUTED, "c", "DOWN"),
                         port(PORT_ROUTER_HA, "a", "DOWN")], "b")


def test_a_network_is_ready_with_an_active_dhcp_port_on_the_target() -> None:
    assert not network_ready([], "b")
    assert not network_ready([port(PORT_DHCP, "a")], "b")
    assert not network_ready([port(PORT_DHCP, "b", "DOWN")], "b")
    assert network_ready([port(PORT_DHCP, "a", "DOWN"), port(PORT_DHCP, "b")], "b")


# -- the follower ------------------------------------------------------------------------------------

def test_a_moved_router_is_ready_once_its_ports_are_active_on_the_target(api: FakeNeutron, clock: Clock) -> None:
    a, b, (rid,) = world(api)
    api.set_up_delay("b", 3.0)
    f = follower(api, clock)
    began = clock.now
    f.track([move(api, rid, a, b)], began)
    assert {(p.host, p.status) for p in api.ports()} == {("host-b", "DOWN")}  # bound there, not up yet
    assert f.poll() == []  # not a whole interval since the move: no read
    assert api.calls["ports_of_devices"] == 0
    clock.now += 1.0
    assert f.poll() == []
    assert api.calls["ports_of_devices"] == 1
    clock.now += 2.5
    (ready,) = f.poll()
    assert (ready.resource_id, ready.target, ready.ready) == (rid, b, True)
    assert ready.seconds == pytest.approx(3.5)
    assert f.tracked == {}
    clock.now += 10
    assert f.poll() == []
    assert api.calls["ports_of_devices"] == 2  # nothing followed: no more reads


def test_a_router_without_ports_is_ready_at_the_first_look(api: FakeNeutron, clock: Clock) -> None:
    a = api.add_agent(L3_AGENT, "host-a", agent_id="a")
    b = api.add_agent(L3_AGENT, "host-b", agent_id="b")
    api.add_router(router_id="bare")
    f = follower(api, clock)
    f.track([moved("bare", a, b)], clock.now)
    clock.now += 1.0
    assert [(r.resource_id, r.ready) for r in f.poll()] == [("bare", True)]


def test_a_target_that_never_brings_it_up_times_out_with_a_warning(
    api: FakeNeutron, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, (rid,) = world(api)
    api.set_up_delay("b", None)  # broken: never syncs
    f = follower(api, clock, timeout=30.0)
    f.track([move(api, rid, a, b)], clock.now)
    results = []
    for _ in range(40):
        clock.now += 1.0
        results += f.poll()
    assert [(r.resource_id, r.ready) for r in results] == [(rid, False)]
    assert results[0].seconds == pytest.approx(30.0)
    assert api.calls["ports_of_devices"] == 30  # one read a second while followed, none after
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"L3Agent: router {rid} not ready on host-b (b) after 30s"
                        " (its ports are not bound there and ACTIVE)"]


def test_many_routers_are_read_in_one_call_and_summed_up_per_host(
    api: FakeNeutron, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a, b, routers = world(api, routers=40)
    api.set_up_delay("b", 2.0)
    f = follower(api, clock)
    f.track([move(api, rid, a, b) for rid in routers], clock.now)
    done = []
    for _ in range(3):
        clock.now += 1.0
        done += f.poll()
    assert sorted(r.resource_id for r in done) == sorted(routers)
    assert api.calls["ports_of_devices"] == 2  # one bulk read per poll, not one per router
    lines = [r.getMessage() for r in caplog.records if "ready" in r.getMessage()]
    assert lines == ["L3Agent: 40 routers ready on host-b (b) in 2.0s median, 2.0s max"]


def test_an_idle_follower_makes_no_call(api: FakeNeutron, clock: Clock) -> None:
    world(api)
    f = follower(api, clock)
    f.track([Outcome(Action(ActionKind.MOVE_ROUTER, "r0", None, None), OutcomeStatus.FAILED, 0.1)], clock.now)
    for _ in range(100):
        clock.now += 1.0
        assert f.poll() == []
    assert sum(api.calls.values()) == 0


def test_following_is_off_with_a_zero_timeout(api: FakeNeutron, clock: Clock) -> None:
    a, b, (rid,) = world(api)
    f = follower(api, clock, timeout=0)
    assert f.track([move(api, rid, a, b)], clock.now) == 0
    clock.now += 5
    assert f.poll() == []
    assert api.calls["ports_of_devices"] == 0


def test_an_api_error_is_one_warning_and_the_next_poll_reads_again(
    api: FakeNeutron, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, (rid,) = world(api)
    f = follower(api, clock)
    f.track([move(api, rid, a, b)], clock.now)
    api.fail_next(2, ErrorKind.TEMPORARY, method="ports_of_devices")
    clock.now += 1.0
    assert f.poll() == []
    clock.now += 1.0
    assert f.poll() == []
    clock.now += 1.0
    assert [r.ready for r in f.poll()] == [True]
    assert sum("cannot read the ports" in r.getMessage() for r in caplog.records) == 1


def test_a_dhcp_network_is_ready_with_its_port_on_the_target(api: FakeNeutron, clock: Clock) -> None:
    a = api.add_agent(DHCP_AGENT, "host-a", agent_id="a")
    b = api.add_agent(DHCP_AGENT, "host-b", agent_id="b")
    net = api.add_network(network_id="n1").id
    api.set_up_delay("b", 1.5)
    api.bind_network("b", net)
    f = ReadinessFollower(api, ReadinessPolicy(), kind=NETWORK, plugin="DHCPAgent", clock=clock)
    f.track([Outcome(Action(ActionKind.BIND_NETWORK, net, None, b), OutcomeStatus.DONE, 0.1),
             Outcome(Action(ActionKind.UNBIND_NETWORK, net, a, None), OutcomeStatus.DONE, 0.1)], clock.now)
    assert list(f.tracked) == [(net, "b")]
    clock.now += 1.0
    assert f.poll() == []
    clock.now += 1.0
    assert [(r.resource_id, r.ready) for r in f.poll()] == [(net, True)]
    assert api.calls["dhcp_ports"] == 2


# -- in the plugins ---------------------------------------------------------------------------------

DOWN = 20.0
TICK = 1.0


class Rig:
    """One plugin on FakeNeutron, stepped one check (1 s) at a time; agents in ``speaking`` heartbeat."""

    def __init__(self, agent_type: str, readiness: ReadinessPolicy, hosts: tuple[str, ...] = ("a", "b", "c")) -> None:
        self.clock = Clock()
        self.api = FakeNeutron(clock=self.clock, sleep=lambda s: None)
        self.registry = AgentRegistry(DOWN)
        self.registry.set_listening(self.clock.now)
        self.executor = Executor(self.api, ExecutorPolicy(workers=2, backoff_min=0, backoff_max=0),
                                 stop=threading.Event(), clock=self.clock)
        liveness = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=60.0)
        timing = Timing(reconcile_interval=600.0, retry_reconcile_after=5.0, target_fresh=DOWN, opinion_interval=1.0)
        args = (self.api, self.registry, self.executor, liveness, timing)
        common = {"bus_since": lambda: 0.0, "clock": self.clock, "readiness": readiness}
        self.agent_type = agent_type
        self.plugin: FailoverPlugin
        if agent_type == L3_AGENT:
            self.plugin = L3AgentPlugin(*args, policy=L3Policy(), **common)
        else:
            self.plugin = DHCPAgentPlugin(*args, policy=DhcpPolicy(agents_per_network=1), **common)
        self.speaking = set(hosts)
        self.last_spoke = dict.fromkeys(hosts, self.clock.now)
        for h in hosts:
            self.api.add_agent(agent_type, f"host-{h}", agent_id=h)
        self.metrics = Metrics()

    def tick(self) -> PassReport:
        self.clock.now += TICK
        for h in self.last_spoke:
            if h in self.speaking:
                self.registry.record(Heartbeat(self.agent_type, f"host-{h}", self.clock.now))
                self.last_spoke[h] = self.clock.now
            self.api.set_alive(h, self.clock.now - self.last_spoke[h] <= DOWN)
        report = self.plugin.check()
        self.metrics.observe_pass(self.plugin.name, report)
        return report

    def run(self, seconds: float) -> list[PassReport]:
        return [self.tick() for _ in range(int(seconds / TICK))]

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"plugin": self.plugin.name, **labels})
        return value or 0.0

    def close(self) -> None:
        self.executor.close()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def l3_rig(rigs: list[Rig], routers: int, **policy: object) -> Rig:
    rig = Rig(L3_AGENT, ReadinessPolicy(**policy))  # type: ignore[arg-type]
    rigs.append(rig)
    for i in range(routers):
        rid = rig.api.add_router(router_id=f"r{i:02d}").id
        rig.api.place_router(rid, "a")
        rig.api.add_router_ports(rid, interfaces=1, gateway=True, host="host-a")
    return rig


def test_moved_routers_are_followed_until_ready_and_timed(rigs: list[Rig], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rig = l3_rig(rigs, routers=4)
    rig.api.set_up_delay("b", 3.0)
    rig.api.set_up_delay("c", 5.0)
    rig.run(DOWN + 5)
    before = sum(rig.api.calls.values())
    rig.run(30)
    assert sum(rig.api.calls.values()) == before  # idle, nothing followed: no call at all
    rig.speaking.discard("a")
    reports = rig.run(DOWN + 15)
    moved = [o.action for r in reports for o in r.outcomes if o.status is OutcomeStatus.DONE]
    assert len(moved) == 4
    ready = [r for rep in reports for r in rep.readiness]
    assert sorted(r.resource_id for r in ready) == [f"r{i:02d}" for i in range(4)]
    assert all(r.ready for r in ready)
    by_host = {r.target.host: r.seconds for r in ready}
    assert by_host["host-b"] == pytest.approx(3.0, abs=1.01)
    assert by_host["host-c"] == pytest.approx(5.0, abs=1.01)
    assert {(p.host, p.status) for p in rig.api.ports()} <= {("host-b", "ACTIVE"), ("host-c", "ACTIVE")}
    assert rig.sample("rpcdaemon_time_to_ready_seconds_count") == 4
    assert rig.sample("rpcdaemon_not_ready_total") == 0
    assert sum("ready on host-" in r.getMessage() for r in caplog.records) == 4
    # Followed only until ready: the last ready poll is the last ports read.
    reads = rig.api.calls["ports_of_devices"]
    assert 4 <= reads <= 7
    rig.run(20)
    assert rig.api.calls["ports_of_devices"] == reads


def test_a_broken_target_is_reported_and_counted(rigs: list[Rig], caplog: pytest.LogCaptureFixture) -> None:
    rig = l3_rig(rigs, routers=2, timeout=10.0)
    rig.api.set_up_delay("b", None)
    rig.run(DOWN + 5)
    rig.speaking.discard("a")
    reports = rig.run(DOWN + 20)
    late = [r for rep in reports for r in rep.readiness if not r.ready]
    assert [r.target.host for r in late] == ["host-b"]
    assert rig.sample("rpcdaemon_not_ready_total") == 1
    assert rig.sample("rpcdaemon_time_to_ready_seconds_count") == 1  # the one on host-c
    assert any(r.levelno == logging.WARNING and "not ready on host-b" in r.getMessage() for r in caplog.records)
    assert rig.api.router_bindings()[late[0].resource_id] == {"b"}  # move_unready is off: left where it is


def test_move_unready_moves_it_to_another_agent_never_back(rigs: list[Rig], caplog: pytest.LogCaptureFixture) -> None:
    rig = l3_rig(rigs, routers=2, timeout=10.0, move_unready=True)
    rig.api.set_up_delay("b", None)
    rig.run(DOWN + 5)
    rig.speaking.discard("a")
    rig.run(DOWN + 30)
    bindings = rig.api.router_bindings()
    assert bindings == {"r00": {"c"}, "r01": {"c"}}, bindings
    assert {(p.host, p.status) for p in rig.api.ports()} == {("host-c", "ACTIVE")}
    assert rig.sample("rpcdaemon_not_ready_total") == 1
    assert any("unbound router" in r.getMessage() and "host-b" in r.getMessage() for r in caplog.records)
    rig.run(30)
    assert rig.api.router_bindings() == bindings  # settled: not moved back to b


def test_moved_dhcp_networks_are_followed_to_their_dhcp_port(rigs: list[Rig]) -> None:
    rig = Rig(DHCP_AGENT, ReadinessPolicy())
    rigs.append(rig)
    net = rig.api.add_network(network_id="n1").id
    rig.api.place_network(net, "a")
    rig.api.add_port(f"dhcp-a-{net}", PORT_DHCP, network_id=net, host="host-a", active=True)
    rig.api.set_up_delay("b", 2.0)
    rig.api.set_up_delay("c", 2.0)
    rig.run(DOWN + 5)
    rig.speaking.discard("a")
    reports = rig.run(DOWN + 10)
    ready = [r for rep in reports for r in rep.readiness]
    assert [(r.resource_id, r.ready) for r in ready] == [(net, True)]
    assert ready[0].seconds == pytest.approx(2.0, abs=1.01)
    assert rig.sample("rpcdaemon_time_to_ready_seconds_count") == 1


def test_an_unbind_that_fails_is_tried_again_after_another_timeout(
    rigs: list[Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = l3_rig(rigs, routers=2, timeout=10.0, move_unready=True)
    rig.api.set_up_delay("b", None)
    rig.run(DOWN + 5)
    rig.speaking.discard("a")
    while not rig.plugin.follower.tracked:
        rig.tick()
    rig.api.fail_next(1, ErrorKind.PERMANENT, method="unbind_router")
    rig.run(12)
    assert any("cannot unbind router" in r.getMessage() for r in caplog.records)
    stuck = [rid for rid, hosts in rig.api.router_bindings().items() if hosts == {"b"}]
    assert len(stuck) == 1  # still on the broken target, followed again
    rig.run(15)
    assert rig.api.router_bindings() == {"r00": {"c"}, "r01": {"c"}}


def test_a_network_bound_to_several_agents_is_followed_on_each(api: FakeNeutron, clock: Clock) -> None:
    agents = [api.add_agent(DHCP_AGENT, f"host-{h}", agent_id=h) for h in "bcd"]
    net = api.add_network(network_id="n1").id
    api.set_up_delay("d", None)  # this one never brings it up
    for a in agents:
        api.bind_network(a.id, net)
    f = ReadinessFollower(api, ReadinessPolicy(timeout=5.0), kind=NETWORK, plugin="DHCPAgent", clock=clock)
    f.track([Outcome(Action(ActionKind.BIND_NETWORK, net, None, a), OutcomeStatus.DONE, 0.1) for a in agents],
            clock.now)
    results = []
    for _ in range(6):
        clock.now += 1.0
        results += f.poll()
    assert sorted((r.target.id, r.ready) for r in results) == [("b", True), ("c", True), ("d", False)]
    assert api.calls["dhcp_ports"] == 5  # one read for the three of them per poll


def test_a_router_moved_again_is_followed_on_its_last_target_only(api: FakeNeutron, clock: Clock) -> None:
    a, b, (rid,) = world(api)
    c = api.add_agent(L3_AGENT, "host-c", agent_id="c")
    api.set_up_delay("b", None)
    f = follower(api, clock, timeout=5.0)
    f.track([move(api, rid, a, b)], clock.now)
    clock.now += 2.0
    f.track([move(api, rid, b, c)], clock.now)  # b died before it brought the router up
    assert list(f.tracked) == [(rid, "c")]
    clock.now += 1.0
    assert [(r.target.id, r.ready) for r in f.poll()] == [("c", True)]
