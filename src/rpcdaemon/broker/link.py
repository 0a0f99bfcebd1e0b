"""The listener's link: one connection as ``observing.listener`` drives it.

``BrokerLink`` connects (each failover host once), checks exchanges passively, opens the one channel with
its queues, bindings and consumers, drains, and hands each delivery over as a ``RawMessage`` (raw bytes:
kombu never deserialises them, so nothing can be unpickled) with its ``Ack``. Errors are classified here
once: ``is_broker_error`` (the broker or the network: retried for ever; a host name the socket module
cannot encode is one too, ``HostNameError``) against everything else (a bug, a setting kombu cannot use),
and ``explain`` turns an error into the words an operator acts on. ``Subscription`` is one binding;
``neutron_subscription`` and ``fanout_subscription`` declare Neutron's exchanges as oslo.messaging does.
``leader_lock.BrokerLock`` and ``control_link.ControlLink`` are links too.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kombu import entity as _entity
from kombu import messaging as _messaging

from rpcdaemon.broker.amqpurl import url_for_log
from rpcdaemon.broker.checks import HostNameError, host_problem, shorten
from rpcdaemon.broker.connection import Connection, quietly

# kombu's constructors are untyped; calling them through Any keeps mypy strict for the rest.
_Consumer: Any = _messaging.Consumer
_Queue: Any = _entity.Queue

_NO_CLIENT_CERT = "it may require a client certificate: set ssl_cert_file/ssl_key_file"
_CLIENT_CERT_REFUSED = "it may not accept the client certificate: check ssl_cert_file/ssl_key_file and its CA"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One binding: the exchange (declared exactly as its owner declares it) and a routing key."""

    exchange: str
    routing_key: str
    exchange_type: str = "topic"
    durable: bool = False
    auto_delete: bool = False

    @property
    def optional(self) -> bool:
        """An auto-delete exchange exists only while its owner's consumers do: bind it when it appears."""
        return self.auto_delete


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One delivery, undecoded. ``received_at`` is the listener's monotonic clock at delivery."""

    exchange: str
    routing_key: str
    body: bytes
    content_type: str | None
    content_encoding: str | None
    received_at: float


# Subscriptions for the exchanges Neutron uses, declared with the properties oslo.messaging uses
# (amqp_durable_queues=False, amqp_auto_delete=False; fanout exchanges are auto-delete).
def neutron_subscription(routing_key: str, exchange: str = "neutron") -> Subscription:
    return Subscription(exchange, routing_key, "topic", durable=False, auto_delete=False)


def fanout_subscription(topic: str) -> Subscription:
    return Subscription(f"{topic}_fanout", "", "fanout", durable=False, auto_delete=True)


class Ack(Protocol):
    """Acknowledges one delivery; ``multiple=True`` also every earlier one on the channel."""

    def __call__(self, multiple: bool = False) -> None: ...


class BrokerLink:
    """One kombu connection (made by ``factory`` on first use, then kept: it keeps its failover cycle)
    and the one channel the listener consumes on. Not thread-safe: the listener thread owns it."""

    def __init__(self, factory: Callable[[], Connection]) -> None:
        self._factory = factory
        self._conn: Any = None  # Any: kombu's Connection methods are untyped
        self._channel: Any = None
        self._consumers: list[Any] = []

    def connect(self) -> None:
        """Make sure the connection is up: each failover host once; the backoff between tries is the
        caller's (kombu's own retry sleeps would not honour ``stop``)."""
        if self._conn is None:
            self._conn = self._factory()
        try:
            self._conn.ensure_connection(
                max_retries=max(1, len(self._conn.alt)),
                interval_start=0,
                interval_step=0,
                interval_max=0,
                reraise_as_library_errors=False,
            )
        except UnicodeError as exc:  # getaddrinfo's (or the TLS server_hostname's) IDNA encoding
            host = str(getattr(self._conn, "hostname", "") or "")
            why = host_problem(host) or str(exc)
            raise HostNameError(f"host name {shorten(host)!r} cannot be looked up: {why}") from None

    def describe(self) -> str:
        """The broker being tried, as it may be logged (password masked)."""
        try:
            if self._conn.transport_cls == "memory":
                return "memory://"
            return url_for_log(self._conn.as_uri(include_password=False, mask="***"))
        except Exception:  # describing must never be what breaks the listener
            return "the broker"

    def is_broker_error(self, exc: BaseException) -> bool:
        """A broker or network problem (retried for ever), as opposed to a bug or a bad setting."""
        conn = self._conn
        errors = (*getattr(conn, "connection_errors", ()), *getattr(conn, "channel_errors", ()), OSError)
        return isinstance(exc, errors)

    def explain(self, exc: BaseException) -> str:
        """``exc`` in one line an operator can act on (never a traceback, never kombu's URL)."""
        # A broker that demands a client certificate hangs up right after the handshake (TLS 1.3
        # sends its alert late), which the client sees as an EOF "in violation of protocol".
        if isinstance(exc, ssl.SSLEOFError) or (
            isinstance(exc, ssl.SSLError) and "CERTIFICATE_REQUIRED" in str(getattr(exc, "reason", ""))
        ):
            options = getattr(self._conn, "ssl", None)
            hint = _CLIENT_CERT_REFUSED if isinstance(options, dict) and options.get("certfile") else _NO_CLIENT_CERT
            return f"TLS handshake refused by the broker ({hint}; {type(exc).__name__})"
        return f"{type(exc).__name__}: {exc}"

    @property
    def batches_acks(self) -> bool:
        """Whether ``ack(multiple=True)`` acknowledges earlier deliveries too (the virtual transports ignore it)."""
        return bool(self._conn.transport.driver_type == "amqp")

    def exchange_exists(self, sub: Subscription) -> bool:
        """A passive declare on a channel of its own (a missing exchange makes the broker close it)."""
        channel = self._conn.channel()
        if self._conn.transport_cls == "memory":
            # The demo's in-process bus: no Neutron owns its exchanges, and its fake agents may start
            # after the listener, so declare them as oslo.messaging would.
            channel.exchange_declare(exchange=sub.exchange, type=sub.exchange_type, durable=sub.durable,
                                     auto_delete=sub.auto_delete)
            return True
        try:
            # Passive: properties are not compared, so a durable exchange (amqp_durable_queues) is fine.
            channel.exchange_declare(exchange=sub.exchange, type=sub.exchange_type, passive=True)
        except self._conn.channel_errors as exc:
            # py-amqp's NotFound carries code 404; kombu's virtual transports say NOT_FOUND.
            if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
                return False
            raise
        finally:
            quietly(channel.close)
        return True

    def open_channel(self, prefetch: int) -> None:
        """The channel every queue, binding and consumer below lives on (those of a lost one are gone)."""
        self._channel = self._conn.channel()
        self._consumers = []
        self._channel.basic_qos(0, prefetch, False)  # positional: amqp and virtual name them differently

    def declare_queue(self, name: str, *, max_length: int, max_bytes: int, dead_letter_to: str | None = None,
                      expires: float | None = None) -> None:
        """An exclusive, auto-delete queue bounded by length and bytes; the oldest are dropped first
        (dead-lettered through the default exchange to ``dead_letter_to``, if given)."""
        arguments: dict[str, Any] = {"x-max-length": max_length, "x-max-length-bytes": max_bytes,
                                     "x-overflow": "drop-head"}
        if dead_letter_to:
            arguments["x-dead-letter-exchange"] = ""
            arguments["x-dead-letter-routing-key"] = dead_letter_to
        if expires:
            arguments["x-expires"] = int(expires * 1000)
        self._channel.queue_declare(queue=name, durable=False, exclusive=True, auto_delete=True, arguments=arguments)

    def bind(self, queue: str, sub: Subscription) -> None:
        self._channel.queue_bind(queue=queue, exchange=sub.exchange, routing_key=sub.routing_key)

    def consume(
        self,
        queue: str,
        on_message: Callable[[RawMessage, Ack], None],
        clock: Callable[[], float],
        on_undecodable: Callable[[Exception, Ack], None] | None = None,
    ) -> None:
        """Start consuming ``queue``: each delivery, stamped with ``clock()``, goes to ``on_message``
        with its ack. ``on_undecodable`` gets what kombu could not unpack (a bad compression header)."""

        def deliver(message: Any) -> None:
            received_at = clock()
            info = message.delivery_info or {}
            body = message.body
            raw = RawMessage(
                exchange=str(info.get("exchange") or ""),
                routing_key=str(info.get("routing_key") or ""),
                body=body.encode("utf-8") if isinstance(body, str) else bytes(body),
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                received_at=received_at,
            )
            on_message(raw, message.ack)

        def undecodable(message: Any, exc: Exception) -> None:
            if on_undecodable is not None:
                on_undecodable(exc, message.ack)
            else:
                message.ack()

        # accept=json only matters if anyone ever calls message.decode(): never pickle.
        consumer = _Consumer(self._channel, queues=[_Queue(queue, no_declare=True)], on_message=deliver,
                             on_decode_error=undecodable, accept=["application/json"])
        consumer.consume()
        self._consumers.append(consumer)

    def drain(self, timeout: float) -> None:
        """Deliver what arrives within ``timeout`` seconds; raises if the link fails."""
        with contextlib.suppress(TimeoutError):  # idle: time for the caller to check stop and timers
            self._conn.drain_events(timeout=timeout)

    def heartbeat_check(self) -> None:
        self._conn.heartbeat_check()

    def close_channel(self, *queues: str) -> None:
        """A clean stop: cancel, delete ``queues`` (the memory transport knows no auto-delete), close."""
        for consumer in self._consumers:
            quietly(consumer.cancel)
        for queue in queues:
            quietly(self._channel.queue_delete, queue)
        quietly(self._channel.close)
        self._consumers, self._channel = [], None

    def discard(self) -> None:
        """Drop a broken connection's references without talking to a broker that may be gone."""
        if self._conn is not None:
            quietly(self._conn.collect, 0.1)

    def close(self) -> None:
        if self._conn is not None:
            quietly(self._conn.release)
