"""An in-memory Neutron that behaves like the real API for everything rpcdaemon does.

Used by the unit tests, the executor and plugin tests, the benchmarks and the demo instead of
``openstack_neutron.OpenStackNeutron``. The contract cases in ``tests/contract_cases.py`` run on both,
so every rule below mirrors what neutron-server 29 was seen to do (``docs``: the API tables), with the
same ``ErrorKind``, HTTP status and Neutron error type the real adapter reports:

- the order of checks is Neutron's: a router bind looks up the router, then the agent, then judges the
  agent (type, L3 agent mode, admin state, a configured ``router_id`` naming another router,
  ``handle_internal_only_routers = false`` for a router without gateway: 404 InvalidL3Agent), then
  existing bindings; a network bind looks up the network, then the agent; availability-zone hints are
  never checked on a manual bind (Neutron 29 answers 201 across zones);
- a ``dvr``/``dvr_no_external`` agent refuses every manual bind (409 DVRL3CannotAssignToDvrAgent) and
  every manual unbind, bound or not (409 DVRL3CannotRemoveFromDvrAgent, PERMANENT);
- binding a router that another L3 agent hosts is CONFLICT (HA routers may have several agents);
  binding it again to the same agent, unbinding what is not bound, binding a network already hosted by
  that agent and unbinding a network that is not hosted all return normally;
- a router bound to a **dead** (admin-up, not alive) L3 agent: the real server writes the binding, then
  makes a blocking ``router_added_to_agent`` RPC call nobody answers, hangs about 240 s and answers
  500. The fake keeps the binding too, waits ``dead_bind_delay`` seconds (default 0, so tests never
  hang) and raises TEMPORARY with status 500. The same happens with an agent that Neutron still
  lists as alive but that stopped answering RPC (``stop_answering``: it died after its last report);
  binding it again then answers 201 at once, since the binding is already there (Neutron skips the
  RPC then). A network bound to a dead DHCP agent is accepted (the real server only casts);
- ``agents_for_network`` of an unknown network is an empty list, as on the real server;
- ports, as far as readiness needs them: a router bound to a live agent has its ports (except
  ``distributed`` and HA ones) re-bound to that agent's host, DOWN, and ACTIVE ``port_up_delay``
  seconds later (``set_up_delay`` per agent; ``None`` = never, a target that never brings the router
  up), which is what the real agent's ``sync_routers`` and its L2 agent's ``update_device_list`` do;
  a network bound to a live DHCP agent gets a DHCP port on that host the same way. A bind to a dead
  or deaf agent moves no port (the agent never syncs).

Seeding helpers (``add_agent``, ``place_router``, ...) are not part of ``NeutronAPI`` and are not
counted in ``calls``; every ``NeutronAPI`` method is counted, failed calls included. ``latency`` and
``dead_bind_delay`` are slept (through the injected ``sleep``) outside the lock, so concurrent callers
overlap as they would against a server. ``fail_next`` and ``outage`` inject TEMPORARY (or any) errors.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from rpcdaemon.acting.api import ErrorKind, NeutronError
from rpcdaemon.acting.neutron_errors import neutron_error
from rpcdaemon.model import (
    DHCP_AGENT,
    L3_AGENT,
    MODE_DVR,
    MODE_DVR_NO_EXTERNAL,
    MODE_LEGACY,
    PORT_DHCP,
    PORT_ROUTER_DISTRIBUTED,
    PORT_ROUTER_GATEWAY,
    PORT_ROUTER_HA,
    PORT_ROUTER_INTERFACE,
    Agent,
    Network,
    PortState,
    Router,
)

T = TypeVar("T")

# L3 agent modes Neutron refuses as a manual bind target (and as a manual unbind source).
_DVR_ONLY_MODES = frozenset({MODE_DVR, MODE_DVR_NO_EXTERNAL})
# Router ports a bind does not re-bind: distributed ones live on every host, HA ones stay per host.
_NOT_MOVED = frozenset({PORT_ROUTER_DISTRIBUTED, PORT_ROUTER_HA})


@dataclass
class _Port:
    id: str
    device_id: str
    device_owner: str
    network_id: str
    host: str
    up_at: float | None  # ACTIVE from then on; None: DOWN for good


@dataclass
class _Fault:
    remaining: int
    kind: ErrorKind
    method: str | None
    applied: bool


class FakeNeutron:
    """Thread-safe in-memory ``NeutronAPI`` with seeding, call counting and fault injection."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        dead_bind_delay: float = 0.0,
        port_up_delay: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.latency = latency
        self.dead_bind_delay = dead_bind_delay
        self.port_up_delay = port_up_delay
        self._clock = clock
        self._ports: dict[str, _Port] = {}
        self._up_delay: dict[str, float | None] = {}  # agent id -> its own port_up_delay
        self.calls: Counter[str] = Counter()
        self._sleep = sleep
        self._lock = threading.RLock()
        self._agents: dict[str, Agent] = {}
        self._routers: dict[str, Router] = {}
        self._networks: dict[str, Network] = {}
        self._router_agents: dict[str, list[str]] = {}
        self._network_agents: dict[str, list[str]] = {}
        self._faults: list[_Fault] = []
        self._outage = False
        self._deaf: set[str] = set()
        # Agents that refuse every bind as unsuitable, and how many binds each refused (see refuse_binds).
        self._refusing: set[str] = set()
        self.refusals: Counter[str] = Counter()

    # ----------------------------------------------------------------- seeding and inspection

    def add_agent(
        self,
        agent_type: str,
        host: str,
        *,
        admin_state_up: bool = True,
        alive: bool = True,
        agent_mode: str | None = None,
        az: str | None = "nova",
        agent_id: str | None = None,
        router_id: str | None = None,
        handle_internal_only_routers: bool = True,
    ) -> Agent:
        """Register an agent; an L3 agent's mode defaults to ``legacy`` as in Neutron. ``router_id`` and
        ``handle_internal_only_routers`` are the L3 agent's configuration options of those names."""
        if agent_mode is None and agent_type == L3_AGENT:
            agent_mode = MODE_LEGACY
        agent = Agent(
            id=agent_id or str(uuid.uuid4()),
            agent_type=agent_type,
            host=host,
            admin_state_up=admin_state_up,
            alive=alive,
            agent_mode=agent_mode,
            availability_zone=az,
            router_id=router_id,
            handle_internal_only_routers=handle_internal_only_routers,
        )
        with self._lock:
            if agent.id in self._agents:
                raise ValueError(f"agent id {agent.id} already exists")
            self._agents[agent.id] = agent
        return agent

    def set_alive(self, agent_id: str, alive: bool) -> Agent:
        with self._lock:
            agent = replace(self._seeded_agent(agent_id), alive=alive)
            self._agents[agent_id] = agent
            return agent

    def set_admin_state(self, agent_id: str, admin_state_up: bool) -> Agent:
        with self._lock:
            agent = replace(self._seeded_agent(agent_id), admin_state_up=admin_state_up)
            self._agents[agent_id] = agent
            return agent

    def refuse_binds(self, agent_id: str, refuse: bool = True) -> None:
        """Every bind to this agent is refused (404 InvalidL3Agent / InvalidDHCPAgent) although its listing
        looks fine, as when its configuration changed after the daemon's last listing. Counted in ``refusals``."""
        with self._lock:
            self._seeded_agent(agent_id)
            if refuse:
                self._refusing.add(agent_id)
            else:
                self._refusing.discard(agent_id)

    def stop_answering(self, agent_id: str, deaf: bool = True) -> None:
        """The agent's process is gone but Neutron's ``alive`` flag does not know yet: RPC to it times out."""
        with self._lock:
            self._seeded_agent(agent_id)
            if deaf:
                self._deaf.add(agent_id)
            else:
                self._deaf.discard(agent_id)

    def delete_agent(self, agent_id: str) -> None:
        """Remove an agent and, as the database cascade does, its bindings."""
        with self._lock:
            self._seeded_agent(agent_id)
            del self._agents[agent_id]
            for hosts in (*self._router_agents.values(), *self._network_agents.values()):
                if agent_id in hosts:
                    hosts.remove(agent_id)

    def add_router(
        self,
        name: str = "",
        *,
        distributed: bool = False,
        ha: bool = False,
        az_hints: Iterable[str] = (),
        admin_state_up: bool = True,
        router_id: str | None = None,
        external_gateway: bool = False,
    ) -> Router:
        """Create a router hosted nowhere (creating a legacy one does not schedule it)."""
        router = Router(
            id=router_id or str(uuid.uuid4()),
            name=name,
            distributed=distributed,
            ha=ha,
            availability_zone_hints=tuple(az_hints),
            admin_state_up=admin_state_up,
            external_gateway=external_gateway,
        )
        with self._lock:
            if router.id in self._routers:
                raise ValueError(f"router id {router.id} already exists")
            self._routers[router.id] = router
            self._router_agents[router.id] = []
        return router

    def delete_router(self, router_id: str) -> None:
        with self._lock:
            if router_id not in self._routers:
                raise KeyError(f"no router {router_id}")
            del self._routers[router_id]
            del self._router_agents[router_id]
            self._ports = {pid: p for pid, p in self._ports.items() if p.device_id != router_id}

    def add_network(
        self,
        name: str = "",
        *,
        dhcp: bool = True,
        az_hints: Iterable[str] = (),
        network_id: str | None = None,
    ) -> Network:
        """Create a network hosted nowhere; ``dhcp`` says whether it has a DHCP-enabled subnet."""
        network = Network(
            id=network_id or str(uuid.uuid4()),
            name=name,
            dhcp_enabled=dhcp,
            availability_zone_hints=tuple(az_hints),
        )
        with self._lock:
            if network.id in self._networks:
                raise ValueError(f"network id {network.id} already exists")
            self._networks[network.id] = network
            self._network_agents[network.id] = []
        return network

    def set_network_dhcp(self, network_id: str, enabled: bool) -> None:
        """A subnet of the network gets DHCP enabled (or its last one disabled)."""
        with self._lock:
            self._networks[network_id] = replace(self._networks[network_id], dhcp_enabled=enabled)

    def delete_network(self, network_id: str) -> None:
        with self._lock:
            if network_id not in self._networks:
                raise KeyError(f"no network {network_id}")
            del self._networks[network_id]
            del self._network_agents[network_id]
            self._ports = {pid: p for pid, p in self._ports.items() if p.network_id != network_id}

    def place_router(self, router_id: str, agent_id: str) -> None:
        """Seed a binding without any check (e.g. a router already on an agent that later died)."""
        with self._lock:
            self._seeded_agent(agent_id)
            hosts = self._router_agents[router_id]
            if agent_id not in hosts:
                hosts.append(agent_id)

    def place_network(self, network_id: str, agent_id: str) -> None:
        """Seed a DHCP binding without any check."""
        with self._lock:
            self._seeded_agent(agent_id)
            hosts = self._network_agents[network_id]
            if agent_id not in hosts:
                hosts.append(agent_id)

    def add_port(
        self,
        device_id: str,
        device_owner: str,
        *,
        network_id: str = "",
        host: str = "",
        active: bool = False,
        port_id: str | None = None,
    ) -> str:
        """Seed a port (e.g. a router's interface, already ACTIVE on the host that later dies)."""
        port = _Port(port_id or str(uuid.uuid4()), device_id, device_owner, network_id, host,
                     -float("inf") if active else None)
        with self._lock:
            self._ports[port.id] = port
        return port.id

    def add_router_ports(self, router_id: str, *, interfaces: int = 1, gateway: bool = False, host: str = "",
                         active: bool = True) -> list[str]:
        """Seed a router's interface ports (and its gateway port) bound to ``host``."""
        owners = [PORT_ROUTER_INTERFACE] * interfaces + ([PORT_ROUTER_GATEWAY] if gateway else [])
        return [self.add_port(router_id, owner, host=host, active=active) for owner in owners]

    def set_up_delay(self, agent_id: str, delay: float | None) -> None:
        """Seconds until ports bound to this agent's host are ACTIVE; ``None``: never (a broken target)."""
        with self._lock:
            self._seeded_agent(agent_id)
            self._up_delay[agent_id] = delay

    def ports(self) -> list[PortState]:
        """Every port (uncounted snapshot)."""
        with self._lock:
            return [self._port_state(p) for p in self._ports.values()]

    def router_bindings(self) -> dict[str, frozenset[str]]:
        """Router id -> ids of the agents hosting it, for every router (uncounted snapshot)."""
        with self._lock:
            return {rid: frozenset(hosts) for rid, hosts in self._router_agents.items()}

    def network_bindings(self) -> dict[str, frozenset[str]]:
        """Network id -> ids of the DHCP agents hosting it, for every network (uncounted snapshot)."""
        with self._lock:
            return {nid: frozenset(hosts) for nid, hosts in self._network_agents.items()}

    def agent(self, agent_id: str) -> Agent:
        """The agent as stored (uncounted, unlike ``get_agent``)."""
        with self._lock:
            return self._seeded_agent(agent_id)

    # ----------------------------------------------------------------- fault injection

    def fail_next(
        self,
        n: int = 1,
        kind: ErrorKind = ErrorKind.TEMPORARY,
        *,
        method: str | None = None,
        applied: bool = False,
    ) -> None:
        """Make the next ``n`` calls (of ``method`` only, if given) raise ``kind``.

        ``applied=True`` performs the call's effect before raising, like a request that reached
        Neutron but whose answer was lost (a client timeout on a bind that went through).
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        with self._lock:
            self._faults.append(_Fault(n, kind, method, applied))

    @property
    def outage(self) -> bool:
        """While true, every call raises TEMPORARY without any effect, like an unreachable API."""
        with self._lock:
            return self._outage

    @outage.setter
    def outage(self, value: bool) -> None:
        with self._lock:
            self._outage = value

    # ----------------------------------------------------------------- NeutronAPI

    def list_agents(self) -> list[Agent]:
        return self._call("list_agents", lambda: list(self._agents.values()))

    def get_agent(self, agent_id: str) -> Agent:
        return self._call("get_agent", lambda: self._existing_agent(agent_id))

    def list_routers(self) -> list[Router]:
        return self._call("list_routers", lambda: list(self._routers.values()))

    def list_networks(self) -> list[Network]:
        return self._call("list_networks", lambda: list(self._networks.values()))

    def get_router(self, router_id: str) -> Router:
        return self._call("get_router", lambda: self._existing_router(router_id))

    def get_network(self, network_id: str) -> Network:
        def run() -> Network:
            network = self._networks.get(network_id)
            if network is None:
                raise _error(404, "NetworkNotFound", f"Network {network_id} could not be found.")
            return network

        return self._call("get_network", run)

    def routers_on_agent(self, agent_id: str) -> list[str]:
        def run() -> list[str]:
            self._existing_agent(agent_id)
            return [rid for rid, hosts in self._router_agents.items() if agent_id in hosts]

        return self._call("routers_on_agent", run)

    def networks_on_agent(self, agent_id: str) -> list[str]:
        def run() -> list[str]:
            self._existing_agent(agent_id)
            return [nid for nid, hosts in self._network_agents.items() if agent_id in hosts]

        return self._call("networks_on_agent", run)

    def agents_for_router(self, router_id: str) -> list[str]:
        def run() -> list[str]:
            self._existing_router(router_id)
            return list(self._router_agents[router_id])

        return self._call("agents_for_router", run)

    def agents_for_network(self, network_id: str) -> list[str]:
        # Neutron does not look the network up here: an unknown one simply has no agents.
        return self._call("agents_for_network", lambda: list(self._network_agents.get(network_id, ())))

    def ports_of_devices(self, device_ids: Sequence[str]) -> list[PortState]:
        def run() -> list[PortState]:
            wanted = set(device_ids)
            return [self._port_state(p) for p in self._ports.values() if p.device_id in wanted]

        return self._call("ports_of_devices", run)

    def dhcp_ports(self, network_ids: Sequence[str]) -> list[PortState]:
        def run() -> list[PortState]:
            wanted = set(network_ids)
            return [self._port_state(p) for p in self._ports.values()
                    if p.device_owner == PORT_DHCP and p.network_id in wanted]

        return self._call("dhcp_ports", run)

    def bind_router(self, agent_id: str, router_id: str) -> None:
        dead_agent = self._call("bind_router", lambda: self._bind_router(agent_id, router_id))
        if dead_agent is not None:
            # Outside the lock: the real server blocks only this request while its RPC call times out.
            if self.dead_bind_delay > 0:
                self._sleep(self.dead_bind_delay)
            raise _error(
                500, "HTTPInternalServerError", "Request Failed: internal server error while processing your request."
            )

    def unbind_router(self, agent_id: str, router_id: str) -> None:
        self._call("unbind_router", lambda: self._unbind_router(agent_id, router_id))

    def bind_network(self, agent_id: str, network_id: str) -> None:
        self._call("bind_network", lambda: self._bind_network(agent_id, network_id))

    def unbind_network(self, agent_id: str, network_id: str) -> None:
        def run() -> None:
            self._existing_agent(agent_id)
            hosts = self._network_agents.get(network_id)
            if hosts is not None and agent_id in hosts:
                hosts.remove(agent_id)
                host = self._agents[agent_id].host
                self._ports = {pid: p for pid, p in self._ports.items()
                               if not (p.device_owner == PORT_DHCP and p.network_id == network_id and p.host == host)}

        self._call("unbind_network", run)

    def set_agent_admin_state(self, agent_id: str, up: bool) -> None:
        def run() -> None:
            self._agents[agent_id] = replace(self._existing_agent(agent_id), admin_state_up=up)

        self._call("set_agent_admin_state", run)

    # ----------------------------------------------------------------- behaviour

    def _bind_router(self, agent_id: str, router_id: str) -> Agent | None:
        """Bind under the lock; return the agent when it is dead (the caller then fails like Neutron)."""
        router = self._existing_router(router_id)
        agent = self._existing_agent(agent_id)
        if agent.agent_type != L3_AGENT:
            raise _invalid_l3_agent(agent_id)
        if agent.agent_mode in _DVR_ONLY_MODES:
            raise _error(
                409, "DVRL3CannotAssignToDvrAgent", "Not allowed to manually assign a router to an agent in 'dvr' mode."
            )
        if router.distributed and (agent.agent_mode or MODE_LEGACY) == MODE_LEGACY:
            raise _error(
                409,
                "RouterL3AgentMismatch",
                f"Cannot host distributed router {router_id} on legacy L3 agent {agent_id}.",
            )
        # Neutron's get_l3_agent_candidates: an agent whose configuration names another router, or
        # that handles no internal-only routers, is as unsuitable as a disabled one.
        if (
            not agent.admin_state_up
            or (agent.router_id and agent.router_id != router_id)
            or (not agent.handle_internal_only_routers and not router.external_gateway)
        ):
            raise _invalid_l3_agent(agent_id)
        if agent_id in self._refusing:
            self.refusals[agent_id] += 1
            raise _invalid_l3_agent(agent_id)
        hosts = self._router_agents[router_id]
        if agent_id in hosts:
            return None
        if hosts and not router.ha:
            raise _error(
                409,
                "RouterHostedByL3Agent",
                f"The router {router_id} has been already hosted by the L3 Agent {hosts[0]}.",
            )
        hosts.append(agent_id)
        if not agent.alive or agent_id in self._deaf:
            return agent
        # The agent answers router_added_to_agent and syncs: the router's ports follow it to its host.
        for port in self._ports.values():
            if port.device_id == router_id and port.device_owner not in _NOT_MOVED and port.host != agent.host:
                port.host, port.up_at = agent.host, self._up_at(agent_id)
        return None

    def _unbind_router(self, agent_id: str, router_id: str) -> None:
        agent = self._existing_agent(agent_id)
        if agent.agent_type == L3_AGENT and agent.agent_mode in _DVR_ONLY_MODES:
            raise _error(
                409,
                "DVRL3CannotRemoveFromDvrAgent",
                "Not allowed to manually remove a router from an agent in 'dvr' mode.",
            )
        hosts = self._router_agents.get(router_id)
        if hosts is not None and agent_id in hosts:
            hosts.remove(agent_id)
        # Neutron unbinds first and looks the router up afterwards.
        self._existing_router(router_id)

    def _bind_network(self, agent_id: str, network_id: str) -> None:
        if network_id not in self._networks:
            raise _error(404, "NetworkNotFound", f"Network {network_id} could not be found.")
        agent = self._existing_agent(agent_id)
        if agent.agent_type != DHCP_AGENT or not agent.admin_state_up:
            raise _error(404, "InvalidDHCPAgent", f"Agent {agent_id} is not a valid DHCP Agent or has been disabled.")
        if agent_id in self._refusing:
            self.refusals[agent_id] += 1
            raise _error(404, "InvalidDHCPAgent", f"Agent {agent_id} is not a valid DHCP Agent or has been disabled.")
        hosts = self._network_agents[network_id]
        if agent_id not in hosts:
            hosts.append(agent_id)
        if agent.alive and agent_id not in self._deaf and self._networks[network_id].dhcp_enabled and not any(
            p.device_owner == PORT_DHCP and p.network_id == network_id and p.host == agent.host
            for p in self._ports.values()
        ):
            # The DHCP agent hears network_create_end and creates its DHCP port on its host.
            port = _Port(str(uuid.uuid4()), f"dhcp-{agent.host}-{network_id}", PORT_DHCP, network_id,
                         agent.host, self._up_at(agent_id))
            self._ports[port.id] = port

    def _up_at(self, agent_id: str) -> float | None:
        delay = self._up_delay.get(agent_id, self.port_up_delay)
        return None if delay is None else self._clock() + delay

    def _port_state(self, port: _Port) -> PortState:
        up = port.up_at is not None and self._clock() >= port.up_at
        return PortState(port.id, port.device_id, port.device_owner, port.host, "ACTIVE" if up else "DOWN",
                         port.network_id)

    # ----------------------------------------------------------------- plumbing

    def _call(self, method: str, run: Callable[[], T]) -> T:
        """Count, delay, inject faults, then run ``run`` under the lock."""
        with self._lock:
            self.calls[method] += 1
        if self.latency > 0:
            self._sleep(self.latency)
        with self._lock:
            if self._outage:
                raise NeutronError(ErrorKind.TEMPORARY, "Neutron API unreachable (simulated outage)")
            fault = self._take_fault(method)
            if fault is None:
                return run()
            if fault.applied:
                # The effect happened; only the answer is lost, whatever it would have been.
                with contextlib.suppress(NeutronError):
                    run()
            raise NeutronError(fault.kind, f"injected {fault.kind.value} fault in {method}")

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method is None or fault.method == method:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _seeded_agent(self, agent_id: str) -> Agent:
        try:
            return self._agents[agent_id]
        except KeyError:
            raise KeyError(f"no agent {agent_id}") from None

    def _existing_agent(self, agent_id: str) -> Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise _error(404, "AgentNotFound", f"Agent {agent_id} could not be found.")
        return agent

    def _existing_router(self, router_id: str) -> Router:
        router = self._routers.get(router_id)
        if router is None:
            raise _error(404, "RouterNotFound", f"Router {router_id} could not be found")
        return router


def _invalid_l3_agent(agent_id: str) -> NeutronError:
    return _error(404, "InvalidL3Agent", f"Agent {agent_id} is not a L3 Agent or has been disabled")


def _error(status: int, neutron_type: str, message: str) -> NeutronError:
    # Classified exactly as the real adapter classifies Neutron's answer.
    return neutron_error(status, neutron_type, message, "FakeNeutron")
