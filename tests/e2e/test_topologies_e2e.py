"""DVR, HA and availability zones: the real daemon against the real neutron-server, on the session's
one server (its stock scheduler settings: an admin may create ``distributed`` and ``ha`` routers, and
zone hints need nothing more than agents reporting those zones).

What the real server does here (Neutron 29, verified by these tests and ``tests/contract_cases.py``):

- a distributed router's SNAT part binds only to a ``dvr_snat`` agent (legacy agent: 409
  RouterL3AgentMismatch; ``dvr`` agent: 409 DVRL3CannotAssignToDvrAgent); a ``dvr`` agent refuses every
  manual unbind (409 DVRL3CannotRemoveFromDvrAgent). A binding on a ``dvr`` agent exists only when the
  agent's mode changed after the bind; such a router can be neither unbound nor bound elsewhere (409
  RouterHostedByL3Agent), so the daemon leaves it alone instead of failing at it every pass;
- an HA router is scheduled by Neutron at creation onto up to ``max_l3_agents_per_router`` (3) agents,
  and an admin may bind it to more or unbind it from any of them;
- zone hints are enforced only by Neutron's own scheduler: a manual bind across zones is accepted
  (201), so keeping moves in the zone is the daemon's job;
- an agent with ``router_id`` set, or with ``handle_internal_only_routers = false``, refuses other
  routers (routers without gateway) with 404 InvalidL3Agent; the daemon reads both options from the
  agent's listed configurations and never offers it those routers.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
from tests.e2e.rpcd import Daemons, RpcDaemon, routers_by_agent, wait_alive_in_neutron
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.poll import wait_until

from rpcdaemon.model import DHCP_AGENT, L3_AGENT

pytestmark = pytest.mark.e2e

_TARGET = re.compile(r" to (\S+) \(")


def add(
    fleet: Fleet, neutron: NeutronServer, hosts: dict[str, dict[str, Any]], *, dhcp: bool = False
) -> dict[str, str]:
    """Start one L3 agent (and a DHCP agent with ``dhcp``) per host, with ``add_host`` options;
    short name -> L3 agent id (DHCP agent ids under ``<name>/dhcp``) once Neutron lists them alive."""
    full = {name: fleet.add_host(name, dhcp=dhcp, ovs=False, **options) for name, options in hosts.items()}
    ids = fleet.wait_registered(neutron.url, timeout=30)
    out = {name: ids[(host, L3_AGENT)] for name, host in full.items()}
    if dhcp:
        out |= {f"{name}/dhcp": ids[(host, DHCP_AGENT)] for name, host in full.items()}
    return out


def targets_of(daemon: RpcDaemon) -> list[str]:
    """The target host of every action line, in order."""
    return [m.group(1) for a in daemon.actions() if (m := _TARGET.search(a.line))]


def settle(daemon: RpcDaemon, seconds: float) -> None:
    """Let the daemon run a few more checks (the log must then show nothing more)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert daemon.running, daemon.hint()
        time.sleep(0.25)


def only_bound(rest: SeedClient, routers: Iterable[str], agent_ids: Iterable[str]) -> bool:
    wanted = set(agent_ids)
    return all(set(rest.agents_for_router(r)) <= wanted and rest.agents_for_router(r) for r in routers)


def test_dvr_snat_moves_only_to_dvr_snat_and_dvr_agents_are_left_alone(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    # "switched" hosts a legacy router while it is a legacy agent, then restarts in dvr mode: the
    # binding stays, and Neutron refuses to remove it (DVRL3CannotRemoveFromDvrAgent).
    l3 = add(fleet, neutron, {"snat1": {"agent_mode": "dvr_snat"}, "snat2": {"agent_mode": "dvr_snat"},
                              "dvr1": {"agent_mode": "dvr"}, "switched": {}})
    stuck = rest.create_router("dvr-stuck")
    rest.bind_router(l3["switched"], stuck)
    fleet.remove("switched")
    add(fleet, neutron, {"switched": {"agent_mode": "dvr"}})
    wait_until(lambda: rest.agent(l3["switched"])["configurations"]["agent_mode"] == "dvr", 10,
               "the switched agent to report dvr mode")
    assert rest.agents_for_router(stuck) == [l3["switched"]]
    distributed = [rest.create_router(f"dvr-{i}", distributed=True) for i in range(6)]
    rest.bind_routers_bulk(l3["snat1"], distributed)

    # Two of four L3 agents die at once: a share the default brake (0.5) would hold.
    daemon = rpcdaemon.start(rpcdaemon.config(l3={"max_dead_fraction": 0.75}))
    daemon.wait_ready()
    crashed = time.monotonic()
    fleet.crash("snat1")
    fleet.crash("switched")
    wait_until(lambda: only_bound(rest, distributed, [l3["snat2"]]), neutron.agent_down_time + 20,
               "every distributed router's SNAT on snat2", daemon.hint)
    print(f"\nDVR: {len(distributed)} SNAT bindings on the other dvr_snat agent "
          f"{time.monotonic() - crashed:.1f} s after the crash")
    wait_alive_in_neutron(rest, [l3["switched"]], False, timeout=neutron.agent_down_time + 5)
    settle(daemon, 6)  # a few more checks and a retry reconcile's worth of time

    assert rest.agents_for_router(stuck) == [l3["switched"]]  # left alone: nothing Neutron would allow
    assert rest.routers_on_agent(l3["dvr1"]) == []
    assert set(targets_of(daemon)) == {fleet.host("snat2")}, daemon.hint()
    assert [(a.kind, a.status) for a in daemon.actions()] == [("move-router", "done")] * 6, daemon.hint()
    log = daemon.log()
    assert "DVRL3CannotRemoveFromDvrAgent" not in log
    assert "RouterHostedByL3Agent" not in log
    assert daemon.tracebacks() == []


def test_ha_routers_are_left_to_vrrp_and_moved_only_when_every_member_is_dead(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    began = time.monotonic()
    l3 = add(fleet, neutron, {"a": {}, "b": {}})
    ha = [rest.create_router(f"ha-{i}", ha=True) for i in range(2)]  # Neutron makes a and b the members
    members = {router: {l3["a"], l3["b"]} for router in ha}
    assert {r: set(rest.agents_for_router(r)) for r in ha} == members
    l3 |= add(fleet, neutron, {"c": {}, "d": {}})
    print(f"\nHA: 4 agents and {len(ha)} HA routers in {time.monotonic() - began:.1f} s")

    # Side by side on the same cloud: skip_ha_routers = true (the default) and false. Two of four
    # agents will be dead at the end, a share the default brake (0.5) would hold.
    keep = rpcdaemon.start(rpcdaemon.config("skip-ha", l3={"max_dead_fraction": 0.75}))
    move = rpcdaemon.start(rpcdaemon.config("move-ha", l3={"skip_ha_routers": False, "max_dead_fraction": 0.75}))
    keep.wait_ready()
    move.wait_ready()
    # One member dies: VRRP's business (b takes over), neither daemon does anything.
    fleet.crash("a")
    wait_alive_in_neutron(rest, [l3["a"]], False, timeout=neutron.agent_down_time + 5)
    settle(move, 3)
    assert keep.actions() == [], keep.hint()
    assert move.actions() == [], move.hint()
    assert {r: set(rest.agents_for_router(r)) for r in ha} == members
    print(f"HA: one member dead, nothing moved, at {time.monotonic() - began:.1f} s")

    # Every member dead: with skip_ha_routers = false one dead member's binding is replaced by a live
    # agent (Neutron accepts an HA router on any number of agents); the default leaves it to the operator.
    fleet.crash("b")
    live = {l3["c"], l3["d"]}
    wait_until(lambda: all(set(rest.agents_for_router(r)) & live for r in ha), neutron.agent_down_time + 20,
               "every HA router to gain a live member", move.hint)
    print(f"HA: every router has a live member again at {time.monotonic() - began:.1f} s")
    settle(move, 3)
    placed = {r: set(rest.agents_for_router(r)) for r in ha}
    for router, hosts in placed.items():
        assert len(hosts & live) == 1, (router, hosts)
        assert len(hosts) == 2  # one dead member unbound, one live agent bound
    assert sorted(len([r for r in ha if agent in placed[r]]) for agent in live) == [1, 1]
    assert [(a.kind, a.status) for a in move.actions()] == [("move-router", "done")] * len(ha), move.hint()
    assert keep.actions() == [], keep.hint()
    assert move.tracebacks() == keep.tracebacks() == []


def test_moves_stay_in_the_zone_while_it_has_a_live_target(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    ids = add(fleet, neutron, {"az1-a": {"az": "az1"}, "az1-b": {"az": "az1"}, "az2-a": {"az": "az2"}}, dhcp=True)
    routers = [rest.create_router(f"az-r{i}", az_hints=["az1"]) for i in range(4)]
    rest.bind_routers_bulk(ids["az1-a"], routers)
    networks = [rest.create_network(f"az-n{i}", cidr=f"10.9.{i}.0/24", az_hints=["az1"]).id for i in range(2)]
    for network in networks:
        rest.bind_network(ids["az1-a/dhcp"], network)
    # az2-a is the lightest agent: only the hints keep the routers and networks off it.
    daemon = rpcdaemon.start(rpcdaemon.config(plugins=("L3Agent", "DHCPAgent"),
                                              agent={"max_dead_fraction": 0.9},
                                              dhcp={"agents_per_network": 1}))
    daemon.wait_ready(plugins=2)

    fleet.crash("az1-a")
    wait_until(lambda: only_bound(rest, routers, [ids["az1-b"]])
               and all(rest.agents_for_network(n) == [ids["az1-b/dhcp"]] for n in networks),
               neutron.agent_down_time + 20, "routers and networks on az1-b", daemon.hint)
    assert set(targets_of(daemon)) <= {fleet.host("az1-b")}, daemon.hint()

    # az1 has no live agent left: nothing spills into az2. Routers stay on their dead agent; the dead
    # DHCP agent's networks are removed from it and wait (a live agent in az1 gets them later).
    fleet.crash("az1-b")
    daemon.wait_log(r"routers have no live eligible L3 agent \(mode or availability zone\)",
                    timeout=neutron.agent_down_time + 20)
    daemon.wait_log(r"networks have fewer live eligible DHCP agents than agents_per_network", timeout=10)
    wait_until(lambda: all(rest.agents_for_network(n) == [] for n in networks), 10,
               "the networks to leave the dead DHCP agent", daemon.hint)
    settle(daemon, 3)
    assert routers_by_agent(rest, [ids["az2-a"]]) == {ids["az2-a"]: set()}
    assert rest.networks_on_agent(ids["az2-a/dhcp"]) == []
    assert only_bound(rest, routers, [ids["az1-b"]])
    # Every action of the run: the first death's moves into az1-b, then only the second's removals.
    done = Counter((a.kind, a.status, a.line.split(" from ")[1].split(" ")[0] if " from " in a.line else "")
                   for a in daemon.actions())
    a, b = fleet.host("az1-a"), fleet.host("az1-b")
    assert done == {("move-router", "done", a): 4, ("unbind-network", "done", a): 2, ("bind-network", "done", ""): 2,
                    ("unbind-network", "done", b): 2}, (done, daemon.hint())
    assert set(targets_of(daemon)) == {b}
    assert daemon.tracebacks() == []


def test_agents_restricted_by_configuration_are_never_offered_other_routers(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    own = rest.create_router("pinned-own")
    l3 = add(fleet, neutron, {"dying": {}, "other": {}, "pinned": {"l3_config": {"router_id": own}},
                              "gw-only": {"l3_config": {"handle_internal_only_routers": False}}})
    listed = {a["id"]: a["configurations"] for a in rest.agents()}
    assert listed[l3["pinned"]]["router_id"] == own
    assert listed[l3["gw-only"]]["handle_internal_only_routers"] is False
    others = [rest.create_router(f"pinned-other-{i}") for i in range(5)]
    rest.bind_routers_bulk(l3["dying"], [own, *others])
    rest.bind_routers_bulk(l3["other"], [rest.create_router(f"pinned-load-{i}") for i in range(3)])
    # By load alone pinned and gw-only (empty) would get the lot; Neutron would refuse all but "own".
    daemon = rpcdaemon.start(rpcdaemon.config())
    daemon.wait_ready()
    fleet.crash("dying")
    wait_until(lambda: not rest.routers_on_agent(l3["dying"]), neutron.agent_down_time + 20,
               "every router off the dead agent", daemon.hint)
    settle(daemon, 4)

    assert rest.agents_for_router(own) == [l3["pinned"]]
    assert set(rest.routers_on_agent(l3["other"])) >= set(others)
    assert rest.routers_on_agent(l3["gw-only"]) == []
    assert [(a.kind, a.status) for a in daemon.actions()] == [("move-router", "done")] * 6, daemon.hint()
    log = daemon.log()
    # API calls seen in the daemon's own DEBUG lines: one bind at pinned (its router), none at gw-only.
    assert len(re.findall(rf"POST /agents/{l3['pinned']}/l3-routers -> 201", log)) == 1, daemon.hint()
    assert f"POST /agents/{l3['gw-only']}/l3-routers" not in log
    assert "InvalidL3Agent" not in log
    assert "not planning that pair again" not in log
    assert daemon.tracebacks() == []
