"""Text from outside made safe to show: one function for every terminal, log line and monitoring line.

Host names, reasons, error texts and live-view fields come from the bus (where anyone who can publish may
forge a heartbeat) or from the Neutron API (which registers an agent from that heartbeat). Before such
text reaches a terminal, a text log line, a ``status`` table or value line, ``check``'s one-line status, the
live fleet view, the demo or a Dump line, it goes through ``escape_text``: every character that could
move the cursor, recolour or retitle the terminal, start a line of its own or reorder what is shown is
replaced by a visible escape, so the operator sees that something odd is there and no field can split a
line. Used by ``logs``, ``fleetview``, ``commands``, ``control.state``, ``plugins.dump``, ``sdnotify`` and
``demo``; it imports nothing of rpcdaemon, so every layer may use it.

Escaped: the Unicode categories Cc (C0 U+0000-001F with tab, DEL, C1 U+0080-009F with NEL), Cf (format
characters: the bidirectional controls U+061C, U+200E/200F, U+202A-202E, U+2066-2069, the zero-width
characters, soft hyphen, BOM, tag characters), Zl and Zp (U+2028, U+2029) and Cs (a lone surrogate, which
could not even be written out as UTF-8). Left alone: everything else, other spaces (U+00A0) and private
use characters included (they show as themselves and split no line), and the backslash (so an escape is
not always unambiguous: a literal ``\\x1b`` in a name reads the same; it is harmless). The escapes are
Python's: ``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\x85``, ``\\u2028``, ``\\u202e``, ``\\U000e0041``.

JSON output (``status -f json``, ``check -f json``, JSON logs, the audit trail) stays faithful instead:
``json.dumps`` with ``ensure_ascii`` writes all of these as ``\\uXXXX`` already, so no JSON line splits.
"""

from __future__ import annotations

import unicodedata

ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_dangerous(char: str) -> bool:
    """Whether one character is escaped by ``escape_text`` (see the module docstring)."""
    return unicodedata.category(char) in ESCAPED_CATEGORIES


def is_safe(text: str) -> bool:
    """Whether ``text`` is shown as it is (``escape_text`` would not change it)."""
    # str.isprintable is False for every escaped category (and for a few harmless ones): the fast path.
    return text.isprintable() or not any(map(is_dangerous, text))


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_text(text: str) -> str:
    """``text`` on one line with every dangerous character as a visible escape:
    ``"net-1\\nCRITICAL x\\u202e"`` -> ``"net-1\\\\nCRITICAL x\\\\u202e"``."""
    if text.isprintable():
        return text
    return "".join(_escape(c) if is_dangerous(c) else c for c in text)
