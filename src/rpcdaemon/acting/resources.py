"""What routers and networks differ in, as one table: ``ResourceKind``.

The L3Agent plugin moves routers, the DHCPAgent plugin networks; most of what surrounds a move is the
same for both. The rest is one frozen ``ResourceKind`` each, ``ROUTER`` and ``NETWORK``: their words
for the log, the agents that host them, the actions that bind and unbind them, the Neutron calls
that list them, read what an agent hosts, unbind one and read their ports, and when they are up on a
host. Read by the executor (read-back, unbinds), readiness following, the failover plugins and the
operator commands, instead of each asking "router or network?" on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.model import (
    DHCP_AGENT,
    L3_AGENT,
    PORT_DHCP,
    PORT_ROUTER_GATEWAY,
    PORT_ROUTER_INTERFACE,
    PORT_ROUTER_SNAT,
    ActionKind,
    Network,
    PortState,
    Router,
)

# The router ports that live on the L3 agent's host and so have to follow a move.
HOSTED_ROUTER_PORTS = frozenset({PORT_ROUTER_INTERFACE, PORT_ROUTER_GATEWAY, PORT_ROUTER_SNAT})


def router_ready(ports: Iterable[PortState], host: str) -> bool:
    """Every port of the router that lives on its L3 agent's host is bound to ``host`` and ACTIVE."""
    return all(p.host == host and p.active for p in ports if p.device_owner in HOSTED_ROUTER_PORTS)


def network_ready(ports: Iterable[PortState], host: str) -> bool:
    """A DHCP port of the network is bound to ``host`` and ACTIVE."""
    return any(p.device_owner == PORT_DHCP and p.host == host and p.active for p in ports)


@dataclass(frozen=True, slots=True)
class ResourceKind:
    name: str  # "router": the word of the log lines and of the audit trail's ready lines
    plural: str  # "routers"
    agent_type: str  # the agents that host it
    binds: frozenset[ActionKind]  # the actions that put it onto a target: followed until up, read back
    unbind: ActionKind  # the action that takes it off one agent
    # Hosted by one agent at a time (a router's central part): moved again, only its last target counts.
    # A network may be served by several DHCP agents at once.
    one_host: bool
    listed: Callable[[NeutronAPI], Sequence[Router | Network]]  # all of them
    hosted_on: Callable[[NeutronAPI, str], list[str]]  # the ids one agent hosts
    unbind_from: Callable[[NeutronAPI, str, str], None]  # (api, agent id, resource id)
    ports: Callable[[NeutronAPI, Sequence[str]], list[PortState]]  # the ports that say whether it is up
    port_of: Callable[[PortState], str]  # the resource a port of ``ports`` belongs to
    ready: Callable[[Iterable[PortState], str], bool]  # up on that host, judged from its ports


ROUTER = ResourceKind(
    name="router",
    plural="routers",
    agent_type=L3_AGENT,
    binds=frozenset({ActionKind.MOVE_ROUTER, ActionKind.BIND_ROUTER}),
    unbind=ActionKind.UNBIND_ROUTER,
    one_host=True,
    listed=lambda api: api.list_routers(),
    hosted_on=lambda api, agent_id: api.routers_on_agent(agent_id),
    unbind_from=lambda api, agent_id, rid: api.unbind_router(agent_id, rid),
    ports=lambda api, ids: api.ports_of_devices(ids),
    port_of=lambda p: p.device_id,
    ready=router_ready,
)

NETWORK = ResourceKind(
    name="network",
    plural="networks",
    agent_type=DHCP_AGENT,
    binds=frozenset({ActionKind.BIND_NETWORK}),
    unbind=ActionKind.UNBIND_NETWORK,
    one_host=False,
    listed=lambda api: api.list_networks(),
    hosted_on=lambda api, agent_id: api.networks_on_agent(agent_id),
    unbind_from=lambda api, agent_id, nid: api.unbind_network(agent_id, nid),
    ports=lambda api, ids: api.dhcp_ports(ids),
    port_of=lambda p: p.network_id,
    ready=network_ready,
)

_BY_ACTION = {action: kind for kind in (ROUTER, NETWORK) for action in (*kind.binds, kind.unbind)}
_BY_AGENT_TYPE = {kind.agent_type: kind for kind in (ROUTER, NETWORK)}


def kind_of(action: ActionKind) -> ResourceKind:
    """What an action moves."""
    return _BY_ACTION[action]


def hosted_by(agent_type: str) -> ResourceKind:
    """What agents of ``agent_type`` host (an L3 or DHCP agent; KeyError for any other type)."""
    return _BY_AGENT_TYPE[agent_type]
