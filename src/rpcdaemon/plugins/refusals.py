"""The refusal memory of a failover plugin: (resource, agent) pairs not to plan again for a while.

Neutron refuses some binds for good (InvalidL3Agent, a DVR refusal: the executor's ``Outcome.refusal``),
and the readiness follow-up gives up on a target that never brought a resource up (``move_unready``).
Planning such a pair again cannot succeed, so ``FailoverPlugin`` keeps one ``Refusals`` and hands
``pairs()`` to its planner every pass. A pair is forgotten when its agent restarts (its heartbeat says
``start_flag``: its configuration may have changed) or after ``memory`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from rpcdaemon.observing.registry import AgentRegistry

Pair = tuple[str, str]  # (router or network id, agent id)


class Refusals:
    """The pairs Neutron (or the target) refused, with when; loop thread only."""

    def __init__(self, registry: AgentRegistry, *, memory: float, plugin: str, clock: Callable[[], float],
                 logger: logging.Logger) -> None:
        self._registry = registry
        self._memory = memory
        self._plugin = plugin
        self._clock = clock
        self._log = logger
        self._at: dict[Pair, float] = {}  # pair -> when it was refused (last)

    def __contains__(self, pair: object) -> bool:
        return pair in self._at

    def __iter__(self) -> Iterator[Pair]:
        """The pairs remembered now (without forgetting any: see ``pairs``)."""
        return iter(self._at)

    def refuse(self, resource_id: str, agent_id: str, reason: str) -> None:
        """Plan ``resource_id`` onto ``agent_id`` no more: Neutron refused it for good (InvalidL3Agent,
        a DVR refusal, ...) or the agent never brought it up. One WARNING per pair; the pair is forgotten
        when the agent restarts or after ``memory`` seconds."""
        key = (resource_id, agent_id)
        if key not in self._at:
            agent = self._registry.agent(agent_id)
            self._log.warning(
                "%s: agent %s refused %s (%s); not planning that pair again until the agent restarts"
                " (at most %.0fs)", self._plugin, agent.describe() if agent else agent_id, resource_id, reason,
                self._memory,
            )
        self._at[key] = self._clock()

    def pairs(self) -> frozenset[Pair]:
        """The pairs the planners must not pick, after forgetting those of restarted agents and old ones."""
        if not self._at:
            return frozenset()
        now = self._clock()
        restarted: dict[str, float | None] = {}
        keep: dict[Pair, float] = {}
        for (rid, aid), at in self._at.items():
            if aid not in restarted:
                agent = self._registry.agent(aid)
                restarted[aid] = (
                    self._registry.restarted_at(agent.agent_type, agent.host) if agent is not None else None
                )
            started = restarted[aid]
            if now - at >= self._memory:
                continue
            if started is not None and started > at:
                self._log.info("%s: agent %s restarted; %s may be planned onto it again", self._plugin, aid, rid)
                continue
            keep[(rid, aid)] = at
        self._at = keep
        return frozenset(keep)
