"""A router hosted by no agent is scheduled only once it has stayed so for ``unhosted_grace``: someone
else's move (``rpcdaemon evacuate``, the ``openstack`` CLI's remove-then-add) passes through that state
between its unbind and its bind, and the daemon must not race it."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.plugin_rig import DOWN, Rig
from tests.unit.strategies import PROPS, L3World, l3_worlds

from rpcdaemon.deciding.l3 import L3Policy, plan_l3
from rpcdaemon.model import ActionKind


def settled(make_rig: Callable[..., Rig]) -> Rig:
    rig = make_rig()
    rig.agents("a", "b")
    rig.api.add_router(router_id="r1")
    rig.api.place_router("r1", "a")
    rig.run(2 * DOWN)  # a full window: both alive, r1 on a
    return rig


def test_a_move_made_by_someone_else_is_not_raced(make_rig: Callable[..., Rig]) -> None:
    rig = settled(make_rig)
    rig.api.unbind_router("a", "r1")  # an operator's move: unbound ...
    rig.plugin.request_reconcile()  # ... and the daemon reads it at once (a cast brings a re-read)
    for _ in range(3):
        assert not rig.tick(1.0).outcomes  # 3 s hosted by no agent: left alone
    rig.api.bind_router("b", "r1")  # ... then bound
    rig.plugin.request_reconcile()
    for _ in range(10):
        rig.tick(1.0)
    assert rig.done() == []
    assert rig.api.router_bindings()["r1"] == frozenset({"b"})


def test_a_router_left_hosted_by_no_agent_is_scheduled_after_the_grace(make_rig: Callable[..., Rig]) -> None:
    rig = settled(make_rig)
    rig.api.unbind_router("a", "r1")
    rig.plugin.request_reconcile()
    seen = rig.clock()
    scheduled_at = None
    for _ in range(10):
        if rig.tick(1.0).outcomes:
            scheduled_at = rig.clock()
            break
    assert scheduled_at is not None
    assert 5.0 <= scheduled_at - seen <= 7.0  # unhosted_grace (5 s), then the next check
    assert rig.done(ActionKind.BIND_ROUTER) == ["r1"]


@PROPS
@given(world=l3_worlds(), data=st.data())
def test_young_routers_are_never_scheduled_and_the_rest_is_the_same_plan(world: L3World, data: st.DataObject) -> None:
    young = frozenset(data.draw(st.sets(st.sampled_from(sorted(world.routers) or ["none"]))))
    plan = plan_l3(world.judged, world.routers, world.bindings, L3Policy(), young=young)
    assert not any(a.kind is ActionKind.BIND_ROUTER and a.resource_id in young for a in plan.actions)
    moves = {a.resource_id for a in plan_l3(world.judged, world.routers, world.bindings, L3Policy()).actions
             if a.kind is ActionKind.MOVE_ROUTER}
    # Moves off dead agents do not wait: only routers hosted by nobody do.
    assert {a.resource_id for a in plan.actions if a.kind is ActionKind.MOVE_ROUTER} >= moves - young
