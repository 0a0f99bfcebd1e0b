"""The log formatters: no value logged as an argument can forge a line, steer the terminal or reorder a line."""

from __future__ import annotations

import json
import logging

import pytest
from tests.hostile import HOSTILE, assert_shown_safely

from rpcdaemon.model import L3_AGENT, Agent
from rpcdaemon.telemetry.logs import JsonFormatter, MaskingFormatter
from rpcdaemon.textsafe import escape_text


def _format(msg: str, args: object) -> str:
    record = logging.LogRecord("rpcdaemon.l3agent", logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]
    return MaskingFormatter("%(levelname)s %(message)s").format(record)


@pytest.mark.parametrize("host", HOSTILE)
def test_no_hostile_argument_can_start_a_line_or_steer_the_terminal(host: str) -> None:
    for msg in ("heard %s", "heard %r", "heard %(host)s"):
        line = _format(msg, ({"host": host},) if "(" in msg else (host,))
        assert_shown_safely(line, lines=1)
        assert line.startswith("INFO heard ")
        assert "net-1" in line


@pytest.mark.parametrize("host", HOSTILE)
def test_an_exception_or_an_object_as_argument_is_escaped_too(host: str) -> None:
    # A Neutron error text quotes what the API said; an Agent's repr holds its host.
    error = ValueError(f"agent {host} refused")
    agent = Agent(id="a1", agent_type=L3_AGENT, host=host)
    line = _format("cannot move: %s; %r; %s; %d routers", (error, error, agent, 3))
    assert_shown_safely(line, lines=1)
    assert line.endswith("; 3 routers")


@pytest.mark.parametrize("host", HOSTILE)
def test_a_json_log_line_stays_one_line_and_faithful(host: str) -> None:
    record = logging.LogRecord("rpcdaemon.l3agent", logging.INFO, __file__, 1, "heard %s", (host,), None)
    record.fields = {"to_host": host}
    line = JsonFormatter().format(record)
    assert_shown_safely(line, lines=1)
    body = json.loads(line)
    assert body["to_host"] == host  # a field of its own: the very text, JSON-escaped
    assert body["message"] == "heard " + escape_text(host)  # the message as the text line has it


def test_mapping_arguments_are_escaped_too() -> None:
    line = _format("heard %(host)s", ({"host": "a\nb"},))
    assert line == "INFO heard a\\nb"


def test_plain_text_is_left_alone_and_a_tab_shows() -> None:
    assert _format("a %s b", ("node-1 café ✓",)) == "INFO a node-1 café ✓ b"
    assert _format("a %s b", ("x\ty",)) == "INFO a x\\ty b"  # a C0 character as any other


def test_the_record_itself_is_not_changed() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("a\nb",), None)
    MaskingFormatter("%(message)s").format(record)
    assert record.args == ("a\nb",)
