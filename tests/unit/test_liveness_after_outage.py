"""After a bus outage Neutron's alive flags are as stale as our silence: no early verdicts then."""

from rpcdaemon.deciding.liveness import LivenessPolicy, Verdict, judge
from rpcdaemon.model import L3_AGENT, Agent
from rpcdaemon.observing.registry import Observation

POLICY = LivenessPolicy(down_time=10.0, startup_grace=10.0, revive_hold=30.0)


def _obs(*, alive: bool, last_heard: float | None) -> Observation:
    return Observation(Agent("a1", L3_AGENT, "host-a", alive=alive), last_heard=last_heard)


def test_neutron_dead_flag_settles_early_only_when_no_bus_outage_preceded() -> None:
    # Heard last at t=0, bus reconnected at t=50 after an outage, now t=52: inside the new window.
    obs = _obs(alive=False, last_heard=0.0)
    assert judge(obs, 50.0, POLICY, 52.0, early_ok=True).verdict is Verdict.DEAD
    after_outage = judge(obs, 50.0, POLICY, 52.0, early_ok=False)
    assert after_outage.verdict is Verdict.UNKNOWN
    assert "listening only" in after_outage.why


def test_after_a_full_window_past_the_outage_silence_counts_again() -> None:
    obs = _obs(alive=False, last_heard=0.0)
    assert judge(obs, 50.0, POLICY, 61.0, early_ok=False).verdict is Verdict.DEAD


def test_agent_heard_after_reconnect_is_alive_whatever_neutron_said() -> None:
    obs = _obs(alive=False, last_heard=51.0)
    assert judge(obs, 50.0, POLICY, 52.0, early_ok=False).verdict is Verdict.ALIVE


def test_brake_sees_agents_that_go_quiet_seconds_apart() -> None:
    from rpcdaemon.deciding.liveness import BrakePolicy, brake_reason

    agents = [Agent(f"a{i}", L3_AGENT, f"h{i}", alive=i > 1) for i in range(4)]
    # Listening since t=0. At t=30: h0 silent since 19 (dead), h1 silent since 22 (not yet dead, failing),
    # h2/h3 heard a second ago.
    heard = {0: 19.0, 1: 22.0, 2: 29.0, 3: 29.0}
    judged = [judge(Observation(a, last_heard=heard[i]), 0.0, POLICY, 30.0) for i, a in enumerate(agents)]
    assert [j.verdict for j in judged] == [Verdict.DEAD, Verdict.ALIVE, Verdict.ALIVE, Verdict.ALIVE]
    assert [j.failing for j in judged] == [True, True, False, False]
    reason = brake_reason(judged, BrakePolicy(max_dead_fraction=0.5))
    assert reason is not None
    assert "2 of 4" in reason
    # The same dead agent alone, with the others speaking: no brake, its routers may move.
    judged[1] = judge(Observation(agents[1], last_heard=29.0), 0.0, POLICY, 30.0)
    assert brake_reason(judged, BrakePolicy(max_dead_fraction=0.5)) is None


def test_early_verdict_is_off_for_one_window_after_the_reconnection_only() -> None:
    from rpcdaemon.deciding.liveness import early_verdict_ok

    assert early_verdict_ok(0.0, 0, POLICY, 1.0), "no outage ever: Neutron's word counts"
    assert not early_verdict_ok(None, 1, POLICY, 60.0), "off the bus now"
    # Reconnected at t=50 after one outage: off until t=60 (one window), on again afterwards.
    assert not early_verdict_ok(50.0, 1, POLICY, 59.9)
    assert early_verdict_ok(50.0, 1, POLICY, 60.0)
    assert early_verdict_ok(50.0, 7, POLICY, 500.0), "outages long ago do not count"
    long_grace = LivenessPolicy(down_time=10.0, startup_grace=40.0, revive_hold=30.0)
    assert not early_verdict_ok(50.0, 1, long_grace, 80.0), "the window is the longer of grace and down_time"
