"""The bus listener thread: keeps a queue of the daemon's own bound to Neutron's exchanges and hands
every message to a callback. Started by ``service`` (one per set of subscriptions), the demo and the
benchmarks. It talks to the broker only through ``broker.link`` and never imports kombu.

Each message goes, as a ``RawMessage``, to a callback that decodes and records it, and is acked
whatever happened (a poison message must not be redelivered forever). The listener binds its own
exclusive, auto-delete queue: consuming Neutron's ``q-reports-plugin`` queue would steal heartbeats
from neutron-server and make agents look dead.

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
waiting. A missing required exchange keeps the link down (no window starts) and says once, at WARNING,
what it waits for. A missing exchange that oslo declares auto-delete (the ``*_fanout`` exchanges, which
exist only while an agent of that topic is connected) is optional: heartbeats are consumed without it,
and it is looked for again right after the bindings and then every second, so that Dump shows fanout
traffic about a second after the first agent of that topic connects. (Each look at a missing exchange
costs one "not_found" line in the broker's log; only Dump subscribes to fanout exchanges.)

The daemon's queue is bounded (``x-max-length``, ``x-max-length-bytes``, ``x-overflow = drop-head``):
a stalled consumer cannot make the broker grow it without limit. What the broker drops (or what
expires) is dead-lettered through the default exchange into a small queue of the listener's own,
consumed on the same channel and counted in ``counts.dropped``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rpcdaemon.broker.connection import Connection, make_connection
from rpcdaemon.broker.link import Ack, BrokerLink, RawMessage, Subscription

__all__ = ["MAX_UNEXPECTED", "QUEUE_MAX_BYTES", "QUEUE_MAX_LENGTH", "BusCounts", "BusListener", "LinkState"]

log = logging.getLogger(__name__)

_DRAIN_TIMEOUT = 0.5  # how long one drain waits: bounds how quickly ``stop`` is noticed
_HEARTBEAT_EVERY = 1.0  # seconds between kombu heartbeat checks (AMQP heartbeats every 10 s)
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
_RECHECK_EVERY = 1.0  # seconds between passive checks for an optional exchange that is missing
_DROP_LOG_EVERY = 60.0  # at most one WARNING about drops per this many seconds
# Errors that are not the broker's: this many in a row (without a stable link between) are fatal.
MAX_UNEXPECTED = 5
_STABLE_LINK = 30.0  # a link that stayed up this long resets that count


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
        self._unacked: Ack | None = None  # the newest delivered-but-unacked message (batched mode)
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
        link = BrokerLink(self._factory)
        delay = self._backoff[0]
        failing_since: float | None = None  # set while the bus is unreachable, for the log lines
        unexpected = 0  # consecutive errors that are not the broker's
        try:
            while not self._stop_event.is_set():
                keep = False  # keep the connection for the next try (it is healthy)
                try:
                    self._open(link)
                except _MissingExchange as exc:
                    keep = True
                    self._say_waiting(link, exc.args[0])
                except Exception as exc:
                    if link.is_broker_error(exc):
                        if failing_since is None:
                            failing_since = self._clock()
                            self._log_failure("cannot listen on", link, exc, delay)
                        else:
                            log.debug("bus %s: still cannot listen: %s", self._label, link.explain(exc))
                    else:
                        unexpected += 1
                        self._log_unexpected("cannot listen on", link, exc, delay, unexpected)
                else:
                    delay = self._backoff[0]
                    self._mark_up(link, failing_since)
                    failing_since = None
                    up_at = time.monotonic()
                    try:
                        self._drain(link)
                        break  # stop was set: the finally clause closes the link cleanly
                    except Exception as exc:
                        failing_since = self._mark_down()
                        if time.monotonic() - up_at >= _STABLE_LINK:
                            unexpected = 0
                        if link.is_broker_error(exc):
                            self._log_failure("lost the link to", link, exc, delay)
                        else:
                            unexpected += 1
                            self._log_unexpected("lost the link to", link, exc, delay, unexpected)
                if unexpected >= MAX_UNEXPECTED:
                    self._fatal = f"{unexpected} unexpected errors in a row on {link.describe()}; giving up"
                    log.critical("bus %s: %s", self._label, self._fatal)
                    return
                if not keep:
                    link.discard()
                if self._stop_event.wait(delay):
                    break
                delay = min(delay * 2, self._backoff[1])
        finally:
            link.close()

    def _open(self, link: BrokerLink) -> None:
        """Connect, declare, bind and start consuming; the link counts as up only after this."""
        link.connect()
        present = self._check_exchanges(link)  # raises _MissingExchange: the link stays down
        link.open_channel(_PREFETCH)
        # A fresh name per connection: the broker may not have dropped the last exclusive queue yet.
        self.queue_name = f"rpcdaemon.{self._label}.{socket.gethostname()}.{uuid.uuid4().hex}"
        self.dropped_queue = f"{self.queue_name}.dropped"
        link.declare_queue(self.dropped_queue, max_length=_DROPPED_MAX_LENGTH, max_bytes=_DROPPED_MAX_BYTES)
        # x-expires is moot on an exclusive queue (deleted with its connection); kept for existing configs.
        link.declare_queue(self.queue_name, max_length=self._max_length, max_bytes=self._max_bytes,
                           dead_letter_to=self.dropped_queue, expires=self._queue_expire)
        self._pending = []
        for sub in self.subscriptions:
            if sub.exchange in present:
                link.bind(self.queue_name, sub)
            else:
                self._pending.append(sub)
        self._batch_acks = link.batches_acks
        self._unacked, self._unacked_count = None, 0  # those of a lost channel are gone with it
        link.consume(self.dropped_queue, self._dropped, self._clock)
        link.consume(self.queue_name, self._deliver, self._clock, on_undecodable=self._undecodable)
        if self._pending:
            self._bind_appeared(link)  # one may have appeared since the check: don't wait a round for it
        for name in sorted({sub.exchange for sub in self._pending}):
            log.info("bus %s: exchange %s does not exist yet (its owner declares it while connected);"
                     " listening without it, binding it when it appears (checked every %g s)",
                     self._label, name, _RECHECK_EVERY)

    def _drain(self, link: BrokerLink) -> None:
        """Deliver until ``stop`` (returns) or the link fails (raises)."""
        next_beat = time.monotonic() + _HEARTBEAT_EVERY
        next_check = time.monotonic() + _RECHECK_EVERY
        while not self._stop_event.is_set():
            link.drain(_ACK_DELAY if self._unacked is not None else _DRAIN_TIMEOUT)
            now = time.monotonic()
            if self._unacked is not None and now - self._unacked_since >= _ACK_DELAY:
                self._flush_acks()
            if now >= next_beat:
                link.heartbeat_check()
                next_beat = now + _HEARTBEAT_EVERY
            if self._pending and now >= next_check:
                self._bind_appeared(link)
                next_check = now + _RECHECK_EVERY
        self._flush_acks()
        link.close_channel(self.queue_name, self.dropped_queue)

    def _bind_appeared(self, link: BrokerLink) -> None:
        """Bind the optional subscriptions whose exchange has appeared since."""
        still = []
        for sub in self._pending:
            if link.exchange_exists(sub):
                link.bind(self.queue_name, sub)
                log.info("bus %s: exchange %s appeared; bound %s", self._label, sub.exchange,
                         sub.routing_key or "(fanout)")
            else:
                still.append(sub)
        self._pending = still

    def _check_exchanges(self, link: BrokerLink) -> set[str]:
        """The subscribed exchanges that exist (passive declares only: never create or change one).

        Raises _MissingExchange (with their names) if a required one does not exist."""
        present: set[str] = set()
        missing: list[str] = []
        for sub in {s.exchange: s for s in reversed(self.subscriptions)}.values():
            if link.exchange_exists(sub):
                present.add(sub.exchange)
            elif any(s.exchange == sub.exchange and not s.optional for s in self.subscriptions):
                missing.append(sub.exchange)
        if missing:
            raise _MissingExchange(tuple(sorted(missing)))
        if self._waiting_for:
            log.info("bus %s: exchange %s exists now", self._label, ", ".join(self._waiting_for))
            self._waiting_for = ()
        return present

    def _say_waiting(self, link: BrokerLink, names: tuple[str, ...]) -> None:
        if names != self._waiting_for:
            log.warning(
                "bus %s: connected to %s, but exchange %s does not exist yet; waiting for neutron-server or an"
                " agent to declare it (rpcdaemon never declares Neutron's exchanges)",
                self._label, link.describe(), ", ".join(names),
            )
        self._waiting_for = names

    # -- deliveries --------------------------------------------------------------------------------

    def _deliver(self, raw: RawMessage, ack: Ack) -> None:
        self.counts.received += 1
        try:
            self._on_message(raw)
        except Exception:
            self.counts.failed += 1
            log.exception("bus %s: message handler failed on %s/%s", self._label, raw.exchange, raw.routing_key)
        self._ack(ack)

    def _ack(self, ack: Ack) -> None:
        if not self._batch_acks:
            ack()
            self.counts.acked += 1
            return
        if self._unacked is None:
            self._unacked_since = time.monotonic()
        self._unacked = ack
        self._unacked_count += 1
        if self._unacked_count >= _ACK_BATCH:
            self._flush_acks()

    def _flush_acks(self) -> None:
        if self._unacked is not None:
            self._unacked(multiple=True)  # this delivery tag and every earlier one
            self.counts.acked += self._unacked_count
            self._unacked, self._unacked_count = None, 0

    def _dropped(self, raw: RawMessage, ack: Ack) -> None:
        """A message the broker dropped from our queue (full, or expired), dead-lettered to us."""
        self.counts.dropped += 1
        now = time.monotonic()
        if now - self._drops_logged >= _DROP_LOG_EVERY:
            log.warning("bus %s: the broker dropped %d messages from the daemon's queue (%d in all): it is not"
                        " keeping up", self._label, self.counts.dropped - self._drops_said, self.counts.dropped)
            self._drops_logged, self._drops_said = now, self.counts.dropped
        self._ack(ack)

    def _undecodable(self, exc: Exception, ack: Ack) -> None:
        # Only reachable for transport-level problems (e.g. a bad compression header).
        self.counts.received += 1
        self.counts.failed += 1
        log.warning("bus %s: dropping a message kombu could not unpack: %s", self._label, exc)
        self._ack(ack)

    # -- link state --------------------------------------------------------------------------------

    def _mark_up(self, link: BrokerLink, failing_since: float | None) -> None:
        now = self._clock()
        with self._lock:
            self._link = LinkState(True, now, self._link.outages)
        bound = ", ".join(f"{s.exchange}/{s.routing_key or '(fanout)'}" for s in self.subscriptions)
        after = "" if failing_since is None else f" after {now - failing_since:.1f} s without the bus"
        log.info("bus %s: listening on %s%s; queue %s bound to %s", self._label, link.describe(), after,
                 self.queue_name, bound)

    def _mark_down(self) -> float:
        now = self._clock()
        with self._lock:
            self._link = LinkState(False, now, self._link.outages + 1)
        return now

    def _log_unexpected(self, what: str, link: BrokerLink, exc: BaseException, delay: float, count: int) -> None:
        log.error(
            "bus %s: %s %s: unexpected %s: %s (%d of %d before giving up); retrying in %g s",
            self._label, what, link.describe(), type(exc).__name__, exc, count, MAX_UNEXPECTED, delay,
            exc_info=True,
        )

    def _log_failure(self, what: str, link: BrokerLink, exc: BaseException, delay: float) -> None:
        log.warning("bus %s: %s %s: %s; retrying in %g s, backing off to %g s", self._label, what,
                    link.describe(), link.explain(exc), delay, self._backoff[1])
