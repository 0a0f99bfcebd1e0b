"""Pure L3 planner: judged agents + routers + bindings + policy -> router moves.

Called by the L3Agent plugin each check that has something to do, and by the benchmarks.

Rules (each is a test in tests/unit/test_plan_l3.py):
- only routers hosted by a DEAD agent (or by no agent at all) are touched;
- the brake (too many dead at once) and "no live eligible target" mean: plan nothing for them;
- targets are ALIVE, admin-up L3 agents that do not host the router already; legacy routers go to
  ``legacy`` or ``dvr_snat`` agents, distributed routers' SNAT only to ``dvr_snat`` agents, never to
  ``dvr`` (compute-node) agents; availability-zone hints are respected; HA routers are skipped by
  default (VRRP fails them over by itself);
- the target is the least-loaded eligible agent, counting the moves planned in this same pass;
- at most ``max_moves`` actions; the rest wait for the next check.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
    hints = router.availability_zone_hints
    return not hints or agent.availability_zone in hints


class _LoadBook:
    """Least-loaded choice among targets, counting what this pass already planned."""

    def __init__(self, targets: Sequence[Agent], load: Mapping[str, int]) -> None:
        self._load = {a.id: load.get(a.id, 0) for a in targets}
        self._targets = sorted(targets, key=lambda a: (self._load[a.id], a.host, a.id))

    def pick(self, ok: set[str] | None, exclude: frozenset[str], router: Router) -> Agent | None:
        best: Agent | None = None
        best_key: tuple[int, str, str] | None = None
        for agent in self._targets:
            if agent.id in exclude or (ok is not None and agent.id not in ok):
                continue
            if not can_host(agent, router):
                continue
            key = (self._load[agent.id], agent.host, agent.id)
            if best_key is None or key < best_key:
                best, best_key = agent, key
        if best is not None:
            self._load[best.id] += 1
        return best


class _FastBook:
    """The common case at scale: every router can go to every target. A heap, O(log n) a pick."""

    def __init__(self, targets: Sequence[Agent], load: Mapping[str, int]) -> None:
        self._heap = [(load.get(a.id, 0), a.host, a.id, a) for a in targets]
        heapq.heapify(self._heap)

    def pick(self, exclude: frozenset[str]) -> Agent | None:
        skipped = []
        chosen = None
        while self._heap:
            entry = heapq.heappop(self._heap)
            if entry[2] in exclude:
                skipped.append(entry)
                continue
            chosen = entry
            break
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        if chosen is None:
            return None
        heapq.heappush(self._heap, (chosen[0] + 1, chosen[1], chosen[2], chosen[3]))
        return chosen[3]


def plan_l3(
    judged: Mapping[str, Judged],
    routers: Mapping[str, Router],
    bindings: Mapping[str, frozenset[str]],
    policy: L3Policy,
) -> Plan:
    """Router moves for one pass. ``bindings`` maps router id -> ids of the L3 agents hosting it."""
    dead = {aid for aid, j in judged.items() if j.verdict is Verdict.DEAD}
    held: list[str] = []

    # What needs a new home: (router, dead source or None).
    homeless: list[tuple[Router, Agent | None]] = []
    for rid in sorted(bindings.keys() | routers.keys()):
        router = routers.get(rid)
        if router is None:
            continue  # deleted since the bindings were read: nothing to do
        if router.ha and policy.skip_ha_routers:
            continue
        hosts = bindings.get(rid, frozenset())
        central = [h for h in hosts if h in judged and hosts_snat(judged[h].agent)]
        if not central:
            unknown_hosts = [h for h in hosts if h not in judged]
            if policy.schedule_unhosted and not router.distributed and not unknown_hosts:
                homeless.append((router, None))
            continue
        live_central = [h for h in central if h not in dead]
        if live_central:
            continue  # still hosted by an agent that is not dead
        # Every central host is dead: move from the first (non-HA routers have exactly one).
        homeless.append((router, judged[sorted(central)[0]].agent))

    if not homeless:
        return Plan()

    if dead:
        reason = brake_reason(judged.values(), policy.brake)
        if reason is not None:
            return Plan(held=(f"brake: {reason}; moving nothing",), braked=True)

    targets = [j.agent for j in judged.values() if j.is_target]
    if not targets:
        return Plan(held=(f"{len(homeless)} routers need a home but no live eligible L3 agent exists",))

    load: dict[str, int] = {}
    for hosts in bindings.values():
        for h in hosts:
            load[h] = load.get(h, 0) + 1

    simple = all(a.agent_mode in (None, MODE_LEGACY) and not a.availability_zone for a in targets) and all(
        not r.distributed and not r.availability_zone_hints for r, _ in homeless
    )
    fast = _FastBook(targets, load) if simple else None
    book = None if simple else _LoadBook(targets, load)

    actions: list[Action] = []
    no_target = 0
    for router, source in homeless:
        if len(actions) >= policy.max_moves:
            held.append(
                f"per-cycle limit max_moves_per_cycle={policy.max_moves} reached;"
                f" {len(homeless) - len(actions) - no_target} routers wait for the next check"
            )
            break
        exclude = bindings.get(router.id, frozenset())
        target = fast.pick(exclude) if fast is not None else book.pick(None, exclude, router)  # type: ignore[union-attr]
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
