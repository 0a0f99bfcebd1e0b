"""Readiness following: after a move, is the router (or DHCP network) really up on its new host?

A binding in the API is not a working router: the target agent still has to sync it (the server then
binds the router's ports to the agent's host) and its L2 agent has to report the ports up (ACTIVE).
``FailoverPlugin`` hands every DONE move to ``ReadinessFollower.track`` and calls ``poll`` at each
check pass; ``poll`` costs nothing while nothing is tracked, and otherwise one bulk port listing per
``poll_interval`` for all tracked resources together (the adapter chunks it to keep URLs short).

- A router is ready when every port it owns that lives on its L3 agent's host (interfaces, gateway,
  centralized SNAT; not ``distributed`` or HA ports) is bound to the target host and ACTIVE. A router
  without such ports is ready at once.
- A DHCP network is ready when one of its DHCP ports is bound to the target host and ACTIVE.

(Those two rules, and which ports are read for each, are ``acting.resources``' table of the kinds.)

Each resource followed ends as a ``Readiness`` (ready, with its time since the move began, or not
ready within ``timeout``); the plugin logs, counts and, by policy, moves the unready ones on. Only
the Neutron API adapter is called, never anything else.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rpcdaemon.acting.api import NeutronAPI, NeutronError
from rpcdaemon.acting.resources import ResourceKind
from rpcdaemon.model import Agent, Outcome, OutcomeStatus, PortState

_NAMED_PER_POLL = 10  # ready/unready resources named one by one per poll; more are summed up per host


@dataclass(frozen=True, slots=True)
class ReadinessPolicy:
    timeout: float = 120.0  # 0: do not follow at all
    poll_interval: float = 1.0
    move_unready: bool = False  # unbind a resource not ready in time, so it is moved to another agent

    @property
    def enabled(self) -> bool:
        return self.timeout > 0


@dataclass(frozen=True, slots=True)
class Followed:
    resource_id: str
    target: Agent
    since: float  # when its move began (the start of the pass that moved it)


@dataclass(frozen=True, slots=True)
class Readiness:
    resource_id: str
    target: Agent
    seconds: float  # since the move began: until ready, or until given up
    ready: bool


class ReadinessFollower:
    """Follows moved routers (``kind=ROUTER``) or networks (``kind=NETWORK``) until they are up."""

    def __init__(
        self,
        api: NeutronAPI,
        policy: ReadinessPolicy,
        *,
        kind: ResourceKind,
        plugin: str,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.api = api
        self.policy = policy
        self.kind = kind
        self.plugin = plugin
        self.clock = clock
        self.log = logger or logging.getLogger(f"rpcdaemon.{plugin.lower()}")
        # (resource id, target agent id) -> what is followed: a network may be bound to several agents at once.
        self.tracked: dict[tuple[str, str], Followed] = {}
        self._next_poll = -float("inf")
        self._failing = False
        self.polls = 0  # bulk port reads made (an idle follower makes none)

    def track(self, outcomes: Iterable[Outcome], since: float) -> int:
        """Follow every DONE move or bind onto a target; returns how many are now followed."""
        if not self.policy.enabled:
            return 0
        kind = self.kind
        added = 0
        for o in outcomes:
            a = o.action
            if o.status is not OutcomeStatus.DONE:
                continue
            if a.kind is kind.unbind and a.source is not None:
                self.tracked.pop((a.resource_id, a.source.id), None)  # removed from there: nothing to wait for
            if a.kind in kind.binds and a.target is not None:
                if kind.one_host:  # moved again (its new host died too): only the last target counts
                    for key in [k for k in self.tracked if k[0] == a.resource_id]:
                        del self.tracked[key]
                self.tracked[(a.resource_id, a.target.id)] = Followed(a.resource_id, a.target, since)
                added += 1
        if added and len(self.tracked) == added:
            # Nothing was followed before: the first look is one interval after these binds.
            self._next_poll = self.clock() + self.policy.poll_interval
        return added

    def follow_again(self, r: Readiness) -> None:
        """Follow ``r``'s resource on its target once more, for a whole new timeout from now."""
        self.tracked[(r.resource_id, r.target.id)] = Followed(r.resource_id, r.target, self.clock())

    def poll(self) -> list[Readiness]:
        """One bulk look at the tracked resources' ports, at most every ``poll_interval``. Never raises:
        an API error is logged and the next poll tries again (the timeout still runs)."""
        now = self.clock()
        if not self.tracked or now < self._next_poll:
            return []
        self._next_poll = now + self.policy.poll_interval
        ids = list(dict.fromkeys(rid for rid, _ in self.tracked))
        self.polls += 1
        try:
            ports = self.kind.ports(self.api, ids)
        except NeutronError as err:
            if not self._failing:
                self.log.warning("%s: cannot read the ports of %d moved %s (%s); trying again",
                                 self.plugin, len(ids), self.kind.plural, err)
            self._failing = True
            ports = None
        else:
            self._failing = False
        now = self.clock()
        by_resource: dict[str, list[PortState]] = defaultdict(list)
        for p in ports or ():
            by_resource[self.kind.port_of(p)].append(p)
        judge = self.kind.ready
        done: list[Readiness] = []
        for key, f in list(self.tracked.items()):
            rid = f.resource_id
            if ports is not None and judge(by_resource.get(rid, ()), f.target.host):
                done.append(Readiness(rid, f.target, now - f.since, True))
            elif now - f.since >= self.policy.timeout:
                done.append(Readiness(rid, f.target, now - f.since, False))
            else:
                continue
            del self.tracked[key]
        self._say(done)
        return done

    def _say(self, done: list[Readiness]) -> None:
        ready = [r for r in done if r.ready]
        late = [r for r in done if not r.ready]
        what, whats = self.kind.name, self.kind.plural
        if len(ready) <= _NAMED_PER_POLL:
            for r in ready:
                self.log.info("%s: %s %s ready on %s in %.1fs", self.plugin, what, r.resource_id,
                              r.target.describe(), r.seconds)
        else:
            for host, group in _by_host(ready).items():
                times = [r.seconds for r in group]
                self.log.info("%s: %d %s ready on %s in %.1fs median, %.1fs max", self.plugin, len(group), whats,
                              host, statistics.median(times), max(times))
        for r in late[:_NAMED_PER_POLL]:
            self.log.warning("%s: %s %s not ready on %s after %.0fs (its ports are not bound there and ACTIVE)",
                             self.plugin, what, r.resource_id, r.target.describe(), r.seconds)
        if len(late) > _NAMED_PER_POLL:
            hosts = ", ".join(f"{host}: {len(g)}" for host, g in _by_host(late).items())
            self.log.warning("%s: %d %s in all not ready after %.0fs (%s)", self.plugin, len(late), whats,
                             self.policy.timeout, hosts)


def _by_host(items: list[Readiness]) -> dict[str, list[Readiness]]:
    groups: dict[str, list[Readiness]] = defaultdict(list)
    for r in items:
        groups[r.target.describe()].append(r)
    return groups
