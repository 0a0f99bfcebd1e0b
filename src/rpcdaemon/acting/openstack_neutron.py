"""The real ``NeutronAPI``: Neutron's REST API through openstacksdk's network proxy.

Built by the service from a ``NeutronAccess`` (``OpenStackNeutron.from_access``) and used by the
executor and the plugins; tests inject an ``openstack.connection.Connection``. This is the only module
that imports openstacksdk (``acting.keystone`` builds the keystoneauth session it uses, without
openstacksdk); failures are classified here, once: answers by ``neutron_errors.classify_response``,
requests that got no answer by ``classify_exception``.

Every request goes through ``proxy.request`` with ``raise_exc=False`` so the exact status and Neutron
error body are seen here; with no retries of its own (the executor owns retries and their schedule), a
per-call timeout, keystoneauth's request logging off (bodies and headers never reach a log), and by
default one TCP connection per request: neutron-server under uWSGI (``http-socket``) closes the socket
after each answer without saying so, and a client that reuses a pooled connection then intermittently
gets ``ECONNRESET`` or "Remote end closed connection" on its next request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import openstack
import openstack.connection
import requests
import requests.adapters
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as sdk_exc

from rpcdaemon.access import NeutronAccess
from rpcdaemon.acting.api import ErrorKind, NeutronError
from rpcdaemon.acting.keystone import AuthOptionError, keystone_session
from rpcdaemon.acting.neutron_errors import (
    NETWORK_ALREADY_HOSTED,
    NETWORK_NOT_HOSTED,
    ROUTER_NOT_HOSTED,
    classify_response,
)
from rpcdaemon.model import L3_AGENT, PORT_DHCP, Agent, Network, PortState, Router
from rpcdaemon.textfile import FileRefused, check_file

LOG = logging.getLogger(__name__)

_JSON_HEADERS = {"Accept": "application/json"}
_ROUTER_FIELDS = (
    "id", "name", "distributed", "ha", "availability_zone_hints", "admin_state_up", "external_gateway_info",
)
_NETWORK_FIELDS = ("id", "name", "availability_zone_hints")
# ``id`` is the pagination sort key: Neutron needs it in every page to build the next marker.
_SUBNET_FIELDS = ("id", "network_id", "enable_dhcp")
_PORT_FIELDS = ("id", "device_id", "device_owner", "binding:host_id", "status", "network_id")
# Filter values per port listing: 60 UUIDs (47 bytes each as ``device_id=...&``) and the fields keep the
# request line under 3 KB. uWSGI, neutron-server's usual container, refuses a request whose line and
# headers exceed its ``buffer-size`` (4 KB by default) by resetting the connection (seen on the harness).
PORT_FILTER_CHUNK = 60


def classify_exception(exc: Exception, what: str) -> NeutronError:
    """The ``NeutronError`` for a request that got no HTTP answer (or failed while authenticating)."""
    text = f"{what}: {exc}"
    if isinstance(exc, ks_exc.HttpError) and exc.http_status is not None:
        # Raised by keystoneauth itself, e.g. Keystone answering the token request.
        temporary = exc.http_status >= 500 or exc.http_status in (408, 429)
        kind = ErrorKind.TEMPORARY if temporary else ErrorKind.PERMANENT
        return NeutronError(kind, text, status=exc.http_status)
    if isinstance(exc, ks_exc.ConnectionError | ks_exc.DiscoveryFailure | OSError):
        # Refused, reset, timed out, TLS handshake cut, or no version document at the endpoint:
        # all things a restarting API (or load balancer) does.
        return NeutronError(ErrorKind.TEMPORARY, text)
    return NeutronError(ErrorKind.PERMANENT, text)


class OpenStackNeutron:
    """``NeutronAPI`` over openstacksdk. Thread-safe: the executor calls it from several workers."""

    def __init__(
        self,
        connection: openstack.connection.Connection,
        *,
        timeout: float = 30.0,
        authenticated: bool = True,
        page_size: int = 500,
        keep_alive: bool = False,
    ) -> None:
        """``authenticated=False`` sends no X-Auth-Token (Neutron ``auth_strategy = noauth``: any auth
        header would make the request a non-admin one). ``page_size`` is the ``limit`` of each page
        of a list call; every page is fetched."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._connection = connection
        self._timeout = timeout
        self._authenticated = authenticated
        self._page_size = page_size
        self._headers = dict(_JSON_HEADERS)
        if not keep_alive:
            # The header asks the server to close; closing on our side as well covers servers that
            # close without echoing it (urllib3 would otherwise pool the connection and reuse it).
            self._headers["Connection"] = "close"
            for scheme, inner in list(connection.session.adapters.items()):
                if not isinstance(inner, _OneRequestPerConnection):
                    connection.session.mount(scheme, _OneRequestPerConnection(inner))
        self._proxy: Any = None
        self._proxy_lock = threading.Lock()

    @classmethod
    def from_access(cls, access: NeutronAccess, *, page_size: int = 500) -> OpenStackNeutron:
        """Connect as ``access`` says. Raises ``ValueError`` for unusable settings (nothing is
        contacted yet: version discovery and authentication happen on the first call)."""
        common: dict[str, Any] = {
            "app_name": "rpcdaemon",
            "api_timeout": access.timeout,
            "connect_retries": 0,
            "status_code_retries": 0,
        }
        try:
            if access.endpoint:
                connection = openstack.connection.Connection(
                    auth_type="none", network_endpoint_override=access.endpoint,
                    cacert=access.cafile, verify=not access.insecure, **common
                )
            elif access.cloud:
                check_clouds_files(access.cloud)
                connection = openstack.connect(cloud=access.cloud, **common)
            else:
                connection = openstack.connection.Connection(
                    session=keystone_session(access),
                    region_name=access.region_name,
                    interface=access.interface,
                    **common,
                )
        except AuthOptionError as exc:
            raise ValueError(
                f"Neutron access needs an endpoint, a clouds.yaml cloud, or Keystone credentials: {exc}"
            ) from None
        except (sdk_exc.SDKException, ks_exc.ClientException) as exc:
            # e.g. an unknown clouds.yaml cloud; the message names it, and holds no secret.
            raise ValueError(f"cannot use {access.describe()}: {exc}") from None
        return cls(connection, timeout=access.timeout, authenticated=not access.endpoint, page_size=page_size)

    def close(self) -> None:
        self._connection.close()

    # ----------------------------------------------------------------- NeutronAPI

    def list_agents(self) -> list[Agent]:
        return [_agent(item) for item in self._list("agents")]

    def get_agent(self, agent_id: str) -> Agent:
        body = self._request("GET", f"/agents/{_quote(agent_id)}")
        return _agent(_member(body, "agent"))

    def list_routers(self) -> list[Router]:
        return [_router(item) for item in self._list("routers", fields=_ROUTER_FIELDS)]

    def list_networks(self) -> list[Network]:
        networks = self._list("networks", fields=_NETWORK_FIELDS)
        # One paged subnet listing instead of one call per network.
        with_dhcp = {str(s["network_id"]) for s in self._list("subnets", fields=_SUBNET_FIELDS) if s.get("enable_dhcp")}
        return [_network(item, str(item["id"]) in with_dhcp) for item in networks]

    def get_router(self, router_id: str) -> Router:
        body = self._request("GET", f"/routers/{_quote(router_id)}", params=[("fields", f) for f in _ROUTER_FIELDS])
        return _router(_member(body, "router"))

    def get_network(self, network_id: str) -> Network:
        path = f"/networks/{_quote(network_id)}"
        item = _member(self._request("GET", path, params=[("fields", f) for f in _NETWORK_FIELDS]), "network")
        subnets = self._list("subnets", fields=_SUBNET_FIELDS, filters=[("network_id", network_id)])
        return _network(item, any(s.get("enable_dhcp") for s in subnets))

    def routers_on_agent(self, agent_id: str) -> list[str]:
        return _ids(self._request("GET", f"/agents/{_quote(agent_id)}/l3-routers"), "routers")

    def networks_on_agent(self, agent_id: str) -> list[str]:
        return _ids(self._request("GET", f"/agents/{_quote(agent_id)}/dhcp-networks"), "networks")

    def agents_for_router(self, router_id: str) -> list[str]:
        return _ids(self._request("GET", f"/routers/{_quote(router_id)}/l3-agents"), "agents")

    def agents_for_network(self, network_id: str) -> list[str]:
        return _ids(self._request("GET", f"/networks/{_quote(network_id)}/dhcp-agents"), "agents")

    def bind_router(self, agent_id: str, router_id: str) -> None:
        # Neutron answers 201 when the router is already on this agent.
        self._request("POST", f"/agents/{_quote(agent_id)}/l3-routers", body={"router_id": router_id})

    def unbind_router(self, agent_id: str, router_id: str) -> None:
        self._request("DELETE", f"/agents/{_quote(agent_id)}/l3-routers/{_quote(router_id)}", done_if=ROUTER_NOT_HOSTED)

    def bind_network(self, agent_id: str, network_id: str) -> None:
        self._request(
            "POST",
            f"/agents/{_quote(agent_id)}/dhcp-networks",
            body={"network_id": network_id},
            done_if=NETWORK_ALREADY_HOSTED,
        )

    def unbind_network(self, agent_id: str, network_id: str) -> None:
        self._request(
            "DELETE",
            f"/agents/{_quote(agent_id)}/dhcp-networks/{_quote(network_id)}",
            done_if=NETWORK_NOT_HOSTED,
        )

    def set_agent_admin_state(self, agent_id: str, up: bool) -> None:
        # PUT /v2.0/agents/{id}: openstacksdk's update_agent, through the same classified request path.
        self._request("PUT", f"/agents/{_quote(agent_id)}", body={"agent": {"admin_state_up": bool(up)}})

    def ports_of_devices(self, device_ids: Sequence[str]) -> list[PortState]:
        return self._ports_by("device_id", device_ids)

    def dhcp_ports(self, network_ids: Sequence[str]) -> list[PortState]:
        return self._ports_by("network_id", network_ids, (("device_owner", PORT_DHCP),))

    def _ports_by(
        self, key: str, values: Sequence[str], extra: Sequence[tuple[str, str]] = ()
    ) -> list[PortState]:
        wanted = list(dict.fromkeys(values))
        ports: list[PortState] = []
        for i in range(0, len(wanted), PORT_FILTER_CHUNK):
            filters = [*extra, *((key, v) for v in wanted[i:i + PORT_FILTER_CHUNK])]
            ports += [_port(item) for item in self._list("ports", fields=_PORT_FIELDS, filters=filters)]
        return ports

    # ----------------------------------------------------------------- plumbing

    def _network_proxy(self) -> Any:
        # Creating the proxy runs version discovery (one GET of the endpoint's root); a failure is
        # not cached by openstacksdk, so the next call simply tries again.
        with self._proxy_lock:
            if self._proxy is None:
                self._proxy = self._connection.network
            return self._proxy

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        done_if: str | None = None,
    ) -> Any:
        """One API call; returns the decoded JSON body (None when empty) or raises ``NeutronError``."""
        what = f"{method} {path}"
        kwargs: dict[str, Any] = {
            "raise_exc": False,
            "log": False,
            "connect_retries": 0,
            "status_code_retries": 0,
            "timeout": self._timeout,
            "headers": dict(self._headers),
        }
        if not self._authenticated:
            kwargs["authenticated"] = False
        if params:
            kwargs["params"] = list(params)
        if body is not None:
            kwargs["json"] = body
        started = time.monotonic()
        try:
            response = self._network_proxy().request(path, method, **kwargs)
        except (ks_exc.ClientException, sdk_exc.SDKException, OSError) as exc:
            LOG.debug("%s failed after %.3f s: %s", what, time.monotonic() - started, exc)
            raise classify_exception(exc, what) from None
        status = int(response.status_code)
        LOG.debug("%s -> %d in %.3f s", what, status, time.monotonic() - started)
        decoded = _decode(response)
        if 200 <= status < 300:
            return decoded
        error = classify_response(status, decoded, response.headers, what)
        if done_if is not None and error.neutron_type == done_if:
            return None
        raise error

    def _list(
        self, collection: str, *, fields: Sequence[str] = (), filters: Sequence[tuple[str, str]] = ()
    ) -> list[dict[str, Any]]:
        """Every item of a collection, following Neutron's ``<collection>_links`` next markers."""
        base = [*filters, *(("fields", name) for name in fields), ("limit", str(self._page_size))]
        items: list[dict[str, Any]] = []
        params = base
        seen: set[str] = set()
        while True:
            body = self._request("GET", f"/{collection}", params=params)
            page = _member_list(body, collection)
            items.extend(page)
            marker = _next_marker(body, collection)
            if marker is None or not page:
                return items
            if marker in seen:
                raise NeutronError(ErrorKind.PERMANENT, f"GET /{collection}: pagination repeats {marker}")
            seen.add(marker)
            params = [*base, ("marker", marker)]


class _OneRequestPerConnection(requests.adapters.BaseAdapter):
    """Wraps the session's transport adapter; closes each connection once its answer is read."""

    def __init__(self, inner: requests.adapters.BaseAdapter) -> None:
        super().__init__()
        self._inner = inner

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        response = self._inner.send(request, *args, **kwargs)
        connection = getattr(response.raw, "connection", None)
        _ = response.content  # read it all now; the connection then goes back to urllib3's pool...
        if connection is not None:
            connection.close()  # ...closed, so its next user opens a fresh one
        return response

    def close(self) -> None:
        self._inner.close()


def _decode(response: Any) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _next_marker(body: Mapping[str, Any], collection: str) -> str | None:
    for link in body.get(f"{collection}_links") or ():
        if isinstance(link, Mapping) and link.get("rel") == "next" and link.get("href"):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(str(link["href"])).query)
            markers = query.get("marker")
            if markers:
                return markers[-1]
    return None


def _quote(identifier: str) -> str:
    return urllib.parse.quote(identifier, safe="")


def _unexpected(detail: str) -> NeutronError:
    return NeutronError(ErrorKind.PERMANENT, f"unexpected Neutron answer: {detail}")


def _member(body: Any, key: str) -> Mapping[str, Any]:
    value = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(value, Mapping):
        raise _unexpected(f"no {key!r} object")
    return value


def _member_list(body: Any, key: str) -> list[dict[str, Any]]:
    value = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(value, list) or not all(isinstance(v, Mapping) and "id" in v for v in value):
        raise _unexpected(f"no {key!r} list")
    return [dict(v) for v in value]


def _ids(body: Any, key: str) -> list[str]:
    return [str(item["id"]) for item in _member_list(body, key)]


def _agent(item: Mapping[str, Any]) -> Agent:
    try:
        config = item.get("configurations") or {}
        agent_type = str(item["agent_type"])
        mode = config.get("agent_mode") if isinstance(config, Mapping) else None
        if agent_type == L3_AGENT and not mode:
            mode = "legacy"  # Neutron's default when the agent does not report one
        return Agent(
            id=str(item["id"]),
            agent_type=agent_type,
            host=str(item["host"]),
            admin_state_up=bool(item.get("admin_state_up", True)),
            alive=bool(item.get("alive", False)),
            agent_mode=str(mode) if mode else None,
            availability_zone=item.get("availability_zone") or None,
            router_id=_config_str(config, "router_id"),
            handle_internal_only_routers=_config_flag(config, "handle_internal_only_routers"),
        )
    except KeyError as exc:
        raise _unexpected(f"agent without {exc}") from None


def _config_str(config: Any, key: str) -> str | None:
    value = config.get(key) if isinstance(config, Mapping) else None
    return str(value) if value else None


def _config_flag(config: Any, key: str) -> bool:
    """A boolean the agent reports in its configurations; absent or unreadable means Neutron's default, true."""
    value = config.get(key, True) if isinstance(config, Mapping) else True
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value) if value is not None else True


def _router(item: Mapping[str, Any]) -> Router:
    return Router(
        id=str(item["id"]),
        name=str(item.get("name") or ""),
        distributed=bool(item.get("distributed") or False),
        ha=bool(item.get("ha") or False),
        availability_zone_hints=tuple(item.get("availability_zone_hints") or ()),
        admin_state_up=bool(item.get("admin_state_up", True)),
        external_gateway=bool(item.get("external_gateway_info")),
    )


def _port(item: Mapping[str, Any]) -> PortState:
    return PortState(
        id=str(item["id"]),
        device_id=str(item.get("device_id") or ""),
        device_owner=str(item.get("device_owner") or ""),
        host=str(item.get("binding:host_id") or ""),
        status=str(item.get("status") or ""),
        network_id=str(item.get("network_id") or ""),
    )


def _network(item: Mapping[str, Any], dhcp_enabled: bool) -> Network:
    return Network(
        id=str(item["id"]),
        name=str(item.get("name") or ""),
        dhcp_enabled=dhcp_enabled,
        availability_zone_hints=tuple(item.get("availability_zone_hints") or ()),
    )


def check_cloud(name: str) -> None:
    """Find clouds.yaml cloud ``name`` as ``from_access`` will (no network). Raises ValueError with one
    line naming the cloud and the files searched; used by the preflight checks before start."""
    import openstack.config

    check_clouds_files(name)
    searched = "clouds.yaml"
    try:
        config = openstack.config.OpenStackConfig()
        searched = getattr(config, "config_filename", None) or "no clouds.yaml file found"
        config.get_one(cloud=name)
    except (sdk_exc.SDKException, ks_exc.ClientException, KeyError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"clouds.yaml cloud {name!r}: {reason} ({searched})") from None


def check_clouds_files(name: str) -> None:
    """The clouds.yaml, secure.yaml and clouds-public.yaml openstacksdk will read for cloud ``name`` (the
    first that exists of each of its loader's lists, ``OS_CLIENT_CONFIG_FILE``/``OS_CLIENT_SECURE_FILE``
    first) must be regular files within ``textfile.MAX_CONFIG_BYTES``: openstacksdk would block on a
    FIFO and read ``/dev/zero`` until memory ran out. Raises ValueError naming the cloud and the file."""
    from openstack.config import loader

    lists = ((os.environ.get("OS_CLIENT_CONFIG_FILE"), loader.CONFIG_FILES),
             (os.environ.get("OS_CLIENT_SECURE_FILE"), loader.SECURE_FILES), (None, loader.VENDOR_FILES))
    for override, candidates in lists:
        for path in [override, *candidates] if override else candidates:
            if not os.path.exists(path):
                continue
            try:
                check_file(path)
            except FileRefused as exc:
                raise ValueError(f"clouds.yaml cloud {name!r}: {path}: cannot read: {exc}") from None
            except PermissionError:
                continue  # openstacksdk goes on to the next file too
            except OSError as exc:
                raise ValueError(f"clouds.yaml cloud {name!r}: {path}: cannot read: {exc.strerror}") from None
            break
