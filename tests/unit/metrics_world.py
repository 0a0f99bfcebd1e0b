"""An in-memory service for the metrics tests (test_metrics_more.py, test_alert_rules.py).

One failover plugin built by ``plugin_factory.build_plugin`` (as ``wiring`` builds it) on the ``FakeNeutron``, inside a
real ``Service`` stepped by hand on an injected monotonic clock and an injected wall clock. No bus: the agents
that speak are recorded straight into the registry every tick, and Neutron's own ``alive`` follows them, as
on the plugin rig (plugin_rig.py). The plugin's listening window is open from START (its ``bus_since``), so
that silence counts; the service's own bus listeners are never started.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tests.kit.clock import Clock
from tests.kit.service import make_service

from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.coordination.leader import Leadership
from rpcdaemon.daemon.plugin_factory import AgentPluginConfig, build_plugin
from rpcdaemon.deciding.liveness import BrakePolicy, LivenessPolicy
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Heartbeat
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.telemetry.metrics import Metrics

START = 1000.0
WALL = 1_700_000_000.0
DOWN = 30.0
TICK = 5.0
LATENCY = 0.3  # every Neutron call takes this long on the rig's clock: a move (unbind + bind) 0.6 s
LIVENESS = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=60.0)
TIMING = Timing(reconcile_interval=60.0, retry_reconcile_after=10.0, target_fresh=DOWN, opinion_interval=2.0)
TYPES = {"L3Agent": L3_AGENT, "DHCPAgent": DHCP_AGENT}


class World:
    """``hosts`` agents of the plugin's type (ids ``a``, ``b``, ...; host ``host-<id>``), all speaking."""

    def __init__(self, plugin: str = "L3Agent", *, hosts: tuple[str, ...] = ("a", "b", "c"),
                 leadership: Leadership | None = None, clock: Clock | None = None, dry_run: bool = False) -> None:
        self.clock = clock or Clock(START)
        self.wall = Clock(WALL)
        self.agent_type = TYPES[plugin]
        self.api = FakeNeutron(latency=LATENCY, sleep=self.clock.advance, clock=self.clock)
        self.registry = AgentRegistry(DOWN)
        cfg = AgentPluginConfig(liveness=LIVENESS, timing=TIMING, brake=BrakePolicy(max_dead_fraction=0.5),
                                executor=ExecutorPolicy(workers=1, backoff_min=0, backoff_max=0, dry_run=dry_run),
                                max_moves=100,
                                agents_per_network=1)
        self.plugin: FailoverPlugin = build_plugin(plugin, self.api, self.registry, cfg, bus_since=lambda: START,
                                                   stop=threading.Event(), clock=self.clock)
        self.metrics = Metrics(wall=self.wall)
        self.service = make_service(registry=self.registry, plugins=[self.plugin], check_interval=TICK,
                                    clock=self.clock, metrics=self.metrics, leadership=leadership)
        self.last_spoke: dict[str, float] = {}
        self.silent: set[str] = set()
        self.before_step: Callable[[], None] | None = None  # e.g. the leadership's own step, on the same clock
        for h in hosts:
            self.api.add_agent(self.agent_type, f"host-{h}", agent_id=h)
            self.speak(h)

    def speak(self, h: str) -> None:
        self.registry.record(Heartbeat(self.agent_type, f"host-{h}", self.clock.now))
        self.last_spoke[h] = self.clock.now

    def tick(self) -> None:
        """TICK seconds later: the speaking agents report, Neutron's alive flags follow, one service step."""
        self.clock.advance(TICK)
        self.wall.advance(TICK)
        for h in self.last_spoke:
            if h not in self.silent:
                self.speak(h)
            self.api.set_alive(h, self.clock.now - self.last_spoke[h] <= DOWN)
        if self.before_step is not None:
            self.before_step()
        self.service.step()

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds // TICK)):
            self.tick()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def agent_labels(self, h: str) -> dict[str, str]:
        return {"agent_type": self.agent_type, "host": f"host-{h}", "agent_id": h}

    def close(self) -> None:
        self.plugin.executor.close()
