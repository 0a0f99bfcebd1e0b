"""``rpcdaemon demo``: the real daemon code against a simulated cloud, in one process, in well under a minute.

Called by ``cli.main`` for the ``demo`` subcommand. Everything that decides and acts is the production
code: the bus listener (on kombu's in-memory transport), the decoder, the registry, the planners, the
executor and the plugins, wired by ``service.Service``. Only the outside world is simulated: agents that
publish real-format ``report_state`` heartbeats, and the contract-tested ``FakeNeutron`` whose ``alive``
flags follow those heartbeats the way neutron-server's do. Time is compressed (``--speed``).

Story: a fleet comes up; one network node dies and its routers and networks move; it comes back and
waits out its hold; then half the L3 agents die at once and the mass-failure brake holds; they return
and nothing moves; a summary closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.acting.fake_neutron import FakeNeutron
from rpcdaemon.deciding.liveness import BrakePolicy, LivenessPolicy, Verdict
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Agent, OutcomeStatus
from rpcdaemon.observing.bus import publish_raw
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.service import AgentPluginConfig, Service, build_plugin

BUS_URL = "memory://"


@dataclass
class SimAgent:
    agent: Agent
    alive: bool = True
    started: bool = False
    last_report: float = field(default=0.0)


def heartbeat_body(agent: Agent, *, start_flag: bool) -> bytes:
    """The exact shape a Neutron 29 agent's report_state call has on the wire (oslo 2.0 envelope)."""
    l3 = agent.agent_type == L3_AGENT
    state: dict[str, object] = {
        "binary": "neutron-l3-agent" if l3 else "neutron-dhcp-agent",
        "host": agent.host,
        "availability_zone": agent.availability_zone or "nova",
        "topic": "l3_agent" if l3 else "dhcp_agent",
        "agent_type": agent.agent_type,
        "configurations": {"agent_mode": agent.agent_mode or "legacy"} if l3 else {"dhcp_driver": "demo"},
        "uuid": str(uuid.uuid4()),
    }
    if start_flag:
        state["start_flag"] = True
    message = {
        "method": "report_state",
        "args": {
            "agent_state": {"agent_state": state},
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
        },
        "version": "1.4",
        "_msg_id": uuid.uuid4().hex,
        "_reply_q": f"reply_{uuid.uuid4().hex}",
        "_unique_id": uuid.uuid4().hex,
    }
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


class SimCloud:
    """Agents that heartbeat on the in-memory bus, and a Neutron whose alive flags follow them."""

    def __init__(self, neutron: FakeNeutron, agents: list[Agent], *, report_interval: float,
                 down_time: float, stop: threading.Event) -> None:
        self.neutron = neutron
        self.sims = {a.id: SimAgent(a) for a in agents}
        self.report_interval = report_interval
        self.down_time = down_time
        self.stop = stop
        self._thread = threading.Thread(target=self._run, name="demo-agents", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def crash(self, host: str) -> list[Agent]:
        hit = [s for s in self.sims.values() if s.agent.host == host]
        for s in hit:
            s.alive = False
            s.started = False
        return [s.agent for s in hit]

    def revive(self, host: str) -> None:
        for s in self.sims.values():
            if s.agent.host == host:
                s.alive = True

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            for s in self.sims.values():
                if s.alive and now - s.last_report >= self.report_interval:
                    publish_raw(BUS_URL, "neutron", "q-reports-plugin",
                                heartbeat_body(s.agent, start_flag=not s.started))
                    s.started = True
                    s.last_report = now
                    self.neutron.set_alive(s.agent.id, True)
                elif not s.alive and now - s.last_report > self.down_time:
                    self.neutron.set_alive(s.agent.id, False)
            self.stop.wait(self.report_interval / 5)


class Screen:
    """Plain, readable terminal output: an event log and a small table at key moments."""

    def __init__(self, out: TextIO, t0: float) -> None:
        self.out = out
        self.t0 = t0
        self.color = out.isatty()

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def say(self, text: str, *, style: str = "") -> None:
        stamp = f"{time.monotonic() - self.t0:6.1f}s"
        line = f"{self._c('2', stamp)}  {self._c(style, text) if style else text}"
        print(line, file=self.out, flush=True)

    def heading(self, text: str) -> None:
        print(file=self.out)
        self.say(f"== {text} ==", style="1")

    def table(self, plugins: list[FailoverPlugin], neutron: FakeNeutron) -> None:
        routers = Counter(a for hosts in neutron.router_bindings().values() for a in hosts)
        networks = Counter(a for hosts in neutron.network_bindings().values() for a in hosts)
        rows = []
        for p in plugins:
            for j in sorted(p.last.judged.values(), key=lambda j: j.agent.host):
                count = routers[j.agent.id] if j.agent.agent_type == L3_AGENT else networks[j.agent.id]
                what = "routers" if j.agent.agent_type == L3_AGENT else "networks"
                rows.append((j.agent.agent_type, j.agent.host, j.verdict.value, f"{count} {what}"))
        styles = {"alive": "32", "dead": "31", "warming": "33", "unknown": "2"}
        print(file=self.out)
        print(f"    {'agent':<12} {'host':<10} {'verdict':<9} hosting", file=self.out)
        for kind, host, verdict, hosting in rows:
            v = self._c(styles.get(verdict, ""), f"{verdict:<9}")
            print(f"    {kind:<12} {host:<10} {v} {hosting}", file=self.out)
        print(file=self.out, flush=True)


class _ScreenLog(logging.Handler):
    """Shows the daemon's own INFO/WARNING/ERROR lines (one per action, summaries, the brake)."""

    def __init__(self, screen: Screen) -> None:
        super().__init__(logging.INFO)
        self.screen = screen

    def emit(self, record: logging.LogRecord) -> None:
        style = {logging.ERROR: "31", logging.WARNING: "33"}.get(record.levelno, "")
        self.screen.say(f"[{record.name.removeprefix('rpcdaemon.')}] {record.getMessage()}", style=style)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="rpcdaemon demo", description=__doc__)
    p.add_argument("--l3-agents", type=int, default=4, help="L3 agents, one per host (default 4, at least 2)")
    p.add_argument("--dhcp-agents", type=int, default=3, help="DHCP agents on the first hosts (default 3)")
    p.add_argument("--routers", type=int, default=40, help="routers spread over the L3 agents (default 40)")
    p.add_argument("--networks", type=int, default=12, help="DHCP-enabled networks (default 12)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="time compression: 2 runs twice as fast (default 1: agent_down_time 3 s)")
    return p


def main(args: argparse.Namespace | None = None, out: TextIO = sys.stdout) -> int:
    if args is None:
        args = build_parser().parse_args()
    if args.l3_agents < 2 or args.dhcp_agents < 0 or args.routers < 0 or args.networks < 0 or args.speed <= 0:
        print("rpcdaemon demo: error: need --l3-agents >= 2, non-negative counts and --speed > 0", file=sys.stderr)
        return 2
    return Demo(args, out).run()


class Demo:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        s = 1.0 / args.speed
        self.down_time = 3.0 * s
        self.report_interval = 0.5 * s
        self.check_interval = 0.25 * s
        self.revive_hold = 3.0 * s
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.screen = Screen(out, self.t0)
        self.neutron = FakeNeutron(latency=0.01 * s)
        self.hosts = [f"node-{i + 1}" for i in range(max(args.l3_agents, args.dhcp_agents))]

    def _seed(self) -> list[Agent]:
        a = self.args
        # Short ids keep the demo's log lines readable; the real ones are UUIDs.
        def short() -> str:
            return uuid.uuid4().hex[:8]

        l3 = [self.neutron.add_agent(L3_AGENT, h, agent_id=short()) for h in self.hosts[: a.l3_agents]]
        dhcp = [self.neutron.add_agent(DHCP_AGENT, h, agent_id=short()) for h in self.hosts[: a.dhcp_agents]]
        width = len(str(max(a.routers, a.networks, 1)))
        for i in range(a.routers):
            r = self.neutron.add_router(router_id=f"router-{i + 1:0{width}d}")
            self.neutron.place_router(r.id, l3[i % len(l3)].id)
        for i in range(a.networks):
            n = self.neutron.add_network(network_id=f"net-{i + 1:0{width}d}")
            for k in range(min(2, len(dhcp))):
                self.neutron.place_network(n.id, dhcp[(i + k) % len(dhcp)].id)
        return l3 + dhcp

    def run(self) -> int:
        agents = self._seed()
        cloud = SimCloud(self.neutron, agents, report_interval=self.report_interval,
                         down_time=self.down_time, stop=self.stop)
        registry = AgentRegistry(self.down_time)
        cfg = AgentPluginConfig(
            liveness=LivenessPolicy(self.down_time, self.down_time, self.revive_hold, api_second_opinion=True),
            timing=Timing(reconcile_interval=10 * self.down_time, retry_reconcile_after=self.down_time,
                          target_fresh=2.5 * self.report_interval, opinion_interval=self.report_interval,
                          brake_log_interval=self.down_time),
            executor=ExecutorPolicy(workers=8, attempts=3, backoff_min=0.05, backoff_max=0.5),
            brake=BrakePolicy(max_dead_fraction=0.5), max_moves=500, agents_per_network=2,
        )
        holder: dict[str, Service] = {}
        plugins = [
            build_plugin(name, self.neutron, registry, cfg, bus_since=lambda: holder["svc"].bus_since(),
                                    bus_outages=lambda: holder["svc"].bus_outages(),
                         stop=self.stop)
            for name in ("L3Agent", "DHCPAgent")
        ]
        svc = Service(bus_url=BUS_URL, registry=registry, plugins=plugins, dump=None,
                      check_interval=self.check_interval, queue_expire=None, stop=self.stop)
        holder["svc"] = svc
        handler = _ScreenLog(self.screen)
        root = logging.getLogger("rpcdaemon")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        loop = threading.Thread(target=svc.run, name="demo-daemon", daemon=True)
        try:
            return self._story(cloud, svc, plugins, loop)
        finally:
            self.stop.set()
            loop.join(timeout=10)
            root.removeHandler(handler)

    def _wait(self, cond: Callable[[], bool], limit: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if cond():
                return time.monotonic() - start
            time.sleep(self.check_interval / 2)
        return None

    def _story(self, cloud: SimCloud, svc: Service, plugins: list[FailoverPlugin], loop: threading.Thread) -> int:
        a, scr, l3 = self.args, self.screen, plugins[0]
        scr.heading(f"A simulated cloud: {len(self.hosts)} network nodes, {a.routers} routers, {a.networks} networks")
        scr.say(f"agent_down_time {self.down_time:.1f}s, report_interval {self.report_interval:.1f}s, "
                f"revive_hold {self.revive_hold:.1f}s; bus: kombu memory transport; Neutron: in-memory fake")
        cloud.start()
        loop.start()
        scr.say("daemon listening; no agent is judged dead until one full agent_down_time has passed")
        settled = self._wait(lambda: all(j.verdict is Verdict.ALIVE for p in plugins for j in p.last.judged.values())
                             and all(p.last.judged for p in plugins), 4 * self.down_time)
        if settled is None:
            scr.say("the fleet never settled; stopping", style="31")
            return 1
        scr.table(plugins, self.neutron)

        victim = self.hosts[0]
        scr.heading(f"{victim} loses power: its L3 and DHCP agents stop heartbeating")
        dead = cloud.crash(victim)
        died_at = time.monotonic()
        dead_ids = {d.id for d in dead}

        def evacuated() -> bool:
            routers = self.neutron.router_bindings().values()
            networks = self.neutron.network_bindings().values()
            return not any(dead_ids & h for h in [*routers, *networks]) and all(routers)

        took = self._wait(evacuated, 6 * self.down_time)
        if took is None:
            scr.say("routers were not moved in time", style="31")
            return 1
        move_seconds = time.monotonic() - died_at
        scr.say(f"every router and network left {victim} {move_seconds:.1f}s after it died "
                f"(agent_down_time {self.down_time:.1f}s)", style="32")
        scr.table(plugins, self.neutron)

        scr.heading(f"{victim} comes back: it keeps nothing and gets nothing new until it has stayed up")
        cloud.revive(victim)
        self._wait(lambda: any(j.verdict is Verdict.WARMING for j in l3.last.judged.values()), 2 * self.down_time)
        scr.table(plugins, self.neutron)
        self._wait(lambda: all(j.verdict is Verdict.ALIVE for p in plugins for j in p.last.judged.values()),
                   3 * self.revive_hold)

        half = self.hosts[1: 1 + a.l3_agents // 2]
        scr.heading(f"{len(half)} of {a.l3_agents} L3 agents die at once ({', '.join(half)}): the brake must hold")
        before = self.neutron.router_bindings()
        done_before = l3.totals[OutcomeStatus.DONE.value]
        for h in half:
            cloud.crash(h)
        self._wait(lambda: l3.last.plan.braked, 4 * self.down_time)
        time.sleep(2 * self.down_time)
        held = self.neutron.router_bindings() == before and l3.totals[OutcomeStatus.DONE.value] == done_before
        scr.say("brake held: zero routers moved" if held else "routers moved while braked!",
                style="32" if held else "31")
        scr.table(plugins, self.neutron)
        for h in half:
            cloud.revive(h)
        self._wait(lambda: not l3.last.plan.braked and all(
            j.verdict is not Verdict.DEAD for j in l3.last.judged.values()), 4 * self.down_time)
        time.sleep(self.down_time)
        stayed = self.neutron.router_bindings() == before
        scr.say("they are back; every router stayed where it was" if stayed else "routers moved after the return!",
                style="32" if stayed else "31")
        held = held and stayed

        scr.heading("Summary")
        total = Counter[str]()
        for p in plugins:
            total.update(p.totals)
        scr.say(f"failover of {victim}: {move_seconds:.1f}s from its death to all work moved")
        scr.say(f"actions: {total['done']} done, {total['skipped']} skipped, {total['failed']} failed; "
                f"brake engaged and held: {'yes' if held else 'NO'}")
        scr.say(f"Neutron API calls: {sum(self.neutron.calls.values())} in all "
                f"({', '.join(f'{k} {v}' for k, v in self.neutron.calls.most_common(4))})")
        return 0 if held else 1
