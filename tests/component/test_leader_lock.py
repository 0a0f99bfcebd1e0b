"""The leadership lock on the real RabbitMQ (``BrokerLock``) and on the local Redis (``ToozLock``).

Each test uses a lock name of its own (a uuid group), so tests running at the same time on the shared
broker never meet. Links are cut with ``tests.harness.tcp_proxy.TcpProxy``: ``blackhole()`` is a dead
network (no FIN, no RST), which only heartbeats and timeouts can detect. A ``Watch`` thread samples
``is_leader()`` of both instances every 5 ms: the instant the old holder stopped being allowed to write,
and the instant the other one was allowed to, are observed, and compared (the invariant: the old lease
has always run out before anyone else holds the lock; never two writers at any sample).
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from tests.component.rabbit import AMQP_HOST, AMQP_PORT, AMQP_URL
from tests.harness.tcp_proxy import TcpProxy
from tests.kit.poll import wait_until

from rpcdaemon.broker.leader_lock import LOCK_HEARTBEAT, LOCK_LEASE, BrokerLock, lock_connection
from rpcdaemon.coordination.leader import Leadership, LockBackend, Role

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def broker_lock(group: str, port: int = AMQP_PORT) -> BrokerLock:
    url = AMQP_URL.replace(f":{AMQP_PORT}/", f":{port}/")
    return BrokerLock(lambda: lock_connection(url), group)


def redis_answers() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(7).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis() -> str:
    pytest.importorskip("tooz")
    if not redis_answers():
        pytest.fail(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}; start it with"
                    " `redis-server --daemonize yes`", pytrace=False)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"


def tooz_lock(group: str, port: int = REDIS_PORT) -> LockBackend:
    from rpcdaemon.coordination.tooz_lock import ToozLock

    return ToozLock(f"redis://{REDIS_HOST}:{port}", group)


@pytest.fixture
def leaders() -> Iterator[Callable[[LockBackend], Leadership]]:
    """Start ``Leadership`` threads; all are closed at teardown."""
    started: list[Leadership] = []

    def start(backend: LockBackend) -> Leadership:
        lead = Leadership(backend)
        lead.start()
        started.append(lead)
        return lead

    yield start
    for lead in started:
        lead.close()


@dataclass
class Watch:
    """Samples ``is_leader()`` of each instance every 5 ms; keeps when each one's state flipped."""

    instances: dict[str, Leadership]
    flips: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    both: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.flips = {name: [] for name in self.instances}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        state = dict.fromkeys(self.instances, False)
        while not self._stop.is_set():
            now = time.monotonic()
            leading = {name: lead.is_leader() for name, lead in self.instances.items()}
            for name, value in leading.items():
                if value != state[name]:
                    self.flips[name].append((now, value))
                    state[name] = value
            if sum(leading.values()) > 1:
                self.both.append(now)
            self._stop.wait(0.005)

    def first(self, name: str, value: bool, after: float = 0.0) -> float | None:
        return next((t for t, v in self.flips[name] if v is value and t >= after), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def one_leader(a: Leadership, b: Leadership, timeout: float = 10.0) -> tuple[Leadership, Leadership]:
    wait_until(lambda: a.role() is not Role.STARTING and b.role() is not Role.STARTING, timeout, "both to settle")
    wait_until(lambda: a.is_leader() != b.is_leader(), timeout, "exactly one leader")
    return (a, b) if a.is_leader() else (b, a)


# -- the broker lock ----------------------------------------------------------------------------------


def test_two_broker_locks_exactly_one_holds() -> None:
    group = uuid.uuid4().hex
    a, b = broker_lock(group), broker_lock(group)
    try:
        assert a.acquire() is True
        for _ in range(5):
            assert b.acquire() is False  # the probe says it exists: no refused declare
            assert a.confirm() is True
        a.release()
        assert wait_until(lambda: b.acquire(), 5.0, "b to take the released lock")
        assert b.confirm() is True
    finally:
        a.release()
        b.release()


def test_the_other_instance_acquires_within_a_second_or_two_when_the_holder_closes_or_dies(
    leaders: Callable[[LockBackend], Leadership],
) -> None:
    group = uuid.uuid4().hex
    holder, other = one_leader(leaders(broker_lock(group)), leaders(broker_lock(group)))
    began = time.monotonic()
    holder.close()  # a clean stop: the connection is closed, the queue goes with it
    wait_until(other.is_leader, 5.0, "the other instance to take over")
    assert time.monotonic() - began < 2.5  # the next 1 s try, plus a round trip
    # and it keeps it: the closed one does not come back
    time.sleep(1.5)
    assert other.is_leader() and not holder.is_leader()  # noqa: PT018


def _blackhole_handover(leaders: Callable[[LockBackend], Leadership], make: Callable[[str, int], LockBackend],
                        upstream: tuple[str, int]) -> tuple[float, float, float]:
    """The holder's link black-holed: (lease lost after, other holds after, margin between them)."""
    group = uuid.uuid4().hex
    with TcpProxy(*upstream) as proxy:
        cut = leaders(make(group, proxy.port))
        wait_until(cut.is_leader, 10.0, "the proxied instance to take the lock")
        time.sleep(random.random())  # the instances' 1 s rounds at any phase to each other, as in real life
        other = leaders(make(group, upstream[1]))
        wait_until(lambda: other.role() is Role.STANDBY, 10.0, "the other instance to stand by")
        watch = Watch({"cut": cut, "other": other})
        time.sleep(1.0 + random.random())  # a confirmation or two on the healthy link; the cut at any phase
        proxy.blackhole()
        cut_at = time.monotonic()
        try:
            wait_until(other.is_leader, 15.0, "the other instance to take over")
            time.sleep(0.05)
        finally:
            watch.stop()
    lost = watch.first("cut", False, after=cut_at)
    won = watch.first("other", True, after=cut_at)
    assert lost is not None and won is not None  # noqa: PT018
    assert watch.both == [], "two leaders at once"
    return lost - cut_at, won - cut_at, won - lost


def test_a_blackholed_holder_loses_its_lease_before_the_broker_gives_the_lock_away(
    leaders: Callable[[LockBackend], Leadership],
) -> None:
    lost, won, margin = _blackhole_handover(leaders, lambda g, p: broker_lock(g, p), (AMQP_HOST, AMQP_PORT))
    print(f"\nbroker lock, holder black-holed: lease lost after {lost:.2f} s, other holds after {won:.2f} s "
          f"(margin {margin:.2f} s)")
    assert lost <= LOCK_LEASE + 0.1  # the lease ran from the last confirmation sent, before the cut
    # RabbitMQ drops a silent connection 2 to 3 heartbeats (4-6 s) after its last byte; the standby tries
    # every second; a loaded machine adds a little.
    assert 2 * LOCK_HEARTBEAT - 1.0 <= won <= 8.5
    assert margin > 0.5, "the old lease must run out well before the other instance holds the lock"


def test_the_invariant_lease_shorter_than_the_brokers_detection() -> None:
    """The numbers the lease's safety rests on (see BrokerLock): a confirmation once a second, a lease
    of 3 s, and RabbitMQ's earliest close of a silent connection, two heartbeats after its last byte."""
    assert Leadership(broker_lock("x")).interval == 1.0
    assert LOCK_LEASE < 2 * LOCK_HEARTBEAT


# -- tooz on Redis ------------------------------------------------------------------------------------


def test_two_tooz_locks_on_redis_exactly_one_holds_and_a_release_hands_over(
    redis: str, leaders: Callable[[LockBackend], Leadership],
) -> None:
    group = uuid.uuid4().hex
    holder, other = one_leader(leaders(tooz_lock(group)), leaders(tooz_lock(group)))
    time.sleep(2.5)  # several confirmations: still one holder
    assert holder.is_leader() and not other.is_leader()  # noqa: PT018
    began = time.monotonic()
    holder.close()
    wait_until(other.is_leader, 5.0, "the other instance to take the released lock")
    assert time.monotonic() - began < 2.5
    assert other.describe() == f"lock rpcdaemon.leader.{group} on tooz redis://{REDIS_HOST}:{REDIS_PORT}"


def test_a_blackholed_tooz_holder_loses_its_lease_before_redis_expires_its_lock(
    redis: str, leaders: Callable[[LockBackend], Leadership],
) -> None:
    lost, won, margin = _blackhole_handover(leaders, lambda g, p: tooz_lock(g, p), (REDIS_HOST, REDIS_PORT))
    print(f"\ntooz/redis lock, holder black-holed: lease lost after {lost:.2f} s, other holds after {won:.2f} s "
          f"(margin {margin:.2f} s)")
    assert lost <= LOCK_LEASE + 0.1
    assert 4.0 <= won <= 8.5  # the key expires lock_timeout (5 s) after its last renewal
    assert margin > 0.5
