"""Smoke tests of the e2e harness itself: the real Neutron sees the fake agents as real agents.

If one of these fails, every other e2e result is suspect: agents must register alive, die when
crashed within agent_down_time, come back when revived, answer the RPC a router bind waits for,
and the API must stop and start on demand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.harness.services import MySQL, ServiceUnavailable
from tests.kit.poll import wait_until
from tests.kit.ports import free_port

from rpcdaemon.model import DHCP_AGENT, L3_AGENT, OVS_AGENT

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def wait_alive(rest: SeedClient, agent_id: str, alive: bool, timeout: float) -> float:
    """Seconds until Neutron reports the agent's ``alive`` as wanted; fails after ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if rest.agent(agent_id)["alive"] is alive:
            return time.monotonic() - began
        time.sleep(0.25)
    pytest.fail(f"agent {agent_id} not alive={alive} after {timeout} s")


def test_agents_register_alive_with_real_agent_fields(neutron: NeutronServer, fleet: Fleet,
                                                      rest: SeedClient) -> None:
    a = fleet.add_host("a")
    b = fleet.add_host("b", dhcp=False, agent_mode="dvr_snat", az="az2")

    ids = fleet.wait_registered(neutron.url, timeout=20)

    assert set(ids) == {(a, L3_AGENT), (a, DHCP_AGENT), (a, OVS_AGENT), (b, L3_AGENT), (b, OVS_AGENT)}
    l3_b = rest.agent(ids[(b, L3_AGENT)])
    assert l3_b["binary"] == "neutron-l3-agent"
    assert l3_b["configurations"]["agent_mode"] == "dvr_snat"
    assert l3_b["availability_zone"] == "az2"
    assert rest.agent(ids[(a, OVS_AGENT)])["configurations"]["tunnel_types"] == ["vxlan"]
    statuses = {(s.host, s.kind): s for s in fleet.agents()}
    assert statuses[(a, "l3")].last_reply in ("new", "alive")
    assert not statuses[(a, "l3")].start_flag_pending


def test_crash_makes_agent_dead_and_revive_brings_it_back(neutron: NeutronServer, fleet: Fleet,
                                                          rest: SeedClient) -> None:
    host = fleet.add_host("a", dhcp=False, ovs=False)
    l3 = fleet.wait_registered(neutron.url)[(host, L3_AGENT)]

    fleet.crash(host)
    dead_after = wait_alive(rest, l3, False, timeout=neutron.agent_down_time + 5)
    status = fleet.status(host, "l3")
    assert status.status == "crashed"
    assert not status.rpc_serving
    # Neutron judged it by missing heartbeats, not because something else happened at once.
    assert dead_after > neutron.agent_down_time - 2 * neutron.report_interval - 1

    fleet.revive(host)
    wait_alive(rest, l3, True, timeout=neutron.report_interval + 5)
    fleet.wait_reported(timeout=10)
    assert fleet.status(host, "l3").last_reply == "revived"
    assert rest.agent_id(host, L3_AGENT) == l3  # the same row came back, not a new agent


def test_router_bind_to_live_fake_agent_is_fast(neutron: NeutronServer, fleet: Fleet, rest: SeedClient) -> None:
    host = fleet.add_host("a", dhcp=False)
    l3 = fleet.wait_registered(neutron.url)[(host, L3_AGENT)]
    router = rest.create_router("harness-bind")

    began = time.monotonic()
    rest.bind_router(l3, router)
    took = time.monotonic() - began

    assert took < 2.0
    assert rest.routers_on_agent(l3) == [router]
    assert rest.agents_for_router(router) == [l3]
    assert fleet.status(host, "l3").rpc_calls.get("router_added_to_agent") == 1


def test_muted_agent_goes_dead_but_still_answers_rpc(neutron: NeutronServer, fleet: Fleet,
                                                     rest: SeedClient) -> None:
    host = fleet.add_host("a", dhcp=False, ovs=False)
    l3 = fleet.wait_registered(neutron.url)[(host, L3_AGENT)]

    fleet.mute(host)
    wait_alive(rest, l3, False, timeout=neutron.agent_down_time + 5)
    router = rest.create_router("harness-muted")
    began = time.monotonic()
    rest.bind_router(l3, router)  # would hang for minutes if the RPC server had stopped too

    assert time.monotonic() - began < 2.0
    fleet.unmute(host)
    wait_alive(rest, l3, True, timeout=neutron.report_interval + 5)
    assert fleet.status(host, "l3").last_reply == "revived"


def test_create_network_leaves_placement_to_the_test(neutron: NeutronServer, fleet: Fleet,
                                                     rest: SeedClient) -> None:
    host = fleet.add_host("a", l3=False)
    dhcp = fleet.wait_registered(neutron.url)[(host, DHCP_AGENT)]

    # No DHCP on the subnet: a DHCP agent that has just started asks Neutron for its networks at a time of
    # its own, and Neutron's auto-scheduling then binds every DHCP-enabled network that lacks an agent
    # (seconds later on a loaded machine: after create_network's settle re-check).
    network = rest.create_network("harness-net", dhcp=False)

    assert rest.agents_for_network(network.id) == []
    rest.bind_network(dhcp, network.id)
    assert rest.networks_on_agent(dhcp) == [network.id]
    assert rest.agents_for_network(network.id) == [dhcp]


def test_network_delete_is_notified_on_the_bus(neutron_notifying: NeutronServer) -> None:
    neutron = neutron_notifying  # a stock neutron.conf (the ``neutron`` fixture) sends no notifications
    rest = SeedClient(neutron.url)
    network = rest.create_network("harness-notify", dhcp=False)
    # Nobody consumes notifications here, so they pile up in the queue oslo.messaging declares
    # for the routing key.
    before, _ = neutron.rabbit.queue_stats(neutron.vhost, "notifications.info")

    rest.delete_network(network.id)

    deadline = time.monotonic() + 10
    while neutron.rabbit.queue_stats(neutron.vhost, "notifications.info")[0] <= before:
        assert time.monotonic() < deadline, "no notification after deleting a network"
        time.sleep(0.5)


def test_stop_api_and_start_api(neutron: NeutronServer, fleet: Fleet, rest: SeedClient) -> None:
    host = fleet.add_host("a", dhcp=False, ovs=False)
    l3 = fleet.wait_registered(neutron.url)[(host, L3_AGENT)]

    neutron.stop_api()
    assert not neutron.api_running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{neutron.url}/v2.0/agents", timeout=5)
    reports_before = fleet.status(host, "l3").reports
    # Only the API is out: the RPC server still answers heartbeats.
    wait_until(lambda: fleet.status(host, "l3").reports > reports_before, 2 * neutron.report_interval + 30,
               "a heartbeat answered while the API is stopped")
    neutron.start_api()

    assert neutron.api_running
    assert rest.agent(l3)["alive"] is True


def test_fleet_of_ten_hosts_registers(neutron: NeutronServer, fleet: Fleet) -> None:
    for i in range(10):
        fleet.add_host(f"h{i}")

    ids = fleet.wait_registered(neutron.url, timeout=30)

    assert len(ids) == 30
    assert len(set(ids.values())) == 30
    fleet.wait_reported(timeout=10)
    assert {status.last_reply for status in fleet.agents()} <= {"new", "alive"}


def test_fake_agents_die_with_the_process_that_started_them(neutron: NeutronServer) -> None:
    # A stand-in for a test process that gets killed: it starts a fleet, prints the child's pid, waits.
    program = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.harness.fleet import Fleet\n"
        "fleet = Fleet(python=Path(sys.argv[1]), transport_url=sys.argv[2])\n"
        "print(fleet.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", program, str(neutron.venv.python), neutron.transport_url],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # it runs
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"fake agents process {child} outlived its parent")


def test_unreachable_database_is_a_clear_error(neutron: NeutronServer) -> None:
    server = NeutronServer(mysql=MySQL(port=free_port()), venv=neutron.venv)

    with pytest.raises(ServiceUnavailable, match=r"MariaDB is not reachable at 127\.0\.0\.1"):
        server.start()
