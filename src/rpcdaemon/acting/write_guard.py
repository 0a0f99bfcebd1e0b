"""The fence: only the active instance's writes reach Neutron.

``wiring`` wraps the Neutron adapter of each failover plugin in a ``FencedNeutron`` before the plugin
and its executor see it, with ``may_write`` asking the leadership lease (``coordination.leader``) at
that moment. Reads pass through (a standby and a demoted instance may look); every write (bind and
unbind of routers and networks) is checked right before it is sent and raises ``Fenced`` when this
instance is not the active one. The executor reports such an action SKIPPED ("not the active
instance"), without retrying it; so does the readiness follow-up's unbind (``move_unready``), an executor
action like the others.

Each write that passes is one DEBUG line, ``API write: bind router R to agent A``, so that a log shows
that a fenced instance made none. What the fence cannot do: a write already sent when the lease runs
out still lands (Neutron has no fencing tokens); the lease is checked just before each call, and a
call is bounded by the plugin's ``timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.model import Agent, Network, PortState, Router

log = logging.getLogger("rpcdaemon.fence")

NOT_ACTIVE = "not the active instance"


class Fenced(Exception):
    """A write refused because this instance is not the active one; nothing was sent."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{NOT_ACTIVE}: {what} not sent")
        self.what = what


class FencedNeutron:
    """``NeutronAPI`` that delegates to ``api`` and lets writes through only while ``may_write()``."""

    def __init__(self, api: NeutronAPI, may_write: Callable[[], bool], *, logger: logging.Logger | None = None) -> None:
        self._api = api
        self._may_write = may_write
        self._log = logger or log
        self.refused = 0  # writes fenced off so far

    def _check(self, what: str) -> None:
        if not self._may_write():
            self.refused += 1
            self._log.debug("API write refused (%s): %s", NOT_ACTIVE, what)
            raise Fenced(what)
        self._log.debug("API write: %s", what)

    # -- writes ---------------------------------------------------------------------------------------
    def bind_router(self, agent_id: str, router_id: str) -> None:
        self._check(f"bind router {router_id} to agent {agent_id}")
        self._api.bind_router(agent_id, router_id)

    def unbind_router(self, agent_id: str, router_id: str) -> None:
        self._check(f"unbind router {router_id} from agent {agent_id}")
        self._api.unbind_router(agent_id, router_id)

    def bind_network(self, agent_id: str, network_id: str) -> None:
        self._check(f"bind network {network_id} to agent {agent_id}")
        self._api.bind_network(agent_id, network_id)

    def unbind_network(self, agent_id: str, network_id: str) -> None:
        self._check(f"unbind network {network_id} from agent {agent_id}")
        self._api.unbind_network(agent_id, network_id)

    def set_agent_admin_state(self, agent_id: str, up: bool) -> None:
        self._check(f"set agent {agent_id} admin {'up' if up else 'down'}")
        self._api.set_agent_admin_state(agent_id, up)

    # -- reads ----------------------------------------------------------------------------------------
    def list_agents(self) -> list[Agent]:
        return self._api.list_agents()

    def get_agent(self, agent_id: str) -> Agent:
        return self._api.get_agent(agent_id)

    def list_routers(self) -> list[Router]:
        return self._api.list_routers()

    def list_networks(self) -> list[Network]:
        return self._api.list_networks()

    def get_router(self, router_id: str) -> Router:
        return self._api.get_router(router_id)

    def get_network(self, network_id: str) -> Network:
        return self._api.get_network(network_id)

    def routers_on_agent(self, agent_id: str) -> list[str]:
        return self._api.routers_on_agent(agent_id)

    def networks_on_agent(self, agent_id: str) -> list[str]:
        return self._api.networks_on_agent(agent_id)

    def agents_for_router(self, router_id: str) -> list[str]:
        return self._api.agents_for_router(router_id)

    def agents_for_network(self, network_id: str) -> list[str]:
        return self._api.agents_for_network(network_id)

    def ports_of_devices(self, device_ids: Sequence[str]) -> list[PortState]:
        return self._api.ports_of_devices(device_ids)

    def dhcp_ports(self, network_ids: Sequence[str]) -> list[PortState]:
        return self._api.dhcp_ports(network_ids)
