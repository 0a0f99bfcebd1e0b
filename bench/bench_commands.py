"""(h) The operator commands at scale: what ``check``, ``evacuate`` and ``rebalance`` cost to decide.

The world: ``l3_agents`` legacy L3 agents, ``routers`` routers spread evenly, one agent dead by Neutron,
one agent that just joined (empty). Measured (median of ``runs``):

- ``check``: ``commands.check.check_plugin`` on ``FakeNeutron`` with ``latency`` seconds per API call (a
  real neutron-server answers an agent's ``l3-routers`` in 5-20 ms): the reads (one ``list_agents``, one
  ``list_routers``, one call per agent, eight at a time) and the plan; the number of API calls;
- ``evacuate`` planning: ``plan_drain_l3`` for the busiest live agent (no API: the command's reads are
  the same as check's);
- ``rebalance`` planning: ``plan_rebalance_l3`` onto the new agent, unlimited, then the ±1 it reaches.

    python -m bench.bench_commands [--l3-agents 300] [--routers 20000] [--latency 0.005] [--runs 3]

Goal: ``check`` within 10 s at 300 agents and 20,000 routers (a Nagios check's usual timeout); each plan
within 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import Figure, load_average
from rpcdaemon.commands.check import check_plugin
from rpcdaemon.commands.context import CommandContext
from rpcdaemon.commands.fleet import DaemonFacts
from rpcdaemon.deciding.drain import plan_drain_l3
from rpcdaemon.deciding.rebalance import plan_rebalance_l3
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import L3_AGENT

CHECK_GOAL = 10.0
PLAN_GOAL = 1.0


@dataclass(frozen=True)
class Size:
    l3_agents: int = 300
    routers: int = 20_000
    latency: float = 0.005

    def describe(self) -> str:
        return f"{self.l3_agents} L3 agents, {self.routers:,} routers, {self.latency * 1000:.0f} ms a call"


def world(size: Size) -> FakeNeutron:
    neutron = FakeNeutron(latency=size.latency)
    agents = [neutron.add_agent(L3_AGENT, f"net-{i:04d}", agent_id=f"l3-{i:04d}") for i in range(size.l3_agents)]
    for i in range(size.routers):
        neutron.add_router(router_id=f"r-{i:06d}")
        neutron.place_router(f"r-{i:06d}", agents[i % (size.l3_agents - 1)].id)  # the last one joined empty
    neutron.set_alive(agents[0].id, False)  # dead by Neutron: check has work to report
    return neutron


def context(tmp: Path) -> CommandContext:
    neutron_conf = tmp / "neutron.conf"
    neutron_conf.write_text("[DEFAULT]\nagent_down_time = 75\n")
    conf = tmp / "rpcdaemon.conf"
    conf.write_text("[Daemon]\nplugins = L3Agent\nrpchost = amqp://guest:guest@127.0.0.1:5672//\n"
                    f"[L3Agent]\nendpoint = http://127.0.0.1:9696\nconffile = {neutron_conf}\n")
    return CommandContext.load(conf)


def measure(size: Size, runs: int = 3) -> dict[str, float]:
    neutron = world(size)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = context(Path(tmp))
        facts = DaemonFacts(view=None, state=None)
        check_s, calls = [], 0
        result = None
        for _ in range(runs):
            before = sum(neutron.calls.values())
            began = time.perf_counter()
            result = check_plugin("L3Agent", neutron, ctx, facts)
            check_s.append(time.perf_counter() - began)
            calls = sum(neutron.calls.values()) - before
        assert result is not None
        assert result.error is None, result.error
    agents = neutron.list_agents()
    routers = {r.id: r for r in neutron.list_routers()}
    bindings = {rid: frozenset(hosts) for rid, hosts in neutron.router_bindings().items()}
    live = [a for a in agents if a.alive]
    busiest = max(live, key=lambda a: sum(1 for h in bindings.values() if a.id in h))
    drain_s, rebalance_s = [], []
    spread = 0
    for _ in range(runs):
        began = time.perf_counter()
        drained = plan_drain_l3(busiest, agents, routers, bindings)
        drain_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        plan = plan_rebalance_l3(live, routers, bindings, max_moves=size.routers)
        rebalance_s.append(time.perf_counter() - began)
        after = Counter(plan.after)
        spread = max(after.values()) - min(after.values())
    return {"check_s": statistics.median(check_s), "check_calls": calls,
            "check_moves": len(result.plan.actions) if result else 0,
            "drain_s": statistics.median(drain_s), "drain_moves": len(drained.actions),
            "rebalance_s": statistics.median(rebalance_s), "rebalance_moves": len(plan.actions),
            "rebalance_spread": spread}


def figures(size: Size = Size(), *, runs: int = 3, verbose: bool = True) -> list[Figure]:
    r = measure(size, runs=runs)
    if verbose:
        print(f"commands at {size.describe()} (load {load_average()}): check {r['check_s']:.2f} s "
              f"({r['check_calls']:.0f} API calls, {r['check_moves']:.0f} moves reported); evacuate plan "
              f"{r['drain_s'] * 1000:.0f} ms ({r['drain_moves']:.0f} moves); rebalance plan "
              f"{r['rebalance_s'] * 1000:.0f} ms ({r['rebalance_moves']:.0f} moves, spread after "
              f"{r['rebalance_spread']:.0f})", flush=True)
    return [
        Figure("(h) commands", f"rpcdaemon check, {size.describe()}",
               f"{r['check_s']:.2f} s, {r['check_calls']:.0f} API calls", "", f"<= {CHECK_GOAL:.0f} s",
               r["check_s"] <= CHECK_GOAL),
        Figure("(h) commands", f"evacuate plan, busiest agent ({r['drain_moves']:.0f} routers)",
               f"{r['drain_s'] * 1000:.0f} ms", "", f"<= {PLAN_GOAL * 1000:.0f} ms", r["drain_s"] <= PLAN_GOAL),
        Figure("(h) commands", "rebalance plan onto one new agent, unlimited",
               f"{r['rebalance_s'] * 1000:.0f} ms, {r['rebalance_moves']:.0f} moves, "
               f"spread {r['rebalance_spread']:.0f}",
               "", f"<= {PLAN_GOAL * 1000:.0f} ms, spread <= 1",
               r["rebalance_s"] <= PLAN_GOAL and r["rebalance_spread"] <= 1),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--l3-agents", type=int, default=300)
    parser.add_argument("--routers", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.005)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    figures(Size(args.l3_agents, args.routers, args.latency), runs=args.runs)


if __name__ == "__main__":
    main()
