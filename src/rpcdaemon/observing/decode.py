"""Turn one raw bus message into a typed value: Heartbeat, NetworkDeleted, NetworkChanged, BusHints or Rejected.

Called by the bus listener's callback (via the service wiring) for every message, and by the Dump
plugin through ``describe_message``. Pure: no kombu, no I/O, no clock reads (``received_at`` is
stamped by the listener). It never raises on bad input: anything it cannot use becomes ``Rejected``
with a reason an operator can read, because a poison message must be acked and logged, not crash
the consumer.

Wire formats understood (see the neutron.md capture):

- the oslo.messaging 2.0 envelope ``{"oslo.version": "2.0", "oslo.message": "<json string>"}``
  and the legacy un-enveloped body (oslo "messaging" v1 notifier, pre-envelope RPC);
- ``report_state`` with the state in ``args.agent_state.agent_state`` (current) or
  ``args.agent_state`` (older releases);
- the notification ``network.delete.end`` (payload ``network_id``) and the RPC fanout cast
  ``network_delete_end`` (``args.payload.network_id``) on ``dhcp_agent_fanout``;
- the notifications ``network.create/update.end`` and ``subnet.create/update/delete.end``
  (NetworkChanged: the DHCPAgent plugin re-reads networks);
- neutron-server's casts to one agent, which a stock neutron.conf sends too (``BusHints``): on
  ``dhcp_agent.<host>`` ``network_create_end`` (``args.payload.network.id``), ``network_update_end``,
  ``subnet_create_end``/``subnet_update_end`` (``args.payload.subnet.network_id``), ``network_delete_end``
  (``args.payload.network_id``: removed from that agent) and ``port_create_end`` of a router interface
  (``args.payload.port``: device_owner, device_id, network_id); on ``l3_agent.<host>``
  ``router_added_to_agent`` (a call, ``args.payload`` = list of router ids), ``routers_updated``
  (``args.routers``), ``router_removed_from_agent`` (``args.payload.router_id``); ``router_deleted``
  (``args.router_id``) on ``l3_agent_fanout``. Any other method on those keys (``port_update_end``,
  ``port_delete_end``, ... the bulk of that traffic) is "not handled", decided on the method name alone.

Notifications exist only when neutron-server has ``[oslo_messaging_notifications] driver`` set
(``messagingv2``: enveloped; ``messaging``: bare); they go to exchange ``neutron``, routing key
``notifications.info``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from rpcdaemon.model import (
    BusHints,
    Heartbeat,
    HintKind,
    NetworkChanged,
    NetworkDeleted,
    NetworkHint,
    RouterHint,
    freeze_mapping,
)
from rpcdaemon.redact import mask_text, redact_mapping

MAX_BODY = 1024 * 1024  # larger than any real report_state by three orders of magnitude
MAX_HOST = 255  # a DNS name; anything longer is not a real agent host
# configurations is the only free-form part of a heartbeat we keep; real ones are one level deep.
_MAX_CONFIG_DEPTH = 8
_ENVELOPE_KEY = "oslo.message"
_VERSION_KEY = "oslo.version"
_CONTEXT_PREFIX = "_context_"
_RENDER_LIMIT = 4000
_SCALARS = frozenset({str, int, bool, type(None)})
# Router ids kept from one cast (router_added_to_agent may list every router of an agent's sync);
# beyond this the message only says "many": the L3Agent plugin reconciles instead.
MAX_IDS = 64
DHCP_TOPIC = "dhcp_agent"
L3_TOPIC = "l3_agent"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message the daemon will not use, and why.

    ``reason`` is ``"<category>: <detail>"``; the category (``kind``) is one of a small fixed set
    (too large, not UTF-8, not JSON, too deep, bad envelope, not handled, bad heartbeat, bad network
    event, bad agent cast), so it can label a counter.
    """

    reason: str
    method: str | None = None

    @property
    def kind(self) -> str:
        return self.reason.split(":", 1)[0]


Decoded = Heartbeat | NetworkDeleted | NetworkChanged | BusHints | Rejected
_Event = Heartbeat | NetworkDeleted | NetworkChanged | BusHints


class _Bad(ValueError):
    """Internal: carries a rejection out of nested helpers."""

    def __init__(self, kind: str, detail: str, method: str | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.reason = f"{kind}: {detail}"
        self.method = method


def _refuse_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity by default; no agent sends them, so they mark garbage.
    raise _Bad("not JSON", f"{name} is not JSON")


_loads = json.JSONDecoder(parse_constant=_refuse_constant).decode


def _parse(text: str | bytes, what: str) -> Any:
    if len(text) > MAX_BODY:
        raise _Bad("too large", f"{what} has {len(text)} bytes (limit {MAX_BODY})")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Bad("not UTF-8", f"{what} has invalid UTF-8 at byte {exc.start}") from None
    try:
        return _loads(text)
    except RecursionError:
        raise _Bad("too deep", f"{what} is nested too deeply") from None
    except _Bad:
        raise
    except ValueError as exc:
        raise _Bad("not JSON", f"{what} ({exc.__class__.__name__}: {str(exc)[:80]})") from None


def unwrap(body: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """The message dict: body parsed, and the oslo 2.0 envelope opened if there is one.

    Raises ValueError (with a Rejected-style reason) for anything that is not a JSON object.
    """
    outer = body if isinstance(body, Mapping) else _parse(body, "body")
    if not isinstance(outer, Mapping):
        raise _Bad("bad envelope", f"body is a JSON {type(outer).__name__}, not an object")
    if _ENVELOPE_KEY not in outer:
        return dict(outer)
    version = outer.get(_VERSION_KEY)
    if not isinstance(version, str) or not version.startswith("2."):
        raise _Bad("bad envelope", f"unsupported oslo.version {str(version)[:20]!r}")
    inner_text = outer[_ENVELOPE_KEY]
    if not isinstance(inner_text, str):
        raise _Bad("bad envelope", "oslo.message is not a string")
    inner = _parse(inner_text, "oslo.message")
    if not isinstance(inner, dict):
        raise _Bad("bad envelope", f"oslo.message is a JSON {type(inner).__name__}, not an object")
    return inner


def decode_message(
    body: bytes | str | Mapping[str, Any], *, routing_key: str, received_at: float
) -> Decoded:
    """Decode one message; never raises. ``received_at`` is the listener's monotonic stamp."""
    try:
        return _decode(unwrap(body), routing_key, received_at)
    except _Bad as bad:
        return Rejected(bad.reason, bad.method)
    except RecursionError:  # a pathological Mapping handed in directly
        return Rejected("too deep: message is nested too deeply")


def _decode(msg: dict[str, Any], routing_key: str, received_at: float) -> _Event:
    if "event_type" in msg:
        return _decode_notification(msg, received_at)
    method = msg.get("method")
    if not isinstance(method, str):
        raise _Bad("not handled", "neither an RPC method nor a notification event_type")
    args = msg.get("args", {})
    if not isinstance(args, Mapping):
        raise _Bad("bad envelope", "args is not an object", method[:80])
    if method == "report_state":
        return _decode_heartbeat(args, received_at)
    # Casts to one agent: the method name decides first, so the bulk (port_update_end, ...) costs nothing more.
    if method in _DHCP_CASTS or method in _L3_CASTS:
        return _decode_cast(method, args, routing_key, received_at)
    raise _Bad("not handled", f"method {method[:80]}", method[:80])


# DHCP casts to dhcp_agent.<host>: method -> (what it says, payload key, id key). network_delete_end
# to one agent is "removed"; on the fanout (no host in the routing key) it is a deletion, above.
_DHCP_CASTS = {
    "network_create_end": (HintKind.PLACED, "network", "id"),
    "network_update_end": (HintKind.CHANGED, "network", "id"),
    "subnet_create_end": (HintKind.CHANGED, "subnet", "network_id"),
    "subnet_update_end": (HintKind.CHANGED, "subnet", "network_id"),
    "network_delete_end": (HintKind.REMOVED, "", "network_id"),
    "port_create_end": (HintKind.CHANGED, "port", "network_id"),
}
_L3_CASTS = frozenset({"router_added_to_agent", "routers_updated", "router_removed_from_agent", "router_deleted"})
_ROUTER_INTERFACE = "network:router_interface"


def _agent_host(routing_key: str, topic: str, method: str) -> str | None:
    """The host of a cast to ``<topic>.<host>``; None for the fanout (empty routing key)."""
    if not routing_key:
        return None
    prefix = topic + "."
    if not routing_key.startswith(prefix):
        raise _Bad("not handled", f"{method} on routing key {routing_key[:80]!r}", method)
    host = routing_key[len(prefix):]
    if not host or len(host) > MAX_HOST:
        raise _Bad("bad agent cast", f"{method}: no host, or a host longer than {MAX_HOST}, in the routing key", method)
    return host


def _decode_cast(method: str, args: Mapping[str, Any], routing_key: str, received_at: float) -> _Event:
    if method in _L3_CASTS:
        return _decode_l3_cast(method, args, routing_key, received_at)
    if method == "network_delete_end" and "." not in routing_key:
        # Only the fanout means deleted; a cast to one agent means "removed from this agent", which
        # also happens when a network merely moves.
        payload = args.get("payload")
        if not isinstance(payload, Mapping):
            raise _Bad("bad network event", "network_delete_end without a payload object", method)
        return NetworkDeleted(_network_id(payload.get("network_id"), method), received_at)
    host = _agent_host(routing_key, DHCP_TOPIC, method)
    if host is None:
        raise _Bad("not handled", f"{method} on the fanout", method)
    kind, resource, key = _DHCP_CASTS[method]
    payload = args.get("payload")
    if not isinstance(payload, Mapping):
        raise _Bad("bad agent cast", f"{method} without a payload object", method)
    inner = payload.get(resource) if resource else payload
    if not isinstance(inner, Mapping):
        raise _Bad("bad agent cast", f"{method} without a {resource} object", method)
    if method == "port_create_end":
        # Only a router's interface says something (a router on that network may need an agent);
        # every other port is the DHCP agent's business alone.
        owner = inner.get("device_owner")
        if not isinstance(owner, str) or not owner.startswith(_ROUTER_INTERFACE):
            raise _Bad("not handled", "port_create_end of a port that is not a router interface", method)
        router = _resource_id(inner.get("device_id"), method)
        network = _resource_id(inner.get(key), method)
        return BusHints(networks=(NetworkHint(network, host, kind, received_at, method),),
                        routers=(RouterHint(router, None, HintKind.CHANGED, received_at, method),))
    network = _resource_id(inner.get(key), method)
    return BusHints(networks=(NetworkHint(network, host, kind, received_at, method),))


def _decode_l3_cast(method: str, args: Mapping[str, Any], routing_key: str, received_at: float) -> BusHints:
    host = _agent_host(routing_key, L3_TOPIC, method)
    if method == "router_deleted":
        ids: Any = [args.get("router_id")]
        kind = HintKind.DELETED
        host = None  # a fanout; a cast of it to one agent still means the router is gone
    elif host is None:
        raise _Bad("not handled", f"{method} on the fanout", method)
    elif method == "router_added_to_agent":
        ids, kind = args.get("payload"), HintKind.PLACED
    elif method == "routers_updated":
        ids, kind = args.get("routers"), HintKind.CHANGED
    else:  # router_removed_from_agent
        payload = args.get("payload")
        if not isinstance(payload, Mapping):
            raise _Bad("bad agent cast", f"{method} without a payload object", method)
        ids, kind = [payload.get("router_id")], HintKind.REMOVED
    if not isinstance(ids, list) or not ids:
        raise _Bad("bad agent cast", f"{method} without a non-empty list of router ids", method)
    kept = tuple(dict.fromkeys(_resource_id(rid, method) for rid in ids[:MAX_IDS]))
    hints = tuple(RouterHint(rid, host, kind, received_at, method) for rid in kept)
    return BusHints(routers=hints, more_routers=len(ids) > MAX_IDS)


def _resource_id(value: Any, method: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_HOST:
        raise _Bad("bad agent cast", f"{method}: an id is missing or not a non-empty string", method)
    return value


# Notifications (oslo notifier, topic notifications.info) that change what DHCP must serve, and
# where each carries its network id.
_CHANGE_EVENTS = {
    "network.create.end": ("network", "id"),
    "network.update.end": ("network", "id"),
    "subnet.create.end": ("subnet", "network_id"),
    "subnet.update.end": ("subnet", "network_id"),
    "subnet.delete.end": ("subnet", "network_id"),  # newer releases include the deleted subnet
}


def _decode_notification(msg: Mapping[str, Any], received_at: float) -> NetworkDeleted | NetworkChanged:
    event_type = msg["event_type"]
    if not isinstance(event_type, str):
        raise _Bad("bad network event", "event_type is not a string")
    if event_type != "network.delete.end" and event_type not in _CHANGE_EVENTS:
        raise _Bad("not handled", f"event_type {event_type[:80]}", event_type[:80])
    payload = msg.get("payload")
    if not isinstance(payload, Mapping):
        raise _Bad("bad network event", f"{event_type} without a payload object", event_type)
    if event_type == "network.delete.end":
        return NetworkDeleted(_network_id(payload.get("network_id"), event_type), received_at)
    resource, key = _CHANGE_EVENTS[event_type]
    inner = payload.get(resource)
    if not isinstance(inner, Mapping):
        raise _Bad("bad network event", f"{event_type} without a {resource} object", event_type)
    return NetworkChanged(_network_id(inner.get(key), event_type), received_at)


def _network_id(value: Any, method: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_HOST:
        raise _Bad("bad network event", f"{method}: network id missing or not a non-empty string", method)
    return value


def _decode_heartbeat(args: Mapping[str, Any], received_at: float) -> Heartbeat:
    state = args.get("agent_state")
    if not isinstance(state, Mapping):
        raise _Bad("bad heartbeat", "no agent_state object", "report_state")
    nested = state.get("agent_state")
    if isinstance(nested, Mapping):  # current releases wrap it twice; older ones once
        state = nested
    host = _text(state, "host", required=True)
    agent_type = _text(state, "agent_type", required=True)
    if len(host) > MAX_HOST:
        raise _Bad("bad heartbeat", f"host longer than {MAX_HOST} characters", "report_state")
    configurations = state.get("configurations")
    if configurations is None:
        configurations = {}
    elif not isinstance(configurations, Mapping):
        raise _Bad("bad heartbeat", "configurations is not an object", "report_state")
    elif configurations:
        _check_tree(configurations, 1)
    agent_mode = configurations.get("agent_mode")
    start_flag = state.get("start_flag", False)
    if not isinstance(start_flag, bool):
        raise _Bad("bad heartbeat", "start_flag is not a boolean", "report_state")
    sent_at = args.get("time")
    return Heartbeat(
        agent_type=agent_type,
        host=host,
        received_at=received_at,
        binary=_text(state, "binary"),
        topic=_text(state, "topic"),
        agent_mode=agent_mode if isinstance(agent_mode, str) else None,
        availability_zone=_text(state, "availability_zone") or None,
        start_flag=start_flag,
        sent_at=sent_at[:64] if isinstance(sent_at, str) else None,
        configurations=freeze_mapping(configurations),
    )


def _text(state: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = state.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise _Bad("bad heartbeat", f"{key} is {what}", "report_state")
    if required and not value:
        raise _Bad("bad heartbeat", f"{key} is empty", "report_state")
    return value


def _check_tree(value: Any, depth: int) -> None:
    """Bound the depth of the one free-form field we keep, and refuse non-finite numbers in it."""
    if depth > _MAX_CONFIG_DEPTH:
        raise _Bad("bad heartbeat", "configurations nested too deeply", "report_state")
    if isinstance(value, Mapping):
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    else:
        items = ()
    for item in items:
        # Scalars other than floats need no look; the exact-type test keeps this cheap per message.
        if type(item) not in _SCALARS:
            _check_tree(item, depth + 1)
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad("bad heartbeat", "configurations contain a non-finite number", "report_state")


# -- Dump rendering ------------------------------------------------------------------------------


# The top-level keys of ``Description.data``, what a Dump filter can name (see plugins/dump.py).
DESCRIPTION_FIELDS = frozenset(
    {"exchange", "routing_key", "method", "body", "context", "host", "agent_type", "network_id", "error"}
)


class Description(NamedTuple):
    """What the Dump plugin filters on (``data``) and prints (``line``)."""

    data: dict[str, Any]
    line: str


def describe_message(
    body: bytes | str | Mapping[str, Any], *, exchange: str, routing_key: str, verbose: bool = False
) -> Description:
    """A dict view of any message plus a one-line rendering; never raises.

    ``data`` keys: exchange, routing_key, method (RPC method or notification event_type, else
    None), body (inner oslo.message decoded, ``_context_*`` keys moved out), context (those keys
    without the prefix), and for heartbeats host and agent_type; for undecodable input, error.
    Secrets are gone from both before anything is formatted: secret-named keys (``password``,
    ``_context_auth_token``, ...) read ``***`` and URLs lose their passwords (``redact.redact_mapping``).
    """
    data: dict[str, Any] = {"exchange": exchange, "routing_key": routing_key, "method": None}
    where = f"{_printable(exchange or '(default)')}/{_printable(routing_key or '(none)')}"
    try:
        msg = unwrap(body)
    except _Bad as bad:
        data["error"] = bad.reason
        data["body"] = mask_text(_preview(body))
        return Description(data, f"{where} <undecodable: {bad.reason}> {_printable(data['body'])}")
    except RecursionError:
        data["error"] = "too deep: message is nested too deeply"
        return Description(data, f"{where} <undecodable: {data['error']}>")
    decoded = _decode_quietly(msg, routing_key)
    msg = redact_mapping(msg)
    context = {k[len(_CONTEXT_PREFIX) :]: v for k, v in msg.items() if k.startswith(_CONTEXT_PREFIX)}
    shown = {k: v for k, v in msg.items() if not k.startswith(_CONTEXT_PREFIX)}
    method = msg.get("method", msg.get("event_type"))
    data["method"] = method if isinstance(method, str) else None
    data["body"] = shown
    data["context"] = context
    parts = [where, _printable(data["method"] or "-")]
    if isinstance(decoded, Heartbeat):
        data["host"] = decoded.host
        data["agent_type"] = decoded.agent_type
        parts.append(f"host={_printable(decoded.host)} type={_printable(decoded.agent_type)}")
    elif isinstance(decoded, (NetworkDeleted, NetworkChanged)):
        data["network_id"] = decoded.network_id
        parts.append(f"network={_printable(decoded.network_id)}")
    elif isinstance(decoded, BusHints) and decoded.networks:
        data["network_id"] = decoded.networks[0].network_id
        parts.append(f"network={_printable(decoded.networks[0].network_id)}")
    if verbose:
        rendered = _compact(msg)
    else:
        if context:
            shown = {**shown, "_context_*": f"<{len(context)} keys>"}
        rendered = _compact(shown)
        if len(rendered) > _RENDER_LIMIT:
            rendered = f"{rendered[:_RENDER_LIMIT]}... ({len(rendered) - _RENDER_LIMIT} more chars)"
    parts.append(rendered)
    # Values are redacted already; the text filter still guards the heartbeat's host and the like.
    return Description(data, mask_text(" ".join(parts)))


def _decode_quietly(msg: dict[str, Any], routing_key: str) -> _Event | None:
    try:
        return _decode(msg, routing_key, 0.0)
    except (_Bad, RecursionError):
        return None


def _compact(value: Any) -> str:
    try:
        # ensure_ascii keeps the rendering on one line whatever the agent sent (U+2028 and friends).
        return json.dumps(value, separators=(",", ":"), default=str)
    except (ValueError, RecursionError):
        return repr(value)[:_RENDER_LIMIT]


def _preview(body: bytes | str | Mapping[str, Any]) -> str:
    if isinstance(body, Mapping):
        return f"<mapping with {len(body)} keys>"
    head = body[:200]
    text = head.decode("utf-8", "backslashreplace") if isinstance(head, bytes) else head
    more = f"... ({len(body) - 200} more)" if len(body) > 200 else ""
    return text + more


def _printable(text: str) -> str:
    """Text safe for one log line: as is when printable, JSON-quoted otherwise."""
    return text if text.isprintable() and " " not in text else json.dumps(text)
