"""What Neutron's error answers mean: the HTTP status and ``NeutronError`` body of a failed call,
classified into an ``ErrorKind``, once.

Used by ``openstack_neutron`` for every answer it gets and by ``fake_neutron`` to build its errors, so
the fake reports the same kind, status and Neutron type as the real adapter by construction (the
contract tests then check both against a real server). No I/O here.

| answer | kind |
| --- | --- |
| 5xx, 408 | TEMPORARY |
| 429 | TEMPORARY, ``retry_after`` from the Retry-After header |
| 404 AgentNotFound, RouterNotFound, NetworkNotFound | NOT_FOUND |
| 404 InvalidL3Agent, InvalidDHCPAgent; 409 DVRL3CannotAssignToDvrAgent, RouterL3AgentMismatch | INVALID_TARGET |
| 409 RouterHostedByL3Agent | CONFLICT |
| anything else (400, 401, 403, other 404/409, ...) | PERMANENT |
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rpcdaemon.acting.api import ErrorKind, NeutronError

# Neutron error types (the body's NeutronError.type) that mean something other than PERMANENT.
NOT_FOUND_TYPES = frozenset({"AgentNotFound", "RouterNotFound", "NetworkNotFound"})
INVALID_TARGET_TYPES = frozenset(
    {
        "InvalidL3Agent",  # 404: disabled agent, or not an L3 agent
        "InvalidDHCPAgent",  # 404: disabled agent, or not a DHCP agent
        "DVRL3CannotAssignToDvrAgent",  # 409: target runs in dvr / dvr_no_external mode
        "RouterL3AgentMismatch",  # 409: distributed router onto a legacy agent
    }
)
CONFLICT_TYPES = frozenset({"RouterHostedByL3Agent"})
# Answers that mean "already as wanted": bind_network to its own agent, unbind_network of a network
# the agent does not host.
NETWORK_ALREADY_HOSTED = "NetworkHostedByDHCPAgent"
NETWORK_NOT_HOSTED = "NetworkNotHostedByDhcpAgent"
# Neutron 29 answers 204; older releases answered 409 with this type.
ROUTER_NOT_HOSTED = "RouterNotHostedByL3Agent"


def classify_response(
    status: int,
    body: Any,
    headers: Mapping[str, str],
    what: str,
    *,
    now: float | None = None,
) -> NeutronError:
    """The ``NeutronError`` for a non-2xx answer to ``what`` (e.g. ``"POST /agents/A/l3-routers"``)."""
    neutron_type, message = _error_body(body)
    text = f"{what}: {message or f'HTTP {status}'}"
    if status == 429:
        return NeutronError(
            ErrorKind.TEMPORARY,
            text,
            status=status,
            neutron_type=neutron_type,
            retry_after=parse_retry_after(headers.get("Retry-After"), now=now),
        )
    if status >= 500 or status == 408:
        kind = ErrorKind.TEMPORARY
    elif neutron_type in NOT_FOUND_TYPES:
        kind = ErrorKind.NOT_FOUND
    elif neutron_type in INVALID_TARGET_TYPES:
        kind = ErrorKind.INVALID_TARGET
    elif neutron_type in CONFLICT_TYPES:
        kind = ErrorKind.CONFLICT
    else:
        kind = ErrorKind.PERMANENT
    return NeutronError(kind, text, status=status, neutron_type=neutron_type)


def neutron_error(status: int, neutron_type: str, message: str, what: str) -> NeutronError:
    """The error the adapter would raise for Neutron answering ``status`` with this error body."""
    body = {"NeutronError": {"type": neutron_type, "message": message, "detail": ""}}
    return classify_response(status, body, {}, what)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        seconds = when.timestamp() - current
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _error_body(body: Any) -> tuple[str | None, str]:
    if isinstance(body, Mapping):
        err = body.get("NeutronError")
        if isinstance(err, Mapping):
            kind = err.get("type")
            return (str(kind) if kind else None), str(err.get("message") or "")
        if isinstance(err, str):
            return None, err
        message = body.get("message") or body.get("title")
        if message:
            return None, str(message)
    if isinstance(body, str):
        return None, body.strip()[:200]
    return None, ""
