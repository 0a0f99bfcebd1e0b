"""A newly registered agent is a failover target once heard steadily; a returning one keeps its hold.

The registry (``observing.registry``) tells a new agent (never heard, not listed at the first
reconcile, never listed dead) from a returning one; ``deciding.liveness.heard_steadily`` decides when
a new one has been heard steadily. Times are plain floats on the daemon's monotonic clock.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpcdaemon.deciding.liveness import LivenessPolicy, Verdict, heard_steadily, judge
from rpcdaemon.model import L3_AGENT, Agent, Heartbeat
from rpcdaemon.observing.registry import AgentRegistry, Observation

DOWN = 75.0
RI = 30.0  # report_interval
HOLD = 120.0
POLICY = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=HOLD, report_interval=RI)


def l3(host: str, *, alive: bool = True) -> Agent:
    return Agent(id=f"id-{host}", agent_type=L3_AGENT, host=host, alive=alive)


def hb(host: str, at: float, *, start: bool = False) -> Heartbeat:
    return Heartbeat(agent_type=L3_AGENT, host=host, received_at=at, start_flag=start)


def started(*agents: Agent) -> AgentRegistry:
    """Listening since 0, first reconcile at 0 listing ``agents``."""
    reg = AgentRegistry(DOWN)
    reg.set_listening(0.0)
    reg.replace_agents(list(agents), now=0.0)
    return reg


def listed_now(reg: AgentRegistry, *agents: Agent, now: float) -> None:
    """A later reconcile: the agents of the first listing plus ``agents``."""
    reg.replace_agents([o.agent for o in reg.observations()] + list(agents), now=now)


def one(reg: AgentRegistry, host: str) -> Observation:
    (found,) = [o for o in reg.observations() if o.agent.host == host]
    return found


# -- the registry ----------------------------------------------------------------------------------


def test_a_new_agents_first_heartbeat_is_not_a_revival() -> None:
    reg = started(l3("old"))
    reg.record(hb("new", 500.0, start=True))  # registers long after we began listening
    listed_now(reg, l3("new"), now=501.0)
    reg.record(hb("new", 530.0))
    o = one(reg, "new")
    assert (o.revived_at, o.new_beats) == (None, (500.0, 530.0))


def test_an_agent_listed_at_the_first_reconcile_is_known() -> None:
    reg = started(l3("old"))
    reg.record(hb("old", 500.0, start=True))
    o = one(reg, "old")
    assert (o.revived_at, o.new_beats) == (500.0, None)


def test_an_agent_neutron_listed_as_dead_is_known() -> None:
    # Registered during a bus outage of ours, dead since: its return is a revival, not a birth.
    reg = started(l3("old"))
    listed_now(reg, l3("ghost", alive=False), now=100.0)
    reg.record(hb("ghost", 500.0, start=True))
    assert one(reg, "ghost").revived_at == 500.0


def test_before_the_first_listing_every_agent_is_known() -> None:
    reg = AgentRegistry(DOWN)
    reg.set_listening(0.0)
    reg.record(hb("x", DOWN + 1, start=True))  # the API was down at start-up
    reg.replace_agents([l3("x")], now=DOWN + 2)
    assert (one(reg, "x").revived_at, one(reg, "x").new_beats) == (DOWN + 1, None)


def test_a_new_agent_silent_past_down_time_comes_back_as_a_returning_one() -> None:
    reg = started()
    reg.record(hb("new", 10.0, start=True))
    listed_now(reg, l3("new"), now=11.0)
    reg.record(hb("new", 40.0))
    reg.record(hb("new", 40.0 + DOWN + 1, start=True))
    o = one(reg, "new")
    assert (o.revived_at, o.new_beats) == (40.0 + DOWN + 1, None)


def test_a_restart_inside_the_first_run_starts_the_run_again() -> None:
    reg = started()
    reg.record(hb("new", 10.0, start=True))
    listed_now(reg, l3("new"), now=11.0)
    reg.record(hb("new", 20.0, start=True))
    assert one(reg, "new").new_beats == (20.0,)


def test_a_flood_keeps_a_bounded_run() -> None:
    reg = started()
    for i in range(1000):
        reg.record(hb("new", float(i) / 100))
    listed_now(reg, l3("new"), now=11.0)
    beats = one(reg, "new").new_beats
    assert beats is not None
    assert len(beats) <= 32


# -- heard_steadily ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("beats", "steady"),
    [
        ((), False),
        ((0.0,), False),
        ((0.0, RI), True),  # two reports on schedule
        ((0.0, 0.5 * RI), True),
        ((0.0, 0.4 * RI), False),  # a burst, e.g. a restart loop
        ((0.0, 0.1, 0.2, 0.3), False),
        ((0.0, 1.6 * RI), False),  # a missed report breaks the run
        ((0.0, 1.6 * RI, 2.6 * RI), True),  # ... and a new run starts after the gap
        ((0.0, 1.4 * RI), True),
    ],
)
def test_heard_steadily(beats: tuple[float, ...], steady: bool) -> None:
    assert heard_steadily(beats, RI) is steady


@given(
    first=st.floats(DOWN + 1, 1e6),
    jitter=st.lists(st.floats(-0.25 * RI, 0.25 * RI), min_size=5, max_size=5),
)
def test_a_new_agent_reporting_on_schedule_is_a_target_at_its_second_heartbeat(
    first: float, jitter: list[float]
) -> None:
    """Documented: heartbeats every report_interval (+/- 25 %) make a target at the second one."""
    reg = started(l3("old"))
    beats = [first + i * RI + j for i, j in enumerate(jitter)]
    reg.record(hb("new", beats[0], start=True))
    listed_now(reg, l3("new"), now=beats[0])
    assert judge(one(reg, "new"), 0.0, POLICY, beats[0]).verdict is Verdict.WARMING
    for at in beats[1:]:
        reg.record(hb("new", at))
        j = judge(one(reg, "new"), 0.0, POLICY, at)
        assert j.is_target, j.why
    assert beats[1] - beats[0] <= 1.5 * RI


@given(
    gaps=st.lists(st.floats(0.1, 3 * DOWN), min_size=1, max_size=30),
    first=st.floats(0.0, 3 * DOWN),
    probe=st.floats(0.0, 1.0),
    start_flags=st.lists(st.booleans(), min_size=31, max_size=31),
)
def test_a_returning_known_agent_is_never_a_target_before_revive_hold(
    gaps: list[float], first: float, probe: float, start_flags: list[bool]
) -> None:
    """An agent listed at start-up, whatever its rhythm: after any witnessed silence over down_time it
    is no target until revive_hold has passed, start_flag or not."""
    reg = started(l3("known"))
    times = [first]
    for gap in gaps:
        times.append(times[-1] + gap)
    last_return = None
    prev = 0.0  # listening since 0
    for at, flag in zip(times, start_flags, strict=False):
        reg.record(hb("known", at, start=flag))
        if at - prev > DOWN:
            last_return = at
        prev = at
    assert one(reg, "known").new_beats is None
    now = times[-1] + probe * DOWN
    j = judge(one(reg, "known"), 0.0, POLICY, now)
    if last_return is not None and now - last_return < HOLD:
        assert not j.is_target, j.why
