"""Run every benchmark and print one table of figures and goals (method and results: BENCHMARKS.md).

    python -m bench.run                       # all of them, default sizes (about 10-15 minutes)
    python bench/run.py --only calls,plan     # some of them
    python -m bench.run --quick               # small sizes, a few minutes: does everything still run?
    python -m bench.run --markdown            # the table as Markdown, for BENCHMARKS.md

(a) ``failover``: seconds from an L3 agent's death until its routers are on live agents, rpcdaemon
vs Neutron's own rescheduler; (b) ``moves``: ``Executor.run`` vs the same calls from a plain pool;
(c) ``calls``: Neutron API calls per hour in steady state vs the original design; (d) ``decode``:
heartbeats per second through bus + decode + registry (``bench/bench_decode.py``); (e) ``plan``: one
full plan at scale (``bench/bench_plan.py``). (d) and (e) run as child processes and their printed
figures are read back. A benchmark that fails gives an error row; the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
NAMES = ("failover", "moves", "calls", "decode", "plan")
COLUMNS = ("benchmark", "measure", "rpcdaemon", "compared with", "goal", "met")

if __package__ in (None, ""):  # ``python bench/run.py``: make ``bench`` and ``tests`` importable
    sys.path.insert(0, str(BENCH_DIR.parent))

from bench import Figure, load_average  # noqa: E402

# -- (d) and (e): child processes whose output is read back -----------------------------------------

DECODE_RATE = re.compile(r"consume\+decode\+record.*?([\d,]+) msg/s")
DECODE_ONLY = re.compile(r"decode only:\s*([\d,]+) msg/s")
MILLIS = re.compile(r"([\d][\d,]*(?:\.\d+)?)\s*ms\b")
MEMORY = re.compile(r"([\d][\d,]*(?:\.\d+)?)\s*(MiB|MB|GiB|KiB)\b")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def run_child(script: str, args: Sequence[str], timeout: float) -> str:
    """Run ``bench/<script>`` with this interpreter; its stdout, or RuntimeError with its last lines."""
    done = subprocess.run([sys.executable, str(BENCH_DIR / script), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=BENCH_DIR.parent)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{script} exited with {done.returncode}: {tail}")
    return done.stdout


def decode_figures(output: str) -> list[Figure]:
    """Figures from ``bench_decode.py``'s output."""
    rate = DECODE_RATE.search(output)
    if rate is None:
        raise RuntimeError(f"no 'consume+decode+record ... msg/s' line in bench_decode.py's output: {output!r}")
    only = DECODE_ONLY.search(output)
    value = _number(rate.group(1))
    return [Figure("(d) decode", "heartbeats through RabbitMQ -> decode -> registry, one listener",
                   f"{value:,.0f} msg/s", f"decode alone {only.group(1)} msg/s" if only else "",
                   ">= 5,000 msg/s", value >= 5000)]


def plan_figures(output: str) -> list[Figure]:
    """Figures from ``bench_plan.py``'s output: the plan time (ms) and the memory it reports."""
    lines = output.splitlines()
    timed = [ln for ln in lines if MILLIS.search(ln)]
    # Prefer the line that states the goal, then any line about the plan.
    best = next((ln for ln in timed if "goal" in ln.lower()), None) or next(
        (ln for ln in timed if "plan" in ln.lower()), None) or (timed[0] if timed else None)
    if best is None:
        raise RuntimeError(f"no '... ms' figure in bench_plan.py's output: {output!r}")
    millis = _number(MILLIS.findall(best)[0])
    memory = next((m for m in (MEMORY.search(ln) for ln in lines) if m), None)
    size = next((ln.strip() for ln in lines if re.search(r"\bagents?\b", ln) and re.search(r"\brouters?\b", ln)),
                "1,000 agents, 50,000 routers, 20,000 networks")
    return [Figure("(e) plan", f"one full plan: {size[:80]}", f"{millis:,.1f} ms",
                   f"memory {memory.group(1)} {memory.group(2)}" if memory else "", "<= 100 ms", millis <= 100)]


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
    c.add_argument("--no-real", action="store_true", help="skip the count on the real server (~3 min)")
    d = parser.add_argument_group("(d) decode and (e) plan")
    d.add_argument("--decode-n", type=int, default=20000)
    d.add_argument("--plan-args", default="", help="arguments passed to bench_plan.py, e.g. '--routers 5000'")
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
        return decode_figures(run_child("bench_decode.py", ["-n", str(2000 if quick else args.decode_n)], 600))

    def plan() -> list[Figure]:
        return plan_figures(run_child("bench_plan.py", args.plan_args.split(), 600))

    return {"failover": failover, "moves": moves, "calls": calls, "decode": decode, "plan": plan}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
            got = [Figure(name, "error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", met=False)]
        rows += got
        print(f"== {name}: {time.monotonic() - started:.0f} s, load {load_average()}", flush=True)
    print(f"\nAll done in {time.monotonic() - began:.0f} s (load {load_average()}).\n")
    print(render_markdown(rows) if args.markdown else render_table(rows))
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
