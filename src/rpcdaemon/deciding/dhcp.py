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
- at most ``max_moves`` actions a pass.
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
) -> Plan:
    """``bindings`` maps network id -> ids of the DHCP agents hosting it."""
    dead = {aid for aid, j in judged.items() if j.verdict is Verdict.DEAD}
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
    for nid in sorted(bindings.keys() - networks.keys()):
        for aid in sorted(bindings[nid]):
            if aid in judged:
                emit(ActionKind.UNBIND_NETWORK, nid, judged[aid].agent, None, "network deleted")

    brake = brake_reason(judged.values(), policy.brake) if dead else None
    if brake is not None:
        held.append(f"brake: {brake}; moving nothing")

    targets = [j.agent for j in judged.values() if j.is_target]
    target_ids = frozenset(a.id for a in targets)
    want_all = policy.agents_per_network is None
    # The least-loaded choice is only needed for N per network ("all" binds to every target).
    counts = Counter() if want_all else Counter(chain.from_iterable(bindings.values()))
    heap = [(counts[a.id], a.host, a.id) for a in targets]
    heapq.heapify(heap)
    by_id = {a.id: a for a in targets}
    short_of_targets = 0
    nobody: frozenset[str] = frozenset()

    # Set operations per network, not Python loops over its hosts: this runs over every network.
    for nid in sorted(networks):
        network = networks[nid]
        hosts = bindings.get(nid, nobody)
        lost = hosts & dead
        if lost and brake is None:
            for aid in sorted(lost):
                emit(ActionKind.UNBIND_NETWORK, nid, judged[aid].agent, None, "agent dead", source_dead=True)
        if not network.dhcp_enabled or brake is not None:
            continue
        # Hosts that still count are hosts - lost: anything not judged dead (alive, warming, or not
        # yet known). Targets are never dead, so "a target not keeping it" is "a target not hosting
        # it": no copy of the host set is needed (with "all" it holds every agent).
        if want_all:
            if target_ids <= hosts:
                continue  # the common case: already on every target
            for agent in targets:
                if agent.id not in hosts and _eligible(agent, network):
                    emit(ActionKind.BIND_NETWORK, nid, None, agent, "policy: all agents")
            continue
        need = (policy.agents_per_network or 0) - (len(hosts) - len(lost))
        if need <= 0:
            continue
        picked = _pick_least_loaded(heap, by_id, hosts, network, need)
        for agent in picked:
            emit(ActionKind.BIND_NETWORK, nid, None, agent, f"policy: {policy.agents_per_network} per network")
        if len(picked) < need:
            short_of_targets += 1

    if short_of_targets:
        held.append(f"{short_of_targets} networks have fewer live eligible DHCP agents than agents_per_network")
    if waiting:
        held.append(
            f"per-cycle limit max_moves_per_cycle={policy.max_moves} reached;"
            f" {waiting} actions wait for the next check"
        )
    return Plan(tuple(actions), tuple(held), braked=brake is not None)


def _pick_least_loaded(
    heap: list[tuple[int, str, str]],
    by_id: Mapping[str, Agent],
    exclude: AbstractSet[str],
    network: Network,
    need: int,
) -> list[Agent]:
    picked: list[Agent] = []
    skipped: list[tuple[int, str, str]] = []
    while heap and len(picked) < need:
        load, host, aid = heapq.heappop(heap)
        agent = by_id[aid]
        if aid in exclude or not _eligible(agent, network):
            skipped.append((load, host, aid))
            continue
        picked.append(agent)
        skipped.append((load + 1, host, aid))
    for entry in skipped:
        heapq.heappush(heap, entry)
    return picked
