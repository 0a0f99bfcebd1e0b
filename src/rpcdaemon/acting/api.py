"""The narrow Neutron interface the daemon acts through, and the errors it may raise.

Two implementations exist: ``openstack_neutron.OpenStackNeutron`` (the only module that imports
openstacksdk) and ``fake_neutron.FakeNeutron`` (in memory, for fast tests and the demo). The
contract tests in ``tests/e2e/test_contract.py`` run the same cases against both.

Idempotency lives here, once: an unbind of something not bound and a bind of something already
bound to that same agent return normally on every implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from rpcdaemon.model import Agent, Network, PortState, Router


class ErrorKind(StrEnum):
    TEMPORARY = "temporary"  # connection refused/reset, timeout, 5xx, 429: retry later
    NOT_FOUND = "not-found"  # the router, network or agent does not exist (any more)
    CONFLICT = "conflict"  # e.g. router already hosted by another L3 agent
    INVALID_TARGET = "invalid-target"  # target is disabled (admin down) or of the wrong type
    PERMANENT = "permanent"  # anything else that will not get better by retrying


class NeutronError(Exception):
    """A classified failure of one Neutron API call."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        neutron_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.neutron_type = neutron_type
        self.retry_after = retry_after

    @property
    def temporary(self) -> bool:
        return self.kind is ErrorKind.TEMPORARY

    def __str__(self) -> str:
        head = f"{self.kind.value}"
        if self.status is not None:
            head += f" {self.status}"
        if self.neutron_type:
            head += f" {self.neutron_type}"
        return f"{head}: {self.args[0]}"


class NeutronAPI(Protocol):
    """What rpcdaemon needs from Neutron, nothing more."""

    def list_agents(self) -> list[Agent]:
        """Every agent Neutron knows, of every type."""
        ...

    def get_agent(self, agent_id: str) -> Agent:
        """One agent, fresh (raises NOT_FOUND when it was deleted)."""
        ...

    def list_routers(self) -> list[Router]: ...

    def list_networks(self) -> list[Network]:
        """Every network, with ``dhcp_enabled`` computed from its subnets."""
        ...

    def get_router(self, router_id: str) -> Router:
        """One router, fresh (raises NOT_FOUND when it was deleted)."""
        ...

    def get_network(self, network_id: str) -> Network:
        """One network with ``dhcp_enabled`` from its subnets (raises NOT_FOUND when it was deleted)."""
        ...

    def routers_on_agent(self, agent_id: str) -> list[str]: ...

    def networks_on_agent(self, agent_id: str) -> list[str]: ...

    def agents_for_router(self, router_id: str) -> list[str]: ...

    def agents_for_network(self, network_id: str) -> list[str]: ...

    def bind_router(self, agent_id: str, router_id: str) -> None: ...

    def unbind_router(self, agent_id: str, router_id: str) -> None: ...

    def bind_network(self, agent_id: str, network_id: str) -> None: ...

    def unbind_network(self, agent_id: str, network_id: str) -> None: ...

    def set_agent_admin_state(self, agent_id: str, up: bool) -> None:
        """Mark an agent admin-up or admin-down (Neutron's maintenance mark: nothing is scheduled onto
        an admin-down agent); setting the state it already has returns normally."""
        ...

    def ports_of_devices(self, device_ids: Sequence[str]) -> list[PortState]:
        """The ports whose ``device_id`` is one of ``device_ids`` (a router's id for its ports), in
        as few list calls as the URL length allows; unknown ids simply have no ports."""
        ...

    def dhcp_ports(self, network_ids: Sequence[str]) -> list[PortState]:
        """The DHCP ports (``device_owner`` ``network:dhcp``) of the given networks."""
        ...
