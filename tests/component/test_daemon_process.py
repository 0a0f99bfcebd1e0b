"""The daemon shell on real processes: detaching, the pid file, signals, bounded shutdown, log targets.

Two kinds of process are started:
- ``rpcdaemon_idle.py`` (written to tmp_path): the real ``cli.main`` with an injected runner that idles
  until the stop event is set, so the pid file and signal behaviour is tested apart from the service;
- the installed ``rpcdaemon`` command itself, with only the Dump plugin on the real RabbitMQ (needs
  ``rpcdaemon.daemon.service`` and the Dump plugin; the broker is checked by this folder's conftest).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.rabbit import AMQP_URL
from tests.kit.poll import wait_until
from tests.kit.process import RPCDAEMON, clean_env, run

# The file name matters: a pid file whose process has no "rpcdaemon" in its command line is stale.
IDLE_SCRIPT = """
import logging, sys, threading
from rpcdaemon.cli import main
from rpcdaemon.daemon.daemonize import run_foreground

log = logging.getLogger("rpcdaemon")


def idle(settings, stop, *, foreground):
    log.info("idle runner up, foreground=%s", foreground)
    stop.wait()
    log.info("idle runner saw the stop event")
    return 0


def stuck(stop):
    log.info("stuck runner up")
    threading.Event().wait(60)  # ignores the stop event
    return 0


if sys.argv[1] == "stuck":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_foreground(stuck, shutdown_timeout=1.0))
sys.exit(main(sys.argv[2:], runner=idle))
"""


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie that no init reaps counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


class Daemon:
    """Starts detached daemons and foreground processes; whatever is still running at the end is killed."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.script = tmp_path / "rpcdaemon_idle.py"
        self.script.write_text(IDLE_SCRIPT)
        self.pidfile = tmp_path / "run" / "rpcdaemon.pid"
        self.pidfile.parent.mkdir()
        self.logfile = tmp_path / "rpcdaemon.log"
        self.config = tmp_path / "rpcdaemon.conf"
        self.write_config()
        self.pids: list[int] = []
        self.procs: list[subprocess.Popen[str]] = []

    def write_config(self, *, logfile: Path | None = None) -> None:
        self.config.write_text(
            f"[Daemon]\nplugins = Dump\nrpchost = {AMQP_URL}\npidfile = {self.pidfile}\n"
            f"logfile = {logfile or self.logfile}\nloglevel = DEBUG\ncheck_interval = 0.2\n"
            "[Dump]\nloglevel = INFO\n"
        )

    def command(self, kind: str) -> list[str]:
        if kind == "rpcdaemon":
            return [str(RPCDAEMON)]
        return [sys.executable, str(self.script), kind]

    def start_detached(self, kind: str = "idle") -> subprocess.CompletedProcess[str]:
        """Run the command without -d: it returns once the daemon has forked off."""
        done = run([*self.command(kind), "-c", self.config], timeout=30, cwd=self.tmp)
        pid = _read_pid(self.pidfile)
        if pid is not None:
            self.pids.append(pid)
        return done

    def wait_pid(self, timeout: float = 10.0) -> int:
        pid = wait_until(lambda: _read_pid(self.pidfile), timeout, f"the pid file {self.pidfile}")
        if pid not in self.pids:
            self.pids.append(pid)
        return pid

    def start_foreground(self, kind: str = "idle") -> subprocess.Popen[str]:
        proc = subprocess.Popen([*self.command(kind), "-d", "-c", str(self.config)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.tmp, env=clean_env())
        self.procs.append(proc)
        return proc

    def log_has(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: self.logfile.exists() and text in self.logfile.read_text(), timeout, f"{text!r} in the log")

    def cleanup(self) -> None:
        for pid in self.pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    d.cleanup()


def _stop(pid: int, timeout: float = 5.0) -> float:
    """SIGTERM ``pid``; how many seconds it took to exit."""
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: _gone(pid), timeout, f"pid {pid} to exit after SIGTERM")
    return time.monotonic() - started


def test_detached_daemon_holds_the_pidfile_and_sigterm_removes_it(daemon: Daemon) -> None:
    done = daemon.start_detached()
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    pid = daemon.wait_pid()
    assert not _gone(pid)
    daemon.log_has("idle runner up, foreground=False")
    log = daemon.logfile.read_text()
    assert f"starting (pid {pid}, detached, config {daemon.config})" in log
    assert _stop(pid) < 3.0
    wait_until(lambda: not daemon.pidfile.exists(), 5.0, "the pid file to be removed")
    log = daemon.logfile.read_text()
    assert "received SIGTERM, stopping" in log
    assert "idle runner saw the stop event" in log
    assert "rpcdaemon exiting (status 0)" in log


def test_second_start_refuses_while_the_first_lives(daemon: Daemon) -> None:
    daemon.start_detached()
    pid = daemon.wait_pid()
    again = daemon.start_detached()
    assert again.returncode == 1
    assert again.stderr == f"rpcdaemon: error: already running as pid {pid} (pidfile {daemon.pidfile})\n"
    assert _read_pid(daemon.pidfile) == pid
    assert not _gone(pid)
    _stop(pid)


def test_stale_pidfile_is_replaced(daemon: Daemon) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    daemon.pidfile.write_text(f"{dead}\n")
    done = daemon.start_detached()
    assert done.returncode == 0, done.stderr
    pid = wait_until(lambda: (p := _read_pid(daemon.pidfile)) != int(dead) and p, 10.0, "a new pid in the pid file")
    daemon.pids.append(pid)
    assert not _gone(pid)
    daemon.log_has(f"replaced stale pidfile {daemon.pidfile} (pid {dead} was not running)")
    _stop(pid)
    wait_until(lambda: not daemon.pidfile.exists(), 5.0, "the pid file to be removed")


def test_racing_starts_one_runs_the_other_says_so(daemon: Daemon) -> None:
    # Started together, both pass any "is it running?" look at the file; only the lock decides, and
    # it is taken before detaching, so the loser's refusal reaches the terminal it was run from.
    for _ in range(3):
        procs = [
            subprocess.Popen([*daemon.command("idle"), "-c", str(daemon.config)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=daemon.tmp, env=clean_env())
            for _ in range(2)
        ]
        results = sorted((p.wait(timeout=30), p.communicate()[1]) for p in procs)
        pid = daemon.wait_pid()
        assert [code for code, _ in results] == [0, 1], results
        assert results[0][1] == ""
        assert results[1][1].startswith("rpcdaemon: error: already running")
        assert results[1][1].count("\n") == 1, results[1][1]
        assert f"(pidfile {daemon.pidfile}" in results[1][1]
        _stop(pid)
        wait_until(lambda: not daemon.pidfile.exists(), 5.0, "the pid file to be removed")


def test_unreadable_pidfile_directory_is_one_line_and_exit_1(daemon: Daemon) -> None:
    # Root ignores file modes; setpriv drops the capabilities that let it, so the mode applies.
    daemon.pidfile.parent.chmod(0o000)
    try:
        done = run(["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                    "--bounding-set=-dac_override,-dac_read_search", *daemon.command("idle"), "-c", daemon.config],
                   timeout=30, cwd=daemon.tmp)
    finally:
        daemon.pidfile.parent.chmod(0o755)
    assert done.returncode == 1
    assert done.stderr == f"rpcdaemon: error: cannot open pidfile {daemon.pidfile}: Permission denied\n"
    assert not daemon.pidfile.exists()


def test_unwritable_logfile_fails_before_detaching(daemon: Daemon) -> None:
    daemon.write_config(logfile=daemon.tmp / "no-such-dir" / "r.log")
    done = daemon.start_detached()
    assert done.returncode == 1
    assert done.stderr == (
        f"rpcdaemon: error: cannot write logfile {daemon.tmp / 'no-such-dir' / 'r.log'}: No such file or directory\n"
    )
    assert not daemon.pidfile.exists()


def test_bad_config_fails_before_detaching(daemon: Daemon) -> None:
    daemon.config.write_text(daemon.config.read_text().replace("check_interval = 0.2", "check_interval = often"))
    done = daemon.start_detached()
    assert done.returncode == 2
    assert done.stderr == (
        f"rpcdaemon: error: {daemon.config}, line 7: [Daemon] check_interval = 'often': "
        "expected a number of seconds from 0.1 to 600\n"
    )
    assert not daemon.pidfile.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_foreground_writes_no_pidfile_logs_to_stderr_and_stops_on_signal(daemon: Daemon, signum: int) -> None:
    proc = daemon.start_foreground()
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "idle runner up, foreground=True" in line:
            break
    assert any("idle runner up, foreground=True" in line for line in seen), seen
    assert not daemon.pidfile.exists()
    started = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=5)
    assert time.monotonic() - started < 3.0
    assert proc.returncode == 0, err
    assert f"received {signal.Signals(signum).name}, stopping" in err
    assert "idle runner saw the stop event" in err
    assert not daemon.logfile.exists()


def test_a_run_that_ignores_the_stop_event_is_cut_short(daemon: Daemon) -> None:
    proc = daemon.start_foreground("stuck")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "stuck runner up" in line:
            break
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 3
    assert 0.9 < time.monotonic() - started < 4.0
    assert "still running 1 s after the stop request; exiting now" in err


def test_a_second_signal_exits_at_once(daemon: Daemon) -> None:
    proc = daemon.start_foreground("stuck")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "stuck runner up" in line:
            break
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 3
    assert "still running after a second signal; exiting now" in err


# -- the real command, Dump plugin on the real broker ------------------------------------------------


def test_real_rpcdaemon_detached_with_dump(daemon: Daemon) -> None:
    done = daemon.start_detached("rpcdaemon")
    assert done.returncode == 0, done.stderr
    pid = daemon.wait_pid()
    daemon.log_has("rpcdaemon running")
    time.sleep(1.0)  # a few check intervals: still alive, no error logged
    assert not _gone(pid), daemon.logfile.read_text()
    assert _stop(pid, timeout=10.0) < 8.0
    wait_until(lambda: not daemon.pidfile.exists(), 5.0, "the pid file to be removed")
    log = daemon.logfile.read_text()
    assert "rpcdaemon exiting (status 0)" in log
    assert "Traceback" not in log
    assert "ERROR" not in log


def test_real_rpcdaemon_foreground_with_dump(daemon: Daemon) -> None:
    proc = daemon.start_foreground("rpcdaemon")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "rpcdaemon running" in line:
            break
    assert proc.poll() is None
    assert not daemon.pidfile.exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "rpcdaemon exiting (status 0)" in err
    assert "Traceback" not in err
