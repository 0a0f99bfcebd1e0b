"""A small REST client for the harness's Neutron: seeds routers and networks, reads bindings.

Used by e2e tests (the ``rest`` fixture), the benchmarks and ``neutron-harness``. Talks plain
``requests`` to a no-auth Neutron (no headers: noauth then gives an admin context). Everything it
creates is remembered, and ``cleanup()`` deletes it, so one test's leftovers never become another
test's "unhosted routers". Failures raise ``SeedError`` carrying Neutron's error type.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import requests

T = TypeVar("T")
R = TypeVar("R")


class SeedError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, neutron_type: str, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {neutron_type}: {message}")
        self.status = status
        self.neutron_type = neutron_type


@dataclass(frozen=True)
class SeededNetwork:
    id: str
    subnet_id: str | None
    # DHCP agents Neutron bound by itself when the subnet was created (removed unless kept).
    auto_bound: tuple[str, ...] = ()


class SeedClient:
    def __init__(self, url: str, *, timeout: float = 60.0, workers: int = 8) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.workers = workers
        self.created_routers: list[str] = []
        self.created_networks: list[str] = []

    # -- plumbing -----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # A new connection per call: the harness's uWSGI answers "Connection: close".
        response = requests.request(method, f"{self.url}/v2.0{path}", json=body, timeout=self.timeout)
        if response.status_code >= 400:
            try:
                error = response.json()["NeutronError"]
                kind, message = error.get("type", ""), error.get("message", "")
            except (ValueError, KeyError, TypeError):
                kind, message = "", response.text[:300]
            raise SeedError(method, path, response.status_code, kind, message)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _parallel(self, func: Callable[[T], R], items: Iterable[T]) -> list[R]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(func, items))

    # -- agents -------------------------------------------------------------------------------

    def agents(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /v2.0/agents`` with optional filters, e.g. ``agents(host="h1", agent_type="L3 agent")``."""
        query = "&".join(f"{key}={quote(value)}" for key, value in filters.items())
        agents: list[dict[str, Any]] = self.request("GET", f"/agents?{query}" if query else "/agents")["agents"]
        return agents

    def agent(self, agent_id: str) -> dict[str, Any]:
        agent: dict[str, Any] = self.request("GET", f"/agents/{agent_id}")["agent"]
        return agent

    def agent_id(self, host: str, agent_type: str) -> str:
        found = self.agents(host=host, agent_type=agent_type)
        if len(found) != 1:
            raise LookupError(f"expected one {agent_type!r} on host {host!r}, Neutron lists {len(found)}")
        agent_id: str = found[0]["id"]
        return agent_id

    def set_admin_state(self, agent_id: str, up: bool) -> None:
        self.request("PUT", f"/agents/{agent_id}", {"agent": {"admin_state_up": up}})

    def delete_agent(self, agent_id: str) -> None:
        self.request("DELETE", f"/agents/{agent_id}")

    def delete_agents_of_hosts(self, prefix: str) -> int:
        """Delete every agent whose host starts with ``prefix`` (bindings go with them)."""
        doomed = [a["id"] for a in self.agents() if a["host"].startswith(prefix)]
        self._parallel(self.delete_agent, doomed)
        return len(doomed)

    # -- routers ------------------------------------------------------------------------------

    def create_router(
        self, name: str, *, ha: bool = False, distributed: bool = False, az_hints: Iterable[str] = ()
    ) -> str:
        """An HA router is scheduled by Neutron at once (onto up to max_l3_agents_per_router agents);
        a legacy or distributed one is hosted nowhere until bound."""
        body: dict[str, Any] = {"router": {"name": name, "ha": ha, "distributed": distributed}}
        if az_hints:
            body["router"]["availability_zone_hints"] = list(az_hints)
        router_id: str = self.request("POST", "/routers", body)["router"]["id"]
        self.created_routers.append(router_id)
        return router_id

    def create_routers_bulk(self, n: int, *, prefix: str = "bulk", ha: bool = False) -> list[str]:
        """``n`` routers named ``<prefix>-<i>``, created by a thread pool (about 100 per few seconds)."""
        return self._parallel(lambda i: self.create_router(f"{prefix}-{i}", ha=ha), range(n))

    def delete_router(self, router_id: str) -> None:
        self.request("DELETE", f"/routers/{router_id}")
        if router_id in self.created_routers:
            self.created_routers.remove(router_id)

    def bind_router(self, agent_id: str, router_id: str) -> None:
        self.request("POST", f"/agents/{agent_id}/l3-routers", {"router_id": router_id})

    def bind_routers_bulk(self, agent_id: str, router_ids: Iterable[str]) -> None:
        self._parallel(lambda rid: self.bind_router(agent_id, rid), router_ids)

    def unbind_router(self, agent_id: str, router_id: str) -> None:
        self.request("DELETE", f"/agents/{agent_id}/l3-routers/{router_id}")

    def routers_on_agent(self, agent_id: str) -> list[str]:
        return [r["id"] for r in self.request("GET", f"/agents/{agent_id}/l3-routers")["routers"]]

    def agents_for_router(self, router_id: str) -> list[str]:
        return [a["id"] for a in self.request("GET", f"/routers/{router_id}/l3-agents")["agents"]]

    # -- networks -----------------------------------------------------------------------------

    def create_network(
        self,
        name: str,
        *,
        dhcp: bool = True,
        cidr: str = "10.0.0.0/24",
        keep_auto_bindings: bool = False,
        settle: float = 0.3,
        az_hints: Iterable[str] = (),
    ) -> SeededNetwork:
        """A network with one IPv4 subnet. Neutron may bind it to a DHCP agent by itself when the
        subnet is created; those bindings are removed (re-checked after ``settle`` seconds) so the
        test decides placement, unless ``keep_auto_bindings``."""
        spec: dict[str, Any] = {"name": name}
        if az_hints:
            spec["availability_zone_hints"] = list(az_hints)
        network_id: str = self.request("POST", "/networks", {"network": spec})["network"]["id"]
        self.created_networks.append(network_id)
        subnet = {"network_id": network_id, "ip_version": 4, "cidr": cidr, "enable_dhcp": dhcp,
                  "name": f"{name}-subnet"}
        subnet_id: str = self.request("POST", "/subnets", {"subnet": subnet})["subnet"]["id"]
        auto = self.agents_for_network(network_id)
        if keep_auto_bindings:
            return SeededNetwork(network_id, subnet_id, tuple(auto))
        removed = list(auto)
        for agent_id in auto:
            self._unbind_network_quietly(agent_id, network_id)
        if dhcp and settle > 0:
            time.sleep(settle)
            for agent_id in self.agents_for_network(network_id):
                removed.append(agent_id)
                self._unbind_network_quietly(agent_id, network_id)
        return SeededNetwork(network_id, subnet_id, tuple(removed))

    def _unbind_network_quietly(self, agent_id: str, network_id: str) -> None:
        try:
            self.unbind_network(agent_id, network_id)
        except SeedError as exc:
            if exc.status != 409:  # NetworkNotHostedByDhcpAgent: someone else removed it already
                raise

    def delete_network(self, network_id: str) -> None:
        self.request("DELETE", f"/networks/{network_id}")
        if network_id in self.created_networks:
            self.created_networks.remove(network_id)

    def bind_network(self, agent_id: str, network_id: str) -> None:
        self.request("POST", f"/agents/{agent_id}/dhcp-networks", {"network_id": network_id})

    def unbind_network(self, agent_id: str, network_id: str) -> None:
        self.request("DELETE", f"/agents/{agent_id}/dhcp-networks/{network_id}")

    def networks_on_agent(self, agent_id: str) -> list[str]:
        return [n["id"] for n in self.request("GET", f"/agents/{agent_id}/dhcp-networks")["networks"]]

    def agents_for_network(self, network_id: str) -> list[str]:
        return [a["id"] for a in self.request("GET", f"/networks/{network_id}/dhcp-agents")["agents"]]

    # -- cleanup ------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Delete every router and network this client created (already-deleted ones are fine)."""

        def delete(path: str) -> None:
            try:
                self.request("DELETE", path)
            except SeedError as exc:
                if exc.status != 404:
                    raise

        self._parallel(delete, [f"/routers/{rid}" for rid in self.created_routers])
        self._parallel(delete, [f"/networks/{nid}" for nid in self.created_networks])
        self.created_routers.clear()
        self.created_networks.clear()
