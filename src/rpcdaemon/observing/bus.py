"""The AMQP side of the daemon: a listener thread on the broker, and a raw publisher for the demo.

The only module that imports kombu. The service starts one ``BusListener`` per set of
subscriptions; each message is handed over as a ``RawMessage`` (raw bytes, never deserialised by
kombu, so nothing can be unpickled) to a callback that decodes and records it, then acked whatever
happened (a poison message must not be redelivered forever). The listener binds its own exclusive,
auto-delete queue: consuming Neutron's ``q-reports-plugin`` queue would steal heartbeats from
neutron-server and make agents look dead.

The listener reconnects with exponential backoff until ``stop`` is set, and publishes its link
state (``link()``) on the injected monotonic clock so that the failover plugins can refuse to judge
agents dead while, or right after, the daemon itself was deaf.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kombu import entity as _entity
from kombu import messaging as _messaging
from kombu.connection import Connection

from rpcdaemon.observing.amqpurl import normalise_url, url_for_log

__all__ = [
    "BusCounts",
    "BusListener",
    "LinkState",
    "RawMessage",
    "Subscription",
    "fanout_subscription",
    "make_connection",
    "neutron_subscription",
    "normalise_url",
    "publish_raw",
    "url_for_log",
]

log = logging.getLogger(__name__)

# kombu's constructors are untyped; calling them through Any keeps mypy strict for the rest.
_new_connection: Any = Connection
_Consumer: Any = _messaging.Consumer
_Producer: Any = _messaging.Producer
_Exchange: Any = _entity.Exchange
_Queue: Any = _entity.Queue

_DRAIN_TIMEOUT = 0.5  # how long one drain waits: bounds how quickly ``stop`` is noticed
_HEARTBEAT_EVERY = 1.0  # seconds between kombu heartbeat checks (AMQP heartbeats every 10 s)
_AMQP_HEARTBEAT = 20  # seconds; detects a silently dead broker or network within ~40 s
_CONNECT_TIMEOUT = 1.5  # per host and attempt, so a black-holed broker does not delay shutdown
_PREFETCH = 256  # enough in flight for thousands of messages per second
# On AMQP, one basic.ack(multiple) per batch instead of one per message: the per-message ack
# frame was half the cost of the whole path. A batch is flushed when full or _ACK_DELAY old.
_ACK_BATCH = 64
_ACK_DELAY = 0.1


@dataclass(frozen=True, slots=True)
class Subscription:
    """One binding: the exchange (declared exactly as its owner declares it) and a routing key."""

    exchange: str
    routing_key: str
    exchange_type: str = "topic"
    durable: bool = False
    auto_delete: bool = False


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One delivery, undecoded. ``received_at`` is the listener's monotonic clock at delivery."""

    exchange: str
    routing_key: str
    body: bytes
    content_type: str | None
    content_encoding: str | None
    received_at: float


@dataclass(frozen=True, slots=True)
class LinkState:
    """Whether the listener is connected, since when (monotonic), and how many links were lost."""

    connected: bool
    since: float
    outages: int


@dataclass(slots=True)
class BusCounts:
    """Delivery counters, written by the listener thread only (int updates are atomic to readers).

    ``acked`` may trail ``received`` by up to one ack batch for _ACK_DELAY seconds.
    """

    received: int = 0
    acked: int = 0
    failed: int = 0  # on_message raised; the message was acked anyway


# Subscriptions for the exchanges Neutron uses, declared with the properties oslo.messaging uses
# (amqp_durable_queues=False, amqp_auto_delete=False; fanout exchanges are auto-delete).
def neutron_subscription(routing_key: str, exchange: str = "neutron") -> Subscription:
    return Subscription(exchange, routing_key, "topic", durable=False, auto_delete=False)


def fanout_subscription(topic: str) -> Subscription:
    return Subscription(f"{topic}_fanout", "", "fanout", durable=False, auto_delete=True)


class BusListener(threading.Thread):
    """A daemon thread consuming the subscriptions until ``stop`` is set.

    ``connection_factory`` (for tests and the demo) is called once; the listener owns the returned
    connection and re-establishes it after a loss (a kombu connection keeps its failover cycle).
    """

    def __init__(
        self,
        url: str,
        subscriptions: Sequence[Subscription],
        on_message: Callable[[RawMessage], None],
        *,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        queue_expire: float | None = None,
        name: str = "rpcdaemon",
        reconnect_backoff: tuple[float, float] = (1.0, 30.0),
        connection_factory: Callable[[], Connection] | None = None,
    ) -> None:
        super().__init__(name=f"bus-{name}", daemon=True)
        if not subscriptions:
            raise ValueError("BusListener needs at least one subscription")
        for sub in subscriptions:
            if not sub.exchange:
                raise ValueError(f"cannot bind to the default exchange (routing key {sub.routing_key!r})")
        low, high = reconnect_backoff
        if not 0 < low <= high:
            raise ValueError(f"reconnect_backoff must be 0 < min <= max, got {reconnect_backoff!r}")
        self.url = url
        self.subscriptions = tuple(subscriptions)
        self.counts = BusCounts()
        self.queue_name = ""
        self._batch_acks = False  # set per connection: the virtual transports ignore multiple=True
        self._unacked: Any = None  # the newest delivered-but-unacked message (batched mode)
        self._unacked_count = 0
        self._unacked_since = 0.0
        self._on_message = on_message
        self._stop_event = stop
        self._clock = clock
        self._queue_expire = queue_expire
        self._label = name
        self._backoff = (low, high)
        self._factory = connection_factory or (lambda: make_connection(url))
        self._lock = threading.Lock()
        self._link = LinkState(connected=False, since=clock(), outages=0)

    # -- read by other threads -----------------------------------------------------------------

    def link(self) -> LinkState:
        with self._lock:
            return self._link

    # -- the thread ------------------------------------------------------------------------------

    def run(self) -> None:
        conn: Any = self._factory()  # Any: kombu's Connection methods are untyped
        delay = self._backoff[0]
        failing_since: float | None = None  # set while the bus is unreachable, for the log lines
        try:
            while not self._stop_event.is_set():
                try:
                    channel, consumer = self._open(conn)
                except Exception as exc:
                    if failing_since is None:
                        failing_since = self._clock()
                        self._log_failure("cannot listen on", conn, exc, delay)
                    else:
                        log.debug("bus %s: still cannot listen: %s: %s", self._label, type(exc).__name__, exc)
                else:
                    delay = self._backoff[0]
                    self._mark_up(conn, failing_since)
                    failing_since = None
                    try:
                        self._drain(conn, channel, consumer)
                        break  # stop was set: the finally clause closes the link cleanly
                    except Exception as exc:
                        failing_since = self._mark_down()
                        self._log_failure("lost the link to", conn, exc, delay)
                _discard(conn)
                if self._stop_event.wait(delay):
                    break
                delay = min(delay * 2, self._backoff[1])
        finally:
            _close(conn)
            with self._lock:
                self._link = LinkState(False, self._clock(), self._link.outages)
            log.debug("bus %s: listener stopped", self._label)

    def _open(self, conn: Any) -> tuple[Any, Any]:
        """Connect, declare, bind and start consuming; the link counts as up only after this."""
        # Each failover host once per attempt; the backoff between attempts is ours and honours
        # ``stop`` (kombu's own retry sleeps would not).
        conn.ensure_connection(
            max_retries=max(1, len(conn.alt)),
            interval_start=0,
            interval_step=0,
            interval_max=0,
            reraise_as_library_errors=False,
        )
        self._declare_exchanges(conn)
        channel = conn.channel()
        channel.basic_qos(0, _PREFETCH, False)  # positional: amqp and virtual name them differently
        # A fresh name per connection: the broker may not have dropped the last exclusive queue yet.
        self.queue_name = f"rpcdaemon.{self._label}.{socket.gethostname()}.{uuid.uuid4().hex}"
        arguments = {"x-expires": int(self._queue_expire * 1000)} if self._queue_expire else None
        channel.queue_declare(
            queue=self.queue_name, durable=False, exclusive=True, auto_delete=True, arguments=arguments
        )
        for sub in self.subscriptions:
            channel.queue_bind(queue=self.queue_name, exchange=sub.exchange, routing_key=sub.routing_key)
        # accept=json only matters if anyone ever calls message.decode(): never pickle.
        consumer = _Consumer(
            channel,
            queues=[_Queue(self.queue_name, no_declare=True)],
            on_message=self._deliver,
            on_decode_error=self._undecodable,
            accept=["application/json"],
        )
        self._batch_acks = conn.transport.driver_type == "amqp"
        self._unacked, self._unacked_count = None, 0  # those of a lost channel are gone with it
        consumer.consume()
        return channel, consumer

    def _drain(self, conn: Any, channel: Any, consumer: Any) -> None:
        """Deliver until ``stop`` (returns) or the link fails (raises)."""
        next_beat = time.monotonic() + _HEARTBEAT_EVERY
        while not self._stop_event.is_set():
            timeout = _ACK_DELAY if self._unacked is not None else _DRAIN_TIMEOUT
            with contextlib.suppress(TimeoutError):  # idle: time to check stop and heartbeats
                conn.drain_events(timeout=timeout)
            now = time.monotonic()
            if self._unacked is not None and now - self._unacked_since >= _ACK_DELAY:
                self._flush_acks()
            if now >= next_beat:
                conn.heartbeat_check()
                next_beat = now + _HEARTBEAT_EVERY
        self._flush_acks()
        # A clean stop: the memory transport knows no auto-delete, so drop the queue ourselves.
        _quietly(consumer.cancel)
        _quietly(channel.queue_delete, self.queue_name)
        _quietly(channel.close)

    def _declare_exchanges(self, conn: Any) -> None:
        for sub in {(s.exchange, s.exchange_type, s.durable, s.auto_delete): s for s in self.subscriptions}.values():
            channel = conn.channel()
            try:
                channel.exchange_declare(
                    exchange=sub.exchange, type=sub.exchange_type, durable=sub.durable, auto_delete=sub.auto_delete
                )
            except conn.channel_errors as exc:
                # The exchange exists with other properties (e.g. amqp_durable_queues=True): bind to
                # it as it is rather than fail; the error closed that channel.
                log.warning(
                    "bus %s: exchange %s exists with other properties than %s durable=%s auto_delete=%s (%s);"
                    " using it as it is",
                    self._label,
                    sub.exchange,
                    sub.exchange_type,
                    sub.durable,
                    sub.auto_delete,
                    exc,
                )
                channel = conn.channel()
                channel.exchange_declare(exchange=sub.exchange, type=sub.exchange_type, passive=True)
            _quietly(channel.close)

    def _deliver(self, message: Any) -> None:
        received_at = self._clock()
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
        self.counts.received += 1
        try:
            self._on_message(raw)
        except Exception:
            self.counts.failed += 1
            log.exception("bus %s: message handler failed on %s/%s", self._label, raw.exchange, raw.routing_key)
        self._ack(message)

    def _ack(self, message: Any) -> None:
        if not self._batch_acks:
            message.ack()
            self.counts.acked += 1
            return
        if self._unacked is None:
            self._unacked_since = time.monotonic()
        self._unacked = message
        self._unacked_count += 1
        if self._unacked_count >= _ACK_BATCH:
            self._flush_acks()

    def _flush_acks(self) -> None:
        if self._unacked is not None:
            self._unacked.ack(multiple=True)  # this delivery tag and every earlier one
            self.counts.acked += self._unacked_count
            self._unacked, self._unacked_count = None, 0

    def _undecodable(self, message: Any, exc: Exception) -> None:
        # Only reachable for transport-level problems (e.g. a bad compression header).
        self.counts.received += 1
        self.counts.failed += 1
        log.warning("bus %s: dropping a message kombu could not unpack: %s", self._label, exc)
        self._ack(message)

    # -- link state ------------------------------------------------------------------------------

    def _mark_up(self, conn: Any, failing_since: float | None) -> None:
        now = self._clock()
        with self._lock:
            self._link = LinkState(True, now, self._link.outages)
        bound = ", ".join(f"{s.exchange}/{s.routing_key or '(fanout)'}" for s in self.subscriptions)
        after = "" if failing_since is None else f" after {now - failing_since:.1f} s without the bus"
        log.info(
            "bus %s: listening on %s%s; queue %s bound to %s",
            self._label,
            _describe(conn),
            after,
            self.queue_name,
            bound,
        )

    def _mark_down(self) -> float:
        now = self._clock()
        with self._lock:
            self._link = LinkState(False, now, self._link.outages + 1)
        return now

    def _log_failure(self, what: str, conn: Connection, exc: BaseException, delay: float) -> None:
        expected = isinstance(exc, (*conn.connection_errors, *conn.channel_errors, OSError))
        log.log(
            logging.WARNING if expected else logging.ERROR,
            "bus %s: %s %s: %s: %s; retrying in %g s, backing off to %g s",
            self._label,
            what,
            _describe(conn),
            type(exc).__name__,
            exc,
            delay,
            self._backoff[1],
            exc_info=not expected,
        )


def make_connection(url: str) -> Connection:
    """A kombu connection for ``url`` (``;``-separated alternates fail over round-robin)."""
    options: dict[str, Any] = {}
    if url.startswith("memory://"):
        # The in-memory transport polls; its 1 s default would make the demo sluggish.
        options["transport_options"] = {"polling_interval": 0.01}
        if url.rstrip("/") == "memory:":
            url = "memory://localhost/"  # else kombu warns "No hostname was supplied" on every use
    conn: Connection = _new_connection(url, connect_timeout=_CONNECT_TIMEOUT, heartbeat=_AMQP_HEARTBEAT, **options)
    return conn


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
            publish_raw(
                conn,
                exchange,
                routing_key,
                body,
                exchange_type=exchange_type,
                durable=durable,
                auto_delete=auto_delete,
                content_type=content_type,
                content_encoding=content_encoding,
                headers=headers,
                expiration=expiration,
            )
        return
    producer = _Producer(target.default_channel, auto_declare=False)
    entity = _Exchange(exchange, type=exchange_type, durable=durable, auto_delete=auto_delete)
    if exchange:
        producer.maybe_declare(entity)
    producer.publish(
        body,
        exchange=entity,
        routing_key=routing_key,
        content_type=content_type,
        content_encoding=content_encoding,
        headers=headers or {},
        expiration=expiration,
    )


def _describe(conn: Any) -> str:
    try:
        if conn.transport_cls == "memory":
            return "memory://"
        return url_for_log(conn.as_uri(include_password=False, mask="***"))
    except Exception:  # describing must never be what breaks the listener
        return "the broker"


def _discard(conn: Any) -> None:
    # Drop the broken connection's references without talking to a broker that may be gone.
    _quietly(conn.collect, 0.1)


def _close(conn: Any) -> None:
    _quietly(conn.release)


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.debug("bus: ignored %s during cleanup: %s", type(exc).__name__, exc)
