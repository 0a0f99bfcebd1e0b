"""The [Dump] filter: bounded before the recursive JMESPath parser sees it (a one-line error, exit 2,
never a traceback), RecursionError caught at search time, and a WARNING for fields no message has."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from tests.kit.clock import Clock

from rpcdaemon.broker.link import RawMessage
from rpcdaemon.cli import main
from rpcdaemon.config.settings import DumpSettings
from rpcdaemon.observing.decode import DESCRIPTION_FIELDS, describe_message
from rpcdaemon.plugins.dump import DumpFilterError, DumpPlugin, compile_filter
from rpcdaemon.plugins.dump_filter import FIELDS, MAX_LENGTH, FilterDataError, search, unknown_fields

DEEP_PARENS = "(" * 3000 + "method" + ")" * 3000
LONG_PATH = ".".join(["body"] * 20_000)
PATHOLOGICAL = {
    "3000 parentheses": DEEP_PARENS,
    "20000 segments": LONG_PATH,
    "900 nots": "!" * 900 + "host",
    "deep brackets": "[" * 40 + "host" + "]" * 40,
    "deep tree": "!" * 70 + "host",
}


@pytest.mark.parametrize("expression", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_filters_are_one_line_errors(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(DumpFilterError) as caught:
        compile_filter(expression)
    assert time.perf_counter() - started < 1
    [line] = str(caught.value).splitlines()
    assert line.startswith("[Dump] filter ")
    assert len(line) < 400, "the expression is abbreviated, not echoed whole"


def test_reasonable_filters_compile() -> None:
    for expression in ("method == 'report_state' && host == 'net-1'", "(((method)))", "[" * 5 + "host" + "]" * 5,
                       "body.args.agent_state.agent_state.configurations.agent_mode == 'dvr_snat'",
                       "contains(routing_key, 'dhcp') && context.user_name == 'neutron'",
                       "method == ')))((('", "x" * (MAX_LENGTH - 10) + " == 'a'"):
        compile_filter(expression)


def write_conf(tmp_path: Path, filter_line: str = "") -> Path:
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text(f"[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\n[Dump]\n{filter_line}")
    return conf


def never_run(settings: object, stop: object, *, foreground: bool) -> int:
    raise AssertionError("the daemon must not start with a bad filter")


@pytest.mark.parametrize("expression", [DEEP_PARENS, LONG_PATH], ids=["parentheses", "segments"])
@pytest.mark.parametrize("where", ["file", "option"])
def test_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], expression: str,
                                   where: str) -> None:
    conf = write_conf(tmp_path, f"filter = {expression}\n" if where == "file" else "")
    argv = ["--filter", expression] if where == "option" else []
    for mode in (["-d"], ["--check-config"]):
        started = time.perf_counter()
        assert main([*mode, "-c", str(conf), *argv], runner=never_run) == 2
        assert time.perf_counter() - started < 2
        captured = capsys.readouterr()
        [line] = captured.err.splitlines()
        assert line.startswith("rpcdaemon: error: ")
        assert "[Dump] filter = " in line
        assert "characters long (at most" in line
        assert "Traceback" not in captured.err
        assert len(line) < 400


def test_unknown_fields_respect_scope() -> None:
    def names(expression: str) -> list[str]:
        return unknown_fields(compile_filter(expression))

    assert names("method == 'report_state' && host == 'net-1'") == []
    assert names("host == net1") == ["net1"]
    assert names("host == net1 || net1 == hostname") == ["net1", "hostname"]
    assert names("body.args[?host == 'x'].y") == []  # host and y are read from inside the body
    assert names("sort_by(body.l, &a)[0] || [host, zzz]") == ["zzz"]
    assert names("body | x") == []  # x is read from the body
    assert names("{h: hots}") == ["hots"]


def test_a_field_no_message_has_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rpcdaemon.dump"):
        DumpPlugin("neutron", "host == net1 || (method == 'report_state' && host == net1)", io.StringIO())
        DumpPlugin("neutron", "method == 'report_state' && host == 'net1'", io.StringIO())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "reads the field 'net1', which no message has" in warnings[0].getMessage()
    assert "quote it: 'net1'" in warnings[0].getMessage()


def test_check_config_shows_the_field_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check-config", "-c", str(write_conf(tmp_path, "filter = host == net1\n"))]) == 0
    assert "# warning: [Dump] filter reads the field 'net1'" in capsys.readouterr().out


def test_the_documented_fields_are_the_ones_messages_have() -> None:
    assert set(FIELDS) == DESCRIPTION_FIELDS
    body = json.dumps({"method": "report_state", "args": {"agent_state": {"agent_state": {
        "host": "h", "agent_type": "L3 agent"}}}})
    heartbeat = describe_message(body, exchange="neutron", routing_key="q-reports-plugin").data
    junk = describe_message(b"\xff", exchange="neutron", routing_key="x").data
    deleted = describe_message(json.dumps({"event_type": "network.delete.end", "payload": {"network_id": "n"}}),
                               exchange="neutron", routing_key="notifications.info").data
    assert set(heartbeat) | set(junk) | set(deleted) == DESCRIPTION_FIELDS
    doc = next(f for f in DumpSettings.__dataclass_fields__.values() if f.name == "filter").metadata["doc"]
    for name in ("method", "host", "body", "Quote strings"):
        assert name in doc


class _Recursing:
    """A compiled expression whose search recurses without end (deep data meeting a deep expression)."""

    def search(self, data: dict[str, Any]) -> Any:
        return self.search(data)


def test_recursion_at_search_time_is_a_non_match() -> None:
    with pytest.raises(FilterDataError, match="RecursionError: nested too deeply"):
        search(_Recursing(), {})
    out = io.StringIO()
    plugin = DumpPlugin("neutron", "method", out)
    plugin._filter = _Recursing()  # the one search-time path that can recurse; the plugin must survive it
    plugin.handle(RawMessage("neutron", "k", b'{"method": "x"}', None, None, 0.0))
    assert out.getvalue() == ""
    assert plugin.filtered_out == 1


def test_errors_from_the_data_are_one_warning_per_kind_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    out = io.StringIO()
    plugin = DumpPlugin("neutron", "ceil(body.x) == `2` || max_by(body.l, &a).a == `1`", out, clock=clock)

    def send(body: str) -> None:
        plugin.handle(RawMessage("neutron", "k", body.encode(), None, None, 0.0))

    overflow = '{"x": 1e400}'  # JSON reads it as infinity; ceil() of that raises OverflowError
    mixed = '{"x": 1, "l": [{"a": 1}, {"a": "s"}]}'  # ceil(1) is not 2, so max_by runs: TypeError
    with caplog.at_level(logging.DEBUG, logger="rpcdaemon.dump"):
        for _ in range(5):
            send(overflow)
            send(mixed)
        clock.now += 59
        send(overflow)
        clock.now += 2  # a minute after the first warning
        send(overflow)
        send('{"x": 1.5}')  # matches
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "OverflowError: cannot convert float infinity to integer" in warnings[0]
    assert "ceil(body.x)" in warnings[0]
    assert "TypeError: '>' not supported" in warnings[1]
    assert "OverflowError" in warnings[2]
    assert "5 more like it since the last warning" in warnings[2]
    assert all("Traceback" not in w and "\n" not in w for w in warnings)
    assert plugin.filtered_out == 12
    assert plugin.printed == 1
    assert out.getvalue().count("\n") == 1
