"""Component-test fixtures: the real RabbitMQ on 127.0.0.1:5672 (``rabbit.py``), listeners that always stop,
a scripted Neutron endpoint (``daemon_proc.NeutronStub``).

These tests are about the real broker: if it is not reachable they fail (not skip) with a message
saying how to start it. Everything here is collected with the ``component`` marker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.component.daemon_proc import NeutronStub
from tests.component.rabbit import AMQP_HOST, AMQP_PORT, AMQP_URL, broker_answers, declare_oslo_exchange
from tests.kit.poll import wait_until

from rpcdaemon.broker.link import RawMessage, Subscription
from rpcdaemon.observing.listener import BusListener

_HERE = Path(__file__).resolve().parent


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


@pytest.fixture(scope="session", autouse=True)
def rabbitmq() -> str:
    problem = broker_answers()
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
            wait_until(lambda: listener.link().connected, 10.0, "the listener to connect")
        return listener, stop

    yield start
    for _, stop in started:
        stop.set()
    for listener, _ in started:
        listener.join(5.0)
        assert not listener.is_alive(), f"{listener.name} did not stop within 5 s"


@pytest.fixture
def stub() -> Iterator[NeutronStub]:
    """A Neutron API with no agents and no routers, listening; stopped at teardown."""
    s = NeutronStub()
    s.start()
    yield s
    s.stop()
