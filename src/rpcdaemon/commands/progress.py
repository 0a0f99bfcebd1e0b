"""Running a command's moves, and showing them: what ``evacuate`` and ``rebalance`` share.

``sides_for`` picks the plugins a command works on (``--l3``, ``--dhcp``; default: every failover plugin
configured) as ``Side`` values: the plugin's Neutron adapter and its executor settings
(``wiring.plugin_config``: ``workers``, ``retry_attempts``), ``skip_ha_routers``, ``agents_per_network``.
``Progress`` is the display: a rich progress bar on a terminal (with a line above it for each move
that fails), plain lines otherwise, one per finished action (``[12/100] move router R from a (id) to b
(id): done in 0.08s``), so a log or a pipe reads well. ``run_moves`` runs a batch through the one
executor (``acting.executor``: bounded parallelism, retries, read-back) with a ``TargetCheck`` as its
``still_valid``: a target must still be alive and admin-up by Neutron, read at most every
``TARGET_REFRESH`` seconds. The executor's own per-action log lines are not shown (the display says it).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from rpcdaemon.acting.api import NeutronAPI, NeutronError
from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.acting.resources import ResourceKind, hosted_by
from rpcdaemon.commands.context import AGENT_TYPES, CommandContext, CommandError, print_line, who
from rpcdaemon.commands.fleet import bindings, resource_bindings
from rpcdaemon.daemon.wiring import plugin_config
from rpcdaemon.exits import EXIT_USAGE
from rpcdaemon.model import Action, Agent, AuditRecord, Outcome, OutcomeStatus, no_audit
from rpcdaemon.textsafe import escape_text

LABELS = {"L3Agent": "L3 agent", "DHCPAgent": "DHCP agent"}


@dataclass(frozen=True)
class Side:
    """One plugin's part of the job: its Neutron access and its settings."""

    plugin: str  # L3Agent or DHCPAgent
    api: NeutronAPI
    policy: ExecutorPolicy
    include_ha: bool = False
    agents_per_network: int | None = None
    # The audit trail ([Daemon] audit_log, when this user may write it): the command's moves go there too.
    record: AuditRecord = no_audit
    command: str = ""  # evacuate, rebalance
    by: str = ""  # who runs it (context.who)

    @property
    def agent_type(self) -> str:
        return AGENT_TYPES[self.plugin]

    @property
    def resource(self) -> ResourceKind:
        return hosted_by(self.agent_type)

    @property
    def things(self) -> str:
        return self.resource.plural


def sides_for(ctx: CommandContext, args: argparse.Namespace, dry_run: bool, *, record: AuditRecord = no_audit,
              command: str = "") -> list[Side]:
    """The plugins asked for (default: every failover plugin the configuration runs)."""
    plugins = ctx.plugins()
    asked = [n for n, flag in (("L3Agent", args.l3), ("DHCPAgent", args.dhcp)) if flag]
    for name in asked:
        if name not in plugins:
            raise CommandError(f"--{'l3' if name == 'L3Agent' else 'dhcp'}: the configuration does not run "
                               f"{name} ([Daemon] plugins)", EXIT_USAGE)
    out = []
    for name in asked or list(plugins):
        cfg = plugin_config(ctx.settings.section(name), plugins[name], ctx.down_time(), dry_run)
        out.append(Side(name, ctx.api(name), cfg.executor, include_ha=getattr(args, "ha", False)
                        or not cfg.skip_ha_routers, agents_per_network=cfg.agents_per_network, record=record,
                        command=command, by=who()))
    if not out:
        raise CommandError("the configuration runs neither L3Agent nor DHCPAgent ([Daemon] plugins)", EXIT_USAGE)
    return out


def read_placement(side: Side, agents: Sequence[Agent]) -> tuple[dict[str, Any], dict[str, frozenset[str]]]:
    """The side's routers (or networks) by id, and resource id -> ids of the agents of its type hosting it
    (one call per agent of the type, ``fleet.READ_WORKERS`` at a time, as ``status`` reads them). Raises
    ``NeutronError``."""
    api = side.api
    resources: dict[str, Any] = {r.id: r for r in side.resource.listed(api)}
    per_agent = bindings(api, (a for a in agents if a.agent_type == side.agent_type))
    return resources, resource_bindings(per_agent)


TARGET_REFRESH = 5.0  # seconds: a target's liveness is at most this old when a move is sent to it

_quiet = logging.getLogger("rpcdaemon.commands.moves")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def on_terminal(out: TextIO) -> bool:
    """A progress bar only on a terminal that can draw one."""
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"


class Progress:
    """Counts finished actions (``outcome`` may be called from any thread) and shows them."""

    def __init__(self, out: TextIO, total: int, what: str, *, terminal: bool | None = None,
                 side: Side | None = None) -> None:
        self.side = side  # its audit trail gets one action line per outcome
        self.out = out
        self.total = total
        self.what = what
        self.terminal = on_terminal(out) if terminal is None else terminal
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str], Outcome] = {}
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._console: Console | None = None

    def __enter__(self) -> Progress:
        if self.terminal and self.total:
            self._console = Console(file=self.out, force_terminal=True, emoji=False)
            self._bar = RichProgress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[failed]}"), TimeElapsedColumn(),
                                     console=self._console)
            self._task = self._bar.add_task(escape_text(self.what), total=self.total, failed="")
            self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(1 for o in self._seen.values() if o.status is OutcomeStatus.FAILED)

    def outcome(self, o: Outcome) -> None:
        """An action ended (or its read-back turned it into a failure: then it is not counted twice)."""
        a = o.action
        key = (a.kind.value, a.resource_id, (a.target or a.source or _NOBODY).id)
        with self._lock:
            first = key not in self._seen
            self._seen[key] = o
            done = len(self._seen)
            failed = sum(1 for x in self._seen.values() if x.status is OutcomeStatus.FAILED)
        if self.side is not None:
            self.side.record("action", plugin=self.side.plugin, command=self.side.command, **o.fields())
        text = f"{a.describe()}: {o.status.value} in {o.seconds:.2f}s" + (f" ({o.detail})" if o.detail else "")
        if self._bar is not None and self._task is not None:
            if o.status is OutcomeStatus.FAILED:
                self._bar.console.print(f"[red]failed[/red]: {_escape(text)}", highlight=False)
            self._bar.update(self._task, advance=1 if first else 0, failed=f"{failed} failed" if failed else "")
        else:
            self.say(f"[{done}/{self.total}] {text}")

    def say(self, text: str) -> None:
        """A line of text (above the bar while it is shown)."""
        if self._bar is not None:
            self._bar.console.print(_escape(text), highlight=False)
        else:
            print_line(self.out, text)
            self.out.flush()


_NOBODY = Agent("", "", "")


def _escape(text: str) -> str:
    """``text`` for rich: escaped (``textsafe``), then its markup too (a host named ``[link=...]``)."""
    return escape(escape_text(text))


class TargetCheck:
    """``still_valid`` for commands: the target must be alive and admin-up by Neutron, as read at most
    ``refresh`` seconds ago (one ``list_agents`` for all the workers)."""

    def __init__(self, api: NeutronAPI, *, refresh: float = TARGET_REFRESH,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._refresh = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._agents: dict[str, Agent] = {}
        self._read_at: float | None = None

    def prime(self, agents: Sequence[Agent]) -> None:
        """Start from a listing just made."""
        with self._lock:
            self._agents = {a.id: a for a in agents}
            self._read_at = self._clock()

    def _current(self) -> dict[str, Agent]:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._refresh:
                try:
                    self._agents = {a.id: a for a in self._api.list_agents()}
                    self._read_at = now
                except NeutronError:
                    pass  # keep the last listing: the move's own call meets the outage and is retried
            return self._agents

    def __call__(self, action: Action) -> str | None:
        if action.target is None:
            return None
        agent = self._current().get(action.target.id)
        if agent is None:
            return f"target {action.target.describe()} is no longer listed by Neutron"
        if not agent.alive:
            return f"Neutron no longer says target {action.target.describe()} is alive"
        if not agent.admin_state_up:
            return f"target {action.target.describe()} is admin-down now"
        return None


def run_moves(api: NeutronAPI, policy: ExecutorPolicy, actions: Sequence[Action], progress: Progress,
              check: TargetCheck, stop: threading.Event | None = None) -> list[Outcome]:
    """One batch through the executor (verified per its policy); each outcome reaches ``progress``."""
    if not actions:
        return []
    executor = Executor(api, policy, stop=stop or threading.Event(), logger=_quiet, on_outcome=progress.outcome)
    try:
        return executor.run(actions, check)
    finally:
        executor.close()


def verb_counts(outcomes: Sequence[Outcome]) -> str:
    """``"98 done, 2 failed"``."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status.value] = counts.get(o.status.value, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to do"
