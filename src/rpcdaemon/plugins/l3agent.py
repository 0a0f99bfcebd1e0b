"""The L3Agent plugin: routers hosted by dead L3 agents move to live ones.

Built by the service (or the demo) with the shared registry, executor and Neutron adapter; the
service calls ``check()`` every ``check_interval``. The rules live in ``deciding.l3``; this module only
keeps the cached view of routers and bindings that the planner reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rpcdaemon.acting.api import ErrorKind, NeutronError
from rpcdaemon.acting.resources import ROUTER
from rpcdaemon.broker.link import Subscription
from rpcdaemon.deciding.hints import Hint
from rpcdaemon.deciding.l3 import L3Policy, Plan, hosts_snat, plan_l3
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.model import (
    L3_AGENT,
    MODE_DVR,
    MODE_DVR_NO_EXTERNAL,
    ActionKind,
    Agent,
    BusHints,
    Outcome,
    OutcomeStatus,
    Router,
)
from rpcdaemon.plugins.base import FailoverPlugin
from rpcdaemon.plugins.bus_news import HintView
from rpcdaemon.plugins.hearing import NEUTRON_EXCHANGE, BusEvent, Hearing

# Agents that never host a router's central part: a cast to them is about their local part only.
_LOCAL_ONLY_MODES = frozenset({MODE_DVR, MODE_DVR_NO_EXTERNAL})


class L3AgentPlugin(FailoverPlugin):
    name = "L3Agent"
    agent_type = L3_AGENT
    resource = ROUTER
    # Besides the heartbeats: the casts to the L3 agents, and router_deleted on their fanout.
    hears = Hearing(casts=(
        Subscription(NEUTRON_EXCHANGE, "l3_agent.#"),
        Subscription("l3_agent_fanout", "", exchange_type="fanout", auto_delete=True),  # router_deleted
    ))

    def __init__(self, *args: Any, policy: L3Policy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy
        self.brake = policy.brake
        self.routers: dict[str, Router] = {}
        self._unhosted_since: dict[str, float] = {}  # router id -> when it was first seen hosted by no agent
        # router id -> ids of the L3 agents hosting it
        self.bindings: dict[str, frozenset[str]] = {}

    # -- bus hints (add is called from the bus thread: it only queues) ----------------------------
    def take(self, event: BusEvent) -> None:
        if isinstance(event, BusHints):
            self.on_bus_hints(event)

    def on_bus_hints(self, hints: BusHints) -> None:
        """What a cast to an L3 agent (or a router interface port cast to a DHCP agent) says."""
        if hints.routers or hints.more_routers:
            self.news.add([Hint(h.router_id, h.host, h.kind, h.method) for h in hints.routers],
                          lost=hints.more_routers)

    def hint_view(self) -> HintView:
        routers = self.routers
        placeable = {o.agent.host: o.agent.id for o in self.registry.observations(self.agent_type)
                     if o.agent.agent_mode not in _LOCAL_ONLY_MODES}
        return HintView(known=routers.keys(), settled=routers.keys(), bindings=self.bindings,
                        agents_by_host=placeable)

    def refresh_resources(self, ids: Sequence[str]) -> None:
        routers = dict(self.routers)
        for rid in ids:
            try:
                routers[rid] = self.api.get_router(rid)
                hosts = frozenset(self.api.agents_for_router(rid))
            except NeutronError as err:
                if err.kind is not ErrorKind.NOT_FOUND:
                    raise
                routers.pop(rid, None)  # deleted
                hosts = frozenset()
            if hosts:
                self.bindings[rid] = hosts
            else:
                self.bindings.pop(rid, None)
        self.routers = routers

    # -- hooks ---------------------------------------------------------------------------------------
    def reconcile_resources(self, agents: list[Agent]) -> None:
        routers = {r.id: r for r in self.api.list_routers()}
        bindings: dict[str, set[str]] = {}
        for agent in agents:
            for rid in self.api.routers_on_agent(agent.id):
                bindings.setdefault(rid, set()).add(agent.id)
        self.routers = routers
        self.bindings = {rid: frozenset(hosts) for rid, hosts in bindings.items()}

    def wants_action(self, judged: dict[str, Judged]) -> bool:
        dead = {aid for aid, j in judged.items() if j.verdict is Verdict.DEAD}
        if dead and any(hosts & dead for hosts in self.bindings.values()):
            return True
        if not self.policy.schedule_unhosted:
            return False
        # Every idle check scans every router: skip the hosted ones with one set operation each.
        central = {aid for aid, j in judged.items() if hosts_snat(j.agent)}
        nobody: frozenset[str] = frozenset()
        return any(
            not (self.bindings.get(r.id, nobody) & central) and self._unhosted(r, judged)
            for r in self.routers.values()
        )

    def _unhosted(self, router: Router, judged: dict[str, Judged]) -> bool:
        if router.distributed or (router.ha and self.policy.skip_ha_routers):
            return False
        # Bound to no agent at all (one bound only to dvr agents cannot be moved: see deciding.l3).
        return not self.bindings.get(router.id)

    def refresh_for(self, dead: list[Agent]) -> None:
        for agent in dead:
            fresh = set(self.api.routers_on_agent(agent.id))
            if fresh - self.routers.keys():
                # Routers newer than our cache: without their details (HA? distributed?) the planner
                # leaves them alone; a reconcile now brings them into the next pass.
                self.request_reconcile()
            for rid, hosts in list(self.bindings.items()):
                if agent.id in hosts and rid not in fresh:
                    self.bindings[rid] = hosts - {agent.id}
            for rid in fresh:
                self.bindings[rid] = self.bindings.get(rid, frozenset()) | {agent.id}

    def plan(self, judged: dict[str, Judged], unfenced: frozenset[str] = frozenset()) -> Plan:
        policy = replace(self.policy, brake=self.brake_policy())
        return plan_l3(judged, self.routers, self.bindings, policy, self.refusals.pairs(), unfenced,
                       self._young_unhosted())

    def _young_unhosted(self) -> frozenset[str]:
        """The routers hosted by no agent for less than ``unhosted_grace``: maybe in the middle of a move
        made by someone else (between its unbind and its bind); they are scheduled only if they stay so."""
        now = self.clock()
        since = self._unhosted_since
        self._unhosted_since = {rid: since.get(rid, now) for rid in self.routers if not self.bindings.get(rid)}
        grace = self.timing.unhosted_grace
        return frozenset(rid for rid, t in self._unhosted_since.items() if now - t < grace)

    def fold(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            a = o.action
            if o.status is not OutcomeStatus.DONE:
                continue
            hosts = set(self.bindings.get(a.resource_id, frozenset()))
            # A move leaves its source; an unbind (the readiness follow-up's) leaves the target that failed.
            if a.kind in (ActionKind.MOVE_ROUTER, ActionKind.UNBIND_ROUTER) and a.source is not None:
                hosts.discard(a.source.id)
            if a.target is not None:
                hosts.add(a.target.id)
            if hosts:
                self.bindings[a.resource_id] = frozenset(hosts)
            else:
                self.bindings.pop(a.resource_id, None)
