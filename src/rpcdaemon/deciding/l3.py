"""Pure L3 planner: judged agents + routers + bindings + policy -> router moves.

Called by the L3Agent plugin each check that has something to do, and by the benchmarks.

Rules (each is a test in tests/unit/test_plan_l3.py):
- only routers hosted by a DEAD agent (or by no agent at all) are touched; a router bound only to
  ``dvr`` agents is left alone (Neutron allows neither unbinding it from them nor binding it elsewhere);
- the brake (too many dead at once) and "no live eligible target" mean: plan nothing for them;
- targets are ALIVE, admin-up L3 agents that do not host the router already; legacy routers go to
  ``legacy`` or ``dvr_snat`` agents, distributed routers' SNAT only to ``dvr_snat`` agents, never to
  ``dvr`` (compute-node) agents; availability-zone hints are respected; HA routers are skipped by
  default (VRRP fails them over by itself); an agent configured with ``router_id`` takes only that
  router, one with ``handle_internal_only_routers = false`` only routers with a gateway (Neutron
  refuses the rest with InvalidL3Agent);
- a (router, agent) pair in ``refused`` (Neutron refused that bind for good) is never planned;
- a router hosted by no agent is scheduled only once it is no longer ``young`` (the plugin's
  ``unhosted_grace``: someone else's move passes through that state between its unbind and its bind);
- a dead agent in ``unfenced`` (its fence command has not succeeded: ``plugins.fence_gate``) keeps its
  routers: nothing is moved off it, as if it were not dead; the brake still counts it;
- the target is the least-loaded eligible agent, counting the moves planned in this same pass;
- at most ``max_moves`` actions; the rest wait for the next check.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from itertools import chain

from rpcdaemon.deciding.liveness import BrakePolicy, Judged, Verdict, brake_reason
from rpcdaemon.model import (
    MODE_DVR_SNAT,
    MODE_LEGACY,
    Action,
    ActionKind,
    Agent,
    Router,
)


@dataclass(frozen=True, slots=True)
class L3Policy:
    skip_ha_routers: bool = True
    schedule_unhosted: bool = True
    max_moves: int = 500
    brake: BrakePolicy = field(default_factory=BrakePolicy)


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()
    # Why something that looks wrong is left alone this pass (brake, no target, limit): for the log.
    held: tuple[str, ...] = ()
    braked: bool = False


def hosts_snat(agent: Agent) -> bool:
    """Agents that can host a router's central part: legacy and dvr_snat (unknown mode = legacy)."""
    return (agent.agent_mode or MODE_LEGACY) in (MODE_LEGACY, MODE_DVR_SNAT)


def can_host(agent: Agent, router: Router) -> bool:
    if router.distributed:
        if agent.agent_mode != MODE_DVR_SNAT:
            return False
    elif not hosts_snat(agent):
        return False
    if agent.router_id and agent.router_id != router.id:
        return False
    if not agent.handle_internal_only_routers and not router.external_gateway:
        return False
    hints = router.availability_zone_hints
    return not hints or agent.availability_zone in hints


class _LoadBook:
    """Least-loaded choice among targets, counting what this pass already planned.

    The choice is the minimum of (load, host, id) over the targets that can host the router and do
    not host it yet. One heap per eligibility class (distributed or not, zone hints, gateway), built on first
    use; all classes share one load count, so an entry whose load went up through another class is
    stale: it is re-pushed with the current load when it surfaces (loads only grow, so the first
    entry that is current is the true minimum). O(log n) a pick instead of a scan of every target.
    """

    def __init__(self, targets: Sequence[Agent], load: Mapping[str, int]) -> None:
        self._targets = targets
        self._load = {a.id: load.get(a.id, 0) for a in targets}
        self._pinned = {a.id: a.router_id for a in targets if a.router_id}
        self._heaps: dict[tuple[bool, tuple[str, ...], bool], list[tuple[int, str, str, Agent]]] = {}

    def pick(self, router: Router, exclude: AbstractSet[str]) -> Agent | None:
        # An agent configured with router_id takes one router only: it stays in its class's heap and
        # is excluded for every other router (a heap per router would cost a scan of every target).
        if self._pinned:
            others = {aid for aid, rid in self._pinned.items() if rid != router.id}
            if others:
                exclude = exclude | others
        cls = (router.distributed, router.availability_zone_hints, router.external_gateway)
        heap = self._heaps.get(cls)
        if heap is None:
            heap = [(self._load[a.id], a.host, a.id, a) for a in self._targets
                    if can_host(a, replace(router, id=a.router_id) if a.router_id else router)]
            heapq.heapify(heap)
            self._heaps[cls] = heap
        load = self._load
        skipped = []
        chosen = None
        while heap:
            entry = heapq.heappop(heap)
            current = load[entry[2]]
            if entry[0] != current:
                heapq.heappush(heap, (current, entry[1], entry[2], entry[3]))
                continue
            if entry[2] in exclude:
                skipped.append(entry)
                continue
            chosen = entry
            break
        for entry in skipped:
            heapq.heappush(heap, entry)
        if chosen is None:
            return None
        load[chosen[2]] += 1
        heapq.heappush(heap, (chosen[0] + 1, chosen[1], chosen[2], chosen[3]))
        return chosen[3]


def plan_l3(
    judged: Mapping[str, Judged],
    routers: Mapping[str, Router],
    bindings: Mapping[str, frozenset[str]],
    policy: L3Policy,
    refused: AbstractSet[tuple[str, str]] = frozenset(),
    unfenced: AbstractSet[str] = frozenset(),
    young: AbstractSet[str] = frozenset(),
) -> Plan:
    """Router moves for one pass. ``bindings`` maps router id -> ids of the L3 agents hosting it;
    ``refused`` holds (router id, agent id) pairs never to plan; ``unfenced`` dead agents whose routers
    stay where they are; ``young`` routers hosted by no agent that are not scheduled yet (they became so
    only just: maybe in the middle of someone else's move)."""
    all_dead = {aid for aid, j in judged.items() if j.verdict is Verdict.DEAD}
    dead = all_dead - unfenced if unfenced else all_dead
    held: list[str] = []

    # Set operations per router, not Python loops over its hosts: this runs over every router.
    central_ids = {aid for aid, j in judged.items() if hosts_snat(j.agent)}
    live_central_ids = central_ids - dead
    truly_live_central = central_ids - all_dead if unfenced else live_central_ids
    held_unfenced = 0  # routers that only an unfenced dead agent keeps: they wait, and the brake still shows
    nobody: frozenset[str] = frozenset()

    # What needs a new home: (router id, router, dead source or None), in router id order.
    homeless: list[tuple[str, Router, Agent | None]] = []
    for rid, router in routers.items():  # a binding of a router not listed: deleted meanwhile, ignored
        if router.ha and policy.skip_ha_routers:
            continue
        hosts = bindings.get(rid, nobody)
        if hosts & live_central_ids:
            if unfenced and not hosts & truly_live_central:
                held_unfenced += 1
            continue  # still hosted by an agent that is not dead (or not fenced yet)
        central = hosts & central_ids
        if not central:
            # Only a router bound to no agent at all is scheduled. One bound only to agents we do not
            # know may be hosted there; one bound only to dvr agents (whose mode changed after the
            # bind) can be neither unbound (409 DVRL3CannotRemoveFromDvrAgent) nor bound elsewhere
            # (409 RouterHostedByL3Agent): trying would fail every pass.
            if policy.schedule_unhosted and not router.distributed and not hosts and rid not in young:
                homeless.append((rid, router, None))
            continue
        # Every central host is dead: move from the first (non-HA routers have exactly one).
        homeless.append((rid, router, judged[min(central)].agent))
    homeless.sort(key=lambda item: item[0])

    if not homeless and not held_unfenced:
        return Plan()

    if all_dead:
        reason = brake_reason(judged.values(), policy.brake)
        if reason is not None:
            return Plan(held=(f"brake: {reason}; moving nothing",), braked=True)
    if not homeless:
        return Plan()

    targets = [j.agent for j in judged.values() if j.is_target]
    if not targets:
        return Plan(held=(f"{len(homeless)} routers need a home but no live eligible L3 agent exists",))

    load = Counter(chain.from_iterable(bindings.values()))
    book = _LoadBook(targets, load)
    refused_by: dict[str, set[str]] = {}
    for rid, aid in refused:
        refused_by.setdefault(rid, set()).add(aid)

    actions: list[Action] = []
    no_target = 0
    for _, router, source in homeless:
        if len(actions) >= policy.max_moves:
            held.append(
                f"per-cycle limit max_moves_per_cycle={policy.max_moves} reached;"
                f" {len(homeless) - len(actions) - no_target} routers wait for the next check"
            )
            break
        hosts = bindings.get(router.id, nobody)
        no = refused_by.get(router.id)
        target = book.pick(router, hosts | no if no else hosts)
        if target is None:
            no_target += 1
            continue
        if source is None:
            actions.append(Action(ActionKind.BIND_ROUTER, router.id, None, target, "hosted by no agent"))
        else:
            actions.append(
                Action(ActionKind.MOVE_ROUTER, router.id, source, target, "agent dead", source_dead=True)
            )
    if no_target:
        held.append(f"{no_target} routers have no live eligible L3 agent (mode or availability zone)")
    return Plan(tuple(actions), tuple(held))
