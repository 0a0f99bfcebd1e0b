"""``OpenStackNeutron`` over real HTTP against a scripted local server.

What the real neutron-server cannot be made to do on demand (429 with Retry-After, 503, a hung
answer, pages of three items, a Keystone in front) is scripted here, and the adapter is exercised
through the whole openstacksdk / keystoneauth / requests stack: classification, no retries, no auth
headers with noauth, ``Connection: close``, pagination, the subnet-based ``dhcp_enabled``, and that
neither the password nor the token reaches a log. The contract on a real server is in
``tests/e2e/test_contract.py``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rpcdaemon.access import NeutronAccess
from rpcdaemon.acting.api import ErrorKind, NeutronError
from rpcdaemon.acting.neutron_errors import parse_retry_after
from rpcdaemon.acting.openstack_neutron import OpenStackNeutron

Answer = tuple[int, Any, dict[str, str]]
Route = Callable[["Seen"], Answer]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    client_port: int


@dataclass
class Stub:
    """Routes ``(method, path)`` to an answer; records every request it sees."""

    url: str = ""
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.routes[(method, path)] = lambda _seen: (status, body, headers or {})

    def api_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/v2.0/")]

    def answer(self, seen: Seen) -> Answer:
        self.seen.append(seen)
        if seen.method == "GET" and seen.path == "/":
            href = f"{self.url}/v2.0/"
            return (
                200,
                {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"href": href, "rel": "self"}]}]},
                {},
            )
        route = self.routes.get((seen.method, seen.path))
        if route is None:
            return 404, {"NeutronError": {"type": "HTTPNotFound", "message": "no route", "detail": ""}}, {}
        return route(seen)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urllib.parse.urlsplit(self.path)
        seen = Seen(
            self.command,
            split.path,
            urllib.parse.parse_qs(split.query),
            {k.lower(): v for k, v in self.headers.items()},
            json.loads(raw) if raw else None,
            self.client_address[1],
        )
        status, body, headers = self.server.stub.answer(seen)
        payload = b"" if status == 204 else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out on purpose
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: Stub


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stub = Stub(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.stub
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def api(stub: Stub) -> Iterator[OpenStackNeutron]:
    adapter = OpenStackNeutron.from_access(NeutronAccess(endpoint=stub.url, timeout=5.0), page_size=3)
    yield adapter
    adapter.close()


def neutron_error(kind: str) -> dict[str, Any]:
    return {"NeutronError": {"type": kind, "message": f"{kind} happened", "detail": ""}}


AGENT = "a" * 8
ROUTER = "r" * 8
NETWORK = "n" * 8


def test_noauth_sends_no_auth_headers_and_closes_connections(api: OpenStackNeutron, stub: Stub) -> None:
    stub.on("POST", f"/v2.0/agents/{AGENT}/l3-routers", 201, None)
    api.bind_router(AGENT, ROUTER)
    (seen,) = stub.api_requests()
    assert seen.body == {"router_id": ROUTER}
    assert "x-auth-token" not in seen.headers
    assert "x-project-id" not in seen.headers
    assert seen.headers["connection"] == "close"


def test_no_connection_is_reused(api: OpenStackNeutron, stub: Stub) -> None:
    # Like uWSGI's http-socket, this server closes after each answer without saying so; a reused
    # pooled connection would fail now and then with "Remote end closed connection".
    stub.on("GET", "/v2.0/agents", 200, {"agents": []})
    for _ in range(20):
        api.list_agents()
    ports = [s.client_port for s in stub.seen]
    assert len(ports) == 21  # version discovery + 20 calls
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize(
    ("status", "kind_name", "expected"),
    [
        (409, "RouterHostedByL3Agent", ErrorKind.CONFLICT),
        (404, "InvalidL3Agent", ErrorKind.INVALID_TARGET),
        (409, "DVRL3CannotAssignToDvrAgent", ErrorKind.INVALID_TARGET),
        (409, "RouterL3AgentMismatch", ErrorKind.INVALID_TARGET),
        (404, "AgentNotFound", ErrorKind.NOT_FOUND),
        (404, "RouterNotFound", ErrorKind.NOT_FOUND),
        (404, "HTTPNotFound", ErrorKind.PERMANENT),
        (500, "HTTPInternalServerError", ErrorKind.TEMPORARY),
        (502, "Bad Gateway", ErrorKind.TEMPORARY),
        (503, "HTTPServiceUnavailable", ErrorKind.TEMPORARY),
        (400, "HTTPBadRequest", ErrorKind.PERMANENT),
        (403, "HTTPForbidden", ErrorKind.PERMANENT),
        (409, "RouterDoesntSupportScheduling", ErrorKind.PERMANENT),
    ],
)
def test_bind_router_errors_are_classified_once_without_retry(
    api: OpenStackNeutron, stub: Stub, status: int, kind_name: str, expected: ErrorKind
) -> None:
    stub.on("POST", f"/v2.0/agents/{AGENT}/l3-routers", status, neutron_error(kind_name))
    with pytest.raises(NeutronError) as caught:
        api.bind_router(AGENT, ROUTER)
    assert caught.value.kind is expected
    assert caught.value.status == status
    assert caught.value.neutron_type == kind_name
    assert f"{kind_name} happened" in str(caught.value)
    assert len(stub.api_requests()) == 1  # openstacksdk/keystoneauth did not retry


def test_429_carries_retry_after(api: OpenStackNeutron, stub: Stub) -> None:
    stub.on("GET", "/v2.0/agents", 429, {"message": "slow down"}, {"Retry-After": "7"})
    with pytest.raises(NeutronError) as caught:
        api.list_agents()
    assert caught.value.kind is ErrorKind.TEMPORARY
    assert caught.value.retry_after == 7.0
    assert len(stub.api_requests()) == 1


def test_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(30.0)
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("-5") == 0.0


def test_network_idempotent_answers_return_normally(api: OpenStackNeutron, stub: Stub) -> None:
    stub.on("POST", f"/v2.0/agents/{AGENT}/dhcp-networks", 409, neutron_error("NetworkHostedByDHCPAgent"))
    stub.on(
        "DELETE", f"/v2.0/agents/{AGENT}/dhcp-networks/{NETWORK}", 409, neutron_error("NetworkNotHostedByDhcpAgent")
    )
    api.bind_network(AGENT, NETWORK)
    api.unbind_network(AGENT, NETWORK)
    assert [(s.method, s.body) for s in stub.api_requests()] == [("POST", {"network_id": NETWORK}), ("DELETE", None)]


def test_router_not_hosted_409_on_unbind_is_done(api: OpenStackNeutron, stub: Stub) -> None:
    # Neutron 29 with ML2/OVS answers 204 here (the contract case); the OVN L3 plugin and older
    # releases answer 409 RouterNotHostedByL3Agent: either way the router is not on that agent.
    stub.on("DELETE", f"/v2.0/agents/{AGENT}/l3-routers/{ROUTER}", 409, neutron_error("RouterNotHostedByL3Agent"))
    api.unbind_router(AGENT, ROUTER)
    assert [s.method for s in stub.api_requests()] == ["DELETE"]
    # The same type on a bind is no "done": only the unbind has that meaning.
    stub.on("POST", f"/v2.0/agents/{AGENT}/l3-routers", 409, neutron_error("RouterNotHostedByL3Agent"))
    with pytest.raises(NeutronError) as caught:
        api.bind_router(AGENT, ROUTER)
    assert caught.value.kind is ErrorKind.PERMANENT


def test_dvr_unbind_refusal_is_permanent(api: OpenStackNeutron, stub: Stub) -> None:
    stub.on("DELETE", f"/v2.0/agents/{AGENT}/l3-routers/{ROUTER}", 409,
            neutron_error("DVRL3CannotRemoveFromDvrAgent"))
    with pytest.raises(NeutronError) as caught:
        api.unbind_router(AGENT, ROUTER)
    assert (caught.value.kind, caught.value.status) == (ErrorKind.PERMANENT, 409)
    assert len(stub.api_requests()) == 1  # not retried by the adapter


def test_agent_configuration_restrictions_are_read(api: OpenStackNeutron, stub: Stub) -> None:
    base = {"agent_type": "L3 agent", "admin_state_up": True, "alive": True, "availability_zone": "az1"}
    stub.on("GET", "/v2.0/agents", 200, {"agents": [
        {**base, "id": "p", "host": "pinned", "configurations": {"agent_mode": "legacy", "router_id": ROUTER}},
        {**base, "id": "g", "host": "gw-only", "configurations": {"handle_internal_only_routers": False}},
        {**base, "id": "n", "host": "normal", "configurations": {"handle_internal_only_routers": True}},
        {**base, "id": "o", "host": "old", "configurations": None},
    ]})
    agents = {a.id: a for a in api.list_agents()}
    assert (agents["p"].router_id, agents["p"].handle_internal_only_routers) == (ROUTER, True)
    assert (agents["g"].router_id, agents["g"].handle_internal_only_routers) == (None, False)
    assert (agents["n"].router_id, agents["n"].handle_internal_only_routers) == (None, True)
    assert (agents["o"].router_id, agents["o"].handle_internal_only_routers) == (None, True)


def test_other_network_conflicts_still_raise(api: OpenStackNeutron, stub: Stub) -> None:
    stub.on("POST", f"/v2.0/agents/{AGENT}/dhcp-networks", 409, neutron_error("NetworkNotHostedByDhcpAgent"))
    with pytest.raises(NeutronError) as caught:
        api.bind_network(AGENT, NETWORK)
    assert caught.value.kind is ErrorKind.PERMANENT


def _paged(collection: str, items: list[dict[str, Any]], stub: Stub) -> Route:
    """Neutron-style pages: ``limit`` items after ``marker``, a next link while more remain."""

    def route(seen: Seen) -> Answer:
        limit = int(seen.query["limit"][0])
        marker = seen.query.get("marker", [None])[0]
        start = 0 if marker is None else next(i for i, it in enumerate(items) if it["id"] == marker) + 1
        page = items[start : start + limit]
        body: dict[str, Any] = {collection: page}
        if start + limit < len(items):
            query = urllib.parse.urlencode(
                [*[("fields", f) for f in seen.query.get("fields", [])], ("limit", limit), ("marker", page[-1]["id"])]
            )
            body[f"{collection}_links"] = [{"rel": "next", "href": f"{stub.url}/v2.0/{collection}?{query}"}]
        return 200, body, {}

    return route


def test_lists_follow_every_page(api: OpenStackNeutron, stub: Stub) -> None:
    routers = [{"id": f"router-{i:02d}", "name": f"r{i}", "ha": i == 4, "distributed": False} for i in range(8)]
    stub.routes[("GET", "/v2.0/routers")] = _paged("routers", routers, stub)
    listed = api.list_routers()
    assert [r.id for r in listed] == [r["id"] for r in routers]
    assert [r.ha for r in listed] == [i == 4 for i in range(8)]
    pages = stub.api_requests()
    assert len(pages) == 3  # 3 + 3 + 2 with page_size=3
    assert all(p.query["limit"] == ["3"] for p in pages)
    assert [p.query.get("marker") for p in pages] == [None, ["router-02"], ["router-05"]]
    assert "distributed" in pages[0].query["fields"]


def test_list_networks_takes_dhcp_from_one_subnet_listing(api: OpenStackNeutron, stub: Stub) -> None:
    networks = [{"id": f"net-{i}", "name": f"n{i}", "availability_zone_hints": ["az1"]} for i in range(5)]
    subnets = [
        {"id": "sub-0", "network_id": "net-0", "enable_dhcp": True},
        {"id": "sub-1", "network_id": "net-1", "enable_dhcp": False},
        {"id": "sub-2", "network_id": "net-2", "enable_dhcp": False},
        {"id": "sub-3", "network_id": "net-2", "enable_dhcp": True},
    ]
    stub.routes[("GET", "/v2.0/networks")] = _paged("networks", networks, stub)
    stub.routes[("GET", "/v2.0/subnets")] = _paged("subnets", subnets, stub)
    listed = {n.id: n for n in api.list_networks()}
    assert {nid for nid, n in listed.items() if n.dhcp_enabled} == {"net-0", "net-2"}
    assert listed["net-4"].availability_zone_hints == ("az1",)
    assert [s.path for s in stub.api_requests()] == ["/v2.0/networks"] * 2 + ["/v2.0/subnets"] * 2
    subnet_fields = stub.api_requests()[-1].query["fields"]
    assert sorted(subnet_fields) == ["enable_dhcp", "id", "network_id"]


def test_read_helpers_parse_agents_and_ids(api: OpenStackNeutron, stub: Stub) -> None:
    agent = {
        "id": AGENT,
        "agent_type": "L3 agent",
        "host": "net-1",
        "admin_state_up": False,
        "alive": True,
        "availability_zone": "az2",
        "configurations": {"agent_mode": "dvr_snat"},
    }
    stub.on("GET", f"/v2.0/agents/{AGENT}", 200, {"agent": agent})
    stub.on("GET", f"/v2.0/routers/{ROUTER}/l3-agents", 200, {"agents": [agent]})
    stub.on("GET", f"/v2.0/agents/{AGENT}/l3-routers", 200, {"routers": [{"id": ROUTER, "name": "x"}]})
    got = api.get_agent(AGENT)
    assert (got.agent_mode, got.availability_zone, got.admin_state_up, got.alive) == ("dvr_snat", "az2", False, True)
    assert api.agents_for_router(ROUTER) == [AGENT]
    assert api.routers_on_agent(AGENT) == [ROUTER]


def test_garbage_answer_is_permanent(api: OpenStackNeutron, stub: Stub) -> None:
    stub.on("GET", f"/v2.0/agents/{AGENT}/l3-routers", 200, {"unexpected": True})
    with pytest.raises(NeutronError) as caught:
        api.routers_on_agent(AGENT)
    assert caught.value.kind is ErrorKind.PERMANENT


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_down_is_temporary_and_quick() -> None:
    adapter = OpenStackNeutron.from_access(NeutronAccess(endpoint=f"http://127.0.0.1:{_closed_port()}", timeout=5.0))
    try:
        for _ in range(2):  # the failed discovery is not cached: the second call tries again
            started = time.monotonic()
            with pytest.raises(NeutronError) as caught:
                adapter.list_agents()
            assert caught.value.kind is ErrorKind.TEMPORARY
            assert time.monotonic() - started < 2.0
    finally:
        adapter.close()


def test_hung_answer_times_out_as_temporary(stub: Stub) -> None:
    release = threading.Event()

    def hang(_seen: Seen) -> Answer:
        release.wait(10)
        return 200, {"agents": []}, {}

    stub.routes[("GET", "/v2.0/agents")] = hang
    adapter = OpenStackNeutron.from_access(NeutronAccess(endpoint=stub.url, timeout=0.3))
    try:
        started = time.monotonic()
        with pytest.raises(NeutronError) as caught:
            adapter.list_agents()
        assert caught.value.kind is ErrorKind.TEMPORARY
        assert time.monotonic() - started < 2.0
        assert len(stub.api_requests()) == 1
    finally:
        release.set()
        adapter.close()


PASSWORD = "hunter2-very-secret"
TOKEN = "tok-0123456789abcdef-secret"


def _keystone(stub: Stub) -> None:
    """A Keystone v3 at ``/identity`` whose catalog points the network service at the stub."""

    def version(_seen: Seen) -> Answer:
        link = {"rel": "self", "href": f"{stub.url}/identity/v3/"}
        return 200, {"version": {"id": "v3.14", "status": "stable", "links": [link]}}, {}

    def token(seen: Seen) -> Answer:
        user = seen.body["auth"]["identity"]["password"]["user"]
        assert user["password"] == PASSWORD
        assert user["domain"] == {"id": "d-users"}
        assert seen.body["auth"]["scope"]["project"] == {"name": "service", "domain": {"name": "Default"}}
        endpoint = {
            "id": "e1",
            "interface": "internal",
            "region": "RegionOne",
            "region_id": "RegionOne",
            "url": stub.url,
        }
        body = {
            "token": {
                "methods": ["password"],
                "expires_at": "2999-01-01T00:00:00.000000Z",
                "issued_at": "2026-01-01T00:00:00.000000Z",
                "user": {"id": "u1", "name": "rpcdaemon", "domain": {"id": "default", "name": "Default"}},
                "project": {"id": "p1", "name": "service", "domain": {"id": "default", "name": "Default"}},
                "roles": [{"id": "r1", "name": "admin"}],
                "catalog": [{"id": "s1", "type": "network", "name": "neutron", "endpoints": [endpoint]}],
            }
        }
        return 201, body, {"X-Subject-Token": TOKEN}

    stub.routes[("GET", "/identity/v3")] = version
    stub.routes[("GET", "/identity/v3/")] = version
    stub.routes[("POST", "/identity/v3/auth/tokens")] = token


def test_keystone_password_auth_sends_token_and_logs_no_secret(stub: Stub, caplog: pytest.LogCaptureFixture) -> None:
    _keystone(stub)
    stub.on("GET", "/v2.0/agents", 200, {"agents": []})
    access = NeutronAccess(
        auth_url=f"{stub.url}/identity/v3",
        username="rpcdaemon",
        password=PASSWORD,
        project_name="service",
        user_domain_id="d-users",
        region_name="RegionOne",
        timeout=5.0,
    )
    caplog.set_level(logging.DEBUG)
    adapter = OpenStackNeutron.from_access(access)
    try:
        assert adapter.list_agents() == []
    finally:
        adapter.close()
    (seen,) = stub.api_requests()
    assert seen.headers["x-auth-token"] == TOKEN
    assert caplog.records, "debug logging was captured"
    assert PASSWORD not in caplog.text
    assert TOKEN not in caplog.text
    assert PASSWORD not in repr(access)


def test_unknown_cloud_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no-such-cloud"):
        OpenStackNeutron.from_access(NeutronAccess(cloud="no-such-cloud"))


def test_missing_credentials_are_named() -> None:
    with pytest.raises(ValueError, match="password, project_name"):
        OpenStackNeutron.from_access(NeutronAccess(auth_url="http://keystone:5000/v3", username="u"))


def test_only_the_adapter_imports_openstack_and_keystone_checks_stay_light() -> None:
    """``acting.keystone`` (keystoneauth1's loaders, used by neutronconf before start) pulls in no openstacksdk."""
    src = Path(__file__).resolve().parents[2] / "src" / "rpcdaemon"
    importers = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "openstack" or name.startswith("openstack.") for name in names):
                importers.add(path.relative_to(src).as_posix())
    assert importers == {"acting/openstack_neutron.py"}
    probe = ("import sys, rpcdaemon.acting.keystone, rpcdaemon.config.neutronconf; "
             "print(sorted(m for m in sys.modules if m == 'openstack' or m.startswith('openstack.')))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_port_reads_filter_in_chunks_that_keep_urls_short(api: OpenStackNeutron, stub: Stub) -> None:
    def ports(seen: Seen) -> Answer:
        ids = seen.query.get("device_id") or seen.query.get("network_id") or []
        owner = (seen.query.get("device_owner") or ["network:router_interface"])[0]
        return 200, {"ports": [{"id": f"p-{d}", "device_id": d, "device_owner": owner, "binding:host_id": "h",
                                "status": "ACTIVE", "network_id": d} for d in ids]}, {}

    stub.routes[("GET", "/v2.0/ports")] = ports
    routers = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(250)]
    got = api.ports_of_devices(routers)
    assert sorted(p.device_id for p in got) == sorted(routers)
    assert {(p.host, p.status) for p in got} == {("h", "ACTIVE")}
    reads = stub.api_requests()
    assert [len(r.query["device_id"]) for r in reads] == [60, 60, 60, 60, 10]
    assert all(sorted(r.query["fields"]) == sorted(
        ["id", "device_id", "device_owner", "binding:host_id", "status", "network_id"]) for r in reads)
    longest = max(len(urllib.parse.urlencode([(k, v) for k, vs in r.query.items() for v in vs])) for r in reads)
    assert longest < 3000  # uWSGI's default buffer for the request line and headers is 4 KB
    stub.seen.clear()
    dhcp = api.dhcp_ports(["net-1", "net-2"])
    assert [p.device_owner for p in dhcp] == ["network:dhcp"] * 2
    assert stub.api_requests()[0].query["device_owner"] == ["network:dhcp"]
    stub.seen.clear()
    assert api.ports_of_devices([]) == []
    assert stub.api_requests() == []
