"""Typed, frozen values shared by the observing, deciding and acting layers.

Everything that crosses a layer boundary is one of these: heartbeats decoded from the bus, agents,
routers and networks read from the Neutron API, the actions a planner emits and the outcomes the
executor reports. No module here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

L3_AGENT = "L3 agent"
DHCP_AGENT = "DHCP agent"
OVS_AGENT = "Open vSwitch agent"

# L3 agent modes (neutron.conf [DEFAULT] agent_mode of the l3 agent).
MODE_LEGACY = "legacy"
MODE_DVR = "dvr"
MODE_DVR_SNAT = "dvr_snat"
MODE_DVR_NO_EXTERNAL = "dvr_no_external"

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view of a copy of ``value``, so frozen dataclasses stay frozen."""
    if not value:
        return _EMPTY
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One ``report_state`` heard on the bus, stamped on the daemon's own monotonic clock."""

    agent_type: str
    host: str
    received_at: float
    binary: str = ""
    topic: str = ""
    agent_mode: str | None = None
    availability_zone: str | None = None
    start_flag: bool = False
    # The agent's own wall-clock time, kept for logs only: agents' clocks drift.
    sent_at: str | None = None
    configurations: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False, hash=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.agent_type, self.host)


@dataclass(frozen=True, slots=True)
class NetworkDeleted:
    """Neutron told the agents (or the notification bus) that a network is gone."""

    network_id: str
    received_at: float


@dataclass(frozen=True, slots=True)
class NetworkChanged:
    """A network or subnet was created or changed: the DHCPAgent plugin re-reads networks soon."""

    network_id: str
    received_at: float


class HintKind(StrEnum):
    """What a server-to-agent cast says happened to a network or router."""

    PLACED = "placed"  # bound to the agent of ``host`` (network_create_end, router_added_to_agent)
    REMOVED = "removed"  # unbound from that agent (network_delete_end to one agent, router_removed_from_agent)
    CHANGED = "changed"  # its details or ports changed (subnet_*_end, routers_updated, a router interface)
    DELETED = "deleted"  # gone (router_deleted on the fanout)


@dataclass(frozen=True, slots=True)
class NetworkHint:
    """neutron-server told a DHCP agent something about a network (its cast, copied to our queue).

    ``host`` is the agent's host from the routing key ``dhcp_agent.<host>``; untrusted like every bus
    value: the plugins only re-read the network from the API because of it.
    """

    network_id: str
    host: str | None
    kind: HintKind
    received_at: float
    method: str = ""


@dataclass(frozen=True, slots=True)
class RouterHint:
    """neutron-server told an L3 agent (or, for a router interface port, a DHCP agent) about a router."""

    router_id: str
    host: str | None
    kind: HintKind
    received_at: float
    method: str = ""


@dataclass(frozen=True, slots=True)
class BusHints:
    """What one cast says: a few hints, and whether it named more routers than the decoder keeps
    (``more_routers``: the L3Agent plugin then falls back to a full reconcile)."""

    networks: tuple[NetworkHint, ...] = ()
    routers: tuple[RouterHint, ...] = ()
    more_routers: bool = False


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent as the Neutron API lists it."""

    id: str
    agent_type: str
    host: str
    admin_state_up: bool = True
    # Neutron's own opinion (heartbeat_timestamp within agent_down_time), a second opinion only.
    alive: bool = True
    agent_mode: str | None = None
    availability_zone: str | None = None
    # From the agent's reported configurations (Neutron keeps the last heartbeat's): an L3 agent with
    # ``router_id`` set takes only that router; one with handle_internal_only_routers = false takes
    # only routers with an external gateway. Neutron refuses other binds with 404 InvalidL3Agent.
    router_id: str | None = None
    handle_internal_only_routers: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.agent_type, self.host)

    def describe(self) -> str:
        return f"{self.host} ({self.id})"


@dataclass(frozen=True, slots=True)
class Router:
    id: str
    name: str = ""
    distributed: bool = False
    ha: bool = False
    availability_zone_hints: tuple[str, ...] = ()
    admin_state_up: bool = True
    # Has an external gateway (``external_gateway_info``): only then may an L3 agent with
    # handle_internal_only_routers = false host it.
    external_gateway: bool = False


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    name: str = ""
    # True when at least one subnet of the network has enable_dhcp.
    dhcp_enabled: bool = False
    availability_zone_hints: tuple[str, ...] = ()


class ActionKind(StrEnum):
    MOVE_ROUTER = "move-router"
    BIND_ROUTER = "bind-router"
    UNBIND_ROUTER = "unbind-router"  # only by the readiness follow-up (move_unready): the planner then moves it
    UNBIND_NETWORK = "unbind-network"
    BIND_NETWORK = "bind-network"


@dataclass(frozen=True, slots=True)
class Action:
    """One change a planner wants. ``source`` is unbound first (if set), then ``target`` bound.

    MOVE_ROUTER: source and target; BIND_ROUTER: target only (the router is hosted nowhere);
    UNBIND_ROUTER, UNBIND_NETWORK: source only; BIND_NETWORK: target only.
    """

    kind: ActionKind
    resource_id: str
    source: Agent | None = None
    target: Agent | None = None
    reason: str = ""
    # True when the action is justified only by the source being dead: re-checked before each call.
    source_dead: bool = False

    def describe(self) -> str:
        """One readable phrase for the log: "move router R from host (id) to host (id) (reason)"."""
        verb = _VERBS[self.kind]
        parts = [f"{verb} {self.resource_id}"]
        if self.source is not None:
            parts.append(f"from {self.source.describe()}")
        if self.target is not None:
            parts.append(f"to {self.target.describe()}")
        if self.reason:
            parts.append(f"({self.reason})")
        return " ".join(parts)


_VERBS = {
    ActionKind.MOVE_ROUTER: "move router",
    ActionKind.BIND_ROUTER: "schedule router",
    ActionKind.UNBIND_ROUTER: "remove router",
    ActionKind.UNBIND_NETWORK: "remove network",
    ActionKind.BIND_NETWORK: "add network",
}


class OutcomeStatus(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"  # a pre-check said no (source came back, target went away): nothing changed
    FAILED = "failed"  # will be planned again on a later cycle
    DRY_RUN = "dry-run"


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    status: OutcomeStatus
    seconds: float
    detail: str = ""
    # Set when the target refused this router or network for good (Neutron's error type, e.g.
    # InvalidL3Agent): retrying the same pair cannot succeed, so the plugin remembers the pair.
    refusal: str = ""

    def fields(self) -> dict[str, Any]:
        """The outcome as flat, JSON-ready fields: the executor's per-action log line carries them
        (``extra={"fields": ...}``, shown by ``log_format = json``) and the audit trail writes them."""
        a = self.action
        return {
            "kind": a.kind.value,
            "resource_id": a.resource_id,
            "from_host": a.source.host if a.source is not None else None,
            "from_id": a.source.id if a.source is not None else None,
            "to_host": a.target.host if a.target is not None else None,
            "to_id": a.target.id if a.target is not None else None,
            "reason": a.reason,
            "status": self.status.value,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


# Port owners that make up a router on its L3 agent's host (neutron_lib.constants.DEVICE_OWNER_*).
PORT_ROUTER_INTERFACE = "network:router_interface"
PORT_ROUTER_GATEWAY = "network:router_gateway"
PORT_ROUTER_SNAT = "network:router_centralized_snat"
PORT_ROUTER_DISTRIBUTED = "network:router_interface_distributed"
PORT_ROUTER_HA = "network:router_ha_interface"
PORT_DHCP = "network:dhcp"
PORT_ACTIVE = "ACTIVE"


@dataclass(frozen=True, slots=True)
class PortState:
    """The few fields of a Neutron port that say whether its router or DHCP server is up on a host."""

    id: str
    device_id: str
    device_owner: str
    host: str  # binding:host_id ("" when unbound)
    status: str  # ACTIVE, DOWN, BUILD, ERROR
    network_id: str = ""

    @property
    def active(self) -> bool:
        return self.status == PORT_ACTIVE


class AuditRecord(Protocol):
    """Where the core reports a decision or an action for the audit trail (``[Daemon] audit_log``).

    The shell's ``audit.AuditLog.record``, handed to each plugin by the service (``FailoverPlugin.audit``);
    ``no_audit`` when the trail is off. ``record("fence", plugin="L3Agent", host="net-1", agent_id="a1",
    result="ok", seconds=1.2)`` writes one JSON line, ``ts``, ``event`` and ``instance`` added, secrets
    redacted. Any thread; never raises. A new event name or field goes into ``audit_schema.json`` too."""

    def __call__(self, event: str, /, **fields: Any) -> None: ...


def no_audit(event: str, /, **fields: Any) -> None:
    """The audit trail when ``[Daemon] audit_log`` is empty: nothing is written."""
