"""After a failover the real daemon follows the moved routers until their ports are up on the new hosts.

Routers with an interface on a tenant network and a gateway on a flat external network, on a real
neutron-server. The fake agents work as real ones do: the L3 agent answers ``router_added_to_agent``
with ``sync_routers`` (the server binds the router's ports to its host), the host's OVS agent then
reports them up with ``update_device_list`` (the server marks them ACTIVE), each after a delay set per
host. A "broken" host answers RPC but never syncs: its routers never come up there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.rpcd import Daemons, RpcDaemon
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.router_ports import Topology
from tests.harness.seed import SeedClient
from tests.kit.audit import read_audit
from tests.kit.metrics import total
from tests.kit.poll import wait_until

from rpcdaemon.model import DHCP_AGENT, L3_AGENT

pytestmark = pytest.mark.e2e

ROUTERS = 12  # with a gateway and an interface each: seeding and teardown cost about 2 s a router
READY_ONE = re.compile(r"L3Agent: router (\S+) ready on (\S+) \(\S+\) in ([\d.]+)s")
READY_MANY = re.compile(r"L3Agent: (\d+) routers ready on (\S+) \(\S+\) in ([\d.]+)s median, ([\d.]+)s max")


@pytest.fixture
def topology(rest: SeedClient) -> Iterator[Topology]:
    topo = Topology(rest)
    yield topo
    topo.teardown()  # before ``rest`` deletes the routers and networks


def l3_hosts(fleet: Fleet, neutron: NeutronServer, names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """L3 + OVS agents (the OVS agent lets ML2 bind ports on the host); short name -> agent id, host."""
    hosts = {name: fleet.add_host(name, l3=True, dhcp=False, ovs=True) for name in names}
    ids = fleet.wait_registered(neutron.url, timeout=30)
    return {name: ids[(host, L3_AGENT)] for name, host in hosts.items()}, hosts


def ready_times(daemon: RpcDaemon) -> tuple[int, list[float]]:
    """Routers the daemon logged ready, and each logged time (a summary line gives its median and max)."""
    log = daemon.log()
    count, times = 0, []
    for m in READY_ONE.finditer(log):
        count += 1
        times.append(float(m.group(3)))
    for m in READY_MANY.finditer(log):
        count += int(m.group(1))
        times += [float(m.group(3)), float(m.group(4))]
    return count, times


def test_moved_routers_are_logged_ready_once_their_ports_are_active_on_the_new_hosts(
    neutron: NeutronServer, fleet: Fleet, topology: Topology, rpcdaemon: Daemons, tmp_path: Path
) -> None:
    l3, hosts = l3_hosts(fleet, neutron, ["dying", "b", "c"])
    for name in ("b", "c"):
        fleet.set_host(name, sync_delay=1.0, up_delay=1.0)
    topology.create_networks("ready")
    topology.add_routers(l3["dying"], ROUTERS, "ready")
    wait_until(lambda: topology.up_on({hosts["dying"]}), 30, "the seeded routers' ports ACTIVE on the dying host")
    assert fleet.status("dying", "l3").configurations["routers"] == ROUTERS
    assert fleet.status("dying", "l3").configurations["ex_gw_ports"] == ROUTERS

    audit = tmp_path / "audit.log"
    daemon = rpcdaemon.start(rpcdaemon.config(l3={"ready_timeout": 60}, daemon={"audit_log": audit}))
    daemon.wait_ready()
    fleet.crash("dying")
    crashed = time.monotonic()
    placed = wait_until(lambda: topology.up_on({hosts["b"], hosts["c"]}), neutron.agent_down_time + 40,
                        "every router's ports ACTIVE on a live host", daemon.hint)
    all_up = time.monotonic() - crashed
    assert sorted(list(placed.values()).count(hosts[n]) for n in ("b", "c")) == [ROUTERS // 2] * 2

    wait_until(lambda: ready_times(daemon)[0] >= ROUTERS, 15, f"{ROUTERS} routers logged ready", daemon.hint)
    count, times = ready_times(daemon)
    assert count == ROUTERS, daemon.hint()
    # Sync 1 s + up 1 s on the targets, read back once a second: ready a few seconds after the move, not at once.
    assert all(1.5 <= t <= 30 for t in times), (times, daemon.hint())
    wait_until(lambda: _metric(daemon, "rpcdaemon_time_to_ready_seconds_count") == ROUTERS, 10,
               "the time-to-ready histogram", daemon.hint)
    assert _metric(daemon, "rpcdaemon_not_ready_total") == 0
    b = fleet.status("b", "l3").configurations
    assert (b["routers"], b["interfaces"], b["ex_gw_ports"]) == (ROUTERS // 2,) * 3, b
    print(f"\nreadiness: {ROUTERS} routers' ports ACTIVE on live hosts {all_up:.1f} s after the crash; "
          f"logged times to ready {min(times):.1f}-{max(times):.1f} s")
    assert daemon.tracebacks() == []
    # The audit trail tells the same story, each line valid against the shipped schema.
    lines = read_audit(audit)
    assert lines[0]["event"] == "start"
    dead = [x for x in lines if x["event"] == "verdict" and x["agent_id"] == l3["dying"] and x["to"] == "dead"]
    assert [x["host"] for x in dead] == [hosts["dying"]], lines
    moves = [x for x in lines if x["event"] == "action"]
    assert len(moves) == ROUTERS, moves
    assert {(x["kind"], x["status"], x["from_id"], x["from_host"]) for x in moves} == {
        ("move-router", "done", l3["dying"], hosts["dying"])}
    assert {x["to_id"] for x in moves} == {l3["b"], l3["c"]}
    assert lines.index(dead[0]) < lines.index(moves[0])
    ready = {x["resource_id"]: x for x in lines if x["event"] == "ready"}
    assert ready.keys() == {x["resource_id"] for x in moves}
    assert all(r["ready"] and 1.5 <= r["seconds"] <= 30 for r in ready.values()), ready


def test_a_broken_target_is_a_warning_and_move_unready_moves_its_routers_on(
    neutron: NeutronServer, fleet: Fleet, topology: Topology, rpcdaemon: Daemons
) -> None:
    l3, hosts = l3_hosts(fleet, neutron, ["dying", "broken", "good"])
    fleet.set_host("broken", broken=True)
    topology.create_networks("unready")
    routers = topology.add_routers(l3["dying"], 4, "unready")
    wait_until(lambda: topology.up_on({hosts["dying"]}), 30, "the seeded routers' ports ACTIVE on the dying host")

    daemon = rpcdaemon.start(rpcdaemon.config(l3={"ready_timeout": 6, "move_unready": True}))
    daemon.wait_ready()
    fleet.crash("dying")
    placed = wait_until(lambda: topology.up_on({hosts["good"]}), neutron.agent_down_time + 60,
                        "every router up on the good host", daemon.hint)
    assert set(placed) == set(routers)
    warned = re.findall(rf"WARNING.*router (\S+) not ready on {re.escape(hosts['broken'])} ", daemon.log())
    assert len(warned) == 2, daemon.hint()  # the two the planner first gave the broken host
    assert _metric(daemon, "rpcdaemon_not_ready_total") == 2
    assert re.search(rf"unbound router \S+ from {re.escape(hosts['broken'])}", daemon.log())
    assert set(topology.rest.routers_on_agent(l3["good"])) == set(routers)
    assert topology.rest.routers_on_agent(l3["broken"]) == []
    assert daemon.tracebacks() == []


def _metric(daemon: RpcDaemon, name: str) -> float:
    return total(daemon.metrics(), name, plugin="L3Agent")


def test_a_moved_dhcp_network_is_ready_once_its_dhcp_port_is_active_on_the_new_host(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    hosts = {name: fleet.add_host(name, l3=False, dhcp=True, ovs=True) for name in ("dying", "b")}
    ids = fleet.wait_registered(neutron.url, timeout=30)
    dhcp = {name: ids[(host, DHCP_AGENT)] for name, host in hosts.items()}
    network = rest.create_network("ready-dhcp", cidr="10.30.0.0/24").id
    for agent_id in rest.agents_for_network(network):  # Neutron's scheduler may have placed it meanwhile
        rest.unbind_network(agent_id, network)
    rest.bind_network(dhcp["dying"], network)

    def dhcp_port_on(host: str) -> bool:
        ports = rest.request("GET", f"/ports?network_id={network}&device_owner=network:dhcp")["ports"]
        return any(p["binding:host_id"] == host and p["status"] == "ACTIVE" for p in ports)

    wait_until(lambda: dhcp_port_on(hosts["dying"]), 30, "the DHCP port ACTIVE on the dying host")
    # The fake agent counts the network in its next report_state (every report_interval), which may come
    # after the port went ACTIVE: wait for that report rather than read the count at once.
    wait_until(lambda: fleet.status("dying", "dhcp").configurations["networks"] == 1, 30,
               "the dying host's DHCP agent to report the network")
    daemon = rpcdaemon.start(rpcdaemon.config(plugins=["DHCPAgent"],
                                              dhcp={"ready_timeout": 60, "agents_per_network": 1}))
    daemon.wait_ready()
    fleet.crash("dying")
    line = daemon.wait_log(rf"DHCPAgent: network {network} ready on {re.escape(hosts['b'])} \(\S+\) in ([\d.]+)s",
                           timeout=neutron.agent_down_time + 40)
    assert dhcp_port_on(hosts["b"])
    assert 0.5 <= float(line.group(1)) <= 30
    assert fleet.status("b", "dhcp").configurations["networks"] == 1
    assert sum(v for labels, v in daemon.metrics().get("rpcdaemon_time_to_ready_seconds_count", [])
               if labels.get("plugin") == "DHCPAgent") == 1
    assert daemon.tracebacks() == []
