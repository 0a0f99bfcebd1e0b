"""The real daemon converges on a neutron-server with a STOCK neutron.conf (no notification driver).

With no ``[oslo_messaging_notifications] driver`` nothing but neutron-server's own casts to the agents
(``dhcp_agent.<host>``, ``l3_agent.<host>``) says what changed between two reconciles. The daemon's
``reconcile_interval`` is the default 60 s here, so each bound below is far under what waiting for the
next reconcile would take. The DHCP hosts run a fake Open vSwitch agent beside their DHCP agent, so
Neutron's own scheduler places each new network on ONE of them (``dhcp_agents_per_network = 1``);
the daemon must then host it per its policy within about ``report_interval + check_interval``.
The first test also runs on ``neutron_notifying`` (notifications on), where both sources arrive.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.e2e.rpcd import Daemons, RpcDaemon, daemons_for, hosts_of, networks_by_agent, wait_alive_in_neutron
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.poll import wait_until

from rpcdaemon.model import DHCP_AGENT, L3_AGENT

pytestmark = pytest.mark.e2e

RECONCILE = 60  # the default: what a converging daemon must not have to wait for
# API latency, a bind per agent, the fake agents' report jitter, a loaded 2-core CI machine (8.2 s was
# seen under load): still a quarter of the reconcile a daemon without the casts would wait for.
MARGIN = 12.0


@dataclass
class World:
    neutron: NeutronServer
    fleet: Fleet
    rest: SeedClient
    daemons: Daemons

    @property
    def bound(self) -> float:
        """report_interval + check_interval (1 s in the harness config) + the margin."""
        return self.neutron.report_interval + 1 + MARGIN


@contextlib.contextmanager
def world_on(neutron: NeutronServer, workdir: Path) -> Iterator[World]:
    prefix = f"stock-{uuid.uuid4().hex[:6]}-"
    rest = SeedClient(neutron.url)
    fleet = Fleet.for_server(neutron, prefix=prefix)
    try:
        with daemons_for(workdir, neutron) as daemons:  # stopped before the fleet's agents are deleted
            yield World(neutron, fleet, rest, daemons)
    finally:
        fleet.close()
        rest.delete_agents_of_hosts(prefix)
        rest.cleanup()


@pytest.fixture
def stock(neutron: NeutronServer, tmp_path: Path) -> Iterator[World]:
    with world_on(neutron, tmp_path) as world:
        yield world


@pytest.fixture(params=["stock", "notifying"])
def either(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    server = request.getfixturevalue("neutron" if request.param == "stock" else "neutron_notifying")
    with world_on(server, tmp_path) as world:
        yield world


def dhcp_hosts(world: World, names: list[str]) -> dict[str, str]:
    """DHCP agents with an OVS agent beside them, so that Neutron's scheduler may pick them."""
    full = {name: world.fleet.add_host(name, l3=False, dhcp=True, ovs=True) for name in names}
    ids = world.fleet.wait_registered(world.neutron.url, timeout=30)
    return {name: ids[(host, DHCP_AGENT)] for name, host in full.items()}


def start(world: World, plugin: str, **section: object) -> RpcDaemon:
    keys = {"reconcile_interval": RECONCILE, **section}
    config = world.daemons.config(plugins=[plugin], dhcp=keys if plugin == "DHCPAgent" else None,
                                  l3=keys if plugin == "L3Agent" else None)
    daemon = world.daemons.start(config)
    daemon.wait_ready()
    return daemon


def re_reads(daemon: RpcDaemon, what: str) -> int:
    """Resources the daemon re-read because of bus hints (its INFO lines)."""
    return sum(int(n) for n in re.findall(rf"; re-read (\d+) {what}", daemon.log()))


def wait_hosted(world: World, agents: dict[str, str], since: dict[str, float], want: int,
                daemon: RpcDaemon) -> dict[str, float]:
    """Network -> seconds from ``since[network]`` until ``want`` agents host it."""
    seen: dict[str, float] = {}

    def all_hosted() -> bool:
        hosts = hosts_of(networks_by_agent(world.rest, agents.values()))
        for net, began in since.items():
            if net not in seen and len(hosts.get(net, set())) >= want:
                seen[net] = time.monotonic() - began
        return len(seen) == len(since)

    wait_until(all_hosted, RECONCILE, f"{len(since)} networks on {want} agents", daemon.hint, interval=0.2)
    return seen


@pytest.mark.parametrize("per_network", ["all", "2"])
def test_networks_neutron_placed_on_one_agent_reach_the_policy_fast(either: World, per_network: str) -> None:
    world = either
    agents = dhcp_hosts(world, ["a", "b", "c"])
    daemon = start(world, "DHCPAgent", agents_per_network=per_network)
    daemon.wait_passes(2)  # a couple of idle checks
    want = 3 if per_network == "all" else 2
    since: dict[str, float] = {}
    created = []
    for i in range(6):
        began = time.monotonic()
        net = world.rest.create_network(f"stock-{per_network}-{i}", cidr=f"10.7.{i}.0/24", keep_auto_bindings=True,
                                        settle=0)
        since[net.id] = began
        created.append(net)
    placed_by_neutron = [len(n.auto_bound) for n in created]
    # Neutron's scheduler places each on one agent (dhcp_agents_per_network = 1); the daemon, which hears the
    # subnet's creation, may have added more by the time the bindings are read back: never fewer than one.
    assert all(count >= 1 for count in placed_by_neutron), f"Neutron's scheduler placed nothing: {placed_by_neutron}"
    seen = wait_hosted(world, agents, since, want, daemon)
    slowest = max(seen.values())
    notify = "notifications on" if world.neutron.notifications else "stock neutron.conf"
    print(f"\n{notify}, agents_per_network={per_network}: 6 networks Neutron placed on one agent each hosted "
          f"on {want} agents {min(seen.values()):.1f}-{slowest:.1f} s after their creation")
    assert slowest <= world.bound, daemon.hint()
    hosts = hosts_of(networks_by_agent(world.rest, agents.values()))
    assert all(len(hosts[n.id]) == want for n in created)
    if not world.neutron.notifications:
        assert "bus says network" in daemon.log(), daemon.hint()
        # At most a targeted read per network and cast (creation + subnet), not a reconcile each.
        assert re_reads(daemon, "network") <= 2 * len(created), daemon.hint()
    assert daemon.actions(statuses={"failed"}) == []
    assert daemon.tracebacks() == []


def test_a_network_whose_subnet_gets_dhcp_later_is_hosted_fast(stock: World) -> None:
    agents = dhcp_hosts(stock, ["a", "b", "c"])
    daemon = start(stock, "DHCPAgent", agents_per_network="all")
    net = stock.rest.create_network("stock-late-dhcp", dhcp=False, cidr="10.8.0.0/24", keep_auto_bindings=True,
                                    settle=0)
    # The daemon heard of it, and leaves it alone: nothing to serve. Enough passes to cover the bound in which
    # it hosts a network that has DHCP (the next test shows that bound), however slow the machine is.
    daemon.wait_passes(int(stock.bound))
    hosted = set(stock.rest.agents_for_network(net.id))
    assert len(hosted) <= 1, f"a network without DHCP was spread: {hosted}"
    since = {net.id: time.monotonic()}
    stock.rest.request("PUT", f"/subnets/{net.subnet_id}", {"subnet": {"enable_dhcp": True}})
    if not hosted:  # Neutron did not place it: the enabling cast then goes nowhere, a port creates one
        stock.rest.request("POST", "/ports", {"port": {"network_id": net.id, "name": "stock-late-port"}})
    seen = wait_hosted(stock, agents, since, 3, daemon)
    print(f"\nstock neutron.conf: a network whose subnet got DHCP enabled later hosted on every agent "
          f"{seen[net.id]:.1f} s after the change (Neutron had placed it on {len(hosted)})")
    assert seen[net.id] <= stock.bound, daemon.hint()
    assert daemon.tracebacks() == []


@pytest.mark.parametrize("back", ["new agent", "revived agent"])
def test_a_router_created_while_no_l3_agent_was_alive_is_scheduled_once_an_agent_is_a_target(
    stock: World, back: str
) -> None:
    first = stock.fleet.add_host("a", l3=True, dhcp=False, ovs=False)
    agent_a = stock.fleet.wait_registered(stock.neutron.url, timeout=30)[(first, L3_AGENT)]
    daemon = start(stock, "L3Agent", revive_hold=1)
    wait_until(lambda: daemon.verdicts().get((L3_AGENT, first)) == "alive", 30, "the daemon to hear a", daemon.hint)
    stock.fleet.crash("a")
    # Silent for a whole agent_down_time: Neutron says not alive, and the daemon no longer targets it
    # (hosting nothing, it never needs a second opinion: it stays "suspect" rather than "dead").
    wait_alive_in_neutron(stock.rest, [agent_a], False, stock.neutron.agent_down_time + 15)
    wait_until(lambda: daemon.verdicts().get((L3_AGENT, first)) not in (None, "alive"), 10,
               "the daemon to stop targeting the silent agent", daemon.hint)
    router = stock.rest.create_router("stock-orphan")
    daemon.wait_passes(3)  # nothing is cast for it: no agent could take it
    assert stock.rest.agents_for_router(router) == []
    began = time.monotonic()
    if back == "new agent":
        host = stock.fleet.add_host("b", l3=True, dhcp=False, ovs=False)
    else:
        stock.fleet.revive("a")
        host = stock.fleet.host("a")
    ids = stock.fleet.wait_registered(stock.neutron.url, timeout=30)
    bound = wait_until(lambda: stock.rest.agents_for_router(router), RECONCILE, "the router to be scheduled",
                       daemon.hint, interval=0.2)
    took = time.monotonic() - began
    print(f"\nstock neutron.conf: a router created while no L3 agent was alive scheduled {took:.1f} s after a "
          f"{back} came up")
    assert bound == [ids[(host, L3_AGENT)]]
    # A new agent is a target once heard steadily (one report_interval); a revived one after revive_hold.
    assert took <= stock.bound + 1 + stock.neutron.report_interval, daemon.hint()
    assert daemon.tracebacks() == []
