"""The failover plugins' factory: one plugin by name, with its executor, fencer and watched Neutron adapters.

``wiring`` calls ``build_plugin`` for each L3Agent/DHCPAgent plugin listed in [Daemon] plugins, with the
policies it resolved from rpcdaemon.conf and neutron.conf (``AgentPluginConfig``, which the operator
commands read too); the demo, the benchmarks and the tests build theirs the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.acting.fencing import FencePolicy, Fencer
from rpcdaemon.acting.readiness import ReadinessPolicy
from rpcdaemon.acting.watched import ApiErrors, WatchedAPI
from rpcdaemon.deciding.dhcp import DhcpPolicy
from rpcdaemon.deciding.l3 import L3Policy
from rpcdaemon.deciding.liveness import BrakePolicy, LivenessPolicy
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.plugins.dhcpagent import DHCPAgentPlugin
from rpcdaemon.plugins.l3agent import L3AgentPlugin


@dataclass(frozen=True, slots=True)
class AgentPluginConfig:
    """Everything one failover plugin needs, resolved from rpcdaemon.conf and neutron.conf."""

    liveness: LivenessPolicy
    timing: Timing
    executor: ExecutorPolicy
    brake: BrakePolicy
    max_moves: int
    skip_ha_routers: bool = True
    agents_per_network: int | None = None
    readiness: ReadinessPolicy | None = None  # None: moves are not followed
    fence: FencePolicy | None = None  # None: no fence_command, dead agents' work moves at once


def build_plugin(
    name: str,
    api: NeutronAPI,
    registry: AgentRegistry,
    cfg: AgentPluginConfig,
    *,
    bus_since: Callable[[], float | None],
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
    bus_outages: Callable[[], int] = lambda: 0,
    may_write: Callable[[], bool] = lambda: True,
) -> FailoverPlugin:
    """``may_write``: the leadership lease, asked right before a fence command starts (the writes ask it
    through the adapter's ``acting.fence.FencedNeutron``)."""
    logger = logging.getLogger(f"rpcdaemon.{name.lower()}")
    errors = ApiErrors()  # the plugin's and its executor's failed calls, in one count (the metrics read it)
    executor = Executor(WatchedAPI(api, errors=errors), cfg.executor, stop=stop, clock=clock, logger=logger)
    # The plugin's own calls run in the check loop thread: each one ending is its proof of life (the
    # service sets on_call_end); the executor's workers report through Executor.on_progress instead.
    api = WatchedAPI(api, errors=errors)
    fencer = Fencer(cfg.fence, may_run=may_write, stop=stop, dry_run=cfg.executor.dry_run,
                    logger=logger) if cfg.fence is not None and cfg.fence.command else None
    common = {"bus_since": bus_since, "bus_outages": bus_outages, "clock": clock, "readiness": cfg.readiness,
              "fencer": fencer}
    if name == "L3Agent":
        policy = L3Policy(skip_ha_routers=cfg.skip_ha_routers, max_moves=cfg.max_moves, brake=cfg.brake)
        return L3AgentPlugin(api, registry, executor, cfg.liveness, cfg.timing, policy=policy, **common)
    if name == "DHCPAgent":
        dpolicy = DhcpPolicy(agents_per_network=cfg.agents_per_network, max_moves=cfg.max_moves, brake=cfg.brake)
        return DHCPAgentPlugin(api, registry, executor, cfg.liveness, cfg.timing, policy=dpolicy, **common)
    raise ValueError(f"unknown failover plugin {name!r}")
