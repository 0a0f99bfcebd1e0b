"""The plugin rig of the unit tests: one L3Agent or DHCPAgent plugin driven check by check on a fake clock,
a ``FakeNeutron`` and the real registry and executor (test_plugins.py and the tests built on it:
test_refusals, test_fencing, test_hints, test_unknown_hosts, test_unhosted_grace; the ``make_rig``
fixture in conftest.py).

No bus: the rig records heartbeats straight into the ``AgentRegistry`` every tick for the agents that
are "speaking", and plays Neutron's own liveness view too (an agent is ``alive`` in the fake's API
while it spoke within Neutron's ``agent_down_time``), so the second opinion behaves as on a real
server. The executor is real (no backoff waits); its clock is the fake one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tests.kit.clock import Clock

from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.deciding.dhcp import DhcpPolicy
from rpcdaemon.deciding.l3 import L3Policy
from rpcdaemon.deciding.liveness import LivenessPolicy
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import L3_AGENT, ActionKind, Heartbeat, OutcomeStatus
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.plugins.dhcpagent import DHCPAgentPlugin
from rpcdaemon.plugins.l3agent import L3AgentPlugin
from rpcdaemon.plugins.report import PassReport

DOWN = 75.0
LIVENESS = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=120.0)
TIMING = Timing(reconcile_interval=60.0, retry_reconcile_after=10.0, target_fresh=75.0, opinion_interval=2.0)
TICK = 10.0
START = 1000.0


class HookedNeutron(FakeNeutron):
    """FakeNeutron that runs a one-shot hook after a named call (to change the world mid-pass)."""

    def __init__(self, sleep: Callable[[float], None]) -> None:
        super().__init__(sleep=sleep)  # the fake's delays pass on the rig's clock
        self.after: dict[str, Callable[[], None]] = {}

    def _fire(self, method: str) -> None:
        hook = self.after.pop(method, None)
        if hook is not None:
            hook()

    def routers_on_agent(self, agent_id: str) -> list[str]:
        out = super().routers_on_agent(agent_id)
        self._fire(f"routers_on_agent:{agent_id}")
        return out

    def unbind_router(self, agent_id: str, router_id: str) -> None:
        super().unbind_router(agent_id, router_id)
        self._fire("unbind_router")


class Rig:
    """One plugin, its Neutron and its registry, stepped one check at a time."""

    def __init__(
        self,
        agent_type: str,
        *,
        liveness: LivenessPolicy = LIVENESS,
        l3: L3Policy | None = None,
        dhcp: DhcpPolicy | None = None,
        neutron_down: float = DOWN,
        timing: Timing = TIMING,
    ) -> None:
        self.agent_type = agent_type
        self.neutron_down = neutron_down
        self.clock = Clock(START)
        self.api = HookedNeutron(sleep=self.advance)
        self.registry = AgentRegistry(liveness.down_time)
        self.bus: float | None = START
        self.registry.set_listening(self.bus)
        self.executor = Executor(
            self.api, ExecutorPolicy(workers=2, backoff_min=0, backoff_max=0), stop=threading.Event(), clock=self.clock
        )
        self.spoke: dict[str, float] = {}
        self.silent: set[str] = set()
        self.reports: list[PassReport] = []
        self.bus_outages = 0
        common = {"bus_since": lambda: self.bus, "bus_outages": lambda: self.bus_outages, "clock": self.clock}
        args = (self.api, self.registry, self.executor, liveness, timing)
        self.plugin: FailoverPlugin
        if agent_type == L3_AGENT:
            self.plugin = L3AgentPlugin(*args, policy=l3 or L3Policy(), **common)
        else:
            self.plugin = DHCPAgentPlugin(*args, policy=dhcp or DhcpPolicy(agents_per_network=1), **common)

    def agents(self, *ids: str, **kw: object) -> None:
        for aid in ids:
            self.api.add_agent(self.agent_type, f"host-{aid}", agent_id=aid, **kw)  # type: ignore[arg-type]
            self.spoke[aid] = self.clock()

    def advance(self, seconds: float) -> None:
        """Time spent inside one API call: the speaking agents keep reporting (every TICK) meanwhile."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now = min(end, self.clock.now + TICK)
            for aid in self.spoke:
                if aid not in self.silent:
                    self.speak(aid)

    def speak(self, aid: str) -> None:
        self.registry.record(Heartbeat(self.agent_type, f"host-{aid}", self.clock()))
        self.spoke[aid] = self.clock()

    def tick(self, seconds: float = TICK) -> PassReport:
        self.clock.now += seconds
        for aid in self.spoke:
            if aid not in self.silent:
                self.speak(aid)
            alive = self.clock() - self.spoke[aid] <= self.neutron_down
            if self.api.agent(aid).alive is not alive:
                self.api.set_alive(aid, alive)
        report = self.plugin.check()
        self.reports.append(report)
        return report

    def run(self, seconds: float) -> list[PassReport]:
        """Checks every TICK for ``seconds`` (rounded down to whole ticks)."""
        return [self.tick() for _ in range(int(seconds // TICK))]

    def done(self, kind: ActionKind | None = None) -> list[str]:
        return [
            o.action.resource_id
            for r in self.reports
            for o in r.outcomes
            if o.status is OutcomeStatus.DONE and (kind is None or o.action.kind is kind)
        ]

    def close(self) -> None:
        self.executor.close()
