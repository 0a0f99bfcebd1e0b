"""The kombu adapter: the only module that imports kombu (and, through it, py-amqp).

What it offers the rest of the daemon: connections (``make_connection``, with TLS that checks each
failover host's own name), ``check_url`` (each host through ``host_problem``, as the socket module will
take it) and ``check_tls`` for the configuration checks, ``publish_raw`` for the demo and the tests, and
``BrokerLink``: one connection as ``observing.listener`` drives it (connect, passive exchange checks,
one channel with its queues, bindings and consumers, drain, ack handles). Errors are classified here
once: ``is_broker_error`` (the broker or the network: retried for ever; a host name the socket module
cannot encode is one too, ``HostNameError``) against everything else (a bug, a setting kombu cannot
use), and ``explain`` turns an error into the words an operator acts on. Messages are handed over as
``RawMessage`` (raw bytes: kombu never deserialises them, so nothing can be unpickled). ``BrokerLock``
is the leadership lock that ``coordination.leader`` holds on the broker by default (an exclusive queue
on a connection of its own). ``ControlLink`` keeps the control channel's records (``rpcdaemon.control``:
the pause, the active instance's live view) as the one newest message of a queue each.
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kombu import entity as _entity
from kombu import messaging as _messaging
from kombu.connection import Connection
from kombu.utils.url import url_to_parts

from rpcdaemon.access import BrokerTLS
from rpcdaemon.broker.amqpurl import normalise_url, url_for_log

__all__ = [
    "Ack",
    "BrokerLink",
    "BrokerLock",
    "BrokerTLS",
    "Connection",
    "ControlLink",
    "HostNameError",
    "RawMessage",
    "Subscription",
    "check_tls",
    "check_url",
    "control_connection",
    "fanout_subscription",
    "host_problem",
    "lock_connection",
    "make_connection",
    "neutron_subscription",
    "normalise_url",
    "publish_raw",
    "tls_options",
    "url_for_log",
]

log = logging.getLogger("rpcdaemon.observing.bus")  # its name before the move: log lines keep it

# kombu's constructors are untyped; calling them through Any keeps mypy strict for the rest.
_new_connection: Any = Connection
_Consumer: Any = _messaging.Consumer
_Producer: Any = _messaging.Producer
_Exchange: Any = _entity.Exchange
_Queue: Any = _entity.Queue

_AMQP_HEARTBEAT = 20  # seconds; detects a silently dead broker or network within ~40 s
_CONNECT_TIMEOUT = 1.5  # per host and attempt, so a black-holed broker does not delay shutdown
# The leadership lock (BrokerLock): its connection's AMQP heartbeat, the bound on each socket read and
# write, and the lease (shorter than the broker's 4-6 s detection of a silent client; see BrokerLock).
LOCK_PREFIX = "rpcdaemon.leader."
LOCK_HEARTBEAT = 2
LOCK_IO_TIMEOUT = 2.0
LOCK_LEASE = 3.0
CONTROL_IO_TIMEOUT = 5.0  # the control channel's bound on each socket read and write (ControlLink)
_MAX_LABEL, _MAX_NAME = 63, 253  # DNS: octets per label, and in a name (RFC 1035, without the root's dot)
_IDNA_DOTS = re.compile("[.\u3002\uff0e\uff61]")  # the label separators of Python's idna codec
_CODEC_FAILED = re.compile(r"^encoding with 'idna' codec failed \((?:\w+: )?(.*)\)$")
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


class HostNameError(OSError):
    """A broker host name the socket module refuses to look up (it IDNA-encodes every name first): as
    unreachable as a name DNS does not know (``socket.gaierror``), so a broker problem like that one,
    never a malformed record. The configuration checks (``check_url``) refuse such a name before start."""


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
            raise HostNameError(f"host name {_shorten(host)!r} cannot be looked up: {why}") from None

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
            _quietly(channel.close)
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
            _quietly(consumer.cancel)
        for queue in queues:
            _quietly(self._channel.queue_delete, queue)
        _quietly(self._channel.close)
        self._consumers, self._channel = [], None

    def discard(self) -> None:
        """Drop a broken connection's references without talking to a broker that may be gone."""
        if self._conn is not None:
            _quietly(self._conn.collect, 0.1)

    def close(self) -> None:
        if self._conn is not None:
            _quietly(self._conn.release)


class BrokerLock(BrokerLink):
    """The leadership lock on the broker itself (``coordination.leader.LockBackend``): an exclusive,
    non-durable queue ``rpcdaemon.leader.<group>``, declared on a connection of its own.

    RabbitMQ lets one connection at a time declare an exclusive queue of a given name (anyone else's
    declare is refused with 405 RESOURCE_LOCKED, across a cluster too) and deletes it when that
    connection closes or goes silent. ``acquire`` declares it: True, or False on RESOURCE_LOCKED
    (another instance holds it; the broker closes the refused channel, the connection is kept for the
    next try). ``confirm`` is one passive declare of it on its own channel, plus the heartbeat check.
    The connection has a 2 s AMQP heartbeat and a 2 s bound on every socket read and write, so a
    black-holed link fails a confirmation instead of hanging it.

    A standby tries every second, and every refused declare is an ERROR in the broker's log (two lines).
    So before declaring, ``acquire`` asks whether the queue exists with a publish that cannot leave
    anything behind: an empty message through the default exchange to the queue's name, ``mandatory``,
    with publisher confirms: the broker returns it (NO_ROUTE) when there is no such queue, else routes it
    to the holder's queue, whose ``x-max-length`` of 0 (and the message's ``expiration`` of 0) drops it
    at once. Only a returned probe leads to a declare, so standbys add no line to the broker's log
    (a lost race still ends in RESOURCE_LOCKED, as it should).

    The invariant that makes the lease safe (``tests/component/test_leader_lock.py`` checks it): **the
    lease (3 s) ends before the broker can give the lock to anyone else.** With a 2 s heartbeat RabbitMQ
    looks for bytes received from the client every 2 s and closes the connection after two looks found
    none, 4 to 6 s after the last byte it received. The lease counts from just before the last good
    confirmation was sent, and the broker received that confirmation later still: the holder's lease has
    ended at least 1 s before its queue can be deleted, and a standby can only declare it after that.
    """

    def __init__(self, factory: Callable[[], Connection], group: str) -> None:
        super().__init__(factory)
        self._name = LOCK_PREFIX + group
        self._healthy = False  # the last call on the link succeeded: a clean close is worth trying
        self._probe: Any = None  # the standby's channel for the existence probe
        self._returned = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def lease(self) -> float:
        return LOCK_LEASE

    def acquire(self) -> bool:
        self._healthy = False
        self.connect()
        self._conn.heartbeat_check()
        if self._held_elsewhere():
            self._healthy = True
            return False
        channel = self._conn.channel()
        try:
            channel.queue_declare(queue=self._name, durable=False, exclusive=True, auto_delete=True,
                                  arguments={"x-max-length": 0})
        except self._conn.channel_errors as exc:
            if getattr(exc, "code", None) != 405 and "RESOURCE_LOCKED" not in str(exc):
                raise
            _quietly(channel.close)  # the broker closed it; this only forgets it
            self._healthy = True
            return False
        self._channel = channel
        self._healthy = True
        _quietly(self._probe.close)
        self._probe = None
        return True

    def _held_elsewhere(self) -> bool:
        """Whether the lock queue exists: a mandatory, confirmed publish to it comes back if it does not."""
        if self._probe is None:
            self._probe = self._conn.channel()
            self._probe.events["basic_return"].add(self._on_return)
        self._returned = False
        message = self._probe.prepare_message(b"", properties={"expiration": "0"})
        self._probe.basic_publish(message, exchange="", routing_key=self._name, mandatory=True)
        return not self._returned  # the return comes before the confirmation that publish waited for

    def _on_return(self, *_: Any) -> None:
        self._returned = True

    def confirm(self) -> bool:
        if self._channel is None or self._conn is None:
            return False
        self._healthy = False
        self._conn.heartbeat_check()
        self._channel.queue_declare(queue=self._name, passive=True)
        self._healthy = True
        return True

    def release(self) -> None:
        """Close the connection: the broker deletes the queue with it. A link that just failed is
        dropped without a goodbye (it may be black-holed); a healthy one is closed cleanly."""
        if self._conn is None:
            return
        if self._healthy:
            self.close()
        else:
            self.discard()
        self._conn, self._channel, self._probe, self._healthy = None, None, None, False

    def describe(self) -> str:
        """The broker being tried (any thread may ask: the link itself is never touched here)."""
        conn = self._conn
        if conn is None:
            try:
                conn = self._factory()  # no network: only to show the URL
            except Exception:
                return "the broker"
        shown = BrokerLink(self._factory)
        shown._conn = conn
        return shown.describe()

    def is_backend_error(self, exc: BaseException) -> bool:
        return self.is_broker_error(exc)


class ControlLink(BrokerLink):
    """Records kept on the broker, one per queue: the newest message of a queue of length 1.

    ``write`` publishes a record as a persistent message (optionally with a time to live); the queue's
    ``x-max-length`` of 1 with ``drop-head`` overflow keeps only the newest. ``read`` takes that message
    without acknowledging it and gives it back at once (``requeue``): the record stays for the next reader.
    A reader that looks while another holds it (for the few milliseconds between its get and its requeue)
    finds the queue empty: ``read`` answers None, which callers treat as "nothing new", never as "no
    record". ``durable`` queues (the pause) survive a broker restart, the others (the live view) do not.
    A queue that keeps more (``keep``, the roll call) is read whole with ``read_all``.
    Every call raises on a broker problem (``is_broker_error``); the caller retries."""

    def _queue(self, name: str, durable: bool, keep: int = 1) -> Any:
        return _Queue(name, durable=durable, auto_delete=False,
                      queue_arguments={"x-max-length": keep, "x-overflow": "drop-head"})

    def read(self, name: str, *, durable: bool) -> bytes | None:
        self.connect()
        queue = self._queue(name, durable)(self._conn.default_channel)
        queue.declare()
        message = queue.get(no_ack=False, accept=["application/json"])
        if message is None:
            return None
        body = message.body
        message.requeue()
        return body.encode("utf-8") if isinstance(body, str) else bytes(body)

    def read_all(self, name: str, *, keep: int) -> list[bytes]:
        """Every message of a queue that keeps the ``keep`` newest (a roll call), left in place: all are
        taken unacknowledged, then given back."""
        self.connect()
        queue = self._queue(name, False, keep)(self._conn.default_channel)
        queue.declare()
        held = []
        try:
            for _ in range(keep):
                message = queue.get(no_ack=False, accept=["application/json"])
                if message is None:
                    break
                held.append(message)
        finally:
            for message in held:
                message.requeue()
        return [m.body.encode("utf-8") if isinstance(m.body, str) else bytes(m.body) for m in held]

    def write(self, name: str, body: bytes, *, durable: bool, ttl: float | None = None, keep: int = 1) -> None:
        self.connect()
        channel = self._conn.default_channel
        self._queue(name, durable, keep)(channel).declare()
        producer = _Producer(channel, auto_declare=False)
        producer.publish(body, exchange="", routing_key=name, content_type="application/json",
                         content_encoding="utf-8", delivery_mode=2 if durable else 1,
                         expiration=ttl)


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


def lock_connection(url: str, tls: BrokerTLS | None = None) -> Connection:
    """The connection a ``BrokerLock`` holds its queue on: the bus URL and TLS (failover hosts too),
    a short heartbeat and bounded socket calls."""
    return make_connection(url, tls, heartbeat=LOCK_HEARTBEAT, io_timeout=LOCK_IO_TIMEOUT, confirm_publish=True)


def control_connection(url: str, tls: BrokerTLS | None = None) -> Connection:
    """The connection a ``ControlLink`` uses: the bus URL and TLS, bounded socket calls (a black-holed
    broker fails a read instead of hanging it) and confirmed publishes (a command knows its record landed)."""
    return make_connection(url, tls, heartbeat=LOCK_HEARTBEAT * 5, io_timeout=CONTROL_IO_TIMEOUT,
                           confirm_publish=not url.startswith("memory://"))


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


def check_url(url: str, tls: BrokerTLS | None = None) -> list[str]:
    """Check ``url`` the way the connection will use it, without any network: build the kombu
    connection, then each failover alternate, and read its transport, host, port and virtual host; the
    host goes through ``host_problem`` (what the socket module does with it before looking it up), the
    port as written must be 1-65535 (kombu silently takes a ``:0`` for its default port).

    ``preflight.run_checks`` calls it for ``--check-config`` and on every start, so the two cannot
    disagree. Returns the alternates as they may be logged (passwords masked). Raises ValueError with
    one line naming the alternate (masked) and what is wrong; kombu's own text is not shown, it may
    quote a password."""
    try:
        alternates = list(make_connection(url, tls).alt) or [url]
    except Exception:
        alternates = [part for part in url.split(";") if part.strip()] or [url]
    shown = []
    for alt in alternates:
        shown_alt = url_for_log(alt)
        masked = _shorten(shown_alt)
        conn: Any = None
        try:
            conn = make_connection(alt, tls)
            host, port, vhost = conn.hostname, conn.port, conn.virtual_host
            conn.transport  # noqa: B018 - resolves the transport class (no connection is made)
            written_port = url_to_parts(alt).port  # as written: kombu turns a 0 into its default
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
        if conn.transport_cls == "memory":
            shown.append(shown_alt)
            continue
        if not host:
            raise ValueError(f"broker URL {masked}: no host name")
        problem = host_problem(str(host))
        if problem:
            raise ValueError(f"broker URL {masked}: host name {_shorten(str(host))!r} cannot be looked up: {problem}")
        for number in (port, written_port):
            if number is not None and not 0 < int(number) < 65536:
                raise ValueError(f"broker URL {masked}: the port is not a number between 1 and 65535")
        if not isinstance(vhost, str):
            raise ValueError(f"broker URL {masked}: cannot read the virtual host")
        shown.append(shown_alt)
    return shown


def host_problem(host: str) -> str | None:
    """Why the connection could not look ``host`` up, or None. Python's socket module encodes every host
    name with the ``idna`` codec before asking the resolver, and that raises UnicodeError for an empty
    label or one over 63 characters; DNS also carries no name over 253 characters. IP addresses pass."""
    try:
        encoded = host.encode("idna")
    except UnicodeError as exc:
        labels = _IDNA_DOTS.split(host)
        if len(labels) > 1 and not labels[-1]:
            labels.pop()  # a trailing dot (the root) is allowed
        if not all(labels):
            return "it has an empty label (two dots in a row, or a leading dot)"
        longest = max(len(label) for label in labels)
        if longest > _MAX_LABEL:
            return f"it has a label of {longest} characters (at most {_MAX_LABEL})"
        # Python words it "encoding with 'idna' codec failed (UnicodeError: <reason>)": keep the reason.
        reason = _CODEC_FAILED.sub(r"\1", str(exc))
        return f"it is not a valid internationalised domain name ({reason})"
    name = encoded[:-1] if encoded.endswith(b".") else encoded
    if len(name) > _MAX_NAME:
        return f"it is {len(name)} characters long (at most {_MAX_NAME})"
    return None


def _shorten(text: str) -> str:
    """``text`` as a message may quote it: a 10,000-character host name is not worth a screenful."""
    return text if len(text) <= 200 else f"{text[:60]}... ({len(text)} characters)"


def _userinfo(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[0] if "@" in rest else ""


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.debug("bus: ignored %s during cleanup: %s", type(exc).__name__, exc)
