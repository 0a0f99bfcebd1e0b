"""The L3 planner (``deciding.l3.plan_l3``): properties over random fleets, then the rules one by one.

The properties restate the rules independently (``strategies.may_host``) rather than calling the
planner's own helpers, so a wrong helper cannot make its own test pass.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.strategies import PROPS, L3World, apply_plan, is_central, judged_of, l3_worlds, may_host

from rpcdaemon.deciding.l3 import L3Policy, Plan, plan_l3
from rpcdaemon.deciding.liveness import BrakePolicy, Judged, Verdict, brake_reason
from rpcdaemon.model import L3_AGENT, MODE_DVR, MODE_DVR_SNAT, MODE_LEGACY, ActionKind, Agent, Router

POLICY = L3Policy()


def l3(
    i: int,
    verdict: Verdict = Verdict.ALIVE,
    *,
    mode: str | None = MODE_LEGACY,
    az: str | None = None,
    admin: bool = True,
) -> Judged:
    return judged_of(
        Agent(
            id=f"l3-{i}",
            agent_type=L3_AGENT,
            host=f"net-{i}",
            admin_state_up=admin,
            agent_mode=mode,
            availability_zone=az,
        ),
        verdict,
    )


def fleet(*judged: Judged) -> dict[str, Judged]:
    return {j.agent.id: j for j in judged}


def routers(n: int, **kw: object) -> dict[str, Router]:
    return {f"r-{i:04d}": Router(id=f"r-{i:04d}", **kw) for i in range(n)}  # type: ignore[arg-type]


def on(agent_id: str, rs: dict[str, Router]) -> dict[str, frozenset[str]]:
    return {rid: frozenset({agent_id}) for rid in rs}


def loads(bindings: dict[str, frozenset[str]]) -> Counter[str]:
    return Counter(h for hosts in bindings.values() for h in hosts)


# -- properties ------------------------------------------------------------------------------------


@PROPS
@given(world=l3_worlds(), max_moves=st.integers(1, 40))
def test_every_action_is_safe(world: L3World, max_moves: int) -> None:
    plan = plan_l3(world.judged, world.routers, world.bindings, L3Policy(max_moves=max_moves))
    assert len(plan.actions) <= max_moves
    assert len({a.resource_id for a in plan.actions}) == len(plan.actions), "two actions on one router"
    for a in plan.actions:
        router = world.routers[a.resource_id]
        hosts = world.bindings.get(router.id, frozenset())
        assert not router.ha, "HA routers are skipped by default"
        assert a.target is not None
        tj = world.judged[a.target.id]
        assert tj.verdict is Verdict.ALIVE, f"target {tj.verdict}"
        assert tj.agent.admin_state_up
        assert tj.agent.agent_mode != MODE_DVR
        assert may_host(tj.agent, router), f"{tj.agent} cannot host {router}"
        assert a.target.id not in hosts, "target already hosts the router"
        if a.kind is ActionKind.MOVE_ROUTER:
            assert a.source is not None
            assert a.source_dead
            assert world.judged[a.source.id].verdict is Verdict.DEAD
            assert a.source.id in hosts
            # every central host is dead: nothing that is alive (or might be) still hosts it
            central = [h for h in hosts if h in world.judged and is_central(world.judged[h].agent)]
            assert all(world.judged[h].verdict is Verdict.DEAD for h in central)
        else:
            assert a.kind is ActionKind.BIND_ROUTER
            assert a.source is None
            assert not router.distributed
            assert not any(h in world.judged and is_central(world.judged[h].agent) for h in hosts)
            assert all(h in world.judged for h in hosts), "a host we do not know may be hosting it"


@PROPS
@given(world=l3_worlds())
def test_brake_means_no_moves(world: L3World) -> None:
    plan = plan_l3(world.judged, world.routers, world.bindings, POLICY)
    if brake_reason(world.judged.values(), POLICY.brake) is not None:
        assert plan.actions == ()
    if plan.braked:
        assert plan.actions == ()
        assert any(h.startswith("brake:") for h in plan.held)


@PROPS
@given(world=l3_worlds())
def test_nothing_to_do_when_nothing_is_wrong(world: L3World) -> None:
    # Same fleet with no dead agent, keeping only routers that some central agent hosts.
    judged = {
        aid: judged_of(j.agent, Verdict.ALIVE if j.verdict is Verdict.DEAD else j.verdict)
        for aid, j in world.judged.items()
    }
    hosted = {
        rid: r
        for rid, r in world.routers.items()
        if any(h in judged and is_central(judged[h].agent) for h in world.bindings.get(rid, ()))
    }
    plan = plan_l3(judged, hosted, world.bindings, POLICY)
    assert plan == Plan()


@PROPS
@given(world=l3_worlds())
def test_applying_the_plan_then_replanning_gives_nothing(world: L3World) -> None:
    plan = plan_l3(world.judged, world.routers, world.bindings, POLICY)
    after = apply_plan(plan, world.bindings)
    assert plan_l3(world.judged, world.routers, after, POLICY).actions == ()


@PROPS
@given(world=l3_worlds(max_routers=40), max_moves=st.integers(1, 4))
def test_a_move_limit_only_delays(world: L3World, max_moves: int) -> None:
    unlimited = plan_l3(world.judged, world.routers, world.bindings, POLICY)
    bindings = world.bindings
    rounds = 0
    limited = L3Policy(max_moves=max_moves)
    while True:
        plan = plan_l3(world.judged, world.routers, bindings, limited)
        if not plan.actions:
            break
        assert len(plan.actions) <= max_moves
        bindings = apply_plan(plan, bindings)
        rounds += 1
    assert rounds <= math.ceil(len(unlimited.actions) / max_moves)
    # Same destinations as one unlimited pass: the limit changes when, never where.
    assert bindings == apply_plan(unlimited, world.bindings)


@PROPS
@given(world=l3_worlds())
def test_plan_is_deterministic(world: L3World) -> None:
    a = plan_l3(world.judged, world.routers, world.bindings, POLICY)
    b = plan_l3(
        dict(reversed(world.judged.items())),
        dict(reversed(world.routers.items())),
        dict(reversed(world.bindings.items())),
        POLICY,
    )
    assert a == b


@PROPS
@given(
    initial=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    k=st.integers(1, 30),
    az=st.sampled_from([None, "nova"]),
)
def test_each_pick_is_least_loaded(initial: list[int], k: int, az: str | None) -> None:
    # Live agents with uneven loads (fast path without zones, general path with "nova" as Neutron
    # reports it): after the pass, no agent that received a router is more than one above any other.
    dead = l3(99, Verdict.DEAD, az=az)
    live = [l3(i, az=az) for i in range(len(initial))]
    rs = routers(k)
    bindings = on(dead.agent.id, rs)
    for i, n in enumerate(initial):
        for m in range(n):
            bindings[f"x-{i}-{m}"] = frozenset({f"l3-{i}"})
    plan = plan_l3(fleet(dead, *live), rs, bindings, POLICY)
    assert len(plan.actions) == k
    final = loads(apply_plan(plan, bindings))
    got = {a.target.id for a in plan.actions if a.target}
    lowest = min(final[j.agent.id] for j in live)
    for aid in got:
        assert final[aid] <= lowest + 1, (initial, dict(final))


@PROPS
@given(world=l3_worlds(max_routers=40))
def test_each_target_is_the_least_loaded_eligible_agent(world: L3World) -> None:
    # A naive oracle: scan every target, counting the picks made so far in the pass (mixed zones
    # and router kinds make the planner's per-class heaps share, and update, one load count).
    plan = plan_l3(world.judged, world.routers, world.bindings, POLICY)
    load = loads(world.bindings)
    targets = [j.agent for j in world.judged.values() if j.is_target]
    for a in plan.actions:
        router = world.routers[a.resource_id]
        hosts = world.bindings.get(router.id, frozenset())
        eligible = [t for t in targets if may_host(t, router) and t.id not in hosts]
        assert a.target == min(eligible, key=lambda t: (load[t.id], t.host, t.id))
        load[a.target.id] += 1


# -- the rules, one by one ------------------------------------------------------------------------


@pytest.mark.parametrize("az", [None, "nova"])  # both pick paths
@pytest.mark.parametrize(("k", "m"), [(1, 1), (10, 3), (83, 7), (100, 10), (7, 9)])
def test_routers_of_one_dead_agent_spread_evenly(az: str | None, k: int, m: int) -> None:
    dead = l3(0, Verdict.DEAD, az=az)
    live = [l3(i, az=az) for i in range(1, m + 1)]
    rs = routers(k)
    plan = plan_l3(fleet(dead, *live), rs, on(dead.agent.id, rs), POLICY)
    assert all(a.kind is ActionKind.MOVE_ROUTER and a.source == dead.agent for a in plan.actions)
    per_target = Counter(a.target.id for a in plan.actions if a.target)
    counts = [per_target[j.agent.id] for j in live]
    assert sum(counts) == k
    assert max(counts) - min(counts) <= 1, counts


@pytest.mark.parametrize(
    ("verdict", "admin"),
    [
        (Verdict.DEAD, True),
        (Verdict.WARMING, True),
        (Verdict.UNKNOWN, True),
        (Verdict.SUSPECT, True),
        (Verdict.ALIVE, False),
    ],
)
def test_never_a_target_that_is_not_alive_and_up(verdict: Verdict, admin: bool) -> None:
    dead = l3(0, Verdict.DEAD)
    bad = l3(1, verdict, admin=admin)
    good = l3(2)
    rs = routers(5)
    judged = fleet(dead, bad, good, l3(3, Verdict.UNKNOWN), l3(4, Verdict.UNKNOWN))  # 2 dead of 5: no brake
    plan = plan_l3(judged, rs, on(dead.agent.id, rs), POLICY)
    assert {a.target.id for a in plan.actions if a.target} == {good.agent.id}
    # ... and with only the bad one left, nothing moves and the log says why.
    judged = fleet(dead, bad, *(l3(i, Verdict.UNKNOWN) for i in range(3, 6)))
    plan = plan_l3(judged, rs, on(dead.agent.id, rs), POLICY)
    assert plan.actions == ()
    assert "no live eligible L3 agent" in plan.held[0]


@pytest.mark.parametrize("host_verdict", [Verdict.WARMING, Verdict.UNKNOWN, Verdict.SUSPECT, Verdict.ALIVE])
def test_routers_of_agents_that_are_not_dead_stay(host_verdict: Verdict) -> None:
    host = l3(0, host_verdict)
    rs = routers(3)
    assert plan_l3(fleet(host, l3(1)), rs, on(host.agent.id, rs), POLICY) == Plan()


def test_admin_down_live_host_keeps_its_routers() -> None:
    host = l3(0, admin=False)
    rs = routers(3)
    assert plan_l3(fleet(host, l3(1)), rs, on(host.agent.id, rs), POLICY) == Plan()


def test_distributed_router_snat_goes_only_to_dvr_snat() -> None:
    dead = l3(0, Verdict.DEAD, mode=MODE_DVR_SNAT)
    judged = fleet(dead, l3(1, mode=MODE_DVR), l3(2, mode=MODE_LEGACY), l3(3, mode=None), l3(4, mode=MODE_DVR_SNAT))
    rs = routers(4, distributed=True)
    bindings = {rid: frozenset({"l3-0", "l3-1"}) for rid in rs}  # SNAT on the dead one, DVR part on l3-1
    plan = plan_l3(judged, rs, bindings, POLICY)
    assert [a.target.id for a in plan.actions if a.target] == ["l3-4"] * 4
    # Without a dvr_snat agent left, nothing moves (and never to the dvr compute agent).
    del judged["l3-4"]
    plan = plan_l3(judged, rs, bindings, POLICY)
    assert plan.actions == ()
    assert "mode or availability zone" in plan.held[0]


def test_legacy_router_never_goes_to_a_dvr_agent() -> None:
    dead = l3(0, Verdict.DEAD)
    rs = routers(6)
    plan = plan_l3(
        fleet(dead, l3(1, mode=MODE_DVR), l3(2, mode=MODE_DVR_SNAT), l3(3, mode=None)), rs, on("l3-0", rs), POLICY
    )
    assert Counter(a.target.id for a in plan.actions if a.target) == {"l3-2": 3, "l3-3": 3}


def test_availability_zone_hints_are_respected() -> None:
    dead = l3(0, Verdict.DEAD, az="az1")
    judged = fleet(dead, l3(1, az="az1"), l3(2, az="az2"), l3(3, az=None))
    rs = {
        "r-a": Router("r-a", availability_zone_hints=("az2",)),
        "r-b": Router("r-b", availability_zone_hints=("az1", "az2")),
        "r-c": Router("r-c", availability_zone_hints=("az3",)),
        "r-d": Router("r-d"),
    }
    plan = plan_l3(judged, rs, on("l3-0", rs), POLICY)
    got = {a.resource_id: a.target.id for a in plan.actions if a.target}
    assert got["r-a"] == "l3-2"
    assert got["r-b"] in ("l3-1", "l3-2")
    assert "r-c" not in got
    assert got["r-d"] in ("l3-1", "l3-2", "l3-3")
    assert any("no live eligible" in h for h in plan.held)


@pytest.mark.parametrize("skip_ha", [True, False])
def test_ha_routers_are_skipped_by_default(skip_ha: bool) -> None:
    dead, other_dead = l3(0, Verdict.DEAD), l3(1, Verdict.DEAD)
    judged = fleet(dead, other_dead, *(l3(i) for i in range(2, 6)))
    rs = {"ha-1": Router("ha-1", ha=True), "ha-2": Router("ha-2", ha=True)}
    bindings = {
        "ha-1": frozenset({"l3-0", "l3-1"}),  # every VRRP member dead
        "ha-2": frozenset({"l3-0", "l3-2"}),  # one member still alive
    }
    plan = plan_l3(judged, rs, bindings, L3Policy(skip_ha_routers=skip_ha))
    if skip_ha:
        assert plan == Plan()
    else:
        (action,) = plan.actions
        assert action.resource_id == "ha-1"
        assert action.source == dead.agent
        assert action.target is not None
        assert action.target.id not in bindings["ha-1"]


@pytest.mark.parametrize("schedule", [True, False])
def test_unhosted_routers_are_scheduled_when_asked(schedule: bool) -> None:
    judged = fleet(l3(0), l3(1))
    rs = {"lonely": Router("lonely"), "hosted": Router("hosted")}
    plan = plan_l3(judged, rs, {"hosted": frozenset({"l3-0"})}, L3Policy(schedule_unhosted=schedule))
    if schedule:
        (a,) = plan.actions
        assert (a.kind, a.resource_id, a.source, a.source_dead) == (ActionKind.BIND_ROUTER, "lonely", None, False)
        assert a.target is not None
        assert a.target.id == "l3-1"
    else:
        assert plan.actions == ()


def test_router_hosted_by_an_agent_we_do_not_know_is_left_alone() -> None:
    rs = {"r": Router("r")}
    assert plan_l3(fleet(l3(0)), rs, {"r": frozenset({"agent-of-another-type"})}, POLICY) == Plan()


def test_unhosted_distributed_router_is_not_scheduled() -> None:
    rs = {"r": Router("r", distributed=True)}
    assert plan_l3(fleet(l3(0, mode=MODE_DVR_SNAT)), rs, {}, POLICY) == Plan()


def test_binding_of_a_deleted_router_is_ignored() -> None:
    assert plan_l3(fleet(l3(0, Verdict.DEAD), l3(1)), {}, {"gone": frozenset({"l3-0"})}, POLICY) == Plan()


def test_brake_holds_everything() -> None:
    judged = fleet(l3(0, Verdict.DEAD), l3(1, Verdict.DEAD), l3(2), l3(3))
    rs = routers(4)
    bindings = {rid: frozenset({f"l3-{i % 2}"}) for i, rid in enumerate(rs)}
    bindings["lonely"] = frozenset()
    plan = plan_l3(judged, rs | {"lonely": Router("lonely")}, bindings, POLICY)
    assert plan.actions == ()
    assert plan.braked
    assert "2 of 4" in plan.held[0]
    # The absolute limit alone also brakes.
    judged = fleet(l3(0, Verdict.DEAD), *(l3(i) for i in range(1, 10)))
    plan = plan_l3(judged, rs, on("l3-0", rs), L3Policy(brake=BrakePolicy(max_dead_agents=0)))
    assert len(plan.actions) == 4
    plan = plan_l3(judged, rs, on("l3-0", rs), L3Policy(brake=BrakePolicy(max_dead_fraction=0.1)))
    assert len(plan.actions) == 4  # a single dead agent never trips the share limit


def test_max_moves_is_respected_and_said() -> None:
    rs = routers(10)
    plan = plan_l3(fleet(l3(0, Verdict.DEAD), l3(1), l3(2)), rs, on("l3-0", rs), L3Policy(max_moves=3))
    assert [a.resource_id for a in plan.actions] == ["r-0000", "r-0001", "r-0002"]
    assert any("max_moves_per_cycle=3" in h and "7 routers wait" in h for h in plan.held)
