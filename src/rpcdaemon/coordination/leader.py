"""Leadership: which instance of a group may make Neutron API writes, as a lease on a lock.

Operators run rpcdaemon on every controller with the same configuration. Each instance runs one
``Leadership``: a thread that keeps trying to take one lock (``LockBackend``: the broker's exclusive
queue, ``broker.leader_lock.BrokerLock``, by default; a tooz backend, ``coordination.tooz_lock``, as an
option) and, once it holds it, confirms holding it every ``interval`` (1 s) with one round trip.
``wiring`` builds it, the service asks it for its role every check, and the fence in front of the
Neutron adapter (``acting.fence``) asks ``is_leader()`` right before every write.

Holding is a **lease** on this process's monotonic clock: ``is_leader(now)`` is true only while the
last confirmation *sent* is less than ``lease`` seconds old. A process frozen by SIGSTOP (or a stalled
machine) that wakes up is therefore not the leader, whatever its thread believed, until it confirms
again; and that confirmation fails when the backend dropped the lock meanwhile. Each backend's
lease is shorter than the time the backend needs to give the lock to another instance after this one
went silent (see ``BrokerLock`` and ``ToozLock``), so the old leader's lease has always run out before
a standby can take the lock. A confirmation slower than the lease counts as a loss.

Every role change is one INFO line (``leadership: this instance is now ACTIVE (lock L on B)`` or
``... now STANDBY (L on B: why)``), is passed to the callbacks given to ``on_change`` and wakes
``wait_changed``, so the check loop acts at once on a promotion. The thread never dies silently:
backend trouble (the broker or Redis unreachable) is retried for ever, anything else (a bug) a few
times; then ``fatal`` says why, which the service turns into a non-zero exit.

The lock outlives the service's stop event on purpose: a move already past its unbind finishes its
bind while the daemon stops, and only the active instance may make it. ``close()`` (called by the
service after its executors have finished) releases the lock, so a clean stop hands over at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

log = logging.getLogger("rpcdaemon.leadership")

CONFIRM_INTERVAL = 1.0  # seconds between confirmations while holding, and between tries while not
MAX_UNEXPECTED = 5  # errors that are not the backend's, in a row, before the thread gives up


class Role(StrEnum):
    STARTING = "starting"  # the first try has not ended yet
    ACTIVE = "active"
    STANDBY = "standby"


class LockBackend(Protocol):
    """One lock in one backend, driven by the ``Leadership`` thread only (it need not be thread-safe)."""

    @property
    def name(self) -> str:
        """The lock's name, as the log shows it (``rpcdaemon.leader.<group>``)."""
        ...

    @property
    def lease(self) -> float:
        """Seconds a confirmation holds good: shorter than the backend's own expiry of a silent holder."""
        ...

    def describe(self) -> str:
        """The backend, as it may be logged (no password)."""
        ...

    def acquire(self) -> bool:
        """Try once, without blocking: True if this instance holds the lock now, False if another one
        does. Raises when the backend cannot be reached (``is_backend_error``) or on a bug."""
        ...

    def confirm(self) -> bool:
        """One round trip proving the lock is still held: True, else False or an exception (lost)."""
        ...

    def release(self) -> None:
        """Give the lock up (and drop the link, which may be broken); never raises."""
        ...

    def is_backend_error(self, exc: BaseException) -> bool:
        """The backend or the network failed (retried for ever), as opposed to a bug."""
        ...

    def explain(self, exc: BaseException) -> str:
        """``exc`` in one line an operator can act on (no password, no traceback)."""
        ...


class Leadership:
    """The lease on one ``LockBackend`` and the thread that keeps it. ``step`` is one round (the thread
    calls it every ``interval``; unit tests call it directly with an injected clock)."""

    def __init__(
        self,
        backend: LockBackend,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = CONFIRM_INTERVAL,
        logger: logging.Logger | None = None,
    ) -> None:
        if not 0 < interval < backend.lease:
            raise ValueError(f"the confirmation interval ({interval:g} s) must be shorter than the lease "
                             f"({backend.lease:g} s)")
        self.backend = backend
        self.lease = backend.lease
        self.interval = interval
        self._clock = clock
        self._log = logger or log
        self._lock = threading.Lock()
        self._held = False  # the thread's view: it took the lock and every confirmation since succeeded
        self._confirmed_at: float | None = None  # when the last good confirmation was sent
        self._tried = False  # the first try has ended (until then the role is STARTING)
        self._said: Role = Role.STARTING
        self._failing = False  # the backend was unreachable at the last try (its WARNING was said)
        self._unexpected = 0
        self._fatal: str | None = None
        self._callbacks: list[Callable[[Role], None]] = []
        self._changed = threading.Condition()
        self._seen = 0  # role changes already reported by wait_changed
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.changes = 0  # role changes so far (metrics and tests)

    # -- read by any thread --------------------------------------------------------------------------

    def is_leader(self, now: float | None = None) -> bool:
        """True only while the lock is held and was confirmed less than ``lease`` seconds ago."""
        now = self._clock() if now is None else now
        with self._lock:
            return self._held and self._confirmed_at is not None and now - self._confirmed_at < self.lease

    def role(self, now: float | None = None) -> Role:
        if self.is_leader(now):
            return Role.ACTIVE
        with self._lock:
            return Role.STANDBY if self._tried or self._fatal else Role.STARTING

    @property
    def fatal(self) -> str | None:
        """Why the lock thread gave up (this instance then never acts again), or None."""
        return self._fatal

    def describe(self) -> str:
        return f"lock {self.backend.name} on {self.backend.describe()}"

    def on_change(self, callback: Callable[[Role], None]) -> None:
        """Call ``callback(role)`` on every role change (from the lock thread: it must be quick)."""
        self._callbacks.append(callback)

    def wait_changed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a role change; True if there was one since the last call.
        A counter under a condition, not an Event: a change that lands while the waiter returns from a
        timeout is reported by the next call instead of being cleared away unseen."""
        with self._changed:
            self._changed.wait_for(lambda: self.changes != self._seen, timeout)
            changed = self.changes != self._seen
            self._seen = self.changes
            return changed

    def problem(self) -> str | None:
        """What makes this instance useless to the group (its lock thread gave up or died), or None."""
        if self._fatal is not None:
            return f"leadership {self.describe()}: {self._fatal}"
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._closing.is_set():
            return f"leadership {self.describe()}: the lock thread stopped"
        return None

    # -- the thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leadership", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and release the lock (another instance can take it at once)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            held = self._held
            self._held = False
        self.backend.release()
        if held:
            self._say(Role.STANDBY, "released: this instance is stopping")

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                began = time.monotonic()
                self.step()
                if self._fatal is not None:
                    return
                self._closing.wait(max(0.0, self.interval - (time.monotonic() - began)))
        except BaseException as exc:  # the thread must never end without saying why
            fatal = f"the lock thread failed: {type(exc).__name__}: {exc}"
            self._log.critical("leadership: %s", fatal, exc_info=True)
            self._drop()
            self._fatal = fatal  # last: whoever sees it finds the lock dropped and the line logged

    def step(self) -> None:
        """One round: confirm the lock if held, else try to take it; say any role change."""
        sent = self._clock()
        with self._lock:
            held = self._held
            previous = self._confirmed_at
        try:
            if held:
                ok = self.backend.confirm()
                took = self._clock() - sent
                if not ok:
                    self._lose("lost the lock (the backend no longer has it as this instance's)")
                elif previous is not None and self._clock() - previous >= self.lease:
                    self._lose(f"the confirmation took {took:.1f} s, past the {self.lease:g} s lease; giving the "
                               "lock up")
                else:
                    with self._lock:
                        self._confirmed_at = sent
            elif self.backend.acquire():
                with self._lock:
                    self._held, self._confirmed_at, self._tried = True, sent, True
                self._say(Role.ACTIVE)
            else:
                with self._lock:
                    self._tried = True
                self._say(Role.STANDBY, "held by another instance")
            if self._failing:
                self._log.info("leadership: %s reachable again", self.backend.describe())
            self._failing = False
            self._unexpected = 0
        except Exception as exc:
            self._failed(exc, held)

    def _failed(self, exc: Exception, held: bool) -> None:
        backend_error = self.backend.is_backend_error(exc)
        why = self.backend.explain(exc)
        if held:
            self._lose(f"lost the link to the lock: {why}")
        else:
            self.backend.release()  # a fresh link next round
            with self._lock:
                self._tried = True
            self._say(Role.STANDBY, f"cannot reach the backend: {why}")
        if backend_error:
            if not self._failing:
                self._log.warning("leadership: cannot reach %s: %s; trying again every %g s",
                                  self.backend.describe(), why, self.interval)
            self._failing = True
            self._unexpected = 0
            return
        self._unexpected += 1
        self._log.error("leadership: unexpected %s on %s (%d of %d before giving up)", type(exc).__name__,
                        self.describe(), self._unexpected, MAX_UNEXPECTED, exc_info=exc)
        if self._unexpected >= MAX_UNEXPECTED:
            fatal = f"{self._unexpected} unexpected errors in a row; giving up"
            self._log.critical("leadership: %s on %s", fatal, self.describe())
            self._fatal = fatal

    def _lose(self, why: str) -> None:
        self._drop()
        self._say(Role.STANDBY, why)

    def _drop(self) -> None:
        with self._lock:
            self._held = False
            self._confirmed_at = None
            self._tried = True
        self.backend.release()

    def _say(self, role: Role, why: str = "") -> None:
        if role is self._said:
            return
        self._said = role
        with self._changed:
            self.changes += 1
            self._changed.notify_all()
        if role is Role.ACTIVE:
            self._log.info("leadership: this instance is now ACTIVE (%s)", self.describe())
        else:
            self._log.info("leadership: this instance is now STANDBY (%s: %s)", self.describe(), why)
        for callback in list(self._callbacks):
            try:
                callback(role)
            except Exception:
                self._log.exception("leadership: a role-change callback failed")
