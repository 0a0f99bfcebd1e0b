"""The fake clock of the unit tests: whatever reads "now" (a plugin, the executor, the service, a
leadership, a notifier) is given one, and the test moves it.

``clock()`` reads it; ``clock.now = t`` or ``clock.now += dt`` sets it; ``advance(dt)`` moves it from
any thread (the executor's workers spend time in a fake Neutron's calls). A test that needs a monotonic
clock and a wall clock gives each its own ``Clock``, or ``wall_at(epoch)``: a wall clock that reads
``epoch`` now and then moves with this one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

START = 1000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def wall_at(self, epoch: float) -> Callable[[], float]:
        start = self.now
        return lambda: epoch + self.now - start
