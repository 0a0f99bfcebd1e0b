"""fleetview: the fleet table and its display, live (redrawn in place) and plain (changed rows only)."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from tests.hostile import HOSTILE, assert_shown_safely

from rpcdaemon.terminal.fleetview import (
    COLUMNS,
    FleetDisplay,
    FleetRow,
    FleetState,
    default_columns,
    fleet_table,
    plain_row,
    wants_live,
)

ESC = "\x1b["
CURSOR_UP = "\x1b[1A"
XTERM = {"TERM": "xterm"}


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class SlowStream(io.StringIO):
    """Writes one character at a time and lets other threads run in between: unlocked writers interleave."""

    def write(self, s: str) -> int:
        for ch in s:
            super().write(ch)
            time.sleep(0)
        return len(s)


def row(host: str = "node-1", verdict: str = "alive", **kw: object) -> FleetRow:
    base: dict[str, object] = {"agent_type": "L3 agent", "heard_ago": 0.4, "down_time": 10.0, "hosted": 10}
    base.update(kw)
    return FleetRow(host=host, verdict=verdict, **base)  # type: ignore[arg-type]


def fleet(*rows: FleetRow, notes: tuple[str, ...] = ()) -> FleetState:
    return FleetState(rows=rows, title="the fleet", notes=notes)


def render(state: FleetState, *, color: bool, columns: list[str] | None = None) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=color, no_color=not color, color_system="standard" if color else None,
                      width=160)
    console.print(fleet_table(state, columns=columns))
    return out.getvalue()


# -- choosing live or plain ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("stream", "env", "live"), [
    (TTY(), XTERM, True),
    (TTY(), {"TERM": "xterm", "NO_COLOR": "1"}, False),
    (TTY(), {"TERM": "dumb"}, False),
    (io.StringIO(), XTERM, False),
])
def test_live_only_on_a_terminal_that_wants_it(stream: io.StringIO, env: dict[str, str], live: bool) -> None:
    assert wants_live(stream, env) is live
    assert FleetDisplay(stream, env=env).live is live


def test_plain_output_has_no_escape_codes_and_live_output_redraws_in_colour() -> None:
    states = [fleet(row(), row("node-2", "suspect", why="silent 12s; Neutron still says alive")),
              fleet(row(), row("node-2", "dead", why="silent 13s (> 10s)", hosted=0, hosted_change=-10))]
    plain, live = io.StringIO(), TTY()
    for out in (plain, live):
        with FleetDisplay(out, env=XTERM) as display:
            for s in states:
                display.update(s)
                display.say("a line", style="red")
    assert ESC not in plain.getvalue()
    assert "node-2" in plain.getvalue()
    assert "dead" in plain.getvalue()
    assert "-10" in plain.getvalue()
    text = live.getvalue()
    assert CURSOR_UP in text  # the table is redrawn in place
    assert "\x1b[33m" in text or "\x1b[33;" in text or ";33m" in text  # suspect in yellow
    assert "31m" in text  # dead in red


def test_live_with_no_color_redraws_without_colour() -> None:
    out = TTY()
    with FleetDisplay(out, live=True, env={"TERM": "xterm", "NO_COLOR": "1"}) as display:
        display.update(fleet(row(verdict="dead")))
        display.update(fleet(row(verdict="alive")))
    text = out.getvalue()
    assert CURSOR_UP in text
    assert not re.search(r"\x1b\[[0-9;]*3[0-7]m", text)  # no foreground colour at all


# -- plain mode: changed rows only ----------------------------------------------------------------------------
def test_plain_prints_only_the_rows_whose_state_changed() -> None:
    out = io.StringIO()
    with FleetDisplay(out, live=False) as display:
        display.update(fleet(row("node-1"), row("node-2")))
        first = out.getvalue()
        assert first.count("node-") == 2
        assert "== the fleet ==" in first
        display.update(fleet(row("node-1", heard_ago=5.0), row("node-2", heard_ago=6.0)))  # ages only
        assert out.getvalue() == first
        display.update(fleet(row("node-1", heard_ago=9.0), row("node-2", "suspect", why="silent 11s")))
        new = out.getvalue()[len(first):].splitlines()
        assert len(new) == 1
        assert "node-2" in new[0]
        assert "suspect" in new[0]
        assert "silent 11s" in new[0]
        display.update(fleet(row("node-1"), row("node-2", "suspect"), notes=("brake holds",)))
        assert out.getvalue().endswith("brake holds\n")
        display.update(fleet(row("node-1"), row("node-2", "suspect"), notes=("brake holds",)))
        assert out.getvalue().count("brake holds") == 1


def test_plain_says_a_move_group_when_it_completes_and_the_unfinished_ones_at_the_end() -> None:
    out = io.StringIO()
    with FleetDisplay(out, live=False, stamp=lambda: "  1.0s") as display:
        display.moves("routers  node-1 -> node-2", 1, 3)
        assert out.getvalue() == ""
        display.moves("routers  node-1 -> node-2", 3, 3)
        display.moves("routers  node-1 -> node-3", 2, 4)
    assert out.getvalue().splitlines() == ["  1.0s  routers  node-1 -> node-2: 3/3 done",
                                           "  1.0s  routers  node-1 -> node-3: 2/4 (unfinished)"]


def test_live_shows_a_progress_bar_per_group_and_keeps_the_figures_when_cleared() -> None:
    out = TTY()
    with FleetDisplay(out, live=True, env=XTERM) as display:
        display.update(fleet(row()))
        display.moves("routers  node-1 -> node-2", 2, 4)
        assert "2/4" in out.getvalue()
        assert "\u2501" in out.getvalue()
        display.clear_moves()
    assert "routers  node-1 -> node-2: 2/4 (unfinished)" in out.getvalue()


@pytest.mark.parametrize("live", [False, True])
def test_lines_from_many_threads_never_interleave(live: bool) -> None:
    out = SlowStream()
    with FleetDisplay(out, live=live, env={"TERM": "xterm", "NO_COLOR": "1"}) as display:
        def talk(n: int) -> None:
            for i in range(10):
                display.say(f"thread {n} line {i} " + "x" * 30)
                display.update(fleet(row(verdict="alive" if i % 2 else "dead")))
        threads = [threading.Thread(target=talk, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    said = re.findall(r"thread \d+ line \d+ x*", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()))
    assert len(said) == 40
    assert all(s.endswith("x" * 30) for s in said)


# -- the table ---------------------------------------------------------------------------------------------
def test_columns_are_chosen_and_checked() -> None:
    state = fleet(row(), row("node-2", mode="dvr_snat", az="az1", admin_up=False, neutron_alive=True))
    assert [c.header for c in fleet_table(state, columns=["host", "verdict"]).columns] == ["host", "verdict"]
    assert default_columns([row()]) == ("host", "type", "verdict", "heard", "hosted", "why")
    assert default_columns(state.rows) == COLUMNS
    with pytest.raises(ValueError, match="unknown column 'colour'; choose from host, type"):
        fleet_table(state, columns=["host", "colour"])
    with pytest.raises(ValueError, match="unknown column"):
        FleetDisplay(io.StringIO(), columns=["nope"])


def test_the_table_shows_age_against_down_time_and_the_change_in_work() -> None:
    text = render(fleet(row(heard_ago=4.1, hosted=14, hosted_change=4), row("node-2", "dead", hosted=0,
                                                                             hosted_change=-10, heard_ago=None)),
                  color=False)
    assert "4.1/10s" in text
    assert "14 routers +4" in text
    assert "0 routers -10" in text
    assert "never" in text
    assert ESC not in text
    coloured = render(fleet(row(verdict="warming")), color=True)
    assert "\x1b[36mwarming" in coloured  # cyan


rows = st.builds(
    FleetRow, host=st.text(min_size=1, max_size=20), agent_type=st.sampled_from(["L3 agent", "DHCP agent"]),
    verdict=st.sampled_from(["alive", "warming", "suspect", "dead", "unknown"]), why=st.text(max_size=40),
    heard_ago=st.none() | st.floats(0, 1e6), down_time=st.none() | st.floats(0.1, 1e4),
    hosted=st.none() | st.integers(0, 10_000), hosted_change=st.integers(-10_000, 10_000),
    admin_up=st.booleans(), neutron_alive=st.none() | st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(rows, max_size=3))
def test_any_rows_render_in_both_modes_and_no_control_character_gets_through(some: list[FleetRow]) -> None:
    state = FleetState(rows=tuple(some), notes=("\x1b[2J note",))
    assert ESC not in render(state, color=False)
    for r in some:
        line = plain_row(r, COLUMNS)
        assert r.verdict in line
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line)
    out = io.StringIO()
    with FleetDisplay(out, live=False) as display:
        display.update(state)
        display.say("\x1b]0;owned\x07 host")
    assert "\x1b" not in out.getvalue()
    assert "\x07" not in out.getvalue()


# -- hostile text off the bus --------------------------------------------------------------------------------
def hostile_fleet() -> FleetState:
    rows = tuple(row(h, "dead" if i % 2 else "alive", why=h, mode=h, az=h, admin_up=False)
                 for i, h in enumerate(HOSTILE))
    return FleetState(rows=(*rows, row(verdict=HOSTILE[0], agent_type=HOSTILE[1])), title=f"view of {HOSTILE[2]}",
                      notes=HOSTILE)


def test_plain_view_shows_every_hostile_text_on_its_own_line_escaped() -> None:
    out = io.StringIO()
    with FleetDisplay(out, live=False) as display:
        display.update(hostile_fleet())
        display.say(HOSTILE[3])
        display.moves(f"routers  {HOSTILE[4]} -> node-2", 1, 1)
    # the title, a line per row, a line per note, the said line and the move group
    assert_shown_safely(out.getvalue(), lines=1 + len(HOSTILE) + 1 + len(HOSTILE) + 2)
    assert "net-1\\u2028CRITICAL rpcdaemon: FORGED" in out.getvalue()


def test_live_view_and_table_show_no_hostile_character() -> None:
    out = TTY()
    with FleetDisplay(out, live=True, env=XTERM) as display:
        display.update(hostile_fleet())
        display.say(HOSTILE[3])
        display.moves(f"routers  {HOSTILE[4]} -> node-2", 1, 2)
        display.clear_moves()
    assert_shown_safely(out.getvalue(), terminal=True, table=True)
    assert "\x1b]" not in out.getvalue()
    assert "\x1b[2J" not in out.getvalue()
    assert_shown_safely(render(hostile_fleet(), color=True), terminal=True, table=True)
    assert_shown_safely(render(hostile_fleet(), color=False), table=True)
