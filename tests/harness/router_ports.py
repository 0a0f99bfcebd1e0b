"""Routers with real ports on the harness's Neutron: a gateway on a flat external network and an interface.

Used by the readiness e2e test and ``bench.bench_failover``. A router with ports cannot be deleted, so
``teardown()`` takes the interfaces and gateways off again before ``SeedClient.cleanup`` deletes the
routers and networks (it remembers them). ``up_on`` reads the routers' ports in bulk (50 routers a
listing) and says where each router's ports are all ACTIVE.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from tests.harness.seed import SeedClient, SeedError


@dataclass
class Topology:
    """Routers with ports, and what is needed to take them apart again (a router with ports cannot be deleted)."""

    rest: SeedClient
    external: str = ""
    internal: str = ""
    routers: tuple[str, ...] = ()
    interfaces: tuple[tuple[str, str], ...] = ()  # (router, port)

    def create_networks(self, tag: str) -> None:
        ext = self.rest.request("POST", "/networks", {"network": {
            "name": f"{tag}-ext", "router:external": True, "provider:network_type": "flat",
            "provider:physical_network": "physnet1"}})["network"]["id"]
        self.rest.created_networks.append(ext)
        self.rest.request("POST", "/subnets", {"subnet": {
            "network_id": ext, "ip_version": 4, "cidr": "172.24.0.0/22", "enable_dhcp": False}})
        internal = self.rest.create_network(f"{tag}-int", dhcp=False, cidr="10.20.0.0/22")
        self.external, self.internal = ext, internal.id

    def add_routers(self, agent_id: str, count: int, tag: str) -> list[str]:
        """``count`` routers bound to ``agent_id``, each with a gateway and one interface (a port of its own)."""
        routers = self.rest.create_routers_bulk(count, prefix=tag)
        self.rest.bind_routers_bulk(agent_id, routers)

        def wire(rid: str) -> tuple[str, str]:
            self.rest.request("PUT", f"/routers/{rid}", {"router": {
                "external_gateway_info": {"network_id": self.external}}})
            port = self.rest.request("POST", "/ports", {"port": {"network_id": self.internal,
                                                                   "name": f"{tag}-if"}})["port"]["id"]
            self.rest.request("PUT", f"/routers/{rid}/add_router_interface", {"port_id": port})
            return rid, port

        self.interfaces += tuple(self.rest._parallel(wire, routers))
        self.routers += tuple(routers)
        return routers

    def ports(self) -> dict[str, list[dict[str, object]]]:
        """Router id -> its ports (device_owner, binding:host_id, status), one listing per 50 routers."""
        out: dict[str, list[dict[str, object]]] = {rid: [] for rid in self.routers}
        ids = list(self.routers)
        for i in range(0, len(ids), 50):
            query = "&".join(f"device_id={rid}" for rid in ids[i:i + 50])
            for p in self.rest.request("GET", f"/ports?{query}")["ports"]:
                out[p["device_id"]].append(p)
        return out

    def up_on(self, hosts: set[str]) -> dict[str, str] | None:
        """Router id -> the host all its ports are ACTIVE on, if every router is up on one of ``hosts``."""
        placed = {}
        for rid, ports in self.ports().items():
            where = {(p["binding:host_id"], p["status"]) for p in ports}
            if len(ports) < 2 or len(where) != 1:
                return None
            host, status = where.pop()
            if status != "ACTIVE" or host not in hosts:
                return None
            placed[rid] = str(host)
        return placed

    def teardown(self) -> None:
        def unwire(item: tuple[str, str]) -> None:
            rid, port = item
            for method, path, body in (("PUT", f"/routers/{rid}/remove_router_interface", {"port_id": port}),
                                       ("PUT", f"/routers/{rid}", {"router": {"external_gateway_info": {}}})):
                try:
                    self.rest.request(method, path, body)
                except SeedError as exc:
                    if exc.status != 404:
                        raise

        self.rest._parallel(unwire, self.interfaces)

    def active_on(self, hosts: AbstractSet[str]) -> int:
        """How many routers have every port (at least two: gateway, interface) ACTIVE on one of ``hosts``."""
        up = 0
        for ports in self.ports().values():
            where = {(p["binding:host_id"], p["status"]) for p in ports}
            if len(ports) >= 2 and len(where) == 1:
                host, status = where.pop()
                up += status == "ACTIVE" and host in hosts
        return up
