"""What one pass of a failover plugin did: ``PassReport``.

``FailoverPlugin.check`` (and ``standby_check``) returns one per pass and keeps the last as ``last``;
the service hands it to the metrics and the audit trail, the demo draws its screen from it, the tests
read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rpcdaemon.acting.fencing import FenceRun
from rpcdaemon.acting.readiness import Readiness
from rpcdaemon.deciding.l3 import Plan
from rpcdaemon.deciding.liveness import Judged
from rpcdaemon.model import Outcome


@dataclass
class PassReport:
    """What the last pass did, for the demo, metrics and tests."""

    at: float = 0.0
    judged: dict[str, Judged] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)
    outcomes: list[Outcome] = field(default_factory=list)
    api_calls: bool = False
    readiness: list[Readiness] = field(default_factory=list)  # moved resources found up (or given up on)
    fences: list[FenceRun] = field(default_factory=list)  # fence commands run before this pass's moves
    ok: bool = True  # False when the pass ended on an error (the Neutron API failed, or a bug)
