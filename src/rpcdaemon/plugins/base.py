"""What the L3Agent and DHCPAgent plugins share: the check pass around the pure deciders.

The service calls ``check()`` every ``check_interval`` from its loop thread. A pass is:

1. reconcile with the Neutron API when due (every ``reconcile_interval``, after a failure, or when a
   heartbeat came from an agent the API did not list): O(agents) calls;
2. judge liveness from the registry (no API calls) and ask the plugin whether anything looks wrong;
   when nothing does, the pass ends here, so an idle check costs no API call;
3. otherwise take a fresh second opinion (one ``list_agents``) and re-read what the dead agents host,
   plan with the pure planner, fence the dead agents the plan moves work off when ``fence_command`` is
   set (``plugins.fence_gate``; never while the brake holds: the work of those not fenced stays), run
   the plan through the executor, fold the outcomes into the cache;
4. after every pass, follow the moves made until their ports are up (``plugins.follow_up``).

Its memories are small classes of their own: the pairs Neutron refused (``plugins.refusals``), the gap
between the reconciles the bus brings forward and the cadence of the brake's lines (``plugins.pacing``).
What differs between routers and networks is one ``acting.resources.ResourceKind`` per plugin.

A Neutron API outage is not a crash: the pass ends, ``api_ok_since`` is cleared, and no agent is judged
dead until the daemon has listened for a full window again (see ``deciding.liveness``).

With several instances (``coordination.leader``) the service calls ``standby_check()`` instead while
another instance is the active one: no write, one ``list_agents`` per ``reconcile_interval``, which keeps
``api_ok_since`` and the registry's agent list as a reconcile would, so that the listening window of a
standby promoted later counts from its own bus connection and reads (no new window). ``start_term()``
on a promotion drops what an earlier term cached (hints, followed moves) and makes the next pass start
with a full reconcile. The plugin's Neutron adapter is fenced (``acting.fence``): a write made after a
demotion is refused, and reported SKIPPED.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from rpcdaemon.acting.api import NeutronAPI, NeutronError
from rpcdaemon.acting.executor import Executor
from rpcdaemon.acting.fencing import Fencer
from rpcdaemon.acting.readiness import ReadinessFollower, ReadinessPolicy
from rpcdaemon.acting.resources import ROUTER, ResourceKind
from rpcdaemon.acting.watched import ApiErrors, WatchedAPI
from rpcdaemon.deciding.l3 import Plan
from rpcdaemon.deciding.liveness import (
    BrakePolicy,
    Judged,
    LivenessPolicy,
    Verdict,
    brake_reason,
    early_verdict_ok,
    judge_all,
)
from rpcdaemon.model import Action, Agent, AuditRecord, Outcome, OutcomeStatus, no_audit
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.bus_news import BusNews, HintView
from rpcdaemon.plugins.fence_gate import FenceGate
from rpcdaemon.plugins.follow_up import FollowUp
from rpcdaemon.plugins.hearing import BusEvent, Hearing
from rpcdaemon.plugins.pacing import BrakeLog, UnknownHostLimiter
from rpcdaemon.plugins.refusals import Refusals
from rpcdaemon.plugins.report import PassReport

# The brake while an operator released it (``rpcdaemon release-brake``): no share of dead agents trips it.
NO_BRAKE = BrakePolicy(max_dead_fraction=float("inf"), max_dead_agents=0)


@dataclass(frozen=True, slots=True)
class Timing:
    reconcile_interval: float = 60.0
    # After a failed or skipped action or an API error, reconcile again this soon (not every check).
    retry_reconcile_after: float = 10.0
    # A target must have been heard this recently right before a bind (roughly 2.5 reports).
    target_fresh: float = 75.0
    # While an agent is SUSPECT (we hear nothing, Neutron's last word was alive), ask Neutron again
    # at most this often: a lasting disagreement costs one list_agents per interval, no more.
    opinion_interval: float = 2.0
    # While the mass-failure brake holds, repeat its ERROR this often (not every check).
    brake_log_interval: float = 10.0
    # A heartbeat from a host the API does not list brings the next reconcile forward, but at most
    # once per this many seconds: anyone who can publish on the bus can invent host names.
    unknown_reconcile_every: float = 30.0
    # A (resource, agent) pair Neutron refused for good is not planned again for this long, or until
    # that agent restarts (its heartbeat says start_flag): its configuration may have changed.
    refusal_memory: float = 3600.0
    # A router found hosted by no agent is scheduled only once it has stayed so this long: a move made by
    # someone else (``rpcdaemon evacuate``, ``openstack network agent remove router`` then ``add router``)
    # passes through that state between its unbind and its bind, and must not be raced.
    unhosted_grace: float = 5.0


class FailoverPlugin:
    """Base for the plugins that move work off dead agents. Subclasses fill in the hooks."""

    name = "base"
    agent_type = ""
    resource: ResourceKind = ROUTER  # what it moves (and readiness following looks at)
    bindings: dict[str, frozenset[str]]  # resource id -> ids of the agents hosting it (set by subclasses)
    brake: BrakePolicy  # set by subclasses from their policy
    # What it hears on the bus (``plugins.hearing``; the service listens for every plugin's): the heartbeats.
    hears = Hearing()

    def __init__(
        self,
        api: NeutronAPI,
        registry: AgentRegistry,
        executor: Executor,
        liveness: LivenessPolicy,
        timing: Timing,
        *,
        bus_since: Callable[[], float | None],
        bus_outages: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        readiness: ReadinessPolicy | None = None,
        fencer: Fencer | None = None,
    ) -> None:
        self.api = api
        self.registry = registry
        self.executor = executor
        self.liveness = liveness
        self.timing = timing
        self._bus_since = bus_since
        self._bus_outages = bus_outages
        self.clock = clock
        self.log = logger or logging.getLogger(f"rpcdaemon.{self.name.lower()}")
        self.started_at = clock()
        self.api_ok_since: float | None = None
        # How the last reconcile or failed call went: None before the first, True answered, False failed.
        # Read by other threads (the service's probe); written here only (a bool: atomic to readers).
        self.api_ok: bool | None = None
        self._next_reconcile = self.started_at
        self._standby_read_at = self.started_at  # a standby's next list_agents (standby_check)
        self.last = PassReport()
        self.totals: Counter[str] = Counter()
        self._next_opinion = self.started_at
        self._held = BrakeLog(interval=timing.brake_log_interval, plugin=self.name, clock=clock, logger=self.log)
        self._unknown = UnknownHostLimiter(every=timing.unknown_reconcile_every, since=self.started_at,
                                           plugin=self.name, logger=self.log)
        # Hints off the bus and heartbeat load counts: targeted re-reads between reconciles.
        self.news = BusNews(self, resource=self.resource)
        # The (router or network, agent) pairs Neutron refused for good, or whose agent never brought it up.
        self.refusals = Refusals(registry, memory=timing.refusal_memory, plugin=self.name, clock=clock,
                                 logger=self.log)
        # Off unless asked for (wiring passes the [L3Agent]/[DHCPAgent] ready_timeout).
        self.follower = ReadinessFollower(api, readiness or ReadinessPolicy(timeout=0), kind=self.resource,
                                          plugin=self.name, clock=clock, logger=self.log)
        self.follow_up = FollowUp(self.follower, executor, self.refusals, resource=self.resource, plugin=self.name,
                                  logger=self.log)
        # The audit trail (``model.AuditRecord``; the service sets it when [Daemon] audit_log is on): what the
        # service cannot derive from the PassReport, e.g. fence runs: self.audit("fence", plugin=..., host=...).
        self.audit: AuditRecord = no_audit
        # Called with the pass's verdicts and plan once decided, before any fence or move (the service's
        # audit trail, so that its verdict and brake lines come before the fence and action lines).
        self.on_decided: Callable[[PassReport], None] | None = None
        # [L3Agent]/[DHCPAgent] fence_command: a dead agent's work moves only once it is fenced (plugins.fence_gate).
        self.fencing = FenceGate(fencer, registry, plugin=self.name, what=self.resource.plural, clock=clock,
                                 logger=self.log) if fencer is not None else None
        # ``rpcdaemon release-brake`` (the control channel; the service sets it before each pass): while set,
        # the mass-failure brake does not hold back this plugin's moves. The text says who released it and why.
        self.brake_released: str | None = None
        # Failed API calls by class, the plugin's and its executor's (``build_plugin`` wraps both adapters
        # in WatchedAPIs sharing one count): rpcdaemon_api_errors_total.
        self.api_errors = api.errors if isinstance(api, WatchedAPI) else ApiErrors()

    # -- hooks -----------------------------------------------------------------------------------
    def reconcile_resources(self, agents: list[Agent]) -> None:
        """Re-read this plugin's resources and all bindings of its agents from the API."""
        raise NotImplementedError

    def wants_action(self, judged: dict[str, Judged]) -> bool:
        """Cheap (cache-only) test: does anything look wrong?"""
        raise NotImplementedError

    def refresh_for(self, dead: list[Agent]) -> None:
        """Re-read what the dead agents host right before planning (a handful of calls)."""
        raise NotImplementedError

    def plan(self, judged: dict[str, Judged], unfenced: frozenset[str] = frozenset()) -> Plan:
        """The pure planner's plan; the dead agents in ``unfenced`` keep their work (not fenced yet); the
        brake of ``brake_policy()``."""
        raise NotImplementedError

    def brake_policy(self) -> BrakePolicy:
        """The brake this pass: the configured one, or none while an operator released it."""
        return NO_BRAKE if self.brake_released is not None else self.brake

    def fold(self, outcomes: list[Outcome]) -> None:
        """Apply outcomes to the cached bindings."""
        raise NotImplementedError

    def hint_view(self) -> HintView | None:
        """The cache as the bus hints are judged against (None: this plugin takes no hints)."""
        return None

    def refresh_resources(self, ids: Sequence[str]) -> None:
        """Re-read these resources and their bindings (two calls each), after bus hints."""

    def take(self, event: BusEvent) -> None:
        """Bus thread: news off the bus, for a plugin that ``hears`` some (only queue it, never call the API)."""

    # -- shared machinery --------------------------------------------------------------------------
    @property
    def follows(self) -> str:
        """What readiness following looks at ("router", "network"): the audit trail's ready lines say it."""
        return self.resource.name

    def listening_since(self) -> float | None:
        bus = self._bus_since()
        if bus is None or self.api_ok_since is None:
            return None
        return max(bus, self.api_ok_since, self.started_at)

    def judge(self, now: float) -> dict[str, Judged]:
        return judge_all(
            self.registry.observations(self.agent_type),
            self.listening_since(),
            self.liveness,
            now,
            early_ok=early_verdict_ok(self._bus_since(), self._bus_outages(), self.liveness, now),
        )

    def request_reconcile(self, delay: float = 0.0) -> None:
        self._next_reconcile = min(self._next_reconcile, self.clock() + delay)

    @property
    def window(self) -> float:
        """The rate limit of every reconcile the bus can bring forward (``unknown_reconcile_every``)."""
        return self.timing.unknown_reconcile_every

    def reconcile_soon(self, now: float) -> float:
        """Bring the next reconcile forward, at most once per ``window`` since the last one (shared by
        every bus-driven trigger: whoever can publish on the bus can fake them); returns the delay."""
        delay = self._unknown.delay(now)
        self.request_reconcile(delay)
        return delay

    def check(self, *, act: bool = True) -> PassReport:
        """One pass. Never raises: an error is logged and the next pass tries again.

        ``act=False`` (the daemon is paused): judge, ask Neutron again about suspects, plan from the cache
        (no re-read of the dead agents' work, no fence, no move), so that the live view says what would be done."""
        now = self.clock()
        report = PassReport(at=now)
        try:
            self._check(now, report, act=act)
        except NeutronError as err:
            report.api_calls = True
            report.ok = False
            self._api_failed(err)
        except Exception:
            report.ok = False
            self.log.exception("%s pass failed; trying again next check", self.name)
            self.request_reconcile(self.timing.retry_reconcile_after)
        try:
            self.fold(self.follow_up.run(report))  # also on an idle pass, but only while moves are followed
        except Exception:
            self.log.exception("%s readiness check failed; trying again next check", self.name)
        self.last = report
        return report

    def _check(self, now: float, report: PassReport, *, act: bool = True) -> None:
        if now < self._next_reconcile and self.api_ok_since is not None:
            self._note_unknown(now)  # else the reconcile due now settles who is unknown
            report.api_calls |= self.news.note(now)  # hints and load counts: targeted re-reads
        if now >= self._next_reconcile or self.api_ok_since is None:
            report.api_calls = True
            self.news.discard()  # the reconcile reads everything they could say
            self._reconcile(now)
        judged = self.judge(now)
        if self.news.new_targets(judged, now):
            report.api_calls = True
            self.news.discard()
            self._reconcile(now)
            judged = self.judge(now)
        report.judged = judged
        if self._ask_again(judged, now):
            report.api_calls = True
            fresh = [a for a in self.api.list_agents() if a.agent_type == self.agent_type]
            self.registry.update_agents(fresh)
            judged = self.judge(self.clock())
            report.judged = judged
        if not self.wants_action(judged):
            self._held.say(())
            return
        report.api_calls = True
        dead = [j.agent for j in judged.values() if j.verdict is Verdict.DEAD]
        # Agents whose fence failed lately keep their work until the retry: no re-read of it either.
        unfenced = self.fencing.holding() if self.fencing is not None else frozenset()
        if act and dead and brake_reason(judged.values(), self.brake_policy()) is None:
            # Not while braked: a long brake must not cost calls every check.
            self.refresh_for([a for a in dead if a.id not in unfenced])
        plan = self.plan(judged, unfenced)
        if not act:
            report.plan = plan
            return
        if self.on_decided is not None:  # the audit trail: verdicts and the brake, before any fence or move
            self.on_decided(replace(report, plan=plan))
        if self.fencing is not None and not plan.braked:  # the brake first: never fence half the cloud
            plan, runs = self.fencing.fence_first(judged, plan, unfenced, replan=lambda held: self.plan(judged, held),
                                                  bindings=self.bindings, audit=self.audit,
                                                  progress=self._pass_progress)
            report.fences += runs
        report.plan = plan
        self._held.say(plan.held, error=plan.braked)
        if not plan.actions:
            return
        started = self.clock()
        outcomes = self.executor.run(plan.actions, self.still_valid)
        report.outcomes = outcomes
        for o in outcomes:
            if o.refusal and o.action.target is not None:
                self.refusals.refuse(o.action.resource_id, o.action.target.id, o.detail or o.refusal)
        self.fold(outcomes)
        self.follower.track(outcomes, started)
        self._summarise(outcomes, self.clock() - started)

    def _pass_progress(self) -> None:
        """The running pass is alive (a fence command still runs): the service's watchdog hook."""
        if self.executor.on_progress is not None:
            self.executor.on_progress()

    # -- several instances (coordination.leader): the service calls these instead of check() ----------------
    def standby_check(self) -> PassReport:
        """A standby's pass: no write and at most one read (``list_agents``) per ``reconcile_interval``.

        The read keeps ``api_ok_since`` (so the listening window of a standby promoted later counts from
        its own bus connection and API reads: no new window) and the registry's agent list warm, as a
        reconcile would; the verdicts are judged from the registry for the metrics, with no API call."""
        now = self.clock()
        report = PassReport(at=now)
        if now >= self._standby_read_at:
            report.api_calls = True
            self._standby_read_at = now + self.timing.reconcile_interval
            try:
                agents = self.api.list_agents()
            except NeutronError as err:
                report.ok = False
                self._api_failed(err)
                self._standby_read_at = now + self.timing.retry_reconcile_after / 2
            else:
                self.registry.replace_agents(agents, now)
                if self.api_ok_since is None:
                    self.log.info("Neutron API reachable; %d %ss listed (standby: reading agents every %.0fs)",
                                  sum(1 for a in agents if a.agent_type == self.agent_type), self.agent_type,
                                  self.timing.reconcile_interval)
                    self.api_ok_since = self.clock()
                self.api_ok = True
        report.judged = self.judge(now)
        self.last = report
        return report

    def start_term(self) -> None:
        """This instance has just become the active one: whatever it cached in an earlier term (bindings,
        bus hints, moves it followed) may be stale, so the next pass starts with a full reconcile."""
        now = self.clock()
        self.news.discard()
        self.follower.tracked.clear()
        self._next_reconcile = min(self._next_reconcile, now)
        self._next_opinion = min(self._next_opinion, now)
        self._standby_read_at = now  # if demoted again, read at once

    def _ask_again(self, judged: dict[str, Judged], now: float) -> bool:
        """Should we take a fresh second opinion from Neutron before planning?

        Yes when an agent that hosts work is DEAD (confirm with fresh data) or SUSPECT (our silence vs
        Neutron's stale "alive"), rate-limited by ``opinion_interval``.
        """
        if not self.liveness.api_second_opinion or now < self._next_opinion:
            return False
        doubtful = {aid for aid, j in judged.items() if j.verdict in (Verdict.DEAD, Verdict.SUSPECT)}
        if not doubtful:
            return False
        pessimistic = {
            aid: replace(j, verdict=Verdict.DEAD) if aid in doubtful else j for aid, j in judged.items()
        }
        if not self.wants_action(pessimistic):
            return False
        self._next_opinion = now + self.timing.opinion_interval
        return True

    def _reconcile(self, now: float) -> None:
        agents = self.api.list_agents()
        self.registry.replace_agents(agents, now)
        self.reconcile_resources([a for a in agents if a.agent_type == self.agent_type])
        if self.api_ok_since is None:
            self.log.info("Neutron API reachable; %d %ss listed", sum(
                1 for a in agents if a.agent_type == self.agent_type), self.agent_type)
            self.api_ok_since = self.clock()
        self.api_ok = True
        self._next_reconcile = now + self.timing.reconcile_interval
        self._unknown.reconciled(now)

    def _note_unknown(self, now: float) -> None:
        """Hosts heard that the API did not list: reconcile soon, at most once per
        ``unknown_reconcile_every`` (any reconcile restarts that gap; see ``plugins.pacing``)."""
        unknown = self.registry.take_unknown(self.agent_type)
        if unknown:
            self.request_reconcile(self._unknown.heard(unknown, now))

    def _api_failed(self, err: NeutronError) -> None:
        if self.api_ok_since is not None or not self.totals["api_errors"]:
            self.log.warning("Neutron API call failed (%s); no agent is judged dead until it is back"
                             " and a full window has passed", err)
        self.totals["api_errors"] += 1
        self.api_ok_since = None
        self.api_ok = False
        self.request_reconcile(self.timing.retry_reconcile_after / 2)

    def still_valid(self, action: Action) -> str | None:
        """Right before a call: the source must still be silent, the target still speaking."""
        now = self.clock()
        if action.source is not None and action.source_dead:
            heard = self.registry.last_heard(action.source.agent_type, action.source.host)
            if heard is not None and now - heard <= self.liveness.down_time:
                return f"source {action.source.describe()} came back"
        if action.target is not None:
            heard = self.registry.last_heard(action.target.agent_type, action.target.host)
            fresh = min(self.timing.target_fresh, self.liveness.down_time)
            if heard is None or now - heard > fresh:
                return f"target {action.target.describe()} is no longer heard"
        return None

    def _summarise(self, outcomes: list[Outcome], seconds: float) -> None:
        counts = Counter(o.status for o in outcomes)
        for status, n in counts.items():
            self.totals[status.value] += n
        if counts[OutcomeStatus.FAILED] or counts[OutcomeStatus.SKIPPED]:
            # A skipped move may have unbound its router already (the veto came after the unbind):
            # the cache still shows it on the source, so only a fresh read lets the next pass bind it.
            self.request_reconcile(self.timing.retry_reconcile_after)
        self.log.info(
            "%s pass: %d actions in %.2fs: %s", self.name, len(outcomes), seconds,
            ", ".join(f"{n} {s.value}" for s, n in sorted(counts.items(), key=lambda kv: kv[0].value)),
        )
