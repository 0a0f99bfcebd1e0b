"""Pure planners of ``rpcdaemon rebalance``: even out routers (and networks) across live agents.

Called by ``commands.rebalance`` with what the Neutron API lists; no I/O. The pool is the agents
Neutron says are alive and admin-up (``Judged.is_target``'s rule): L3 agents that host central parts
(legacy, dvr_snat), and for networks the DHCP agents, only with ``agents_per_network`` N (with "all"
every network is on every agent already: nothing to balance). Load = routers (networks) bound to it.

Rules (each is a test in tests/unit/test_plan_rebalance.py):
- one move takes one resource from an agent to one with at least two fewer (so the move never makes
  anything worse: the sum of squared loads falls by at least 2, and the plan ends); the giver is the
  most loaded agent that can give, the taker the least loaded (load, host, id) that can take: for a
  router ``deciding.l3.can_host``, for a network its availability-zone hints; never an agent that hosts
  it already, never a ``refused`` pair;
- so with no limit the plan ends when no resource could move to an agent two lighter than its own:
  within one per eligibility class (all agents alike: max - min <= 1);
- HA routers are not moved unless ``include_ha`` (and then only to agents not hosting them); a router
  or network moves at most once per plan (the executor runs a plan's actions in parallel);
- at most ``max_moves`` moves (a network move is a bind to the taker, then an unbind from the giver);
- deterministic: the same input gives the same plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from rpcdaemon.deciding.dhcp import _eligible
from rpcdaemon.deciding.l3 import can_host, hosts_snat
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Action, ActionKind, Agent, Network, Router, freeze_mapping

REASON = "rebalance"


@dataclass(frozen=True, slots=True)
class Move:
    resource_id: str
    source: Agent
    target: Agent


@dataclass(frozen=True, slots=True)
class RebalancePlan:
    moves: tuple[Move, ...] = ()
    # Routers: MOVE_ROUTER per move. Networks: the BIND_NETWORKs, then the UNBIND_NETWORKs of the same moves.
    actions: tuple[Action, ...] = ()
    before: Mapping[str, int] = field(default_factory=lambda: freeze_mapping(None))  # agent id -> load
    after: Mapping[str, int] = field(default_factory=lambda: freeze_mapping(None))
    held: tuple[str, ...] = ()

    @property
    def spread_before(self) -> int:
        return max(self.before.values()) - min(self.before.values()) if self.before else 0

    @property
    def spread_after(self) -> int:
        return max(self.after.values()) - min(self.after.values()) if self.after else 0


def l3_pool(agents: Sequence[Agent]) -> list[Agent]:
    return [a for a in agents if a.agent_type == L3_AGENT and a.alive and a.admin_state_up and hosts_snat(a)]


def dhcp_pool(agents: Sequence[Agent]) -> list[Agent]:
    return [a for a in agents if a.agent_type == DHCP_AGENT and a.alive and a.admin_state_up]


def _greedy(
    pool: Sequence[Agent],
    bindings: Mapping[str, frozenset[str]],
    movable: Callable[[str], bool],
    can_take: Callable[[Agent, str], bool],
    max_moves: int,
) -> tuple[list[Move], Counter[str], Counter[str]]:
    """Moves from the most to the least loaded agents; returns the moves and the loads before and after."""
    ids = {a.id for a in pool}
    load: Counter[str] = Counter({a.id: 0 for a in pool})
    on: dict[str, list[str]] = {a.id: [] for a in pool}
    for rid, hosts in bindings.items():
        mine = hosts & ids
        for aid in mine:
            load[aid] += 1
        if mine and movable(rid):
            for aid in mine:
                on[aid].append(rid)
    for rids in on.values():
        rids.sort()
    before = Counter(load)
    moved: set[str] = set()
    moves: list[Move] = []
    while len(moves) < max_moves:
        takers = sorted(pool, key=lambda a: (load[a.id], a.host, a.id))
        floor = load[takers[0].id] if takers else 0
        best: tuple[int, str, str, str, Agent, Agent] | None = None  # (taker load, host, id, resource, giver, taker)
        for giver in sorted(pool, key=lambda a: (-load[a.id], a.host, a.id)):
            ceiling = load[giver.id] - 2
            if ceiling < floor:
                break  # nobody is two lighter than this giver or any after it
            for rid in on[giver.id]:
                if rid in moved:
                    continue
                hosts = bindings[rid]
                for taker in takers:
                    if load[taker.id] > ceiling or (best is not None and load[taker.id] > best[0]):
                        break
                    if taker.id in hosts or not can_take(taker, rid):
                        continue
                    key = (load[taker.id], taker.host, taker.id, rid, giver, taker)
                    if best is None or key[:4] < best[:4]:
                        best = key
                    break
                if best is not None and best[0] == floor:
                    break  # no taker can be lighter than the lightest
            if best is not None:
                break  # the most loaded giver that can give gives
        if best is None:
            break
        _, _, _, rid, giver, taker = best
        load[giver.id] -= 1
        load[taker.id] += 1
        on[giver.id].remove(rid)
        moved.add(rid)
        moves.append(Move(rid, giver, taker))
    return moves, before, load


def _refused_check(refused: AbstractSet[tuple[str, str]]) -> Callable[[str, str], bool]:
    return (lambda rid, aid: (rid, aid) in refused) if refused else (lambda rid, aid: False)


def plan_rebalance_l3(
    agents: Sequence[Agent],
    routers: Mapping[str, Router],
    bindings: Mapping[str, frozenset[str]],
    *,
    max_moves: int,
    include_ha: bool = False,
    refused: AbstractSet[tuple[str, str]] = frozenset(),
) -> RebalancePlan:
    """Router moves that even out the L3 agents of the pool. ``bindings``: router id -> L3 agent ids."""
    pool = l3_pool(agents)
    is_refused = _refused_check(refused)

    def movable(rid: str) -> bool:
        router = routers.get(rid)
        return router is not None and (include_ha or not router.ha)

    def can_take(agent: Agent, rid: str) -> bool:
        return can_host(agent, routers[rid]) and not is_refused(rid, agent.id)

    moves, before, after = _greedy(pool, bindings, movable, can_take, max(0, max_moves))
    actions = tuple(Action(ActionKind.MOVE_ROUTER, m.resource_id, m.source, m.target, REASON) for m in moves)
    return RebalancePlan(tuple(moves), actions, freeze_mapping(before), freeze_mapping(after),
                         _limit_note(moves, max_moves, "router"))


def plan_rebalance_dhcp(
    agents: Sequence[Agent],
    networks: Mapping[str, Network],
    bindings: Mapping[str, frozenset[str]],
    *,
    agents_per_network: int | None,
    max_moves: int,
    refused: AbstractSet[tuple[str, str]] = frozenset(),
) -> RebalancePlan:
    """Network moves that even out the DHCP agents of the pool (N per network only)."""
    if agents_per_network is None:
        return RebalancePlan(held=("DHCP: agents_per_network = all puts every network on every agent: "
                                   "nothing to balance",))
    pool = dhcp_pool(agents)
    is_refused = _refused_check(refused)

    def movable(nid: str) -> bool:
        return nid in networks

    def can_take(agent: Agent, nid: str) -> bool:
        return _eligible(agent, networks[nid]) and not is_refused(nid, agent.id)

    moves, before, after = _greedy(pool, bindings, movable, can_take, max(0, max_moves))
    binds = [Action(ActionKind.BIND_NETWORK, m.resource_id, None, m.target, REASON) for m in moves]
    unbinds = [Action(ActionKind.UNBIND_NETWORK, m.resource_id, m.source, None, REASON) for m in moves]
    return RebalancePlan(tuple(moves), tuple(binds + unbinds), freeze_mapping(before), freeze_mapping(after),
                         _limit_note(moves, max_moves, "network"))


def _limit_note(moves: Sequence[Move], max_moves: int, what: str) -> tuple[str, ...]:
    if moves and len(moves) >= max_moves:
        return (f"--max-moves {max_moves} reached: more {what} moves may even out the rest (run it again)",)
    return ()
