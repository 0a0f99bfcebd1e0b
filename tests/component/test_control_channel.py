"""The control channel's records on the real RabbitMQ (``control.channel``, ``broker.control_link.ControlLink``).

A record stays for every reader (a read gives it back), the newest write wins, the control state is
durable, the live view vanishes after its TTL, readers at once never lose it, the roll call lists every
instance (and stays for the next reader), and the daemon's ``ControlLoop`` reads the state, publishes
the view, announces itself, signs off at its end, and survives a broker it cannot reach.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from tests.component.rabbit import AMQP_URL

from rpcdaemon.broker.connection import make_connection
from rpcdaemon.broker.control_link import control_connection
from rpcdaemon.control import control_queue, roll_queue, view_queue
from rpcdaemon.control.channel import ControlChannel
from rpcdaemon.control.loop import ControlLoop
from rpcdaemon.control.state import AgentView, ControlState, DaemonView, Hold, PluginView, Presence


@pytest.fixture
def group() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    with make_connection(AMQP_URL) as conn:
        channel = conn.channel()
        for queue in (control_queue(name), view_queue(name), roll_queue(name)):
            channel.queue_delete(queue)


def channel(group: str, url: str = AMQP_URL) -> ControlChannel:
    return ControlChannel(lambda: control_connection(url), group)


def write(group: str, state: ControlState) -> None:
    c = channel(group)
    try:
        c.write_state(state)
    finally:
        c.close()


def read_view(group: str) -> DaemonView | None:
    c = channel(group)
    try:
        return c.read_view()
    finally:
        c.close()


def paused(by: str) -> ControlState:
    now = time.time()
    return ControlState(pause=Hold("maintenance", by, now, until=now + 600), event="pause", by=by, at=now)


def view(instance: str) -> DaemonView:
    agents = (AgentView("a1", "net-1", "dead", "silent 12s (> 10s)", 12.0),)
    return DaemonView(instance=instance, at=time.time(), version="0.1.0", role="active",
                      plugins=(PluginView("L3Agent", "L3 agent", 10.0, pending=3, agents=agents),))


def test_a_record_stays_for_every_reader_and_the_newest_wins(group: str) -> None:
    writer, reader = channel(group), channel(group)
    try:
        assert reader.read_state() is None  # never written
        writer.write_state(paused("alice@ctl-1"))
        writer.write_state(paused("bob@ctl-2"))
        for _ in range(3):  # reading gives it back
            state = reader.read_state()
            assert state is not None
            assert state.pause is not None
            assert state.pause.by == "bob@ctl-2"
    finally:
        writer.close()
        reader.close()


def test_concurrent_readers_always_find_the_record(group: str) -> None:
    write(group, paused("alice@ctl-1"))
    misses: list[int] = []

    def read_many() -> None:
        c = channel(group)
        try:
            missed = 0
            for _ in range(40):  # four readers, each 50 times a second: far more than instances and commands do
                missed += c.read_state() is None
                time.sleep(0.02)
            misses.append(missed)
        finally:
            c.close()

    threads = [threading.Thread(target=read_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert misses == [0, 0, 0, 0]


def test_the_live_view_round_trips_and_expires(group: str) -> None:
    c = channel(group)
    try:
        c.link.write(view_queue(group), view("ctl-1:42").to_json(), durable=False, ttl=0.5)
        got = c.read_view()
        assert got is not None
        assert got.instance == "ctl-1:42"
        assert got.plugins[0].agents[0].verdict == "dead"
        time.sleep(1.0)
        assert c.read_view() is None  # its daemon stopped publishing: gone
    finally:
        c.close()


def test_the_loop_reads_the_state_publishes_the_view_and_rides_out_a_dead_broker(group: str) -> None:
    stop = threading.Event()
    loop = ControlLoop(channel(group), view=lambda: view("ctl-1:42"), stop=stop, poll=0.1)
    loop.tick()
    assert loop.current() == ControlState()  # nothing written: not paused, and known to be so
    write(group, paused("alice@ctl-1"))
    loop.tick()
    state = loop.current()
    assert state is not None
    assert state.pause is not None
    assert state.pause.by == "alice@ctl-1"
    seen = read_view(group)
    assert seen is not None
    assert seen.instance == "ctl-1:42"

    # A broker that cannot be reached: the last state is kept, the thread goes on.
    dead = ControlLoop(channel(group, "amqp://guest:guest@127.0.0.1:1//"), view=lambda: None, stop=stop, poll=0.1)
    dead.tick()
    assert dead.current() is None  # never read: the service moves nothing yet
    assert dead.fatal is None
    dead.channel.close()

    loop.start()
    deadline = time.monotonic() + 10
    while loop.reads < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    loop.join(timeout=10)
    assert loop.fatal is None
    assert loop.reads >= 3


def presence(instance: str, role: str, *, at: float | None = None) -> Presence:
    now = time.time() if at is None else at
    return Presence(instance=instance, role=role, at=now, since=now - 3600, version="1.0", plugins=("L3Agent",))


def test_the_roll_call_lists_each_running_instance_once_with_its_newest_role(group: str) -> None:
    announcer, reader = channel(group), channel(group)
    try:
        for _ in range(5):  # five announcements each, as in one VIEW_TTL
            announcer.announce(presence("ctl-1:10", "standby"))
            announcer.announce(presence("ctl-2:20", "standby"))
            announcer.announce(presence("ctl-3:30", "standby"))
        announcer.announce(presence("ctl-2:20", "active"))  # ctl-2 took the lock
        announcer.announce(presence("ctl-3:30", "stopped"))  # ctl-3 shut down cleanly
        announcer.link.write(roll_queue(group), b'{"v": 1, "role": "king"}', durable=False, keep=64)
        for _ in range(3):  # reading leaves the roll call in place for the next reader
            running, unreadable = reader.read_roll(time.time())
            assert [(i.instance, i.role) for i in running] == [("ctl-2:20", "active"), ("ctl-1:10", "standby")]
            assert unreadable == 1
    finally:
        announcer.close()
        reader.close()


def test_the_loop_announces_every_role_and_signs_off_when_it_ends(group: str) -> None:
    stop = threading.Event()
    role = ["standby"]
    loop = ControlLoop(channel(group), view=lambda: None, stop=stop, poll=0.05,
                       presence=lambda: presence("ctl-9:99", role[0]))
    reader = channel(group)
    try:
        loop.start()
        deadline = time.monotonic() + 10
        while not reader.read_roll(time.time())[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(i.instance, i.role) for i in reader.read_roll(time.time())[0]] == [("ctl-9:99", "standby")]
        stop.set()
        loop.join(10)
        assert not loop.is_alive()
        assert reader.read_roll(time.time())[0] == []  # gone at once, not after the entries' TTL
    finally:
        stop.set()
        reader.close()
