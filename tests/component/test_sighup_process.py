"""SIGHUP on the real daemon process, detached and in the foreground: it never ends the daemon (before,
it died with status 129), and a detached daemon reopens its log file, so logrotate's rename + HUP works.

The Dump plugin on the real RabbitMQ is enough: the signal handling is the shell's, whatever runs inside.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.component.daemon_proc import RpcDaemon
from tests.component.rabbit import AMQP_URL
from tests.kit.poll import wait_until


def dump_config(tmp_path: Path) -> tuple[str, Path, Path]:
    logfile, pidfile = tmp_path / "rpcdaemon.log", tmp_path / "rpcdaemon.pid"
    text = (f"[Daemon]\nplugins = Dump\nrpchost = {AMQP_URL}\npidfile = {pidfile}\nlogfile = {logfile}\n"
            "loglevel = INFO\ncheck_interval = 0.2\n[Dump]\nloglevel = INFO\n")
    return text, logfile, pidfile


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}/status").exists() else ""
    return "\nState:\tZ" not in status


def test_detached_daemon_reopens_its_log_on_sighup_after_a_rename(tmp_path: Path) -> None:
    text, logfile, pidfile = dump_config(tmp_path)
    daemon = RpcDaemon(tmp_path, text)
    try:
        pid = daemon.start_detached(pidfile)
        wait_until(lambda: logfile.exists() and "rpcdaemon running" in logfile.read_text(), 20, "the daemon to run")
        rotated = logfile.with_suffix(".log.1")
        for round_ in range(2):  # two rotations: the second HUP works like the first
            logfile.rename(rotated)
            os.kill(pid, signal.SIGHUP)
            wait_until(lambda: logfile.exists() and "SIGHUP: log file reopened" in logfile.read_text(), 10,
                       f"the reopen line in the new log file (round {round_ + 1})")
            assert logfile.read_text().count("SIGHUP: log file reopened") == 1  # this round's, in the new file
            assert "rpcdaemon running" not in logfile.read_text()  # the old lines stayed in the old one
            assert alive(pid)
            rotated.unlink()
        time.sleep(0.5)  # a few checks later: still running
        assert alive(pid)
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), 15, "the daemon to exit after SIGTERM")
        after = logfile.read_text()
        assert "rpcdaemon exiting (status 0)" in after  # the rest of its life went to the new file
        assert "Traceback" not in after
        assert not pidfile.exists()
    finally:
        daemon.cleanup()


def test_foreground_daemon_survives_sighup(tmp_path: Path) -> None:
    text, _, _ = dump_config(tmp_path)
    daemon = RpcDaemon(tmp_path, text).start()
    try:
        wait_until(lambda: "rpcdaemon running" in daemon.log(), 20, "the daemon to run")
        assert daemon.proc is not None
        for _ in range(3):
            daemon.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        wait_until(lambda: daemon.log().count("SIGHUP: no log file to reopen") == 3, 10, "three SIGHUP lines")
        assert daemon.running
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    err = daemon.log()
    assert "rpcdaemon exiting (status 0)" in err
    assert "Traceback" not in err
