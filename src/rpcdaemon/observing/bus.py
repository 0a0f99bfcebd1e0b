"""The AMQP side of the daemon: a listener thread on the broker, and a raw publisher for the demo.

The only module that imports kombu. The service starts one ``BusListener`` per set of
subscriptions; each message is handed over as a ``RawMessage`` (raw bytes, never deserialised by
kombu, so nothing can be unpickled) to a callback that decodes and records it, then acked whatever
happened (a poison message must not be redelivered forever). The listener binds its own exclusive,
auto-delete queue: consuming Neutron's ``q-reports-plugin`` queue would steal heartbeats from
neutron-server and make agents look dead.

The listener reconnects with exponential backoff until ``stop`` is set, and publishes its link
state (``link()``) on the injected monotonic clock so that the failover plugins can refuse to judge
agents dead while, or right after, the daemon itself was deaf. It never dies silently: an error
that is not the broker's (a bug, a URL kombu cannot use) is logged with its traceback and retried a
few times; if it persists the thread ends with ``fatal`` set, which the service turns into a non-zero
exit so that systemd restarts the daemon.

Exchanges belong to Neutron (oslo.messaging declares them, with ``amqp_durable_queues`` and
``amqp_auto_delete`` deciding their properties), so the listener only ever declares them passively:
declaring one with other properties fails, and declaring it first after a broker reset would make
neutron-server fail with PRECONDITION_FAILED. Waiting was chosen over guessing the properties from
neutron.conf: the Dump plugin and ``rpchost`` set-ups have no neutron.conf, and a missing topic exchange
means nobody talks on it yet (oslo declares it before each first publish), so nothing is lost by
waiting. A missing exchange that oslo declares auto-delete (the ``*_fanout`` exchanges, which exist
only while an agent of that topic is connected) is optional: heartbeats are consumed without it and it
is bound when it appears. A missing required exchange keeps the link down (no window starts) and says
once, at WARNING, what it waits for.

The daemon's queue is bounded (``x-max-length``, ``x-max-length-bytes``, ``x-overflow = drop-head``):
a stalled consumer cannot make the broker grow it without limit. What the broker drops (or what
expires) is dead-lettered through the default exchange into a small queue of the listener's own,
consumed on the same channel and counted in ``counts.dropped``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kombu import entity as _entity
from kombu import messaging as _messaging
from kombu.connection import Connection

from rpcdaemon.access import BrokerTLS
from rpcdaemon.observing.amqpurl import normalise_url, url_for_log

__all__ = [
    "BrokerTLS",
    "BusCounts",
    "BusListener",
    "LinkState",
    "RawMessage",
    "Subscription",
    "check_tls",
    "check_url",
    "fanout_subscription",
    "make_connection",
    "neutron_subscription",
    "normalise_url",
    "publish_raw",
    "tls_options",
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
# The daemon's queue: a heartbeat is ~3 KB; 10000 is minutes of backlog for a thousand agents.
QUEUE_MAX_LENGTH = 10_000
QUEUE_MAX_BYTES = 64 * 1024 * 1024
# The queue that counts what the broker dropped: bounded too (only its length is ever read).
_DROPPED_MAX_LENGTH = 10_000
_DROPPED_MAX_BYTES = 16 * 1024 * 1024
_RECHECK_EVERY = 5.0  # seconds between passive checks for an optional exchange that is missing
_DROP_LOG_EVERY = 60.0  # at most one WARNING about drops per this many seconds
# Errors that are not the broker's: this many in a row (without a stable link between) are fatal.
MAX_UNEXPECTED = 5
_STABLE_LINK = 30.0  # a link that stayed up this long resets that count


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
    dropped: int = 0  # dropped by the broker (queue full, or the message expired) and dead-lettered to us


class _MissingExchange(Exception):
    """A required exchange does not exist (yet): wait for its owner to declare it."""


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
        queue_max_length: int = QUEUE_MAX_LENGTH,
        queue_max_bytes: int = QUEUE_MAX_BYTES,
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
        self.dropped_queue = ""
        self._max_length = queue_max_length
        self._max_bytes = queue_max_bytes
        self._fatal: str | None = None
        self._pending: list[Subscription] = []  # optional subscriptions whose exchange is missing
        self._waiting_for: tuple[str, ...] = ()  # required exchanges last found missing
        self._drops_logged = -float("inf")
        self._drops_said = 0
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

    @property
    def fatal(self) -> str | None:
        """Why the listener gave up (it will not reconnect), or None while it keeps trying."""
        return self._fatal

    def pending_exchanges(self) -> list[str]:
        """Optional exchanges not bound yet because they do not exist (yet)."""
        return [s.exchange for s in list(self._pending)]

    # -- the thread ------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # the thread must never end without saying why
            self._fatal = f"{type(exc).__name__}: {exc}"
            log.critical("bus %s: listener failed and stopped: %s", self._label, self._fatal, exc_info=True)
        finally:
            with self._lock:
                self._link = LinkState(False, self._clock(), self._link.outages)
            log.debug("bus %s: listener stopped", self._label)

    def _run(self) -> None:
        conn: Any = None  # Any: kombu's Connection methods are untyped
        delay = self._backoff[0]
        failing_since: float | None = None  # set while the bus is unreachable, for the log lines
        unexpected = 0  # consecutive errors that are not the broker's
        try:
            while not self._stop_event.is_set():
                keep = False  # keep the connection for the next try (it is healthy)
                try:
                    if conn is None:
                        conn = self._factory()
                    channel, consumer = self._open(conn)
                except _MissingExchange as exc:
                    keep = True
                    self._say_waiting(conn, exc.args[0])
                except Exception as exc:
                    if _expected(conn, exc):
                        if failing_since is None:
                            failing_since = self._clock()
                            self._log_failure("cannot listen on", conn, exc, delay)
                        else:
                            log.debug("bus %s: still cannot listen: %s: %s", self._label, type(exc).__name__, exc)
                    else:
                        unexpected += 1
                        self._log_unexpected("cannot listen on", conn, exc, delay, unexpected)
                else:
                    delay = self._backoff[0]
                    self._mark_up(conn, failing_since)
                    failing_since = None
                    up_at = time.monotonic()
                    try:
                        self._drain(conn, channel, consumer)
                        break  # stop was set: the finally clause closes the link cleanly
                    except Exception as exc:
                        failing_since = self._mark_down()
                        if time.monotonic() - up_at >= _STABLE_LINK:
                            unexpected = 0
                        if _expected(conn, exc):
                            self._log_failure("lost the link to", conn, exc, delay)
                        else:
                            unexpected += 1
                            self._log_unexpected("lost the link to", conn, exc, delay, unexpected)
                if unexpected >= MAX_UNEXPECTED:
                    self._fatal = f"{unexpected} unexpected errors in a row on {_describe(conn)}; giving up"
                    log.critical("bus %s: %s", self._label, self._fatal)
                    return
                if conn is not None and not keep:
                    _discard(conn)
                if self._stop_event.wait(delay):
                    break
                delay = min(delay * 2, self._backoff[1])
        finally:
            if conn is not None:
                _close(conn)

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
        present = self._check_exchanges(conn)  # raises _MissingExchange: the link stays down
        channel = conn.channel()
        channel.basic_qos(0, _PREFETCH, False)  # positional: amqp and virtual name them differently
        # A fresh name per connection: the broker may not have dropped the last exclusive queue yet.
        self.queue_name = f"rpcdaemon.{self._label}.{socket.gethostname()}.{uuid.uuid4().hex}"
        self.dropped_queue = f"{self.queue_name}.dropped"
        channel.queue_declare(
            queue=self.dropped_queue, durable=False, exclusive=True, auto_delete=True,
            arguments={"x-max-length": _DROPPED_MAX_LENGTH, "x-max-length-bytes": _DROPPED_MAX_BYTES,
                       "x-overflow": "drop-head"},
        )
        arguments: dict[str, Any] = {
            "x-max-length": self._max_length,
            "x-max-length-bytes": self._max_bytes,
            "x-overflow": "drop-head",  # the oldest go first: the newest heartbeats matter
            "x-dead-letter-exchange": "",  # the default exchange: straight into our dropped queue
            "x-dead-letter-routing-key": self.dropped_queue,
        }
        if self._queue_expire:
            # Moot on an exclusive queue (deleted with its connection); kept for existing configs.
            arguments["x-expires"] = int(self._queue_expire * 1000)
        channel.queue_declare(
            queue=self.queue_name, durable=False, exclusive=True, auto_delete=True, arguments=arguments
        )
        self._pending = []
        for sub in self.subscriptions:
            if sub.exchange in present:
                channel.queue_bind(queue=self.queue_name, exchange=sub.exchange, routing_key=sub.routing_key)
            else:
                self._pending.append(sub)
        for name in sorted({sub.exchange for sub in self._pending}):
            log.info("bus %s: exchange %s does not exist yet (its owner declares it while connected);"
                     " listening without it, binding it when it appears", self._label, name)
        # accept=json only matters if anyone ever calls message.decode(): never pickle.
        consumer = _Consumer(
            channel,
            queues=[_Queue(self.queue_name, no_declare=True)],
            on_message=self._deliver,
            on_decode_error=self._undecodable,
            accept=["application/json"],
        )
        dropped = _Consumer(
            channel, queues=[_Queue(self.dropped_queue, no_declare=True)], on_message=self._dropped,
            accept=["application/json"],
        )
        self._batch_acks = conn.transport.driver_type == "amqp"
        self._unacked, self._unacked_count = None, 0  # those of a lost channel are gone with it
        dropped.consume()
        consumer.consume()
        return channel, consumer

    def _drain(self, conn: Any, channel: Any, consumer: Any) -> None:
        """Deliver until ``stop`` (returns) or the link fails (raises)."""
        next_beat = time.monotonic() + _HEARTBEAT_EVERY
        next_check = time.monotonic() + _RECHECK_EVERY
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
            if self._pending and now >= next_check:
                self._bind_appeared(conn, channel)
                next_check = now + _RECHECK_EVERY
        self._flush_acks()
        # A clean stop: the memory transport knows no auto-delete, so drop the queues ourselves.
        _quietly(consumer.cancel)
        _quietly(channel.queue_delete, self.queue_name)
        _quietly(channel.queue_delete, self.dropped_queue)
        _quietly(channel.close)

    def _bind_appeared(self, conn: Any, channel: Any) -> None:
        """Bind the optional subscriptions whose exchange has appeared since."""
        still = []
        for sub in self._pending:
            if self._exchange_exists(conn, sub):
                channel.queue_bind(queue=self.queue_name, exchange=sub.exchange, routing_key=sub.routing_key)
                log.info("bus %s: exchange %s appeared; bound %s", self._label, sub.exchange,
                         sub.routing_key or "(fanout)")
            else:
                still.append(sub)
        self._pending = still

    def _check_exchanges(self, conn: Any) -> set[str]:
        """The subscribed exchanges that exist (passive declares only: never create or change one).

        Raises _MissingExchange (with their names) if a required one does not exist."""
        present: set[str] = set()
        missing: list[str] = []
        for sub in {s.exchange: s for s in reversed(self.subscriptions)}.values():
            if self._exchange_exists(conn, sub):
                present.add(sub.exchange)
            elif any(s.exchange == sub.exchange and not s.optional for s in self.subscriptions):
                missing.append(sub.exchange)
        if missing:
            raise _MissingExchange(tuple(sorted(missing)))
        if self._waiting_for:
            log.info("bus %s: exchange %s exists now", self._label, ", ".join(self._waiting_for))
            self._waiting_for = ()
        return present

    def _exchange_exists(self, conn: Any, sub: Subscription) -> bool:
        channel = conn.channel()
        if conn.transport_cls == "memory":
            # The demo's in-process bus: no Neutron owns its exchanges, and its fake agents may start
            # after the listener, so declare them as oslo.messaging would.
            channel.exchange_declare(exchange=sub.exchange, type=sub.exchange_type, durable=sub.durable,
                                     auto_delete=sub.auto_delete)
            return True
        try:
            # Passive: properties are not compared, so a durable exchange (amqp_durable_queues) is fine.
            channel.exchange_declare(exchange=sub.exchange, type=sub.exchange_type, passive=True)
        except conn.channel_errors as exc:
            if _not_found(exc):
                return False  # the broker closed that channel
            raise
        finally:
            _quietly(channel.close)
        return True

    def _say_waiting(self, conn: Any, names: tuple[str, ...]) -> None:
        if names != self._waiting_for:
            log.warning(
                "bus %s: connected to %s, but exchange %s does not exist yet; waiting for neutron-server or an"
                " agent to declare it (rpcdaemon never declares Neutron's exchanges)",
                self._label, _describe(conn), ", ".join(names),
            )
        self._waiting_for = names

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

    def _dropped(self, message: Any) -> None:
        """A message the broker dropped from our queue (full, or expired), dead-lettered to us."""
        self.counts.dropped += 1
        now = time.monotonic()
        if now - self._drops_logged >= _DROP_LOG_EVERY:
            log.warning("bus %s: the broker dropped %d messages from the daemon's queue (%d in all): it is not"
                        " keeping up", self._label, self.counts.dropped - self._drops_said, self.counts.dropped)
            self._drops_logged, self._drops_said = now, self.counts.dropped
        self._ack(message)

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

    def _log_unexpected(self, what: str, conn: Any, exc: BaseException, delay: float, count: int) -> None:
        log.error(
            "bus %s: %s %s: unexpected %s: %s (%d of %d before giving up); retrying in %g s",
            self._label, what, _describe(conn), type(exc).__name__, exc, count, MAX_UNEXPECTED, delay,
            exc_info=True,
        )

    def _log_failure(self, what: str, conn: Connection, exc: BaseException, delay: float) -> None:
        expected = _expected(conn, exc)
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


def make_connection(url: str, tls: BrokerTLS | None = None) -> Connection:
    """A kombu connection for ``url`` (``;``-separated alternates fail over round-robin).

    With ``tls`` (or an ``amqps://`` URL, which means ``BrokerTLS()``) the link is TLS: the chain is
    verified and, unless ``tls.verify_hostname`` is off, the certificate must name the host of the URL
    being tried (each failover host is checked against its own name)."""
    options: dict[str, Any] = {}
    if url.startswith("memory://"):
        # The in-memory transport polls; its 1 s default would make the demo sluggish.
        options["transport_options"] = {"polling_interval": 0.01}
        if url.rstrip("/") == "memory:":
            url = "memory://localhost/"  # else kombu warns "No hostname was supplied" on every use
    if tls is None and url.lower().startswith("amqps://"):
        tls = BrokerTLS()  # kombu's own amqps:// checks the chain but not the host name
    if tls is not None and not url.startswith("memory://"):
        tls_conn: Any = _TLSConnection  # untyped constructor, as _new_connection
        conn: Connection = tls_conn(url, connect_timeout=_CONNECT_TIMEOUT, heartbeat=_AMQP_HEARTBEAT,
                                    ssl=tls_options(tls), **options)
        return conn
    conn = _new_connection(url, connect_timeout=_CONNECT_TIMEOUT, heartbeat=_AMQP_HEARTBEAT, **options)
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


def check_tls(tls: BrokerTLS) -> None:
    """Load ``tls``'s files into an ``SSLContext`` as the connection will, so that a bad CA, certificate
    or key is found when the configuration is read. Raises ``ssl.SSLError``, ``OSError`` or ``KeyError``."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.minimum_version:
        context.minimum_version = ssl.TLSVersion[tls.minimum_version]


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


def check_url(url: str, tls: BrokerTLS | None = None) -> list[str]:
    """Check ``url`` the way the listener will connect, without any network: build the kombu
    connection, then each failover alternate, and read its transport, host, port and virtual host.

    Returns the alternates as they may be logged (passwords masked). Raises ValueError with one line
    naming the alternate (masked) and what is wrong; kombu's own text is not shown, it may quote a
    password."""
    try:
        alternates = list(make_connection(url, tls).alt) or [url]
    except Exception:
        alternates = [part for part in url.split(";") if part.strip()] or [url]
    shown = []
    for alt in alternates:
        masked = url_for_log(alt)
        conn: Any = None
        try:
            conn = make_connection(alt, tls)
            host, port, vhost = conn.hostname, conn.port, conn.virtual_host
            conn.transport  # noqa: B018 - resolves the transport class (no connection is made)
        except KeyError:
            raise ValueError(f"broker URL {masked}: unknown transport (expected amqp://, amqps:// or"
                             " memory://)") from None
        except Exception as exc:
            hint = ""
            if any(c in _userinfo(alt) for c in "/?#@"):
                hint = "; a '/', '?', '#' or '@' in the user name or password must be written %2F, %3F, %23, %40"
            port_problem = "port" in str(exc).lower()
            what = "the port is not a number between 1 and 65535" if port_problem else type(exc).__name__
            raise ValueError(f"broker URL {masked}: kombu cannot use it: {what}{hint}") from None
        finally:
            if conn is not None:
                _quietly(conn.release)
        if conn.transport_cls != "memory" and not host:
            raise ValueError(f"broker URL {masked}: no host name")
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"broker URL {masked}: the port is not a number between 1 and 65535")
        if not isinstance(vhost, str):
            raise ValueError(f"broker URL {masked}: cannot read the virtual host")
        shown.append(masked)
    return shown


def _userinfo(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[0] if "@" in rest else ""


def _expected(conn: Any, exc: BaseException) -> bool:
    """A broker or network problem (retried for ever), as opposed to a bug or a bad setting."""
    errors = (*getattr(conn, "connection_errors", ()), *getattr(conn, "channel_errors", ()), OSError)
    return isinstance(exc, errors)


def _not_found(exc: BaseException) -> bool:
    # py-amqp's NotFound carries code 404; kombu's virtual transports raise ChannelError('NOT_FOUND ...').
    return getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc)


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
