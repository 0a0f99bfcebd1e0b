"""The log formatter: no value logged as an argument can forge a line or a terminal escape."""

from __future__ import annotations

import logging

import pytest

from rpcdaemon.logs import MaskingFormatter


def _format(msg: str, args: object) -> str:
    record = logging.LogRecord("rpcdaemon.l3agent", logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]
    return MaskingFormatter("%(levelname)s %(message)s").format(record)


@pytest.mark.parametrize("host", [
    "net-1\nINFO rpcdaemon: moved router r1",
    "net-1\r\nINFO forged",
    "net-1\x1b[2K\x1b[1Gforged",
    "net-1\x00\x07\x7f",
])
def test_control_characters_in_arguments_cannot_start_a_line(host: str) -> None:
    for msg in ("heard %s", "heard %r"):
        line = _format(msg, (host,))
        for control in ("\n", "\r", "\x1b", "\x00", "\x07"):
            assert control not in line
        assert line.startswith("INFO heard ")
        assert "net-1" in line


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
