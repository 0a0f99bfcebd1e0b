"""The DHCPAgent plugin: networks leave dead DHCP agents and are hosted per policy on live ones.

Built by the service (or the demo); the service calls ``check()`` every ``check_interval`` and
``on_network_deleted`` / ``on_network_changed`` when the bus says so. The rules live in
``deciding.dhcp``; this module keeps the cached networks and bindings.
"""

from __future__ import annotations

from typing import Any

from rpcdaemon.deciding.dhcp import DhcpPolicy, _eligible, plan_dhcp
from rpcdaemon.deciding.l3 import Plan
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.model import DHCP_AGENT, ActionKind, Agent, Network, Outcome, OutcomeStatus
from rpcdaemon.plugins.base import FailoverPlugin


class DHCPAgentPlugin(FailoverPlugin):
    name = "DHCPAgent"
    agent_type = DHCP_AGENT

    def __init__(self, *args: Any, policy: DhcpPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy
        self.brake = policy.brake
        self.networks: dict[str, Network] = {}
        # network id -> ids of the DHCP agents hosting it
        self.bindings: dict[str, frozenset[str]] = {}

    # -- bus events (called from the bus thread: only flag, never call the API here) ------------
    def on_network_deleted(self, network_id: str) -> None:
        # Replace, never mutate: a check on the loop thread may be iterating the current dict.
        if network_id in self.networks:
            self.networks = {nid: n for nid, n in self.networks.items() if nid != network_id}
        self.log.info("network %s deleted; removing it from every DHCP agent", network_id)

    def on_network_changed(self) -> None:
        self.request_reconcile()

    # -- hooks ---------------------------------------------------------------------------------------
    def reconcile_resources(self, agents: list[Agent]) -> None:
        networks = {n.id: n for n in self.api.list_networks()}
        bindings: dict[str, set[str]] = {}
        for agent in agents:
            for nid in self.api.networks_on_agent(agent.id):
                bindings.setdefault(nid, set()).add(agent.id)
        self.networks = networks
        self.bindings = {nid: frozenset(hosts) for nid, hosts in bindings.items()}

    def wants_action(self, judged: dict[str, Judged]) -> bool:
        dead = {aid for aid, j in judged.items() if j.verdict is Verdict.DEAD}
        if not self.bindings.keys() <= self.networks.keys():
            return True  # a network was deleted: clean-up
        if dead and any(hosts & dead for hosts in self.bindings.values()):
            return True
        targets = {j.agent.id: j.agent for j in judged.values() if j.is_target}
        if not targets:
            return False
        target_ids = frozenset(targets)  # a frozenset: its subset test is twice as fast as a keys view's
        want = self.policy.agents_per_network
        nobody: frozenset[str] = frozenset()
        # Every idle check scans every network: set operations, and the per-target test only for the
        # targets missing from a network (with "all", that is usually none).
        for nid, net in self.networks.items():
            if not net.dhcp_enabled:
                continue
            hosts = self.bindings.get(nid, nobody)
            keeping = hosts - dead if dead else hosts
            if want is not None and len(keeping) >= want:
                continue
            if target_ids <= keeping:
                continue
            if any(_eligible(targets[t], net) for t in target_ids - keeping):
                return True
        return False

    def refresh_for(self, dead: list[Agent]) -> None:
        for agent in dead:
            fresh = set(self.api.networks_on_agent(agent.id))
            for nid, hosts in list(self.bindings.items()):
                if agent.id in hosts and nid not in fresh:
                    self.bindings[nid] = hosts - {agent.id}
            for nid in fresh:
                self.bindings[nid] = self.bindings.get(nid, frozenset()) | {agent.id}

    def plan(self, judged: dict[str, Judged]) -> Plan:
        return plan_dhcp(judged, self.networks, self.bindings, self.policy)

    def fold(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            a = o.action
            if o.status is not OutcomeStatus.DONE:
                continue
            hosts = set(self.bindings.get(a.resource_id, frozenset()))
            if a.kind is ActionKind.UNBIND_NETWORK and a.source is not None:
                hosts.discard(a.source.id)
            elif a.kind is ActionKind.BIND_NETWORK and a.target is not None:
                hosts.add(a.target.id)
            if hosts:
                self.bindings[a.resource_id] = frozenset(hosts)
            else:
                self.bindings.pop(a.resource_id, None)
