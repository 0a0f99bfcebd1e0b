"""(c) Neutron API calls per hour in steady state: rpcdaemon vs the original (2013) design.

**rpcdaemon, simulated**: the real L3Agent and DHCPAgent plugins (built by ``plugin_factory.build_plugin``
from the shipped defaults: check_interval 2 s, reconcile_interval 60 s) on ``FakeNeutron`` with a fake
clock, through one simulated hour after a warm-up: ``l3_agents`` L3 and ``dhcp_agents`` DHCP agents,
all heartbeating every ``report_interval`` (none dead), ``routers`` routers spread over the L3 agents,
``networks`` DHCP networks each hosted by every DHCP agent (``agents_per_network = all``, the original's
policy). ``FakeNeutron.calls`` counts adapter methods; HTTP requests follow from them with the real
adapter's paging (``limit`` 500: a list of n items takes n // 500 + 1 requests; networks also list
subnets).

**The original**: every ``check_interval`` (1 s), for every agent, its plugin's ``handle`` (read from
the original's DHCPAgent/L3Agent plugins, which the spec describes): DHCP: list the agent's networks,
then for each live DHCP agent *and each of those networks* list that agent's networks again (a list
comprehension re-evaluated per element); L3: list all routers, then each live L3 agent's routers.
With no agent dead and every network on every DHCP agent (N networks, D DHCP, L L3 agents)::

    calls per pass = D * (1 + D * N) + L * (1 + L)        = O(agents^2 x networks)

**rpcdaemon on the real server** (``--real``): the real daemon process on a small real set-up for a few
reconcile intervals; its requests are counted in the uWSGI request log and compared with the same
model, which then extrapolates.

    python -m bench.bench_api_calls [--l3-agents 20 --dhcp-agents 20 --routers 2000 --networks 200] [--real]

Called by ``bench.run``; ``simulate``, ``original_calls_per_pass`` and ``requests_per_reconcile`` are
smoke-tested.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.rpcd import RpcDaemon, broker_url, render_config
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.ports import free_port

from bench import Figure, bus_canary, load_average
from rpcdaemon.access import NeutronAccess
from rpcdaemon.config.neutronconf import NeutronConf, PluginNeutron
from rpcdaemon.config.settings import DHCPAgentSettings, L3AgentSettings
from rpcdaemon.daemon.plugin_factory import build_plugin
from rpcdaemon.daemon.wiring import plugin_config
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Heartbeat
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin

PAGE_SIZE = 500  # OpenStackNeutron.from_access: the limit of each page of a list call
ORIGINAL_CHECK_INTERVAL = 1.0
# Serial GET /v2.0/agents on this machine (project's Neutron notes): about 80 requests/s.
ORIGINAL_SERIAL_RATE = 80.0


@dataclass(frozen=True, slots=True)
class Size:
    l3_agents: int = 20
    dhcp_agents: int = 20
    routers: int = 2000
    networks: int = 200

    def describe(self) -> str:
        return (f"{self.l3_agents} L3 + {self.dhcp_agents} DHCP agents, {self.routers} routers, "
                f"{self.networks} networks")


def pages(items: int, page_size: int = PAGE_SIZE) -> int:
    """Requests to list ``items`` items: Neutron adds a next link to every full page."""
    return items // page_size + 1


def requests_per_reconcile(size: Size, page_size: int = PAGE_SIZE) -> tuple[int, int]:
    """(adapter method calls, HTTP requests) of one reconcile of both plugins (one subnet per network)."""
    agents = size.l3_agents + size.dhcp_agents
    methods = (1 + 1 + size.l3_agents) + (1 + 1 + size.dhcp_agents)
    http = (pages(agents, page_size) + pages(size.routers, page_size) + size.l3_agents
            + pages(agents, page_size) + pages(size.networks, page_size) + pages(size.networks, page_size)
            + size.dhcp_agents)
    return methods, http


def original_calls_per_pass(size: Size) -> int:
    """The original daemon's API calls in one pass with no agent dead (see the module docstring)."""
    d, n, l3 = size.dhcp_agents, size.networks, size.l3_agents
    return d * (1 + d * n) + l3 * (1 + l3)


# -- rpcdaemon, simulated --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class SimResult:
    size: Size
    seconds: float  # simulated
    checks: int  # check passes of each plugin
    reconcile_interval: float
    calls: Counter[str] = field(default_factory=Counter)  # adapter methods
    passes_with_calls: int = 0
    actions: int = 0

    @property
    def reconciles_expected(self) -> int:
        """Passes that may call the API: one reconcile per interval and plugin, nothing else."""
        return 2 * round(self.seconds / self.reconcile_interval)

    @property
    def method_calls(self) -> int:
        return sum(self.calls.values())

    def http_requests(self, page_size: int = PAGE_SIZE) -> int:
        agents = self.size.l3_agents + self.size.dhcp_agents
        per_call = {
            "list_agents": pages(agents, page_size),
            "list_routers": pages(self.size.routers, page_size),
            "list_networks": 2 * pages(self.size.networks, page_size),  # networks, then subnets
        }
        return sum(n * per_call.get(method, 1) for method, n in self.calls.items())

    def per_hour(self, value: float) -> float:
        return value * 3600.0 / self.seconds


def seed_fake(size: Size) -> FakeNeutron:
    """Steady state: routers spread over the L3 agents, every network on every DHCP agent."""
    fake = FakeNeutron()
    l3 = [fake.add_agent(L3_AGENT, f"net-{i}") for i in range(size.l3_agents)]
    dhcp = [fake.add_agent(DHCP_AGENT, f"net-{i}") for i in range(size.dhcp_agents)]
    for i in range(size.routers):
        fake.place_router(fake.add_router(f"r{i}").id, l3[i % len(l3)].id)
    for i in range(size.networks):
        network = fake.add_network(f"n{i}")
        for agent in dhcp:
            fake.place_network(network.id, agent.id)
    return fake


def build_plugins(api: FakeNeutron, registry: AgentRegistry, clock: FakeClock, *, reconcile_interval: float,
                  down_time: float, report_interval: float) -> list[FailoverPlugin]:
    """Both failover plugins as ``wiring`` builds them from default settings (plus the given intervals)."""
    conf = NeutronConf(agent_down_time=down_time, report_interval=report_interval)
    pn = PluginNeutron(conf=conf, access=NeutronAccess(endpoint="http://bench"), agent_down_time=down_time,
                       startup_grace=down_time)
    stop = threading.Event()
    plugins = []
    for name, settings in (("L3Agent", L3AgentSettings(reconcile_interval=reconcile_interval)),
                           ("DHCPAgent", DHCPAgentSettings(reconcile_interval=reconcile_interval))):
        cfg = plugin_config(settings, pn, down_time, False)
        plugins.append(build_plugin(name, api, registry, cfg, bus_since=lambda: 0.0, stop=stop, clock=clock))
    return plugins


def simulate(size: Size = Size(), *, hours: float = 1.0, check_interval: float = 2.0,
             reconcile_interval: float = 60.0, report_interval: float = 30.0, down_time: float = 75.0,
             warmup: float | None = None) -> SimResult:
    """Count the API calls of ``hours`` simulated hours of checks, after ``warmup`` simulated seconds."""
    fake = seed_fake(size)
    clock = FakeClock()
    registry = AgentRegistry(down_time)
    plugins = build_plugins(fake, registry, clock, reconcile_interval=reconcile_interval, down_time=down_time,
                            report_interval=report_interval)
    agents = fake.list_agents()
    fake.calls.clear()
    # Heartbeats staggered over one report interval, as real agents' are.
    due = {a.key: report_interval * i / len(agents) for i, a in enumerate(agents)}
    warm = warmup if warmup is not None else 2 * reconcile_interval + down_time
    checks = round(hours * 3600.0 / check_interval)
    warm_steps = round(warm / check_interval)
    result = SimResult(size, checks * check_interval, checks, reconcile_interval)
    try:
        for step in range(warm_steps + checks):
            counting = step >= warm_steps
            if step == warm_steps:
                fake.calls.clear()
            for key, at in due.items():
                while at <= clock.now:
                    registry.record(Heartbeat(key[0], key[1], at))
                    at += report_interval
                due[key] = at
            for plugin in plugins:
                report = plugin.check()
                if counting:
                    result.passes_with_calls += report.api_calls
                    result.actions += len(report.outcomes)
            clock.now += check_interval
    finally:
        for plugin in plugins:
            plugin.executor.close()
    result.calls = Counter(fake.calls)
    return result


# -- rpcdaemon on the real server --------------------------------------------------------------------

REQUEST_LINE = re.compile(r"\] (GET|POST|PUT|DELETE) (\S+) => generated")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def request_kinds(lines: Iterable[str]) -> Counter[str]:
    """uWSGI request log lines -> counts per "METHOD /path/{id}" (query strings dropped)."""
    kinds: Counter[str] = Counter()
    for line in lines:
        m = REQUEST_LINE.search(line)
        if m:
            kinds[f"{m.group(1)} {UUID.sub('{id}', m.group(2).split('?', 1)[0])}"] += 1
    return kinds


@dataclass(frozen=True, slots=True)
class RealResult:
    size: Size
    reconcile_interval: float
    window: float
    reconciles: float  # list_agents calls / 2 (each plugin lists agents once per reconcile)
    requests: int
    kinds: dict[str, int]
    predicted_per_reconcile: int
    actions: int
    disturbed: bool = False  # the bus was lost and came back during the window

    @property
    def per_reconcile(self) -> float:
        return self.requests / self.reconciles if self.reconciles else float("nan")


class _ApiLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size

    def lines_since(self, offset: int) -> list[str]:
        with self.path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace").splitlines()


def measure_real(*, hosts: int = 4, routers: int = 250, networks: int = 20, reconcile_interval: float = 20.0,
                 reconciles: int = 3, verbose: bool = True) -> RealResult:
    """The real daemon (L3Agent + DHCPAgent) on a real Neutron for ``reconciles`` reconcile intervals."""
    size = Size(hosts, hosts, routers, networks)
    with NeutronServer(agent_down_time=10, report_interval=2) as server, \
            Fleet.for_server(server, prefix="api-") as fleet, \
            bus_canary(broker_url(server)) as canary, \
            tempfile.TemporaryDirectory(prefix="rpcd-bench-api-") as tmp:
        names = [fleet.add_host(f"h{i}", l3=True, dhcp=True, ovs=False) for i in range(hosts)]
        ids = fleet.wait_registered(server.url, timeout=60)
        l3 = [ids[(h, L3_AGENT)] for h in names]
        dhcp = [ids[(h, DHCP_AGENT)] for h in names]
        rest = SeedClient(server.url)
        began = time.monotonic()
        created = rest.create_routers_bulk(routers, prefix="calls")
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda ir: rest.bind_router(l3[ir[0] % len(l3)], ir[1]), enumerate(created)))
            nets = list(pool.map(lambda i: rest.create_network(f"calls-{i}", cidr=f"10.{i // 256}.{i % 256}.0/24",
                                                               settle=0).id, range(networks)))
        # One bind at a time: Neutron 29 answers concurrent network binds with 500s (a deadlock on the
        # agents' load column, or two binds of one network colliding on its binding_index).
        for network_id in nets:
            for agent_id in dhcp:
                rest.bind_network(agent_id, network_id)
        if verbose:
            print(f"real set-up: {size.describe()} seeded in {time.monotonic() - began:.1f} s", flush=True)
        config = Path(tmp) / "calls.conf"
        config.write_text(render_config(
            server, plugins=("L3Agent", "DHCPAgent"), metrics_port=free_port(),
            daemon={"check_interval": 2, "loglevel": "INFO"}, agent={"reconcile_interval": reconcile_interval}))
        daemon = RpcDaemon(Path(tmp), "rpcdaemon-calls", config).start()
        api_log = _ApiLog(server.log_dir / "api.out")
        try:
            daemon.wait_ready(plugins=2, timeout=60)
            # Start half an interval after a reconcile burst, end a whole number of intervals later:
            # the window then holds exactly ``reconciles`` bursts.
            mark = api_log.offset()
            deadline = time.monotonic() + reconcile_interval + 30
            while not request_kinds(api_log.lines_since(mark))["GET /v2.0/agents"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no reconcile seen in the API log{daemon.hint()}")
                time.sleep(0.2)
            time.sleep(reconcile_interval / 2)
            start = api_log.offset()
            window = reconciles * reconcile_interval
            time.sleep(window)
            kinds = request_kinds(api_log.lines_since(start))
            actions = len(daemon.actions())
            # A bus outage makes the daemon reconcile again: extra requests that are not steady state.
            disturbed = canary.link().outages > 0
        finally:
            daemon.stop()
    _, predicted = requests_per_reconcile(size)
    return RealResult(size, reconcile_interval, window, kinds["GET /v2.0/agents"] / 2, sum(kinds.values()),
                      dict(kinds), predicted, actions, disturbed)


# -- the table -------------------------------------------------------------------------------------


def figures(size: Size = Size(), *, real: bool = True, real_hosts: int = 4, real_routers: int = 250,
            real_networks: int = 20, verbose: bool = True) -> list[Figure]:
    sim = simulate(size)
    methods_h = sim.per_hour(sim.method_calls)
    http_h = sim.per_hour(sim.http_requests())
    per_pass = original_calls_per_pass(size)
    original_h = per_pass * 3600 / ORIGINAL_CHECK_INTERVAL
    # A pass cannot finish in a second: the calls are serial, so passes run back to back at the API's pace.
    original_real_h = min(original_h, ORIGINAL_SERIAL_RATE * 3600)
    if verbose:
        print(f"simulated {sim.seconds / 3600:g} h, {sim.checks} checks per plugin: {sim.method_calls} adapter "
              f"calls ({dict(sim.calls)}), {sim.http_requests()} HTTP requests, {sim.passes_with_calls} passes "
              f"called the API, {sim.actions} actions", flush=True)
        print(f"original: {per_pass:,} calls per pass = D(1 + D*N) + L(1 + L); one pass at "
              f"{ORIGINAL_SERIAL_RATE:.0f} serial calls/s takes {per_pass / ORIGINAL_SERIAL_RATE:,.0f} s", flush=True)
    rows = [Figure(
        "(c) API calls", f"per hour, steady state, {size.describe()}",
        f"rpcdaemon {http_h:,.0f} requests ({methods_h:,.0f} adapter calls)",
        f"original {per_pass:,}/pass due every 1 s = {original_h / 1e6:,.0f} M/h; serially "
        f"~{original_real_h:,.0f}/h, API never idle",
        "O(agents) per reconcile, 0 per idle check",
        sim.actions == 0 and sim.passes_with_calls == sim.reconciles_expected and http_h < original_real_h,
    )]
    if real:
        r = measure_real(hosts=real_hosts, routers=real_routers, networks=real_networks, verbose=verbose)
        _, model_small = requests_per_reconcile(r.size)
        if verbose:
            print(f"real: {r.requests} requests in {r.window:.0f} s = {r.reconciles:g} reconciles x "
                  f"{r.per_reconcile:.1f} (model {model_small}); {r.kinds}; actions {r.actions}; "
                  f"load {load_average()}", flush=True)
        _, model_big = requests_per_reconcile(size)
        note = " (DISTURBED: bus outage mid-run)" if r.disturbed else ""
        rows.append(Figure(
            "(c) API calls", f"real server, {r.size.describe()}, reconcile every {r.reconcile_interval:.0f} s{note}",
            f"{r.per_reconcile:.1f} requests per reconcile, none between",
            f"model {model_small}; at {size.l3_agents}+{size.dhcp_agents} agents {model_big} x 60/h",
            "measured = model", None if r.disturbed else r.per_reconcile == model_small and r.actions == 0,
        ))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--l3-agents", type=int, default=20)
    parser.add_argument("--dhcp-agents", type=int, default=20)
    parser.add_argument("--routers", type=int, default=2000)
    parser.add_argument("--networks", type=int, default=200)
    parser.add_argument("--real", action="store_true", help="also count on the real server (about 3 min)")
    args = parser.parse_args(argv)
    size = Size(args.l3_agents, args.dhcp_agents, args.routers, args.networks)
    for row in figures(size, real=args.real):
        print(f"{row.measure}: {row.value} | {row.reference}")


if __name__ == "__main__":
    main()
