"""Neutron's permanent refusals: planned around, remembered per pair, never retried every check.

- the planners never pick a refused (resource, agent) pair (property tests over random worlds);
- an L3 agent configured with ``router_id`` or ``handle_internal_only_routers = false`` is never a
  target for routers Neutron would refuse it (known from its listed configurations, no call spent);
- a router bound only to ``dvr`` agents is left alone: Neutron allows neither the unbind
  (DVRL3CannotRemoveFromDvrAgent) nor a bind elsewhere (RouterHostedByL3Agent);
- the executor marks an INVALID_TARGET answer to a bind as a refusal; the plugins remember the pair
  (one WARNING), plan around it, and forget it when that agent restarts or after ``refusal_memory``.

The real server's answers behind these rules are contract cases (``tests/contract_cases.py``) and the
end-to-end scenarios in ``tests/e2e/test_topologies_e2e.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.plugin_rig import DOWN, TICK, Rig
from tests.unit.strategies import PROPS, DhcpWorld, L3World, dhcp_worlds, judged_of, l3_worlds

from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.deciding.dhcp import DhcpPolicy, plan_dhcp
from rpcdaemon.deciding.l3 import L3Policy, plan_l3
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import (
    DHCP_AGENT,
    L3_AGENT,
    MODE_DVR,
    Action,
    ActionKind,
    Agent,
    Heartbeat,
    Network,
    OutcomeStatus,
    Router,
)

# -- the planners ------------------------------------------------------------------------------------


def _pairs(draw: Callable[[st.SearchStrategy[Any]], Any], resources: list[str],
           agents: list[str]) -> frozenset[tuple[str, str]]:
    if not resources or not agents:
        return frozenset()
    pair = st.tuples(st.sampled_from(resources), st.sampled_from(agents))
    return frozenset(draw(st.lists(pair, max_size=3 * len(resources))))


@PROPS
@given(world=l3_worlds(), data=st.data(), skip_ha=st.booleans())
def test_no_l3_plan_contains_a_refused_pair(world: L3World, data: st.DataObject, skip_ha: bool) -> None:
    refused = _pairs(data.draw, sorted(world.routers), sorted(world.judged))
    plan = plan_l3(world.judged, world.routers, world.bindings, L3Policy(skip_ha_routers=skip_ha), refused)
    for a in plan.actions:
        assert a.target is not None
        assert (a.resource_id, a.target.id) not in refused
    # Refusing nothing is planning as before.
    assert plan_l3(world.judged, world.routers, world.bindings, L3Policy(skip_ha_routers=skip_ha)) == plan_l3(
        world.judged, world.routers, world.bindings, L3Policy(skip_ha_routers=skip_ha), frozenset()
    )


@PROPS
@given(world=dhcp_worlds(), data=st.data(), per=st.sampled_from([None, 1, 2]))
def test_no_dhcp_plan_contains_a_refused_pair(world: DhcpWorld, data: st.DataObject, per: int | None) -> None:
    refused = _pairs(data.draw, sorted(world.networks), sorted(world.judged))
    plan = plan_dhcp(world.judged, world.networks, world.bindings, DhcpPolicy(agents_per_network=per), refused)
    for a in plan.actions:
        if a.kind is ActionKind.BIND_NETWORK:
            assert a.target is not None
            assert (a.resource_id, a.target.id) not in refused


def l3(i: int, verdict: Verdict = Verdict.ALIVE, **kw: object) -> Judged:
    agent = Agent(f"l3-{i}", L3_AGENT, f"net-{i}", agent_mode="legacy", **kw)  # type: ignore[arg-type]
    return judged_of(agent, verdict)


def fleet(*judged: Judged) -> dict[str, Judged]:
    return {j.agent.id: j for j in judged}


def targets(actions: tuple[Action, ...]) -> dict[str, str]:
    return {a.resource_id: a.target.id for a in actions if a.target is not None}


def test_a_refused_pair_goes_to_the_next_agent() -> None:
    judged = fleet(l3(0, Verdict.DEAD), l3(1), l3(2))
    routers = {r: Router(r) for r in ("r0", "r1")}
    bindings = {r: frozenset({"l3-0"}) for r in routers}
    # Without refusals: l3-1 then l3-2 by load. l3-1 refused r0: r0 goes to l3-2, r1 to l3-1.
    assert targets(plan_l3(judged, routers, bindings, L3Policy()).actions) == {"r0": "l3-1", "r1": "l3-2"}
    plan = plan_l3(judged, routers, bindings, L3Policy(), frozenset({("r0", "l3-1")}))
    assert targets(plan.actions) == {"r0": "l3-2", "r1": "l3-1"}
    # Every target refused it: it waits, and the log says why.
    plan = plan_l3(judged, routers, bindings, L3Policy(), frozenset({("r0", "l3-1"), ("r0", "l3-2")}))
    assert targets(plan.actions) == {"r1": "l3-1"}
    assert any("no live eligible" in line for line in plan.held)


def test_an_agent_pinned_to_one_router_takes_only_that_one() -> None:
    judged = fleet(l3(0, Verdict.DEAD), l3(1, router_id="r3"), l3(2))
    routers = {f"r{i}": Router(f"r{i}") for i in range(4)}
    plan = plan_l3(judged, routers, {r: frozenset({"l3-0"}) for r in routers}, L3Policy())
    # l3-1 is the lighter one, but Neutron would refuse it every router except r3.
    assert targets(plan.actions) == {"r0": "l3-2", "r1": "l3-2", "r2": "l3-2", "r3": "l3-1"}


def test_an_agent_without_internal_only_routers_takes_only_routers_with_a_gateway() -> None:
    judged = fleet(l3(0, Verdict.DEAD), l3(1, handle_internal_only_routers=False), l3(2))
    routers = {"inner": Router("inner"), "outer": Router("outer", external_gateway=True),
               "inner2": Router("inner2")}
    plan = plan_l3(judged, routers, {r: frozenset({"l3-0"}) for r in routers}, L3Policy())
    got = targets(plan.actions)
    assert got["inner"] == got["inner2"] == "l3-2"
    assert got["outer"] == "l3-1"
    # Alone, it takes the gateway router and leaves the others waiting.
    judged = fleet(l3(0, Verdict.DEAD), l3(1, handle_internal_only_routers=False))
    plan = plan_l3(judged, routers, {r: frozenset({"l3-0"}) for r in routers}, L3Policy())
    assert targets(plan.actions) == {"outer": "l3-1"}


def test_a_router_bound_only_to_dvr_agents_is_left_alone() -> None:
    dvr = judged_of(Agent("dvr-1", L3_AGENT, "compute-1", agent_mode=MODE_DVR), Verdict.DEAD)
    judged = fleet(l3(1), dvr)
    routers = {"stuck": Router("stuck"), "lonely": Router("lonely")}
    plan = plan_l3(judged, routers, {"stuck": frozenset({"dvr-1"})}, L3Policy())
    assert [(a.kind, a.resource_id) for a in plan.actions] == [(ActionKind.BIND_ROUTER, "lonely")]


# -- the executor ------------------------------------------------------------------------------------


@pytest.fixture
def fake_and_executor() -> Iterator[tuple[FakeNeutron, Executor]]:
    api = FakeNeutron()
    executor = Executor(api, ExecutorPolicy(workers=2, backoff_min=0, backoff_max=0), stop=threading.Event())
    yield api, executor
    executor.close()


def test_executor_marks_only_invalid_target_binds_as_refusals(fake_and_executor: tuple[FakeNeutron, Executor]) -> None:
    api, executor = fake_and_executor
    dead = api.add_agent(L3_AGENT, "dead", alive=False)
    pinned = api.add_agent(L3_AGENT, "pinned", router_id="someone-else")
    dvr = api.add_agent(L3_AGENT, "compute", agent_mode=MODE_DVR)
    fine = api.add_agent(L3_AGENT, "fine")
    dhcp = api.add_agent(DHCP_AGENT, "dhcp", admin_state_up=False)
    routers = [api.add_router(f"r{i}") for i in range(4)]
    network = api.add_network("n")
    for r in routers[:3]:
        api.place_router(r.id, dead.id)
    api.place_router(routers[3].id, dvr.id)
    outcomes = executor.run([
        Action(ActionKind.MOVE_ROUTER, routers[0].id, dead, pinned),
        Action(ActionKind.MOVE_ROUTER, routers[1].id, dead, dvr),
        Action(ActionKind.MOVE_ROUTER, routers[2].id, dead, fine),
        # The unbind is refused (409 DVRL3CannotRemoveFromDvrAgent): a PERMANENT failure of the source,
        # nothing the target refused.
        Action(ActionKind.MOVE_ROUTER, routers[3].id, dvr, fine),
        Action(ActionKind.BIND_NETWORK, network.id, None, dhcp),
    ])
    got = {o.action.resource_id: (o.status, o.refusal) for o in outcomes}
    assert got == {
        routers[0].id: (OutcomeStatus.FAILED, "InvalidL3Agent"),
        routers[1].id: (OutcomeStatus.FAILED, "DVRL3CannotAssignToDvrAgent"),
        routers[2].id: (OutcomeStatus.DONE, ""),
        routers[3].id: (OutcomeStatus.FAILED, ""),
        network.id: (OutcomeStatus.FAILED, "InvalidDHCPAgent"),
    }
    assert "DVRL3CannotRemoveFromDvrAgent" in next(o.detail for o in outcomes if o.action.resource_id == routers[3].id)


# -- the plugins -------------------------------------------------------------------------------------


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "not planning that pair again" in r.getMessage()]


def test_l3_refusal_is_remembered_not_retried(make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rig = make_rig(L3_AGENT)
    rig.agents("a", "b", "c")
    rig.api.add_router(router_id="r0")
    rig.api.place_router("r0", "a")
    rig.api.refuse_binds("b")  # b looks fine in its listing, but refuses every bind
    rig.run(100)
    rig.silent.add("a")
    rig.run(DOWN + 4 * TICK)
    assert rig.api.router_bindings()["r0"] == {"c"}
    assert rig.api.refusals["b"] == 1
    assert set(rig.plugin.refusals) == {("r0", "b")}
    (line,) = _refusal_lines(caplog)
    assert "host-b (b)" in line
    assert "InvalidL3Agent" in line
    # Long after: still one refusal, no more bind attempts at b.
    binds = rig.api.calls["bind_router"]
    rig.run(300)
    assert rig.api.refusals["b"] == 1
    assert rig.api.calls["bind_router"] == binds
    assert len(_refusal_lines(caplog)) == 1


def test_refused_pair_is_forgotten_when_the_agent_restarts(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(L3_AGENT)
    rig.agents("a", "b")
    rig.run(20)
    rig.plugin.refusals.refuse("r0", "b", "test")
    rig.tick()
    assert rig.plugin.refusals.pairs() == {("r0", "b")}
    rig.registry.record(Heartbeat(L3_AGENT, "host-a", rig.clock(), start_flag=True))  # another agent
    assert rig.plugin.refusals.pairs() == {("r0", "b")}
    rig.clock.now += 1
    rig.registry.record(Heartbeat(L3_AGENT, "host-b", rig.clock(), start_flag=True))
    assert rig.plugin.refusals.pairs() == frozenset()


def test_refused_pair_is_forgotten_after_refusal_memory(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(L3_AGENT)
    rig.agents("a", "b")
    rig.run(20)
    rig.plugin.refusals.refuse("r0", "b", "test")
    rig.clock.now += rig.plugin.timing.refusal_memory - 1
    assert rig.plugin.refusals.pairs() == {("r0", "b")}
    rig.clock.now += 1
    assert rig.plugin.refusals.pairs() == frozenset()


def test_dhcp_refusal_is_remembered_not_retried(make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rig = make_rig(DHCP_AGENT, dhcp=DhcpPolicy(agents_per_network=1))
    rig.agents("a", "b", "c")
    network: Network = rig.api.add_network(network_id="n0")
    rig.api.place_network(network.id, "a")
    rig.api.refuse_binds("b")
    rig.run(100)
    rig.silent.add("a")
    rig.run(DOWN + 4 * TICK)
    assert rig.api.network_bindings()["n0"] == {"c"}
    assert rig.api.refusals["b"] == 1
    rig.run(300)
    assert rig.api.refusals["b"] == 1
    assert len(_refusal_lines(caplog)) == 1


def test_all_agents_policy_skips_a_refused_pair_without_calls(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(DHCP_AGENT, dhcp=DhcpPolicy(agents_per_network=None))
    rig.agents("a", "b")
    rig.api.add_network(network_id="n0")
    rig.api.place_network("n0", "a")
    rig.api.refuse_binds("b")
    rig.run(200)
    assert rig.api.network_bindings()["n0"] == {"a"}
    assert rig.api.refusals["b"] == 1
    calls = sum(rig.api.calls.values())
    rig.run(50)  # idle again: no reconcile is due within 50 s of the last one... at most one
    assert sum(rig.api.calls.values()) - calls <= 1 + 2 + 1
