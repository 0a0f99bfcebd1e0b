"""Fixtures for the end-to-end tests: a real Neutron for the session, fake agents and a REST client per test.

``neutron`` (session): a ``NeutronServer`` with agent_down_time=10 s and report_interval=2 s, its own
database and RabbitMQ vhost, and a stock neutron.conf: no ``[oslo_messaging_notifications] driver``, so
nothing but the server's casts to the agents says what changed. ``neutron_notifying`` (session, started
only when a test asks for it): the same with ``driver = messagingv2``, as clouds with telemetry run it.
``fleet`` (per test): a ``Fleet`` whose hosts get a unique prefix, and whose agents are deleted from
Neutron afterwards. ``rest`` (per test): a ``SeedClient`` that deletes the routers and networks it
created. ``rpcdaemon`` (per test): ``tests.e2e.rpcd.Daemons``, which starts the real daemon process
against this Neutron and stops it before the fleet's agents are deleted.
If the harness cannot start (no package index to build the Neutron venv, RabbitMQ or MariaDB down)
every e2e test fails with the reason; set ``RPCDAEMON_SKIP_E2E=1`` to skip them instead.
``RPCDAEMON_E2E_KEEP_STATE=1`` keeps Neutron's config and logs (and the fake agents' logs) in the
printed state directory after the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.rpcd import Daemons, daemons_for
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import HarnessError, NeutronServer
from tests.harness.neutron_venv import VenvUnavailable
from tests.harness.seed import SeedClient
from tests.harness.services import ServiceUnavailable

SKIP_ENV = "RPCDAEMON_SKIP_E2E"
KEEP_STATE_ENV = "RPCDAEMON_E2E_KEEP_STATE"
_HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    # Also declared by tests/component: the e2e broker-outage test restarts the shared RabbitMQ.
    config.addinivalue_line("markers", "disruptive: restarts the shared broker; deselect with -m 'not disruptive'")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = os.environ.get(SKIP_ENV) == "1"
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
            if skip:
                item.add_marker(pytest.mark.skip(reason=f"{SKIP_ENV}=1"))
            # Each pytest-xdist worker starts its own neutron-server (session fixture, its own database and
            # vhost); the tests of the notifying one go to a single worker so that only one of those starts.
            if _uses_notifying(item):
                item.add_marker(pytest.mark.xdist_group("e2e-neutron-notifying"))
    # The e2e tests first: they take seconds to minutes each, so with pytest-xdist the unit tests fill the gaps
    # at the end instead of a long e2e test starting last. The broker restart disturbs the session's
    # neutron-server for a while: it runs last of all (scripts/test runs it in a pass of its own anyway).
    items.sort(key=lambda item: (_HERE in item.path.parents and item.get_closest_marker("disruptive") is not None,
                                 _HERE not in item.path.parents))


def _uses_notifying(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return "neutron_notifying" in getattr(item, "fixturenames", ()) or (
        callspec is not None and "notifying" in callspec.params.values())


@pytest.fixture(scope="session")
def neutron() -> Iterator[NeutronServer]:
    yield from _serve(notifications=False)


@pytest.fixture(scope="session")
def neutron_notifying() -> Iterator[NeutronServer]:
    yield from _serve(notifications=True)


def _serve(*, notifications: bool) -> Iterator[NeutronServer]:
    server = NeutronServer(agent_down_time=10, report_interval=2, notifications=notifications,
                           keep_state=os.environ.get(KEEP_STATE_ENV) == "1")
    try:
        server.start()
    except (VenvUnavailable, ServiceUnavailable, HarnessError) as exc:
        pytest.fail(f"the e2e harness could not start Neutron ({SKIP_ENV}=1 skips e2e tests): {exc}",
                    pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        if server.keep_state:
            print(f"\nNeutron state and logs kept in {server.state_dir}")


@pytest.fixture
def rest(neutron: NeutronServer) -> Iterator[SeedClient]:
    client = SeedClient(neutron.url)
    yield client
    neutron.start_api()  # a test that stopped the API and failed must not break the cleanup
    client.cleanup()


@pytest.fixture
def fleet(neutron: NeutronServer, rest: SeedClient) -> Iterator[Fleet]:
    prefix = f"e2e-{uuid.uuid4().hex[:6]}-"
    fleet = Fleet.for_server(neutron, prefix=prefix)
    try:
        yield fleet
    finally:
        fleet.close()
        neutron.start_api()
        rest.delete_agents_of_hosts(prefix)


@pytest.fixture
def rpcdaemon(tmp_path: Path, neutron: NeutronServer, fleet: Fleet) -> Iterator[Daemons]:
    # Needs the fleet so that the daemon stops before the fleet's agents are deleted.
    with daemons_for(tmp_path, neutron) as daemons:
        yield daemons
