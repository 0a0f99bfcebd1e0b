"""The service rig of the unit tests: three L3 agents on a ``FakeNeutron`` (a hosts four routers with ports),
the real service around the real L3Agent plugin and executor, with an audit trail, stepped one check
per tick on a fake clock (test_audit.py, test_control_gate.py; the ``cloud`` fixture in conftest.py).
No bus thread: the plugin listens since the start of the test.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.kit.clock import Clock
from tests.kit.service import make_service

from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.acting.readiness import ReadinessPolicy
from rpcdaemon.daemon.plugin_factory import AgentPluginConfig, build_plugin
from rpcdaemon.deciding.liveness import BrakePolicy, LivenessPolicy
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import L3_AGENT, Heartbeat
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import Timing
from rpcdaemon.telemetry.audit import AuditLog

DOWN = 30.0
FOLLOWED = ReadinessPolicy(timeout=60.0, poll_interval=1.0)  # the cloud's readiness following
TICK = 2.0
START = 1000.0
EPOCH = 1_780_000_000.0  # the wall clock at START (2026-05-28)


class Cloud:
    """Three L3 agents (a hosts four routers with ports), the service around them, one check per tick."""

    def __init__(self, tmp_path: Path, *, dry_run: bool = False, workers: int = 2,
                 api: type[FakeNeutron] = FakeNeutron,
                 readiness: ReadinessPolicy | None = None, **service: Any) -> None:
        readiness = readiness or FOLLOWED
        self.clock = Clock()
        self.path = tmp_path / "audit.log"
        self.api = api(clock=self.clock, sleep=lambda s: None)
        self.speaking = {"a", "b", "c"}
        self.spoke = dict.fromkeys(self.speaking, START)
        for aid in sorted(self.speaking):
            self.api.add_agent(L3_AGENT, f"host-{aid}", agent_id=aid)
        for i in range(4):
            self.api.add_router(router_id=f"r{i}")
            self.api.place_router(f"r{i}", "a")
            self.api.add_router_ports(f"r{i}", interfaces=1, gateway=True, host="host-a")
        self.registry = AgentRegistry(DOWN)
        cfg = AgentPluginConfig(
            liveness=LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=0.0),
            timing=Timing(reconcile_interval=60.0, retry_reconcile_after=5.0, target_fresh=DOWN, opinion_interval=1.0),
            executor=ExecutorPolicy(workers=workers, backoff_min=0, backoff_max=0, dry_run=dry_run),
            brake=BrakePolicy(max_dead_fraction=0.5), max_moves=100,
            readiness=readiness,
        )
        self.stop = threading.Event()
        # Listening since the start: the plugin's window is its own clock's, no bus thread needed.
        plugin = build_plugin("L3Agent", self.api, self.registry, cfg, bus_since=lambda: START, stop=self.stop,
                              clock=self.clock)
        self.audit = AuditLog(self.path, instance="ctl-1:4242", wall=self.clock.wall_at(EPOCH))
        self.svc = make_service(registry=self.registry, plugins=[plugin], check_interval=TICK, stop=self.stop,
                                clock=self.clock, audit=self.audit, **service)
        self.heartbeats()

    def heartbeats(self) -> None:
        for aid in self.spoke:
            if aid in self.speaking:
                self.registry.record(Heartbeat(L3_AGENT, f"host-{aid}", self.clock.now))
                self.spoke[aid] = self.clock.now
            self.api.set_alive(aid, self.clock.now - self.spoke[aid] <= DOWN)

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds / TICK)):
            self.clock.now += TICK
            self.heartbeats()
            self.svc.step()

    def close(self) -> None:
        for p in self.svc.plugins:
            p.executor.close()
        self.audit.close()
