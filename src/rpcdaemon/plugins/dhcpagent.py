"""The DHCPAgent plugin: networks leave dead DHCP agents and are hosted per policy on live ones.

Built by the service (or the demo); the service calls ``check()`` every ``check_interval`` and
``take`` (``on_network_deleted`` / ``on_network_changed`` / ``on_bus_hints``) when the bus says so. The
rules live in ``deciding.dhcp``; this module keeps the cached networks and bindings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rpcdaemon.acting.api import ErrorKind, NeutronError
from rpcdaemon.acting.resources import NETWORK
from rpcdaemon.broker.link import Subscription
from rpcdaemon.deciding.dhcp import DhcpPolicy, _eligible, plan_dhcp
from rpcdaemon.deciding.hints import Hint
from rpcdaemon.deciding.l3 import Plan
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.model import (
    DHCP_AGENT,
    ActionKind,
    Agent,
    BusHints,
    HintKind,
    Network,
    NetworkChanged,
    NetworkDeleted,
    Outcome,
    OutcomeStatus,
)
from rpcdaemon.plugins.base import FailoverPlugin
from rpcdaemon.plugins.bus_news import HintView
from rpcdaemon.plugins.hearing import HEARTBEAT_SUBSCRIPTIONS, NEUTRON_EXCHANGE, BusEvent, Hearing


class DHCPAgentPlugin(FailoverPlugin):
    name = "DHCPAgent"
    agent_type = DHCP_AGENT
    resource = NETWORK
    # Network life-cycle news on the heartbeats' queue: oslo notifications (when neutron-server has a
    # notification driver) and the server's casts to the DHCP agents' fanout; the casts to each DHCP agent.
    hears = Hearing(
        agents=(*HEARTBEAT_SUBSCRIPTIONS, Subscription(NEUTRON_EXCHANGE, "notifications.info"),
                Subscription("dhcp_agent_fanout", "", exchange_type="fanout", auto_delete=True)),
        casts=(Subscription(NEUTRON_EXCHANGE, "dhcp_agent.#"),),
    )

    def __init__(self, *args: Any, policy: DhcpPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy
        self.brake = policy.brake
        self.networks: dict[str, Network] = {}
        # network id -> ids of the DHCP agents hosting it
        self.bindings: dict[str, frozenset[str]] = {}

    # -- bus events (called from the bus thread: only flag, never call the API here) ------------
    def take(self, event: BusEvent) -> None:
        if isinstance(event, NetworkDeleted):
            self.on_network_deleted(event.network_id)
        elif isinstance(event, NetworkChanged):
            self.on_network_changed(event.network_id)
        elif isinstance(event, BusHints):
            self.on_bus_hints(event)

    def on_network_deleted(self, network_id: str) -> None:
        # Replace, never mutate: a check on the loop thread may be iterating the current dict.
        if network_id in self.networks:
            self.networks = {nid: n for nid, n in self.networks.items() if nid != network_id}
        self.log.info("network %s deleted; removing it from every DHCP agent", network_id)

    def on_network_changed(self, network_id: str | None = None) -> None:
        """A notification (network/subnet create/update/delete.end): re-read that network in the next
        pass, like a cast (a full reconcile per notification would cost O(agents) per event)."""
        if network_id is None:
            self.request_reconcile()
            return
        self.news.add([Hint(network_id, None, HintKind.CHANGED, "notification")])

    def on_bus_hints(self, hints: BusHints) -> None:
        """What a cast to a DHCP agent says, queued for the next pass."""
        if hints.networks:
            self.news.add([Hint(h.network_id, h.host, h.kind, h.method) for h in hints.networks])

    def hint_view(self) -> HintView:
        networks = self.networks
        return HintView(known=networks.keys(), settled={nid for nid, n in networks.items() if n.dhcp_enabled},
                        bindings=self.bindings)

    def refresh_resources(self, ids: Sequence[str]) -> None:
        networks = dict(self.networks)  # replaced, never mutated: the bus thread may replace it too
        for nid in ids:
            try:
                networks[nid] = self.api.get_network(nid)
            except NeutronError as err:
                if err.kind is not ErrorKind.NOT_FOUND:
                    raise
                networks.pop(nid, None)  # deleted: its bindings (if any are left) are cleaned up
            hosts = frozenset(self.api.agents_for_network(nid))
            if hosts:
                self.bindings[nid] = hosts
            else:
                self.bindings.pop(nid, None)
        self.networks = networks

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
            if any(_eligible(targets[t], net) and (nid, t) not in self.refusals for t in target_ids - keeping):
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

    def plan(self, judged: dict[str, Judged], unfenced: frozenset[str] = frozenset()) -> Plan:
        policy = replace(self.policy, brake=self.brake_policy())
        return plan_dhcp(judged, self.networks, self.bindings, policy, self.refusals.pairs(), unfenced)

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
