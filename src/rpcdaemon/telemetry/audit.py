"""The audit trail (``[Daemon] audit_log``): one JSON line per decision and action, for people who ask later.

``wiring.build_service`` opens an ``AuditLog`` when ``audit_log`` is set and hands it to the ``Service``,
which writes the daemon's ``start`` and ``stop``, each ``leadership`` role change, and, through a
``PassAuditor``, what every check pass decides and does: ``verdict`` changes (per agent, from -> to,
why), the mass-failure ``brake`` engaging and releasing (both from the pass's ``PassReport``, handed over
once the plan is made and again after the pass), each ``action`` as it ends (kind, resource, from and to
host+id, outcome, duration: the executor's ``on_outcome``) and each followed move's ``ready`` (time to
ready, or given up). The core never imports this module: it only calls what the service hands it, and
what only a plugin knows (a ``fence`` run) it reports through ``FailoverPlugin.audit``, a
``model.AuditRecord`` the service sets to ``AuditLog.record``.

Every line has ``ts`` (RFC 3339, UTC, milliseconds), ``event`` and ``instance`` (``host:pid``), then the
event's fields; ``audit_schema.json`` (package data) describes every event. A line is built whole and
written with one ``os.write`` on a file opened ``O_APPEND``, under a lock: lines of concurrent callers
never interleave, and nothing is buffered in the process. Field values go through
``redact.redact_mapping`` (secret-named keys read ``***``, URL passwords masked). The file is reopened
when it was moved away (looked at before each line, as ``logging.handlers.WatchedFileHandler`` does) and
on SIGHUP (``logs.reopen_log_files`` calls ``reopen``), so logrotate's rename-then-HUP needs no copytruncate.
``record`` never raises: a failed write is one ERROR in the main log (again only after a write succeeded).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.model import Outcome
from rpcdaemon.plugins.report import PassReport
from rpcdaemon.redact import redact_mapping
from rpcdaemon.telemetry.logs import reopen_on_hup, utc_timestamp

log = logging.getLogger("rpcdaemon.audit")

SCHEMA_FILE = Path(__file__).parent.parent / "audit_schema.json"  # installed as rpcdaemon/audit_schema.json
_RESERVED = ("ts", "event", "instance")
_FILE_MODE = 0o640


def instance_name() -> str:
    """This process among the instances: ``host:pid`` (a host name has no colon)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    return str(value)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def render_line(event: str, fields: Mapping[str, Any], *, instance: str, at: float) -> bytes:
    """One audit line: ``{"ts": ..., "event": ..., "instance": ..., <fields>}`` and a newline, ASCII only
    (so that no character of a value, U+2028 included, can break the line)."""
    body = {k: v for k, v in fields.items() if k not in _RESERVED}
    line = {"ts": utc_timestamp(at), "event": event, "instance": instance, **_finite(redact_mapping(body))}
    return (json.dumps(line, ensure_ascii=True, separators=(", ", ": "), default=_jsonable) + "\n").encode("ascii")


class AuditLog:
    """An append-only JSON-lines file; ``record`` from any thread."""

    def __init__(self, path: Path, *, instance: str | None = None, wall: Callable[[], float] = time.time) -> None:
        """Open (create) ``path`` for appending; raises OSError when it cannot be written."""
        self.path = path
        self.instance = instance or instance_name()
        self._wall = wall
        self._lock = threading.Lock()
        self._fd: int | None = self._open()
        self._failing = False
        self.lines = 0  # written so far (tests, and a hint in the stop line)
        self._undo_hup = reopen_on_hup(self.reopen)

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)

    def record(self, event: str, /, **fields: Any) -> None:
        """Write one line for ``event`` with ``fields`` (see ``model.AuditRecord``). Never raises."""
        try:
            data = render_line(event, fields, instance=self.instance, at=self._wall())
        except Exception:  # a value json cannot take is a bug here, not a reason to stop the caller
            log.exception("audit log: cannot render a %r line", event)
            return
        with self._lock:
            if self._fd is None:
                return  # closed
            try:
                self._reopen_if_moved()
                view = memoryview(data)
                while view:  # one write in practice; a short write (disk full) is finished, not dropped
                    view = view[os.write(self._fd, view):]
                self.lines += 1
                if self._failing:
                    log.info("audit log %s: writing again", self.path)
                self._failing = False
            except OSError as exc:
                if not self._failing:
                    log.error("audit log %s: cannot write (%s); audit lines are lost until it can", self.path,
                              exc.strerror or exc)
                self._failing = True

    def _reopen_if_moved(self) -> None:
        """Under the lock: the path no longer names our file (logrotate renamed it): open it afresh."""
        assert self._fd is not None
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            now = None
        mine = os.fstat(self._fd)
        if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            self._swap()

    def _swap(self) -> None:
        fd = self._open()  # first: if this fails, the old file keeps the lines
        old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)

    def reopen(self) -> None:
        """SIGHUP (``logs.reopen_log_files``, in the main thread): reopen the path. Logs one line."""
        with self._lock:
            if self._fd is None:
                return
            try:
                self._swap()
            except OSError as exc:
                log.error("audit log %s: cannot reopen (%s); still writing to the file it had", self.path,
                          exc.strerror or exc)
                return
        log.info("SIGHUP: audit log %s reopened", self.path)

    def close(self) -> None:
        self._undo_hup()
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class PassAuditor:
    """Turns what each plugin decides and does into audit events, as it happens.

    The service wires it: ``decided`` is the plugin's ``on_decided`` (the verdicts and the plan, before any
    fence or move), ``outcome`` the executor's ``on_outcome`` (each action as it ends, from the worker
    thread: a pass cut short by a crash still leaves the lines of the actions that ended), and ``note``
    runs after every pass (the verdicts of passes that planned nothing, and readiness). It remembers, per
    plugin, each agent's last verdict and whether the brake held, so that only changes are written; a
    pass that judged nothing (its reconcile failed) says nothing about either."""

    def __init__(self, record: Callable[..., None]) -> None:
        self._record = record
        self._lock = threading.Lock()  # decided (loop thread) and outcome (workers) may overlap
        self._verdicts: dict[str, dict[str, tuple[str, str, str]]] = {}  # plugin -> agent -> (verdict, host, type)
        self._braked_since: dict[str, float] = {}

    def note(self, plugin: str, report: PassReport, *, follows: str = "router") -> None:
        """After a pass of ``plugin``; ``follows`` is what its readiness follows (router, network)."""
        self.decided(plugin, report)
        for r in report.readiness:
            self._record("ready", plugin=plugin, kind=follows, resource_id=r.resource_id, to_host=r.target.host,
                         to_id=r.target.id, ready=r.ready, seconds=round(r.seconds, 3))

    def decided(self, plugin: str, report: PassReport) -> None:
        """The verdicts and the brake of a pass (written once per change, however often it is called)."""
        if not report.judged:
            return
        with self._lock:
            self._note_verdicts(plugin, report.judged)
            self._note_brake(plugin, report)

    def outcome(self, plugin: str, o: Outcome) -> None:
        """One action ended (or a read-back turned it into a failure: a second line for it)."""
        self._record("action", plugin=plugin, **o.fields())

    def _note_verdicts(self, plugin: str, judged: Mapping[str, Judged]) -> None:
        before = self._verdicts.setdefault(plugin, {})
        for aid, j in judged.items():
            verdict = j.verdict.value
            was = before.get(aid)
            if was is None or was[0] != verdict:
                self._record("verdict", plugin=plugin, agent_id=aid, host=j.agent.host, agent_type=j.agent.agent_type,
                             **{"from": was[0] if was else None, "to": verdict}, why=j.why)
            before[aid] = (verdict, j.agent.host, j.agent.agent_type)
        for aid in [aid for aid in before if aid not in judged]:
            verdict, host, agent_type = before.pop(aid)
            self._record("verdict", plugin=plugin, agent_id=aid, host=host, agent_type=agent_type,
                         **{"from": verdict, "to": None}, why="no longer listed by Neutron")

    def _note_brake(self, plugin: str, report: PassReport) -> None:
        since = self._braked_since.get(plugin)
        plan = report.plan
        if plan.braked and since is None:
            self._braked_since[plugin] = report.at
            dead = sum(1 for j in report.judged.values() if j.verdict is Verdict.DEAD)
            self._record("brake", plugin=plugin, state="engaged", why="; ".join(plan.held), dead=dead,
                         agents=len(report.judged))
        elif not plan.braked and since is not None:
            del self._braked_since[plugin]
            self._record("brake", plugin=plugin, state="released", held_for=round(max(0.0, report.at - since), 3))
