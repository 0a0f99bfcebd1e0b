"""The fleet as a table on the terminal: redrawn in place on a terminal, changed rows as plain lines elsewhere.

Shared by ``rpcdaemon demo`` and ``rpcdaemon status --watch``. It knows plain values only (``FleetRow``:
strings and numbers, no plugin, planner or adapter object), so that any caller can fill it from what it has:
the demo from its plugins' last pass, ``status`` from the daemon's live view or from the Neutron API.

``FleetDisplay`` is the one writer on its output: every line (``say``), every table frame (``update``) and
every progress bar (``moves``) goes through one lock, so lines from several threads never interleave. On a
terminal (and with ``NO_COLOR`` unset and ``TERM`` not ``dumb``) it keeps a ``rich.live.Live`` region at the
bottom that is redrawn in place, the lines scrolling above it; otherwise it prints plain text: the rows whose
state changed since the previous frame, one line each, and a line per move group when it completes.
Every text shown (cells, title, notes, lines, move labels) goes through ``textsafe.escape_text`` first.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TextIO

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rpcdaemon.textsafe import escape_text

VERDICT_STYLES = {"alive": "green", "warming": "cyan", "suspect": "yellow", "dead": "bold red", "unknown": "dim"}
# Every column fleet_table can show, in display order (``columns=`` picks among these).
COLUMNS = ("host", "type", "mode", "az", "admin", "neutron", "verdict", "heard", "hosted", "why")
_HEADERS = {"host": "host", "type": "agent", "mode": "mode", "az": "AZ", "admin": "admin", "neutron": "Neutron",
            "verdict": "verdict", "why": "why", "heard": "heard", "hosted": "hosting"}
_PLAIN_WIDTHS = {"host": 12, "type": 10, "mode": 8, "az": 8, "admin": 10, "neutron": 13, "verdict": 8,
                 "why": 34, "heard": 11, "hosted": 17}
_AGE_BAR = 8  # cells of the heartbeat-age bar
@dataclass(frozen=True)
class FleetRow:
    host: str
    agent_type: str  # "L3 agent" / "DHCP agent" (rpcdaemon.model L3_AGENT, DHCP_AGENT)
    verdict: str  # alive / warming / suspect / dead / unknown (deciding.liveness.Verdict values)
    why: str = ""
    heard_ago: float | None = None  # seconds since the last heartbeat
    down_time: float | None = None  # agent_down_time: the age is shown against it
    hosted: int | None = None  # routers (L3) or networks (DHCP) on it
    hosted_change: int = 0  # change since the caller's previous frame (+3 / -12), shown next to hosted
    mode: str = ""
    az: str = ""
    admin_up: bool = True
    neutron_alive: bool | None = None  # Neutron's own ``alive`` flag (None: not known)

    @property
    def key(self) -> tuple[str, str]:
        return (self.host, self.agent_type)

    def state(self) -> tuple[object, ...]:
        """What makes a row worth a plain line again: not the heartbeat age (it changes every frame)
        nor ``why`` (it carries the age too)."""
        return (self.verdict, self.hosted, self.admin_up, self.neutron_alive, self.mode, self.az)


@dataclass(frozen=True)
class FleetState:
    rows: tuple[FleetRow, ...]
    title: str = ""
    notes: tuple[str, ...] = ()  # lines under the table: brake, pause, active instance, ...


def default_columns(rows: Iterable[FleetRow]) -> tuple[str, ...]:
    """Every column that tells something: mode and AZ when some row has one, Neutron's flag when known,
    admin when some agent is down."""
    rows = list(rows)
    skip = set()
    if not any(r.mode for r in rows):
        skip.add("mode")
    if not any(r.az for r in rows):
        skip.add("az")
    if all(r.neutron_alive is None for r in rows):
        skip.add("neutron")
    if all(r.admin_up for r in rows):
        skip.add("admin")
    return tuple(c for c in COLUMNS if c not in skip)


def check_columns(columns: Sequence[str]) -> tuple[str, ...]:
    """The columns asked for, or ValueError naming the first unknown one and the valid names."""
    for c in columns:
        if c not in COLUMNS:
            raise ValueError(f"unknown column {c!r}; choose from {', '.join(COLUMNS)}")
    return tuple(columns)


def _hosted_word(row: FleetRow) -> str:
    return "routers" if row.agent_type.startswith("L3") else "networks" if row.agent_type.startswith("DHCP") else ""


def _escaped(row: FleetRow) -> FleetRow:
    """``row`` with its texts escaped (``textsafe.escape_text``): host names, reasons and the live view's
    fields come off the bus, where anyone may publish, or from Neutron, which takes a host name from a
    heartbeat. Done before the cells are built, so that no style span lands on the wrong characters."""
    return replace(row, host=escape_text(row.host), agent_type=escape_text(row.agent_type),
                   verdict=escape_text(row.verdict), why=escape_text(row.why), mode=escape_text(row.mode),
                   az=escape_text(row.az))


def _cell(row: FleetRow, column: str) -> Text | RenderableType:
    if column == "host":
        return Text(row.host, style="bold")
    if column == "type":
        return Text(row.agent_type)
    if column == "mode":
        return Text(row.mode)
    if column == "az":
        return Text(row.az)
    if column == "admin":
        return Text("up") if row.admin_up else Text("down", style="red")
    if column == "neutron":
        if row.neutron_alive is None:
            return Text("?", style="dim")
        return Text("alive", style="green") if row.neutron_alive else Text("dead", style="red")
    if column == "verdict":
        return Text(row.verdict, style=VERDICT_STYLES.get(row.verdict, ""))
    if column == "why":
        return Text(row.why, style="dim" if row.verdict == "alive" else "")
    if column == "heard":
        return _AgeCell(row.heard_ago, row.down_time)
    if column == "hosted":
        if row.hosted is None:
            return Text("")
        text = Text(f"{row.hosted} {_hosted_word(row)}".rstrip())
        if row.hosted_change:
            text.append(f" {row.hosted_change:+d}", style="green" if row.hosted_change > 0 else "red")
        return text
    raise ValueError(f"unknown column {column!r}; choose from {', '.join(COLUMNS)}")


def _age_text(heard_ago: float | None, down_time: float | None) -> str:
    if heard_ago is None:
        return "never"
    if not down_time:
        return f"{heard_ago:.1f}s ago"
    return f"{heard_ago:.1f}/{down_time:.0f}s" if down_time == int(down_time) else f"{heard_ago:.1f}/{down_time:.1f}s"


class _AgeCell:
    """The heartbeat age as a small bar filling up towards agent_down_time, and the figures."""

    def __init__(self, heard_ago: float | None, down_time: float | None) -> None:
        self.heard_ago = heard_ago
        self.down_time = down_time

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = len(_age_text(self.heard_ago, self.down_time))
        if self.heard_ago is not None and self.down_time:
            width += _AGE_BAR + 1
        return Measurement(width, width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        label = _age_text(self.heard_ago, self.down_time)
        if self.heard_ago is None or not self.down_time:
            yield Text(label, style="dim")
            return
        share = self.heard_ago / self.down_time
        style = "green" if share < 0.5 else "yellow" if share < 1 else "red"
        filled = min(_AGE_BAR, round(share * _AGE_BAR))
        full, empty = ("#", ".") if options.ascii_only else ("\u2588", "\u2591")
        yield Text.assemble((full * filled, style), (empty * (_AGE_BAR - filled), "dim"), " ", (label, style))


def fleet_table(state: FleetState, *, columns: Sequence[str] | None = None) -> Table:
    """The fleet as a rich table (colour is the console's business: a NO_COLOR console drops it)."""
    cols = default_columns(state.rows) if columns is None else check_columns(columns)
    table = Table(title=escape_text(state.title) or None, title_justify="left", title_style="bold",
                  header_style="bold", box=None, pad_edge=False, padding=(0, 2, 0, 0))
    for c in cols:
        table.add_column(_HEADERS[c], no_wrap=c != "why", overflow="fold" if c == "why" else "ellipsis")
    for row in map(_escaped, state.rows):
        table.add_row(*(_cell(row, c) for c in cols))
    return table


def plain_row(row: FleetRow, columns: Sequence[str]) -> str:
    """One row as a plain, aligned line (no colour)."""
    row = _escaped(row)
    parts = []
    for i, c in enumerate(columns):
        cell = _cell(row, c)
        text = _age_text(row.heard_ago, row.down_time) if isinstance(cell, _AgeCell) else str(cell)
        if c == "neutron":
            text = f"Neutron:{text}"  # no header in plain lines: "alive" alone would read as the verdict
        elif c == "admin":
            text = f"admin:{text}"
        parts.append(text if i == len(columns) - 1 else f"{text:<{_PLAIN_WIDTHS[c]}}")
    return "  ".join(parts).rstrip()


def wants_live(out: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """Redraw in place only on a terminal that asks for it: a TTY, NO_COLOR unset, TERM not dumb."""
    env = os.environ if env is None else env
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        tty = False
    return tty and not env.get("NO_COLOR") and env.get("TERM", "") != "dumb"


class FleetDisplay:
    """The one writer on ``out`` while the fleet is shown (a context manager; see the module docstring).

    ``stamp`` (optional) prefixes every line, e.g. the seconds since the start. ``columns`` as for
    ``fleet_table``; None picks them per frame (``default_columns``).
    """

    def __init__(self, out: TextIO, *, live: bool | None = None, env: Mapping[str, str] | None = None,
                 stamp: Callable[[], str] | None = None, columns: Sequence[str] | None = None) -> None:
        env = os.environ if env is None else env
        self.out = out
        self.live = wants_live(out, env) if live is None else live
        self.color = self.live and not env.get("NO_COLOR")
        self.columns = None if columns is None else check_columns(columns)
        self._stamp = stamp
        self._lock = threading.RLock()
        self._state = FleetState(rows=())
        self._moves: dict[str, tuple[int, int]] = {}
        # Plain mode: what was printed last, per row, and the title and notes already said.
        self._printed: dict[tuple[str, str], tuple[object, ...]] = {}
        self._said_title = ""
        self._said_notes: tuple[str, ...] = ()
        self._said_moves: set[str] = set()
        self._console = Console(file=out, force_terminal=self.live, no_color=not self.color,
                                color_system="auto" if self.color else None, highlight=False, markup=False,
                                emoji=False, soft_wrap=not self.live)
        self._live: Live | None = None

    # -- context -------------------------------------------------------------------------------------
    def __enter__(self) -> FleetDisplay:
        if self.live:
            redirect = self.out is sys.stdout or self.out is sys.stderr
            self._live = Live(self._renderable(), console=self._console, auto_refresh=False, transient=False,
                              redirect_stdout=redirect, redirect_stderr=redirect, vertical_overflow="visible")
            self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._flush_moves()
            self._moves.clear()
            if self._live is not None:
                self._live.update(self._renderable(), refresh=True)
                self._live.stop()
                self._live = None
            self.out.flush()

    # -- what callers call --------------------------------------------------------------------------
    def update(self, state: FleetState) -> None:
        """A new frame: redrawn in place, or (plain) a line for each row whose state changed."""
        with self._lock:
            self._state = state
            if self._live is not None:
                self._live.update(self._renderable(), refresh=True)
                return
            if self.live:  # live but not entered: nothing to draw on yet
                return
            lines = []
            if state.title and state.title != self._said_title:
                lines.append(f"== {escape_text(state.title)} ==")
                self._said_title = state.title
            cols = self.columns or default_columns(state.rows)
            for row in state.rows:
                if self._printed.get(row.key) != row.state():
                    self._printed[row.key] = row.state()
                    lines.append("  " + plain_row(row, cols))
            lines += [f"  {escape_text(n)}" for n in state.notes if n not in self._said_notes]
            self._said_notes = state.notes
            self._write(lines)

    def say(self, text: str, style: str = "") -> None:
        """One line above the table (plain: one line); never interleaved with another."""
        with self._lock:
            text = escape_text(text)
            if self._live is not None:
                line = Text(self._prefix(), style="dim")
                line.append(text, style=style)
                self._live.console.print(line)
                return
            self._write([text])

    def moves(self, label: str, done: int, total: int) -> None:
        """Progress of one group of moves (e.g. "node-1 -> node-2 routers"): a bar while live, a line
        when the group completes otherwise."""
        with self._lock:
            self._moves[label] = (done, total)
            if self._live is not None:
                self._live.update(self._renderable(), refresh=True)
            elif done >= total and label not in self._said_moves:
                self._said_moves.add(label)
                self._write([f"{escape_text(label)}: {done}/{total} done"])

    def clear_moves(self) -> None:
        """Forget the progress bars; their final figures stay as lines (plain: those not said yet)."""
        with self._lock:
            self._flush_moves()
            self._moves.clear()
            self._said_moves.clear()
            if self._live is not None:
                self._live.update(self._renderable(), refresh=True)

    # -- inside ---------------------------------------------------------------------------------------
    def _flush_moves(self) -> None:
        lines = [f"{escape_text(label)}: {done}/{total} {'done' if done >= total else '(unfinished)'}"
                 for label, (done, total) in self._moves.items() if label not in self._said_moves]
        if self._live is not None:
            for line in lines:
                self._live.console.print(Text(self._prefix(), style="dim").append(line))
        elif not self.live:
            self._write(lines)

    def _prefix(self) -> str:
        return f"{self._stamp()}  " if self._stamp is not None else ""

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        prefix = self._prefix()
        self.out.write("".join(f"{prefix}{line}\n" for line in lines))
        self.out.flush()

    def _renderable(self) -> RenderableType:
        parts: list[RenderableType] = [fleet_table(self._state, columns=self.columns)]
        parts += [Text(escape_text(n), style="yellow") for n in self._state.notes]
        if self._moves:
            grid = Table.grid(padding=(0, 2))
            for label, (done, total) in self._moves.items():
                bar = ProgressBar(total=max(total, 1), completed=min(done, total), width=24,
                                  complete_style="cyan", finished_style="green")
                figures = Text(f"{done}/{total}", style="green" if done >= total else "")
                grid.add_row(Text(escape_text(label)), bar, figures)
            parts.append(grid)
        return Group(*parts)
