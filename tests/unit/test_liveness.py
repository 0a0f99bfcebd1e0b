"""The liveness verdicts (``deciding.liveness.judge``) and the mass-failure brake, as parameter matrices.

Every time is on the daemon's monotonic clock; the policy is the defaults' shape: ``down_time`` 75 s,
start-up window one ``down_time``, ``revive_hold`` 120 s.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpcdaemon.deciding.liveness import (
    BrakePolicy,
    Judged,
    LivenessPolicy,
    Verdict,
    brake_reason,
    judge,
    judge_all,
)
from rpcdaemon.model import L3_AGENT, Agent
from rpcdaemon.observing.registry import Observation

DOWN = 75.0
POLICY = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=120.0)
NO_SECOND_OPINION = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=120.0, api_second_opinion=False)
LISTENING = 1000.0  # when the bus and the API were both up


def agent(*, alive: bool = True, admin: bool = True, aid: str = "a1") -> Agent:
    return Agent(id=aid, agent_type=L3_AGENT, host=f"host-{aid}", admin_state_up=admin, alive=alive)


def obs(last_heard: float | None, *, alive: bool = True, revived_at: float | None = None) -> Observation:
    return Observation(agent(alive=alive), last_heard, revived_at)


# -- not listening --------------------------------------------------------------------------------


@pytest.mark.parametrize("last_heard", [None, 0.0, LISTENING - 10_000])
@pytest.mark.parametrize("neutron_alive", [True, False])
@pytest.mark.parametrize("now", [LISTENING, LISTENING + 10 * DOWN])
def test_never_dead_while_not_listening(last_heard: float | None, neutron_alive: bool, now: float) -> None:
    j = judge(obs(last_heard, alive=neutron_alive), None, POLICY, now)
    assert j.verdict is Verdict.UNKNOWN
    assert "not listening" in j.why
    assert not j.is_target


def test_recent_heartbeat_is_still_unknown_while_not_listening() -> None:
    # Even a fresh heartbeat: without the bus we cannot tell how fresh the others are either.
    assert judge(obs(LISTENING - 1), None, POLICY, LISTENING).verdict is Verdict.UNKNOWN


# -- the start-up window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_heard", "neutron_alive", "listened", "expected"),
    [
        # never heard, Neutron thinks it alive: we cannot know yet
        (None, True, 0.0, Verdict.UNKNOWN),
        (None, True, DOWN - 1, Verdict.UNKNOWN),
        # never heard and Neutron says dead: Neutron's verdict settles it early
        (None, False, 0.0, Verdict.DEAD),
        (None, False, DOWN - 1, Verdict.DEAD),
        # heard long before we began listening (e.g. before a bus outage), Neutron agrees it is dead
        (LISTENING - 500, False, 10.0, Verdict.DEAD),
        # ... but Neutron still says alive: unknown until our own window is full
        (LISTENING - 500, True, 10.0, Verdict.UNKNOWN),
        (LISTENING - 500, True, DOWN - 0.5, Verdict.UNKNOWN),
        # heard recently: alive whatever Neutron says
        (LISTENING + 5, False, 10.0, Verdict.ALIVE),
        (LISTENING - 20, False, 10.0, Verdict.ALIVE),
    ],
)
def test_start_up_window(last_heard: float | None, neutron_alive: bool, listened: float, expected: Verdict) -> None:
    j = judge(obs(last_heard, alive=neutron_alive), LISTENING, POLICY, LISTENING + listened)
    assert j.verdict is expected, j.why


def test_heard_since_listening_is_not_dead_inside_a_long_grace_even_if_neutron_says_so() -> None:
    # startup_grace longer than down_time: a silence of 140 s that began after we started listening
    # is ours to judge, and our window (200 s) is not full yet.
    policy = LivenessPolicy(down_time=DOWN, startup_grace=200.0, revive_hold=120.0)
    j = judge(obs(LISTENING + 10, alive=False), LISTENING, policy, LISTENING + 150)
    assert j.verdict is Verdict.UNKNOWN
    assert "listening only" in j.why
    # Once the grace is over the same silence is a death.
    assert judge(obs(LISTENING + 10, alive=False), LISTENING, policy, LISTENING + 200).verdict is Verdict.DEAD


def test_a_listener_stamped_just_after_now_was_read_says_listening_0s_not_minus_0s() -> None:
    j = judge(obs(None, alive=True), LISTENING, POLICY, LISTENING - 0.3)
    assert j.verdict is Verdict.UNKNOWN
    assert j.why.endswith("listening only 0s"), j.why


def test_no_early_verdict_after_a_bus_outage() -> None:
    # neutron-server lost the same bus: its "dead" is as stale as our silence (early_ok=False).
    dead_in_neutron = obs(LISTENING - 500, alive=False)
    j = judge(dead_in_neutron, LISTENING, POLICY, LISTENING + 10, early_ok=False)
    assert j.verdict is Verdict.UNKNOWN
    assert judge(dead_in_neutron, LISTENING, POLICY, LISTENING + DOWN, early_ok=False).verdict is Verdict.DEAD
    assert judge_all([dead_in_neutron], LISTENING, POLICY, LISTENING + 10, early_ok=False)["a1"].verdict is (
        Verdict.UNKNOWN
    )


@pytest.mark.parametrize("grace", [0.0, 10.0, DOWN, 3 * DOWN])
def test_window_is_the_longer_of_grace_and_down_time(grace: float) -> None:
    policy = LivenessPolicy(down_time=DOWN, startup_grace=grace, revive_hold=0.0, api_second_opinion=False)
    window = max(grace, DOWN)
    never_heard = obs(None, alive=True)
    assert judge(never_heard, LISTENING, policy, LISTENING + window - 0.01).verdict is Verdict.UNKNOWN
    assert judge(never_heard, LISTENING, policy, LISTENING + window).verdict is Verdict.DEAD


# -- after a full window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("silence", "neutron_alive", "policy", "expected"),
    [
        (DOWN - 1, True, POLICY, Verdict.ALIVE),
        (DOWN, True, POLICY, Verdict.ALIVE),  # exactly down_time is still alive
        (DOWN + 0.1, False, POLICY, Verdict.DEAD),
        (DOWN + 0.1, True, POLICY, Verdict.SUSPECT),  # api_second_opinion: Neutron still says alive
        (10 * DOWN, True, POLICY, Verdict.SUSPECT),
        (DOWN + 0.1, True, NO_SECOND_OPINION, Verdict.DEAD),
        (DOWN + 0.1, False, NO_SECOND_OPINION, Verdict.DEAD),
        (DOWN - 1, False, NO_SECOND_OPINION, Verdict.ALIVE),
    ],
)
def test_full_window(silence: float, neutron_alive: bool, policy: LivenessPolicy, expected: Verdict) -> None:
    now = LISTENING + 10 * DOWN
    j = judge(obs(now - silence, alive=neutron_alive), LISTENING, policy, now)
    assert j.verdict is expected, j.why
    assert j.last_heard == now - silence


def test_never_heard_after_a_full_window_is_dead_when_neutron_agrees() -> None:
    now = LISTENING + DOWN
    assert judge(obs(None, alive=False), LISTENING, POLICY, now).verdict is Verdict.DEAD
    assert judge(obs(None, alive=True), LISTENING, POLICY, now).verdict is Verdict.SUSPECT
    assert judge(obs(None, alive=True), LISTENING, NO_SECOND_OPINION, now).verdict is Verdict.DEAD


def test_dead_reason_names_the_silence() -> None:
    now = LISTENING + 300
    j = judge(obs(now - 100, alive=False), LISTENING, POLICY, now)
    assert j.verdict is Verdict.DEAD
    assert "silent 100s" in j.why


# -- revival hysteresis ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("back_for", "expected"),
    [
        (0.0, Verdict.WARMING),
        (60.0, Verdict.WARMING),
        (119.9, Verdict.WARMING),
        (120.0, Verdict.ALIVE),
        (500.0, Verdict.ALIVE),
    ],
)
def test_revived_agent_warms_for_revive_hold(back_for: float, expected: Verdict) -> None:
    now = LISTENING + 1000
    j = judge(obs(now - 1, revived_at=now - back_for), LISTENING, POLICY, now)
    assert j.verdict is expected, j.why
    assert j.is_target is (expected is Verdict.ALIVE)


def test_revived_agent_that_goes_silent_again_is_judged_on_its_silence() -> None:
    now = LISTENING + 1000
    j = judge(obs(now - DOWN - 1, alive=False, revived_at=now - DOWN - 30), LISTENING, POLICY, now)
    assert j.verdict is Verdict.DEAD


# -- is_target ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "admin", "target"),
    [
        (Verdict.ALIVE, True, True),
        (Verdict.ALIVE, False, False),
        (Verdict.WARMING, True, False),
        (Verdict.UNKNOWN, True, False),
        (Verdict.SUSPECT, True, False),
        (Verdict.DEAD, True, False),
    ],
)
def test_only_alive_admin_up_agents_are_targets(verdict: Verdict, admin: bool, target: bool) -> None:
    assert Judged(agent(admin=admin), verdict, "").is_target is target


def test_judge_all_keys_by_agent_id() -> None:
    observations = [Observation(agent(aid="x"), LISTENING + 500), Observation(agent(aid="y", alive=False), None)]
    out = judge_all(observations, LISTENING, POLICY, LISTENING + 500)
    assert {k: v.verdict for k, v in out.items()} == {"x": Verdict.ALIVE, "y": Verdict.DEAD}


# -- the safety properties, over random times -----------------------------------------------------

times = st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)


@given(
    last_heard=st.one_of(st.none(), times),
    listening=st.one_of(st.none(), times),
    now_after=st.floats(min_value=0.0, max_value=2000.0),
    neutron_alive=st.booleans(),
    second_opinion=st.booleans(),
    grace=st.floats(min_value=0.0, max_value=300.0),
    revived_ago=st.one_of(st.none(), st.floats(min_value=0.0, max_value=300.0)),
)
def test_dead_only_on_evidence(
    last_heard: float | None,
    listening: float | None,
    now_after: float,
    neutron_alive: bool,
    second_opinion: bool,
    grace: float,
    revived_ago: float | None,
) -> None:
    policy = LivenessPolicy(DOWN, grace, 120.0, api_second_opinion=second_opinion)
    now = max(last_heard or 0.0, listening or 0.0) + now_after
    revived_at = None if revived_ago is None or last_heard is None else min(now - revived_ago, last_heard)
    j = judge(Observation(agent(alive=neutron_alive), last_heard, revived_at), listening, policy, now)
    if j.verdict is not Verdict.DEAD:
        return
    assert listening is not None, "dead while not listening"
    assert last_heard is None or now - last_heard > DOWN, "dead though heard within down_time"
    window_full = now - listening >= max(grace, DOWN)
    heard_since = last_heard is not None and last_heard >= listening
    if not window_full:
        assert not neutron_alive, "dead inside the window while Neutron says alive"
        assert not heard_since, "dead inside the window though heard since listening"
    if second_opinion:
        assert not neutron_alive, "dead while Neutron still says alive"


# -- the brake ------------------------------------------------------------------------------------


def fleet(dead: int, total: int) -> list[Judged]:
    return [Judged(agent(aid=f"a{i}"), Verdict.DEAD if i < dead else Verdict.ALIVE, "") for i in range(total)]


@pytest.mark.parametrize(
    ("dead", "total", "policy", "brakes"),
    [
        (0, 0, BrakePolicy(), False),
        (0, 4, BrakePolicy(), False),
        (1, 1, BrakePolicy(), False),  # a single dead agent is the failure we exist for
        (1, 2, BrakePolicy(), False),
        (2, 4, BrakePolicy(), True),
        (2, 5, BrakePolicy(), False),
        (3, 5, BrakePolicy(), True),
        (2, 2, BrakePolicy(max_dead_fraction=1.0), True),
        (2, 3, BrakePolicy(max_dead_fraction=1.0), False),
        (2, 100, BrakePolicy(max_dead_agents=2), False),
        (3, 100, BrakePolicy(max_dead_agents=2), True),
        (1, 100, BrakePolicy(max_dead_agents=0), False),  # 0 = no absolute limit
        (40, 100, BrakePolicy(max_dead_agents=0), False),
    ],
)
def test_brake_thresholds(dead: int, total: int, policy: BrakePolicy, brakes: bool) -> None:
    reason = brake_reason(fleet(dead, total), policy)
    assert (reason is not None) is brakes, reason
    if reason is not None:
        assert f"{dead} of {total}" in reason


def test_brake_counts_only_dead_not_unknown_or_suspect() -> None:
    judged = fleet(1, 4) + [
        Judged(agent(aid=f"u{i}"), v, "") for i, v in enumerate([Verdict.UNKNOWN] * 2 + [Verdict.SUSPECT] * 2)
    ]
    assert brake_reason(judged, BrakePolicy()) is None
