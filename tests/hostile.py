"""One set of hostile texts, and what no output may show of them: used by the test of every output path
(text and JSON logs, ``status`` table/value/json/yaml, ``check``'s line, the live view, the demo, Dump lines,
the commands' lines and errors, STATUS=).

Each is a host name (or a reason, an error text, a live-view field) as a forged heartbeat or live view may
carry it: ``net-1``, then the hostile part, then ``CRITICAL rpcdaemon: FORGED``, the line a forger wants an
operator or a monitoring system to read. ``FORBIDDEN`` is written out here, apart from ``rpcdaemon.textsafe``,
so that the tests do not take the code's word for what is dangerous.
"""

from __future__ import annotations

import re

FORGED = "CRITICAL rpcdaemon: FORGED"

# Everything str.splitlines() (and so many a log reader) ends a line at.
LINE_BREAKS = ("\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
# Terminal control: clear the screen and home the cursor (CSI), retitle the window (OSC ... BEL), a C1 CSI,
# NUL / backspace / DEL, a tab.
TERMINAL = ("\x1b[2J\x1b[H", "\x1b]0;owned\x07", "\x9b2J", "\x00\x08\x7f", "\t")
# Bidirectional controls: they reorder what follows on the line (RLO makes "txt.exe" read "exe.txt").
BIDI = ("\u202e", "\u202d", "\u202a", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
        "\u200f", "\u061c")
# Invisible format characters: a name that looks like another.
INVISIBLE = ("\u200b", "\ufeff", "\u00ad", "\u2060")

HOSTILE: tuple[str, ...] = tuple(f"net-1{part}{FORGED}" for part in (*LINE_BREAKS, *TERMINAL, *BIDI, *INVISIBLE))

FORBIDDEN = frozenset(chr(c) for c in (
    *range(0x20), 0x7F, *range(0x80, 0xA0),  # C0 (tab included), DEL, C1 (NEL included)
    0x2028, 0x2029,  # line and paragraph separators
    0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),  # bidirectional controls
    0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD,  # zero-width and other invisible format characters
))

# What rich itself writes on a terminal: colour, cursor up, erase line, cursor off/on, carriage return.
RICH_OWN = re.compile(r"\x1b\[(?:[0-9;]*m|[0-9]*[AK]|\?25[hl]|[0-9]*G)|\r")


def raw_in(text: str) -> list[str]:
    """The forbidden characters ``text`` shows raw, the line feeds ending its lines aside."""
    return sorted({f"U+{ord(c):04X}" for c in text if c in FORBIDDEN and c != "\n"})


def assert_shown_safely(text: str, *, lines: int | None = None, terminal: bool = False, table: bool = False) -> None:
    """No forbidden character in ``text`` (``terminal``: besides the sequences rich writes itself), no
    line that starts with the forged text (``table``: not looked for, a table may fold a long cell onto a
    line of its own), and (``lines``) exactly that many lines."""
    shown = RICH_OWN.sub("", text) if terminal else text
    bad = [line for line in shown.split("\n") if raw_in(line)]
    assert not bad, f"shown raw: {raw_in(shown)} in {bad[0]!r}"
    forged = [line for line in shown.split("\n") if line.strip().startswith(FORGED.split()[0])]
    assert table or not forged, f"forged lines: {forged}"
    if lines is not None:
        assert len(text.splitlines()) == lines, text
