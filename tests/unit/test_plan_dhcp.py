"""The DHCP planner (``deciding.dhcp.plan_dhcp``): properties over random fleets, then the rules one by one.

Both hosting policies are exercised: ``all`` (``agents_per_network=None``, the original behaviour) and a
number N of agents per network.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.strategies import PROPS, Bindings, DhcpWorld, apply_plan, dhcp_worlds, hosted_counts, judged_of

from rpcdaemon.deciding.dhcp import DhcpPolicy, plan_dhcp
from rpcdaemon.deciding.l3 import Plan
from rpcdaemon.deciding.liveness import BrakePolicy, Judged, Verdict, brake_reason
from rpcdaemon.model import DHCP_AGENT, ActionKind, Agent, Network

per_network = st.one_of(st.none(), st.integers(1, 3))


def dhcp(i: int, verdict: Verdict = Verdict.ALIVE, *, az: str | None = None, admin: bool = True) -> Judged:
    return judged_of(
        Agent(id=f"d-{i}", agent_type=DHCP_AGENT, host=f"net-{i}", admin_state_up=admin, availability_zone=az),
        verdict,
    )


def fleet(*judged: Judged) -> dict[str, Judged]:
    return {j.agent.id: j for j in judged}


def nets(n: int, *, dhcp_enabled: bool = True, hints: tuple[str, ...] = ()) -> dict[str, Network]:
    return {
        f"n-{i:04d}": Network(f"n-{i:04d}", dhcp_enabled=dhcp_enabled, availability_zone_hints=hints) for i in range(n)
    }


def eligible(agent: Agent, network: Network) -> bool:
    return not network.availability_zone_hints or agent.availability_zone in network.availability_zone_hints


def kinds(plan: Plan) -> list[tuple[ActionKind, str, str]]:
    out = []
    for a in plan.actions:
        who = a.source if a.kind is ActionKind.UNBIND_NETWORK else a.target
        assert who is not None
        out.append((a.kind, a.resource_id, who.id))
    return out


def converge(world: DhcpWorld, policy: DhcpPolicy, rounds: int = 100) -> Bindings:
    bindings = world.bindings
    for _ in range(rounds):
        plan = plan_dhcp(world.judged, world.networks, bindings, policy)
        if not plan.actions:
            return bindings
        bindings = apply_plan(plan, bindings)
    raise AssertionError(f"no convergence in {rounds} passes")


# -- properties ------------------------------------------------------------------------------------


@PROPS
@given(world=dhcp_worlds(), n=per_network, max_moves=st.integers(1, 60))
def test_every_action_is_safe(world: DhcpWorld, n: int | None, max_moves: int) -> None:
    plan = plan_dhcp(
        world.judged, world.networks, world.bindings, DhcpPolicy(agents_per_network=n, max_moves=max_moves)
    )
    assert len(plan.actions) <= max_moves
    assert len(set(kinds(plan))) == len(plan.actions), "an action twice"
    for a in plan.actions:
        hosts = world.bindings.get(a.resource_id, frozenset())
        if a.kind is ActionKind.UNBIND_NETWORK:
            assert a.source is not None
            assert a.source.id in hosts
            if a.resource_id in world.networks:
                # never removed from a host that is (or might be) alive
                assert world.judged[a.source.id].verdict is Verdict.DEAD
                assert a.source_dead
            else:
                assert a.reason == "network deleted"
                assert not a.source_dead
        else:
            assert a.kind is ActionKind.BIND_NETWORK
            assert a.target is not None
            network = world.networks[a.resource_id]
            tj = world.judged[a.target.id]
            assert network.dhcp_enabled
            assert tj.verdict is Verdict.ALIVE
            assert tj.agent.admin_state_up
            assert eligible(tj.agent, network)
            assert a.target.id not in hosts


@PROPS
@given(world=dhcp_worlds(), n=per_network)
def test_brake_stops_moves_but_not_clean_up(world: DhcpWorld, n: int | None) -> None:
    plan = plan_dhcp(world.judged, world.networks, world.bindings, DhcpPolicy(agents_per_network=n))
    braked = brake_reason(world.judged.values(), BrakePolicy()) is not None
    assert plan.braked is braked
    gone = {
        (ActionKind.UNBIND_NETWORK, nid, aid)
        for nid, hosts in world.bindings.items()
        if nid not in world.networks
        for aid in hosts
        if aid in world.judged
    }
    assert gone <= set(kinds(plan)), "deleted networks are always cleaned up"
    if braked:
        assert set(kinds(plan)) == gone


@PROPS
@given(world=dhcp_worlds(), n=per_network)
def test_applying_the_plan_then_replanning_gives_nothing(world: DhcpWorld, n: int | None) -> None:
    policy = DhcpPolicy(agents_per_network=n)
    plan = plan_dhcp(world.judged, world.networks, world.bindings, policy)
    after = apply_plan(plan, world.bindings)
    assert plan_dhcp(world.judged, world.networks, after, policy).actions == ()


@PROPS
@given(world=dhcp_worlds(), n=per_network, max_moves=st.integers(1, 4))
def test_a_move_limit_converges_to_a_satisfied_policy(world: DhcpWorld, n: int | None, max_moves: int) -> None:
    final = converge(world, DhcpPolicy(agents_per_network=n, max_moves=max_moves))
    if brake_reason(world.judged.values(), BrakePolicy()) is not None:
        return
    targets = [j.agent for j in world.judged.values() if j.is_target]
    dead = {aid for aid, j in world.judged.items() if j.verdict is Verdict.DEAD}
    assert not any(nid not in world.networks for nid in final), "deleted networks left bound"
    for nid, network in world.networks.items():
        hosts = final.get(nid, frozenset())
        assert not hosts & dead
        if not network.dhcp_enabled:
            continue
        candidates = {t.id for t in targets if eligible(t, network)}
        if n is None:
            assert candidates <= hosts
        else:
            assert len(hosts) >= n or candidates <= hosts


@PROPS
@given(world=dhcp_worlds(), n=per_network)
def test_nothing_to_do_when_nothing_is_wrong(world: DhcpWorld, n: int | None) -> None:
    judged = {
        aid: judged_of(j.agent, Verdict.UNKNOWN if j.verdict is Verdict.DEAD else j.verdict)
        for aid, j in world.judged.items()
    }
    targets = [j.agent for j in judged.values() if j.is_target]
    bindings: Bindings = {}
    for nid, network in world.networks.items():
        hosts = set(world.bindings.get(nid, frozenset()))
        if network.dhcp_enabled:
            candidates = [t.id for t in targets if eligible(t, network)]
            if n is None:
                hosts |= set(candidates)
            else:
                hosts |= set([c for c in candidates if c not in hosts][: max(0, n - len(hosts))])
        if hosts:
            bindings[nid] = frozenset(hosts)
    plan = plan_dhcp(judged, world.networks, bindings, DhcpPolicy(agents_per_network=n))
    assert plan.actions == ()
    assert not plan.braked
    # Anything held is only "not enough eligible agents for N", never a move in waiting.
    assert all("fewer live eligible" in h for h in plan.held)


@PROPS
@given(world=dhcp_worlds(), n=st.integers(1, 3), max_moves=st.one_of(st.just(500), st.integers(1, 6)))
def test_no_added_bind_ends_two_above_an_agent_that_could_have_taken_it(
    world: DhcpWorld, n: int, max_moves: int
) -> None:
    """The balance guarantee: for every bind the planner added (over all passes to convergence) on
    agent t, every live admin-up agent u eligible for the network and not hosting it ends with
    hosted(t) <= hosted(u) + 1."""
    policy = DhcpPolicy(agents_per_network=n, max_moves=max_moves)
    bindings, added = world.bindings, set()
    for _ in range(100):
        plan = plan_dhcp(world.judged, world.networks, bindings, policy)
        if not plan.actions:
            break
        added |= {(a.resource_id, a.target.id) for a in plan.actions if a.target is not None}
        bindings = apply_plan(plan, bindings)
    hosted = hosted_counts(bindings)
    targets = [j.agent for j in world.judged.values() if j.is_target]
    for nid, tid in added:
        for u in targets:
            if eligible(u, world.networks[nid]) and u.id not in bindings[nid]:
                assert hosted[tid] <= hosted.get(u.id, 0) + 1, (nid, tid, u.id, hosted)


# -- the rules, one by one ------------------------------------------------------------------------


def test_dead_agent_networks_move_to_the_least_loaded() -> None:
    judged = fleet(dhcp(0, Verdict.DEAD), dhcp(1), dhcp(2), dhcp(3, Verdict.UNKNOWN))
    ns = nets(6)
    bindings = {nid: frozenset({"d-0"}) for nid in ns} | {"busy": frozenset({"d-1"})}
    plan = plan_dhcp(
        judged, ns | {"busy": Network("busy", dhcp_enabled=True)}, bindings, DhcpPolicy(agents_per_network=1)
    )
    assert Counter(k for k, _, _ in kinds(plan)) == {ActionKind.UNBIND_NETWORK: 6, ActionKind.BIND_NETWORK: 6}
    per_target = Counter(aid for k, _, aid in kinds(plan) if k is ActionKind.BIND_NETWORK)
    # d-1 already had one network: the six go 3/3 once loads are counted (1+3 vs 0+3 is within one)
    assert per_target["d-1"] + 1 - per_target["d-2"] in (-1, 0, 1)
    assert all(a.source_dead for a in plan.actions if a.kind is ActionKind.UNBIND_NETWORK)


@pytest.mark.parametrize("keeper", [Verdict.WARMING, Verdict.UNKNOWN, Verdict.SUSPECT, Verdict.ALIVE])
def test_hosts_that_are_not_dead_count_as_keeping(keeper: Verdict) -> None:
    judged = fleet(dhcp(0, keeper), dhcp(1), dhcp(2))
    ns = nets(3)
    bindings = {nid: frozenset({"d-0"}) for nid in ns}
    assert plan_dhcp(judged, ns, bindings, DhcpPolicy(agents_per_network=1)) == Plan()
    plan = plan_dhcp(judged, ns, bindings, DhcpPolicy(agents_per_network=2))
    assert len(plan.actions) == 3
    assert all(a.kind is ActionKind.BIND_NETWORK for a in plan.actions)


def test_hosts_beyond_n_are_never_removed_while_alive() -> None:
    judged = fleet(dhcp(0), dhcp(1), dhcp(2))
    ns = nets(2)
    bindings = {nid: frozenset({"d-0", "d-1", "d-2"}) for nid in ns}
    assert plan_dhcp(judged, ns, bindings, DhcpPolicy(agents_per_network=1)) == Plan()


def test_all_policy_binds_on_every_live_up_eligible_agent() -> None:
    judged = fleet(
        dhcp(0),
        dhcp(1, az="az1"),
        dhcp(2, admin=False),
        dhcp(3, Verdict.WARMING),
        dhcp(4, Verdict.DEAD),
        dhcp(5, az="az2"),
    )
    ns = {
        "plain": Network("plain", dhcp_enabled=True),
        "zoned": Network("zoned", dhcp_enabled=True, availability_zone_hints=("az1",)),
        "no-dhcp": Network("no-dhcp", dhcp_enabled=False),
    }
    plan = plan_dhcp(judged, ns, {"plain": frozenset({"d-0"})}, DhcpPolicy())
    assert sorted(kinds(plan)) == [
        (ActionKind.BIND_NETWORK, "plain", "d-1"),
        (ActionKind.BIND_NETWORK, "plain", "d-5"),
        (ActionKind.BIND_NETWORK, "zoned", "d-1"),
    ]


def test_network_without_dhcp_only_loses_its_dead_host() -> None:
    judged = fleet(dhcp(0, Verdict.DEAD), dhcp(1), dhcp(2))
    ns = nets(1, dhcp_enabled=False)
    plan = plan_dhcp(judged, ns, {"n-0000": frozenset({"d-0"})}, DhcpPolicy(agents_per_network=1))
    assert kinds(plan) == [(ActionKind.UNBIND_NETWORK, "n-0000", "d-0")]


def test_deleted_networks_are_removed_from_every_host_even_under_the_brake() -> None:
    judged = fleet(dhcp(0, Verdict.DEAD), dhcp(1, Verdict.DEAD), dhcp(2), dhcp(3))
    ns = nets(2)
    bindings = {
        "n-0000": frozenset({"d-0"}),
        "n-0001": frozenset({"d-1", "d-2"}),
        "gone": frozenset({"d-0", "d-2", "not-listed"}),
    }
    plan = plan_dhcp(judged, ns, bindings, DhcpPolicy(agents_per_network=2))
    assert plan.braked
    assert kinds(plan) == [(ActionKind.UNBIND_NETWORK, "gone", "d-0"), (ActionKind.UNBIND_NETWORK, "gone", "d-2")]
    assert all(a.reason == "network deleted" and not a.source_dead for a in plan.actions)
    assert any(h.startswith("brake:") for h in plan.held)


def test_too_few_eligible_agents_is_said() -> None:
    ns = nets(2, hints=("az1",))
    plan = plan_dhcp(fleet(dhcp(0, az="az1"), dhcp(1, az="az2")), ns, {}, DhcpPolicy(agents_per_network=2))
    assert sorted(kinds(plan)) == [
        (ActionKind.BIND_NETWORK, "n-0000", "d-0"),
        (ActionKind.BIND_NETWORK, "n-0001", "d-0"),
    ]
    assert any("2 networks have fewer live eligible DHCP agents" in h for h in plan.held)


def test_max_moves_keeps_clean_up_first() -> None:
    judged = fleet(dhcp(0, Verdict.DEAD), dhcp(1), dhcp(2))
    ns = nets(5)
    bindings = {nid: frozenset({"d-0"}) for nid in ns} | {"gone": frozenset({"d-1"})}
    plan = plan_dhcp(judged, ns, bindings, DhcpPolicy(agents_per_network=1, max_moves=3))
    assert kinds(plan)[0] == (ActionKind.UNBIND_NETWORK, "gone", "d-1")
    assert len(plan.actions) == 3
    assert any("max_moves_per_cycle=3" in h and "8 actions wait" in h for h in plan.held)


def test_no_live_target_still_removes_from_the_dead() -> None:
    judged = fleet(dhcp(0, Verdict.DEAD), dhcp(1, Verdict.UNKNOWN), dhcp(2, Verdict.UNKNOWN))
    ns = nets(2)
    plan = plan_dhcp(judged, ns, {nid: frozenset({"d-0"}) for nid in ns}, DhcpPolicy(agents_per_network=1))
    assert [k for k, _, _ in kinds(plan)] == [ActionKind.UNBIND_NETWORK] * 2
    assert any("fewer live eligible" in h for h in plan.held)


def balance_of(judged: dict[str, Judged], ns: dict[str, Network], bindings: Bindings, n: int) -> list[int]:
    final = converge(DhcpWorld(judged, ns, bindings), DhcpPolicy(agents_per_network=n))
    hosted = hosted_counts(final)
    return sorted(hosted.get(aid, 0) for aid, j in judged.items() if j.is_target)


def test_from_scratch_n_per_network_ends_even() -> None:
    assert balance_of(fleet(dhcp(0), dhcp(1), dhcp(2)), nets(6), {}, 2) == [4, 4, 4]
    assert balance_of(fleet(*(dhcp(i) for i in range(4))), nets(7), {}, 3) == [5, 5, 5, 6]


def test_bindings_of_deleted_networks_are_not_load() -> None:
    # d-0 still lists two deleted networks: they go in the same plan, so d-0 is as free as the others
    bindings = {"gone-a": frozenset({"d-0"}), "gone-b": frozenset({"d-0"})}
    assert balance_of(fleet(dhcp(0), dhcp(1), dhcp(2)), nets(6), bindings, 2) == [4, 4, 4]


def test_a_zoned_network_does_not_crowd_the_agent_an_open_one_took() -> None:
    # id order meets the open network first; the zoned one can only go to d-0
    judged = fleet(dhcp(0, az="az1"), dhcp(1, az="az2"))
    ns = {
        "n-a": Network("n-a", dhcp_enabled=True),
        "n-b": Network("n-b", dhcp_enabled=True, availability_zone_hints=("az1",)),
    }
    assert balance_of(judged, ns, {}, 1) == [1, 1]
    plan = plan_dhcp(judged, ns, {}, DhcpPolicy(agents_per_network=1))
    assert sorted(kinds(plan)) == [(ActionKind.BIND_NETWORK, "n-a", "d-1"), (ActionKind.BIND_NETWORK, "n-b", "d-0")]


def test_networks_forced_onto_one_agent_leave_the_free_choice_to_the_other() -> None:
    # n-1 and n-2 are on d-1 already and want a second host: only d-2 can take them. n-0 (on the
    # admin-down d-0) may go to either: greedy in id order sent it to d-2 (then less loaded), 4/2.
    judged = fleet(dhcp(0, admin=False), dhcp(1), dhcp(2))
    ns = nets(3) | {"quiet": Network("quiet", dhcp_enabled=False)}
    bindings = {
        "n-0000": frozenset({"d-0"}),
        "n-0001": frozenset({"d-1"}),
        "n-0002": frozenset({"d-1"}),
        "quiet": frozenset({"d-2"}),
    }
    assert balance_of(judged, ns, bindings, 2) == [3, 3]


def test_planned_placements_never_move_a_healthy_binding() -> None:
    # d-0 is overloaded by existing networks: nothing is taken off it, new ones go to the others
    judged = fleet(dhcp(0), dhcp(1), dhcp(2))
    ns = nets(8)
    bindings = {nid: frozenset({"d-0"}) for nid in list(ns)[:6]}
    plan = plan_dhcp(judged, ns, bindings, DhcpPolicy(agents_per_network=1))
    assert sorted(kinds(plan)) == [
        (ActionKind.BIND_NETWORK, "n-0006", "d-1"),
        (ActionKind.BIND_NETWORK, "n-0007", "d-2"),
    ]


def test_an_agent_that_gave_a_bind_away_can_take_one_from_a_heavier_agent() -> None:
    # found by the property: d-1 hands n-0001 to d-7 and only then is light enough to take n-0003
    # from d-0 (one sweep over the givers ended at 4/2/2)
    judged = fleet(dhcp(0, az="az1"), dhcp(1, az="az1"), dhcp(2, admin=False), dhcp(7))
    zoned = ("az1",)
    ns = {
        "n-0000": Network("n-0000", dhcp_enabled=True),
        "n-0001": Network("n-0001", dhcp_enabled=True),
        "n-0002": Network("n-0002", dhcp_enabled=True, availability_zone_hints=zoned),
        "n-0003": Network("n-0003", dhcp_enabled=True, availability_zone_hints=zoned),
        "quiet": Network("quiet", dhcp_enabled=False),
    }
    bindings = {"n-0001": frozenset({"d-0"}), "n-0003": frozenset({"d-2"}), "quiet": frozenset({"d-0"})}
    assert balance_of(judged, ns, bindings, 2) == [2, 3, 3]
