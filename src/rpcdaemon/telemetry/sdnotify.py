"""The sd_notify protocol, spoken directly: READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 to systemd.

``wiring`` builds one ``Notifier`` from the environment (``$NOTIFY_SOCKET``, set by systemd for a
``Type=notify`` unit) and hands it to the ``Service``, which sends READY once the bus and the Neutron API
answered, STATUS when its summary changes, WATCHDOG from its check loop thread, and STOPPING on
shutdown. Each message is one datagram on an AF_UNIX SOCK_DGRAM socket; a leading ``@`` in the address
names the abstract namespace. Without ``$NOTIFY_SOCKET`` every method does nothing.

Notification is a courtesy to the service manager, never a reason to fail: an error sending is logged
once at DEBUG and swallowed. The texts sent are the daemon's own (role, counts), never a secret, and
escaped (``textsafe``) so that none adds a line.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from rpcdaemon.textsafe import escape_text

log = logging.getLogger("rpcdaemon")

# systemd wants a ping at least every WatchdogSec; more than one a second is only noise on its socket.
WATCHDOG_MIN_INTERVAL = 1.0


class Notifier:
    """Sends sd_notify messages to ``address`` (None: a no-op notifier). Thread-safe."""

    def __init__(
        self,
        address: str | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        watchdog_interval: float = WATCHDOG_MIN_INTERVAL,
    ) -> None:
        self.address = address or None
        self._target = _socket_address(self.address) if self.address else None
        self._clock = clock
        self._watchdog_interval = watchdog_interval
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failed_said = False
        self._ready = False
        self._status: str | None = None
        self._last_ping = -float("inf")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET"), clock=clock)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    @property
    def is_ready(self) -> bool:
        """Whether READY=1 was sent (or would have been, without a socket)."""
        return self._ready

    def ready(self, status: str | None = None) -> None:
        """READY=1, once for the life of the process (later calls do nothing)."""
        with self._lock:
            if self._ready:
                return
            self._ready = True
            lines = ["READY=1"]
            status = escape_text(status) if status is not None else None
            if status is not None and status != self._status:
                self._status = status
                lines.append(f"STATUS={status}")
            self._send("\n".join(lines))

    def status(self, text: str) -> None:
        """STATUS=text, only when it differs from the last one sent."""
        text = escape_text(text)  # a pause's "by" comes off the bus: no line of its own (MAINPID=, ...)
        with self._lock:
            if text == self._status:
                return
            self._status = text
            self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        """WATCHDOG=1, at most once per ``watchdog_interval`` (calls in between do nothing)."""
        with self._lock:
            now = self._clock()
            if now - self._last_ping < self._watchdog_interval:
                return
            self._last_ping = now
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        with self._lock:
            self._send("STOPPING=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, message: str) -> None:
        """One datagram; the lock is held. Never raises."""
        if self._target is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self._target)
        except OSError as exc:
            if not self._failed_said:
                self._failed_said = True
                log.debug("sd_notify to %s failed (%s); further failures are not logged", self.address, exc)


def watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    """The service manager's watchdog period (``$WATCHDOG_USEC``), or None when there is none for ``pid``."""
    usec, owner = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 1e6


def watchdog_warning(period: float, timeouts: Sequence[float], backoff_max: float) -> str | None:
    """Why a watchdog of ``period`` seconds would kill a healthy daemon, or None. Between two signs of
    life the check loop may wait one whole Neutron API call (the largest plugin ``timeout``) and one
    retry backoff; half the period must cover that, leaving the other half for a loaded machine."""
    if not timeouts:
        return None
    silent = max(timeouts) + backoff_max
    if period >= 2 * silent:
        return None
    return (f"systemd watchdog (WatchdogSec={period:g}s) is short: a healthy check loop may be silent for "
            f"{silent:g}s (a Neutron API call of timeout {max(timeouts):g}s, then a retry backoff); set WatchdogSec "
            f"to at least {2 * silent:g}s")


def _socket_address(address: str) -> str:
    """The address as the socket call takes it: ``@name`` is ``\\0name`` (the abstract namespace)."""
    return "\0" + address[1:] if address.startswith("@") else address
