"""The processes a test starts: the one environment clean-up (``clean_env``), a command run to its end
(``run``), and ``DaemonProcess``, a daemon started, read and stopped.

Every process a test starts gets ``clean_env()`` unless the test builds its own from it: the daemon and the
operator commands run as operators run them, not with pytest's warning filters, and a CI runner under
systemd must not make them (or a test broker, or neutron-server) talk to its notify socket, journal or
watchdog. ``DaemonProcess`` is what the component tests' and the end-to-end tests' ``RpcDaemon`` are
built on (``tests/component/daemon_proc.py``, ``tests/e2e/rpcd.py``); the other component tests use it
as it is.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Self, TypeVar

from tests.kit import metrics
from tests.kit.metrics import Samples
from tests.kit.poll import wait_until

T = TypeVar("T")

RPCDAEMON = Path(sys.executable).parent / "rpcdaemon"  # the console script installed next to the test interpreter

# Never handed down: pytest's warning filters, and what a systemd unit gives its children (the notify
# socket, the journal's stream, the watchdog). A test that wants one sets it again (``clean_env(NAME=...)``).
DROPPED = ("PYTHONWARNINGS", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID")


def clean_env(*, drop: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """This process's environment without ``DROPPED`` (and ``drop``), with ``extra`` set."""
    unwanted = {*DROPPED, *drop}
    env = {key: value for key, value in os.environ.items() if key not in unwanted}
    env.update(extra)
    return env


def run(argv: Sequence[str | Path], *, timeout: float = 60.0, env: Mapping[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to its end (stdin empty, ``clean_env()`` unless ``env``): its status and output."""
    return subprocess.run([str(arg) for arg in argv], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=cwd, env=dict(env) if env is not None else clean_env())


def metrics_port_in(config_text: str) -> int:
    """``[Daemon] metrics_port`` of a config (0: none)."""
    found = re.search(r"^metrics_port\s*=\s*(\d+)", config_text, re.MULTILINE)
    return int(found.group(1)) if found else 0


class DaemonError(AssertionError):
    """A daemon did not do what a test waited for (it exited, it ignored SIGTERM); the message carries its
    log tail."""


class DaemonProcess:
    """One long-running process of a test's own, ``argv`` in ``cwd``: its stderr (the log) goes to
    ``log_path``, its stdout to ``out_path`` or nowhere. ``start()`` may be called again after it ended
    (``pids`` lists every run); ``cleanup()`` kills whatever still runs, adopted (detached) pids included.
    With a ``metrics_port`` its metrics are read too: ``metrics()``, ``pass_stamps()``, ``wait_passes()``."""

    def __init__(self, argv: Sequence[str | Path], *, name: str, log_path: Path, cwd: Path,
                 out_path: Path | None = None, metrics_port: int = 0) -> None:
        self.argv = [str(arg) for arg in argv]
        self.name = name
        self.log_path = log_path
        self.out_path = out_path
        self.cwd = cwd
        self.metrics_port = metrics_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self._runs: list[subprocess.Popen[bytes]] = []
        self._adopted: list[int] = []

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, *, env: Mapping[str, str] | None = None, open_files: int | None = None) -> Self:
        """``env``: the whole environment (default ``clean_env()``); ``open_files``: the process's
        RLIMIT_NOFILE, soft and hard (so that it cannot raise it)."""

        def limit() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        with contextlib.ExitStack() as files:
            err = files.enter_context(self.log_path.open("ab"))
            out = files.enter_context(self.out_path.open("ab")) if self.out_path is not None else subprocess.DEVNULL
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.cwd,
                                         env=dict(env) if env is not None else clean_env(),
                                         preexec_fn=limit if open_files is not None else None)
        self._runs.append(self.proc)
        self.pids.append(self.proc.pid)
        return self

    def adopt(self, pid: int) -> None:
        """A process it forked off (a detached daemon): killed by ``cleanup()`` too."""
        self.pids.append(pid)
        self._adopted.append(pid)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` (unless it already ended) and return its exit status; if it has not ended after
        ``timeout`` seconds, SIGKILL it and fail."""
        assert self.proc is not None, f"{self.name} was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise DaemonError(f"{self.name} ignored {signal.Signals(sig).name} for {timeout:.0f} s"
                                  f"{self.hint()}") from None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: it gets no chance to finish anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self) -> None:
        """Kill every run still going and every adopted pid."""
        for proc in self._runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for pid in self._adopted:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def assert_running(self) -> None:
        """Fail with the exit status and the log tail if it was started and has ended."""
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonError(f"{self.name} exited with status {self.proc.returncode}{self.hint()}")

    # -- the log ------------------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def out(self) -> str:
        if self.out_path is None:
            return ""
        try:
            return self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def hint(self) -> str:
        """Appended to failure messages: the end of the log without the per-request DEBUG lines,
        then its very last lines whatever their level."""
        lines = self.log().splitlines()
        told = [line for line in lines if " DEBUG " not in line][-40:]
        return (f"\n--- {self.name} log ({self.log_path}), last lines above DEBUG ---\n" + "\n".join(told)
                + f"\n--- {self.name} log, last lines ---\n" + "\n".join(lines[-8:]))

    def tracebacks(self) -> list[str]:
        return [line for line in self.log().splitlines() if "Traceback" in line]

    def _in_log(self, find: Callable[[str], T | None]) -> T | None:
        """``find(log)``; once it has ended without it being found, fail at once (its log is complete)."""
        found = find(self.log())
        if found or self.proc is None or self.proc.poll() is None:
            return found
        found = find(self.log())  # it may have written the line just before it ended
        if not found:
            self.assert_running()
        return found

    def wait_text(self, text: str, timeout: float = 15.0, *, after: int = 0) -> None:
        """Until ``text`` is in the log (from character ``after`` on)."""
        wait_until(lambda: self._in_log(lambda log: text in log[after:]), timeout,
                   f"{text!r} in {self.name}'s log", self.hint)

    def wait_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """Until a log line matches the regex ``pattern``; returns the first match."""
        compiled = re.compile(pattern)
        return wait_until(lambda: self._in_log(compiled.search), timeout, f"{pattern!r} in {self.name}'s log",
                          self.hint, interval=0.1)

    # -- the metrics --------------------------------------------------------------------------

    def metrics(self) -> Samples:
        """Every sample served on its metrics port: name -> [(labels, value)]."""
        assert self.metrics_port, f"{self.name} serves no metrics: its config has no [Daemon] metrics_port"
        return metrics.scrape(self.metrics_port)

    def metrics_if_answering(self) -> Samples | None:
        """As ``metrics()``, or None when it is not running or does not answer (frozen)."""
        assert self.metrics_port, f"{self.name} serves no metrics: its config has no [Daemon] metrics_port"
        return metrics.scrape_if_answering(self.metrics_port) if self.running else None

    def pass_stamps(self) -> dict[str, float]:
        """Each failover plugin's ``rpcdaemon_last_pass_timestamp_seconds`` (set by every good check pass)."""
        return metrics.pass_stamps(self.metrics())

    def wait_passes(self, count: int = 3, timeout: float = 120.0, plugin: str | None = None) -> None:
        """Until every failover plugin (or only ``plugin``) has completed ``count`` more good check passes.

        What a test waits for before it asserts that nothing happened: however slow the machine is, the daemon
        has looked ``count`` times. Each pass stamps a new time; a poll that misses one only waits longer.
        """
        self.assert_running()
        before = self.pass_stamps()
        seen: dict[str, set[float]] = {}

        def advanced() -> bool:
            self.assert_running()
            now = self.pass_stamps()
            for name, stamp in now.items():
                seen.setdefault(name, set()).add(stamp)
            names = [plugin] if plugin is not None else list(now)
            return bool(names) and all(len(seen.get(n, set()) - {before.get(n)}) >= count for n in names)

        wait_until(advanced, timeout, f"{count} check passes of {self.name}", self.hint, interval=0.05)
