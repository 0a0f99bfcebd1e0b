"""The test kit itself (tests/kit): what every suite relies on when it waits, steps a clock, starts a process
or reads metrics and audit lines must do what it says, or every test built on it proves less than it claims.

The daemon runner is driven here with a stand-in process (a few lines of Python serving /metrics as the
daemon does); tests/component/test_daemon_passes.py drives it with the real daemon.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from tests.kit.audit import check_audit_line, read_audit
from tests.kit.clock import Clock
from tests.kit.metrics import leader_gauge, parse_samples, pass_stamps, says_active, total
from tests.kit.poll import TimedOut, poll_until, wait_until
from tests.kit.ports import free_port
from tests.kit.process import DROPPED, DaemonError, DaemonProcess, clean_env

from rpcdaemon.telemetry.audit import render_line

# -- the environment of every process a test starts ------------------------------------------------------


def test_clean_env_drops_pytests_warning_filters_and_systemds_hand_over(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PYTHONWARNINGS", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID",
                 "INVOCATION_ID", "NO_COLOR"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("RPCD_KIT_KEPT", "yes")
    env = clean_env(LANG="C.UTF-8")
    assert not set(DROPPED) & env.keys()
    assert {"PYTHONWARNINGS", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID",
            "INVOCATION_ID"} <= set(DROPPED)  # the union of what the four daemon starters dropped
    assert (env["RPCD_KIT_KEPT"], env["NO_COLOR"], env["LANG"]) == ("yes", "1", "C.UTF-8")
    assert "NO_COLOR" not in clean_env(drop=("NO_COLOR",))
    assert clean_env(NOTIFY_SOCKET="/run/test")["NOTIFY_SOCKET"] == "/run/test"  # set again on purpose


# -- the poller ------------------------------------------------------------------------------------------


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls: list[int] = []

    def third_time() -> str | None:
        calls.append(1)
        return "here" if len(calls) == 3 else None

    assert wait_until(third_time, 10, "the third call") == "here"
    assert len(calls) == 3


def test_wait_until_fails_naming_what_it_waited_for_and_the_hint() -> None:
    with pytest.raises(TimedOut, match=r"timed out after 0 s waiting for the moon\nits log: nothing"):
        wait_until(lambda: None, 0.05, "the moon", lambda: "\nits log: nothing")
    assert issubclass(TimedOut, AssertionError)  # a failed wait is a failed test, not an error in it


def test_poll_until_gives_up_quietly_after_the_timeout() -> None:
    began = time.monotonic()
    assert poll_until(lambda: False, 0.2) is None
    assert time.monotonic() - began >= 0.2
    assert poll_until(lambda: [1], 0.2) == [1]


# -- the fake clock --------------------------------------------------------------------------------------


def test_the_clock_is_set_read_and_advanced_from_many_threads() -> None:
    clock = Clock()
    assert clock() == 1000.0
    clock.now += 5
    assert clock() == 1005.0

    def advance_often() -> None:
        for _ in range(1000):
            clock.advance(0.5)

    threads = [threading.Thread(target=advance_often) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock() == 1005.0 + 2000.0


def test_a_wall_clock_moves_with_its_monotonic_one() -> None:
    clock = Clock(50.0)
    wall = clock.wall_at(1_700_000_000.0)
    assert wall() == 1_700_000_000.0
    clock.advance(2.5)
    assert wall() == 1_700_000_002.5


# -- the metrics reader ----------------------------------------------------------------------------------

EXPOSITION = """\
# TYPE rpcdaemon_actions_total counter
rpcdaemon_actions_total{plugin="L3Agent",kind="move-router",status="done"} 3.0
rpcdaemon_actions_total{plugin="L3Agent",kind="move-router",status="failed"} 1.0
rpcdaemon_actions_total{plugin="DHCPAgent",kind="bind-network",status="done"} 2.0
# TYPE rpcdaemon_last_pass_timestamp_seconds gauge
rpcdaemon_last_pass_timestamp_seconds{plugin="L3Agent"} 1.7e+09
rpcdaemon_last_pass_timestamp_seconds{plugin="DHCPAgent"} 0.0
# TYPE rpcdaemon_leader gauge
rpcdaemon_leader 1.0
"""


def test_samples_are_summed_by_labels_and_stamps_read_per_plugin() -> None:
    samples = parse_samples(EXPOSITION)
    assert total(samples, "rpcdaemon_actions_total") == 6
    assert total(samples, "rpcdaemon_actions_total", plugin="L3Agent") == 4
    assert total(samples, "rpcdaemon_actions_total", plugin="L3Agent", status="done") == 3
    assert total(samples, "rpcdaemon_not_there") == 0
    assert pass_stamps(samples) == {"L3Agent": 1.7e9}  # a plugin that never passed has no stamp


def test_the_leader_gauge_read_two_ways() -> None:
    active = parse_samples(EXPOSITION)
    standby = parse_samples(EXPOSITION.replace("rpcdaemon_leader 1.0", "rpcdaemon_leader 0.0"))
    assert (leader_gauge(active), leader_gauge(standby)) == (1.0, 0.0)
    assert leader_gauge(None) is None  # did not answer: it says nothing
    assert leader_gauge(parse_samples("")) is None  # answers, serves no gauge
    assert sum(says_active(s) for s in (active, standby, standby)) == 1


# -- the audit reader ------------------------------------------------------------------------------------

def test_audit_lines_are_checked_against_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    assert read_audit(path, missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        read_audit(path)
    path.write_bytes(render_line("stop", {"exit_status": 0, "reason": "stop requested"}, instance="ctl-1:42", at=0.0))
    [doc] = read_audit(path)
    assert (doc["event"], doc["exit_status"]) == ("stop", 0)
    with pytest.raises(AssertionError, match="'reason' is a required property"):
        check_audit_line({key: value for key, value in doc.items() if key != "reason"})


# -- the daemon runner, on a stand-in daemon ---------------------------------------------------------------

# Serves /metrics as the daemon does: a new pass stamp every 50 ms (what a pass every check does).
STAND_IN = """
import sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

class Metrics(BaseHTTPRequestHandler):
    def do_GET(self):
        stamp = round(time.time(), 1) if sys.argv[2] == "passing" else 0
        body = f'rpcdaemon_last_pass_timestamp_seconds{{plugin="L3Agent"}} {stamp}\\n'.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print("serving", file=sys.stderr, flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Metrics).serve_forever(0.05)
"""


def stand_in(tmp_path: Path, mode: str) -> DaemonProcess:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    port = free_port()
    return DaemonProcess([sys.executable, script, str(port), mode], name="stand-in", log_path=tmp_path / "log",
                         cwd=tmp_path, metrics_port=port)


def test_wait_passes_waits_for_that_many_new_stamps(tmp_path: Path) -> None:
    daemon = stand_in(tmp_path, "passing").start()
    try:
        daemon.wait_text("serving", 30)
        wait_until(daemon.metrics_if_answering, 30, "the stand-in's metrics")
        first = daemon.pass_stamps()["L3Agent"]
        daemon.wait_passes(3, timeout=30)
        assert daemon.pass_stamps()["L3Agent"] > first + 0.25  # three new stamps, 0.1 s apart at least
    finally:
        daemon.cleanup()
    assert not daemon.running
    assert daemon.metrics_if_answering() is None  # not running: nothing to ask


def test_wait_passes_fails_without_passes_or_once_the_daemon_ended(tmp_path: Path) -> None:
    daemon = stand_in(tmp_path, "failing").start()
    try:
        daemon.wait_text("serving", 30)
        wait_until(daemon.metrics_if_answering, 30, "the stand-in's metrics")  # a loaded machine is slow to answer
        with pytest.raises(TimedOut, match="waiting for 1 check passes of stand-in"):
            daemon.wait_passes(1, timeout=0.5)  # no good pass stamps anything
        daemon.kill()
        with pytest.raises(DaemonError, match=r"stand-in exited with status -9\n--- stand-in log"):
            daemon.wait_text("never said", 30)  # fails at once: the log is complete
    finally:
        daemon.cleanup()
    no_metrics = DaemonProcess([sys.executable, "-c", "pass"], name="quiet", log_path=tmp_path / "q", cwd=tmp_path)
    with pytest.raises(AssertionError, match="quiet serves no metrics"):
        no_metrics.wait_passes()
