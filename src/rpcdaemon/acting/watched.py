"""A ``NeutronAPI`` that says when each call ends: the check loop's proof of life between its own calls.

``plugin_factory.build_plugin`` wraps the adapter a plugin (and its readiness follower) calls from the check
loop thread; the service sets ``on_call_end`` and pings systemd's watchdog from it. A reconcile of a
large cloud is one call per agent in a row (a thousand L3 agents with DVR), far longer than the
watchdog allows, yet each answer shows the loop is not stuck. A call that never ends calls nothing, so
the pings stop. The executor's workers report theirs through ``Executor.on_progress``: their adapter is a
``WatchedAPI`` too, but without ``on_call_end``, only to count errors.

``errors``: every call that raises a ``NeutronError`` is counted by its ``ErrorKind`` in an ``ApiErrors``
that the plugin's and its executor's wrappers share (``build_plugin``); the metrics read it after each
check (``rpcdaemon_api_errors_total{plugin,kind}``).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from rpcdaemon.acting.api import ErrorKind, NeutronAPI, NeutronError
from rpcdaemon.model import Agent, Network, PortState, Router

T = TypeVar("T")


class ApiErrors:
    """Failed Neutron calls by ``ErrorKind`` value, counted from any thread (the executor's workers too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, kind: ErrorKind) -> None:
        with self._lock:
            self._counts[kind.value] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class WatchedAPI:
    """Delegates every ``NeutronAPI`` call to ``api``; then calls ``on_call_end`` (returned or raised) and
    counts a ``NeutronError`` in ``errors``."""

    def __init__(self, api: NeutronAPI, on_call_end: Callable[[], None] | None = None, *,
                 errors: ApiErrors | None = None) -> None:
        self.api = api
        self.on_call_end = on_call_end
        self.errors = errors if errors is not None else ApiErrors()

    def _ended(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return fn(*args)
        except NeutronError as err:
            self.errors.add(err.kind)
            raise
        finally:
            if self.on_call_end is not None:
                self.on_call_end()

    def list_agents(self) -> list[Agent]:
        return self._ended(self.api.list_agents)

    def get_agent(self, agent_id: str) -> Agent:
        return self._ended(self.api.get_agent, agent_id)

    def list_routers(self) -> list[Router]:
        return self._ended(self.api.list_routers)

    def list_networks(self) -> list[Network]:
        return self._ended(self.api.list_networks)

    def get_router(self, router_id: str) -> Router:
        return self._ended(self.api.get_router, router_id)

    def get_network(self, network_id: str) -> Network:
        return self._ended(self.api.get_network, network_id)

    def routers_on_agent(self, agent_id: str) -> list[str]:
        return self._ended(self.api.routers_on_agent, agent_id)

    def networks_on_agent(self, agent_id: str) -> list[str]:
        return self._ended(self.api.networks_on_agent, agent_id)

    def agents_for_router(self, router_id: str) -> list[str]:
        return self._ended(self.api.agents_for_router, router_id)

    def agents_for_network(self, network_id: str) -> list[str]:
        return self._ended(self.api.agents_for_network, network_id)

    def bind_router(self, agent_id: str, router_id: str) -> None:
        self._ended(self.api.bind_router, agent_id, router_id)

    def unbind_router(self, agent_id: str, router_id: str) -> None:
        self._ended(self.api.unbind_router, agent_id, router_id)

    def bind_network(self, agent_id: str, network_id: str) -> None:
        self._ended(self.api.bind_network, agent_id, network_id)

    def unbind_network(self, agent_id: str, network_id: str) -> None:
        self._ended(self.api.unbind_network, agent_id, network_id)

    def set_agent_admin_state(self, agent_id: str, up: bool) -> None:
        self._ended(self.api.set_agent_admin_state, agent_id, up)

    def ports_of_devices(self, device_ids: Sequence[str]) -> list[PortState]:
        return self._ended(self.api.ports_of_devices, device_ids)

    def dhcp_ports(self, network_ids: Sequence[str]) -> list[PortState]:
        return self._ended(self.api.dhcp_ports, network_ids)
