"""The leadership lock on the broker (``BrokerLock``), which ``coordination.leader`` holds by default:
an exclusive queue on a connection of its own (``lock_connection``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rpcdaemon.access import BrokerTLS
from rpcdaemon.broker.connection import Connection, make_connection, quietly
from rpcdaemon.broker.link import BrokerLink

# The leadership lock (BrokerLock): its connection's AMQP heartbeat, the bound on each socket read and
# write, and the lease (shorter than the broker's 4-6 s detection of a silent client; see BrokerLock).
LOCK_PREFIX = "rpcdaemon.leader."
LOCK_HEARTBEAT = 2
LOCK_IO_TIMEOUT = 2.0
LOCK_LEASE = 3.0


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
            quietly(channel.close)  # the broker closed it; this only forgets it
            self._healthy = True
            return False
        self._channel = channel
        self._healthy = True
        quietly(self._probe.close)
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


def lock_connection(url: str, tls: BrokerTLS | None = None) -> Connection:
    """The connection a ``BrokerLock`` holds its queue on: the bus URL and TLS (failover hosts too),
    a short heartbeat and bounded socket calls."""
    return make_connection(url, tls, heartbeat=LOCK_HEARTBEAT, io_timeout=LOCK_IO_TIMEOUT, confirm_publish=True)
