"""The fence command: make sure a dead node is really down before its routers and networks move.

Neutron keeps automatic L3 failover off by default because a node judged dead may still forward
traffic and answer ARP: a router moved off it would then exist twice. ``[L3Agent]``/``[DHCPAgent]
fence_command`` names a command (an IPMI power-off, an ssh that deletes the router namespaces, ...)
that the plugin pass (``plugins.fence_gate``) has this module run once per dead agent before its work
is re-hosted. This module only runs commands and says how each run went; what a failure means (hold
the agent's work, or move it anyway) is decided there.

A run: the command of the settings, split once with shlex when the file is loaded (never through a
shell; nothing is evaluated), with ``{host}``, ``{agent_id}`` and ``{agent_type}`` replaced in its
arguments (plain text replacement after the split: a value can neither add arguments nor reach
``str.format``), and the same values in ``RPCDAEMON_FENCE_HOST`` / ``_AGENT_ID`` / ``_AGENT_TYPE``.
It runs in a session (process group) of its own with stdin and stdout on /dev/null; the tail of its
stderr is kept in a temporary file (a chatty command cannot fill memory). One that outlives
``timeout`` gets SIGTERM and, a second later, SIGKILL, both to its whole process group, and counts as
TIMEOUT. Several dead agents are fenced in parallel (one thread each, at most 16), so a rack that
fails together costs one ``timeout``, not one per node; the caller's thread waits and is called back
every 0.2 s (the service's watchdog ping). The shared stop event kills running fences (a stopping
daemon moves nothing anyway, and its stop is bounded).

Only the active instance fences: ``may_run`` (the leadership lease, as ``acting.fence`` asks it
before every write) is asked right before each command starts. A host name that does not look like
one (it comes from the Neutron API, i.e. from the agent's own registration) is refused rather than
handed to the command, so that ``-rf`` or a newline never becomes an argument. In a dry run nothing
is run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import Enum
from typing import IO

from rpcdaemon.model import Agent
from rpcdaemon.redact import mask_text

log = logging.getLogger("rpcdaemon.fencing")

PLACEHOLDERS = ("{host}", "{agent_id}", "{agent_type}")
ENV_HOST = "RPCDAEMON_FENCE_HOST"
ENV_AGENT_ID = "RPCDAEMON_FENCE_AGENT_ID"
ENV_AGENT_TYPE = "RPCDAEMON_FENCE_AGENT_TYPE"
# Not handed to the command: systemd's channels are the daemon's own (a fence command must not send
# READY=1 or watchdog pings for it, nor take over its sockets).
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
_PLAIN_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL of a command that timed out
_POLL = 0.05  # how often a running command is looked at
_PROGRESS = 0.2  # how often the waiting caller is called back
_STDERR_TAIL = 4096  # bytes of stderr read back; the last line of them is shown
_LINE_SHOWN = 200  # characters of that line shown
MAX_PARALLEL = 16


class FenceResult(Enum):
    OK = "ok"  # exit status 0
    FAILED = "failed"  # non-zero exit, not found, not executable, refused host name, stopped
    TIMEOUT = "timeout"  # killed after fence_timeout
    NOT_ACTIVE = "not_active"  # not run: this instance is not the active one
    DRY_RUN = "dry_run"  # not run: --dry-run

    @property
    def ran(self) -> bool:
        """A command was started (the runs counted in ``rpcdaemon_fence_runs_total``)."""
        return self in (FenceResult.OK, FenceResult.FAILED, FenceResult.TIMEOUT)


@dataclass(frozen=True, slots=True)
class FencePolicy:
    # The command as split from the settings (``kinds.FENCE_COMMAND``); empty: no fencing.
    command: tuple[str, ...] = ()
    timeout: float = 60.0
    # On a failed fence: move the agent's work anyway (True) or hold it until a fence succeeds (False).
    move_when_fails: bool = False
    # A failed fence is tried again after this long, doubling each time up to ``retry_max`` (not every check).
    retry_after: float = 30.0
    retry_max: float = 300.0

    @property
    def program(self) -> str:
        """The command's name as logged: the last part of its path, never its arguments (they may hold
        a password)."""
        return os.path.basename(self.command[0]) if self.command else ""


@dataclass(frozen=True, slots=True)
class Finished:
    """What a runner reports about one command."""

    status: int | None  # exit status; None when it did not run to its end
    timed_out: bool = False
    stderr: str = ""  # the tail of what it wrote to stderr
    error: str = ""  # why it did not run or did not end: "not found", "stopped", ...


# argv, environment, timeout (s), cancel event -> how it went. ``run_command`` is the real one;
# a test may inject its own.
Runner = Callable[[Sequence[str], Mapping[str, str], float, threading.Event], Finished]


@dataclass(frozen=True, slots=True)
class FenceRun:
    """One fence of one agent: for the log, the metrics, the audit trail."""

    agent: Agent
    result: FenceResult
    program: str
    status: int | None
    seconds: float
    stderr_line: str  # the last line of its stderr, secrets masked, at most 200 characters
    detail: str  # "exit status 1", "timed out after 60s (process group killed)", "not found", ...

    @property
    def ok(self) -> bool:
        return self.result is FenceResult.OK


def command_for(template: Sequence[str], agent: Agent) -> tuple[list[str], dict[str, str]]:
    """The argv and the extra environment of the fence of ``agent``."""
    values = {"{host}": agent.host, "{agent_id}": agent.id, "{agent_type}": agent.agent_type}
    argv = [template[0]]
    for arg in template[1:]:
        for placeholder, value in values.items():
            arg = arg.replace(placeholder, value)
        argv.append(arg)
    env = {ENV_HOST: agent.host, ENV_AGENT_ID: agent.id, ENV_AGENT_TYPE: agent.agent_type}
    return argv, env


def unsafe_names(agent: Agent) -> str | None:
    """Why the agent's host or id must not be handed to a command, or None."""
    if not _PLAIN_HOST.fullmatch(agent.host):
        return f"host name {agent.host!r} is not a plain host name"
    if not _PLAIN_ID.fullmatch(agent.id):
        return f"agent id {agent.id!r} is not a plain id"
    return None


def run_command(argv: Sequence[str], env: Mapping[str, str], timeout: float, cancel: threading.Event) -> Finished:
    """Run ``argv`` (no shell) in a session of its own; kill its process group after ``timeout`` seconds
    or when ``cancel`` is set."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(  # a list, never a shell: the operator's own command
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=dict(env),
                start_new_session=True, close_fds=True,
            )
        except FileNotFoundError:
            return Finished(None, error="not found")
        except PermissionError:
            return Finished(None, error="not executable (permission denied)")
        except OSError as exc:
            return Finished(None, error=exc.strerror or type(exc).__name__)
        end = time.monotonic() + timeout
        why = ""
        while True:
            try:
                status = proc.wait(_POLL)
                break
            except subprocess.TimeoutExpired:
                pass
            if cancel.is_set():
                why = "stopped"
            elif time.monotonic() >= end:
                why = "timeout"
            if why:
                _kill_group(proc)
                return Finished(None, timed_out=why == "timeout", stderr=_tail(err), error=why)
        return Finished(status, stderr=_tail(err))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's process group, SIGKILL a second later (or at once if it is gone:
    children it left in its group go too)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(_KILL_GRACE if sig is signal.SIGTERM else None)
        except subprocess.TimeoutExpired:
            continue


def _tail(err: IO[bytes]) -> str:
    size = err.seek(0, os.SEEK_END)
    err.seek(max(0, size - _STDERR_TAIL))
    return err.read().decode("utf-8", "replace")


def last_line(text: str) -> str:
    """The last non-blank line of ``text``, secrets masked, cut to 200 characters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = mask_text(lines[-1])
    return line if len(line) <= _LINE_SHOWN else f"{line[:_LINE_SHOWN]}..."


class Fencer:
    """Runs the fence command for dead agents; built by ``plugin_factory.build_plugin`` when a command is set."""

    def __init__(
        self,
        policy: FencePolicy,
        *,
        may_run: Callable[[], bool],
        stop: threading.Event,
        runner: Runner = run_command,
        dry_run: bool = False,
        environ: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if not policy.command:
            raise ValueError("a Fencer needs a command")
        self.policy = policy
        self._may_run = may_run
        self._stop = stop
        self._runner = runner
        self._dry_run = dry_run
        base = dict(os.environ if environ is None else environ)
        self._environ = {k: v for k, v in base.items() if k not in _PRIVATE_ENV}
        self._log = logger or log

    def fence(self, agents: Sequence[Agent], progress: Callable[[], None] | None = None) -> list[FenceRun]:
        """Fence every agent (in parallel), in the order given; returns when all have ended."""
        if not agents:
            return []
        # Even one runs in a worker: this thread keeps calling ``progress`` while it waits.
        with ThreadPoolExecutor(max_workers=min(len(agents), MAX_PARALLEL),
                                thread_name_prefix="rpcdaemon-fence") as pool:
            futures = [pool.submit(self._fence_one, agent) for agent in agents]
            pending: set[Future[FenceRun]] = set(futures)
            while pending:
                _, pending = wait(pending, timeout=_PROGRESS)
                if progress is not None:
                    progress()
            return [f.result() for f in futures]  # _fence_one never raises

    def _fence_one(self, agent: Agent) -> FenceRun:
        program = self.policy.program
        started = time.monotonic()

        def run(result: FenceResult, detail: str, status: int | None = None, stderr: str = "") -> FenceRun:
            return FenceRun(agent, result, program, status, time.monotonic() - started, last_line(stderr), detail)

        if self._dry_run:
            return run(FenceResult.DRY_RUN, "dry run: not run")
        unsafe = unsafe_names(agent)
        if unsafe is not None:
            return run(FenceResult.FAILED, f"refused: {unsafe}")
        if not self._may_run():
            return run(FenceResult.NOT_ACTIVE, "not run: not the active instance")
        if self._stop.is_set():
            return run(FenceResult.FAILED, "not run: stopping")
        argv, extra = command_for(self.policy.command, agent)
        try:
            done = self._runner(argv, {**self._environ, **extra}, self.policy.timeout, self._stop)
        except Exception as exc:  # an injected runner's bug: said, never a dead thread
            self._log.exception("fence of %s: the runner failed", agent.describe())
            return run(FenceResult.FAILED, f"runner failed: {type(exc).__name__}")
        if done.timed_out:
            return run(FenceResult.TIMEOUT, f"timed out after {self.policy.timeout:g}s (process group killed)",
                       stderr=done.stderr)
        if done.error:
            return run(FenceResult.FAILED, done.error, stderr=done.stderr)
        if done.status == 0:
            return run(FenceResult.OK, "exit status 0", 0, done.stderr)
        if done.status is not None and done.status < 0:
            return run(FenceResult.FAILED, f"killed by signal {-done.status}", done.status, done.stderr)
        return run(FenceResult.FAILED, f"exit status {done.status}", done.status, done.stderr)
