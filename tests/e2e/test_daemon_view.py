"""What the real daemon believes matches what the real neutron-server says, agent by agent.

The daemon judges liveness on its own (heartbeats heard on the bus, its own clock); Neutron judges from
the heartbeats its RPC server stores. Both look at the same agents, so after things settle they must
agree: the same agents (ids, types, hosts) listed, alive and dead alike. The daemon's view is read
from its Prometheus metrics (``rpcdaemon_agent_verdict``), Neutron's from ``GET /v2.0/agents``.
"""

from __future__ import annotations

import time

import pytest
from tests.e2e.rpcd import Daemons, RpcDaemon, seed_routers
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.poll import wait_until

from rpcdaemon.model import DHCP_AGENT, L3_AGENT

pytestmark = pytest.mark.e2e

# The daemon's verdicts that mean "alive" / "dead" in Neutron's terms; others are passing states.
AS_NEUTRON = {"alive": True, "warming": True, "dead": False}

View = dict[tuple[str, str, str], bool]  # (agent_type, host, agent_id) -> alive


def neutron_view(rest: SeedClient, fleet: Fleet) -> View:
    return {(a["agent_type"], a["host"], a["id"]): a["alive"] for a in rest.agents()
            if a["host"].startswith(fleet.prefix) and a["agent_type"] in (L3_AGENT, DHCP_AGENT)}


def daemon_view(daemon: RpcDaemon, fleet: Fleet) -> dict[tuple[str, str, str], str]:
    return {(labels["agent_type"], labels["host"], labels["agent_id"]): labels["verdict"]
            for labels, value in daemon.metrics().get("rpcdaemon_agent_verdict", [])
            if value == 1 and labels["host"].startswith(fleet.prefix)}


def wait_agreement(rest: SeedClient, fleet: Fleet, daemon: RpcDaemon, dead: set[tuple[str, str]],
                   timeout: float) -> View:
    """Until Neutron says exactly the ``dead`` (agent_type, host) agents are dead and the daemon's
    verdicts, mapped to alive/dead, say the same of the same agents; returns that view."""
    seen: dict[str, object] = {}

    def agree() -> View | None:
        theirs, ours = neutron_view(rest, fleet), daemon_view(daemon, fleet)
        seen.update(neutron=theirs, daemon=ours)
        if {(kind, host) for (kind, host, _), alive in theirs.items() if not alive} != dead:
            return None
        mapped = {key: AS_NEUTRON.get(verdict) for key, verdict in ours.items()}
        return theirs if mapped == theirs else None

    return wait_until(agree, timeout, "the daemon and Neutron to agree",
                      lambda: f"\nNeutron: {seen.get('neutron')}\ndaemon: {seen.get('daemon')}{daemon.hint()}")


def test_daemon_and_neutron_list_the_same_agents_alive_and_dead(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    hosts = [fleet.add_host(name, ovs=False) for name in ("a", "b", "c")]
    ids = fleet.wait_registered(neutron.url)
    # Work on the doomed host, so the daemon confirms its death with Neutron instead of leaving it
    # "suspect" until the next reconcile (an agent hosting nothing costs no API call).
    seed_routers(rest, ids[(hosts[0], L3_AGENT)], 2, prefix="view")
    network = rest.create_network("view-net")
    rest.bind_network(ids[(hosts[0], DHCP_AGENT)], network.id)
    daemon = rpcdaemon.start(rpcdaemon.config(plugins=["L3Agent", "DHCPAgent"]))
    daemon.wait_ready(plugins=2)

    view = wait_agreement(rest, fleet, daemon, set(), timeout=10)
    assert len(view) == 6
    assert all(view.values())
    assert {key[2] for key in view} == {ids[(h, t)] for h in hosts for t in (L3_AGENT, DHCP_AGENT)}

    crashed = time.monotonic()
    fleet.crash(hosts[0])  # its L3 and DHCP agents
    dead = {(L3_AGENT, hosts[0]), (DHCP_AGENT, hosts[0])}
    view = wait_agreement(rest, fleet, daemon, dead, timeout=neutron.agent_down_time + 15)
    print(f"\nboth say dead {time.monotonic() - crashed:.1f} s after the crash")
    assert len(view) == 6
    assert sum(not alive for alive in view.values()) == 2

    # The dashboard metrics tell the same story: the dead host's routers and network gone from it, each live L3
    # agent's routers as Neutron binds them, and heartbeat ages on the daemon's clock past agent_down_time for
    # the dead agents only.
    def hosted_as_neutron() -> dict[tuple[str, str], float] | None:
        ours = {(labels["agent_type"], labels["host"]): value
                for labels, value in daemon.metrics().get("rpcdaemon_agent_resources", [])
                if labels["host"].startswith(fleet.prefix)}
        routers = {(L3_AGENT, h): float(len(rest.routers_on_agent(ids[(h, L3_AGENT)]))) for h in hosts}
        done = ours.get((L3_AGENT, hosts[0])) == 0 and ours.get((DHCP_AGENT, hosts[0])) == 0
        return ours if done and routers == {k: v for k, v in ours.items() if k[0] == L3_AGENT} else None

    hosted = wait_until(hosted_as_neutron, 30, "rpcdaemon_agent_resources to match Neutron", daemon.hint)
    print(f"rpcdaemon_agent_resources as Neutron says {time.monotonic() - crashed:.1f} s after the crash")
    assert sum(v for (kind, _), v in hosted.items() if kind == L3_AGENT) == 2
    ages = {(labels["agent_type"], labels["host"]): value
            for labels, value in daemon.metrics().get("rpcdaemon_agent_heartbeat_age_seconds", [])
            if labels["host"].startswith(fleet.prefix)}
    assert {key for key, age in ages.items() if age > neutron.agent_down_time} == dead, ages
    assert len(ages) == 6
    assert daemon.tracebacks() == []
