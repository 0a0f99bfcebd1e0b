"""Pure liveness verdicts: observations + what we know of our own links + policy + now -> verdicts.

Called by the L3Agent and DHCPAgent plugins every check, before planning. No I/O, no clock reads.

An agent is DEAD only when all of these hold:
- the daemon has been listening (bus connected and Neutron API reachable) for a full window
  (``startup_grace``, by default one ``down_time``) - otherwise a silence may be our own outage;
- the daemon has heard nothing from it for ``down_time`` on its own monotonic clock;
- with ``api_second_opinion``, Neutron's own ``alive`` flag agrees (until it does, the agent is
  SUSPECT: nothing moves, and the plugin asks Neutron again).
Inside the start-up window an agent is DEAD only when Neutron's API already says it is dead and we
have not heard it since we began listening - but never in the window that follows a bus outage,
when Neutron's view is as stale as ours (``early_verdict_ok``; later windows may use it again). An
agent that speaks again after a silence we witnessed is WARMING (alive, keeps what it hosts, but is
not a move target) until it has stayed alive for ``revive_hold``: a flapping agent neither receives
nor loses work every cycle.

A *new* agent (one that registered while the daemon runs, see ``observing.registry``) is not a
flapping one: it is WARMING only until it has been heard steadily (``heard_steadily``: two
heartbeats at least half a ``report_interval`` apart with no gap over 1.5 ``report_interval``), so
it becomes a target about one report interval after it registers, not after ``revive_hold``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from rpcdaemon.model import Agent
from rpcdaemon.observing.registry import Observation


class Verdict(StrEnum):
    ALIVE = "alive"  # a fine move target (if admin up and eligible)
    WARMING = "warming"  # alive again, but not yet for revive_hold: keeps its work, gets nothing new
    DEAD = "dead"  # its work moves
    SUSPECT = "suspect"  # silent past down_time, but Neutron's last word was "alive": ask Neutron again
    UNKNOWN = "unknown"  # not enough evidence either way: nothing moves off it, nothing moves onto it


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    down_time: float
    startup_grace: float
    revive_hold: float
    api_second_opinion: bool = True
    # An agent silent this long (default: half of down_time) counts toward the mass-failure brake
    # before it is judged dead, so agents that fail together with their heartbeat phases a few
    # seconds apart are seen together, not one by one.
    failing_after: float | None = None
    # neutron.conf [AGENT] report_interval: how often a steady agent reports (``heard_steadily``).
    report_interval: float = 30.0

    @property
    def failing_threshold(self) -> float:
        return self.failing_after if self.failing_after is not None else self.down_time / 2

    @property
    def window(self) -> float:
        """How long the daemon must listen before its own silence counts (see ``_verdict``)."""
        return max(self.startup_grace, self.down_time)


# A run of heartbeats breaks at a gap longer than this many report intervals (one missed report).
STEADY_GAP = 1.5
# ... and is steady once it spans at least this many report intervals (two reports on schedule).
STEADY_SPAN = 0.5


def heard_steadily(beats: Sequence[float], report_interval: float) -> bool:
    """Whether a new agent's heartbeat times (ascending) hold a steady run.

    Steady: at least two heartbeats, spanning at least ``STEADY_SPAN`` report intervals, with no gap
    between neighbours over ``STEADY_GAP`` report intervals. An agent reporting on schedule is steady
    at its second heartbeat; a burst of reports (a restart loop) or a stutter is not.
    """
    interval = max(report_interval, 1e-3)
    run_start: float | None = None
    prev: float | None = None
    for beat in beats:
        if prev is None or run_start is None or beat - prev > STEADY_GAP * interval:
            run_start = beat
        elif beat - run_start >= STEADY_SPAN * interval:
            return True
        prev = beat
    return False


def early_verdict_ok(bus_since: float | None, bus_outages: int, policy: LivenessPolicy, now: float) -> bool:
    """Whether Neutron's own "dead" may settle a verdict inside our window (the ``early_ok`` of ``judge``).

    Not within one full window after a reconnection that followed a bus outage: neutron-server lost
    the same bus, so its ``alive`` flags are as stale as our silence until the agents have had a
    window to report again. Once that window is over, a later start-up or API outage window may use
    Neutron's word again: an outage long ago says nothing about Neutron's view now.
    """
    if bus_outages == 0:
        return True
    if bus_since is None:
        return False  # off the bus right now: nothing is judged anyway
    return now - bus_since >= policy.window


@dataclass(frozen=True, slots=True)
class Judged:
    agent: Agent
    verdict: Verdict
    why: str
    last_heard: float | None = None
    # Missing heartbeats for longer than failing_after (witnessed while listening): counts for the brake.
    failing: bool = False

    @property
    def is_target(self) -> bool:
        return self.verdict is Verdict.ALIVE and self.agent.admin_state_up


def judge(
    obs: Observation,
    listening_since: float | None,
    policy: LivenessPolicy,
    now: float,
    *,
    early_ok: bool = True,
) -> Judged:
    """The verdict on one agent (see ``_verdict``), plus whether it counts as failing for the brake."""
    judged = _verdict(obs, listening_since, policy, now, early_ok=early_ok)
    if listening_since is None or judged.verdict is Verdict.WARMING:
        return judged
    witnessed_from = max(obs.last_heard if obs.last_heard is not None else listening_since, listening_since)
    if judged.verdict in (Verdict.DEAD, Verdict.SUSPECT) or now - witnessed_from > policy.failing_threshold:
        return replace(judged, failing=True)
    return judged


def _verdict(
    obs: Observation,
    listening_since: float | None,
    policy: LivenessPolicy,
    now: float,
    *,
    early_ok: bool = True,
) -> Judged:
    """The verdict on one agent. ``listening_since`` is None while the bus or the API is down.

    ``early_ok`` allows the early verdict inside the first window (Neutron already says dead). The
    caller clears it for one window after a bus outage (``early_verdict_ok``): neutron-server lost the
    same bus, so its ``alive`` flags are as stale as our silence, and an agent that is slow to
    reconnect must not lose its routers.
    """
    agent = obs.agent
    if listening_since is None:
        return Judged(agent, Verdict.UNKNOWN, "not listening (bus or API down)", obs.last_heard)
    heard_while_listening = obs.last_heard is not None and obs.last_heard >= listening_since
    silent_for = now - obs.last_heard if obs.last_heard is not None else None
    if silent_for is not None and silent_for <= policy.down_time:
        if obs.revived_at is not None and now - obs.revived_at < policy.revive_hold:
            return Judged(
                agent,
                Verdict.WARMING,
                f"back {now - obs.revived_at:.0f}s ago, target after {policy.revive_hold:.0f}s",
                obs.last_heard,
            )
        if obs.new_beats is not None and not heard_steadily(obs.new_beats, policy.report_interval):
            return Judged(
                agent,
                Verdict.WARMING,
                f"new, heard {len(obs.new_beats)}x; target once heard steadily"
                f" (2 reports, {policy.report_interval:.0f}s interval)",
                obs.last_heard,
            )
        return Judged(agent, Verdict.ALIVE, f"heard {silent_for:.1f}s ago", obs.last_heard)

    listened = max(0.0, now - listening_since)  # a listener stamped a moment after `now` was read: not "-0s"
    silence = f"silent {silent_for:.0f}s" if silent_for is not None else "never heard"
    if listened < policy.window:
        # Our own window is too short to know. Only Neutron's verdict can settle it early.
        if early_ok and not heard_while_listening and not agent.alive:
            return Judged(agent, Verdict.DEAD, f"{silence}; Neutron agrees it is dead", obs.last_heard)
        return Judged(
            agent, Verdict.UNKNOWN, f"{silence}; listening only {listened:.0f}s", obs.last_heard
        )
    if policy.api_second_opinion and agent.alive:
        return Judged(agent, Verdict.SUSPECT, f"{silence}; Neutron still says alive", obs.last_heard)
    return Judged(agent, Verdict.DEAD, f"{silence} (> {policy.down_time:.0f}s)", obs.last_heard)


def judge_all(
    observations: Iterable[Observation],
    listening_since: float | None,
    policy: LivenessPolicy,
    now: float,
    *,
    early_ok: bool = True,
) -> dict[str, Judged]:
    return {o.agent.id: judge(o, listening_since, policy, now, early_ok=early_ok) for o in observations}


@dataclass(frozen=True, slots=True)
class BrakePolicy:
    max_dead_fraction: float = 0.5
    max_dead_agents: int = 0  # 0 = no absolute limit


def brake_reason(judged: Iterable[Judged], policy: BrakePolicy) -> str | None:
    """Why the mass-failure brake holds, or None.

    It looks only when at least one agent is DEAD, and counts every agent that is dead or failing
    (silent past ``failing_after``, or suspect), so agents that go quiet together are seen together.
    A single failing agent never trips the share limit (that is the ordinary failure we exist for,
    even in a two-agent cloud); two or more trip it when they are at least ``max_dead_fraction`` of
    the agents of that type. ``max_dead_agents`` adds an absolute limit.
    """
    items = list(judged)
    total = len(items)
    if total == 0 or not any(j.verdict is Verdict.DEAD for j in items):
        return None
    down = sum(1 for j in items if j.verdict is Verdict.DEAD or j.failing)
    if policy.max_dead_agents and down > policy.max_dead_agents:
        return f"{down} of {total} agents dead or failing, more than max_dead_agents={policy.max_dead_agents}"
    if down >= 2 and down >= policy.max_dead_fraction * total:
        return (
            f"{down} of {total} agents dead or failing, at least max_dead_fraction={policy.max_dead_fraction:g}"
            " of them: this looks like a network or bus problem, not agent failures"
        )
    return None
