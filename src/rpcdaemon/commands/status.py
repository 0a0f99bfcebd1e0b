"""``rpcdaemon status``: one table of the agents, with the brake, the pause and the instances.

Each L3/DHCP agent as Neutron lists it (host, type, mode, availability zone, admin state, Neutron's
``alive``), the routers or networks it hosts, and the active instance's verdict and why with the seconds
since it last heard the agent (its live view on the control channel). When no instance acts, it says so
and the verdict column is Neutron's. Under the table: the brake, the pause, and every instance of the
group from the roll call (active, standby, dry run; with its uptime), with a warning when there is no
standby or the instances run different versions. Formats as the ``openstack`` CLI's: ``-f table|json|yaml|value`` and
``-c COLUMN`` (repeatable); ``--watch`` redraws the table every ``--interval`` seconds (in place on a
terminal, changed rows only otherwise) until interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from dataclasses import dataclass, replace
from typing import Any, TextIO

from rpcdaemon.acting.api import NeutronError
from rpcdaemon.commands.context import AGENT_TYPES, CommandContext, CommandError
from rpcdaemon.commands.fleet import DaemonFacts, agents_of, bindings, read_daemon
from rpcdaemon.exits import EXIT_FAILED, EXIT_OK
from rpcdaemon.terminal.fleetview import FleetDisplay, FleetRow, FleetState, default_columns, fleet_table
from rpcdaemon.textsafe import escape_text, is_safe

COLUMNS = ("host", "type", "mode", "az", "admin", "alive", "verdict", "why", "heard", "hosted")
FORMATS = ("table", "json", "yaml", "value")
TABLE_NAMES = {"alive": "neutron"}  # the table's header for Neutron's own alive flag


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("-f", "--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("-c", "--column", action="append", dest="columns", metavar="COLUMN", choices=COLUMNS,
                        help=f"show only this column (repeatable): {', '.join(COLUMNS)}")
    parser.add_argument("--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default: 2)")
    parser.epilog = ("Verdicts come from the active rpcdaemon instance's live view (published on the broker "
                     "every 2s); without one they are Neutron's own. Exit status: 0 shown, 1 Neutron could not "
                     "be read, 2 usage. Note: -c before the command names the configuration file, after it a column.")


@dataclass(frozen=True)
class Status:
    state: FleetState
    records: list[dict[str, Any]]
    daemon: dict[str, Any]


def gather(ctx: CommandContext, previous: dict[tuple[str, str], int] | None = None, *, watch: bool = False) -> Status:
    facts = read_daemon(ctx)
    now = time.time()
    rows: list[FleetRow] = []
    records: list[dict[str, Any]] = []
    for name, pn in ctx.plugins().items():
        api = ctx.api(name)
        try:
            agents = agents_of(api, AGENT_TYPES[name])
            hosted = bindings(api, agents)
        except NeutronError as exc:
            raise CommandError(f"{name}: cannot read Neutron ({exc})") from None
        finally:
            close = getattr(api, "close", None)
            if close is not None:
                close()
        for a in agents:
            seen = facts.agent(name, a.id)
            verdict = seen.verdict if seen is not None else ("alive" if a.alive else "dead")
            why = seen.why if seen is not None else "Neutron's verdict (no daemon's view)"
            count = len(hosted.get(a.id, ()))
            key = (a.agent_type, a.id)
            change = count - previous[key] if previous is not None and key in previous else 0
            rows.append(FleetRow(host=a.host, agent_type=a.agent_type, verdict=verdict, why=why,
                                 heard_ago=seen.heard_ago if seen is not None else None,
                                 down_time=pn.agent_down_time, hosted=count, hosted_change=change,
                                 mode=a.agent_mode or "", az=a.availability_zone or "", admin_up=a.admin_state_up,
                                 neutron_alive=a.alive))
            records.append({"id": a.id, "host": a.host, "type": a.agent_type, "mode": a.agent_mode or "",
                            "az": a.availability_zone or "", "admin": "up" if a.admin_state_up else "down",
                            "alive": a.alive, "verdict": verdict, "why": why,
                            "heard": seen.heard_ago if seen is not None else None, "hosted": count})
    daemon = _daemon_record(facts, now)
    notes = [*_notes(facts, daemon, now), *_instances_note(facts, now, age=not watch)]
    return Status(FleetState(rows=tuple(rows), title=_title(facts, now, age=not watch), notes=tuple(notes)),
                  records, daemon)


def _title(facts: DaemonFacts, now: float, *, age: bool = True) -> str:
    """The first line; without the view's age when watching (a plain --watch prints it only when it changes)."""
    if facts.view is None:
        running = len(facts.instances)
        others = f"; {running} instance{'s' if running != 1 else ''} running, none active" if running else ""
        return f"rpcdaemon status: no instance is acting (verdicts are Neutron's){others}"
    dry = " [dry run]" if facts.view.dry_run else ""
    old = f" ({max(0.0, now - facts.view.at):.0f}s old)" if age else ""
    return f"rpcdaemon status: live view of the active instance {facts.view.instance}{dry}{old}"


def _daemon_record(facts: DaemonFacts, now: float) -> dict[str, Any]:
    state = facts.state
    pause = state.paused(now) if state is not None else None
    release = state.brake_released(now) if state is not None else None
    view = facts.view
    return {
        "active_instance": view.instance if view is not None else None,
        "version": view.version if view is not None else None,
        "view_age_s": round(max(0.0, now - view.at), 1) if view is not None else None,
        "problem": facts.problems,
        "paused": {"by": pause.by, "reason": pause.reason, "since": pause.at, "until": pause.until} if pause else None,
        "brake_released": {"by": release.by, "reason": release.reason, "since": release.at,
                           "until": release.until} if release else None,
        "brake": {p.name: p.brake for p in view.plugins} if view is not None else {},
        "pending_moves": {p.name: p.pending for p in view.plugins} if view is not None else {},
        "instances": [{"instance": i.instance, "role": i.role, "dry_run": i.dry_run, "version": i.version,
                       "up_s": round(max(0.0, now - i.since), 1), "plugins": list(i.plugins)}
                      for i in facts.instances],
    }


def _uptime(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.0f}m" if seconds >= 60 else f"{seconds:.0f}s"


def _instances_note(facts: DaemonFacts, now: float, *, age: bool) -> list[str]:
    """``instances: ctl-1:4242 active (up 3.1h), ctl-2:977 standby (up 3.1h)``; mixed versions said apart."""
    if facts.problem:
        return []
    if not facts.instances:
        return ["instances: none announced on the broker (no rpcdaemon runs for this group)"]
    parts = []
    for i in facts.instances:
        role = "dry run" if i.dry_run else i.role
        parts.append(f"{i.instance} {role}" + (f" (up {_uptime(max(0.0, now - i.since))})" if age else ""))
    notes = ["instances: " + ", ".join(parts)]
    versions = sorted({i.version for i in facts.instances})
    if len(versions) > 1:
        notes.append("instances run different versions: " + "; ".join(
            f"{v} ({', '.join(i.instance for i in facts.instances if i.version == v)})" for v in versions))
    if not any(i.role == "standby" for i in facts.instances) and facts.view is not None:
        notes.append("no standby instance: nothing takes over if the active one dies")
    if facts.unreadable:
        notes.append(f"roll call: {facts.unreadable} entr{'ies' if facts.unreadable > 1 else 'y'} not understood")
    return notes


def _notes(facts: DaemonFacts, daemon: dict[str, Any], now: float) -> list[str]:
    notes: list[str] = []
    if facts.problems:
        notes.append(f"control channel: {facts.problems}")
    state = facts.state
    pause = state.paused(now) if state is not None else None
    if pause is not None:
        notes.append(f"PAUSED {pause.describe(now)} (rpcdaemon resume ends it)")
    elif not facts.state_known:
        notes.append("pause: unknown (the control state could not be read)")
    else:
        notes.append("pause: not paused")
    release = state.brake_released(now) if state is not None else None
    if release is not None:
        notes.append(f"brake RELEASED {release.describe(now)}")
    if facts.view is not None:
        for p in facts.view.plugins:
            brake = f"ENGAGED: {p.brake}" if p.brake else "not engaged"
            pending = f"; {p.pending} moves planned" if p.pending else ""
            notes.append(f"{p.name}: brake {brake}{pending}")
    else:
        notes.append("brake: unknown (no instance is acting)")
    return notes


def run(args: argparse.Namespace, ctx: CommandContext, out: TextIO, name: str) -> int:
    if args.watch:
        return _watch(args, ctx, out)
    status = gather(ctx)
    columns = args.columns or list(COLUMNS)
    if args.format == "table":
        rows = status.state.rows
        shown = [TABLE_NAMES.get(c, c) for c in args.columns] if args.columns else list(default_columns(rows))
        if not args.columns and status.daemon["active_instance"] is None:
            shown = [c for c in shown if c != "heard"]  # only a daemon hears heartbeats
        _print_table(status.state, shown, out)
    elif args.format == "value":
        for r in status.records:
            print(" ".join(escape_text(_value(r[c])) for c in columns), file=out)  # one line per agent
    else:
        body = {"agents": [{c: r[c] for c in (["id", *columns] if not args.columns else columns)}
                           for r in status.records], "daemon": status.daemon}
        if args.format == "json":
            print(json.dumps(body, indent=2, sort_keys=False), file=out)
        else:
            print(_yaml(body), file=out)
    return EXIT_OK


def _yaml(body: dict[str, Any]) -> str:
    """``body`` as YAML, faithful and safe on a terminal: non-ASCII as escapes (as JSON has it), and a
    text ``textsafe`` would escape double-quoted, so that its line breaks are escaped too."""
    import yaml  # PyYAML: only for -f yaml

    class Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML comes without type hints
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if is_safe(value) else '"')

    Dumper.add_representer(str, text)
    return str(yaml.dump(body, Dumper=Dumper, sort_keys=False, allow_unicode=False)).rstrip()


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends --watch as Ctrl-C does: the terminal gets its cursor back


def _watch(args: argparse.Namespace, ctx: CommandContext, out: TextIO) -> int:
    previous: dict[tuple[str, str], int] | None = None
    code = EXIT_OK
    signal.signal(signal.SIGTERM, _interrupt)
    with FleetDisplay(out) as display:
        try:
            while True:
                try:
                    status = gather(ctx, previous, watch=True)
                except CommandError as exc:
                    display.say(str(exc), style="red")
                    code = EXIT_FAILED
                else:
                    previous = {(r["type"], r["id"]): r["hosted"] for r in status.records}
                    display.update(status.state)
                    code = EXIT_OK
                time.sleep(max(0.2, args.interval))
        except KeyboardInterrupt:
            pass
    return code


def _print_table(state: FleetState, columns: list[str], out: TextIO) -> None:
    from rich.console import Console

    console = Console(file=out, no_color=not _colour(out), highlight=False, soft_wrap=False, emoji=False,
                      width=200 if not _isatty(out) else None)
    if state.title:  # a line of its own: as the table's title it would wrap to the table's width
        console.print(escape_text(state.title), markup=False)
    console.print(fleet_table(replace(state, title=""), columns=columns))
    for note in state.notes:
        console.print(escape_text(note), markup=False)


def _isatty(out: TextIO) -> bool:
    return bool(getattr(out, "isatty", lambda: False)())


def _colour(out: TextIO) -> bool:
    return _isatty(out) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
