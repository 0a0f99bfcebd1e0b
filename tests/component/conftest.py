"""Component-test fixtures: the real RabbitMQ on 127.0.0.1:5672, listeners that always stop, a collector.

These tests are about the real broker: if it is not reachable they fail (not skip) with a message
saying how to start it. Everything here is collected with the ``component`` marker.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rpcdaemon.broker.link import RawMessage, Subscription
from rpcdaemon.observing.listener import BusListener

AMQP_HOST = "127.0.0.1"
AMQP_PORT = 5672
AMQP_URL = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//"
OSLO_URL = f"rabbit://guest:guest@{AMQP_HOST}:{AMQP_PORT}/"
_HERE = Path(__file__).resolve().parent

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "disruptive: restarts the shared broker or closes every connection on it; deselect with"
        " -m 'not disruptive' while other suites (e2e) use the same RabbitMQ",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.component)
            # Most of these share the broker's default vhost and Neutron's exchange in it (a listener here
            # would hear another test's heartbeats): under pytest-xdist (--dist loadgroup) they all run on one
            # worker, one after another, while the other workers take the unit and e2e tests.
            item.add_marker(pytest.mark.xdist_group("component-default-vhost"))


def _broker_answers(timeout: float = 3.0) -> str | None:
    """None if an AMQP 0-9-1 broker answers the protocol header, else what went wrong."""
    try:
        with socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if len(frame) < 7 or frame[0] != 1:  # method frame carrying connection.start
        return f"unexpected answer {frame!r}"
    return None


@pytest.fixture(scope="session", autouse=True)
def rabbitmq() -> str:
    problem = _broker_answers()
    if problem is not None:
        pytest.fail(
            f"RabbitMQ is not reachable at {AMQP_HOST}:{AMQP_PORT} ({problem}). Component tests need the"
            " real broker: start it with `rabbitmq-server -detached` and wait for `rabbitmqctl -q status`.",
            pytrace=False,
        )
    declare_oslo_exchange()  # what neutron-server does on any real deployment; rpcdaemon never does
    return AMQP_URL


@pytest.fixture(autouse=True)
def neutron_exchange(rabbitmq: str) -> None:
    """Before each test, as neutron-server would after any broker reset: a disruptive test that
    restarted the broker must not leave the next ones without Neutron's (non-durable) exchange."""
    declare_oslo_exchange()


def declare_oslo_exchange(name: str = "neutron", url: str = AMQP_URL, *, durable: bool = False) -> None:
    """Declare a topic exchange as oslo.messaging does (``durable`` is ``amqp_durable_queues``)."""
    from kombu import Connection, Exchange

    with Connection(url) as conn:
        Exchange(name, type="topic", durable=durable, auto_delete=False)(conn.default_channel).declare()


def declare_fanout(topic: str) -> None:
    """What an agent's fanout consumer declares while it is connected (oslo: durable=False, auto_delete)."""
    from kombu import Connection, Exchange

    with Connection(AMQP_URL) as conn:
        Exchange(f"{topic}_fanout", type="fanout", durable=False, auto_delete=True)(conn.default_channel).declare()


def wait_broker_up(deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while _broker_answers(timeout=1.0) is not None:
        if time.monotonic() > end:
            raise AssertionError(f"RabbitMQ did not come back within {deadline:.0f} s")
        time.sleep(0.2)


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        pytest.fail("rabbitmqctl is not on PATH; it is needed to inspect and restart the broker", pytrace=False)
    done = subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


class Collector:
    """A thread-safe on_message target that remembers every RawMessage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[RawMessage] = []

    def __call__(self, raw: RawMessage) -> None:
        with self._lock:
            self.messages.append(raw)

    def snapshot(self) -> list[RawMessage]:
        with self._lock:
            return list(self.messages)


@pytest.fixture
def start_listener() -> Iterator[Callable[..., tuple[BusListener, threading.Event]]]:
    """Start a BusListener on the real broker; every one started is stopped and joined at teardown."""
    started: list[tuple[BusListener, threading.Event]] = []

    def start(
        subscriptions: Sequence[Subscription],
        on_message: Callable[[RawMessage], None],
        *,
        url: str = AMQP_URL,
        wait_connected: bool = True,
        **kwargs: Any,
    ) -> tuple[BusListener, threading.Event]:
        stop = threading.Event()
        listener = BusListener(url, subscriptions, on_message, stop=stop, **kwargs)
        listener.start()
        started.append((listener, stop))
        if wait_connected:
            wait_for(lambda: listener.link().connected, 10.0, "the listener to connect")
        return listener, stop

    yield start
    for _, stop in started:
        stop.set()
    for listener, _ in started:
        listener.join(5.0)
        assert not listener.is_alive(), f"{listener.name} did not stop within 5 s"
