"""Pure planners of ``rpcdaemon evacuate``: everything a live agent hosts moves off it, for maintenance.

Called by ``commands.evacuate`` with what the Neutron API lists (agents, routers, networks, bindings);
no I/O. Unlike a failover the source is alive (``Action.source_dead`` is False) and every other agent is
judged by Neutron alone: a target is an agent Neutron says is alive and admin-up (``Judged.is_target``'s
rule), of the same type, not the source, and on ``target_host`` when one is given.

Rules (each is a test in tests/unit/test_plan_drain.py):
- routers: each router on the source moves to the least-loaded target that can host it
  (``deciding.l3.can_host``: legacy/dvr_snat for legacy routers, dvr_snat only for distributed ones,
  availability-zone hints, ``router_id``, ``handle_internal_only_routers``), counting the moves planned
  so far; never to a ``dvr`` agent. HA routers stay (VRRP fails them over) unless ``include_ha``; a
  ``dvr``/``dvr_no_external`` source keeps its routers (their local parts follow the instances, and
  Neutron refuses to unbind them). Those are ``kept``, on purpose;
- networks: each network on the source is unbound from it, and first bound to targets that do not host
  it yet as the hosting policy wants: ``agents_per_network`` N keeps N live admin-up hosts (the least
  loaded targets make up the difference), None ("all") adds every eligible target missing it. It is
  removed without a bind when the others already host it enough, and it is not removed at all when it
  would be left hosted by no live agent;
- what cannot move (no eligible target, zone, refused pair) is ``stuck``, with the reason: never dropped;
- a (resource, agent) pair in ``refused`` is never planned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import chain

from rpcdaemon.deciding.dhcp import _eligible, _Loads
from rpcdaemon.deciding.l3 import _LoadBook, hosts_snat
from rpcdaemon.model import MODE_DVR_SNAT, Action, ActionKind, Agent, Network, Router


@dataclass(frozen=True, slots=True)
class Left:
    """A router or network that stays on the source, and why."""

    resource_id: str
    why: str


@dataclass(frozen=True, slots=True)
class DrainPlan:
    # Routers: MOVE_ROUTER. Networks: their BIND_NETWORKs, then the UNBIND_NETWORK from the source
    # (the command runs the binds first: a network keeps DHCP while it moves).
    actions: tuple[Action, ...] = ()
    stuck: tuple[Left, ...] = ()  # cannot move: no eligible target
    kept: tuple[Left, ...] = ()  # left there on purpose (HA routers, a dvr agent's local parts)
    held: tuple[str, ...] = ()  # what the operator should know (fewer hosts than the policy wants)


def drain_targets(agents: Sequence[Agent], source: Agent, target_host: str | None = None) -> list[Agent]:
    """Agents that may receive the source's work: same type, alive and admin-up by Neutron, not the source."""
    return [
        a for a in agents
        if a.agent_type == source.agent_type and a.id != source.id and a.alive and a.admin_state_up
        and (target_host is None or a.host == target_host)
    ]


def _refused_by(refused: AbstractSet[tuple[str, str]]) -> dict[str, frozenset[str]]:
    by: dict[str, frozenset[str]] = {}
    for rid, aid in refused:
        by[rid] = by.get(rid, frozenset()) | {aid}
    return by


def _why_no_router_target(router: Router, targets: Sequence[Agent], exclude: AbstractSet[str],
                          target_host: str | None) -> str:
    where = f" on {target_host}" if target_host else ""
    if not targets:
        return f"no live admin-up L3 agent{where} other than the source"
    free = [t for t in targets if t.id not in exclude]
    if not free:
        return f"every live L3 agent{where} hosts it already or refused it"
    if router.distributed and not any(t.agent_mode == MODE_DVR_SNAT for t in free):
        return f"distributed router: no live dvr_snat L3 agent{where}"
    if not router.distributed and not any(hosts_snat(t) for t in free):
        return f"no live legacy or dvr_snat L3 agent{where}"
    hints = router.availability_zone_hints
    if hints and not any(t.availability_zone in hints for t in free):
        return f"availability zone hints {', '.join(hints)}: no live eligible L3 agent{where} there"
    return f"no live L3 agent{where} can host it (agent_mode, router_id or handle_internal_only_routers)"


def plan_drain_l3(
    source: Agent,
    agents: Sequence[Agent],
    routers: Mapping[str, Router],
    bindings: Mapping[str, frozenset[str]],
    *,
    include_ha: bool = False,
    target_host: str | None = None,
    refused: AbstractSet[tuple[str, str]] = frozenset(),
) -> DrainPlan:
    """Router moves off ``source``. ``bindings`` maps router id -> ids of the L3 agents hosting it;
    a binding of a router not in ``routers`` (deleted meanwhile) is ignored."""
    mine = sorted(rid for rid, hosts in bindings.items() if source.id in hosts and rid in routers)
    if not hosts_snat(source):
        why = f"{source.agent_mode} agent: a distributed router's local part, Neutron moves it with the instances"
        return DrainPlan(kept=tuple(Left(rid, why) for rid in mine))
    targets = drain_targets(agents, source, target_host)
    book = _LoadBook(targets, Counter(chain.from_iterable(bindings.values())))
    refused_by = _refused_by(refused)
    actions: list[Action] = []
    stuck: list[Left] = []
    kept: list[Left] = []
    reason = f"evacuate {source.host}"
    for rid in mine:
        router = routers[rid]
        if router.ha and not include_ha:
            kept.append(Left(rid, "HA router: VRRP fails it over by itself (--ha moves it too)"))
            continue
        exclude = bindings[rid] | refused_by.get(rid, frozenset())
        target = book.pick(router, exclude)
        if target is None:
            stuck.append(Left(rid, _why_no_router_target(router, targets, exclude, target_host)))
            continue
        actions.append(Action(ActionKind.MOVE_ROUTER, rid, source, target, reason))
    return DrainPlan(tuple(actions), tuple(stuck), tuple(kept))


def plan_drain_dhcp(
    source: Agent,
    agents: Sequence[Agent],
    networks: Mapping[str, Network],
    bindings: Mapping[str, frozenset[str]],
    *,
    agents_per_network: int | None = None,
    target_host: str | None = None,
    refused: AbstractSet[tuple[str, str]] = frozenset(),
) -> DrainPlan:
    """Network binds and unbinds that empty ``source``. ``bindings`` maps network id -> DHCP agent ids."""
    targets = drain_targets(agents, source, target_host)
    serving = frozenset(a.id for a in agents if a.alive and a.admin_state_up and a.id != source.id)
    want_all = agents_per_network is None
    loads = _Loads(targets, Counter() if want_all else Counter(chain.from_iterable(bindings.values())))
    refused_by = _refused_by(refused)
    where = f" on {target_host}" if target_host else ""
    binds: list[Action] = []
    unbinds: list[Action] = []
    stuck: list[Left] = []
    short = 0
    reason = f"evacuate {source.host}"
    for nid in sorted(nid for nid, hosts in bindings.items() if source.id in hosts):
        network = networks.get(nid)
        if network is None or not network.dhcp_enabled:
            # Deleted meanwhile, or no DHCP-enabled subnet: nothing to keep serving.
            why = "network deleted" if network is None else "no DHCP-enabled subnet"
            unbinds.append(Action(ActionKind.UNBIND_NETWORK, nid, source, None, f"{reason}: {why}"))
            continue
        hosts = bindings[nid]
        keeping = (hosts - {source.id}) & serving
        no = refused_by.get(nid, frozenset())
        if want_all:
            picked = [t for t in targets if t.id not in hosts and t.id not in no and _eligible(t, network)]
        else:
            assert agents_per_network is not None
            need = agents_per_network - len(keeping)
            picked = loads.take(network, hosts | no, need) if need > 0 else []
            if len(keeping) + len(picked) < agents_per_network:
                short += 1
        if not keeping and not picked:
            hints = network.availability_zone_hints
            if not targets:
                why = f"no live admin-up DHCP agent{where} other than the source"
            elif hints and not any(t.availability_zone in hints for t in targets):
                why = f"availability zone hints {', '.join(hints)}: no live DHCP agent{where} there"
            else:
                why = f"no live DHCP agent{where} can take it (hosts it already, or refused it)"
            stuck.append(Left(nid, why + "; it stays, or it would have no DHCP"))
            continue
        for agent in picked:
            binds.append(Action(ActionKind.BIND_NETWORK, nid, None, agent, reason))
        unbinds.append(Action(ActionKind.UNBIND_NETWORK, nid, source, None, reason))
    held: tuple[str, ...] = ()
    if short:
        held = (f"{short} networks keep fewer than agents_per_network={agents_per_network} live DHCP agents"
                f"{where}: not enough eligible ones",)
    return DrainPlan(tuple(binds + unbinds), tuple(stuck), (), held)
