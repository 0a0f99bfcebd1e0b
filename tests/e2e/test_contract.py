"""The Neutron contract cases (``tests/contract_cases.py``) run on ``OpenStackNeutron`` against a real
neutron-server 29 with fake agents heartbeating over RabbitMQ; plus what only the real adapter has:
pagination against the server's own ``limit``/``marker`` links, and an API that is not there.

Agents come from the harness's ``fleet`` (each on its own host, RPC servers up, so router binds are
answered), routers and networks from its ``rest`` seed client; both clean up after each test.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.contract_cases import CASES, Case, World, case_id
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.poll import wait_until

from rpcdaemon.access import NeutronAccess
from rpcdaemon.acting.api import ErrorKind, NeutronAPI, NeutronError
from rpcdaemon.acting.openstack_neutron import OpenStackNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, MODE_LEGACY, Agent, Network, Router

pytestmark = pytest.mark.e2e


class RealWorld(World):
    def __init__(self, neutron: NeutronServer, fleet: Fleet, rest: SeedClient, api: OpenStackNeutron) -> None:
        self._neutron, self._fleet, self._rest, self._api = neutron, fleet, rest, api
        self._names = itertools.count(1)

    @property
    def api(self) -> NeutronAPI:
        return self._api

    def _host(
        self, *, l3: bool, dhcp: bool, agent_mode: str = MODE_LEGACY, az: str = "nova",
        l3_config: dict[str, Any] | None = None,
    ) -> tuple[str, dict[str, str]]:
        host = self._fleet.add_host(f"h{next(self._names)}", l3=l3, dhcp=dhcp, ovs=False, agent_mode=agent_mode,
                                    az=az, l3_config=l3_config)
        ids = self._fleet.wait_registered(self._neutron.url, timeout=30)
        return host, {agent_type: ident for (h, agent_type), ident in ids.items() if h == host}

    def l3_agent(
        self,
        *,
        agent_mode: str = MODE_LEGACY,
        admin_state_up: bool = True,
        az: str = "nova",
        router_id: str | None = None,
        handle_internal_only_routers: bool = True,
    ) -> Agent:
        config: dict[str, Any] = {"handle_internal_only_routers": handle_internal_only_routers}
        if router_id:
            config["router_id"] = router_id
        host, ids = self._host(l3=True, dhcp=False, agent_mode=agent_mode, az=az, l3_config=config)
        if not admin_state_up:
            self._rest.set_admin_state(ids[L3_AGENT], False)
        return Agent(ids[L3_AGENT], L3_AGENT, host, admin_state_up, True, agent_mode, az,
                     router_id, handle_internal_only_routers)

    def dhcp_agent(self, *, admin_state_up: bool = True, az: str = "nova") -> Agent:
        host, ids = self._host(l3=False, dhcp=True, az=az)
        if not admin_state_up:
            self._rest.set_admin_state(ids[DHCP_AGENT], False)
        return Agent(ids[DHCP_AGENT], DHCP_AGENT, host, admin_state_up, True, None, az)

    def dead_agents(self) -> tuple[Agent, Agent]:
        host, ids = self._host(l3=True, dhcp=True)
        self._fleet.crash(host)
        wait_until(lambda: not any(self._rest.agent(ident)["alive"] for ident in ids.values()),
                   self._neutron.agent_down_time + 10, f"the agents of {host} dead in Neutron after crashing it",
                   interval=0.5)
        return (
            Agent(ids[L3_AGENT], L3_AGENT, host, True, False, MODE_LEGACY, "nova"),
            Agent(ids[DHCP_AGENT], DHCP_AGENT, host, True, False, None, "nova"),
        )

    def router(self, *, distributed: bool = False, ha: bool = False, az_hints: tuple[str, ...] = ()) -> Router:
        name = f"contract-router-{next(self._names)}"
        router_id = self._rest.create_router(name, distributed=distributed, ha=ha, az_hints=az_hints)
        return Router(router_id, name=name, distributed=distributed, ha=ha, availability_zone_hints=az_hints)

    def network(self, *, dhcp: bool = True, az_hints: tuple[str, ...] = ()) -> Network:
        name = f"contract-net-{next(self._names)}"
        seeded = self._rest.create_network(name, dhcp=dhcp, az_hints=az_hints)
        return Network(seeded.id, name=name, dhcp_enabled=dhcp, availability_zone_hints=az_hints)

    def zone(self) -> str:
        return f"caz-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def api(neutron: NeutronServer) -> Iterator[OpenStackNeutron]:
    adapter = OpenStackNeutron.from_access(NeutronAccess(endpoint=neutron.url, timeout=30.0))
    yield adapter
    adapter.close()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_contract(case: Case, neutron: NeutronServer, fleet: Fleet, rest: SeedClient, api: OpenStackNeutron) -> None:
    case(RealWorld(neutron, fleet, rest, api))


def test_lists_page_through_the_servers_own_links(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, caplog: pytest.LogCaptureFixture
) -> None:
    fleet.add_host("paged")  # L3, DHCP and OVS agents: 3 of them at least
    fleet.wait_registered(neutron.url)
    routers = set(rest.create_routers_bulk(7, prefix="contract-page"))
    networks = {rest.create_network(f"contract-page-{i}", dhcp=i % 2 == 0).id: i % 2 == 0 for i in range(5)}
    paged = OpenStackNeutron.from_access(NeutronAccess(endpoint=neutron.url, timeout=30.0), page_size=2)
    whole = OpenStackNeutron.from_access(NeutronAccess(endpoint=neutron.url, timeout=30.0), page_size=1000)
    try:
        caplog.set_level(logging.DEBUG, logger="rpcdaemon.acting.openstack_neutron")
        paged_routers = paged.list_routers()
        router_pages = sum("GET /routers -> 200" in r.getMessage() for r in caplog.records)
        paged_networks = {n.id: n.dhcp_enabled for n in paged.list_networks()}
        assert sorted(r.id for r in paged_routers) == sorted(r.id for r in whole.list_routers())
        assert routers <= {r.id for r in paged_routers}
        assert len(paged_routers) == len({r.id for r in paged_routers})  # no page read twice
        assert router_pages >= 4  # 7 routers or more, 2 per page: the server really paged
        assert {nid: paged_networks[nid] for nid in networks} == networks
        assert paged_networks == {n.id: n.dhcp_enabled for n in whole.list_networks()}
        assert sorted(a.id for a in paged.list_agents()) == sorted(a.id for a in whole.list_agents())
    finally:
        paged.close()
        whole.close()


def test_closed_port_is_temporary_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = OpenStackNeutron.from_access(NeutronAccess(endpoint=f"http://127.0.0.1:{port}", timeout=30.0))
    try:
        began = time.monotonic()
        with pytest.raises(NeutronError) as caught:
            adapter.list_agents()
        assert caught.value.kind is ErrorKind.TEMPORARY
        assert time.monotonic() - began < 2.0
    finally:
        adapter.close()
