"""``rpcdaemon demo`` as a reader sees it: plain lines off a terminal, a table redrawn in place on one."""

from __future__ import annotations

import io
import logging
import re
import sys
import time

from tests.kit.process import clean_env
from tests.terminal import run_in_pty

from rpcdaemon.demo import scenario as demo

# agent_down_time 1.5 s: the whole story in about 11 s, with a suspect window (Neutron's lag) of 0.5 s
# that a loaded CI machine cannot step over.
SPEED = "2"
STAMP = re.compile(r"(?:^| )\d+\.\d+s  ")  # the time stamp each line starts with


def test_plain_demo_exits_0_with_whole_lines_suspect_then_dead_and_no_held_for_0s() -> None:
    out = io.StringIO()
    started = time.monotonic()
    assert demo.main(demo.build_parser().parse_args(["--speed", SPEED]), out=out) == 0
    assert time.monotonic() - started < 40
    text = out.getvalue()
    lines = text.splitlines()
    assert "\x1b" not in text  # not a terminal: no colour, no cursor movement
    # Whole lines: each starts with its time stamp and holds no other (no line cut into by another thread).
    torn = [line for line in lines if not re.match(r" *\d+\.\d+s  ", line) or len(STAMP.findall(line)) != 1]
    assert lines
    assert not torn, torn
    # The victim's L3 row: alive, then suspect (Neutron still says alive), then dead, then its routers gone.
    node1 = [line for line in lines if re.search(r"\bnode-1 +L3 agent\b", line)]
    verdicts = [v for line in node1 for v in re.findall(r"\b(alive|suspect|dead|warming)\b  ", line)]
    assert "suspect" in verdicts
    assert "dead" in verdicts
    assert verdicts.index("suspect") < verdicts.index("dead")
    assert any("Neutron still says alive" in line for line in node1)
    assert re.search(r"node-1 +L3 agent .* dead .* 0 routers -10", text)
    # Moves summed up per source -> target, not one line per router.
    assert re.search(r"routers +node-1 -> node-2: \d+/\d+ done", text)
    assert "move router" not in text
    # The brake: engaged, then held for some seconds; never "held for 0s"; the plugin named once.
    assert "moving nothing (engaged)" in text
    assert "held for 0s" not in text
    assert not re.search(r"l3agent\S*\s+L3Agent|L3Agent:?\s+L3Agent", text, re.IGNORECASE)
    assert "brake engaged and held: yes" in text


def test_the_plugin_is_named_once_per_log_line() -> None:
    def line(name: str, msg: str) -> str:
        return demo.DisplayLog.format_line(logging.LogRecord(name, logging.INFO, __file__, 1, msg, None, None))

    assert line("rpcdaemon.l3agent", "L3Agent: brake released after 6s") == "L3Agent   brake released after 6s"
    assert line("rpcdaemon.dhcpagent", "DHCPAgent pass: 3 actions") == "DHCPAgent pass: 3 actions"
    assert line("rpcdaemon.l3agent", "Neutron API reachable") == "l3agent   Neutron API reachable"
    assert line("rpcdaemon", "rpcdaemon stopped") == "rpcdaemon stopped"


def test_demo_in_a_terminal_redraws_in_place_and_exits_0() -> None:
    env = clean_env(drop=("NO_COLOR",), TERM="xterm", COLUMNS="140", LINES="40")
    rc, text, _ = run_in_pty([sys.executable, "-m", "rpcdaemon", "demo", "--speed", SPEED], 60, env=env)
    assert rc == 0, text[-2000:]
    assert text.count("\x1b[1A") > 20
    assert "\x1b[2K" in text
    assert re.search(r"\x1b\[[0-9;]*3[1-3]m", text)  # verdicts in colour
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "node-1 L3 agent: alive -> suspect" in plain
    assert "node-1 L3 agent: suspect -> dead" in plain
    assert "brake engaged and held: yes" in plain
