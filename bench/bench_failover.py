"""(a) Seconds from an L3 agent's death until all of its routers are bound to live agents, and until
all their ports are ACTIVE on the live hosts (the router works again).

rpcdaemon (the real ``rpcdaemon -d -c FILE`` process, as shipped: check_interval 2 s) against
Neutron's own rescheduler (``allow_automatic_l3agent_failover = True``), with the same
``agent_down_time``, on the same neutron-server build, one after the other in one run: each side gets
a fresh ``NeutronServer`` (its own database and vhost), fake L3 agents on ``1 + live_hosts`` hosts
heartbeating every 2 s (with an OVS agent each, so that ML2 binds ports there), and ``routers``
routers, each with a gateway on a flat external network and an interface on a tenant network, bound
to the host that then dies. The fake agents work as real ones: a bind makes the L3 agent call
``sync_routers`` (the server binds the router's ports to its host) after ``--sync-delay``, and the
host's OVS agent reports them up (``update_device_list``, the server marks them ACTIVE) after
``--up-delay``. The death is ``Fleet.crash`` (heartbeats and RPC stop at once); from then on a poller
reads each live agent's routers and the routers' ports once a second, until every router is on a live
agent and all its ports are ACTIVE on that agent's host ("re-bound" and "ports ACTIVE").
A side during which the bus or the API failed (another process restarting RabbitMQ, say: seen by a
canary listener of our own, the fake agents' failed reports, or the daemon's log) is flagged
DISTURBED and run again, up to ``attempts`` times.

    python -m bench.bench_failover [--routers 100] [--down-times 10,75] [--live-hosts 2]
                                   [--sync-delay 1] [--up-delay 1]

Called by ``bench.run``; ``timeline`` (pure) is smoke-tested.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.rpcd import RpcDaemon, broker_url, render_config
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.router_ports import Topology
from tests.harness.seed import SeedClient, SeedError
from tests.kit.ports import free_port

from bench import Figure, bus_canary, fmt_seconds, load_average
from rpcdaemon.model import L3_AGENT

SIDES = ("rpcdaemon", "neutron")
REPORT_INTERVAL = 2
# rpcdaemon's own summary line after a pass that acted (plugins.base._summarise).
PASS_LINE = re.compile(r"L3Agent pass: (\d+) actions in ([\d.]+)s")
# rpcdaemon's readiness lines (plugins.base / acting.readiness): one per router, or one per host and poll.
READY_ONE = re.compile(r"L3Agent: router \S+ ready on \S+ \(\S+\) in ([\d.]+)s")
READY_MANY = re.compile(r"L3Agent: (\d+) routers ready on \S+ \(\S+\) in [\d.]+s median, ([\d.]+)s max")
# The daemon's own words for losing the bus (observing.listener) or the API (plugins.base) mid-run.
OUTAGE_LINE = re.compile(r"lost the link to \S+ \w+|Neutron API call failed \([^)]*\)")


@dataclass(frozen=True, slots=True)
class Timeline:
    """When the routers of the dead agent were seen on live agents, in seconds after the death."""

    total: int
    first: float | None  # the first router on a live agent
    half: float | None
    all: float | None  # every router on a live agent (None: not within the time allowed)
    neutron_dead: float | None  # Neutron's ``alive`` flag first read false


def timeline(samples: Sequence[tuple[float, int]], total: int, neutron_dead: float | None = None) -> Timeline:
    """From poll samples ``(seconds after death, routers on live agents)`` to the first/half/all times."""

    def first_at(wanted: int) -> float | None:
        return next((t for t, n in samples if n >= wanted), None)

    return Timeline(total, first_at(1), first_at((total + 1) // 2), first_at(total), neutron_dead)


@dataclass(frozen=True, slots=True)
class SideResult:
    side: str
    down_time: int
    timeline: Timeline
    ready: Timeline  # every router's ports ACTIVE on a live host
    detail: str = ""  # e.g. rpcdaemon's own "pass: N actions in X s"
    disturbed: bool = False  # the bus or the API failed during the run (another process's doing)


def poll_rebound(
    rest: SeedClient,
    dying: str,
    live: Sequence[str],
    routers: set[str],
    *,
    started: float,
    timeout: float,
    interval: float = 1.0,
    topology: Topology | None = None,
    live_hosts: AbstractSet[str] = frozenset(),
) -> tuple[Timeline, Timeline]:
    """Read the live agents' routers (and with ``topology`` the routers' ports) every ``interval`` until all
    ``routers`` are on them (and their ports ACTIVE on ``live_hosts``): (re-bound, ports ACTIVE)."""
    samples: list[tuple[float, int]] = []
    active: list[tuple[float, int]] = []
    up = 0 if topology is not None else len(routers)
    neutron_dead: float | None = None
    tick = started
    while True:
        tick += interval
        time.sleep(max(0.0, tick - time.monotonic()))
        try:
            rebound = set().union(*(rest.routers_on_agent(aid) for aid in live)) & routers
            if topology is not None:
                up = topology.active_on(live_hosts)
            if neutron_dead is None and not rest.agent(dying)["alive"]:
                neutron_dead = time.monotonic() - started
        except (SeedError, OSError):
            continue  # a busy API is no reason to stop measuring; the sample is simply missing
        now = time.monotonic() - started
        samples.append((now, len(rebound)))
        active.append((now, up))
        if (len(rebound) == len(routers) and up == len(routers)) or now > timeout:
            return timeline(samples, len(routers), neutron_dead), timeline(active, len(routers), neutron_dead)
        tick = max(tick, time.monotonic() - interval)  # a slow read must not cause a burst of reads


def run_side(side: str, *, down_time: int, routers: int, live_hosts: int, workdir: Path,
             sync_delay: float = 1.0, up_delay: float = 1.0) -> SideResult:
    """One failover on a fresh Neutron: rpcdaemon's (``side="rpcdaemon"``) or Neutron's own."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}")
    server = NeutronServer(agent_down_time=down_time, report_interval=REPORT_INTERVAL,
                           allow_automatic_l3agent_failover=side == "neutron")
    with server, Fleet.for_server(server, prefix=f"fo{down_time}-") as fleet, \
            bus_canary(broker_url(server)) as canary:
        names = ["dying", *(f"live{i}" for i in range(live_hosts))]
        hosts = {name: fleet.add_host(name, l3=True, dhcp=False, ovs=True) for name in names}
        for name in names:
            fleet.set_host(name, sync_delay=sync_delay, up_delay=up_delay)
        ids = fleet.wait_registered(server.url, timeout=60)
        agent = {name: ids[(host, L3_AGENT)] for name, host in hosts.items()}
        rest = SeedClient(server.url)
        topology = Topology(rest)
        topology.create_networks("failover")
        created = topology.add_routers(agent["dying"], routers, "failover")
        _wait_active(topology, {hosts["dying"]}, routers, timeout=60 + routers)
        daemon: RpcDaemon | None = None
        try:
            if side == "rpcdaemon":
                config = workdir / f"failover-{down_time}.conf"
                config.write_text(render_config(server, plugins=("L3Agent",), metrics_port=free_port(),
                                                daemon={"check_interval": 2, "loglevel": "INFO"}))
                daemon = RpcDaemon(workdir, f"rpcdaemon-failover-{down_time}", config).start()
                daemon.wait_ready(timeout=60)
                # A daemon in steady state: past its start-up window (one agent_down_time).
                time.sleep(down_time + 2)
            live = {hosts[n] for n in names[1:]}
            failed_before = _report_failures(fleet, live)
            fleet.crash("dying")
            started = time.monotonic()
            budget = (2 * down_time + 60) if side == "rpcdaemon" else (3.5 * down_time + 60)
            line, ready = poll_rebound(rest, agent["dying"], [agent[n] for n in names[1:]], set(created),
                                       started=started, timeout=budget, topology=topology, live_hosts=live)
            # A broker restart or an outage of the API (other processes on a shared machine do that)
            # restarts the daemon's window by design, and stalls Neutron's RPC: the figure would then
            # measure the outage, not the failover. Say so rather than report it as is.
            disturbances = []
            if canary.link().outages:
                disturbances.append("the bus was lost and came back (a broker restart?)")
            if _report_failures(fleet, live) > failed_before:
                disturbances.append("live agents' report_state calls failed (bus trouble)")
            detail = ""
            if daemon is not None:
                # The executor logs its summary after the read-back: a moment after the poller saw all.
                deadline = time.monotonic() + 15
                while not PASS_LINE.search(daemon.log()) and time.monotonic() < deadline:
                    time.sleep(0.2)
                while _logged_ready(daemon.log()) < routers and time.monotonic() < deadline:
                    time.sleep(0.2)  # its readiness poll runs once a second, after ours may have seen all
                log = daemon.log()
                detail = "; ".join(f"pass of {n} actions took {s} s" for n, s in PASS_LINE.findall(log))
                logged = [(1, float(t)) for t in READY_ONE.findall(log)]
                logged += [(int(n), float(t)) for n, t in READY_MANY.findall(log)]
                if logged:
                    detail += (f"; logged {sum(n for n, _ in logged)} routers ready, at most "
                               f"{max(t for _, t in logged):.1f} s after their move began")
                disturbances += [m.group(0) for m in OUTAGE_LINE.finditer(log)][:1]
            disturbed = bool(disturbances)
            if disturbed:
                detail = f"DISTURBED, not a failover figure: {'; '.join(disturbances)}; {detail}"
            return SideResult(side, down_time, line, ready, detail, disturbed)
        finally:
            if daemon is not None:
                daemon.stop()


def _logged_ready(log: str) -> int:
    return len(READY_ONE.findall(log)) + sum(int(n) for n, _ in READY_MANY.findall(log))


def _wait_active(topology: Topology, hosts: set[str], routers: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while topology.active_on(hosts) < routers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the seeded routers' ports are not ACTIVE on {sorted(hosts)} after {timeout:.0f} s")
        time.sleep(0.5)


def _report_failures(fleet: Fleet, hosts: set[str]) -> int:
    return sum(a.failures for a in fleet.agents() if a.host in hosts)


def figures(*, routers: int = 100, down_times: Sequence[int] = (10,), live_hosts: int = 2, attempts: int = 3,
            verbose: bool = True, sync_delay: float = 1.0, up_delay: float = 1.0) -> list[Figure]:
    rows: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="rpcd-bench-failover-") as tmp:
        for down_time in down_times:
            results = {}
            for side in SIDES:
                for _attempt in range(attempts):  # a disturbed run says nothing: run it again
                    results[side] = run_side(side, down_time=down_time, routers=routers, live_hosts=live_hosts,
                                             workdir=Path(tmp), sync_delay=sync_delay, up_delay=up_delay)
                    if verbose:
                        print(describe(results[side]), flush=True)
                    if not results[side].disturbed:
                        break
            ours, theirs = results["rpcdaemon"].timeline, results["neutron"].timeline
            size = f"{routers} routers of a dead L3 agent, agent_down_time {down_time} s"
            disturbed = any(r.disturbed for r in results.values())
            if disturbed:
                size += " (DISTURBED: bus or API outage mid-run)"
            rows.append(Figure(
                "(a) failover", f"{size}: all on live agents",
                f"rpcdaemon {fmt_seconds(ours.all)}", f"Neutron {fmt_seconds(theirs.all)}",
                "faster than Neutron's rescheduler",
                None if disturbed
                else ours.all is not None and (theirs.all is None or ours.all < theirs.all),
            ))
            ours_up, theirs_up = results["rpcdaemon"].ready, results["neutron"].ready
            rows.append(Figure(
                "(a) failover",
                f"same: all routers' ports ACTIVE on live hosts (agent sync {sync_delay:g} s, up {up_delay:g} s)",
                f"rpcdaemon {fmt_seconds(ours_up.all)}", f"Neutron {fmt_seconds(theirs_up.all)}",
                "faster than Neutron's rescheduler",
                None if disturbed
                else ours_up.all is not None and (theirs_up.all is None or ours_up.all < theirs_up.all),
            ))
            rows.append(Figure(
                "(a) failover", f"{size}: first router moved",
                f"rpcdaemon {fmt_seconds(ours.first)}", f"Neutron {fmt_seconds(theirs.first)}",
            ))
    return rows


def describe(result: SideResult) -> str:
    t = result.timeline
    text = (f"{result.side:>9} agent_down_time {result.down_time:>3} s: Neutron says dead at "
            f"{fmt_seconds(t.neutron_dead)}, first router at {fmt_seconds(t.first)}, half at "
            f"{fmt_seconds(t.half)}, all {t.total} at {fmt_seconds(t.all)}, all ports ACTIVE at "
            f"{fmt_seconds(result.ready.all)} (load {load_average()})")
    return f"{text}; {result.detail}" if result.detail else text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routers", type=int, default=100, help="routers on the agent that dies (default 100)")
    parser.add_argument("--down-times", default="10", help="agent_down_time values, comma-separated (default 10)")
    parser.add_argument("--live-hosts", type=int, default=2, help="live L3 agents that take the routers (default 2)")
    parser.add_argument("--sync-delay", type=float, default=1.0,
                        help="seconds a fake L3 agent waits before sync_routers (default 1)")
    parser.add_argument("--up-delay", type=float, default=1.0,
                        help="seconds a fake OVS agent waits before reporting the ports up (default 1)")
    args = parser.parse_args(argv)
    down_times = [int(v) for v in args.down_times.split(",") if v.strip()]
    for row in figures(routers=args.routers, down_times=down_times, live_hosts=args.live_hosts,
                       sync_delay=args.sync_delay, up_delay=args.up_delay):
        print(f"{row.measure}: {row.value} vs {row.reference}")


if __name__ == "__main__":
    main()
