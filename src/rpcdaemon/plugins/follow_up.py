"""The readiness follow-up of a failover plugin: are the resources it moved up on their new hosts?

``FailoverPlugin.check`` calls ``FollowUp.run`` after every pass (an idle one too: it costs nothing
while no move is followed). The ``ReadinessFollower`` (``acting.readiness``) polls the followed moves'
ports, at most every poll interval, and says which are ready and which are not within the timeout.

With ``move_unready``, a resource its target did not bring up in time is unbound from that target
through the executor, like every other action (its INFO line and its audit line come from there), and
the pair goes into the plugin's refusal memory: the planner then moves it to another agent, never that
one again. An unbind that fails is followed once more, for a whole new timeout; one the write guard
refuses (this instance was demoted meanwhile) is left to the active instance, which follows or moves it
from its own reads.
"""

from __future__ import annotations

import logging

from rpcdaemon.acting.executor import Executor
from rpcdaemon.acting.readiness import Readiness, ReadinessFollower
from rpcdaemon.acting.resources import ResourceKind
from rpcdaemon.model import Action, Outcome, OutcomeStatus
from rpcdaemon.plugins.refusals import Refusals
from rpcdaemon.plugins.report import PassReport


class FollowUp:
    """The follower of one plugin, and what it does about the resources that did not come up."""

    def __init__(self, follower: ReadinessFollower, executor: Executor, refusals: Refusals, *,
                 resource: ResourceKind, plugin: str, logger: logging.Logger) -> None:
        self.follower = follower
        self._executor = executor
        self._refusals = refusals
        self._resource = resource
        self._plugin = plugin
        self._log = logger

    def run(self, report: PassReport) -> list[Outcome]:
        """Poll the followed moves' ports into ``report.readiness``; with ``move_unready``, unbind those
        not ready in time. Returns the unbinds' outcomes (the plugin folds them into its bindings)."""
        follower = self.follower
        if not follower.tracked:
            return []
        polls = follower.polls
        report.readiness = follower.poll()
        report.api_calls = report.api_calls or follower.polls != polls
        late = [r for r in report.readiness if not r.ready]
        if not follower.policy.move_unready or not late:
            return []
        return self._move_on(late)

    def _move_on(self, late: list[Readiness]) -> list[Outcome]:
        """Unbind what its target did not bring up; the planner then picks another agent, never that one
        again for it (the pair is refused)."""
        what = self._resource.name
        for r in late:
            self._refusals.refuse(r.resource_id, r.target.id,
                                  f"{what} not ready on {r.target.host} after {r.seconds:.0f}s")
        actions = [Action(self._resource.unbind, r.resource_id, source=r.target,
                          reason=f"not ready after {r.seconds:.0f}s") for r in late]
        outcomes = self._executor.run(actions)
        for r, o in zip(late, outcomes, strict=True):
            if o.status is OutcomeStatus.DONE:
                self._log.warning("%s: unbound %s %s from %s, which did not bring it up; moving it to another agent",
                                  self._plugin, what, r.resource_id, r.target.describe())
            elif o.status is OutcomeStatus.FAILED:
                self._log.warning("%s: cannot unbind %s %s from %s (%s); trying again in %.0fs unless it is up by "
                                  "then", self._plugin, what, r.resource_id, r.target.describe(), o.detail,
                                  self.follower.policy.timeout)
                self.follower.follow_again(r)
            else:  # skipped: demoted meanwhile (the write guard), or stopping
                self._log.info("%s: %s %s not unbound from %s: %s", self._plugin, what, r.resource_id,
                               r.target.describe(), o.detail)
        return outcomes
