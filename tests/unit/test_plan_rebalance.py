"""The rebalance planners (``deciding.rebalance``): properties over random fleets, then a few rules.

Agents are judged by Neutron alone (``alive``, ``admin_state_up``); eligibility is checked against the
independent ``strategies.may_host``.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.strategies import PROPS, DhcpWorld, L3World, apply_plan, dhcp_worlds, is_central, l3_worlds, may_host

from rpcdaemon.deciding.rebalance import plan_rebalance_dhcp, plan_rebalance_l3
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, MODE_LEGACY, ActionKind, Agent, Network, Router

UNLIMITED = 10_000


def pool_of(world: L3World) -> list[Agent]:
    return [j.agent for j in world.judged.values()
            if j.agent.alive and j.agent.admin_state_up and is_central(j.agent)]


def loads(bindings: dict[str, frozenset[str]], pool: list[Agent]) -> Counter[str]:
    ids = {a.id for a in pool}
    load = Counter({a.id: 0 for a in pool})
    load.update(aid for hosts in bindings.values() for aid in hosts if aid in ids)
    return load


@PROPS
@given(l3_worlds(max_routers=40), st.integers(0, 12))
def test_l3_moves_only_to_live_eligible_agents_never_worse_at_most_max_moves(world: L3World, limit: int) -> None:
    agents = [j.agent for j in world.judged.values()]
    plan = plan_rebalance_l3(agents, world.routers, world.bindings, max_moves=limit)
    assert len(plan.actions) <= limit
    pool = pool_of(world)
    load = loads(world.bindings, pool)
    seen: set[str] = set()
    for a in plan.actions:
        assert a.kind is ActionKind.MOVE_ROUTER
        assert not a.source_dead
        assert a.source is not None
        assert a.target is not None
        assert a.target.alive
        assert a.target.admin_state_up
        assert a.target.agent_type == L3_AGENT
        router = world.routers[a.resource_id]
        assert may_host(a.target, router)
        assert not router.ha
        assert a.source.id in world.bindings[a.resource_id]
        assert a.target.id not in world.bindings[a.resource_id]
        assert a.resource_id not in seen  # a router moves once per plan
        seen.add(a.resource_id)
        assert load[a.target.id] <= load[a.source.id] - 2  # never worse: the sum of squares falls
        load[a.source.id] -= 1
        load[a.target.id] += 1
    assert dict(plan.after) == dict(load)
    # Deterministic.
    assert plan_rebalance_l3(agents, dict(world.routers), dict(world.bindings), max_moves=limit) == plan


@PROPS
@given(l3_worlds(max_routers=40))
def test_l3_unlimited_ends_within_one_per_eligibility(world: L3World) -> None:
    """No router is left on an agent two above one that could have taken it."""
    agents = [j.agent for j in world.judged.values()]
    plan = plan_rebalance_l3(agents, world.routers, world.bindings, max_moves=UNLIMITED)
    after = apply_plan(plan, world.bindings)  # type: ignore[arg-type]
    pool = pool_of(world)
    load = loads(after, pool)
    moved = {a.resource_id for a in plan.actions}
    for rid, hosts in after.items():
        router = world.routers.get(rid)
        if router is None or router.ha or rid in moved:
            continue
        for src in (p for p in pool if p.id in hosts):
            for t in pool:
                if t.id not in hosts and may_host(t, router):
                    assert load[t.id] >= load[src.id] - 1, (rid, src.id, t.id, dict(load))


@PROPS
@given(st.integers(1, 8), st.lists(st.integers(0, 7), min_size=0, max_size=60), st.integers(0, 3))
def test_l3_alike_agents_end_within_one(n: int, placement: list[int], down: int) -> None:
    agents = [Agent(f"l3-{i}", L3_AGENT, f"net-{i}", agent_mode=MODE_LEGACY) for i in range(n)]
    agents += [Agent(f"off-{i}", L3_AGENT, f"off-{i}", admin_state_up=False) for i in range(down)]
    routers = {f"r{i:02d}": Router(f"r{i:02d}") for i in range(len(placement))}
    bindings = {rid: frozenset({agents[p % len(agents)].id}) for rid, p in zip(routers, placement, strict=True)}
    plan = plan_rebalance_l3(agents, routers, bindings, max_moves=UNLIMITED)
    live = [a for a in agents if a.admin_state_up]
    final = loads(apply_plan(plan, bindings), live)  # type: ignore[arg-type]
    assert max(final.values()) - min(final.values()) <= 1, dict(final)
    assert plan.spread_after <= 1
    assert all(a.target is not None and a.target.admin_state_up for a in plan.actions)
    again = plan_rebalance_l3(agents, routers, apply_plan(plan, bindings), max_moves=UNLIMITED)  # type: ignore[arg-type]
    assert again.actions == ()  # balanced stays balanced


@PROPS
@given(dhcp_worlds(), st.integers(1, 3), st.integers(0, 12))
def test_dhcp_n_policy_moves_are_binds_then_unbinds_onto_live_eligible_agents(
    world: DhcpWorld, per: int, limit: int
) -> None:
    agents = [j.agent for j in world.judged.values()]
    plan = plan_rebalance_dhcp(agents, world.networks, world.bindings, agents_per_network=per, max_moves=limit)
    assert len(plan.moves) <= limit
    assert len(plan.actions) == 2 * len(plan.moves)
    kinds = [a.kind for a in plan.actions]
    assert kinds == [ActionKind.BIND_NETWORK] * len(plan.moves) + [ActionKind.UNBIND_NETWORK] * len(plan.moves)
    pool = [a for a in agents if a.alive and a.admin_state_up]
    load = loads(world.bindings, pool)
    for m in plan.moves:
        assert m.target.alive
        assert m.target.admin_state_up
        assert m.target.agent_type == DHCP_AGENT
        hints = world.networks[m.resource_id].availability_zone_hints
        assert not hints or m.target.availability_zone in hints
        assert m.target.id not in world.bindings[m.resource_id]
        assert m.source.id in world.bindings[m.resource_id]
        assert load[m.target.id] <= load[m.source.id] - 2
        load[m.source.id] -= 1
        load[m.target.id] += 1
    after = apply_plan(plan, world.bindings)  # type: ignore[arg-type]
    # The number of hosts of each network is unchanged: a rebalance is not a policy change.
    assert {k: len(v) for k, v in after.items()} == {k: len(v) for k, v in world.bindings.items()}


def test_dhcp_all_policy_has_nothing_to_balance() -> None:
    agents = [Agent("d1", DHCP_AGENT, "h1"), Agent("d2", DHCP_AGENT, "h2")]
    plan = plan_rebalance_dhcp(agents, {"n": Network("n", dhcp_enabled=True)}, {"n": frozenset({"d1"})},
                               agents_per_network=None, max_moves=10)
    assert plan.actions == ()
    assert "nothing to balance" in plan.held[0]


def test_a_revived_empty_agent_gets_routers_from_the_busiest_first() -> None:
    a, b, c = (Agent(f"l3-{x}", L3_AGENT, f"net-{x}", agent_mode=MODE_LEGACY) for x in "abc")
    routers = {f"r{i}": Router(f"r{i}") for i in range(9)}
    bindings = {f"r{i}": frozenset({a.id if i < 6 else b.id}) for i in range(9)}
    plan = plan_rebalance_l3([a, b, c], routers, bindings, max_moves=50)
    assert [(m.resource_id, m.source.id, m.target.id) for m in plan.moves] == [
        ("r0", a.id, c.id), ("r1", a.id, c.id), ("r2", a.id, c.id)]
    assert dict(plan.after) == {a.id: 3, b.id: 3, c.id: 3}
    assert plan.spread_before == 6
    limited = plan_rebalance_l3([a, b, c], routers, bindings, max_moves=2)
    assert len(limited.moves) == 2
    assert "--max-moves 2" in limited.held[0]
