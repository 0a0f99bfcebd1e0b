"""Hostile host names and live-view fields through every operator-facing output but the log formatters and
the fleet view (test_logs.py, test_fleetview.py): ``status`` (table, value, json, yaml), ``check`` (its line
and json), evacuate and rebalance lines, a command's error line, the demo's log lines, Dump lines and
systemd's STATUS=. Every one shows the same set (``tests.hostile``) escaped and on the lines it should;
JSON and YAML keep the very text.

Neutron is ``FakeNeutron`` (an agent's host is what its heartbeat said: anyone who can publish plants one),
the control channel a stand-in returning a forged live view.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import socket
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from tests.hostile import FORGED, HOSTILE, RICH_OWN, assert_shown_safely

from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.broker.link import RawMessage
from rpcdaemon.commands import check, refusal, status
from rpcdaemon.commands.context import CommandError
from rpcdaemon.commands.evacuate import evacuate
from rpcdaemon.commands.progress import Side
from rpcdaemon.commands.rebalance import rebalance
from rpcdaemon.control.state import AgentView, ControlState, DaemonView, Hold, PluginView, clean_text
from rpcdaemon.deciding.liveness import BrakePolicy
from rpcdaemon.demo import scenario as demo
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.exits import EXIT_WORK
from rpcdaemon.model import L3_AGENT, Agent
from rpcdaemon.plugins.dump import DumpPlugin
from rpcdaemon.telemetry.sdnotify import Notifier
from rpcdaemon.terminal.fleetview import FleetDisplay
from rpcdaemon.textsafe import escape_text

POLICY = ExecutorPolicy(workers=2, attempts=1, backoff_min=0.0, backoff_max=0.0)


class Channel:
    """The control channel as ``commands.fleet.read_daemon`` reads it: a forged view, a pause."""

    def __init__(self, view: DaemonView | None) -> None:
        self.view = view

    def read_view(self) -> DaemonView | None:
        return self.view

    def read_state(self) -> ControlState:
        return ControlState(pause=Hold(reason=HOSTILE[5], by=HOSTILE[6], at=time.time()))

    def read_roll(self, now: float) -> tuple[list[Any], int]:
        return [], 0

    def close(self) -> None:
        pass


class Context:
    """What ``status`` and ``check`` use of ``CommandContext``: one L3Agent plugin on a fake Neutron."""

    def __init__(self, api: FakeNeutron, view: DaemonView | None) -> None:
        self._api, self._view = api, view

    def plugins(self) -> dict[str, Any]:
        return {"L3Agent": SimpleNamespace(agent_down_time=75.0)}

    def api(self, plugin: str | None = None) -> FakeNeutron:
        return self._api

    def channel(self) -> Channel:
        return Channel(self._view)

    def plugin_config(self, name: str) -> Any:
        return SimpleNamespace(skip_ha_routers=True, brake=BrakePolicy(max_dead_fraction=1.0),
                               agents_per_network=None)


def hostile_cloud() -> tuple[FakeNeutron, DaemonView]:
    """An L3 agent per hostile host name (AZ hostile too), every other one dead with a router (the others
    with a hostile mode), and the live view an attacker would publish: its instance, version, brake and
    verdict reasons."""
    api = FakeNeutron()
    api.add_agent(L3_AGENT, "net-0", agent_id="good")
    views = []
    for i, host in enumerate(HOSTILE):
        agent = api.add_agent(L3_AGENT, host, agent_id=f"a{i}", agent_mode=None if i % 2 else host, az=host,
                              alive=i % 2 == 0)
        if i % 2:
            api.add_router(router_id=f"r{i}")
            api.place_router(f"r{i}", agent.id)
        views.append(AgentView(agent.id, host, "dead" if i % 2 else host, host, 1.0))
    plugin = PluginView("L3Agent", L3_AGENT, 75.0, brake=HOSTILE[7], pending=3, agents=tuple(views))
    view = DaemonView(instance=HOSTILE[0], at=time.time(), version=HOSTILE[1], role="active", plugins=(plugin,))
    return api, view


def run_command(module: Any, argv: list[str], view: bool = True) -> tuple[int, str]:
    api, forged = hostile_cloud()
    parser = argparse.ArgumentParser()
    module.add_arguments(parser, "cmd")
    out = io.StringIO()
    code = module.run(parser.parse_args(argv), Context(api, forged if view else None), out, "cmd")
    return code, out.getvalue()


# -- status -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("view", [True, False])
def test_status_value_is_one_line_per_agent_whatever_the_host_names_hold(view: bool) -> None:
    _, text = run_command(status, ["-f", "value"], view)
    assert_shown_safely(text, lines=1 + len(HOSTILE))
    assert escape_text(HOSTILE[0]) in text


@pytest.mark.parametrize("view", [True, False])
def test_status_table_shows_no_hostile_character(view: bool) -> None:
    _, text = run_command(status, ["-c", "host", "-c", "verdict", "-c", "why"], view)
    assert_shown_safely(text)  # the title, the header, a line per agent, the notes: none split
    rows = [line for line in text.splitlines() if line.startswith("net-")]
    assert len(rows) == 1 + len(HOSTILE)
    assert all(sum(row.startswith(f"{escape_text(h)} ") for row in rows) == 1 for h in HOSTILE)
    _, shown = run_command(status, [], view)
    assert_shown_safely(shown, table=True)  # the why column may fold: only raw characters are looked for
    if view:
        assert f"live view of the active instance {escape_text(HOSTILE[0])}" in shown


def test_status_table_shows_rich_markup_and_emoji_codes_in_a_name_as_they_are() -> None:
    api, forged = hostile_cloud()
    parser = argparse.ArgumentParser()
    status.add_arguments(parser, "status")
    out = io.StringIO()
    status.run(parser.parse_args([]), Context(api, replace(forged, instance="ctl:warning:[bold]x")), out,  # type: ignore[arg-type]
               "status")
    assert "live view of the active instance ctl:warning:[bold]x" in out.getvalue()


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_status_json_and_yaml_keep_the_very_text_and_split_no_line(fmt: str) -> None:
    _, text = run_command(status, ["-f", fmt])
    assert_shown_safely(text)
    body = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    assert sorted(a["host"] for a in body["agents"] if a["id"] != "good") == sorted(HOSTILE)
    assert sorted(a["why"] for a in body["agents"] if a["id"] != "good") == sorted(HOSTILE)
    assert body["daemon"]["active_instance"] == HOSTILE[0]
    assert body["daemon"]["paused"]["reason"] == HOSTILE[5]
    for line in text.splitlines():  # a value never continues on a line of its own
        assert FORGED not in line or "net-1" in line, line


# -- check --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("view", [True, False])
def test_check_says_one_line_whatever_the_host_names_hold(view: bool) -> None:
    code, text = run_command(check, [], view)
    assert code == EXIT_WORK
    assert_shown_safely(text, lines=1)
    assert text.startswith("WORK - L3Agent: ")
    assert escape_text(HOSTILE[1]) in text  # a dead host named as the routers' source


def test_check_json_keeps_the_very_names() -> None:
    _, text = run_command(check, ["-f", "json"])
    assert_shown_safely(text)
    body = json.loads(text)
    assert body["plugins"]["L3Agent"]["dead"] == sorted(HOSTILE[1::2])
    assert body["active_instance"] == HOSTILE[0]
    assert "\n" not in body["summary"]


# -- evacuate, rebalance, a command's error -------------------------------------------------------------------
def test_evacuate_lines_show_hostile_target_names_escaped() -> None:
    api = FakeNeutron()
    src = api.add_agent(L3_AGENT, "net-src")
    for host in HOSTILE:
        api.add_agent(L3_AGENT, host)
    for i in range(len(HOSTILE)):
        api.add_router(router_id=f"r{i}")
        api.place_router(f"r{i}", src.id)
    for dry_run in (True, False):
        out = io.StringIO()
        assert evacuate("net-src", [Side("L3Agent", api, POLICY)], out, dry_run=dry_run, terminal=False) == 0
        text = out.getvalue()
        assert_shown_safely(text)
        assert all(escape_text(h) in text for h in HOSTILE)  # each one a target


def test_evacuate_on_a_terminal_shows_hostile_names_escaped_above_and_in_the_bar() -> None:
    api = FakeNeutron()
    src = api.add_agent(L3_AGENT, f"net-src:warning:[bold]{HOSTILE[0]}")
    for host in HOSTILE:
        api.refuse_binds(api.add_agent(L3_AGENT, host).id)  # each move fails: a line above the bar
    for i in range(len(HOSTILE)):
        api.add_router(router_id=f"r{i}")
        api.place_router(f"r{i}", src.id)
    out = io.StringIO()
    assert evacuate(src.host, [Side("L3Agent", api, POLICY)], out, terminal=True) == 1
    text = out.getvalue()
    assert_shown_safely(text, terminal=True, table=True)  # rich wraps a long line at the terminal's width
    shown = RICH_OWN.sub("", text)
    assert f"evacuate net-src:warning:[bold]{escape_text(HOSTILE[0])} (routers)" in shown  # the bar's label
    assert sum(f"failed: move router r{i} " in shown for i in range(len(HOSTILE))) == len(HOSTILE)


def test_rebalance_says_a_held_back_agent_and_its_forged_reason_escaped() -> None:
    api = FakeNeutron()
    a, b = api.add_agent(L3_AGENT, "net-a"), api.add_agent(L3_AGENT, HOSTILE[0])
    held = api.add_agent(L3_AGENT, HOSTILE[1])
    for i in range(6):
        api.add_router(router_id=f"r{i}")
        api.place_router(f"r{i}", a.id)
    agents = (AgentView(a.id, "net-a", "alive", "ok", 1.0), AgentView(b.id, HOSTILE[0], "alive", "ok", 1.0),
              AgentView(held.id, HOSTILE[1], HOSTILE[2], HOSTILE[3], 1.0))
    view = DaemonView(HOSTILE[4], 0.0, "0", "active", plugins=(PluginView("L3Agent", L3_AGENT, 10.0, agents=agents),))
    out = io.StringIO()
    assert rebalance([Side("L3Agent", api, POLICY)], out, view=view, rate=1000.0, terminal=False) == 0
    assert_shown_safely(out.getvalue())
    assert f"not a target yet: {escape_text(HOSTILE[1])}" in out.getvalue()


def test_a_commands_error_line_is_one_line() -> None:
    for host in HOSTILE:
        line = refusal("evacuate", CommandError(f"no agent on host 'x' (similar: {host})"))
        assert_shown_safely(line, lines=1)


# -- the demo, Dump, STATUS= ----------------------------------------------------------------------------------
@pytest.mark.parametrize("host", HOSTILE)
def test_the_demos_log_lines_stay_one_line(host: str) -> None:
    out = io.StringIO()
    with FleetDisplay(out, live=False) as display:
        handler = demo.DisplayLog(display)
        handler.emit(logging.LogRecord("rpcdaemon.l3agent", logging.WARNING, __file__, 1,
                                       "L3Agent: %s is dead", (host,), None))
    assert_shown_safely(out.getvalue(), lines=1)


@pytest.mark.parametrize("host", HOSTILE)
def test_a_dump_line_stays_one_line(host: str) -> None:
    out = io.StringIO()
    dump = DumpPlugin(out=out, wallclock=lambda: 0.0)
    body = demo.heartbeat_body(Agent("a1", L3_AGENT, host, availability_zone=host), start_flag=False)
    dump.handle(RawMessage("neutron", "q-plugin", body, "application/json", "utf-8", 0.0))
    dump.handle(RawMessage("neutron", host, body.replace(b"report_state", host.encode("utf-8", "surrogatepass")),
                           "application/json", "utf-8", 0.0))
    assert dump.printed == 2
    assert_shown_safely(out.getvalue(), lines=2)


def test_systemd_status_stays_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2.0)
        notifier = Notifier(path)
        notifier.ready(f"active; PAUSED by {HOSTILE[0]}")
        notifier.status(f"active; PAUSED by {HOSTILE[9]}")
        said = [sock.recv(4096).decode(), sock.recv(4096).decode()]
        notifier.close()
    assert said[0].split("\n") == ["READY=1", f"STATUS=active; PAUSED by {escape_text(HOSTILE[0])}"]
    assert said[1].split("\n") == [f"STATUS=active; PAUSED by {escape_text(HOSTILE[9])}"]


# -- what the control channel's records may say ----------------------------------------------------------------
@pytest.mark.parametrize("text", HOSTILE)
def test_a_pause_reason_or_name_off_the_bus_is_one_escaped_line(text: str) -> None:
    hold = Hold.from_dict({"reason": text, "by": f"  {text}\n", "at": 1.0}, "pause", "control state")
    assert hold is not None
    assert hold.reason == escape_text(text)
    assert hold.by == escape_text(text)  # surrounding blanks trimmed first, as before
    assert_shown_safely(hold.describe(0.0), lines=1)
    assert clean_text(clean_text(text * 20)) == clean_text(text * 20)  # cut to MAX_TEXT, stable when read back
