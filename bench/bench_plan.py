"""(d) Cost of deciding at scale: one full plan, and one idle check, on a large cloud.

**One plan** is what a check does once something is wrong, minus the API calls: the registry's
observations, the liveness verdicts of every agent (``judge_all``), ``plan_l3`` and ``plan_dhcp``. The
world: ``l3_agents`` L3 and ``dhcp_agents`` DHCP agents (legacy mode, availability zone ``nova`` as
Neutron reports it), ``routers`` routers spread evenly over the L3 agents, ``networks`` DHCP networks
each on ``per_network`` DHCP agents (or on every one: ``all``), one dead L3 agent and one dead DHCP
agent. Reported: the median of ``runs`` runs of each step, the tracemalloc peak of one plan, the
process's RSS (current and peak).

**One idle check** is ``FailoverPlugin.check()`` when nothing is wrong (everyone heard, caches filled
by a first reconcile on ``FakeNeutron``): the liveness verdicts and the plugin's ``wants_action``
scan of its cache, no API call (the fake's call counter proves it).

    python -m bench.bench_plan [--runs 7] [--per-network 2|all] [--l3-agents 600 --dhcp-agents 400
                                --routers 50000 --networks 20000]

Goal: one plan <= 100 ms at 1,000 agents / 50,000 routers / 20,000 networks. Called by ``bench.run``;
``measure`` is smoke-tested on tiny sizes.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import statistics
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import Figure, load_average
from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.deciding.dhcp import DhcpPolicy, plan_dhcp
from rpcdaemon.deciding.l3 import L3Policy, plan_l3
from rpcdaemon.deciding.liveness import LivenessPolicy, judge_all
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Agent, Heartbeat, Network, Router
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.plugins.dhcpagent import DHCPAgentPlugin
from rpcdaemon.plugins.l3agent import L3AgentPlugin

DOWN = 75.0
LIVENESS = LivenessPolicy(down_time=DOWN, startup_grace=DOWN, revive_hold=120.0)
GOAL_MS = 100.0
NOW = 10_000.0
LISTENING = NOW - 100.0  # bus and API up since then: a full window
ZONE = "nova"


@dataclass(frozen=True, slots=True)
class Size:
    l3_agents: int = 600
    dhcp_agents: int = 400
    routers: int = 50_000
    networks: int = 20_000
    per_network: int | None = 2  # None = "all"

    def describe(self) -> str:
        per = "all" if self.per_network is None else str(self.per_network)
        return (f"{self.l3_agents} L3 + {self.dhcp_agents} DHCP agents, {self.routers:,} routers, "
                f"{self.networks:,} networks x {per} agents")


@dataclass
class World:
    registry: AgentRegistry
    l3_agents: list[Agent]
    dhcp_agents: list[Agent]
    routers: dict[str, Router]
    router_bindings: dict[str, frozenset[str]]
    networks: dict[str, Network]
    network_bindings: dict[str, frozenset[str]]


def build_world(size: Size, *, dead: bool = True) -> World:
    """The agents, resources and bindings; with ``dead`` the first agent of each type is silent."""
    l3 = [Agent(f"l3-{i:04d}", L3_AGENT, f"net-{i:04d}", alive=not (dead and i == 0), agent_mode="legacy",
                availability_zone=ZONE) for i in range(size.l3_agents)]
    dhcp = [Agent(f"dhcp-{i:04d}", DHCP_AGENT, f"net-{i:04d}", alive=not (dead and i == 0),
                  availability_zone=ZONE) for i in range(size.dhcp_agents)]
    registry = AgentRegistry(DOWN)
    registry.replace_agents(l3 + dhcp, NOW)
    silent = {l3[0].id, dhcp[0].id} if dead else set()
    for agent in l3 + dhcp:  # everyone was heard before our link went up; the dead ones never since
        registry.record(Heartbeat(agent.agent_type, agent.host, LISTENING - 400.0))
    registry.set_listening(LISTENING)
    for at in (LISTENING + 10.0, LISTENING + 40.0, LISTENING + 70.0, NOW - 5.0):  # every 30 s or so
        for agent in l3 + dhcp:
            if agent.id not in silent:
                registry.record(Heartbeat(agent.agent_type, agent.host, at))
    ids = random.Random(42)  # random UUIDs as Neutron's: sorting them costs what it costs in production
    routers = {}
    router_bindings = {}
    for i in range(size.routers):
        rid = str(uuid.UUID(int=ids.getrandbits(128), version=4))
        routers[rid] = Router(rid, f"router-{i}")
        router_bindings[rid] = frozenset({l3[i % len(l3)].id})
    networks = {}
    network_bindings = {}
    per = len(dhcp) if size.per_network is None else size.per_network
    everyone = frozenset(a.id for a in dhcp)
    for i in range(size.networks):
        nid = str(uuid.UUID(int=ids.getrandbits(128), version=4))
        networks[nid] = Network(nid, f"net-{i}", dhcp_enabled=True)
        if size.per_network is None:
            network_bindings[nid] = everyone
        else:
            network_bindings[nid] = frozenset(dhcp[(i * per + k) % len(dhcp)].id for k in range(per))
    return World(registry, l3, dhcp, routers, router_bindings, networks, network_bindings)


@dataclass
class PlanResult:
    size: Size
    runs: int
    ms: dict[str, float] = field(default_factory=dict)  # step -> median milliseconds
    l3_actions: int = 0
    dhcp_actions: int = 0
    tracemalloc_peak_mb: float = 0.0
    rss_mb: float = 0.0
    rss_peak_mb: float = 0.0
    idle_ms: dict[str, float] = field(default_factory=dict)
    idle_api_calls: int = 0


def one_plan(world: World, size: Size, timings: dict[str, list[float]] | None = None) -> tuple[int, int]:
    """One full decision for both plugins; returns the number of L3 and DHCP actions planned."""
    marks = [time.perf_counter()]
    judged_l3 = judge_all(world.registry.observations(L3_AGENT), LISTENING, LIVENESS, NOW)
    judged_dhcp = judge_all(world.registry.observations(DHCP_AGENT), LISTENING, LIVENESS, NOW)
    marks.append(time.perf_counter())
    l3_plan = plan_l3(judged_l3, world.routers, world.router_bindings, L3Policy())
    marks.append(time.perf_counter())
    dhcp_plan = plan_dhcp(judged_dhcp, world.networks, world.network_bindings,
                          DhcpPolicy(agents_per_network=size.per_network))
    marks.append(time.perf_counter())
    if timings is not None:
        for step, (a, b) in zip(("judge", "plan_l3", "plan_dhcp"), itertools.pairwise(marks), strict=True):
            timings[step].append((b - a) * 1000)
        timings["total"].append((marks[-1] - marks[0]) * 1000)
    return len(l3_plan.actions), len(dhcp_plan.actions)


def _rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB, from /proc (Linux)."""
    fields: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = float(rest.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _idle_plugins(world: World, size: Size) -> tuple[list[FailoverPlugin], FakeNeutron, Callable[[], None]]:
    """Both plugins with filled caches, on a fake with no calls counted yet; the world has no dead agent."""
    fake = FakeNeutron()
    clock = _Clock(NOW)
    registry = world.registry
    for a in world.l3_agents + world.dhcp_agents:
        fake.add_agent(a.agent_type, a.host, agent_id=a.id, agent_mode=a.agent_mode, az=a.availability_zone)
    stop = threading.Event()
    executor = Executor(fake, ExecutorPolicy(), stop=stop)
    common: dict[str, Any] = {"bus_since": lambda: LISTENING, "clock": clock}
    args = (fake, registry, executor, LIVENESS, Timing(reconcile_interval=1e9))
    l3 = L3AgentPlugin(*args, policy=L3Policy(), **common)
    dhcp = DHCPAgentPlugin(*args, policy=DhcpPolicy(agents_per_network=size.per_network), **common)
    for plugin in (l3, dhcp):
        plugin.check()  # the first reconcile (an empty fake: quick), then fill the caches as it would have
    l3.routers, l3.bindings = world.routers, world.router_bindings
    dhcp.networks, dhcp.bindings = world.networks, world.network_bindings
    fake.calls.clear()
    return [l3, dhcp], fake, executor.close


def measure(size: Size = Size(), *, runs: int = 7) -> PlanResult:
    result = PlanResult(size, runs)
    world = build_world(size)
    gc.collect()
    timings: dict[str, list[float]] = {k: [] for k in ("judge", "plan_l3", "plan_dhcp", "total")}
    one_plan(world, size)  # warm-up
    for _ in range(runs):
        result.l3_actions, result.dhcp_actions = one_plan(world, size, timings)
    result.ms = {k: statistics.median(v) for k, v in timings.items()}
    tracemalloc.start()
    one_plan(world, size)
    result.tracemalloc_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    result.rss_mb, result.rss_peak_mb = _rss_mb()

    calm = build_world(size, dead=False)
    plugins, fake, close = _idle_plugins(calm, size)
    try:
        for plugin in plugins:
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                report = plugin.check()
                samples.append((time.perf_counter() - start) * 1000)
                assert not report.plan.actions, "the calm world needs nothing"
            result.idle_ms[plugin.name] = statistics.median(samples)
            judged = plugin.judge(NOW)
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                plugin.wants_action(judged)
                samples.append((time.perf_counter() - start) * 1000)
            result.idle_ms[f"{plugin.name}.wants_action"] = statistics.median(samples)
        result.idle_api_calls = sum(fake.calls.values())
    finally:
        close()
    return result


def render(r: PlanResult) -> str:
    lines = [
        f"world: {r.size.describe()}; 1 dead L3 + 1 dead DHCP agent; median of {r.runs} runs; "
        f"load {load_average()}",
        f"{'step':<32}{'ms':>10}",
        f"{'-' * 42}",
    ]
    lines += [f"{'registry + judge_all (both)':<32}{r.ms['judge']:>10.1f}",
              f"{f'plan_l3 ({r.l3_actions} moves)':<32}{r.ms['plan_l3']:>10.1f}",
              f"{f'plan_dhcp ({r.dhcp_actions} actions)':<32}{r.ms['plan_dhcp']:>10.1f}",
              f"{'one full plan':<32}{r.ms['total']:>10.1f}   goal <= {GOAL_MS:.0f}",
              f"{'-' * 42}"]
    for name, ms in r.idle_ms.items():
        label = f"idle check: {name}" if "." not in name else f"  of which {name.split('.', 1)[1]}"
        lines.append(f"{label:<32}{ms:>10.1f}")
    lines += [f"{'API calls in idle checks':<32}{r.idle_api_calls:>10}",
              f"{'-' * 42}",
              f"{'tracemalloc peak, one plan':<32}{r.tracemalloc_peak_mb:>8.1f} MiB",
              f"{'RSS now / peak':<32}{r.rss_mb:>8.0f} / {r.rss_peak_mb:.0f} MiB"]
    return "\n".join(lines)


def figures(size: Size = Size(), *, runs: int = 7, verbose: bool = True) -> list[Figure]:
    r = measure(size, runs=runs)
    if verbose:
        print(render(r), flush=True)
    idle = sum(v for k, v in r.idle_ms.items() if "." not in k)
    return [
        Figure("(d) planning", f"one full plan, {size.describe()}", f"{r.ms['total']:.0f} ms "
               f"(judge {r.ms['judge']:.0f}, L3 {r.ms['plan_l3']:.0f}, DHCP {r.ms['plan_dhcp']:.0f}); "
               f"tracemalloc peak {r.tracemalloc_peak_mb:.1f} MiB, RSS {r.rss_peak_mb:.0f} MiB",
               "", f"<= {GOAL_MS:.0f} ms", r.ms["total"] <= GOAL_MS),
        Figure("(d) planning", f"idle check, both plugins, {size.describe()}",
               f"{idle:.0f} ms, {r.idle_api_calls} API calls", "", "0 API calls", r.idle_api_calls == 0),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--l3-agents", type=int, default=600)
    parser.add_argument("--dhcp-agents", type=int, default=400)
    parser.add_argument("--routers", type=int, default=50_000)
    parser.add_argument("--networks", type=int, default=20_000)
    parser.add_argument("--per-network", default="2", help="DHCP agents per network: a number or 'all'")
    args = parser.parse_args(argv)
    per = None if args.per_network == "all" else int(args.per_network)
    size = Size(args.l3_agents, args.dhcp_agents, args.routers, args.networks, per)
    figures(size, runs=args.runs)


if __name__ == "__main__":
    main()
