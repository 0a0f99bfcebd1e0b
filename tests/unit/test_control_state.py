"""The control channel's records: durations, round trips, and what a malformed record is told."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpcdaemon.control.state import MAX_TEXT, ControlState, DaemonView, Hold, clean_text, describe_span, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                               ("1h30m", 5400), ("1d", 86400), (" 1.5h ", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "10x", "m", "1h-30m", "soon", "1e9"])
def test_bad_durations_name_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
texts = st.text(max_size=400)
holds = st.builds(Hold, reason=texts.map(clean_text), by=texts.map(clean_text), at=times,
                  until=st.none() | times)


@given(pause=st.none() | holds, release=st.none() | holds,
       event=st.sampled_from(["", "pause", "resume", "release-brake", "restore-brake"]), by=texts.map(clean_text),
       at=times)
def test_the_control_state_round_trips(pause: Hold | None, release: Hold | None, event: str, by: str,
                                       at: float) -> None:
    state = ControlState(pause=pause, brake_release=release, event=event, by=by, at=at)
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
    with pytest.raises(ValueError, match="live view: malformed"):
        DaemonView.from_json(b'{"v": 1, "instance": "x", "at": 1, "plugins": [{"name": "L3Agent"}]}')


def test_a_pause_is_active_until_its_end() -> None:
    hold = Hold("r", "alice@ctl-1", at=100.0, until=160.0)
    state = ControlState(pause=hold)
    assert state.paused(159.0) == hold
    assert state.paused(160.0) is None
    assert describe_span(160.0, 100.0) == "for 1m more"
    assert describe_span(None, 100.0) == "until resumed"
    assert hold.describe(100.0) == "by alice@ctl-1, for 1m more: r"
