"""How often a failover plugin lets the bus hurry it, and how often it repeats itself.

Two small pieces of ``FailoverPlugin``'s pass, each with its own memory:

- ``UnknownHostLimiter``: a heartbeat from a host the Neutron API does not list brings the next
  reconcile forward, but at most once per ``every`` seconds since the last reconcile (anyone who can
  publish on the bus can invent host names). Every other bus-driven reconcile (``BusNews``, through
  ``FailoverPlugin.reconcile_soon``) shares that gap. A few unknown hosts are named per gap, the rest
  counted, so a flood of invented names cannot flood the log either.
- ``BrakeLog``: why work is held back. The mass-failure brake is an ERROR when it engages and again
  every ``interval`` while it holds (an operator must look), then an INFO when it lets go; other holds
  are said once each time they change.

Both run in the loop thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

_UNKNOWN_SAID_PER_GAP = 5  # unknown hosts named per reconcile gap; the rest are counted
_UNKNOWN_KEPT = 1000  # hosts remembered as said; a flood of invented names must not grow memory


class UnknownHostLimiter:
    """The gap between bus-driven reconciles, and what is said about unknown hosts in it."""

    def __init__(self, *, every: float, since: float, plugin: str, logger: logging.Logger) -> None:
        self.every = every
        self._plugin = plugin
        self._log = logger
        self._next = since  # earliest time an unknown host (or any bus-driven trigger) may force a reconcile
        self._said: set[tuple[str, str]] = set()
        self._window_end = since  # a few unknown hosts are named per window, the rest counted
        self._named = self._unnamed = 0

    def delay(self, now: float) -> float:
        """How long a reconcile the bus asks for now has to wait."""
        return max(0.0, self._next - now)

    def reconciled(self, now: float) -> None:
        """A reconcile ran: the next one the bus brings forward is a whole gap away."""
        self._next = now + self.every

    def heard(self, unknown: Sequence[tuple[str, str]], now: float) -> float:
        """Hosts heard that the API did not list (agent type, host): name the new ones, a few per gap,
        count the rest; returns the delay of the reconcile they bring forward."""
        if len(self._said) > _UNKNOWN_KEPT:
            self._said.clear()
        new = [key for key in unknown if key not in self._said]
        self._said.update(new)
        if now >= self._window_end:
            if self._unnamed:
                self._log.info("%s: heard %d more hosts that Neutron does not list", self._plugin, self._unnamed)
            self._window_end = now + self.every
            self._named = self._unnamed = 0
        # Names come off the bus: quoted (%r), so a forged host cannot write lines of its own, and only
        # a few per gap, so a flood of invented names cannot flood the log either.
        for key in new:
            if self._named >= _UNKNOWN_SAID_PER_GAP:
                self._unnamed += 1
                continue
            self._named += 1
            self._log.info("%s: heard %r %r, which Neutron does not list; reconciling within %.0fs",
                           self._plugin, key[0], key[1], self.delay(now))
        return self.delay(now)


class BrakeLog:
    """What holds work back, said at its cadence (see the module docstring)."""

    def __init__(self, *, interval: float, plugin: str, clock: Callable[[], float], logger: logging.Logger) -> None:
        self._interval = interval
        self._plugin = plugin
        self._clock = clock
        self._log = logger
        self._said: tuple[str, ...] = ()  # the holds of the last pass
        self._braked_since: float | None = None
        self._logged = -float("inf")  # when the brake's ERROR was last said

    def say(self, held: tuple[str, ...], *, error: bool = False) -> None:
        """The holds of this pass; ``error``: they are the brake's."""
        now = self._clock()
        if error:
            if self._braked_since is None:
                self._braked_since = now
                self._logged = -float("inf")
            if now - self._logged >= self._interval:
                # The first line says the brake engaged; the repeats say for how long it has held.
                since = "engaged" if now == self._braked_since else f"held for {now - self._braked_since:.0f}s"
                for line in held:
                    self._log.error("%s: %s (%s)", self._plugin, line, since)
                self._logged = now
        else:
            if self._braked_since is not None:
                self._log.info("%s: brake released after %.0fs", self._plugin, now - self._braked_since)
                self._braked_since = None
            for line in held:
                if line not in self._said:
                    self._log.warning("%s: %s", self._plugin, line)
        self._said = held
