"""The L3Agent plugin: routers hosted by dead L3 agents move to live ones.

Built by the service (or the demo) with the shared registry, executor and Neutron adapter; the
service calls ``check()`` every ``check_interval``. The rules live in ``deciding.l3``; this module only
keeps the cached view of routers and bindings that the planner reads.
"""

from __future__ import annotations

from typing import Any

from rpcdaemon.deciding.l3 import L3Policy, Plan, hosts_snat, plan_l3
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.model import L3_AGENT, ActionKind, Agent, Outcome, OutcomeStatus, Router
from rpcdaemon.plugins.base import FailoverPlugin


class L3AgentPlugin(FailoverPlugin):
    name = "L3Agent"
    agent_type = L3_AGENT

    def __init__(self, *args: Any, policy: L3Policy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy
        self.brake = policy.brake
        self.routers: dict[str, Router] = {}
        # router id -> ids of the L3 agents hosting it
        self.bindings: dict[str, frozenset[str]] = {}

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
        hosts = self.bindings.get(router.id, frozenset())
        return not any(h not in judged or hosts_snat(judged[h].agent) for h in hosts)

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

    def plan(self, judged: dict[str, Judged]) -> Plan:
        return plan_l3(judged, self.routers, self.bindings, self.policy)

    def fold(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            a = o.action
            if o.status is not OutcomeStatus.DONE or a.target is None:
                continue
            hosts = set(self.bindings.get(a.resource_id, frozenset()))
            if a.kind is ActionKind.MOVE_ROUTER and a.source is not None:
                hosts.discard(a.source.id)
            hosts.add(a.target.id)
            self.bindings[a.resource_id] = frozenset(hosts)
