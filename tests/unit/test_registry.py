"""The agent registry (``observing.registry``): merging API agents with heartbeats, and revival hysteresis.

Heartbeats are recorded directly (no bus); times are plain floats on the daemon's monotonic clock.
The last tests feed the registry's observations to ``judge`` to check the two layers together.
"""

from __future__ import annotations

import threading

import pytest

from rpcdaemon.deciding.liveness import LivenessPolicy, Verdict, judge
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Agent, Heartbeat
from rpcdaemon.observing.registry import AgentRegistry, Observation

DOWN = 75.0
POLICY = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=120.0)


def l3(host: str, aid: str | None = None, *, alive: bool = True) -> Agent:
    return Agent(id=aid or f"id-{host}", agent_type=L3_AGENT, host=host, alive=alive)


def hb(host: str, at: float, agent_type: str = L3_AGENT) -> Heartbeat:
    return Heartbeat(agent_type=agent_type, host=host, received_at=at)


def one(registry: AgentRegistry, host: str) -> Observation:
    (found,) = [o for o in registry.observations() if o.agent.host == host]
    return found


def registry_with(*agents: Agent, listening: float | None = 0.0) -> AgentRegistry:
    reg = AgentRegistry(DOWN)
    reg.set_listening(listening)
    reg.replace_agents(list(agents), now=0.0)
    return reg


# -- merging -------------------------------------------------------------------------------------


def test_observation_carries_the_last_heartbeat_by_type_and_host() -> None:
    reg = registry_with(l3("n1"), Agent(id="d1", agent_type=DHCP_AGENT, host="n1"))
    reg.record(hb("n1", 10.0))
    reg.record(hb("n1", 40.0))
    (o,) = reg.observations(L3_AGENT)
    assert (o.agent.id, o.last_heard, o.revived_at) == ("id-n1", 40.0, None)
    assert o.heartbeat is not None
    assert o.heartbeat.received_at == 40.0
    # The DHCP agent on the same host has not been heard: keys are (type, host).
    (dhcp,) = reg.observations(DHCP_AGENT)
    assert dhcp.last_heard is None
    assert reg.last_heard(L3_AGENT, "n1") == 40.0
    assert reg.last_heard(DHCP_AGENT, "n1") is None


def test_observations_filter_by_type() -> None:
    reg = registry_with(l3("n1"), l3("n2"), Agent(id="d1", agent_type=DHCP_AGENT, host="n1"))
    assert sorted(o.agent.id for o in reg.observations(L3_AGENT)) == ["id-n1", "id-n2"]
    assert [o.agent.id for o in reg.observations(DHCP_AGENT)] == ["d1"]
    assert len(reg.observations()) == 3


def test_replace_agents_forgets_deleted_agents() -> None:
    reg = registry_with(l3("n1"), l3("n2"))
    reg.record(hb("n2", 5.0))
    reg.replace_agents([l3("n1")], now=10.0)
    assert [o.agent.host for o in reg.observations()] == ["n1"]
    assert reg.agent("id-n2") is None
    assert reg.agent("id-n1") == l3("n1")


def test_heartbeats_of_unlisted_hosts_are_kept_a_while_then_dropped() -> None:
    reg = registry_with(l3("n1"))
    reg.record(hb("new-host", 100.0))
    reg.replace_agents([l3("n1")], now=100.0 + 10 * DOWN - 1)
    assert ("L3 agent", "new-host") in reg.heard_hosts()
    reg.replace_agents([l3("n1")], now=100.0 + 10 * DOWN + 1)
    assert ("L3 agent", "new-host") not in reg.heard_hosts()


def test_heartbeat_of_a_listed_agent_survives_any_staleness() -> None:
    reg = registry_with(l3("n1"))
    reg.record(hb("n1", 1.0))
    reg.replace_agents([l3("n1")], now=1e6)
    assert reg.last_heard(L3_AGENT, "n1") == 1.0


def test_unknown_heard_is_reported_once() -> None:
    reg = registry_with(l3("n1"))
    reg.record(hb("n1", 1.0))
    assert reg.take_unknown_heard() is False
    reg.record(hb("stranger", 2.0))
    assert reg.take_unknown_heard() is True
    assert reg.take_unknown_heard() is False


def test_update_agents_refreshes_without_forgetting() -> None:
    reg = registry_with(l3("n1"), l3("n2"))
    reg.update_agents([l3("n1", alive=False)])
    assert one(reg, "n1").agent.alive is False
    assert one(reg, "n2").agent.alive is True


def test_record_and_read_from_many_threads() -> None:
    reg = registry_with(*(l3(f"n{i}") for i in range(20)))

    def feed(offset: int) -> None:
        for t in range(200):
            reg.record(hb(f"n{(t + offset) % 20}", float(t)))

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in range(200):
        assert len(reg.observations(L3_AGENT)) == 20
    for t in threads:
        t.join()
    assert all(o.last_heard is not None for o in reg.observations())


# -- revival hysteresis ------------------------------------------------------------------------


def test_speaking_again_after_a_witnessed_silence_is_a_revival() -> None:
    reg = registry_with(l3("n1"))
    reg.record(hb("n1", 10.0))
    reg.record(hb("n1", 10.0 + DOWN))  # exactly down_time: not a revival
    assert one(reg, "n1").revived_at is None
    reg.record(hb("n1", 10.0 + 2 * DOWN + 1))
    assert one(reg, "n1").revived_at == 10.0 + 2 * DOWN + 1


def test_revived_at_is_kept_by_later_heartbeats() -> None:
    reg = registry_with(l3("n1"))
    reg.record(hb("n1", 10.0))
    reg.record(hb("n1", 200.0))
    reg.record(hb("n1", 230.0))
    assert one(reg, "n1").revived_at == 200.0


def test_silence_across_a_bus_outage_is_not_a_revival() -> None:
    reg = registry_with(l3("n1"))
    reg.record(hb("n1", 10.0))
    reg.set_listening(None)  # broker gone at 20
    reg.set_listening(500.0)  # back at 500
    reg.record(hb("n1", 501.0))
    assert one(reg, "n1").revived_at is None


def test_only_the_witnessed_part_of_a_silence_counts() -> None:
    reg = registry_with(l3("n1"))
    reg.record(hb("n1", 10.0))
    reg.set_listening(None)
    reg.set_listening(100.0)
    reg.record(hb("n1", 100.0 + DOWN - 1))  # silent 164 s, but witnessed only 74 s
    assert one(reg, "n1").revived_at is None
    reg.record(hb("n1", 100.0 + 2 * DOWN + 5))  # a second silence, all of it witnessed
    assert one(reg, "n1").revived_at == 100.0 + 2 * DOWN + 5


def test_no_revival_is_recorded_while_not_listening() -> None:
    reg = registry_with(l3("n1"), listening=None)
    reg.record(hb("n1", 10.0))
    reg.record(hb("n1", 1000.0))
    assert one(reg, "n1").revived_at is None


def test_first_heartbeat_long_after_listening_began_counts_as_a_revival() -> None:
    # Documented behaviour: the silence since we began listening was witnessed, so an agent listed at
    # the first reconcile and first heard late (a long-dead one) warms up before it receives work.
    # A new agent (not listed then) is not a revival: see tests/unit/test_new_agents.py.
    reg = registry_with(l3("n1"))
    reg.record(hb("n1", DOWN + 1))
    assert one(reg, "n1").revived_at == DOWN + 1


# -- with the judge ---------------------------------------------------------------------------


def test_revived_agent_is_warming_for_revive_hold_then_alive() -> None:
    reg = registry_with(l3("n1"))
    for t in range(0, 60, 10):
        reg.record(hb("n1", float(t)))
    # silent from 50 to 300, then back, reporting every 10 s
    verdicts = {}
    for t in range(300, 500, 10):
        reg.record(hb("n1", float(t)))
        verdicts[t] = judge(one(reg, "n1"), 0.0, POLICY, float(t)).verdict
    assert {v for t, v in verdicts.items() if t < 420} == {Verdict.WARMING}
    assert {v for t, v in verdicts.items() if t >= 420} == {Verdict.ALIVE}


def test_after_a_bus_outage_agents_are_alive_not_warming() -> None:
    reg = registry_with(l3("n1"), l3("n2"))
    for host in ("n1", "n2"):
        reg.record(hb(host, 10.0))
    reg.set_listening(None)
    reg.set_listening(400.0)
    for host in ("n1", "n2"):
        reg.record(hb(host, 405.0))
    assert [judge(o, 400.0, POLICY, 406.0).verdict for o in reg.observations()] == [Verdict.ALIVE] * 2


@pytest.mark.parametrize("silence", [DOWN + 1, 10 * DOWN])
def test_silent_agent_is_dead_when_neutron_agrees(silence: float) -> None:
    reg = registry_with(l3("n1", alive=False))
    reg.record(hb("n1", 100.0))
    assert judge(one(reg, "n1"), 0.0, POLICY, 100.0 + silence).verdict is Verdict.DEAD
