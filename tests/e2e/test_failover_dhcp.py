"""The real daemon keeps DHCP networks on live DHCP agents of a real neutron-server, per policy.

Networks leave a dead DHCP agent and are hosted ``agents_per_network = all`` (every live agent) or
``= 2``; a network created while the daemon runs is hosted too (Neutron's notifications on the bus,
with a short ``reconcile_interval`` as the fallback), and a deleted one leaves no binding behind.
The fake DHCP agents have no L2 agent beside them, so Neutron's own scheduler never places networks:
every binding seen here is the test's or the daemon's.
"""

from __future__ import annotations

import time

import pytest
from tests.e2e.rpcd import Daemons, RpcDaemon, add_hosts, hosts_of, networks_by_agent
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.poll import wait_until

pytestmark = pytest.mark.e2e

RECONCILE = 5  # seconds: a new network is hosted within one reconcile even without notifications


def start_daemon(rpcdaemon: Daemons, per_network: str) -> RpcDaemon:
    config = rpcdaemon.config(plugins=["DHCPAgent"],
                              dhcp={"agents_per_network": per_network, "reconcile_interval": RECONCILE})
    daemon = rpcdaemon.start(config)
    daemon.wait_ready()
    return daemon


def wait_placement(rest: SeedClient, agents: dict[str, str], networks: list[str], names: set[str],
                   daemon: RpcDaemon, timeout: float, what: str) -> float:
    """Seconds until every network is hosted by exactly the agents of the named hosts."""
    wanted = {agents[name] for name in names}
    began = time.monotonic()

    def matches() -> bool:
        hosts = hosts_of(networks_by_agent(rest, agents.values()))
        return all(hosts.get(net, set()) == wanted for net in networks)

    wait_until(matches, timeout, what, lambda: f"\nwanted every network on {sorted(names)}{daemon.hint()}")
    return time.monotonic() - began


def check_new_and_deleted_network(rest: SeedClient, agents: dict[str, str], daemon: RpcDaemon,
                                  expect_hosts: int, live: list[str]) -> None:
    """A network created now is hosted by ``expect_hosts`` live agents; a deleted one by nobody."""
    began = time.monotonic()
    new = rest.create_network("dhcp-new-during-run", cidr="10.9.0.0/24", keep_auto_bindings=True, settle=0)

    def hosted() -> set[str] | None:
        hosts = set(rest.agents_for_network(new.id))
        return hosts if len(hosts) >= expect_hosts else None

    hosts = wait_until(hosted, RECONCILE + 10, "the new network to be hosted", daemon.hint)
    print(f"new network hosted {time.monotonic() - began:.1f} s after its creation")
    assert len(hosts) == expect_hosts
    assert hosts <= {agents[name] for name in live}

    rest.delete_network(new.id)
    daemon.wait_log(rf"network {new.id} deleted", timeout=10)  # the daemon heard it on the bus
    daemon.wait_passes(2)  # two checks: the daemon must not try to host it again
    assert not any(new.id in nets for nets in networks_by_agent(rest, agents.values()).values())
    assert [a for a in daemon.actions() if a.resource_id == new.id and a.status == "failed"] == []


def test_policy_all_networks_leave_a_dead_agent_and_stay_on_every_live_one(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    dhcp = add_hosts(fleet, neutron, ["dying", "b", "c"], kind="dhcp")
    networks = [rest.create_network(f"dhcp-all-{i}", cidr=f"10.1.{i}.0/24").id for i in range(4)]
    daemon = start_daemon(rpcdaemon, "all")
    # "all": the daemon first hosts every network on every live agent.
    wait_placement(rest, dhcp, networks, {"dying", "b", "c"}, daemon, 20,
                   "every network on every agent")

    crashed = time.monotonic()
    fleet.crash("dying")
    wait_placement(rest, dhcp, networks, {"b", "c"}, daemon, neutron.agent_down_time + 15,
                   "the networks to leave the dead agent")
    print(f"\nDHCP (all): {len(networks)} networks off the dead agent {time.monotonic() - crashed:.1f} s "
          "after the crash")

    check_new_and_deleted_network(rest, dhcp, daemon, expect_hosts=2, live=["b", "c"])
    removed = [a for a in daemon.actions(statuses={"done"}) if a.kind == "unbind-network" and "dying" in a.line]
    assert sorted(a.resource_id for a in removed) == sorted(networks), daemon.hint()
    assert daemon.actions(statuses={"failed"}) == []
    assert daemon.tracebacks() == []


def test_policy_two_per_network_replaces_the_dead_host_by_the_least_loaded(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    dhcp = add_hosts(fleet, neutron, ["dying", "b", "c", "d"], kind="dhcp")
    others = ["b", "c", "d"]
    networks = [rest.create_network(f"dhcp-two-{i}", cidr=f"10.2.{i}.0/24").id for i in range(6)]
    for i, net in enumerate(networks):  # each on the doomed agent plus one other, 2 per other agent
        rest.bind_network(dhcp["dying"], net)
        rest.bind_network(dhcp[others[i % 3]], net)
    daemon = start_daemon(rpcdaemon, "2")
    daemon.wait_passes(2)  # two checks: two hosts per network already, nothing to do
    assert daemon.actions() == [], daemon.hint()

    crashed = time.monotonic()
    fleet.crash("dying")

    def replaced() -> dict[str, set[str]] | None:
        hosts = hosts_of(networks_by_agent(rest, dhcp.values()))
        done = all(dhcp["dying"] not in hosts.get(n, set()) and len(hosts.get(n, set())) == 2 for n in networks)
        return hosts if done else None

    hosts = wait_until(replaced, neutron.agent_down_time + 15, "two live agents per network", daemon.hint)
    print(f"\nDHCP (2 per network): {len(networks)} networks re-hosted {time.monotonic() - crashed:.1f} s "
          "after the crash")
    for i, net in enumerate(networks):
        assert dhcp[others[i % 3]] in hosts[net]  # the live host it had is kept
    # Least-loaded first, one network at a time: 12 bindings end 4/4/4 or, in an unlucky order of the
    # networks, 5/4/3 (greedy, not optimal); a planner that ignored load would give 6/4/2 or worse.
    load = {name: sum(dhcp[name] in hosts[n] for n in networks) for name in others}
    assert max(load.values()) - min(load.values()) <= 2, f"unbalanced {load}{daemon.hint()}"

    check_new_and_deleted_network(rest, dhcp, daemon, expect_hosts=2, live=others)
    assert daemon.actions(statuses={"failed"}) == []
    assert daemon.tracebacks() == []
