"""The process shell: detach (python-daemon) with a pid file, or stay in the foreground; one stop event.

``cli.main`` hands ``run_foreground`` or ``run_detached`` a ``run(stop) -> exit code`` function. SIGTERM
and SIGINT set the one ``threading.Event``; ``run`` must return soon after. ``run`` executes in a worker
thread while the main thread only watches it: the signal handler then never interrupts code that holds
the event's lock, and a ``run`` that does not return within ``shutdown_timeout`` of the stop (or a
second signal) is cut short with ``os._exit``, so shutdown is bounded whatever the plugins do.

Pid file: a start refuses while the recorded process lives, replaces a stale file (process gone), and
the file is removed on exit. The check happens before detaching, where the refusal can still reach the
terminal; python-daemon then takes the file as a lock in the daemon, so two racing starts cannot both run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import daemon
import daemon.pidfile
import lockfile

log = logging.getLogger("rpcdaemon")

SHUTDOWN_TIMEOUT = 10.0
EXIT_STUCK = 3  # run() did not return in time after the stop request, or a second signal came
_POLL = 0.1


class DaemonError(Exception):
    """The daemon cannot start here (already running, pid file not writable)."""


class AlreadyRunning(DaemonError):
    def __init__(self, pid: int, pidfile: Path) -> None:
        super().__init__(f"already running as pid {pid} (pidfile {pidfile})")
        self.pid = pid


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process that could be an rpcdaemon."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        # A pid reused after a reboot by an unrelated program does not hold our pid file.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"rpcdaemon" in cmdline


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def claim_pidfile(pidfile: Path) -> int | None:
    """Check ``pidfile`` before detaching. Raises AlreadyRunning if its process lives, DaemonError if the
    file cannot be written; removes a stale file and returns the dead pid it named (else None)."""
    stale = None
    if pidfile.exists():
        try:
            pid = read_pid(pidfile)
        except OSError as exc:
            raise DaemonError(f"cannot read pidfile {pidfile}: {exc.strerror}") from None
        if pid is not None and pid_alive(pid):
            raise AlreadyRunning(pid, pidfile)
        stale = pid if pid is not None else 0
        try:
            pidfile.unlink()
        except OSError as exc:
            raise DaemonError(f"cannot remove stale pidfile {pidfile}: {exc.strerror}") from None
    directory = pidfile.parent
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise DaemonError(f"cannot write pidfile {pidfile}: directory {directory} missing or not writable")
    return stale


def _supervise(run: Callable[[threading.Event], int], stop: threading.Event, signals: list[int],
               shutdown_timeout: float, cleanup: Callable[[], None]) -> int:
    result: list[int] = []

    def target() -> None:
        try:
            result.append(run(stop))
        except Exception:
            log.exception("rpcdaemon failed")
            result.append(1)

    worker = threading.Thread(target=target, name="rpcdaemon-main", daemon=True)
    worker.start()
    deadline: float | None = None
    while worker.is_alive():
        worker.join(_POLL)
        if stop.is_set() and deadline is None:
            deadline = time.monotonic() + shutdown_timeout
            if signals:
                log.info("received %s, stopping", signal.Signals(signals[0]).name)
        if worker.is_alive() and deadline is not None and (len(signals) > 1 or time.monotonic() > deadline):
            why = "after a second signal" if len(signals) > 1 else f"{shutdown_timeout:g} s after the stop request"
            log.error("still running %s; exiting now", why)
            cleanup()
            logging.shutdown()
            os._exit(EXIT_STUCK)
    stop.set()  # tell any thread run() left behind
    return result[0] if result else 1


def _handler(stop: threading.Event, signals: list[int]) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        # Only a list append and Event.set here: the main thread never holds the event's lock.
        signals.append(signum)
        stop.set()

    return handle


def run_foreground(run: Callable[[threading.Event], int], *, shutdown_timeout: float = SHUTDOWN_TIMEOUT) -> int:
    """Run in this process (no pid file, no detaching); SIGINT/SIGTERM stop it. Main thread only."""
    stop = threading.Event()
    signals: list[int] = []
    handler = _handler(stop, signals)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _supervise(run, stop, signals, shutdown_timeout, cleanup=lambda: None)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_detached(
    run: Callable[[threading.Event], int],
    *,
    pidfile: Path,
    after_detach: Callable[[], None] = lambda: None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> int:
    """Detach (double fork, new session, cwd /, stdio to /dev/null), hold ``pidfile``, run until stopped.

    Raises DaemonError before detaching when the pid file is held by a live process or not writable.
    Only the daemon returns from here; the starting process exits 0 inside python-daemon once the
    daemon is forked. ``after_detach`` runs in the daemon first (open log files there, not before:
    python-daemon closes every inherited file descriptor)."""
    pidfile = pidfile.absolute()
    stale = claim_pidfile(pidfile)
    stop = threading.Event()
    signals: list[int] = []
    handler = _handler(stop, signals)
    context = daemon.DaemonContext(
        pidfile=daemon.pidfile.TimeoutPIDLockFile(str(pidfile), acquire_timeout=0),
        # Always fork, even when the parent is init (python-daemon would not): `rpcdaemon` without -d
        # must return to its caller.
        detach_process=True,
        umask=0o022,
        signal_map={
            signal.SIGTERM: handler,
            signal.SIGINT: handler,
            signal.SIGTSTP: None,
            signal.SIGTTIN: None,
            signal.SIGTTOU: None,
        },
    )

    def release() -> None:
        # lockfile.Error: someone removed or replaced the file meanwhile, nothing of ours to remove.
        with contextlib.suppress(lockfile.Error):
            context.close()

    try:
        context.open()
    except lockfile.Error:
        # Lost a race with another start after claim_pidfile; only the daemon child gets here.
        raise AlreadyRunning(read_pid(pidfile) or 0, pidfile) from None
    try:
        after_detach()
        if stale is not None:
            log.warning("replaced stale pidfile %s (pid %s was not running)", pidfile, stale or "unknown")
        return _supervise(run, stop, signals, shutdown_timeout, cleanup=release)
    finally:
        release()
