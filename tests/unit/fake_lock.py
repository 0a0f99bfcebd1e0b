"""An in-memory leadership lock for the unit tests: ``SharedLock`` (what a lock server keeps) and
``FakeBackend`` (a ``LockBackend`` on it), and ``leader()``, a ``Leadership`` on a fake clock.

Used by test_leadership.py and test_audit.py; the real broker and Redis backends are in
``tests/component/test_leader_lock.py``.
"""

from __future__ import annotations

import logging

from tests.kit.clock import Clock

from rpcdaemon.coordination.leader import Leadership

LEASE = 3.0


class BackendDown(ConnectionError):
    pass


class SharedLock:
    """One lock as a backend keeps it: a holder, whether the backend can be reached, and, when ``clock``
    is given, an expiry: a holder not heard for ``expiry`` seconds loses the lock (as RabbitMQ drops a
    silent connection 4-6 s after its last byte, or Redis expires the key)."""

    def __init__(self, clock: Clock | None = None, expiry: float = 4.0) -> None:
        self.holder: str | None = None
        self.down = False
        self.clock, self.expiry = clock, expiry
        self.heard_at = 0.0

    def current(self) -> str | None:
        if self.clock is not None and self.holder is not None and self.clock() - self.heard_at >= self.expiry:
            self.holder = None
        return self.holder

    def heard(self) -> None:
        if self.clock is not None:
            self.heard_at = self.clock()


class FakeBackend:
    """``LockBackend`` on a ``SharedLock``. ``confirm_takes`` advances the clock inside a confirmation
    (a slow round trip); ``bug`` makes every call raise a non-backend error."""

    name = "rpcdaemon.leader.test"
    lease = LEASE

    def __init__(self, lock: SharedLock, me: str, clock: Clock) -> None:
        self.lock, self.me, self.clock = lock, me, clock
        self.confirm_takes = 0.0
        self.bug: Exception | None = None
        self.released = 0

    def describe(self) -> str:
        return "fake"

    def _call(self) -> None:
        if self.bug is not None:
            raise self.bug
        if self.lock.down:
            raise BackendDown("connection refused")

    def acquire(self) -> bool:
        self._call()
        if self.lock.current() in (None, self.me):
            self.lock.holder = self.me
            self.lock.heard()
            return True
        return False

    def confirm(self) -> bool:
        self._call()
        held = self.lock.current() == self.me
        if held:
            self.lock.heard()  # the backend hears the request before it answers
        self.clock.now += self.confirm_takes
        return held

    def release(self) -> None:
        self.released += 1
        if self.lock.holder == self.me:
            self.lock.holder = None

    def is_backend_error(self, exc: BaseException) -> bool:
        return isinstance(exc, BackendDown)

    def explain(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"


def leader(lock: SharedLock, me: str, clock: Clock) -> tuple[Leadership, FakeBackend]:
    backend = FakeBackend(lock, me, clock)
    return Leadership(backend, clock=clock, logger=logging.getLogger(f"rpcdaemon.leadership.{me}")), backend
