"""The L3Agent and DHCPAgent plugins driven check by check: fake clock, FakeNeutron, real registry.

No bus: the rig records heartbeats straight into the ``AgentRegistry`` every tick for the agents that
are "speaking", and plays Neutron's own liveness view too (an agent is ``alive`` in the fake's API
while it spoke within Neutron's ``agent_down_time``), so the second opinion behaves as on a real
server. The executor is real (no backoff waits); its clock is the fake one. The rig is ``plugin_rig.Rig``,
``make_rig`` the fixture in conftest.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.plugin_rig import DOWN, START, TICK, TIMING, Rig
from tests.unit.strategies import PROPS, DhcpWorld, L3World, dhcp_worlds, judged_of, l3_worlds

from rpcdaemon.deciding.dhcp import DhcpPolicy, plan_dhcp
from rpcdaemon.deciding.l3 import L3Policy, plan_l3
from rpcdaemon.deciding.liveness import LivenessPolicy, Verdict
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, ActionKind, Agent, Network, OutcomeStatus
from rpcdaemon.plugins.base import Timing
from rpcdaemon.plugins.dhcpagent import DHCPAgentPlugin
from rpcdaemon.plugins.l3agent import L3AgentPlugin


def l3_rig(make_rig: Callable[..., Rig], routers_on_a: int = 6, **kw: object) -> Rig:
    rig = make_rig(L3_AGENT, **kw)
    rig.agents("a", "b", "c")
    for i in range(routers_on_a):
        rig.api.add_router(router_id=f"r{i}")
        rig.api.place_router(f"r{i}", "a")
    return rig


def hosts_of(rig: Rig) -> dict[str, frozenset[str]]:
    return rig.api.router_bindings()


# -- L3: the ordinary failure ------------------------------------------------------------------


def test_silent_agent_loses_its_routers_after_down_time(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig)
    rig.run(100)  # a full window of listening, everyone speaking
    assert rig.done() == []
    rig.silent.add("a")
    went_silent = rig.clock()
    while rig.clock() + TICK - went_silent <= DOWN:
        rig.tick()
        assert all(hosts == {"a"} for hosts in hosts_of(rig).values()), "moved before down_time"
    rig.tick()
    assert sorted(rig.done(ActionKind.MOVE_ROUTER)) == [f"r{i}" for i in range(6)]
    placed = [next(iter(h)) for h in hosts_of(rig).values()]
    assert sorted(placed) == ["b"] * 3 + ["c"] * 3
    # and then it is quiet again
    before = sum(rig.api.calls.values())
    rig.run(40)
    assert len(rig.done()) == 6
    assert sum(rig.api.calls.values()) - before <= 1 + 1 + 3  # at most one reconcile in 40 s


def test_idle_checks_make_no_api_calls(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig)
    first = rig.tick()
    assert first.api_calls
    after_reconcile = dict(rig.api.calls)
    assert after_reconcile == {"list_agents": 1, "list_routers": 1, "routers_on_agent": 3}
    for _ in range(5):  # up to the next reconcile (60 s)
        report = rig.tick()
        assert not report.api_calls
        assert {j.verdict for j in report.judged.values()} == {Verdict.ALIVE}
    assert dict(rig.api.calls) == after_reconcile
    rig.tick()  # the periodic reconcile
    assert rig.api.calls["list_agents"] == 2


def test_nothing_moves_inside_the_start_up_window_while_neutron_says_alive(make_rig: Callable[..., Rig]) -> None:
    no_opinion = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=120.0, api_second_opinion=False)
    rig = l3_rig(make_rig, liveness=no_opinion, neutron_down=float("inf"))
    rig.silent.add("a")  # silent from before the daemon started
    rig.tick()  # the first check reaches the API: listening from now
    listening = rig.clock()
    while not rig.done():
        report = rig.tick()
        if rig.clock() - listening < DOWN:
            assert report.outcomes == []
            assert report.judged["a"].verdict is Verdict.UNKNOWN
        assert rig.clock() - listening < DOWN + TICK, "never moved"
    assert len(rig.done(ActionKind.MOVE_ROUTER)) == 6


def test_neutron_saying_dead_settles_it_inside_the_window(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig)
    rig.api.set_alive("a", False)
    rig.spoke["a"] = START - 300  # Neutron has not heard it for 5 minutes
    rig.silent.add("a")
    rig.tick()
    assert len(rig.done(ActionKind.MOVE_ROUTER)) == 6


def test_second_opinion_keeps_a_silent_agent_suspect_while_neutron_says_alive(
    make_rig: Callable[..., Rig],
) -> None:
    rig = l3_rig(make_rig, neutron_down=float("inf"))
    rig.run(100)
    rig.silent.add("a")
    reports = rig.run(300)
    assert rig.done() == []
    assert reports[-1].judged["a"].verdict is Verdict.SUSPECT
    # Asking again is rate-limited (opinion_interval 2 s < TICK here: once per check at most).
    assert rig.api.calls["list_agents"] <= len(rig.reports)


# -- L3: safety valves -------------------------------------------------------------------------


def test_api_outage_no_crash_and_no_move_until_back(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig)
    rig.run(100)
    rig.api.outage = True
    rig.silent.add("a")
    for report in rig.run(300):
        assert report.outcomes == []
    assert rig.plugin.totals["api_errors"] >= 1
    assert rig.plugin.api_ok_since is None
    assert hosts_of(rig)["r0"] == {"a"}
    rig.api.outage = False
    rig.tick()  # back: reconcile; Neutron (which kept hearing the others) says a is dead
    assert len(rig.done(ActionKind.MOVE_ROUTER)) == 6


def test_api_outage_then_a_full_window_when_neutron_has_no_word(make_rig: Callable[..., Rig]) -> None:
    no_opinion = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=120.0, api_second_opinion=False)
    rig = l3_rig(make_rig, liveness=no_opinion, neutron_down=float("inf"))
    rig.run(100)
    rig.api.outage = True
    rig.silent.add("a")
    rig.run(300)
    rig.api.outage = False
    back = rig.clock() + TICK
    while not rig.done():
        rig.tick()
        assert rig.clock() - back < DOWN + 2 * TICK, "never moved"
    assert rig.clock() - back >= DOWN, "moved before a full window after the outage"


def test_bus_outage_then_a_full_window(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig, neutron_down=float("inf"), liveness=LivenessPolicy(DOWN, DOWN, 120.0, False))
    rig.run(100)
    rig.bus = None
    rig.registry.set_listening(None)
    rig.silent |= {"a", "b", "c"}  # nothing is heard without the bus
    for report in rig.run(200):
        assert {j.verdict for j in report.judged.values()} == {Verdict.UNKNOWN}
    rig.bus = rig.clock()
    rig.registry.set_listening(rig.bus)
    rig.silent -= {"b", "c"}
    reports = rig.run(DOWN - TICK)
    assert rig.done() == []
    assert all(r.judged["b"].verdict is Verdict.ALIVE for r in reports), "a bus outage is not a revival"
    rig.run(2 * TICK)
    assert len(rig.done()) == 6


def test_after_a_bus_outage_neutrons_dead_flag_is_not_enough(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig)  # Neutron's view played too: it lost the same bus
    rig.run(100)
    rig.bus = None
    rig.registry.set_listening(None)
    rig.bus_outages += 1
    rig.silent |= {"a", "b", "c"}
    rig.run(200)
    assert rig.api.agent("a").alive is False, "Neutron, too, thinks everyone is dead"
    rig.bus = rig.clock()
    rig.registry.set_listening(rig.bus)
    rig.silent -= {"b", "c"}  # a is slow to reconnect
    back = rig.bus
    while not rig.done():
        rig.tick()
        assert rig.clock() - back < DOWN + 2 * TICK, "never moved"
    assert rig.clock() - back >= DOWN, "moved on Neutron's stale word inside the window"
    assert len(rig.done(ActionKind.MOVE_ROUTER)) == 6


def test_a_bus_outage_long_ago_does_not_disable_neutrons_early_word(make_rig: Callable[..., Rig]) -> None:
    # A bus outage, then well over a window of listening; later an API outage during which a dies.
    # When the API is back, Neutron (which kept hearing the others) says a is dead: that settles it
    # at once, as it would without the old bus outage (the count of outages never resets).
    rig = l3_rig(make_rig)
    rig.run(100)
    rig.bus = None
    rig.registry.set_listening(None)
    rig.bus_outages += 1
    rig.run(20)
    rig.bus = rig.clock()
    rig.registry.set_listening(rig.bus)
    rig.run(3 * DOWN)
    assert rig.done() == []
    rig.api.outage = True
    rig.silent.add("a")
    rig.run(200)
    assert rig.api.agent("a").alive is False
    rig.api.outage = False
    rig.tick()  # back: the API window restarts, but the bus has been up for ages
    assert len(rig.done(ActionKind.MOVE_ROUTER)) == 6


def test_brake_holds_and_costs_no_calls(make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    rig = l3_rig(make_rig)
    rig.api.add_router(router_id="rb")
    rig.api.place_router("rb", "b")
    rig.run(100)
    rig.silent |= {"a", "b"}
    with caplog.at_level(logging.ERROR):
        rig.run(100)
        calls = sum(rig.api.calls.values())
        rig.run(50)
    assert rig.done() == []
    assert rig.reports[-1].plan.braked
    assert sum(rig.api.calls.values()) - calls <= 10, "a long brake must not cost calls every check"
    assert any("brake" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_admin_down_agent_receives_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig)
    rig.api.set_admin_state("b", False)
    rig.run(100)
    rig.silent.add("a")
    rig.run(100)
    assert {next(iter(h)) for h in hosts_of(rig).values()} == {"c"}


# -- L3: flapping and races ----------------------------------------------------------------------


def test_flapping_agent_causes_bounded_moves(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig, routers_on_a=4)
    rig.run(100)
    for _ in range(5):  # 100 s silent, 30 s back, five times
        rig.silent.add("a")
        rig.run(100)
        rig.silent.discard("a")
        reports = rig.run(30)
        assert reports[-1].judged["a"].verdict is Verdict.WARMING
    rig.run(200)
    moves = rig.done(ActionKind.MOVE_ROUTER)
    assert sorted(moves) == ["r0", "r1", "r2", "r3"], "each router moved once"
    assert not any("a" in hosts for hosts in hosts_of(rig).values()), "nothing went back to the flapper"


def test_source_back_between_plan_and_act_is_skipped(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig)
    rig.run(30)
    rig.silent.add("a")  # last heard at START + 30
    rig.run(70)  # up to START + 100: not dead yet
    assert rig.done() == []
    # At START + 110 a is dead; while the plugin re-reads what a hosts (after judging, before acting), a speaks.
    rig.api.after["routers_on_agent:a"] = lambda: rig.speak("a")
    report = rig.tick()
    assert report.outcomes, "the pass planned moves"
    assert {o.status for o in report.outcomes} == {OutcomeStatus.SKIPPED}
    assert all("came back" in o.detail for o in report.outcomes)
    assert all(hosts == {"a"} for hosts in hosts_of(rig).values())
    assert rig.api.calls["unbind_router"] == 0
    rig.silent.discard("a")
    rig.run(200)
    assert rig.done() == []


def test_target_silent_after_the_unbind_leaves_the_router_for_the_next_pass(make_rig: Callable[..., Rig]) -> None:
    # A short target freshness (30 s) lets the target look stale without looking dead.
    rig = l3_rig(make_rig, routers_on_a=1, timing=Timing(target_fresh=30.0))
    rig.agents("d")
    rig.run(100)
    rig.silent.add("a")

    def target_gone() -> None:
        # The unbind takes 40 s; meanwhile the chosen target (b: least loaded, first by host) says nothing.
        rig.clock.now += 40.0
        rig.speak("c")
        rig.speak("d")

    rig.api.after["unbind_router"] = target_gone
    while not rig.api.calls["unbind_router"]:
        rig.tick()
    assert hosts_of(rig)["r0"] == frozenset(), "unbound, not bound"
    assert rig.reports[-1].outcomes[0].status is OutcomeStatus.SKIPPED
    rig.run(3 * TICK)
    assert rig.done(ActionKind.BIND_ROUTER) == ["r0"]
    assert hosts_of(rig)["r0"] <= {"b", "c", "d"}


@pytest.mark.parametrize("before", [100.0, 120.0])  # the death falls just before / just after a reconcile
def test_source_back_after_the_unbind_still_gets_the_router_bound(make_rig: Callable[..., Rig], before: float) -> None:
    rig = l3_rig(make_rig, routers_on_a=1)
    rig.run(before)
    rig.silent.add("a")

    def source_back() -> None:
        rig.silent.discard("a")
        rig.speak("a")

    rig.api.after["unbind_router"] = source_back
    while not rig.api.calls["unbind_router"]:
        rig.tick()
    # The router has already left its old agent: the move finishes on a live target rather than
    # leaving it hosted nowhere, and not back onto the agent that is only warming up.
    assert rig.done(ActionKind.MOVE_ROUTER) == ["r0"]
    assert hosts_of(rig)["r0"] <= {"b", "c"}
    assert len(hosts_of(rig)["r0"]) == 1


def test_target_dying_during_the_bind_is_not_done_and_the_router_moves_again(make_rig: Callable[..., Rig]) -> None:
    # b (the chosen target) dies right after the unbind, before Neutron notices: the bind writes the
    # binding, its RPC to b times out (500 after 240 s), and the retry finds the router already bound.
    rig = l3_rig(make_rig, routers_on_a=1)
    rig.agents("d", "e")  # two dead of five: not a mass failure
    rig.run(100)
    rig.silent.add("a")
    rig.api.dead_bind_delay = 240.0

    def target_dies() -> None:
        rig.silent.add("b")
        rig.api.stop_answering("b")

    rig.api.after["unbind_router"] = target_dies
    while not rig.api.calls["unbind_router"]:
        rig.tick()
    (outcome,) = rig.reports[-1].outcomes
    assert outcome.action.target == rig.api.agent("b")
    assert outcome.status is OutcomeStatus.FAILED, outcome.detail
    assert "no longer heard" in outcome.detail
    assert "to be moved again" in outcome.detail
    assert hosts_of(rig)["r0"] == {"b"}, "Neutron kept the binding on the dead target"
    rig.run(3 * TICK)
    assert hosts_of(rig)["r0"] == {"c"}, "moved off the agent that died under the bind"
    moved = [o for r in rig.reports for o in r.outcomes if o.status is OutcomeStatus.DONE]
    assert [(o.action.source.id if o.action.source else None, o.action.target.id if o.action.target else None)
            for o in moved] == [("b", "c")]


def test_unhosted_router_is_scheduled_on_the_next_reconcile(make_rig: Callable[..., Rig]) -> None:
    rig = l3_rig(make_rig, routers_on_a=0)
    rig.run(30)
    rig.api.add_router(router_id="new")
    rig.run(TIMING.reconcile_interval)
    assert rig.done(ActionKind.BIND_ROUTER) == ["new"]


# -- DHCP ---------------------------------------------------------------------------------------------


def dhcp_rig(make_rig: Callable[..., Rig], per_network: int | None = 1, networks: int = 4) -> Rig:
    rig = make_rig(DHCP_AGENT, dhcp=DhcpPolicy(agents_per_network=per_network))
    rig.agents("a", "b", "c")
    for i in range(networks):
        rig.api.add_network(network_id=f"n{i}")
        rig.api.place_network(f"n{i}", "a")
    return rig


def test_dhcp_networks_leave_a_dead_agent(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_rig(make_rig)
    rig.run(100)
    assert rig.done() == []
    rig.silent.add("a")
    rig.run(DOWN)
    assert rig.done() == []
    rig.run(2 * TICK)
    bindings = rig.api.network_bindings()
    assert sorted(next(iter(h)) for h in bindings.values()) == ["b", "b", "c", "c"]
    assert len(rig.done(ActionKind.UNBIND_NETWORK)) == 4


def test_dhcp_idle_checks_make_no_api_calls(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_rig(make_rig, per_network=None)  # "all": the first pass spreads every network everywhere
    rig.run(20)
    assert sorted(rig.done(ActionKind.BIND_NETWORK)) == sorted([f"n{i}" for i in range(4)] * 2)
    calls = dict(rig.api.calls)
    for report in rig.run(30):
        assert not report.api_calls
    assert dict(rig.api.calls) == calls


def test_dhcp_deleted_network_is_removed_everywhere(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_rig(make_rig, per_network=2)
    rig.run(20)
    hosted_on = rig.api.network_bindings()["n0"]
    assert len(hosted_on) == 2
    rig.api.delete_network("n0")
    plugin = rig.plugin
    assert isinstance(plugin, DHCPAgentPlugin)
    plugin.on_network_deleted("n0")
    report = rig.tick()
    unbound = {o.action.source.id for o in report.outcomes if o.action.source and o.status is OutcomeStatus.DONE}
    assert unbound == hosted_on
    assert all(o.action.kind is ActionKind.UNBIND_NETWORK and o.action.resource_id == "n0" for o in report.outcomes)
    assert "n0" not in plugin.bindings
    assert rig.tick().outcomes == []


def test_dhcp_api_outage_no_crash(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_rig(make_rig)
    rig.run(30)
    rig.api.outage = True
    rig.silent.add("a")
    reports = rig.run(200)
    assert all(r.outcomes == [] for r in reports)
    rig.api.outage = False
    rig.run(TICK)
    assert len(rig.done(ActionKind.BIND_NETWORK)) == 4


def test_network_deleted_from_the_bus_thread_never_mutates_what_a_pass_holds(make_rig: Callable[..., Rig]) -> None:
    # on_network_deleted runs on the bus thread while a check may be iterating the networks it read
    # (plan_dhcp walks them): mutating that dict in place made a concurrent pass fail with KeyError or
    # "dictionary changed size during iteration". Deterministic form: a reference taken before the
    # event must not change.
    rig = dhcp_rig(make_rig)
    rig.tick()
    plugin = rig.plugin
    assert isinstance(plugin, DHCPAgentPlugin)
    held = plugin.networks
    plugin.on_network_deleted("n1")
    assert "n1" in held, "the mapping a pass may be iterating was mutated"
    assert "n1" not in plugin.networks
    plugin.on_network_deleted("not-a-network")  # unknown ids are fine
    assert rig.tick().outcomes[0].action.resource_id == "n1"


# -- the idle shortcut never hides work ----------------------------------------------------------


@PROPS
@given(world=l3_worlds(), schedule=st.booleans())
def test_l3_wants_action_whenever_the_planner_would_act(world: L3World, schedule: bool) -> None:
    policy = L3Policy(schedule_unhosted=schedule)
    rig = Rig(L3_AGENT, l3=policy)
    try:
        plugin = rig.plugin
        assert isinstance(plugin, L3AgentPlugin)
        plugin.routers, plugin.bindings = world.routers, world.bindings
        if plan_l3(world.judged, world.routers, world.bindings, policy).actions:
            assert plugin.wants_action(world.judged)
    finally:
        rig.close()


@PROPS
@given(world=dhcp_worlds(), n=st.one_of(st.none(), st.integers(1, 3)))
def test_dhcp_wants_action_whenever_the_planner_would_act(world: DhcpWorld, n: int | None) -> None:
    policy = DhcpPolicy(agents_per_network=n)
    rig = Rig(DHCP_AGENT, dhcp=policy)
    try:
        plugin = rig.plugin
        assert isinstance(plugin, DHCPAgentPlugin)
        plugin.networks, plugin.bindings = world.networks, world.bindings
        if plan_dhcp(world.judged, world.networks, world.bindings, policy).actions:
            assert plugin.wants_action(world.judged)
    finally:
        rig.close()


@pytest.mark.parametrize("per_network", [None, 2])
def test_dhcp_idle_when_the_only_missing_agent_is_outside_the_zone(
    make_rig: Callable[..., Rig], per_network: int | None
) -> None:
    rig = make_rig(DHCP_AGENT, dhcp=DhcpPolicy(agents_per_network=per_network))
    plugin = rig.plugin
    assert isinstance(plugin, DHCPAgentPlugin)
    zone = [Agent(f"d{i}", DHCP_AGENT, f"h{i}", availability_zone=az) for i, az in enumerate(["az1", "az2"])]
    judged = {a.id: judged_of(a, Verdict.ALIVE) for a in zone}
    plugin.networks = {"n": Network("n", dhcp_enabled=True, availability_zone_hints=("az1",))}
    plugin.bindings = {"n": frozenset({"d0"})}
    assert not plugin.wants_action(judged), "d1 may not host n: nothing to do"
    plugin.networks = {"n": Network("n", dhcp_enabled=True)}
    assert plugin.wants_action(judged)


# -- L3: a newly registered agent (issue 7) --------------------------------------------------------


def test_a_new_agent_registered_while_running_gets_its_share_of_a_failover(make_rig: Callable[..., Rig]) -> None:
    liveness = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=120.0, report_interval=TICK)
    rig = l3_rig(make_rig, liveness=liveness)
    rig.run(200)  # long past the start-up window: a first heartbeat now follows a witnessed silence
    rig.agents("d")  # registers (Neutron lists it), and reports every TICK from now on
    reports = rig.run(2 * TICK)
    assert reports[-1].judged["d"].verdict is Verdict.ALIVE, reports[-1].judged["d"].why
    rig.silent.add("a")
    rig.run(DOWN + 2 * TICK)  # a dies; well inside revive_hold of d's first heartbeat
    assert sorted(rig.done(ActionKind.MOVE_ROUTER)) == [f"r{i}" for i in range(6)]
    placed = sorted(next(iter(h)) for h in hosts_of(rig).values())
    assert placed == ["b", "b", "c", "c", "d", "d"]


def test_a_known_agent_back_after_down_time_gets_nothing_within_revive_hold(make_rig: Callable[..., Rig]) -> None:
    liveness = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=200.0, report_interval=TICK)
    rig = l3_rig(make_rig, liveness=liveness)
    rig.agents("d")
    rig.run(100)
    rig.silent.add("d")
    rig.run(DOWN + 2 * TICK)
    rig.silent.discard("d")  # back (its operator restarted it)
    rig.run(2 * TICK)
    rig.silent.add("a")
    reports = rig.run(DOWN + 2 * TICK)
    assert reports[-1].judged["d"].verdict is Verdict.WARMING
    assert sorted(rig.done(ActionKind.MOVE_ROUTER)) == [f"r{i}" for i in range(6)]
    assert sorted(next(iter(h)) for h in hosts_of(rig).values()) == ["b", "b", "b", "c", "c", "c"]
