"""The one JSON reader of every record read off the broker (``state``): bounds first, trust after.

A control state, a live view or a roll-call entry is whatever anyone who can publish to its queue put
there (``rpcdaemon.control``). ``load_record`` turns its bytes into a dict, or refuses with a
``RecordError`` naming what is wrong, and never raises anything else:

- more than ``max_bytes`` bytes (checked before anything is decoded), or not UTF-8;
- nested deeper than ``MAX_DEPTH``: counted on the text, outside strings, *before* ``json.loads``, whose
  recursion would otherwise end in ``RecursionError`` (no ``ValueError``) on a deep enough nest;
- an integer of more than ``MAX_DIGITS`` digits (``float()`` of a 400-digit one raises ``OverflowError``),
  a float that is not finite (``1e400``), ``NaN`` or ``Infinity``;
- anything but an object whose ``v`` is this rpcdaemon's record version.

The numbers then pass ``number`` (finite, of the right kind, within the range the field allows:
``MAX_TIME`` for times and durations, ``MAX_COUNT`` for counts). ``state`` reads only the fields it knows,
each checked; a field it does not know is ignored, never refused: ``v`` is the compatibility gate (a
change old readers must not misread bumps it), and during a rolling upgrade old and new instances share
the records, so a field a newer version adds must not make an older one think the record broken.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

VERSION = 1
MAX_DEPTH = 8  # the deepest record, the live view, is 5: view > plugins > plugin > agents > agent
MAX_DIGITS = 20  # an integer beyond 64 bits is no time, count or duration of ours
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: the end of any wall-clock time or duration we write
MAX_COUNT = 10**9
STATE_BYTES = 64 * 1024  # a control state is about 400 bytes
ROLL_BYTES = 64 * 1024  # a roll-call entry is about 200 bytes
# The live view lists every agent (about 150 bytes each): room for some 10,000, several plugins' worth.
VIEW_BYTES = 2 * 1024 * 1024

# A string, to its closing quote; an unclosed one to the end of the text (json.loads stops there): the
# pattern always matches where a string starts, so the scan stays linear (never retried from each quote).
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SQUARE = str.maketrans("{}", "[]")
_SHOWN = 40


class RecordError(ValueError):
    """A record read off the broker that is not what it should be: ``what`` it is and the ``problem``."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what}: {problem}")
        self.what = what
        self.problem = problem


class _Refused(ValueError):
    """Raised from inside ``json.loads`` by a hook: carried out as a RecordError."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"a number out of range ({shown(text)})")
    return value


def _constant(name: str) -> Any:
    raise _Refused(f"{name} (not JSON)")


_DECODER = json.JSONDecoder(parse_int=_int, parse_float=_float, parse_constant=_constant)


def nesting(text: str, limit: int) -> str | None:
    """What is wrong with how ``text`` nests arrays and objects, None if it is at most ``limit`` deep.

    Brackets in strings do not count, and those after an unclosed string neither (``json.loads`` stops
    there): never less than what ``json.loads`` would recurse into. Each round strips the innermost
    pairs; after ``limit`` rounds nothing may be left. Linear in the text, ``limit`` times over, in C."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_SQUARE)
    for _ in range(limit):
        if not brackets:
            return None
        brackets = brackets.replace("[]", "")
    if not brackets:
        return None
    return f"nested deeper than {limit}" if "[]" in brackets else "brackets that do not pair"


def load_record(raw: bytes, what: str, *, max_bytes: int) -> dict[str, Any]:
    """The JSON object of one record, bounded (see the module's docstring); ``RecordError`` otherwise."""
    if len(raw) > max_bytes:
        raise RecordError(what, f"{len(raw)} bytes (at most {max_bytes})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(what, f"not UTF-8 (byte {exc.start})") from None
    wrong = nesting(text, MAX_DEPTH)
    if wrong is not None:
        raise RecordError(what, wrong)
    try:
        body = _DECODER.decode(text)
    except _Refused as exc:
        raise RecordError(what, str(exc)) from None
    except ValueError:
        raise RecordError(what, "not JSON") from None
    if not isinstance(body, dict):
        raise RecordError(what, "not a JSON object")
    v = body.get("v")
    if type(v) is not int or v != VERSION:
        raise RecordError(what, f"version {shown(v)}, this rpcdaemon reads version {VERSION}")
    return body


def number(value: Any, what: str, name: str, *, high: float = MAX_TIME, integer: bool = False) -> float:
    """``value`` as a field ``name`` may hold: a JSON number (an int if ``integer``), 0 to ``high``."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole and (integer or not isinstance(value, float)):
        raise RecordError(what, f"{name} is not {'a whole number' if integer else 'a number'}")
    if not 0 <= value <= high:
        raise RecordError(what, f"{name} is out of range ({shown(value)}; 0 to {high:.0f})")
    return float(value)


def shown(value: Any) -> str:
    """A value of a refused record as an error message may quote it: its repr, at most 40 characters."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
