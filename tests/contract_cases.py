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

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import pytest

from rpcdaemon.acting.api import ErrorKind, NeutronAPI, NeutronError
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, MODE_DVR, MODE_LEGACY, Agent, Network, Router


class World(Protocol):
    """A Neutron to test, and how to put fresh things into it."""

    @property
    def api(self) -> NeutronAPI: ...

    def l3_agent(self, *, agent_mode: str = MODE_LEGACY, admin_state_up: bool = True) -> Agent:
        """A new, alive L3 agent on a new host (in availability zone ``nova``)."""
        ...

    def dhcp_agent(self, *, admin_state_up: bool = True) -> Agent:
        """A new, alive DHCP agent on a new host (in availability zone ``nova``)."""
        ...

    def dead_agents(self) -> tuple[Agent, Agent]:
        """An (L3, DHCP) pair of admin-up agents on one host that has stopped heartbeating and that
        Neutron already reports as not alive. Nothing is bound to them."""
        ...

    def router(self) -> Router:
        """A new legacy router, hosted by no agent."""
        ...

    def network(self, *, dhcp: bool = True) -> Network:
        """A new network hosted by no DHCP agent; with ``dhcp``, it has a DHCP-enabled subnet."""
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
