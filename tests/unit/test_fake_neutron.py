"""``FakeNeutron`` beyond the shared contract: what cannot be run cheaply on the real server (a router
bind onto a dead agent), the test helpers (call counting, latency, fault injection, seeding) and
thread safety. The shared cases are in ``test_contract_fake.py``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from rpcdaemon.acting.api import ErrorKind, NeutronError
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, MODE_DVR_SNAT


class RecordingSleep:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_router_bind_onto_dead_agent_fails_like_neutron_but_keeps_the_binding() -> None:
    sleep = RecordingSleep()
    fake = FakeNeutron(dead_bind_delay=240.0, sleep=sleep)
    dead = fake.add_agent(L3_AGENT, "h1", alive=False)
    router = fake.add_router("r")
    with pytest.raises(NeutronError) as caught:
        fake.bind_router(dead.id, router.id)
    assert caught.value.kind is ErrorKind.TEMPORARY
    assert caught.value.status == 500
    assert sleep.slept == [240.0]
    # Neutron commits the binding before its RPC call to the agent times out.
    assert fake.router_bindings()[router.id] == {dead.id}
    # A second bind finds it already there and answers at once, like Neutron's 201.
    fake.bind_router(dead.id, router.id)
    assert sleep.slept == [240.0]


def test_dead_bind_delay_defaults_to_none() -> None:
    sleep = RecordingSleep()
    fake = FakeNeutron(sleep=sleep)
    dead = fake.add_agent(L3_AGENT, "h1", alive=False)
    with pytest.raises(NeutronError):
        fake.bind_router(dead.id, fake.add_router().id)
    assert sleep.slept == []


def test_calls_are_counted_per_method_including_failures() -> None:
    fake = FakeNeutron()
    agent = fake.add_agent(L3_AGENT, "h1")
    router = fake.add_router()
    fake.list_agents()
    fake.bind_router(agent.id, router.id)
    fake.bind_router(agent.id, router.id)
    with pytest.raises(NeutronError):
        fake.get_agent("missing")
    assert fake.calls == {"list_agents": 1, "bind_router": 2, "get_agent": 1}


def test_latency_is_slept_per_call() -> None:
    sleep = RecordingSleep()
    fake = FakeNeutron(latency=0.08, sleep=sleep)
    fake.list_agents()
    fake.list_routers()
    assert sleep.slept == [0.08, 0.08]


def test_fail_next_for_one_method_then_recovers() -> None:
    fake = FakeNeutron()
    agent, router = fake.add_agent(L3_AGENT, "h1"), fake.add_router()
    fake.fail_next(2, method="bind_router")
    fake.list_agents()  # other methods are not affected
    for _ in range(2):
        with pytest.raises(NeutronError) as caught:
            fake.bind_router(agent.id, router.id)
        assert caught.value.temporary
    assert fake.router_bindings()[router.id] == frozenset()
    fake.bind_router(agent.id, router.id)
    assert fake.router_bindings()[router.id] == {agent.id}


def test_fail_next_applied_loses_only_the_answer() -> None:
    fake = FakeNeutron()
    agent, router = fake.add_agent(L3_AGENT, "h1"), fake.add_router()
    fake.fail_next(kind=ErrorKind.TEMPORARY, applied=True)
    with pytest.raises(NeutronError):
        fake.bind_router(agent.id, router.id)
    assert fake.router_bindings()[router.id] == {agent.id}


def test_outage_fails_every_call_without_effect() -> None:
    fake = FakeNeutron()
    agent, network = fake.add_agent(DHCP_AGENT, "h1"), fake.add_network()
    fake.outage = True
    with pytest.raises(NeutronError) as caught:
        fake.bind_network(agent.id, network.id)
    assert caught.value.kind is ErrorKind.TEMPORARY
    with pytest.raises(NeutronError):
        fake.list_agents()
    assert fake.network_bindings()[network.id] == frozenset()
    fake.outage = False
    fake.bind_network(agent.id, network.id)
    assert fake.network_bindings()[network.id] == {agent.id}


def test_delete_agent_drops_its_bindings() -> None:
    fake = FakeNeutron()
    l3, dhcp = fake.add_agent(L3_AGENT, "h1"), fake.add_agent(DHCP_AGENT, "h1")
    router, network = fake.add_router(), fake.add_network()
    fake.place_router(router.id, l3.id)
    fake.place_network(network.id, dhcp.id)
    fake.delete_agent(l3.id)
    fake.delete_agent(dhcp.id)
    assert fake.router_bindings()[router.id] == frozenset()
    assert fake.network_bindings()[network.id] == frozenset()
    with pytest.raises(NeutronError) as caught:
        fake.routers_on_agent(l3.id)
    assert caught.value.kind is ErrorKind.NOT_FOUND


def test_set_alive_and_admin_state_show_in_reads() -> None:
    fake = FakeNeutron()
    agent = fake.add_agent(L3_AGENT, "h1")
    fake.set_alive(agent.id, False)
    fake.set_admin_state(agent.id, False)
    read = fake.get_agent(agent.id)
    assert (read.alive, read.admin_state_up) == (False, False)


def test_ha_router_may_have_several_agents() -> None:
    fake = FakeNeutron()
    first, second = fake.add_agent(L3_AGENT, "h1"), fake.add_agent(L3_AGENT, "h2")
    router = fake.add_router(ha=True)
    fake.bind_router(first.id, router.id)
    fake.bind_router(second.id, router.id)
    assert sorted(fake.agents_for_router(router.id)) == sorted([first.id, second.id])


def test_distributed_router_needs_a_dvr_snat_agent() -> None:
    fake = FakeNeutron()
    legacy, snat = fake.add_agent(L3_AGENT, "h1"), fake.add_agent(L3_AGENT, "h2", agent_mode=MODE_DVR_SNAT)
    router = fake.add_router(distributed=True)
    with pytest.raises(NeutronError) as caught:
        fake.bind_router(legacy.id, router.id)
    assert caught.value.kind is ErrorKind.INVALID_TARGET
    assert caught.value.neutron_type == "RouterL3AgentMismatch"
    fake.bind_router(snat.id, router.id)
    assert fake.agents_for_router(router.id) == [snat.id]


def test_concurrent_binds_of_one_router_have_one_winner() -> None:
    fake = FakeNeutron(latency=0.005)
    agents = [fake.add_agent(L3_AGENT, f"h{i}") for i in range(8)]
    router = fake.add_router()
    start = threading.Barrier(len(agents))

    def bind(agent_id: str) -> ErrorKind | None:
        start.wait()
        try:
            fake.bind_router(agent_id, router.id)
        except NeutronError as err:
            return err.kind
        return None

    with ThreadPoolExecutor(len(agents)) as pool:
        results = list(pool.map(bind, [a.id for a in agents]))
    assert results.count(None) == 1
    assert results.count(ErrorKind.CONFLICT) == len(agents) - 1
    assert len(fake.router_bindings()[router.id]) == 1


def test_seeding_rejects_duplicate_ids() -> None:
    fake = FakeNeutron()
    fake.add_router(router_id="r1")
    with pytest.raises(ValueError, match="r1"):
        fake.add_router(router_id="r1")
