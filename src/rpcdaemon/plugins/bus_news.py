"""What the bus says between reconciles, and what a failover plugin re-reads because of it.

Each failover plugin owns one ``BusNews``. The bus thread (through ``Service.handle``) only appends
hints to it: a bounded, lock-protected buffer, nothing else. At the start of a pass the loop thread
calls ``note``, which

- takes the hints (neutron-server's casts to the agents' topics, decoded by ``observing.decode``) and
  lets the pure ``deciding.hints.plan_refresh`` drop those the cache already explains; the rest are
  re-read one resource at a time (``refresh_resources``, two API calls each) with one INFO line;
- takes the agents whose heartbeat load count (``configurations.networks`` / ``routers``) changed and
  brings a full reconcile forward when a count disagrees with the cached bindings of that agent.

``new_targets`` says when an agent became a target since the last pass (a revived or new agent):
whatever was created while it could not be used (nothing is cast for a router no agent could take)
is found by a full reconcile then. Every full reconcile asked for here shares one rate limit with
the unknown-host trigger (``reconcile_soon``), and targeted reads have a budget per window: whoever
can publish on the bus buys at most a bounded number of reads. An idle pass (no hints, no changes)
makes no API call.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rpcdaemon.acting.resources import ResourceKind
from rpcdaemon.deciding.hints import Hint, plan_refresh
from rpcdaemon.deciding.liveness import Judged, LivenessPolicy
from rpcdaemon.model import HintKind
from rpcdaemon.observing.registry import AgentRegistry

HINTS_KEPT = 10_000  # hints buffered between two passes; beyond, they are dropped and a reconcile is due
REFRESH_PER_PASS = 50  # distinct resources re-read in one pass; more is one full reconcile
# Distinct resources re-read per ``unknown_reconcile_every`` window, all passes together: forged casts
# buy at most this many reads (plus the one rate-limited reconcile) per window.
REFRESH_PER_WINDOW = 200

_VERB = {"placed": "was placed on", "removed": "was removed from", "changed": "changed on", "deleted": "was deleted"}


@dataclass(frozen=True, slots=True)
class HintView:
    """The cache as ``plan_refresh`` reads it (see ``deciding.hints.explained``)."""

    known: Collection[str]
    settled: Collection[str]
    bindings: Mapping[str, frozenset[str]]
    # Whose agents it places onto (None: every agent of the plugin's type), by host.
    agents_by_host: Mapping[str, str] | None = None


class NewsSource(Protocol):
    """What ``BusNews`` needs from its plugin (``FailoverPlugin`` has it all)."""

    name: str
    agent_type: str
    registry: AgentRegistry
    liveness: LivenessPolicy
    log: logging.Logger
    clock: Callable[[], float]
    started_at: float
    bindings: dict[str, frozenset[str]]

    def hint_view(self) -> HintView | None: ...

    def refresh_resources(self, ids: Sequence[str]) -> None: ...

    def reconcile_soon(self, now: float) -> float: ...

    @property
    def window(self) -> float: ...


class BusNews:
    """The hint buffer and the triggers of one plugin. ``add`` is thread-safe; the rest is loop-thread only."""

    def __init__(self, plugin: NewsSource, *, resource: ResourceKind) -> None:
        self._plugin = plugin
        self._resource = resource  # what the hints are about, for the log
        self._lock = threading.Lock()
        self._hints: list[Hint] = []
        self._lost = False  # hints were dropped (buffer full, or a cast named too many): reconcile
        self.dropped = 0
        self.refreshed = 0  # resources re-read because of hints, for tests and metrics
        self._budget = REFRESH_PER_WINDOW
        self._budget_until = -float("inf")
        self._targets: frozenset[str] | None = None
        self._said_until = -float("inf")  # reconcile reasons are logged at most once per window

    # -- the bus thread ---------------------------------------------------------------------------
    def add(self, hints: Sequence[Hint], *, lost: bool = False) -> None:
        with self._lock:
            room = HINTS_KEPT - len(self._hints)
            if lost or len(hints) > room:
                self._lost = True
                self.dropped += max(0, len(hints) - room)
            self._hints.extend(hints[: max(0, room)])

    # -- the loop thread --------------------------------------------------------------------------
    def discard(self) -> None:
        """A full reconcile is about to read everything: what was heard before it is settled."""
        self._take()

    def _take(self) -> tuple[list[Hint], bool]:
        with self._lock:
            hints, lost = self._hints, self._lost
            self._hints, self._lost = [], False
        return hints, lost

    def note(self, now: float) -> bool:
        """Act on the hints and load changes heard since the last pass; True when it called the API."""
        hints, lost = self._take()
        changes = self._plugin.registry.take_load_changes(self._plugin.agent_type)
        if not hints and not lost and not changes:
            return False
        if lost:
            self._reconcile_soon(now, "some bus hints were not kept")
        by_host = self._agents_by_host()
        if changes:
            self._check_loads(now, changes, by_host)
        if not hints:
            return False
        view = self._plugin.hint_view()
        if view is None:
            return False
        if now >= self._budget_until:
            self._budget, self._budget_until = REFRESH_PER_WINDOW, now + self._plugin.window
        placeable = view.agents_by_host if view.agents_by_host is not None else by_host
        plan = plan_refresh(hints, known=view.known, settled=view.settled, bindings=view.bindings,
                            agents_by_host=placeable, limit=min(REFRESH_PER_PASS, self._budget))
        if plan.full:
            self._reconcile_soon(now, f"the bus named more than {min(REFRESH_PER_PASS, self._budget)} "
                                      f"{self._resource}s to re-read")
            return False
        if not plan.refresh:
            return False
        self._budget -= len(plan.refresh)
        self._say(plan.refresh, plan.why)
        self._plugin.refresh_resources(plan.refresh)
        self.refreshed += len(plan.refresh)
        return True

    def new_targets(self, judged: Mapping[str, Judged], now: float) -> bool:
        """True when an agent became a target since the last pass and a reconcile may run now; when
        the rate limit says not yet, the reconcile is brought forward to when it may."""
        targets = frozenset(aid for aid, j in judged.items() if j.is_target)
        before, self._targets = self._targets, targets
        if before is None or not targets - before:
            return False
        if now - self._plugin.started_at < self._plugin.liveness.startup_grace:
            return False  # at start every agent becomes a target as it is first heard; the first reconcile read all
        return self._reconcile_soon(now, "an agent became a target") == 0.0

    def _agents_by_host(self) -> dict[str, str]:
        return {o.agent.host: o.agent.id for o in self._plugin.registry.observations(self._plugin.agent_type)}

    def _check_loads(self, now: float, changes: Mapping[str, int], by_host: Mapping[str, str]) -> None:
        load: Counter[str] = Counter()
        for hosts in self._plugin.bindings.values():
            load.update(hosts)
        for host, count in sorted(changes.items()):
            agent_id = by_host.get(host)
            if agent_id is not None and load[agent_id] != count:
                self._reconcile_soon(now, f"host {host!r} reports {count} {self._resource.plural}, the cache has "
                                          f"{load[agent_id]}")
                return

    def _reconcile_soon(self, now: float, why: str) -> float:
        delay = self._plugin.reconcile_soon(now)
        if now >= self._said_until:
            self._said_until = now + self._plugin.window
            self._plugin.log.info("%s: %s; reconciling within %.0fs", self._plugin.name, why, delay)
        return delay

    def _say(self, ids: Sequence[str], why: Mapping[str, Hint]) -> None:
        first = why[ids[0]]
        what = _VERB[first.kind.value]
        if first.host is not None and first.kind is not HintKind.DELETED:
            what = f"{what} host {first.host!r}"
        else:
            what = what.removesuffix(" on").removesuffix(" from")
        more = f" (and {len(ids) - 1} more)" if len(ids) > 1 else ""
        self._plugin.log.info("%s: bus says %s %s %s%s; re-read %d %s", self._plugin.name, self._resource.name,
                              first.resource_id, what, more, len(ids),
                              self._resource.plural if len(ids) > 1 else self._resource.name)
