"""Pure DHCP planner: judged agents + networks + bindings + policy -> network unbinds and binds.

Called by the DHCPAgent plugin each check that has something to do, and by the benchmarks.

Rules (each is a test in tests/unit/test_plan_dhcp.py):
- networks are removed from DEAD DHCP agents (unless the brake holds);
- networks Neutron no longer has (deleted) are removed from every agent still listed as hosting them,
  brake or not: that is clean-up, not a move;
- hosting policy ``agents_per_network``: None means "all" (the original behaviour: every network with a
  DHCP-enabled subnet on every live, admin-up DHCP agent); a number N keeps N hosts that are not dead,
  adding to the least-loaded eligible agents; hosts beyond N are never removed while alive;
- only ALIVE admin-up agents receive networks; availability-zone hints are respected;
- a (network, agent) pair in ``refused`` (Neutron refused that bind for good) is never planned;
- a dead agent in ``unfenced`` (its fence command has not succeeded: ``plugins.fence_gate``) keeps its
  networks: they are not removed from it nor replaced elsewhere, as if it were not dead; the brake
  still counts it;
- at most ``max_moves`` actions a pass.

Balance with N per network (``test_no_added_bind_ends_two_above_an_agent_that_could_have_taken_it``):
once the plans are applied (over as many passes as ``max_moves`` needs), every bind the planner added
sits on an agent t such that hosted(t) <= hosted(u) + 1 for every live admin-up agent u that is
eligible for that network and does not host it (hosted = networks listed on the agent, deleted ones
not counted). So where the binds that have to be made can even out the load they do (from scratch:
within one), and no bind lands where another eligible agent would have been two lighter. Healthy
bindings are never moved to get there: that is a rebalance, not a failover.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import chain

from rpcdaemon.deciding.l3 import Plan
from rpcdaemon.deciding.liveness import BrakePolicy, Judged, Verdict, brake_reason
from rpcdaemon.model import Action, ActionKind, Agent, Network


@dataclass(frozen=True, slots=True)
class DhcpPolicy:
    agents_per_network: int | None = None  # None = all
    max_moves: int = 500
    brake: BrakePolicy = field(default_factory=BrakePolicy)


def _eligible(agent: Agent, network: Network) -> bool:
    hints = network.availability_zone_hints
    return not hints or agent.availability_zone in hints


def plan_dhcp(
    judged: Mapping[str, Judged],
    networks: Mapping[str, Network],
    bindings: Mapping[str, frozenset[str]],
    policy: DhcpPolicy,
    refused: AbstractSet[tuple[str, str]] = frozenset(),
    unfenced: AbstractSet[str] = frozenset(),
) -> Plan:
    """``bindings`` maps network id -> ids of the DHCP agents hosting it; ``refused`` holds
    (network id, agent id) pairs never to plan; ``unfenced`` dead agents whose networks stay."""
    all_dead = {aid for aid, j in judged.items() if j.verdict is Verdict.DEAD}
    dead = all_dead - unfenced if unfenced else all_dead
    held: list[str] = []
    actions: list[Action] = []
    waiting = 0  # actions beyond max_moves: counted, not built (with "all", a dead agent hosted every network)

    def emit(
        kind: ActionKind,
        nid: str,
        source: Agent | None,
        target: Agent | None,
        reason: str,
        *,
        source_dead: bool = False,
    ) -> None:
        nonlocal waiting
        if len(actions) < policy.max_moves:
            actions.append(Action(kind, nid, source, target, reason, source_dead=source_dead))
        else:
            waiting += 1

    # Clean-up of deleted networks first: it is safe whatever else is going on.
    deleted = sorted(bindings.keys() - networks.keys())
    for nid in deleted:
        for aid in sorted(bindings[nid]):
            if aid in judged:
                emit(ActionKind.UNBIND_NETWORK, nid, judged[aid].agent, None, "network deleted")

    brake = brake_reason(judged.values(), policy.brake) if all_dead else None
    if brake is not None:
        held.append(f"brake: {brake}; moving nothing")

    targets = [j.agent for j in judged.values() if j.is_target]
    target_ids = frozenset(a.id for a in targets)
    want_all = policy.agents_per_network is None
    # The least-loaded choice is only needed for N per network ("all" binds to every target). Bindings
    # of deleted networks are not load: they go in this very plan (counting them made the agent about
    # to lose them look busy, and the networks went to the others: a 5/4/3 end instead of 4/4/4).
    load = Counter() if want_all else Counter(chain.from_iterable(bindings.values()))
    if not want_all:
        for nid in deleted:
            load.subtract(bindings[nid])
    loads = _Loads(targets, load)
    refused_by: dict[str, frozenset[str]] = {}
    for nid, aid in refused:
        refused_by[nid] = refused_by.get(nid, frozenset()) | {aid}
    short_of_targets = 0
    nobody: frozenset[str] = frozenset()
    none: list[Agent] = []  # shared "no binds": never appended to (even_out only swaps items in place)
    # Per network: the dead hosts to unbind and the agents to bind, emitted together once the
    # placements are final, so that a network's replacement is never a pass behind its removal.
    work: Work = []

    # Set operations per network, not Python loops over its hosts: this runs over every network.
    per = policy.agents_per_network or 0
    moving = brake is None
    for nid in sorted(networks):
        network = networks[nid]
        hosts = bindings.get(nid, nobody)
        lost = hosts & dead
        no = refused_by.get(nid)
        # Hosts that still count are hosts - lost: anything not judged dead (alive, warming, or not
        # yet known). Targets are never dead, so "a target not keeping it" is "a target not hosting
        # it": no copy of the host set is needed (with "all" it holds every agent).
        picked = none
        if moving and network.dhcp_enabled:
            if want_all:
                if not target_ids <= hosts:  # else the common case: already on every target
                    picked = [a for a in targets if a.id not in hosts and _eligible(a, network)
                              and not (no and a.id in no)]
            else:
                need = per - len(hosts) + len(lost)
                if need > 0:
                    picked = loads.take(network, hosts | no if no else hosts, need)
                    if len(picked) < need:
                        short_of_targets += 1
        if (lost and moving) or picked:
            work.append((nid, sorted(lost) if moving else [], picked))

    if not want_all:
        loads.even_out(work, networks, bindings, refused_by)
    reason = "policy: all agents" if want_all else f"policy: {policy.agents_per_network} per network"
    for nid, gone, picked in work:
        for aid in gone:
            emit(ActionKind.UNBIND_NETWORK, nid, judged[aid].agent, None, "agent dead", source_dead=True)
        for agent in picked:
            emit(ActionKind.BIND_NETWORK, nid, None, agent, reason)

    if short_of_targets:
        held.append(f"{short_of_targets} networks have fewer live eligible DHCP agents than agents_per_network")
    if waiting:
        held.append(
            f"per-cycle limit max_moves_per_cycle={policy.max_moves} reached;"
            f" {waiting} actions wait for the next check"
        )
    return Plan(tuple(actions), tuple(held), braked=brake is not None)


Entry = tuple[int, str, str]  # (load, host, agent id): least loaded first, then by host, then by id
Work = list[tuple[str, list[str], list[Agent]]]  # per network: dead hosts to unbind, agents to bind


class _Loads:
    """Planned load per target agent, with one lazily-updated heap per eligibility class.

    A class is the set of targets a network's availability-zone hints allow (no hints: every
    target). Each heap holds, for every agent of its class, an entry with the agent's current load;
    a change of load pushes a fresh entry into each heap of the agent, and an entry whose load is
    no longer the agent's is dropped when popped. So a pick pops only agents that host the network
    already, never the whole fleet outside the network's zones.
    """

    def __init__(self, targets: list[Agent], load: Counter[str]) -> None:
        self.targets = targets
        self.load = load
        self.by_id = {a.id: a for a in targets}
        self.heaps: dict[tuple[str, ...], list[Entry]] = {}
        self.heaps_of: dict[str, list[list[Entry]]] = {a.id: [] for a in targets}

    def _heap(self, network: Network) -> list[Entry]:
        key = network.availability_zone_hints  # the same zones in another order: another heap, same members
        heap = self.heaps.get(key)
        if heap is None:
            members = [a for a in self.targets if _eligible(a, network)]
            heap = [(self.load[a.id], a.host, a.id) for a in members]
            heapq.heapify(heap)
            self.heaps[key] = heap
            for a in members:
                self.heaps_of[a.id].append(heap)
        return heap

    def _add(self, agent: Agent, delta: int) -> None:
        self.load[agent.id] += delta
        entry = (self.load[agent.id], agent.host, agent.id)
        for heap in self.heaps_of[agent.id]:
            heapq.heappush(heap, entry)

    def take(self, network: Network, exclude: AbstractSet[str], need: int, ceiling: int | None = None) -> list[Agent]:
        """Up to ``need`` least-loaded eligible agents not in ``exclude`` (and loaded <= ``ceiling``), each +1.

        A pick counts at once, so the next network sees it.
        """
        heap = self._heap(network)
        load = self.load
        found: list[Agent] = []
        kept: list[Entry] = []
        while heap and len(found) < need and (ceiling is None or heap[0][0] <= ceiling):
            entry = heapq.heappop(heap)
            aid = entry[2]
            if entry[0] != load[aid]:
                continue  # stale: the agent's current entry is elsewhere in this heap
            if aid in exclude:
                kept.append(entry)
                continue
            found.append(self.by_id[aid])
            load[aid] += 1
            fresh = (entry[0] + 1, entry[1], aid)
            for other in self.heaps_of[aid]:
                if other is heap:
                    kept.append(fresh)  # pushed below, with the skipped: never popped twice here
                else:
                    heapq.heappush(other, fresh)
        for entry in kept:
            heapq.heappush(heap, entry)
        return found

    def even_out(
        self,
        work: Work,
        networks: Mapping[str, Network],
        bindings: Mapping[str, frozenset[str]],
        refused_by: Mapping[str, frozenset[str]],
    ) -> None:
        """Re-place planned binds until none sits on an agent two or more above one that could take it.

        The greedy pass goes network by network, so a placement taken early can end on an agent that
        later networks were forced onto (the others host them already, or are outside their zones).
        Givers are visited most loaded first, a taker whose load rises again, and the sweep repeats
        until nothing moves. Each re-placement lowers the sum of squared loads by at least 2, so this
        ends; when the loads end within one (the common case) it costs one scan of the targets.
        """
        if not self.targets:
            return
        floor = min(self.load[a.id] for a in self.targets)  # never falls: a giver stops one above a taker
        if max(self.load[a.id] for a in self.targets) - floor <= 1:
            return
        placed: dict[str, list[tuple[str, list[Agent]]]] = {}  # agent id -> (network id, its picks)
        for nid, _, picked in work:
            for agent in picked:
                placed.setdefault(agent.id, []).append((nid, picked))
        while self._sweep(placed, floor, networks, bindings, refused_by):
            pass  # a giver that got lighter may now take from one visited before it: sweep again

    def _sweep(
        self,
        placed: dict[str, list[tuple[str, list[Agent]]]],
        floor: int,
        networks: Mapping[str, Network],
        bindings: Mapping[str, frozenset[str]],
        refused_by: Mapping[str, frozenset[str]],
    ) -> bool:
        """One pass over the givers, most loaded first; True if any bind was re-placed."""
        moved = False
        givers = [(-self.load[aid], aid) for aid in placed]
        heapq.heapify(givers)
        while givers:
            minus, aid = heapq.heappop(givers)
            if -minus != self.load[aid]:
                continue  # stale
            if self.load[aid] < floor + 2:
                break  # nobody can take from this agent or any below it
            giver = self.by_id[aid]
            still: list[tuple[str, list[Agent]]] = []
            for nid, picked in placed[aid]:
                exclude = bindings.get(nid, frozenset()) | refused_by.get(nid, frozenset()) | {p.id for p in picked}
                takers = self.take(networks[nid], exclude, 1, ceiling=self.load[aid] - 2)
                if not takers:
                    still.append((nid, picked))
                    continue
                taker = takers[0]
                picked[picked.index(giver)] = taker
                self._add(giver, -1)
                placed.setdefault(taker.id, []).append((nid, picked))
                heapq.heappush(givers, (-self.load[taker.id], taker.id))
                moved = True
            placed[aid] = still
        return moved
