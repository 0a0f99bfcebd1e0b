"""Logging under systemd and logrotate: the default level in the journal, SIGHUP's reopen of the log file
(also while other threads log), and the daemon shell turning SIGHUP into that reopen, never into an exit.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rpcdaemon.config.settings import Settings, parse_settings
from rpcdaemon.daemon.daemonize import run_foreground
from rpcdaemon.telemetry.logs import configure_logging, daemon_level, reopen_log_files, reset_logging


def settings(text: str = "") -> Settings:
    return parse_settings(f"[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\n{text}")


@pytest.mark.parametrize(("foreground", "environ", "config", "level"), [
    (True, {}, "", logging.DEBUG),  # -d at a terminal: DEBUG, as always
    (True, {"JOURNAL_STREAM": "8:12345"}, "", logging.INFO),  # the journal keeps what it gets
    (True, {"NOTIFY_SOCKET": "/run/systemd/notify"}, "", logging.INFO),
    (True, {"JOURNAL_STREAM": "8:12345"}, "loglevel = DEBUG\n", logging.DEBUG),  # said explicitly: kept
    (False, {}, "", logging.INFO),
    (False, {"JOURNAL_STREAM": "8:12345"}, "loglevel = WARNING\n", logging.WARNING),
])
def test_default_level_is_info_under_systemd(foreground: bool, environ: dict[str, str], config: str,
                                             level: int) -> None:
    assert daemon_level(settings(config), foreground=foreground, environ=environ) == level


@pytest.fixture
def logfile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "rpcdaemon.log"
    configure_logging(settings(f"logfile = {path}\nloglevel = INFO\n"), foreground=False, environ={})
    yield path
    reset_logging()


def test_reopen_after_logrotate_renamed_the_file(logfile: Path) -> None:
    log = logging.getLogger("rpcdaemon")
    log.info("before the rotation")
    logfile.rename(logfile.with_suffix(".log.1"))
    assert reopen_log_files() == 1
    log.info("after the rotation")
    assert "before the rotation" in logfile.with_suffix(".log.1").read_text()
    assert "after the rotation" not in logfile.with_suffix(".log.1").read_text()
    assert "after the rotation" in logfile.read_text()


def test_reopen_while_other_threads_log_loses_and_tears_no_line(logfile: Path) -> None:
    log = logging.getLogger("rpcdaemon")
    threads, lines = 4, 1500
    go = threading.Event()

    def writer(n: int) -> None:
        go.wait()
        for i in range(lines):
            log.info("writer %d line %d end", n, i)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    go.set()
    rotations = 0
    while any(w.is_alive() for w in workers) and rotations < 200:
        logfile.rename(logfile.with_suffix(f".log.{rotations}"))
        reopen_log_files()
        rotations += 1
    for w in workers:
        w.join(30)
    assert rotations > 5
    text = "".join(p.read_text() for p in logfile.parent.glob("rpcdaemon.log*"))
    found = re.findall(r"writer (\d+) line (\d+) end\n", text)
    assert len(found) == threads * lines  # nothing lost
    assert len(set(found)) == threads * lines  # nothing twice
    assert text.count("\n") == threads * lines  # and no torn or mixed line


def test_sighup_calls_on_hup_in_the_main_thread_and_the_run_goes_on() -> None:
    seen: list[str] = []
    reopened = threading.Event()

    def on_hup() -> None:
        seen.append(threading.current_thread().name)
        reopened.set()

    def run(stop: threading.Event) -> int:
        os.kill(os.getpid(), signal.SIGHUP)
        assert reopened.wait(5)
        os.kill(os.getpid(), signal.SIGHUP)  # again: still alive, still handled
        for _ in range(50):
            if len(seen) == 2:
                break
            stop.wait(0.1)
        return 0 if not stop.is_set() else 9

    before = signal.getsignal(signal.SIGHUP)
    assert run_foreground(run, shutdown_timeout=5, on_hup=on_hup) == 0
    assert seen == ["MainThread", "MainThread"]
    assert signal.getsignal(signal.SIGHUP) == before  # put back


def test_a_failing_reopen_is_logged_and_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")

    def on_hup() -> None:
        raise PermissionError(13, "Permission denied")

    def run(stop: threading.Event) -> int:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(50):
            if any("SIGHUP" in r.getMessage() for r in caplog.records):
                break
            stop.wait(0.1)
        return 0

    assert run_foreground(run, shutdown_timeout=5, on_hup=on_hup) == 0
    failed = [r for r in caplog.records if "SIGHUP: reopening the log file failed" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].levelno == logging.ERROR
