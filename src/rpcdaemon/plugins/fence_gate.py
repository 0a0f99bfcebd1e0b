"""The fencing rule of the check pass: a dead agent's work moves only once that agent is fenced.

``plugins.base`` keeps one ``FenceGate`` per failover plugin when ``fence_command`` is set
(``acting.fencing`` runs the command). In an active pass whose plan is not braked (the mass-failure
brake is decided first: a bus fault must never power off half the cloud), ``fence_first`` hands the
agents the plan moves work off to ``clear`` before the executor sees the plan:

- an agent fenced before and not heard since needs nothing: a successful fence is remembered until
  the agent speaks again (it was restarted or revived; if it dies again, it is fenced again);
- the others are fenced now (in parallel). A success lets the agent's work move in this very pass;
- a failure (non-zero exit, timeout, not found) holds the agent's work where it is, with a WARNING,
  and is tried again after ``retry_after`` seconds, doubling up to ``retry_max``: not every check.
  With ``move_when_fails`` the work moves anyway (WARNING too), and the fence is still retried on
  that schedule while any of it is left to move;
- not the active instance (the lease was lost meanwhile): nothing is run, the work stays.

The held agents go back to the pure planners (``unfenced``), which then treat them as hosting their
work: no unbind from them, no replacement for it (see ``deciding.l3.plan_l3``). The gate keeps only
the small memory above, keyed by agent id, and forgets the agents Neutron no longer lists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from rpcdaemon.acting.fencing import Fencer, FenceResult, FenceRun
from rpcdaemon.deciding.l3 import Plan
from rpcdaemon.deciding.liveness import Judged
from rpcdaemon.model import Agent, AuditRecord
from rpcdaemon.observing.registry import AgentRegistry


@dataclass(frozen=True, slots=True)
class _Failed:
    at: float  # when the failed run started (the plugin's clock)
    retry_at: float
    attempts: int
    detail: str


class FenceGate:
    def __init__(
        self,
        fencer: Fencer,
        registry: AgentRegistry,
        *,
        plugin: str,
        what: str,
        clock: Callable[[], float],
        logger: logging.Logger,
    ) -> None:
        self.fencer = fencer
        self.policy = fencer.policy
        self.registry = registry
        self.plugin = plugin
        self.what = what  # "routers" or "networks", for the log
        self.clock = clock
        self.log = logger
        self.fenced: dict[str, float] = {}  # agent id -> when the fence that succeeded started
        self.failed: dict[str, _Failed] = {}

    def holding(self) -> frozenset[str]:
        """Agents whose work stays this pass without a new run: a failed fence waiting for its retry
        (none with ``move_when_fails``). Forgets first what agents heard again make stale."""
        self._forget_heard()
        if self.policy.move_when_fails:
            return frozenset()
        now = self.clock()
        return frozenset(aid for aid, f in self.failed.items() if now < f.retry_at)

    def why_held(self, agent_id: str) -> str:
        failed = self.failed.get(agent_id)
        return failed.detail if failed is not None else "not the active instance"

    def fence_first(self, judged: Mapping[str, Judged], plan: Plan, unfenced: frozenset[str], *,
                    replan: Callable[[frozenset[str]], Plan], bindings: Mapping[str, frozenset[str]],
                    audit: AuditRecord, progress: Callable[[], None] | None = None) -> tuple[Plan, list[FenceRun]]:
        """Fence the dead agents this plan moves work off before the executor sees it; plan again
        (``replan`` with the agents held), without the work of those not fenced, until no new one fails (a
        plan cut at max_moves may reach further dead agents once some are held). Each run is one audit
        line. Returns the plan, which says why the work of the agents held stays, and the runs made."""
        held = {aid: self.why_held(aid) for aid in unfenced}
        made: list[FenceRun] = []
        while True:
            sources = {a.source.id: a.source for a in plan.actions if a.source_dead and a.source is not None}
            hold, runs = self.clear(list(sources.values()), progress)
            made += runs
            for run in runs:
                audit("fence", plugin=self.plugin, host=run.agent.host, agent_id=run.agent.id,
                      agent_type=run.agent.agent_type, result=run.result.value, program=run.program,
                      exit_status=run.status, seconds=round(run.seconds, 3), detail=run.detail,
                      stderr=run.stderr_line, work="stays" if run.agent.id in hold else "moves")
            new = {aid: why for aid, why in hold.items() if aid not in held}
            if not new:
                break
            held.update(new)
            plan = replan(frozenset(held))
        hosting = {aid for aid in held if any(aid in hosts for hosts in bindings.values())}
        lines = tuple(
            f"{judged[aid].agent.describe() if aid in judged else aid} is not fenced ({held[aid]}); its "
            f"{self.what} stay on it until a fence succeeds" for aid in sorted(hosting))
        return (replace(plan, held=plan.held + lines) if lines else plan), made

    def clear(self, sources: Sequence[Agent], progress: Callable[[], None] | None = None
              ) -> tuple[dict[str, str], list[FenceRun]]:
        """Fence those of ``sources`` (agents the plan moves work off) that need it. Returns the agents
        whose work must stay (id -> why, for the log) and the runs made."""
        now = self.clock()
        hold: dict[str, str] = {}
        due: list[Agent] = []
        for agent in sources:
            if agent.id in self.fenced:
                continue
            failed = self.failed.get(agent.id)
            if failed is not None and now < failed.retry_at:
                if not self.policy.move_when_fails:
                    hold[agent.id] = failed.detail
                continue
            due.append(agent)
        if not due:
            return hold, []
        runs = self.fencer.fence(due, progress)
        for run in runs:
            if not self._note(run, now):
                hold[run.agent.id] = self.why_held(run.agent.id)
        return hold, runs

    def _note(self, run: FenceRun, started: float) -> bool:
        """Remember and log one run; True when the agent's work may move."""
        agent, said = run.agent, self._said(run)
        if run.result is FenceResult.OK:
            self.fenced[agent.id] = started
            self.failed.pop(agent.id, None)
            self.log.info("%s: fenced %s: %s; its %s may move", self.plugin, agent.describe(), said, self.what)
            return True
        if run.result is FenceResult.DRY_RUN:
            self.fenced[agent.id] = started
            self.log.info("%s: DRY RUN: would fence %s with %s first", self.plugin, agent.describe(), run.program)
            return True
        if run.result is FenceResult.NOT_ACTIVE:
            self.log.info("%s: %s not fenced: not the active instance", self.plugin, agent.describe())
            return False
        prior = self.failed.get(agent.id)
        attempts = prior.attempts + 1 if prior is not None else 1
        delay = min(self.policy.retry_max, self.policy.retry_after * 2 ** (attempts - 1))
        self.failed[agent.id] = _Failed(started, started + delay, attempts, f"{run.program} {run.detail}")
        if self.policy.move_when_fails:
            self.log.warning("%s: fence of %s failed: %s; moving its %s anyway (move_when_fence_fails = true)",
                             self.plugin, agent.describe(), said, self.what)
            return True
        self.log.warning("%s: fence of %s failed: %s; its %s stay on it (move_when_fence_fails = false), next "
                         "try in %.0fs", self.plugin, agent.describe(), said, self.what, delay)
        return False

    @staticmethod
    def _said(run: FenceRun) -> str:
        text = f"{run.program} {run.detail} in {run.seconds:.2f}s"
        # Quoted (%r): the line comes from a command, and must not forge log lines of its own.
        return f"{text}, stderr: {run.stderr_line!r}" if run.stderr_line else text

    def _forget_heard(self) -> None:
        """An agent heard after its fence (or failed fence) started is up again: fence it afresh if it
        dies again. Agents Neutron no longer lists are forgotten."""
        for aid, at in list(self.fenced.items()):
            agent = self._stale(aid, at)
            if agent is not None:
                del self.fenced[aid]
                if agent.host:
                    self.log.info("%s: %s heard again; it will be fenced again before its %s move",
                                  self.plugin, agent.describe(), self.what)
        for aid, failed in list(self.failed.items()):
            if self._stale(aid, failed.at) is not None:
                del self.failed[aid]

    def _stale(self, agent_id: str, at: float) -> Agent | None:
        """The agent, when it was heard after ``at``; an empty one when Neutron no longer lists it;
        None while the memory of it holds."""
        agent = self.registry.agent(agent_id)
        if agent is None:
            return Agent(agent_id, "", "")
        heard = self.registry.last_heard(agent.agent_type, agent.host)
        return agent if heard is not None and heard > at else None
