"""The control thread never dies silently: a bug ends it with ``fatal`` set, and the service then exits
non-zero; a record not understood is one WARNING per distinct problem, the last good state kept (before
any, nothing moves: the record may hold a pause), the view and the roll call going on meanwhile."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from rpcdaemon.control.loop import ControlLoop
from rpcdaemon.control.state import ControlState, Hold, Presence


class Channel:
    """A control channel whose reads do what the test says (``outcome``: a state, None, or an exception)."""

    def __init__(self, outcome: object) -> None:
        self.outcome = outcome  # bytes: a record on the broker, parsed as the real channel does
        self.closed = False
        self.resets = 0
        self.published = 0
        self.announced = 0

    def read_state(self) -> ControlState | None:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        if isinstance(self.outcome, bytes):
            return ControlState.from_json(self.outcome)
        return self.outcome  # type: ignore[return-value]

    def publish_view(self, view: object) -> None:
        self.published += 1

    def announce(self, presence: object) -> None:
        self.announced += 1

    def is_broker_error(self, exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError)

    def describe(self) -> str:
        return "amqp://guest:***@broker//"

    def explain(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        self.closed = True


def loop_for(channel: Channel, stop: threading.Event | None = None) -> ControlLoop:
    return ControlLoop(channel, view=lambda: None, stop=stop or threading.Event(), poll=0.01)  # type: ignore[arg-type]


def test_a_bug_ends_the_thread_with_fatal_set(caplog: pytest.LogCaptureFixture) -> None:
    channel = Channel(RuntimeError("boom"))
    loop = loop_for(channel)
    loop.start()
    loop.join(timeout=5)
    assert not loop.is_alive()
    assert loop.fatal == "RuntimeError: boom"
    assert channel.closed
    assert "control channel thread failed" in caplog.text


def test_a_broker_outage_keeps_the_last_state_and_says_it_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon.control")
    channel = Channel(ControlState(event="pause", by="alice@ctl-1"))
    loop = loop_for(channel)
    loop.tick()
    channel.outcome = ConnectionError("refused")
    for _ in range(3):
        loop.tick()
    state = loop.current()
    assert state is not None
    assert state.by == "alice@ctl-1"
    assert caplog.text.count("control channel: cannot reach amqp://guest:***@broker//") == 1
    assert channel.resets == 3
    channel.outcome = None
    loop.tick()
    assert "control channel: reachable again" in caplog.text
    assert loop.current() == state  # an empty read is no news


ISSUE_RECORDS = [b'{"v":1,"at":1' + b"0" * 400 + b"}", b"[" * 30_000 + b"]" * 30_000,
                 b'{"v":1,"at":1e400}', b'{"v":1,"pause":{"at":NaN}}']


def test_a_record_not_understood_at_start_holds_moves_and_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon.control")
    channel = Channel(ISSUE_RECORDS[0])
    loop = ControlLoop(channel, view=lambda: None, stop=threading.Event(), poll=0.01,  # type: ignore[arg-type]
                       presence=lambda: Presence("ctl-1:1", "standby", 1.0, 1.0, "1"))
    for _ in range(5):
        loop.tick()
    assert loop.current() is None  # it may hold a pause: nothing moves (pausing.ControlGate)
    assert loop.bad_reads == 5
    assert channel.announced == 5  # still on the roll call
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["control state on the broker is not understood (an integer of 401 digits); no automatic "
                        "moves until it is (it may hold a pause): `rpcdaemon control reset` writes a fresh one"]


def test_a_record_not_understood_later_keeps_the_last_good_state(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon.control")
    good = ControlState(pause=Hold("upgrade", "alice@ctl-1", 100.0), event="pause", by="alice@ctl-1", at=100.0)
    channel = Channel(good)
    loop = ControlLoop(channel, view=lambda: object(), stop=threading.Event(), poll=0.01)  # type: ignore[arg-type,return-value]
    loop.tick()
    for raw in ISSUE_RECORDS:  # each problem said once, however often it is read
        channel.outcome = raw
        loop.tick()
        loop.tick()
    assert loop.current() == good
    assert channel.published == 1 + 2 * len(ISSUE_RECORDS)  # the live view went on
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [re.sub(r".*not understood \((.*)\); keeping the last one read: .*", r"\1", w) for w in warnings] == [
        "an integer of 401 digits", "nested deeper than 8", "a number out of range ('1e400')", "NaN (not JSON)"]
    channel.outcome = ControlState()
    loop.tick()
    assert loop.current() == ControlState()
    assert "control state on the broker understood again" in caplog.text


def test_a_host_name_the_socket_refuses_is_an_outage_not_a_bad_record(caplog: pytest.LogCaptureFixture) -> None:
    # The real channel and link: connecting IDNA-encodes the host, which raises a UnicodeError (a
    # ValueError) before any network; that must not pass for an unreadable record, which would let the
    # daemon act before it ever read the pause.
    from rpcdaemon.broker.control_link import control_connection
    from rpcdaemon.control.channel import ControlChannel

    channel = ControlChannel(lambda: control_connection("amqp://guest:s3cret@rabbit..example.com//"), "g")
    loop = ControlLoop(channel, view=lambda: None, stop=threading.Event(), poll=0.01)
    for _ in range(2):
        loop.tick()
    assert loop.current() is None  # still held: nothing moves until a pause could be read
    assert not loop.loaded
    assert "not understood" not in caplog.text
    assert caplog.text.count("control channel: cannot reach amqp://guest:***@rabbit..example.com:5672//") == 1
    assert "host name 'rabbit..example.com' cannot be looked up: it has an empty label" in caplog.text
    assert "s3cret" not in caplog.text


def test_the_thread_never_dies_of_a_record(caplog: pytest.LogCaptureFixture) -> None:
    """The issue's records, read by the running thread: it goes on (it used to end with ``fatal``)."""
    channel = Channel(ISSUE_RECORDS[0])
    stop = threading.Event()
    loop = loop_for(channel, stop)
    loop.start()
    try:
        for raw in ISSUE_RECORDS:
            channel.outcome = raw
            seen = loop.bad_reads
            deadline = time.monotonic() + 10
            while loop.bad_reads < seen + 3 and loop.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert loop.is_alive(), loop.fatal
            assert loop.bad_reads >= seen + 3
    finally:
        stop.set()
        loop.join(10)
    assert loop.fatal is None
    assert "control channel thread failed" not in caplog.text
