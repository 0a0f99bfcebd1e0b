"""The control channel's records: durations, round trips, and what a malformed record is told."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpcdaemon.control.state import (
    MAX_TEXT,
    ROLES,
    ControlState,
    DaemonView,
    Hold,
    Presence,
    RecordError,
    clean_text,
    describe_span,
    parse_duration,
    roll_call,
)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                               ("1h30m", 5400), ("1d", 86400), (" 1.5h ", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "10x", "m", "1h-30m", "soon", "1e9"])
def test_bad_durations_name_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["3651d", "1" + "0" * 400 + "s", "9" * 400])
def test_a_duration_is_finite_and_at_most_ten_years(text: str) -> None:
    with pytest.raises(ValueError, match=r"is too long a duration \(at most 3650d, ten years\)") as caught:
        parse_duration(text)
    assert len(str(caught.value)) < 100
    assert parse_duration("3650d") == 3650 * 86400


def test_an_endless_span_never_reads_inf() -> None:
    assert describe_span(float("inf"), 100.0) == "until resumed"


times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
texts = st.text(max_size=400)
holds = st.builds(Hold, reason=texts.map(clean_text), by=texts.map(clean_text), at=times,
                  until=st.none() | times)


@given(pause=st.none() | holds, release=st.none() | holds,
       event=st.sampled_from(["", "pause", "resume", "release-brake", "restore-brake", "reset"]),
       by=texts.map(clean_text), at=times, reason=texts.map(clean_text))
def test_the_control_state_round_trips(pause: Hold | None, release: Hold | None, event: str, by: str,
                                       at: float, reason: str) -> None:
    state = ControlState(pause=pause, brake_release=release, event=event, by=by, at=at, reason=reason)
    assert ControlState.from_json(state.to_json()) == state


@given(texts)
def test_shown_text_is_one_printable_bounded_line(text: str) -> None:
    shown = clean_text(text)
    assert "\n" not in shown
    assert "\x1b" not in shown
    assert len(shown) <= MAX_TEXT


@pytest.mark.parametrize(("raw", "says"), [
    (b"not json", "not JSON"),
    (b"[1]", "not a JSON object"),
    (b'{"v": 2}', "version 2"),
    (b'{"v": 1, "pause": 5}', "pause is not an object"),
    (b'{"v": 1, "pause": {"at": "yesterday"}}', "pause.at is not a time"),
    (b'{"v": 1, "pause": {"at": 1, "until": true}}', "pause.until is not a time"),
])
def test_a_malformed_control_state_is_named(raw: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ControlState.from_json(raw)


def test_a_malformed_view_is_named() -> None:
    with pytest.raises(RecordError, match="live view: plugin down_time is not a time"):
        DaemonView.from_json(b'{"v": 1, "instance": "x", "at": 1, "plugins": [{"name": "L3Agent"}]}')


def test_a_pause_is_active_until_its_end() -> None:
    hold = Hold("r", "alice@ctl-1", at=100.0, until=160.0)
    state = ControlState(pause=hold)
    assert state.paused(159.0) == hold
    assert state.paused(160.0) is None
    assert describe_span(160.0, 100.0) == "for 1m more"
    assert describe_span(None, 100.0) == "until resumed"
    assert hold.describe(100.0) == "by alice@ctl-1, for 1m more: r"


presences = st.builds(Presence, instance=st.text(min_size=1, max_size=40).map(clean_text).filter(bool),
                      role=st.sampled_from(ROLES), at=times, since=times, version=texts.map(clean_text),
                      dry_run=st.booleans(), plugins=st.tuples(st.sampled_from(["L3Agent", "DHCPAgent"])))


@given(presences)
def test_a_roll_call_entry_round_trips(entry: Presence) -> None:
    assert Presence.from_json(entry.to_json()) == entry


@pytest.mark.parametrize(("raw", "says"), [
    (b'{"v": 1, "role": "active", "at": 1, "since": 1}', "no instance"),
    (b'{"v": 1, "instance": "c:1", "role": "king", "at": 1, "since": 1}', "role 'king'"),
    (b'{"v": 1, "instance": "c:1", "role": "active", "at": "noon", "since": 1}', "at is not a time"),
    (b'{"v": 1, "instance": "c:1", "role": "active", "at": 1, "since": true}', "since is not a time"),
    (b'{"v": 1, "instance": "c:1", "role": "active", "at": 1, "since": 1, "plugins": [3]}', "plugins must be text"),
    (b'{"v": 2, "instance": "c:1"}', "version 2"),
])
def test_a_malformed_roll_call_entry_is_named(raw: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Presence.from_json(raw)


def _p(instance: str, role: str, at: float) -> Presence:
    return Presence(instance=instance, role=role, at=at, since=0.0, version="1")


@given(st.lists(st.tuples(st.sampled_from(["a:1", "b:2", "c:3"]), st.sampled_from(ROLES),
                          st.floats(min_value=0, max_value=100)), max_size=30))
def test_the_roll_call_keeps_each_instances_newest_entry_while_fresh_and_running(
        raw: list[tuple[str, str, float]]) -> None:
    entries = [_p(i, r, at) for i, r, at in raw]
    running = roll_call(entries, now=100.0, ttl=10.0)
    assert len({e.instance for e in running}) == len(running)
    for instance in {e.instance for e in entries}:
        mine = [x for x in entries if x.instance == instance]
        newest = max(x.at for x in mine)
        last = [x for x in mine if x.at == newest][-1]  # of two said at once, the later one
        listed = [e for e in running if e.instance == instance]
        if last.role == "stopped" or 100.0 - newest > 10.0:
            assert listed == []
        else:
            assert listed == [last]
    assert [e.role == "active" for e in running] == sorted((e.role == "active" for e in running), reverse=True)


def test_the_roll_call_lists_the_active_instance_first() -> None:
    got = roll_call([_p("a:1", "standby", 99), _p("b:2", "active", 99), _p("c:3", "stopped", 99),
                     _p("d:4", "standby", 80)], now=100.0, ttl=10.0)
    assert [(e.instance, e.role) for e in got] == [("b:2", "active"), ("a:1", "standby")]
