"""The evacuate planners (``deciding.drain``): properties over random fleets, then the rules one by one.

Agents are judged by Neutron alone here (``alive`` and ``admin_state_up``); the verdicts the shared
strategies draw are ignored. Eligibility is checked against ``strategies.may_host``, an independent
restatement of who may host what.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.strategies import PROPS, DhcpWorld, L3World, apply_plan, dhcp_worlds, is_central, l3_worlds, may_host

from rpcdaemon.deciding.drain import plan_drain_dhcp, plan_drain_l3
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, MODE_DVR, MODE_DVR_SNAT, ActionKind, Agent, Network, Router


def l3(i: int, *, mode: str = "legacy", az: str | None = None, alive: bool = True, admin: bool = True) -> Agent:
    return Agent(f"l3-{i}", L3_AGENT, f"net-{i}", admin_state_up=admin, alive=alive, agent_mode=mode,
                 availability_zone=az)


def dhcp(i: int, *, az: str | None = None, alive: bool = True, admin: bool = True) -> Agent:
    return Agent(f"dhcp-{i}", DHCP_AGENT, f"net-{i}", admin_state_up=admin, alive=alive, availability_zone=az)


# ------------------------------------------------------------------------------------------ properties


@PROPS
@given(l3_worlds(), st.data(), st.booleans())
def test_l3_drain_moves_or_lists_every_router_and_only_onto_live_eligible_agents(
    world: L3World, data: st.DataObject, include_ha: bool
) -> None:
    agents = [j.agent for j in world.judged.values()]
    source = data.draw(st.sampled_from(agents))
    plan = plan_drain_l3(source, agents, world.routers, world.bindings, include_ha=include_ha)
    mine = {rid for rid, hosts in world.bindings.items() if source.id in hosts and rid in world.routers}
    planned = [a.resource_id for a in plan.actions]
    told = planned + [x.resource_id for x in plan.stuck] + [x.resource_id for x in plan.kept]
    assert sorted(told) == sorted(mine)  # every router of the source: moved, stuck or kept, once
    for a in plan.actions:
        assert a.kind is ActionKind.MOVE_ROUTER
        assert a.source == source
        assert not a.source_dead
        assert a.target is not None
        assert a.target.id != source.id
        assert a.target.alive
        assert a.target.admin_state_up
        assert a.target.agent_type == L3_AGENT
        assert may_host(a.target, world.routers[a.resource_id])
        assert a.target.id not in world.bindings[a.resource_id]
    after = apply_plan(plan, world.bindings)  # type: ignore[arg-type]
    assert all(source.id not in after.get(rid, frozenset()) for rid in planned)
    if not include_ha:
        assert not any(world.routers[rid].ha for rid in planned)
    # Stuck means really stuck: no live admin-up L3 agent other than the source could have taken it.
    live = [a for a in agents if a.alive and a.admin_state_up and a.id != source.id]
    for x in plan.stuck:
        router = world.routers[x.resource_id]
        assert not [a for a in live if may_host(a, router) and a.id not in world.bindings[x.resource_id]], x
    if not is_central(source):
        assert not plan.actions  # a dvr agent's routers are local parts: kept


@PROPS
@given(l3_worlds(max_routers=40), st.data())
def test_l3_drain_spreads_by_load(world: L3World, data: st.DataObject) -> None:
    """Every move lands on a least-loaded eligible agent, counting the moves planned before it."""
    agents = [j.agent for j in world.judged.values()]
    source = data.draw(st.sampled_from(agents))
    plan = plan_drain_l3(source, agents, world.routers, world.bindings)
    load = Counter(aid for hosts in world.bindings.values() for aid in hosts)
    live = [a for a in agents if a.alive and a.admin_state_up and a.id != source.id]
    for a in plan.actions:
        assert a.target is not None
        router = world.routers[a.resource_id]
        could = [t for t in live if may_host(t, router) and t.id not in world.bindings[a.resource_id]]
        assert load[a.target.id] == min(load[t.id] for t in could)
        load[a.target.id] += 1


@PROPS
@given(dhcp_worlds(), st.data(), st.one_of(st.none(), st.integers(1, 3)))
def test_dhcp_drain_empties_the_source_and_keeps_each_network_served(
    world: DhcpWorld, data: st.DataObject, per: int | None
) -> None:
    agents = [j.agent for j in world.judged.values()]
    source = data.draw(st.sampled_from(agents))
    plan = plan_drain_dhcp(source, agents, world.networks, world.bindings, agents_per_network=per)
    mine = {nid for nid, hosts in world.bindings.items() if source.id in hosts}
    unbound = {a.resource_id for a in plan.actions if a.kind is ActionKind.UNBIND_NETWORK}
    assert unbound | {x.resource_id for x in plan.stuck} == mine
    assert not unbound & {x.resource_id for x in plan.stuck}
    kinds = [a.kind for a in plan.actions]
    assert kinds == sorted(kinds, key=lambda k: k is ActionKind.UNBIND_NETWORK)  # binds first
    serving = {a.id for a in agents if a.alive and a.admin_state_up and a.id != source.id}
    after = apply_plan(plan, world.bindings)  # type: ignore[arg-type]
    for a in plan.actions:
        if a.kind is ActionKind.BIND_NETWORK:
            assert a.target is not None
            assert a.target.id in serving
            assert a.target.id not in world.bindings[a.resource_id]
            hints = world.networks[a.resource_id].availability_zone_hints
            assert not hints or a.target.availability_zone in hints
        else:
            assert a.source == source
            assert not a.source_dead
    for nid in unbound:
        network = world.networks.get(nid)
        if network is not None and network.dhcp_enabled:
            assert after.get(nid, frozenset()) & serving, nid  # never left with no live DHCP agent
            if per is not None:  # and no more binds than the policy wants
                added = {a.target.id for a in plan.actions if a.resource_id == nid and a.target is not None}
                assert not added or len(after[nid] & serving) <= per
    for x in plan.stuck:  # stuck: no live host left, and nobody to take it
        assert not (world.bindings[x.resource_id] - {source.id}) & serving


# ----------------------------------------------------------------------------------------- the rules


def test_routers_go_to_the_least_loaded_and_never_to_dvr_or_down_or_dead_agents() -> None:
    src, a, b = l3(0), l3(1), l3(2)
    others = [l3(3, mode=MODE_DVR), l3(4, admin=False), l3(5, alive=False)]
    routers = {f"r{i}": Router(f"r{i}") for i in range(4)}
    bindings = {rid: frozenset({src.id}) for rid in routers} | {"busy": frozenset({a.id})}
    routers["busy"] = Router("busy")
    plan = plan_drain_l3(src, [src, a, b, *others], routers, bindings)
    assert [(x.resource_id, x.target.id if x.target else None) for x in plan.actions] == [
        ("r0", b.id), ("r1", a.id), ("r2", b.id), ("r3", a.id)]
    assert plan.stuck == plan.kept == ()


def test_distributed_routers_need_a_dvr_snat_agent_and_are_listed_when_there_is_none() -> None:
    src = l3(0, mode=MODE_DVR_SNAT)
    routers = {"d": Router("d", distributed=True), "z": Router("z", availability_zone_hints=("az9",)),
               "h": Router("h", ha=True), "ok": Router("ok")}
    bindings = {rid: frozenset({src.id}) for rid in routers}
    plan = plan_drain_l3(src, [src, l3(1), l3(2, mode=MODE_DVR)], routers, bindings)
    assert [a.resource_id for a in plan.actions] == ["ok"]
    assert {x.resource_id: x.why for x in plan.stuck} == {
        "d": "distributed router: no live dvr_snat L3 agent",
        "z": "availability zone hints az9: no live eligible L3 agent there"}
    assert [x.resource_id for x in plan.kept] == ["h"]
    with_ha = plan_drain_l3(src, [src, l3(1), l3(3, mode=MODE_DVR_SNAT)], routers, bindings, include_ha=True)
    assert sorted(a.resource_id for a in with_ha.actions) == ["d", "h", "ok"]


def test_target_host_only_and_a_dvr_source_keeps_its_local_parts() -> None:
    src, a, b = l3(0), l3(1), l3(2)
    routers = {"r1": Router("r1"), "r2": Router("r2")}
    bindings = {rid: frozenset({src.id}) for rid in routers}
    plan = plan_drain_l3(src, [src, a, b], routers, bindings, target_host=b.host)
    assert {x.target.id for x in plan.actions if x.target} == {b.id}
    nowhere = plan_drain_l3(src, [src, a, b], routers, bindings, target_host="no-such-host")
    assert [x.why for x in nowhere.stuck] == ["no live admin-up L3 agent on no-such-host other than the source"] * 2
    dvr = l3(7, mode=MODE_DVR)
    kept = plan_drain_l3(dvr, [dvr, a], {"d": Router("d", distributed=True)}, {"d": frozenset({dvr.id})})
    assert not kept.actions
    assert [x.resource_id for x in kept.kept] == ["d"]


def test_refused_pairs_are_never_planned() -> None:
    src, a, b = l3(0), l3(1), l3(2)
    routers = {"r": Router("r")}
    plan = plan_drain_l3(src, [src, a, b], routers, {"r": frozenset({src.id})}, refused={("r", a.id), ("r", b.id)})
    assert not plan.actions
    assert [x.resource_id for x in plan.stuck] == ["r"]


def test_networks_policy_n_binds_what_is_missing_then_unbinds_and_removal_only_when_enough() -> None:
    src, a, b, c = dhcp(0), dhcp(1), dhcp(2), dhcp(3, alive=False)
    networks = {n: Network(n, dhcp_enabled=True) for n in ("n1", "n2", "n3")}
    bindings = {"n1": frozenset({src.id}), "n2": frozenset({src.id, a.id}), "n3": frozenset({src.id, c.id})}
    plan = plan_drain_dhcp(src, [src, a, b, c], networks, bindings, agents_per_network=2)
    got = [(x.kind.value, x.resource_id, (x.target or x.source).id) for x in plan.actions]  # type: ignore[union-attr]
    assert got == [
        ("bind-network", "n1", b.id), ("bind-network", "n1", a.id),  # b had 0, a had 1
        ("bind-network", "n2", b.id),
        ("bind-network", "n3", a.id), ("bind-network", "n3", b.id),  # c is dead: it does not count
        ("unbind-network", "n1", src.id), ("unbind-network", "n2", src.id), ("unbind-network", "n3", src.id)]
    enough = plan_drain_dhcp(src, [src, a, b], networks, {"n2": frozenset({src.id, a.id})}, agents_per_network=1)
    assert [(x.kind.value, x.resource_id) for x in enough.actions] == [("unbind-network", "n2")]


def test_networks_all_policy_and_a_network_that_would_lose_dhcp_stays() -> None:
    src, a, b = dhcp(0), dhcp(1, az="az1"), dhcp(2, az="az2")
    networks = {"n": Network("n", dhcp_enabled=True), "z": Network("z", dhcp_enabled=True,
                                                                    availability_zone_hints=("az9",)),
                "off": Network("off")}
    bindings = {nid: frozenset({src.id}) for nid in ("n", "z", "off", "deleted")}
    plan = plan_drain_dhcp(src, [src, a, b], networks, bindings, agents_per_network=None)
    assert sorted((x.kind.value, x.resource_id) for x in plan.actions) == [
        ("bind-network", "n"), ("bind-network", "n"),
        ("unbind-network", "deleted"), ("unbind-network", "n"), ("unbind-network", "off")]
    assert [(x.resource_id, x.why) for x in plan.stuck] == [
        ("z", "availability zone hints az9: no live DHCP agent there; it stays, or it would have no DHCP")]
