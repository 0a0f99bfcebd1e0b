"""Service.run never runs deaf or blind: a failing check loop or a dead metrics server is logged and
survived once, and if it persists the daemon ends non-zero (systemd restarts it). The bus is the
in-memory transport; the metrics server really binds on 127.0.0.1."""

from __future__ import annotations

import io
import logging
import socket
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.kit.poll import wait_until
from tests.kit.service import make_service

from rpcdaemon.acting.watched import ApiErrors
from rpcdaemon.config.settings import load_settings
from rpcdaemon.daemon import wiring
from rpcdaemon.daemon.service import MAX_STEP_FAILURES, Service
from rpcdaemon.exits import EXIT_FAILED, EXIT_START
from rpcdaemon.plugins.base import FailoverPlugin
from rpcdaemon.plugins.dump import DumpPlugin
from rpcdaemon.plugins.report import PassReport
from rpcdaemon.telemetry.metrics import Metrics


class _Plugin(FailoverPlugin):
    """Enough of a plugin for the service loop: check() returns the empty report."""

    name = "Stub"

    def __init__(self) -> None:  # no API, no executor: check is overridden
        from rpcdaemon.plugins.report import PassReport

        self.executor = _NoExecutor()  # type: ignore[assignment]
        self.api = None  # type: ignore[assignment]
        self.api_ok = True  # what the service's probe and STATUS= read
        self.last = PassReport()
        self.api_errors = ApiErrors()  # what the metrics read after each check
        self.bindings = {}

    def check(self, *, act: bool = True) -> PassReport:
        return PassReport()


class _NoExecutor:
    def close(self) -> None:
        pass


def stub_service(on_pass: Callable[[FailoverPlugin], None] | None, stop: threading.Event) -> Service:
    return make_service(plugins=[_Plugin()], dump=DumpPlugin("neutron", None, out=io.StringIO()), check_interval=0.01,
                        stop=stop, on_pass=on_pass)


def run_in_thread(svc: Service, timeout: float = 10.0) -> list[int]:
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(svc.run()), daemon=True)
    t.start()
    t.join(timeout)
    return done


def test_a_failing_check_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    stop = threading.Event()
    calls: list[int] = []

    def on_pass(_: FailoverPlugin) -> None:
        calls.append(1)
        if len(calls) % 2:  # every other pass fails: never 5 in a row
            raise RuntimeError("boom")
        if len(calls) >= 20:
            stop.set()

    assert run_in_thread(stub_service(on_pass, stop)) == [0]
    assert len(calls) >= 20
    assert sum(1 for r in caplog.records if r.levelno == logging.ERROR and r.exc_info) >= 9


def test_consecutive_check_failures_end_the_process_non_zero(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    stop = threading.Event()

    def on_pass(_: FailoverPlugin) -> None:
        raise RuntimeError("boom")

    assert run_in_thread(stub_service(on_pass, stop)) == [EXIT_FAILED]
    assert sum(1 for r in caplog.records if r.levelno == logging.ERROR) == MAX_STEP_FAILURES
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical
    assert "checks in a row failed" in critical[0]


def test_a_dead_metrics_server_is_restarted() -> None:
    metrics = Metrics()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.serve("127.0.0.1", port)
    try:
        assert metrics.server_problem() is None
        metrics._server.shutdown()  # type: ignore[union-attr]  # the serving thread ends, as if it had died
        metrics._thread.join(5)  # type: ignore[union-attr]
        assert metrics.server_problem() is None  # restarted on the same address
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert b"rpcdaemon_messages_dropped" in answer.read()
    finally:
        metrics.close()


def test_a_metrics_port_taken_after_preflight_is_one_error_and_exit_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        conf = tmp_path / "rpcdaemon.conf"
        conf.write_text(f"[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\nmetrics_port = {port}\n"
                        "metrics_address = 127.0.0.1\n")
        code = wiring.run(load_settings(conf), threading.Event(), foreground=True, out=io.StringIO())
    assert code == EXIT_START
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "cannot listen" in errors[0].getMessage()
    assert not errors[0].exc_info


def test_messages_dropped_by_the_broker_restart_the_listening_window(caplog: pytest.LogCaptureFixture) -> None:
    """Dropped messages may have been heartbeats: a silence across them proves nothing, so the window
    in which silence counts starts again (as after a bus outage), and a WARNING says so once a minute."""
    import time

    caplog.set_level(logging.INFO, logger="rpcdaemon")
    stop = threading.Event()
    svc = stub_service(None, stop)
    svc.start()
    try:
        wait_until(lambda: svc.listeners[0].link().connected, 10, "the memory bus to connect")
        svc.step()
        before = svc.bus_since()
        assert before is not None
        svc.step()
        assert svc.bus_since() == before  # nothing dropped: the window stands
        time.sleep(0.02)
        svc.listeners[0].counts.dropped += 3
        svc.step()
        after = svc.bus_since()
        assert after is not None
        assert after > before
        svc.listeners[0].counts.dropped += 2
        time.sleep(0.02)
        svc.step()
        later = svc.bus_since()
        assert later is not None
        assert later > after
        warned = [r for r in caplog.records if "dropped messages" in r.getMessage()]
        assert len(warned) == 1
        assert warned[0].levelno == logging.WARNING
    finally:
        svc.shutdown()
