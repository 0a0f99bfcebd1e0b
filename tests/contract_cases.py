"""The Neutron contract: one set of cases every ``NeutronAPI`` implementation must pass.

``tests/unit/test_contract_fake.py`` runs them on ``FakeNeutron`` (milliseconds, no services) and
``tests/e2e/test_contract.py`` on ``OpenStackNeutron`` against a real neutron-server with fake agents
heartbeating over RabbitMQ. A case takes a ``World``: the adapter under test plus ways to create fresh
agents, routers and networks in it. Every case creates what it uses, so cases never depend on each
other or on what else exists. Expectations are the real server's answers (the API tables of the
project's Neutron notes), including the idempotent ones.

Not here, because it cannot be run cheaply on the real server: binding a router to a dead L3 agent
(neutron-server blocks for about 240 s and then answers 500); ``test_fake_neutron.py`` covers the
fake's imitation of it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import pytest

from rpcdaemon.acting.api import ErrorKind, NeutronAPI, NeutronError
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, MODE_DVR, MODE_DVR_SNAT, MODE_LEGACY, Agent, Network, Router


class World(Protocol):
    """A Neutron to test, and how to put fresh things into it."""

    @property
    def api(self) -> NeutronAPI: ...

    def l3_agent(
        self,
        *,
        agent_mode: str = MODE_LEGACY,
        admin_state_up: bool = True,
        az: str = "nova",
        router_id: str | None = None,
        handle_internal_only_routers: bool = True,
    ) -> Agent:
        """A new, alive L3 agent on a new host in availability zone ``az``, reporting these
        configuration options (``router_id``, ``handle_internal_only_routers``)."""
        ...

    def dhcp_agent(self, *, admin_state_up: bool = True, az: str = "nova") -> Agent:
        """A new, alive DHCP agent on a new host in availability zone ``az``."""
        ...

    def dead_agents(self) -> tuple[Agent, Agent]:
        """An (L3, DHCP) pair of admin-up agents on one host that has stopped heartbeating and that
        Neutron already reports as not alive. Nothing is bound to them."""
        ...

    def router(self, *, distributed: bool = False, ha: bool = False, az_hints: tuple[str, ...] = ()) -> Router:
        """A new router without gateway. Legacy and distributed ones are hosted by no agent; an HA one
        may be hosted already (the real server schedules HA routers when they are created)."""
        ...

    def network(self, *, dhcp: bool = True, az_hints: tuple[str, ...] = ()) -> Network:
        """A new network hosted by no DHCP agent; with ``dhcp``, it has a DHCP-enabled subnet."""
        ...

    def zone(self) -> str:
        """A fresh availability-zone name (hints may name only zones some agent reports)."""
        ...


Case = Callable[[World], None]
CASES: list[Case] = []


def case(fn: Case) -> Case:
    CASES.append(fn)
    return fn


def case_id(fn: Case) -> str:
    return fn.__name__.removeprefix("case_")


@contextmanager
def raises_kind(kind: ErrorKind, neutron_type: str | None = None) -> Iterator[None]:
    with pytest.raises(NeutronError) as caught:
        yield
    assert caught.value.kind is kind, f"expected {kind}, got {caught.value}"
    if neutron_type is not None:
        assert caught.value.neutron_type == neutron_type, str(caught.value)


def unknown_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------------------- routers


@case
def case_bind_router_reads_back(w: World) -> None:
    agent, router = w.l3_agent(), w.router()
    w.api.bind_router(agent.id, router.id)
    assert w.api.routers_on_agent(agent.id) == [router.id]
    assert w.api.agents_for_router(router.id) == [agent.id]


@case
def case_unbind_router(w: World) -> None:
    agent, router = w.l3_agent(), w.router()
    w.api.bind_router(agent.id, router.id)
    w.api.unbind_router(agent.id, router.id)
    assert w.api.routers_on_agent(agent.id) == []
    assert w.api.agents_for_router(router.id) == []


@case
def case_bind_router_twice_to_same_agent_is_ok(w: World) -> None:
    agent, router = w.l3_agent(), w.router()
    w.api.bind_router(agent.id, router.id)
    w.api.bind_router(agent.id, router.id)
    assert w.api.agents_for_router(router.id) == [agent.id]


@case
def case_unbind_router_not_bound_is_ok(w: World) -> None:
    agent, other, router = w.l3_agent(), w.l3_agent(), w.router()
    w.api.unbind_router(agent.id, router.id)  # never bound anywhere
    w.api.bind_router(other.id, router.id)
    w.api.unbind_router(agent.id, router.id)  # bound, but elsewhere: left alone
    assert w.api.agents_for_router(router.id) == [other.id]
    w.api.unbind_router(other.id, router.id)
    w.api.unbind_router(other.id, router.id)  # already unbound
    assert w.api.agents_for_router(router.id) == []


@case
def case_bind_router_hosted_elsewhere_conflicts(w: World) -> None:
    first, second, router = w.l3_agent(), w.l3_agent(), w.router()
    w.api.bind_router(first.id, router.id)
    with raises_kind(ErrorKind.CONFLICT, "RouterHostedByL3Agent"):
        w.api.bind_router(second.id, router.id)
    assert w.api.agents_for_router(router.id) == [first.id]
    assert w.api.routers_on_agent(second.id) == []


@case
def case_bind_router_to_admin_down_agent_is_invalid(w: World) -> None:
    agent, router = w.l3_agent(admin_state_up=False), w.router()
    with raises_kind(ErrorKind.INVALID_TARGET, "InvalidL3Agent"):
        w.api.bind_router(agent.id, router.id)
    assert w.api.agents_for_router(router.id) == []


@case
def case_bind_router_to_dhcp_agent_is_invalid(w: World) -> None:
    agent, router = w.dhcp_agent(), w.router()
    with raises_kind(ErrorKind.INVALID_TARGET, "InvalidL3Agent"):
        w.api.bind_router(agent.id, router.id)
    assert w.api.agents_for_router(router.id) == []


@case
def case_bind_router_to_dvr_mode_agent_is_invalid(w: World) -> None:
    agent, router = w.l3_agent(agent_mode=MODE_DVR), w.router()
    with raises_kind(ErrorKind.INVALID_TARGET, "DVRL3CannotAssignToDvrAgent"):
        w.api.bind_router(agent.id, router.id)
    assert w.api.agents_for_router(router.id) == []


@case
def case_bind_router_unknown_ids_not_found(w: World) -> None:
    agent, router = w.l3_agent(), w.router()
    with raises_kind(ErrorKind.NOT_FOUND, "AgentNotFound"):
        w.api.bind_router(unknown_id(), router.id)
    with raises_kind(ErrorKind.NOT_FOUND, "RouterNotFound"):
        w.api.bind_router(agent.id, unknown_id())
    assert w.api.routers_on_agent(agent.id) == []


@case
def case_unbind_router_unknown_ids_not_found(w: World) -> None:
    agent, router = w.l3_agent(), w.router()
    with raises_kind(ErrorKind.NOT_FOUND, "AgentNotFound"):
        w.api.unbind_router(unknown_id(), router.id)
    with raises_kind(ErrorKind.NOT_FOUND, "RouterNotFound"):
        w.api.unbind_router(agent.id, unknown_id())


@case
def case_router_reads_of_unknown_ids_not_found(w: World) -> None:
    with raises_kind(ErrorKind.NOT_FOUND, "RouterNotFound"):
        w.api.agents_for_router(unknown_id())
    with raises_kind(ErrorKind.NOT_FOUND, "AgentNotFound"):
        w.api.routers_on_agent(unknown_id())


@case
def case_list_routers(w: World) -> None:
    first, second = w.router(), w.router()
    listed = {r.id: r for r in w.api.list_routers()}
    assert listed[first.id] == first
    assert listed[second.id] == second
    assert not listed[first.id].distributed
    assert not listed[first.id].ha


@case
def case_get_router(w: World) -> None:
    router = w.router()
    assert w.api.get_router(router.id) == router
    with raises_kind(ErrorKind.NOT_FOUND, "RouterNotFound"):
        w.api.get_router(unknown_id())


# -------------------------------------------------------------------------------------- networks


@case
def case_bind_network_reads_back(w: World) -> None:
    agent, network = w.dhcp_agent(), w.network()
    w.api.bind_network(agent.id, network.id)
    assert w.api.networks_on_agent(agent.id) == [network.id]
    assert w.api.agents_for_network(network.id) == [agent.id]


@case
def case_bind_network_twice_to_same_agent_is_ok(w: World) -> None:
    agent, network = w.dhcp_agent(), w.network()
    w.api.bind_network(agent.id, network.id)
    w.api.bind_network(agent.id, network.id)  # Neutron: 409 NetworkHostedByDHCPAgent
    assert w.api.agents_for_network(network.id) == [agent.id]


@case
def case_bind_network_to_second_agent_keeps_both(w: World) -> None:
    first, second, network = w.dhcp_agent(), w.dhcp_agent(), w.network()
    w.api.bind_network(first.id, network.id)
    w.api.bind_network(second.id, network.id)
    assert sorted(w.api.agents_for_network(network.id)) == sorted([first.id, second.id])


@case
def case_unbind_network(w: World) -> None:
    agent, network = w.dhcp_agent(), w.network()
    w.api.bind_network(agent.id, network.id)
    w.api.unbind_network(agent.id, network.id)
    assert w.api.networks_on_agent(agent.id) == []
    assert w.api.agents_for_network(network.id) == []


@case
def case_unbind_network_not_hosted_is_ok(w: World) -> None:
    agent, other, network = w.dhcp_agent(), w.dhcp_agent(), w.network()
    w.api.unbind_network(agent.id, network.id)  # Neutron: 409 NetworkNotHostedByDhcpAgent
    w.api.bind_network(other.id, network.id)
    w.api.unbind_network(agent.id, network.id)  # hosted, but elsewhere: left alone
    w.api.unbind_network(agent.id, unknown_id())  # Neutron does not look the network up here
    assert w.api.agents_for_network(network.id) == [other.id]


@case
def case_bind_network_to_l3_agent_is_invalid(w: World) -> None:
    agent, network = w.l3_agent(), w.network()
    with raises_kind(ErrorKind.INVALID_TARGET, "InvalidDHCPAgent"):
        w.api.bind_network(agent.id, network.id)
    assert w.api.agents_for_network(network.id) == []


@case
def case_bind_network_to_admin_down_agent_is_invalid(w: World) -> None:
    agent, network = w.dhcp_agent(admin_state_up=False), w.network()
    with raises_kind(ErrorKind.INVALID_TARGET, "InvalidDHCPAgent"):
        w.api.bind_network(agent.id, network.id)
    assert w.api.agents_for_network(network.id) == []


@case
def case_network_unknown_ids(w: World) -> None:
    agent, network = w.dhcp_agent(), w.network()
    with raises_kind(ErrorKind.NOT_FOUND, "NetworkNotFound"):
        w.api.bind_network(agent.id, unknown_id())
    with raises_kind(ErrorKind.NOT_FOUND, "AgentNotFound"):
        w.api.bind_network(unknown_id(), network.id)
    with raises_kind(ErrorKind.NOT_FOUND, "AgentNotFound"):
        w.api.unbind_network(unknown_id(), network.id)
    with raises_kind(ErrorKind.NOT_FOUND, "AgentNotFound"):
        w.api.networks_on_agent(unknown_id())
    # Neutron answers an empty list here, not 404.
    assert w.api.agents_for_network(unknown_id()) == []


@case
def case_list_networks_dhcp_enabled(w: World) -> None:
    with_dhcp, without_dhcp = w.network(dhcp=True), w.network(dhcp=False)
    listed = {n.id: n for n in w.api.list_networks()}
    assert listed[with_dhcp.id].dhcp_enabled is True
    assert listed[without_dhcp.id].dhcp_enabled is False
    assert listed[with_dhcp.id].name == with_dhcp.name


@case
def case_get_network(w: World) -> None:
    with_dhcp, without_dhcp = w.network(dhcp=True), w.network(dhcp=False)
    got = w.api.get_network(with_dhcp.id)
    assert (got.id, got.name, got.dhcp_enabled) == (with_dhcp.id, with_dhcp.name, True)
    assert w.api.get_network(without_dhcp.id).dhcp_enabled is False
    assert w.api.get_network(with_dhcp.id) == {n.id: n for n in w.api.list_networks()}[with_dhcp.id]
    with raises_kind(ErrorKind.NOT_FOUND, "NetworkNotFound"):
        w.api.get_network(unknown_id())


# ---------------------------------------------------------------------------------------- agents


@case
def case_list_agents_fields(w: World) -> None:
    l3, dhcp, down = w.l3_agent(), w.dhcp_agent(), w.l3_agent(admin_state_up=False)
    listed = {a.id: a for a in w.api.list_agents()}
    assert listed[l3.id] == Agent(l3.id, L3_AGENT, l3.host, True, True, MODE_LEGACY, "nova")
    assert listed[dhcp.id] == Agent(dhcp.id, DHCP_AGENT, dhcp.host, True, True, None, "nova")
    assert listed[down.id].admin_state_up is False
    assert listed[down.id].alive is True
    assert w.api.get_agent(l3.id) == listed[l3.id]
    assert w.api.get_agent(down.id) == listed[down.id]


@case
def case_get_agent_unknown_not_found(w: World) -> None:
    with raises_kind(ErrorKind.NOT_FOUND, "AgentNotFound"):
        w.api.get_agent(unknown_id())


@case
def case_dead_agents(w: World) -> None:
    l3, dhcp = w.dead_agents()
    assert w.api.get_agent(l3.id).alive is False
    assert w.api.get_agent(dhcp.id).alive is False
    listed = {a.id: a for a in w.api.list_agents()}
    assert listed[l3.id].alive is False
    assert listed[l3.id].admin_state_up is True
    # Unlike a router bind, a network bind onto a dead DHCP agent is accepted (Neutron only casts).
    network = w.network()
    w.api.bind_network(dhcp.id, network.id)
    assert w.api.agents_for_network(network.id) == [dhcp.id]
    w.api.unbind_network(dhcp.id, network.id)
    assert w.api.agents_for_network(network.id) == []


# ------------------------------------------------- DVR, HA, availability zones, agent configuration
# Neutron 29 (l3_agentschedulers_db.validate_agent_router_combination, get_l3_agent_candidates),
# verified on the real server: checks go agent type, L3 mode (dvr / dvr_no_external: 409
# DVRL3CannotAssignToDvrAgent), distributed router on a legacy agent (409 RouterL3AgentMismatch), then
# "is a candidate": admin up, the agent's ``router_id`` option empty or this router, and a gateway when
# the agent has ``handle_internal_only_routers = false``; else 404 InvalidL3Agent. Zone hints are
# never checked on a manual bind. A dvr agent refuses every manual unbind, before the router is even
# looked up (409 DVRL3CannotRemoveFromDvrAgent).


@case
def case_distributed_router_binds_only_to_dvr_snat(w: World) -> None:
    snat, legacy, dvr = w.l3_agent(agent_mode=MODE_DVR_SNAT), w.l3_agent(), w.l3_agent(agent_mode=MODE_DVR)
    router = w.router(distributed=True)
    assert {r.id: r for r in w.api.list_routers()}[router.id].distributed is True
    with raises_kind(ErrorKind.INVALID_TARGET, "RouterL3AgentMismatch"):
        w.api.bind_router(legacy.id, router.id)
    with raises_kind(ErrorKind.INVALID_TARGET, "DVRL3CannotAssignToDvrAgent"):
        w.api.bind_router(dvr.id, router.id)
    assert w.api.agents_for_router(router.id) == []
    w.api.bind_router(snat.id, router.id)
    assert w.api.agents_for_router(router.id) == [snat.id]
    assert w.api.routers_on_agent(dvr.id) == []
    w.api.unbind_router(snat.id, router.id)
    assert w.api.agents_for_router(router.id) == []


@case
def case_legacy_router_binds_to_dvr_snat(w: World) -> None:
    snat, router = w.l3_agent(agent_mode=MODE_DVR_SNAT), w.router()
    w.api.bind_router(snat.id, router.id)
    assert w.api.agents_for_router(router.id) == [snat.id]


@case
def case_unbind_from_dvr_agent_is_refused(w: World) -> None:
    dvr, legacy, distributed = w.l3_agent(agent_mode=MODE_DVR), w.router(), w.router(distributed=True)
    for router_id in (legacy.id, distributed.id, unknown_id()):  # bound or not, known or not
        with raises_kind(ErrorKind.PERMANENT, "DVRL3CannotRemoveFromDvrAgent"):
            w.api.unbind_router(dvr.id, router_id)


@case
def case_agent_with_router_id_takes_only_that_router(w: World) -> None:
    own, other = w.router(), w.router()
    agent = w.l3_agent(router_id=own.id)
    assert w.api.get_agent(agent.id).router_id == own.id
    with raises_kind(ErrorKind.INVALID_TARGET, "InvalidL3Agent"):
        w.api.bind_router(agent.id, other.id)
    assert w.api.agents_for_router(other.id) == []
    w.api.bind_router(agent.id, own.id)
    assert w.api.agents_for_router(own.id) == [agent.id]


@case
def case_agent_without_internal_only_routers_refuses_router_without_gateway(w: World) -> None:
    agent, router = w.l3_agent(handle_internal_only_routers=False), w.router()
    assert w.api.get_agent(agent.id).handle_internal_only_routers is False
    assert {r.id: r for r in w.api.list_routers()}[router.id].external_gateway is False
    with raises_kind(ErrorKind.INVALID_TARGET, "InvalidL3Agent"):
        w.api.bind_router(agent.id, router.id)
    assert w.api.agents_for_router(router.id) == []


@case
def case_ha_router_binds_to_several_agents(w: World) -> None:
    first, second, third = w.l3_agent(), w.l3_agent(), w.l3_agent()
    router = w.router(ha=True)
    assert {r.id: r for r in w.api.list_routers()}[router.id].ha is True
    for agent_id in w.api.agents_for_router(router.id):  # the real server scheduled it already
        w.api.unbind_router(agent_id, router.id)
    assert w.api.agents_for_router(router.id) == []
    w.api.bind_router(first.id, router.id)
    w.api.bind_router(second.id, router.id)  # no RouterHostedByL3Agent for an HA router
    w.api.bind_router(first.id, router.id)  # again: still fine
    assert sorted(w.api.agents_for_router(router.id)) == sorted([first.id, second.id])
    w.api.unbind_router(first.id, router.id)
    assert w.api.agents_for_router(router.id) == [second.id]
    w.api.bind_router(third.id, router.id)
    assert sorted(w.api.agents_for_router(router.id)) == sorted([second.id, third.id])


@case
def case_zone_hints_do_not_limit_manual_binds(w: World) -> None:
    home, away = w.zone(), w.zone()
    l3_home, l3_away = w.l3_agent(az=home), w.l3_agent(az=away)
    dhcp_home, dhcp_away = w.dhcp_agent(az=home), w.dhcp_agent(az=away)
    listed = {a.id: a for a in w.api.list_agents()}
    assert (listed[l3_home.id].availability_zone, listed[dhcp_away.id].availability_zone) == (home, away)
    router, network = w.router(az_hints=(home,)), w.network(az_hints=(home,))
    assert {r.id: r for r in w.api.list_routers()}[router.id].availability_zone_hints == (home,)
    assert {n.id: n for n in w.api.list_networks()}[network.id].availability_zone_hints == (home,)
    # Neutron keeps zones for its own scheduler; an admin's bind to another zone is accepted.
    w.api.bind_router(l3_away.id, router.id)
    w.api.bind_network(dhcp_away.id, network.id)
    assert w.api.agents_for_router(router.id) == [l3_away.id]
    assert w.api.agents_for_network(network.id) == [dhcp_away.id]
    assert w.api.routers_on_agent(l3_home.id) == []
    assert w.api.networks_on_agent(dhcp_home.id) == []


@case
def case_port_reads_of_unknown_or_portless_ids_are_empty(w: World) -> None:
    router, network = w.router(), w.network(dhcp=False)
    assert w.api.ports_of_devices([]) == []
    assert w.api.ports_of_devices([router.id, unknown_id()]) == []  # a router without interfaces has no port
    # Many ids at once: the adapter splits them so that no URL gets too long for the server.
    assert w.api.ports_of_devices([unknown_id() for _ in range(250)]) == []
    assert w.api.dhcp_ports([network.id, unknown_id()]) == []


@case
def case_a_live_dhcp_agent_gets_its_dhcp_port_on_its_host(w: World) -> None:
    agent, network = w.dhcp_agent(), w.network(dhcp=True)
    w.api.bind_network(agent.id, network.id)
    deadline = time.monotonic() + 30  # the real agent creates it when it hears network_create_end
    while True:
        ports = w.api.dhcp_ports([network.id])
        mine = [p for p in ports if p.host == agent.host]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(p.device_owner, p.network_id) for p in mine] == [("network:dhcp", network.id)], ports
    assert w.api.ports_of_devices([mine[0].device_id]) == mine


@case
def case_agent_admin_state_down_and_up(w: World) -> None:
    agent, router = w.l3_agent(), w.router()
    w.api.set_agent_admin_state(agent.id, False)
    w.api.set_agent_admin_state(agent.id, False)  # already down: fine
    down = w.api.get_agent(agent.id)
    assert down.admin_state_up is False
    assert down.alive is True  # the maintenance mark says nothing about liveness
    with raises_kind(ErrorKind.INVALID_TARGET, "InvalidL3Agent"):
        w.api.bind_router(agent.id, router.id)
    w.api.set_agent_admin_state(agent.id, True)
    assert w.api.get_agent(agent.id).admin_state_up is True
    w.api.bind_router(agent.id, router.id)
    assert w.api.agents_for_router(router.id) == [agent.id]
    with raises_kind(ErrorKind.NOT_FOUND, "AgentNotFound"):
        w.api.set_agent_admin_state(unknown_id(), False)
