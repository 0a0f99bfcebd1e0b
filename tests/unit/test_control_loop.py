"""The control thread never dies silently: a bug ends it with ``fatal`` set, and the service then exits
non-zero; a broken record is one WARNING and the daemon may still act (it is not left waiting for ever)."""

from __future__ import annotations

import logging
import threading

import pytest

from rpcdaemon.control.loop import ControlLoop
from rpcdaemon.control.state import ControlState


class Channel:
    """A control channel whose reads do what the test says (``outcome``: a state, None, or an exception)."""

    def __init__(self, outcome: object) -> None:
        self.outcome = outcome
        self.closed = False
        self.resets = 0

    def read_state(self) -> ControlState | None:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome  # type: ignore[return-value]

    def publish_view(self, view: object) -> None:
        pass

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


def test_an_unreadable_record_does_not_keep_the_daemon_waiting(caplog: pytest.LogCaptureFixture) -> None:
    loop = loop_for(Channel(ValueError("control state: not JSON")))
    loop.tick()
    assert loop.current() == ControlState()
    assert "control state not understood (control state: not JSON); keeping the last one" in caplog.text


def test_a_host_name_the_socket_refuses_is_an_outage_not_a_bad_record(caplog: pytest.LogCaptureFixture) -> None:
    # The real channel and link: connecting IDNA-encodes the host, which raises a UnicodeError (a
    # ValueError) before any network; that must not pass for an unreadable record, which would let the
    # daemon act before it ever read the pause.
    from rpcdaemon.broker.bus import control_connection
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
