"""The process shell: detach (python-daemon) with a pid file, or stay in the foreground; one stop event.

``cli.main`` hands ``run_foreground`` or ``run_detached`` a ``run(stop) -> exit code`` function. SIGTERM
and SIGINT set the one ``threading.Event``; ``run`` must return soon after. ``run`` executes in a worker
thread while the main thread only watches it: the signal handler then never interrupts code that holds
the event's lock, and a ``run`` that does not return within ``shutdown_timeout`` of the stop (or a
second signal) is cut short with ``os._exit``, so shutdown is bounded whatever the plugins do. The
bound comes from ``shutdown_bound``: long enough for an in-flight move to finish its bind.

SIGHUP never stops the daemon (in either mode): its handler only notes it, and the main thread then
calls ``on_hup`` (the CLI reopens the log file there, for logrotate) outside the handler, so a
handler lock held by the interrupted code can never deadlock it. Configuration is not reloaded:
a restart applies changes.

Pid file: the file is a lock. The starting process opens it and takes an ``flock`` *before* detaching
and the daemon keeps that open file (python-daemon preserves it across the fork) for its whole life,
so "is it running?" is "is the lock held?": a second or racing start is refused on the terminal it was
run from (one line, exit 1), a pid reused by an unrelated program never counts, and a crashed
daemon's lock is gone with it. A file left by an rpcdaemon that did not lock it (an older version)
still counts while its pid runs rpcdaemon and started before the file was written. The daemon writes
its pid into the file and removes it on exit.

Descriptors: ``raise_open_files_limit`` lifts the soft RLIMIT_NOFILE to the hard one (at most
``OPEN_FILES_CEILING``), as many daemons do, since systemd's default soft limit is 1,024.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType

import daemon

from rpcdaemon.exits import EXIT_STUCK

log = logging.getLogger("rpcdaemon")

# The margin after the last in-flight call: listeners' joins, executor shutdown, log flushing.
SHUTDOWN_TIMEOUT = 10.0
# However long the API timeouts: a stop never waits longer than this (plus the margin) for moves.
SHUTDOWN_CAP = 300.0
_POLL = 0.1
_START_SLACK = 1.0  # /proc's boot time has whole seconds


OPEN_FILES_CEILING = 65536  # what the unit's LimitNOFILE= gives; no daemon of this size needs more


def raise_open_files_limit(ceiling: int = OPEN_FILES_CEILING) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (at most ``ceiling``; never lowered). Returns the
    soft limit before and after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # e.g. above the kernel's nr_open: keep what we have
            return soft, soft
        return soft, wanted
    return soft, soft


def shutdown_bound(calls: Iterable[tuple[float, int]]) -> float:
    """Seconds a stop may take, from each failover plugin's (``timeout``, ``retry_attempts``).

    A move past its unbind when the stop comes finishes its bind: the unbind attempt under way plus
    every bind attempt (the stop cuts the backoff short), so ``timeout * (attempts + 1)`` for the
    slowest plugin, capped at ``SHUTDOWN_CAP``, plus ``SHUTDOWN_TIMEOUT`` for the rest of the shutdown.
    """
    worst = max((timeout * (attempts + 1) for timeout, attempts in calls), default=0.0)
    return min(worst, SHUTDOWN_CAP) + SHUTDOWN_TIMEOUT


class DaemonError(Exception):
    """The daemon cannot start here (already running, pid file not writable)."""


class AlreadyRunning(DaemonError):
    def __init__(self, pid: int | None, pidfile: Path) -> None:
        if pid:
            super().__init__(f"already running as pid {pid} (pidfile {pidfile})")
        else:
            super().__init__(f"already running (pidfile {pidfile} is locked; its pid is not written yet)")
        self.pid = pid


def runs_rpcdaemon(argv: list[str]) -> bool:
    """Whether a command line (``/proc/PID/cmdline`` split) is an rpcdaemon: the console script run
    directly or through its interpreter, or ``python -m rpcdaemon``. Not ``vim rpcdaemon.conf``."""
    if not argv:
        return False
    if os.path.basename(argv[0]) == "rpcdaemon":
        return True
    rest = argv[1:]
    if rest[:2] == ["-m", "rpcdaemon"]:
        return True
    return bool(rest) and os.path.basename(rest[0]) == "rpcdaemon"


def process_started(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch, from /proc), or None when it cannot be told."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        # Fields after the command (which may hold spaces and parentheses); starttime is field 22.
        ticks = int(stat.rpartition(")")[2].split()[19])
        return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def pid_alive(pid: int, written_at: float | None = None) -> bool:
    """Whether ``pid`` is a live rpcdaemon that may have written a pid file at ``written_at`` (epoch).

    A pid reused by an unrelated program is not: its command line is not rpcdaemon's, or it started
    after the file was written."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return True  # no /proc to tell: assume the worst
    if not runs_rpcdaemon(argv):
        return False
    started = process_started(pid)
    return written_at is None or started is None or started <= written_at + _START_SLACK


def read_pid(pidfile: Path) -> int | None:
    """The pid recorded in ``pidfile``, or None (no file, empty, not a number, unreadable)."""
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class PidLock:
    """An open, flock-ed pid file. Inherited across fork: whoever holds the descriptor holds the lock."""

    def __init__(self, path: Path, fd: int, stale: int | None) -> None:
        self.path = path
        self.fd = fd
        self.stale = stale  # the pid a stale file named, if any
        self._released = False

    @classmethod
    def acquire(cls, pidfile: Path) -> PidLock:
        """Raises AlreadyRunning when another rpcdaemon holds ``pidfile``, DaemonError when it cannot be
        opened or locked. Empties the file; ``write`` then records the daemon's pid."""
        for _ in range(5):
            try:
                fd = os.open(pidfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise DaemonError(f"cannot open pidfile {pidfile}: {exc.strerror}") from None
            try:
                lock = cls._lock(pidfile, fd)
            except BaseException:
                os.close(fd)
                raise
            if lock is not None:
                return lock
            os.close(fd)  # a stopping daemon removed the file we opened: open the new one
        raise DaemonError(f"pidfile {pidfile} keeps being replaced; is another rpcdaemon starting and stopping?")

    @classmethod
    def _lock(cls, pidfile: Path, fd: int) -> PidLock | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(read_pid(pidfile), pidfile) from None
        except OSError as exc:
            raise DaemonError(f"cannot lock pidfile {pidfile}: {exc.strerror}") from None
        try:
            mine, there = os.fstat(fd), os.stat(pidfile)
        except FileNotFoundError:
            return None
        if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
            return None
        old = read_pid(pidfile)
        if old is not None and old != os.getpid() and pid_alive(old, written_at=mine.st_mtime):
            raise AlreadyRunning(old, pidfile)  # an rpcdaemon that does not lock the file
        try:
            os.ftruncate(fd, 0)
        except OSError as exc:
            raise DaemonError(f"cannot write pidfile {pidfile}: {exc.strerror}") from None
        return cls(pidfile, fd, stale=old)

    def write(self, pid: int) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        """Remove the file (if it is still ours) while holding the lock, then let the lock go."""
        if self._released:
            return
        self._released = True
        with contextlib.suppress(OSError):
            mine, there = os.fstat(self.fd), os.stat(self.path)
            if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _supervise(run: Callable[[threading.Event], int], stop: threading.Event, signals: list[int],
               shutdown_timeout: float, cleanup: Callable[[], None], hups: list[int] | None = None,
               on_hup: Callable[[], None] | None = None) -> int:
    result: list[int] = []
    hups = [] if hups is None else hups

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
        if hups:
            del hups[:]  # several HUPs since the last look: one reopen serves them all
            _hangup(on_hup)
        if stop.is_set() and deadline is None:
            deadline = time.monotonic() + shutdown_timeout
            if signals:
                log.info("received %s, stopping (within %g s)", signal.Signals(signals[0]).name, shutdown_timeout)
        if worker.is_alive() and deadline is not None and (len(signals) > 1 or time.monotonic() > deadline):
            why = "after a second signal" if len(signals) > 1 else f"{shutdown_timeout:g} s after the stop request"
            log.error("still running %s; exiting now", why)
            cleanup()
            logging.shutdown()
            os._exit(EXIT_STUCK)
    stop.set()  # tell any thread run() left behind
    return result[0] if result else 1


def _hangup(on_hup: Callable[[], None] | None) -> None:
    """SIGHUP, in the main thread: ``on_hup`` (reopen the logs); a failure is logged, never fatal."""
    if on_hup is None:
        log.info("SIGHUP: nothing to reopen (a restart applies configuration changes)")
        return
    try:
        on_hup()
    except Exception:
        log.exception("SIGHUP: reopening the log file failed; logging goes on as before")


def _hup_handler(hups: list[int]) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        hups.append(signum)  # only this: the main thread does the work (see _supervise)

    return handle


def _handler(stop: threading.Event, signals: list[int]) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        # Only a list append and Event.set here: the main thread never holds the event's lock.
        signals.append(signum)
        stop.set()

    return handle


def run_foreground(run: Callable[[threading.Event], int], *, shutdown_timeout: float = SHUTDOWN_TIMEOUT,
                   on_hup: Callable[[], None] | None = None) -> int:
    """Run in this process (no pid file, no detaching); SIGINT/SIGTERM stop it, SIGHUP calls ``on_hup``.
    Main thread only."""
    stop = threading.Event()
    signals: list[int] = []
    hups: list[int] = []
    handler = _handler(stop, signals)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _hup_handler(hups))
    try:
        return _supervise(run, stop, signals, shutdown_timeout, cleanup=lambda: None, hups=hups, on_hup=on_hup)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_detached(
    run: Callable[[threading.Event], int],
    *,
    pidfile: Path,
    after_detach: Callable[[], None] = lambda: None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    on_hup: Callable[[], None] | None = None,
) -> int:
    """Lock ``pidfile``, detach (double fork, new session, cwd /, stdio to /dev/null), run until stopped.

    Raises DaemonError before detaching, in the process the operator ran, when the pid file is held
    by a live rpcdaemon or cannot be opened. Only the daemon returns from here; the starting process
    exits 0 inside python-daemon once the daemon is forked, and the lock goes with the daemon.
    ``after_detach`` runs in the daemon first (open log files there, not before: python-daemon closes
    every inherited file descriptor but the pid file's)."""
    lock = PidLock.acquire(pidfile.absolute())
    stop = threading.Event()
    signals: list[int] = []
    hups: list[int] = []
    handler = _handler(stop, signals)
    context = daemon.DaemonContext(
        # Always fork, even when the parent is init (python-daemon would not): `rpcdaemon` without -d
        # must return to its caller.
        detach_process=True,
        umask=0o022,
        files_preserve=[lock.fd],
        signal_map={
            signal.SIGTERM: handler,
            signal.SIGINT: handler,
            signal.SIGHUP: _hup_handler(hups),  # python-daemon leaves it at "terminate" otherwise
            signal.SIGTSTP: None,
            signal.SIGTTIN: None,
            signal.SIGTTOU: None,
        },
    )
    try:
        context.open()
    except daemon.daemon.DaemonError as exc:
        lock.release()
        raise DaemonError(f"cannot detach: {exc}") from None
    try:
        lock.write(os.getpid())
        after_detach()
        if lock.stale is not None:
            log.warning("replaced stale pidfile %s (pid %s was not running)", lock.path, lock.stale)
        return _supervise(run, stop, signals, shutdown_timeout, cleanup=lock.release, hups=hups, on_hup=on_hup)
    finally:
        lock.release()
        with contextlib.suppress(Exception):
            context.close()
