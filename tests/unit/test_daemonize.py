"""The pid file lock and the process identity checks of ``rpcdaemon.daemon.daemonize``, on real processes and files.

No forking here (``run_detached`` is covered by tests/component/test_daemon_process.py): the lock is
taken and tested within this process (flock locks belong to open files, so two opens conflict) and
against short-lived helper processes whose command lines imitate an rpcdaemon or a pid's new owner.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rpcdaemon.daemon.daemonize import (
    SHUTDOWN_CAP,
    SHUTDOWN_TIMEOUT,
    AlreadyRunning,
    DaemonError,
    PidLock,
    pid_alive,
    process_started,
    runs_rpcdaemon,
    shutdown_bound,
)


@pytest.mark.parametrize(
    ("argv", "ours"),
    [
        (["/usr/local/bin/rpcdaemon", "-c", "/etc/rpcdaemon.conf"], True),
        (["/opt/venv/bin/python3", "/opt/venv/bin/rpcdaemon", "-c", "x.conf"], True),
        (["python3", "-m", "rpcdaemon", "-d"], True),
        (["vim", "rpcdaemon.conf"], False),
        (["less", "/var/log/rpcdaemon.log"], False),
        (["python3", "/home/me/rpcdaemon/tools/report.py"], False),
        (["grep", "-r", "rpcdaemon", "/etc"], False),
        ([], False),
    ],
)
def test_what_counts_as_an_rpcdaemon_command_line(argv: list[str], ours: bool) -> None:
    assert runs_rpcdaemon(argv) is ours


Spawn = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], argv0: str | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, executable=argv0)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _sleeper(*extra: str) -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(60)", *extra]


def test_a_reused_pid_with_rpcdaemon_in_its_arguments_is_not_ours(spawn: Spawn) -> None:
    editor = spawn(_sleeper("rpcdaemon.conf"))  # like `vim rpcdaemon.conf`
    assert pid_alive(editor.pid) is False


def test_an_rpcdaemon_started_before_its_pid_file_counts_one_started_after_does_not(spawn: Spawn) -> None:
    proc = spawn(["rpcdaemon", "60"], argv0="sleep")  # argv[0] is "rpcdaemon", as for the console script
    time.sleep(0.2)
    started = process_started(proc.pid)
    assert started is not None
    assert abs(started - time.time()) < 5
    assert pid_alive(proc.pid)
    assert pid_alive(proc.pid, written_at=time.time())
    assert not pid_alive(proc.pid, written_at=time.time() - 3600), "the pid was reused after the file was written"


def test_a_dead_pid_is_not_alive() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not pid_alive(gone.pid)


def test_the_lock_refuses_a_second_holder_and_names_the_pid(tmp_path: Path) -> None:
    pidfile = tmp_path / "rpcdaemon.pid"
    first = PidLock.acquire(pidfile)
    first.write(4242)
    with pytest.raises(AlreadyRunning) as err:
        PidLock.acquire(pidfile)
    assert str(err.value) == f"already running as pid 4242 (pidfile {pidfile})"
    assert pidfile.read_text() == "4242\n", "a refused start does not touch the file"
    first.release()
    assert not pidfile.exists()
    again = PidLock.acquire(pidfile)
    again.release()


def test_a_lock_taken_but_no_pid_written_yet_says_so(tmp_path: Path) -> None:
    pidfile = tmp_path / "rpcdaemon.pid"
    first = PidLock.acquire(pidfile)
    try:
        with pytest.raises(AlreadyRunning, match="is locked; its pid is not written yet"):
            PidLock.acquire(pidfile)
    finally:
        first.release()


def test_a_stale_file_is_taken_over_and_its_pid_reported(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pidfile = tmp_path / "rpcdaemon.pid"
    pidfile.write_text(f"{gone.pid}\n")
    lock = PidLock.acquire(pidfile)
    try:
        assert lock.stale == gone.pid
        assert pidfile.read_text() == ""
    finally:
        lock.release()


def test_an_unlocked_file_of_a_live_rpcdaemon_still_counts(tmp_path: Path, spawn: Spawn) -> None:
    # An rpcdaemon of an older version, which wrote the file without locking it.
    proc = spawn(["rpcdaemon", "60"], argv0="sleep")
    time.sleep(0.2)
    pidfile = tmp_path / "rpcdaemon.pid"
    pidfile.write_text(f"{proc.pid}\n")
    with pytest.raises(AlreadyRunning, match=f"as pid {proc.pid}"):
        PidLock.acquire(pidfile)
    # The same pid in a file written long before that process started: a reused pid, stale.
    os.utime(pidfile, (time.time() - 3600, time.time() - 3600))
    lock = PidLock.acquire(pidfile)
    assert lock.stale == proc.pid
    lock.release()


def test_a_pidfile_that_cannot_be_opened_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "rpcdaemon.pid"
    with pytest.raises(DaemonError) as err:
        PidLock.acquire(missing)
    assert str(err.value) == f"cannot open pidfile {missing}: No such file or directory"
    with pytest.raises(DaemonError, match="Is a directory"):
        PidLock.acquire(tmp_path)


@pytest.mark.parametrize(
    ("calls", "bound"),
    [
        ([(30.0, 3)], 4 * 30.0 + SHUTDOWN_TIMEOUT),  # the defaults: 130 s
        ([(5.0, 1), (10.0, 2)], 30.0 + SHUTDOWN_TIMEOUT),  # the slowest plugin
        ([(600.0, 5)], SHUTDOWN_CAP + SHUTDOWN_TIMEOUT),
        ([], SHUTDOWN_TIMEOUT),  # Dump only: nothing in flight
    ],
)
def test_shutdown_bound_covers_a_move_finishing_its_bind(calls: list[tuple[float, int]], bound: float) -> None:
    assert shutdown_bound(calls) == bound
