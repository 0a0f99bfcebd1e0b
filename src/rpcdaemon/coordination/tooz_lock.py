"""The leadership lock on a tooz backend (``[coordination] backend_url``), the OpenStack convention.

The only module that imports tooz (an optional extra: ``pip install 'rpcdaemon[coordination]'``);
``wiring`` and ``preflight`` import it only when ``backend_url`` is set, and say so in one line when
tooz (or the backend's client library, e.g. redis) is missing. ``ToozLock`` implements
``coordination.leader.LockBackend`` with ``tooz.coordination.get_coordinator`` and ``get_lock``:
``acquire`` is a non-blocking ``lock.acquire``; ``confirm`` is ``coordinator.heartbeat()`` (which
re-arms the lock's expiry on the backends that have one) followed by ``lock.is_still_owner()``, one
round trip that fails once the backend gave the lock away.

The lease (3 s) must end before the backend can hand the lock to another instance: the lock expires
``lock_timeout`` seconds (5 by default here; redis, etcd3, memcached) or the ZooKeeper session
``timeout`` (10 by default) after the last renewal, and a renewal is sent after the lease's start. So
the expiry must exceed the lease by a margin (1 s); a ``backend_url`` that sets a shorter one is refused
at start. Backends whose locks have no expiry to bound the lease by (file://, ipc://, mysql://,
postgresql://, kubernetes://) are refused too: a frozen holder would keep the lock for ever. Socket
timeouts default to 2 s, so a black-holed backend fails a confirmation rather than hanging it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import warnings
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rpcdaemon.redact import mask_text, redact_url

with warnings.catch_warnings():
    # futurist (a tooz dependency) imports eventlet whenever it is installed, and eventlet warns on import.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)
    from tooz import ToozError, coordination

TOOZ_LEASE = 3.0
LEASE_MARGIN = 1.0  # the backend's expiry must exceed the lease by at least this much
DEFAULT_LOCK_TIMEOUT = 5  # seconds (tooz wants an integer)
SOCKET_TIMEOUT = 2
# scheme -> the option that bounds how long a silent holder keeps its lock, and the defaults we pass.
_BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "redis": ("lock_timeout", {"lock_timeout": DEFAULT_LOCK_TIMEOUT, "socket_timeout": SOCKET_TIMEOUT,
                               "socket_connect_timeout": SOCKET_TIMEOUT}),
    "etcd3+http": ("lock_timeout", {"lock_timeout": DEFAULT_LOCK_TIMEOUT}),
    "etcd3+https": ("lock_timeout", {"lock_timeout": DEFAULT_LOCK_TIMEOUT}),
    "memcached": ("lock_timeout", {"lock_timeout": DEFAULT_LOCK_TIMEOUT}),
    "zookeeper": ("timeout", {}),
    "kazoo": ("timeout", {}),
}
SCHEMES = tuple(_BACKENDS)


def describe_url(url: str) -> str:
    """``url`` as it may be logged: passwords in the user part and in the query masked."""
    return mask_text(redact_url(url))


def check_backend_url(url: str) -> None:
    """Raise ValueError (one line, no password) if ``url`` cannot hold the leadership lock safely.
    Builds the coordinator (which loads the driver and its client library) without connecting."""
    ToozLock(url, "check")


def _ping_redis(where: tuple[str, int]) -> None:
    """One PING, answered within SOCKET_TIMEOUT (any answer: +PONG, or -NOAUTH before the login), else
    OSError. tooz retries a failed Redis start 15 times and redis-py each try 3 times with backoff: a
    minute for a Redis that is down or black-holed, during which the lock thread would do nothing else."""
    with socket.create_connection(where, timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(b"PING\r\n")
        if sock.recv(1) not in (b"+", b"-"):
            raise ConnectionError(f"{where[0]}:{where[1]} does not answer as Redis does")


class ToozLock:
    """``LockBackend`` on a tooz coordinator; driven by the ``Leadership`` thread only."""

    def __init__(self, backend_url: str, group: str, *, member_id: str | None = None) -> None:
        self._url = backend_url
        self._shown = describe_url(backend_url)
        parts = urlsplit(backend_url)
        scheme = parts.scheme.lower()
        if scheme not in _BACKENDS:
            raise ValueError(f"{self._shown}: tooz backend {scheme or '(none)'}:// cannot hold the leadership "
                             f"lock safely (its locks do not expire when the holder goes silent); use one of "
                             f"{', '.join(s + '://' for s in SCHEMES)}")
        expiry_option, defaults = _BACKENDS[scheme]
        given = parse_qs(parts.query)
        options = {key: value for key, value in defaults.items() if key not in given}
        self._member = (member_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}").encode()
        self._options = options
        try:
            self._coord: Any = self._new_coordinator()
        except ImportError as exc:
            raise ValueError(f"{self._shown}: the tooz driver for {scheme}:// needs a library that is not "
                             f"installed ({exc.name or exc})") from None
        except Exception as exc:  # stevedore, a bad option: the text may quote the URL
            raise ValueError(f"{self._shown}: tooz cannot use it: {describe_url(str(exc)) or type(exc).__name__}") \
                from None
        expiry = getattr(self._coord, expiry_option, None)
        if not isinstance(expiry, (int, float)) or expiry < TOOZ_LEASE + LEASE_MARGIN:
            raise ValueError(f"{self._shown}: {expiry_option} = {expiry}: must be at least "
                             f"{TOOZ_LEASE + LEASE_MARGIN:g} s (the lease is {TOOZ_LEASE:g} s)")
        self.expiry = float(expiry)
        self._name = f"rpcdaemon.leader.{group}"
        self._lock: Any = None
        self._started = False
        self._healthy = False  # the last call answered: releasing over the network is worth trying
        # A plain Redis (no sentinel, no TLS): asked for one PING before each start (see _start).
        plain = not {"sentinel", "ssl"} & given.keys()
        self._probe = (parts.hostname, parts.port or 6379) if scheme == "redis" and parts.hostname and plain else None

    def _new_coordinator(self) -> Any:
        return coordination.get_coordinator(self._url, self._member, **self._options)

    @property
    def name(self) -> str:
        return self._name

    @property
    def lease(self) -> float:
        return TOOZ_LEASE

    def describe(self) -> str:
        return f"tooz {self._shown}"

    def _start(self) -> None:
        if self._started:
            return
        if self._probe is not None:
            _ping_redis(self._probe)
        self._coord.start(start_heart=False)  # the Leadership thread heartbeats (confirm)
        self._started = True
        self._no_client_retries()
        self._lock = self._coord.get_lock(self._name.encode())

    def _no_client_retries(self) -> None:
        """redis-py retries each failed command with backoff; the Leadership thread retries every
        second by itself, and a blocked round is a round without a confirmation."""
        set_retry = getattr(getattr(self._coord, "_client", None), "set_retry", None)
        if set_retry is None:
            return
        from redis.backoff import NoBackoff  # the redis driver's own client library
        from redis.retry import Retry

        set_retry(Retry(NoBackoff(), 0))

    def acquire(self) -> bool:
        self._healthy = False
        self._start()
        got = bool(self._lock.acquire(blocking=False))
        self._healthy = True
        return got

    def confirm(self) -> bool:
        if self._lock is None:
            return False
        self._healthy = False
        self._coord.heartbeat()  # renews the lock's expiry (redis, etcd3, memcached) and our membership
        held = bool(self._lock.is_still_owner())
        self._healthy = True
        return held

    def release(self) -> None:
        lock, self._lock = self._lock, None
        started, self._started = self._started, False
        healthy, self._healthy = self._healthy, False
        if not healthy:
            # The backend just failed: a release would wait out its retries, and there is nothing to
            # release that the backend does not expire by itself. A fresh coordinator next time.
            self._coord = self._new_coordinator()
            return
        if lock is not None:
            with contextlib.suppress(Exception):
                lock.release()
        if started:
            with contextlib.suppress(Exception):
                self._coord.stop()

    def is_backend_error(self, exc: BaseException) -> bool:
        return isinstance(exc, (ToozError, OSError, TimeoutError))

    def explain(self, exc: BaseException) -> str:
        return describe_url(f"{type(exc).__name__}: {exc}")
