"""``[Daemon] log_format = json``: one JSON object per record, the executor's action lines with their
structured fields, and the same masking as the text format (control characters, secrets)."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.config.settings import ConfigError, Settings, parse_settings
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import L3_AGENT, Action, ActionKind
from rpcdaemon.telemetry.logs import FORMAT, MaskingFormatter, configure_logging, reset_logging

TS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def settings(text: str = "") -> Settings:
    return parse_settings(f"[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\nloglevel = INFO\n{text}")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(settings("log_format = json\n"), foreground=True, stream=out, environ={})
    yield out
    reset_logging()


def records(out: io.StringIO) -> list[dict[str, Any]]:
    lines = out.getvalue().splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line is one whole object


def test_an_action_line_carries_its_fields(json_log: io.StringIO) -> None:
    api = FakeNeutron()
    a = api.add_agent(L3_AGENT, "net-a", agent_id="a")
    b = api.add_agent(L3_AGENT, "net-b", agent_id="b")
    api.add_router(router_id="r1")
    api.place_router("r1", "a")
    executor = Executor(api, ExecutorPolicy(workers=1), stop=threading.Event(),
                        logger=logging.getLogger("rpcdaemon.l3agent"))
    try:
        executor.run([Action(ActionKind.MOVE_ROUTER, "r1", source=a, target=b, reason="source dead")])
    finally:
        executor.close()
    [line] = [r for r in records(json_log) if r.get("resource_id") == "r1"]
    assert line["message"].startswith("move router r1 from net-a (a) to net-b (b) (source dead): done in ")
    assert (line["level"], line["logger"]) == ("INFO", "rpcdaemon.l3agent")
    assert {k: line[k] for k in ("kind", "resource_id", "from_host", "from_id", "to_host", "to_id", "status")} == {
        "kind": "move-router", "resource_id": "r1", "from_host": "net-a", "from_id": "a", "to_host": "net-b",
        "to_id": "b", "status": "done"}
    assert isinstance(line["seconds"], float)
    assert line["seconds"] >= 0


def test_a_dry_run_line_carries_them_too(json_log: io.StringIO) -> None:
    api = FakeNeutron()
    b = api.add_agent(L3_AGENT, "net-b", agent_id="b")
    executor = Executor(api, ExecutorPolicy(dry_run=True), stop=threading.Event(),
                        logger=logging.getLogger("rpcdaemon.l3agent"))
    try:
        executor.run([Action(ActionKind.BIND_ROUTER, "r9", target=b)])
    finally:
        executor.close()
    [line] = [r for r in records(json_log) if r.get("resource_id") == "r9"]
    assert (line["kind"], line["status"], line["from_host"], line["to_id"]) == ("bind-router", "dry-run", None, "b")
    assert line["message"].startswith("DRY RUN would schedule router r9")


def test_masked_as_the_text_format_is(json_log: io.StringIO) -> None:
    import re

    log = logging.getLogger("rpcdaemon")
    forged = "net-1\nINFO rpcdaemon: moved router r1\x1b[2K"
    log.info("heard %s", forged)
    log.warning("keystone refused password=%s for %s", "hunter2", "amqp://u:s3cret@rabbit//")
    log.info("structured", extra={"fields": {"kind": "k", "auth_token": "tok-1", "message": "forged", "level": "x"}})
    try:
        raise RuntimeError("connect failed: password=hunter2")
    except RuntimeError:
        log.exception("it failed")
    text = json_log.getvalue()
    for secret in ("hunter2", "s3cret", "tok-1"):
        assert secret not in text
    heard, refused, structured, failed = records(json_log)
    text_format = MaskingFormatter("%(message)s")
    record = logging.LogRecord("rpcdaemon", logging.INFO, __file__, 1, "heard %s", (forged,), None)
    assert heard["message"] == text_format.format(record)  # the same message, escapes and all
    assert "\n" not in heard["message"]
    assert "\x1b" not in heard["message"]
    assert re.match(TS, heard["ts"])
    assert refused["message"] == "keystone refused password=*** for amqp://u:***@rabbit//"
    assert refused["level"] == "WARNING"
    assert structured["auth_token"] == "***"
    assert structured["kind"] == "k"
    assert (structured["message"], structured["level"]) == ("structured", "INFO")  # fields never override these
    assert failed["level"] == "ERROR"
    assert "RuntimeError: connect failed: password=***" in failed["exc_info"]
    assert "Traceback" in failed["exc_info"]


def test_the_text_format_stays_the_default(tmp_path: Path) -> None:
    assert settings().daemon.log_format == "text"
    out = io.StringIO()
    configure_logging(settings(), foreground=True, stream=out, environ={})
    try:
        logging.getLogger("rpcdaemon").info("plain %s", "line", extra={"fields": {"kind": "k"}})
    finally:
        reset_logging()
    [line] = out.getvalue().splitlines()
    assert line.endswith(" INFO    rpcdaemon: plain line")
    assert not line.startswith("{")
    assert FORMAT.startswith("%(asctime)s")


def test_the_detached_log_file_gets_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "rpcdaemon.log"
    configure_logging(settings(f"log_format = JSON\nlogfile = {path}\n"), foreground=False, environ={})
    try:
        logging.getLogger("rpcdaemon.dhcpagent").info("one")
        logging.getLogger("rpcdaemon").debug("not at INFO")
    finally:
        reset_logging()
    [line] = [json.loads(text) for text in path.read_text().splitlines()]
    assert (line["logger"], line["message"]) == ("rpcdaemon.dhcpagent", "one")


def test_an_unknown_format_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        settings("log_format = xml\n")
    assert str(err.value) == "rpcdaemon.conf, line 5: [Daemon] log_format = 'xml': expected one of text, json"
