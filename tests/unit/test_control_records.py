"""Hostile records off the broker (``control.bounded``, ``control.state``): each parser gives a typed value
within bounds or a ``RecordError`` naming what is wrong, and never raises anything else.

The records of issue 15 first (a 400-digit time, a 100,000-deep nest, ``Infinity`` and ``1e400`` where a
number goes), then hypothesis: any bytes, any JSON tree, and valid records with one field made hostile.
"""

from __future__ import annotations

import contextlib
import json
import json.scanner
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fuzz_messages import control_state, live_view, roll_call_entry

from rpcdaemon.control.bounded import MAX_COUNT, MAX_DEPTH, MAX_TIME, STATE_BYTES, VIEW_BYTES, nesting
from rpcdaemon.control.state import MAX_TEXT, ControlState, DaemonView, Hold, Presence, RecordError

Parser = Callable[[bytes], Any]
PARSERS: dict[str, Parser] = {"control state": ControlState.from_json, "live view": DaemonView.from_json,
                              "roll-call entry": Presence.from_json}
BASES: dict[str, Callable[[], dict[str, Any]]] = {"control state": control_state, "live view": live_view,
                                                  "roll-call entry": roll_call_entry}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


ISSUE = [
    ("control state", b'{"v":1,"at":1' + b"0" * 400 + b"}", "an integer of 401 digits"),
    ("control state", b"[" * 100_000 + b"]" * 100_000, "200000 bytes (at most 65536)"),
    ("control state", b"[" * 30_000 + b"]" * 30_000, f"nested deeper than {MAX_DEPTH}"),  # 60 kB: under the bound
    ("live view", b"[" * 100_000 + b"]" * 100_000, f"nested deeper than {MAX_DEPTH}"),
    ("live view", b'{"v":1,"paused":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001, "nested deeper"),
    ("roll-call entry", b"[" * 60_000, "brackets that do not pair"),
    ("live view", dumps(live_view()).replace(b'"pending": 2', b'"pending": Infinity'), "Infinity (not JSON)"),
    ("roll-call entry", dumps(roll_call_entry()).replace(b'"at": 1800000000.0', b'"at": 1e400'),
     "a number out of range ('1e400')"),
    ("control state", dumps({**control_state(), "at": -1}), "at is out of range"),
    ("control state", dumps({**control_state(), "at": 1e12}), "at is out of range"),  # the year 33658
    ("control state", dumps({**control_state(), "pause": {"at": 1, "until": float("nan")}}), "NaN (not JSON)"),
    ("control state", dumps({**control_state(), "v": True}), "version True"),
    ("control state", dumps({**control_state(), "v": 1.0}), "version 1.0"),
    ("control state", dumps({**control_state(), "v": ["x" * 100]}), "version ['xxxxxxx"),
    ("control state", dumps({**control_state(), "by": ["x"]}), "by is not text"),
    ("control state", dumps({**control_state(), "pad": "x" * STATE_BYTES}), f"bytes (at most {STATE_BYTES})"),
    ("control state", b'{"v":1,"by":"\xff"}', "not UTF-8"),
    ("live view", dumps({**live_view(), "dry_run": "yes"}), "dry_run is not true or false"),
    ("live view", dumps(live_view()).replace(b'"pending": 2', b'"pending": -1'), "plugin pending is out of range"),
    ("live view", dumps(live_view()).replace(b'"pending": 2', b'"pending": 2.5'), "plugin pending is not a whole"),
    ("live view", dumps(live_view()).replace(b'"pending": 2', b'"pending": 10000000000'), "out of range"),
    ("live view", dumps({**live_view(), "plugins": [1]}), "plugins is not a list of objects"),
    ("live view", dumps(live_view()).replace(b'"id": "00000000-0000-4000-8000-000000000000"', b'"id": " \\u0007 "'),
     "no agent id"),
    ("roll-call entry", dumps({**roll_call_entry(), "role": "x" * 1000}), "role 'xxxx"),
    ("roll-call entry", dumps({**roll_call_entry(), "instance": "\n\t"}), "no instance"),
]


@pytest.mark.parametrize(("what", "raw", "says"), ISSUE, ids=[f"{w}: {s}" for w, _, s in ISSUE])
def test_the_hostile_records_are_named_not_raised(what: str, raw: bytes, says: str) -> None:
    with pytest.raises(RecordError) as caught:
        PARSERS[what](raw)
    assert str(caught.value).startswith(f"{what}: ")
    assert says in caught.value.problem
    assert len(caught.value.problem) < 120  # quoted values are cut: a refusal never echoes the record


def test_fields_of_a_newer_version_are_ignored_and_texts_cleaned() -> None:
    state = ControlState.from_json(dumps({**control_state(), "by": "mallory\x1b[2J\nINJECTED", "v2_only": [1, {}],
                                          "reason": "r" * 5000}))
    assert state.by == "mallory\\x1b[2J\\nINJECTED"  # escaped (textsafe): seen, and on one line
    assert len(state.reason) == MAX_TEXT
    assert state.pause == Hold("kernel upgrade", "alice@ctl-1", 1_800_000_000.0, 1_800_000_600.0)


def test_the_live_view_of_a_large_fleet_fits() -> None:
    """The live view's bound leaves room for every agent of a large fleet: two plugins of 2,000 agents
    each (real agent ids and long host names) is well under it."""
    body = live_view(agents=2000)
    for a in body["plugins"][0]["agents"]:
        a["host"] = f"{a['host']}.compute.region-one.example.com"
        a["why"] = "no heartbeat for 31.4s (agent_down_time 75s, report_interval 30s)"
        a["heard_ago"] = 31.4
    body["plugins"].append({**body["plugins"][0], "name": "DHCPAgent", "agent_type": "DHCP agent"})
    raw = dumps(body)
    assert len(raw) < VIEW_BYTES / 2, len(raw)
    view = DaemonView.from_json(raw)
    assert sum(len(p.agents) for p in view.plugins) == 4000


# -- hypothesis ----------------------------------------------------------------------------------------

json_leaves = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
json_trees = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)


def check_parsed(what: str, raw: bytes) -> Any:
    """Parse ``raw``; a refusal must be a RecordError, an acceptance must be within bounds."""
    try:
        value = PARSERS[what](raw)
    except RecordError as exc:
        refused: RecordError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.what == what
        assert "malformed (" not in refused.problem  # the field readers, not the last resort, caught it
        return None
    for number in _numbers(value):
        assert math.isfinite(number)
        assert 0 <= number <= max(MAX_TIME, MAX_COUNT)
    for text in _texts(value):
        assert len(text) <= MAX_TEXT
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    return value


def _fields(value: Any) -> list[Any]:
    if isinstance(value, tuple):
        return [x for item in value for x in _fields(item)]
    if hasattr(value, "__slots__"):
        return [x for name in value.__slots__ for x in _fields(getattr(value, name))]
    return [value]


def _numbers(value: Any) -> list[float]:
    return [x for x in _fields(value) if isinstance(x, (int, float)) and not isinstance(x, bool)]


def _texts(value: Any) -> list[str]:
    return [x for x in _fields(value) if isinstance(x, str)]


@settings(max_examples=300)
@given(what=st.sampled_from(sorted(PARSERS)), raw=st.binary(max_size=300))
def test_any_bytes_are_a_record_or_a_record_error(what: str, raw: bytes) -> None:
    check_parsed(what, raw)


@settings(max_examples=300)
@given(what=st.sampled_from(sorted(PARSERS)), tree=json_trees)
def test_any_json_is_a_record_or_a_record_error(what: str, tree: Any) -> None:
    check_parsed(what, json.dumps(tree).encode())
    check_parsed(what, json.dumps({"v": 1, **(tree if isinstance(tree, dict) else {"x": tree})}).encode())


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a record: each key of each object, each item of each list."""
    items = (value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ())
    out = [path] if path else []
    for key, child in items:
        out += _paths(child, (*path, key))
    return out


@settings(max_examples=500)
@given(what=st.sampled_from(sorted(PARSERS)), data=st.data(), hostile=json_trees)
def test_a_valid_record_with_one_field_made_hostile_is_a_record_or_a_record_error(
        what: str, data: st.DataObject, hostile: Any) -> None:
    record = BASES[what]()
    path = data.draw(st.sampled_from(_paths(record)))
    node = record
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = hostile
    check_parsed(what, json.dumps(record).encode())


@given(what=st.sampled_from(sorted(PARSERS)), digits=st.integers(min_value=21, max_value=5000),
       place=st.sampled_from(["at", "since", "until"]))
def test_long_integers_are_refused_before_any_float(what: str, digits: int, place: str) -> None:
    record = BASES[what]()
    record[place] = 0  # replaced by the digits below, as they stand
    raw = json.dumps(record).replace(f'"{place}": 0', f'"{place}": {"9" * digits}').encode()
    with pytest.raises(RecordError, match=f"an integer of {digits} digits"):
        PARSERS[what](raw)


@given(json_trees, st.integers(min_value=1, max_value=12))
def test_the_nesting_scan_never_says_less_than_json_recurses(tree: Any, limit: int) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        return 0

    text = json.dumps(tree)
    assert (nesting(text, limit) is None) == (depth(tree) <= limit)


class _Deepest(json.JSONDecoder):
    """The pure-Python reference decoder, counting how deep it recursed into arrays and objects."""

    def __init__(self) -> None:
        super().__init__()
        self.level = self.deepest = 0
        self.parse_object = self._counted(self.parse_object)  # type: ignore[has-type]
        self.parse_array = self._counted(self.parse_array)  # type: ignore[has-type]
        self.scan_once = json.scanner.py_make_scanner(self)  # type: ignore[attr-defined]  # not in the stubs

    def _counted(self, parse: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            self.level += 1
            self.deepest = max(self.deepest, self.level)
            try:
                return parse(*args)
            finally:
                self.level -= 1

        return counted


@settings(max_examples=1000)
@given(st.text(alphabet='[]{}"\\:,1 a', max_size=60), st.integers(min_value=0, max_value=6))
def test_the_nesting_scan_bounds_what_json_recurses_into_even_in_garbage(text: str, limit: int) -> None:
    """Whatever the text, one the scan lets through never makes json recurse deeper than ``limit``,
    also where it is no JSON at all (json may recurse deep before it finds that out)."""
    if nesting(text, limit) is not None:
        return
    decoder = _Deepest()
    with contextlib.suppress(ValueError):
        decoder.decode(text)
    assert decoder.deepest <= limit, f"{text!r} passed the scan at limit {limit} yet json went {decoder.deepest} deep"
