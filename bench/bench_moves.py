"""(b) The move phase: ``Executor.run`` on 1,000 planned router moves vs the same calls issued directly.

On a real neutron-server with fake L3 agents (``dying`` + ``live_hosts`` hosts), ``routers`` routers
are bound to ``dying``; the real L3 planner (``plan_l3``, ``dying`` judged DEAD) spreads them over the
live agents. Then, through one real ``OpenStackNeutron`` adapter (no-auth endpoint):

1. **direct**: a plain ``ThreadPoolExecutor(workers)`` makes each action's unbind + bind, nothing else
   (the least time these calls can take at this parallelism);
2. restore: every router back on ``dying`` (not timed);
3. **executor**: the daemon's own executor, as ``plugin_factory.build_plugin`` builds it from the shipped
   settings (``workers``, retries), runs the same actions with the L3 plugin's ``still_valid`` veto
   (fed by a thread that records the live agents' heartbeats every second, as the bus would), its
   read-back and its INFO line per action (to a log file, through the daemon's masking formatter);
4. restore, then **direct** again: the executor is compared with the mean of the two direct runs
   around it, so a drift of the server's speed during the run cancels out.

The goal is executor <= 1.2 x direct. A timing wrapper around the adapter splits the executor's time
into the API calls, the read-back, and the rest (veto checks, logging, bookkeeping).

    python -m bench.bench_moves [--routers 1000] [--workers 8] [--live-hosts 2]

Called by ``bench.run``; ``measure_moves`` takes any ``NeutronAPI`` and is smoke-tested on the fake.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.e2e.rpcd import broker_url
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient

from bench import Figure, bus_canary, load_average
from rpcdaemon.access import NeutronAccess
from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.acting.openstack_neutron import OpenStackNeutron
from rpcdaemon.config.neutronconf import NeutronConf, PluginNeutron
from rpcdaemon.config.settings import L3AgentSettings
from rpcdaemon.daemon.plugin_factory import build_plugin
from rpcdaemon.daemon.wiring import plugin_config
from rpcdaemon.deciding.l3 import L3Policy, plan_l3
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.model import L3_AGENT, Action, Agent, Heartbeat, Network, Router
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin
from rpcdaemon.telemetry.logs import FORMAT, MaskingFormatter

T = TypeVar("T")
GOAL_RATIO = 1.2
MUTATIONS = frozenset({"bind_router", "unbind_router", "bind_network", "unbind_network"})


class TimedAPI:
    """A ``NeutronAPI`` that times every call of the one it wraps (thread-safe)."""

    def __init__(self, inner: NeutronAPI) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self.last_end: dict[str, float] = {}

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.seconds.clear()
            self.last_end.clear()

    def last_mutation_end(self) -> float:
        return max((t for name, t in self.last_end.items() if name in MUTATIONS), default=0.0)

    def _timed(self, name: str, fn: Callable[..., T], *args: str) -> T:
        began = time.monotonic()
        try:
            return fn(*args)
        finally:
            ended = time.monotonic()
            with self._lock:
                self.calls[name] += 1
                self.seconds[name] = self.seconds.get(name, 0.0) + ended - began
                self.last_end[name] = max(self.last_end.get(name, 0.0), ended)

    def list_agents(self) -> list[Agent]:
        return self._timed("list_agents", self.inner.list_agents)

    def get_agent(self, agent_id: str) -> Agent:
        return self._timed("get_agent", self.inner.get_agent, agent_id)

    def list_routers(self) -> list[Router]:
        return self._timed("list_routers", self.inner.list_routers)

    def list_networks(self) -> list[Network]:
        return self._timed("list_networks", self.inner.list_networks)

    def routers_on_agent(self, agent_id: str) -> list[str]:
        return self._timed("routers_on_agent", self.inner.routers_on_agent, agent_id)

    def networks_on_agent(self, agent_id: str) -> list[str]:
        return self._timed("networks_on_agent", self.inner.networks_on_agent, agent_id)

    def agents_for_router(self, router_id: str) -> list[str]:
        return self._timed("agents_for_router", self.inner.agents_for_router, router_id)

    def agents_for_network(self, network_id: str) -> list[str]:
        return self._timed("agents_for_network", self.inner.agents_for_network, network_id)

    def bind_router(self, agent_id: str, router_id: str) -> None:
        self._timed("bind_router", self.inner.bind_router, agent_id, router_id)

    def unbind_router(self, agent_id: str, router_id: str) -> None:
        self._timed("unbind_router", self.inner.unbind_router, agent_id, router_id)

    def bind_network(self, agent_id: str, network_id: str) -> None:
        self._timed("bind_network", self.inner.bind_network, agent_id, network_id)

    def unbind_network(self, agent_id: str, network_id: str) -> None:
        self._timed("unbind_network", self.inner.unbind_network, agent_id, network_id)


@dataclass(frozen=True, slots=True)
class MoveResult:
    routers: int
    workers: int
    direct: float  # seconds, plain pool: the mean of the runs before and after the executor's
    executor: float  # seconds, Executor.run (calls + read-back + logging)
    restore: float  # seconds to put the routers back, both times (not part of the comparison)
    executor_calls: float  # from the run's start to the end of its last unbind/bind
    readback: float  # the read-back's calls
    veto: float  # time spent in still_valid, summed over the workers (CPU, not wall)
    statuses: dict[str, int] = field(default_factory=dict)
    direct_runs: tuple[float, ...] = ()
    disturbed: bool = False  # the bus failed meanwhile (binds wait on RPC): the times say nothing

    @property
    def overhead(self) -> float:
        """Executor time after its last unbind/bind returned: read-back, logging, bookkeeping."""
        return self.executor - self.executor_calls

    @property
    def ratio(self) -> float:
        return self.executor / self.direct if self.direct > 0 else float("inf")


def plan_moves(dying: Agent, live: Sequence[Agent], router_ids: Sequence[str], down_time: float) -> list[Action]:
    """The real planner's moves of ``router_ids`` off ``dying`` (judged DEAD) onto ``live``."""
    judged = {dying.id: Judged(dying, Verdict.DEAD, "bench: dead", None)}
    judged.update({a.id: Judged(a, Verdict.ALIVE, "bench: alive", 0.0) for a in live})
    routers = {rid: Router(rid) for rid in router_ids}
    bindings = {rid: frozenset({dying.id}) for rid in router_ids}
    plan = plan_l3(judged, routers, bindings, L3Policy(max_moves=len(router_ids)))
    if len(plan.actions) != len(router_ids):
        raise RuntimeError(f"the planner moved {len(plan.actions)} of {len(router_ids)} routers: {plan.held}")
    return list(plan.actions)


def run_direct(api: NeutronAPI, actions: Sequence[Action], workers: int) -> float:
    """Seconds for each action's unbind + bind through a plain pool: the floor."""

    def move(a: Action) -> None:
        assert a.source is not None
        assert a.target is not None
        api.unbind_router(a.source.id, a.resource_id)
        api.bind_router(a.target.id, a.resource_id)

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(move, actions))
    return time.monotonic() - began


def restore(api: NeutronAPI, actions: Sequence[Action], workers: int) -> float:
    """Every moved router back on its source (the inverse calls)."""

    def back(a: Action) -> None:
        assert a.source is not None
        assert a.target is not None
        api.unbind_router(a.target.id, a.resource_id)
        api.bind_router(a.source.id, a.resource_id)

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(back, actions))
    return time.monotonic() - began


def l3_plugin(api: NeutronAPI, registry: AgentRegistry, *, workers: int, down_time: float,
              report_interval: float, stop: threading.Event) -> FailoverPlugin:
    """The L3 plugin (and its executor) exactly as the daemon builds it from default settings."""
    conf = NeutronConf(agent_down_time=down_time, report_interval=report_interval)
    pn = PluginNeutron(conf=conf, access=NeutronAccess(endpoint="http://bench"), agent_down_time=down_time,
                       startup_grace=down_time)
    cfg = plugin_config(L3AgentSettings(workers=workers), pn, down_time, False)
    return build_plugin("L3Agent", api, registry, cfg, bus_since=lambda: 0.0, stop=stop)


def measure_moves(api: NeutronAPI, dying: Agent, live: Sequence[Agent], router_ids: Sequence[str], *,
                  workers: int = 8, down_time: float = 10.0, report_interval: float = 2.0,
                  log_file: Path | None = None) -> MoveResult:
    """direct, restore, ``Executor.run``, restore, direct: the same moves through the same ``api``.

    The executor's run is bracketed by two direct runs and compared with their mean, so a drift of the
    server's speed during the benchmark (another process, a growing database) cancels out."""
    timed = TimedAPI(api)
    actions = plan_moves(dying, live, router_ids, down_time)
    stop = threading.Event()
    registry = AgentRegistry(down_time)
    registry.replace_agents([dying, *live], time.monotonic())

    def heartbeats() -> None:  # the bus: the live agents report, the dying one is silent
        while not stop.is_set():
            for agent in live:
                registry.record(Heartbeat(L3_AGENT, agent.host, time.monotonic()))
            stop.wait(1.0)

    beater = threading.Thread(target=heartbeats, name="bench-heartbeats", daemon=True)
    beater.start()
    plugin = l3_plugin(timed, registry, workers=workers, down_time=down_time, report_interval=report_interval,
                       stop=threading.Event())
    veto_seconds = 0.0
    veto_lock = threading.Lock()

    def still_valid(action: Action) -> str | None:
        nonlocal veto_seconds
        began = time.monotonic()
        why = plugin.still_valid(action)
        with veto_lock:
            veto_seconds += time.monotonic() - began
        return why

    # The INFO line per action goes where a detached daemon's goes: a file, through the masking formatter.
    logger = logging.getLogger("rpcdaemon")
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.NullHandler()
    handler.setFormatter(MaskingFormatter(FORMAT))
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        first = run_direct(timed, actions, workers)
        restored = restore(timed, actions, workers)
        timed.reset()
        began = time.monotonic()
        outcomes = plugin.executor.run(actions, still_valid)
        ended = time.monotonic()
        calls_end, readback = timed.last_mutation_end(), timed.seconds.get("routers_on_agent", 0.0)
        restored += restore(timed, actions, workers)
        second = run_direct(timed, actions, workers)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        handler.close()
        stop.set()
        beater.join()
        plugin.executor.close()
    return MoveResult(
        routers=len(actions), workers=workers, direct=(first + second) / 2, executor=ended - began,
        restore=restored, executor_calls=calls_end - began, readback=readback, veto=veto_seconds,
        statuses=dict(Counter(o.status.value for o in outcomes)), direct_runs=(first, second),
    )


def run_real(*, routers: int = 1000, workers: int = 8, live_hosts: int = 2, verbose: bool = True) -> MoveResult:
    """``measure_moves`` on a fresh real neutron-server with fake L3 agents."""
    with NeutronServer(agent_down_time=10, report_interval=2) as server, \
            Fleet.for_server(server, prefix="mv-") as fleet, \
            bus_canary(broker_url(server)) as canary, \
            tempfile.TemporaryDirectory(prefix="rpcd-bench-moves-") as tmp:
        names = ["dying", *(f"live{i}" for i in range(live_hosts))]
        hosts = {name: fleet.add_host(name, l3=True, dhcp=False, ovs=False) for name in names}
        fleet.wait_registered(server.url, timeout=60)
        rest = SeedClient(server.url, workers=workers)
        began = time.monotonic()
        created = rest.create_routers_bulk(routers, prefix="moves")
        api = OpenStackNeutron.from_access(NeutronAccess(endpoint=server.url, timeout=120))
        by_host = {a.host: a for a in api.list_agents() if a.agent_type == L3_AGENT}
        dying = by_host[hosts["dying"]]
        rest.bind_routers_bulk(dying.id, created)
        if verbose:
            print(f"seeded {routers} routers on one agent in {time.monotonic() - began:.1f} s", flush=True)
        result = measure_moves(api, dying, [by_host[hosts[n]] for n in names[1:]], created, workers=workers,
                               log_file=Path(tmp) / "executor.log")
        placed = sum(len(api.routers_on_agent(by_host[hosts[n]].id)) for n in names[1:])
        if placed != routers:
            raise RuntimeError(f"after the executor's run {placed} of {routers} routers are on live agents")
        api.close()
        return dataclasses.replace(result, disturbed=canary.link().outages > 0)


def describe(r: MoveResult) -> str:
    other = r.overhead - r.readback
    runs = " and ".join(f"{d:.2f}" for d in r.direct_runs)
    return (f"{r.routers} moves, {r.workers} workers: direct {r.direct:.2f} s (mean of {runs}; "
            f"{r.routers / r.direct:.1f}/s), "
            f"executor {r.executor:.2f} s = calls {r.executor_calls:.2f} + read-back {r.readback:.2f} "
            f"+ other {other:.2f} (veto checks {r.veto * 1000:.0f} ms CPU in all); ratio {r.ratio:.3f} "
            f"(goal <= {GOAL_RATIO}); outcomes {r.statuses}; restore {r.restore:.2f} s; load {load_average()}"
            + ("; DISTURBED: the bus was lost and came back meanwhile" if r.disturbed else ""))


def figures(*, routers: int = 1000, workers: int = 8, live_hosts: int = 2, verbose: bool = True) -> list[Figure]:
    r = run_real(routers=routers, workers=workers, live_hosts=live_hosts, verbose=verbose)
    if verbose:
        print(describe(r), flush=True)
    note = " (DISTURBED: bus outage mid-run)" if r.disturbed else ""
    return [Figure(
        "(b) moves", f"{r.routers} router moves (unbind+bind), {r.workers} workers, real neutron-server{note}",
        f"Executor.run {r.executor:.1f} s (own overhead {r.overhead:.2f} s)", f"direct pool {r.direct:.1f} s",
        f"ratio <= {GOAL_RATIO} (measured {r.ratio:.2f})",
        None if r.disturbed else r.ratio <= GOAL_RATIO and r.statuses == {"done": r.routers},
    )]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routers", type=int, default=1000, help="routers to move (default 1000)")
    parser.add_argument("--workers", type=int, default=8, help="parallel calls, both sides (default 8)")
    parser.add_argument("--live-hosts", type=int, default=2, help="live L3 agents receiving them (default 2)")
    args = parser.parse_args(argv)
    figures(routers=args.routers, workers=args.workers, live_hosts=args.live_hosts)


if __name__ == "__main__":
    main()
