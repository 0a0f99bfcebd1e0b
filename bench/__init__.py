"""rpcdaemon's benchmarks: one module per question, ``bench.run`` prints them all as one table.

Not part of the test run (they take minutes and need the real RabbitMQ and neutron-server);
``tests/unit/test_bench_smoke.py`` runs their pure-python parts on tiny sizes so they cannot rot.
Each benchmark module returns ``Figure`` rows; ``bench.run`` renders them. Method and measured
results: ``BENCHMARKS.md``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from rpcdaemon.broker.link import neutron_subscription
from rpcdaemon.observing.listener import BusListener


@dataclass(frozen=True, slots=True)
class Figure:
    """One row of the benchmark table."""

    bench: str  # which benchmark, e.g. "(b) moves"
    measure: str  # what was measured, with its size
    value: str  # rpcdaemon's figure
    reference: str = ""  # what it is compared with (Neutron, a direct pool, the original design)
    goal: str = ""
    met: bool | None = None  # None: informative, no goal


def load_average() -> str:
    """The 1-minute load average, printed with each figure: the machine is shared and has 2 cores."""
    return f"{os.getloadavg()[0]:.1f}"


def fmt_seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


@contextlib.contextmanager
def bus_canary(url: str) -> Iterator[BusListener]:
    """A listener of our own on the broker: its ``link().outages`` tell whether the bus failed meanwhile
    (on a shared machine another process may restart RabbitMQ)."""
    stop = threading.Event()
    listener = BusListener(url, [neutron_subscription("rpcd-bench-canary")], lambda raw: None, stop=stop,
                           name="bench-canary")
    listener.start()
    try:
        deadline = time.monotonic() + 30
        while not listener.link().connected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bench's canary could not connect to the bus at {url}")
            time.sleep(0.05)
        yield listener
    finally:
        stop.set()
        listener.join(5)
