"""rpcdaemon's benchmarks: one module per question, ``bench.run`` prints them all as one table.

Not part of the test run (they take minutes and need the real RabbitMQ and neutron-server);
``tests/unit/test_bench_smoke.py`` runs their pure-python parts on tiny sizes so they cannot rot.
Each benchmark module returns ``Figure`` rows; ``bench.run`` renders them. Method and measured
results: ``BENCHMARKS.md``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


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


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
