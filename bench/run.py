"""Run every benchmark and print one table of figures and goals (method and results: BENCHMARKS.md).

    python -m bench.run                       # all of them, default sizes (8-10 minutes on 2 cores)
    python bench/run.py --only calls,plan     # some of them
    python -m bench.run --quick               # small sizes, a few minutes: does everything still run?
    python -m bench.run --markdown            # the table as Markdown, for BENCHMARKS.md

(a) ``failover``: seconds from an L3 agent's death until its routers are on live agents, and until
their ports are ACTIVE on the live hosts, rpcdaemon vs Neutron's own rescheduler; (b) ``moves``:
``Executor.run`` vs the same calls from a plain pool;
(c) ``calls``: Neutron API calls per hour in steady state vs the original design; (d) ``decode``:
heartbeats per second through bus + decode + registry (``bench/bench_decode.py``); (e) ``plan``: one
full plan at scale (``bench/bench_plan.py``); (g) ``takeover``: three instances, the active one killed
(``bench/bench_takeover.py``); (h) ``commands``: what ``rpcdaemon check``, ``evacuate`` and
``rebalance`` cost to decide at scale (``bench/bench_commands.py``). (d) and (e) run in child processes
(their memory and CPU figures are then their own): (d)'s printed rate is read back, (e) is ``bench_plan.figures`` run by
``bench.run --child plan``, which prints its figures as one JSON line. A benchmark that fails gives an
error row; the others still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
NAMES = ("failover", "moves", "calls", "decode", "plan", "takeover", "commands")
COLUMNS = ("benchmark", "measure", "rpcdaemon", "compared with", "goal", "met")

if __package__ in (None, ""):  # ``python bench/run.py``: make ``bench`` and ``tests`` importable
    sys.path.insert(0, str(BENCH_DIR.parent))

from bench import Figure, load_average  # noqa: E402

# -- (d) and (e): child processes, so their memory and CPU figures are their own ----------------------

DECODE_RATE = re.compile(r"consume\+decode\+record.*?([\d,]+) msg/s")
DECODE_ONLY = re.compile(r"decode only:\s*([\d,]+) msg/s")
FIGURES_TAG = "BENCH-FIGURES "


def run_child(args: Sequence[str], timeout: float) -> str:
    """``python -m <args>`` from the repository root; its stdout (echoed), or RuntimeError with its last lines."""
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=BENCH_DIR.parent)
    for line in done.stdout.splitlines():
        if not line.startswith(FIGURES_TAG):
            print(f"   {line}", flush=True)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"python -m {args[0]} exited with {done.returncode}: {tail}")
    return done.stdout


def decode_figures(output: str) -> list[Figure]:
    """Figures from ``bench/bench_decode.py``'s printed output."""
    rate = DECODE_RATE.search(output)
    if rate is None:
        raise RuntimeError(f"no 'consume+decode+record ... msg/s' line in bench_decode's output: {output!r}")
    only = DECODE_ONLY.search(output)
    value = float(rate.group(1).replace(",", ""))
    return [Figure("(d) decode", "heartbeats through RabbitMQ -> decode -> registry, one listener",
                   f"{value:,.0f} msg/s", f"decode alone {only.group(1)} msg/s" if only else "",
                   ">= 5,000 msg/s", value >= 5000)]


def emit_figures(rows: Sequence[Figure]) -> str:
    """The line a child prints so that the parent reads its figures back (``read_figures``)."""
    return FIGURES_TAG + json.dumps([dataclasses.asdict(r) for r in rows])


def read_figures(output: str) -> list[Figure]:
    for line in reversed(output.splitlines()):
        if line.startswith(FIGURES_TAG):
            return [Figure(**row) for row in json.loads(line[len(FIGURES_TAG):])]
    raise RuntimeError("the child printed no figures")


def plan_child(args: argparse.Namespace) -> list[Figure]:
    """In the child process: ``bench_plan.figures`` at the requested size, relabelled (e)."""
    from bench import bench_plan

    given = {"l3_agents": args.plan_l3_agents, "dhcp_agents": args.plan_dhcp_agents,
             "routers": args.plan_routers, "networks": args.plan_networks}
    size = dataclasses.replace(bench_plan.Size(), **{k: v for k, v in given.items() if v is not None})
    if args.plan_per_network is not None:
        per = None if args.plan_per_network == "all" else int(args.plan_per_network)
        size = dataclasses.replace(size, per_network=per)
    rows = bench_plan.figures(size, runs=args.plan_runs)
    return [dataclasses.replace(r, bench="(e) plan") for r in rows]


# -- the table ------------------------------------------------------------------------------------


def _cells(row: Figure) -> tuple[str, ...]:
    met = {True: "yes", False: "NO", None: "-"}[row.met]
    return (row.bench, row.measure, row.value, row.reference, row.goal, met)


def render_table(rows: Sequence[Figure]) -> str:
    table = [COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    out = []
    for n, line in enumerate(table):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_markdown(rows: Sequence[Figure]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(out)


# -- running ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(NAMES), help=f"comma-separated, from: {', '.join(NAMES)}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere (a smoke run)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    a = parser.add_argument_group("(a) failover")
    a.add_argument("--failover-routers", type=int, default=100)
    a.add_argument("--down-times", default="10", help="agent_down_time values, e.g. 10,75 (75 adds ~6 min)")
    b = parser.add_argument_group("(b) moves")
    b.add_argument("--moves-routers", type=int, default=1000)
    b.add_argument("--workers", type=int, default=8)
    c = parser.add_argument_group("(c) calls")
    c.add_argument("--l3-agents", type=int, default=20)
    c.add_argument("--dhcp-agents", type=int, default=20)
    c.add_argument("--routers", type=int, default=2000)
    c.add_argument("--networks", type=int, default=200)
    c.add_argument("--no-real", action="store_true", help="skip the count on the real server (~2 min)")
    d = parser.add_argument_group("(d) decode")
    d.add_argument("--decode-n", type=int, default=20000, help="heartbeats to publish")
    e = parser.add_argument_group("(e) plan (defaults: bench_plan's own, 1,000 agents / 50,000 routers)")
    e.add_argument("--plan-l3-agents", type=int)
    e.add_argument("--plan-dhcp-agents", type=int)
    e.add_argument("--plan-routers", type=int)
    e.add_argument("--plan-networks", type=int)
    e.add_argument("--plan-per-network", help="DHCP agents per network: a number or 'all'")
    e.add_argument("--plan-runs", type=int, default=7)
    g = parser.add_argument_group("(g) takeover")
    g.add_argument("--takeover-runs", type=int, default=5, help="runs of each scenario (about 70 s each)")
    parser.add_argument("--child", choices=("plan",), help=argparse.SUPPRESS)
    return parser


def selected(args: argparse.Namespace) -> list[str]:
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = (only | skip) - set(NAMES)
    if unknown:
        raise SystemExit(f"bench.run: unknown benchmark(s) {', '.join(sorted(unknown))}; valid: {', '.join(NAMES)}")
    return [n for n in NAMES if n in only and n not in skip]


def plan_runs(args: argparse.Namespace) -> dict[str, Callable[[], list[Figure]]]:
    """Benchmark name -> what runs it, sizes from ``args`` (imports are lazy: each pulls in the harness)."""
    quick = args.quick

    def failover() -> list[Figure]:
        from bench import bench_failover

        down_times = [int(v) for v in args.down_times.split(",") if v.strip()]
        return bench_failover.figures(routers=20 if quick else args.failover_routers, down_times=down_times)

    def moves() -> list[Figure]:
        from bench import bench_moves

        return bench_moves.figures(routers=100 if quick else args.moves_routers, workers=args.workers)

    def calls() -> list[Figure]:
        from bench import bench_api_calls as calls_bench

        size = calls_bench.Size(args.l3_agents, args.dhcp_agents, args.routers, args.networks)
        if quick:
            return calls_bench.figures(size, real=not args.no_real, real_hosts=2, real_routers=40, real_networks=4)
        return calls_bench.figures(size, real=not args.no_real)

    def decode() -> list[Figure]:
        n = 2000 if quick else args.decode_n
        return decode_figures(run_child(["bench.bench_decode", "-n", str(n)], 600))

    def plan() -> list[Figure]:
        sizes = ["--plan-l3-agents", "60", "--plan-dhcp-agents", "40", "--plan-routers", "5000",
                 "--plan-networks", "2000", "--plan-runs", "3"] if quick else []
        passed = [f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
                  if key.startswith("plan_") and value is not None]
        return read_figures(run_child(["bench.run", "--child", "plan", *passed, *sizes], 600))

    def takeover() -> list[Figure]:
        from bench import bench_takeover

        return bench_takeover.figures(runs=2 if quick else args.takeover_runs, routers=10 if quick else 30)

    def commands() -> list[Figure]:
        from bench import bench_commands

        size = bench_commands.Size(30, 2000) if quick else bench_commands.Size()
        return bench_commands.figures(size, runs=1 if quick else 3)

    return {"failover": failover, "moves": moves, "calls": calls, "decode": decode, "plan": plan,
            "takeover": takeover, "commands": commands}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child == "plan":
        print(emit_figures(plan_child(args)))
        return 0
    names = selected(args)
    runs = plan_runs(args)
    began = time.monotonic()
    print(f"rpcdaemon benchmarks {datetime.datetime.now().isoformat(timespec='seconds')} on {platform.node()}: "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, load {load_average()}; "
          f"running {', '.join(names)}", flush=True)
    rows: list[Figure] = []
    for name in names:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            got = runs[name]()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            got = [Figure(name, "error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}", met=False)]
        rows += got
        print(f"== {name}: {time.monotonic() - started:.0f} s, load {load_average()}", flush=True)
    print(f"\nAll done in {time.monotonic() - began:.0f} s (load {load_average()}).\n")
    print(render_markdown(rows) if args.markdown else render_table(rows))
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
