"""Connections to the broker: the one place a kombu ``Connection`` is made.

``make_connection`` builds one for a URL (``;``-separated failover hosts, round-robin), with TLS that
checks each failover host's own name (``tls_options``, ``_TLSConnection``); ``leader_lock`` and
``control_link`` make theirs with shorter heartbeats and bounded socket calls. ``publish_raw`` publishes
bytes as they are (the demo, the benchmarks and the tests), ``quietly`` runs a cleanup step whose failure
does not matter. Every module of ``rpcdaemon.broker`` builds on this one.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

from kombu import entity as _entity
from kombu import messaging as _messaging
from kombu.connection import Connection

from rpcdaemon.access import BrokerTLS

__all__ = ["Connection", "make_connection", "publish_raw", "quietly", "tls_options"]

log = logging.getLogger("rpcdaemon.observing.bus")  # its name before the move: log lines keep it

# kombu's constructors are untyped; calling them through Any keeps mypy strict for the rest.
_new_connection: Any = Connection
_Producer: Any = _messaging.Producer
_Exchange: Any = _entity.Exchange

_AMQP_HEARTBEAT = 20  # seconds; detects a silently dead broker or network within ~40 s
_CONNECT_TIMEOUT = 1.5  # per host and attempt, so a black-holed broker does not delay shutdown


def make_connection(url: str, tls: BrokerTLS | None = None, *, heartbeat: float = _AMQP_HEARTBEAT,
                    io_timeout: float | None = None, confirm_publish: bool = False) -> Connection:
    """A kombu connection for ``url`` (``;``-separated alternates fail over round-robin).

    With ``tls`` (or an ``amqps://`` URL, which means ``BrokerTLS()``) the link is TLS: the chain is
    verified and, unless ``tls.verify_hostname`` is off, the certificate must name the host of the URL
    being tried (each failover host is checked against its own name). ``heartbeat`` is the AMQP heartbeat
    asked for; ``io_timeout`` bounds every socket read and write (py-amqp's ``read_timeout`` and
    ``write_timeout``), so that a synchronous call on a black-holed link fails instead of hanging;
    ``confirm_publish`` makes every publish wait for the broker's confirmation."""
    options: dict[str, Any] = {}
    if not url.startswith("memory://") and (io_timeout is not None or confirm_publish):
        transport: dict[str, Any] = {"confirm_publish": True} if confirm_publish else {}
        if io_timeout is not None:
            transport.update(read_timeout=io_timeout, write_timeout=io_timeout)
        options["transport_options"] = transport
    if url.startswith("memory://"):
        # The in-memory transport polls; its 1 s default would make the demo sluggish.
        options["transport_options"] = {"polling_interval": 0.01}
        if url.rstrip("/") == "memory:":
            url = "memory://localhost/"  # else kombu warns "No hostname was supplied" on every use
    if tls is None and url.lower().startswith("amqps://"):
        tls = BrokerTLS()  # kombu's own amqps:// checks the chain but not the host name
    if tls is not None and not url.startswith("memory://"):
        tls_conn: Any = _TLSConnection  # untyped constructor, as _new_connection
        conn: Connection = tls_conn(url, connect_timeout=_CONNECT_TIMEOUT, heartbeat=heartbeat,
                                    ssl=tls_options(tls), **options)
        return conn
    conn = _new_connection(url, connect_timeout=_CONNECT_TIMEOUT, heartbeat=heartbeat, **options)
    return conn


def tls_options(tls: BrokerTLS) -> dict[str, Any]:
    """``tls`` as py-amqp's ``ssl`` dict. py-amqp 5.x builds its own ``SSLContext`` from it (it takes no
    context object) and turns ``check_hostname`` on exactly when ``server_hostname`` is given, so
    ``_TLSConnection`` sets that to the host of each URL tried."""
    options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": tls.ca_file}
    if tls.cert_file:
        options["certfile"] = tls.cert_file
        options["keyfile"] = tls.key_file
    if tls.minimum_version:
        options["tls_minimum_version"] = ssl.TLSVersion[tls.minimum_version]
    if tls.verify_hostname:
        options["server_hostname"] = None  # filled per host by _TLSConnection
    return options


class _TLSConnection(Connection):
    """A kombu connection whose ``ssl`` options name the host being connected to.

    kombu fills a ``server_hostname`` of None in place, in the one dict shared by every failover host
    (and after turning ``localhost`` into 127.0.0.1): the second host would be checked against the
    first one's name. Here each host (``__init__`` and every ``switch``) gets its own copy."""

    def _init_params(self, **params: Any) -> None:  # type: ignore[override]  # kombu passes keywords
        options = params.get("ssl")
        if isinstance(options, dict) and "server_hostname" in options:
            params["ssl"] = {**options, "server_hostname": params.get("hostname") or None}
        super()._init_params(**params)  # type: ignore[no-untyped-call]


def publish_raw(
    target: str | Connection,
    exchange: str,
    routing_key: str,
    body: bytes | str,
    *,
    exchange_type: str = "topic",
    durable: bool = False,
    auto_delete: bool = False,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    headers: dict[str, Any] | None = None,
    expiration: float | None = None,
) -> None:
    """Publish ``body`` as is (no serialisation) to ``exchange``; declares the exchange once.

    ``target`` is a URL (one connection per call) or an open kombu connection (reused; the demo's
    fake agents and the benchmark pass one).
    """
    if isinstance(target, str):
        with make_connection(target) as conn:
            publish_raw(conn, exchange, routing_key, body, exchange_type=exchange_type, durable=durable,
                        auto_delete=auto_delete, content_type=content_type, content_encoding=content_encoding,
                        headers=headers, expiration=expiration)
        return
    producer = _Producer(target.default_channel, auto_declare=False)
    entity = _Exchange(exchange, type=exchange_type, durable=durable, auto_delete=auto_delete)
    if exchange:
        producer.maybe_declare(entity)
    producer.publish(body, exchange=entity, routing_key=routing_key, content_type=content_type,
                     content_encoding=content_encoding, headers=headers or {}, expiration=expiration)


def quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.debug("bus: ignored %s during cleanup: %s", type(exc).__name__, exc)
