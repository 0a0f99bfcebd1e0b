"""``rpcdaemon demo``: the real daemon code against a simulated cloud, in one process, in well under a minute.

Called by ``cli.main`` for the ``demo`` subcommand. Everything that decides and acts is the production
code: the bus listener (on kombu's in-memory transport), the decoder, the registry, the planners, the
executor and the plugins, wired by ``service.Service``. Only the outside world is simulated: agents that
publish real-format ``report_state`` heartbeats, and the contract-tested ``FakeNeutron`` whose ``alive``
flags follow those heartbeats the way neutron-server's do, a little late (its own periodic check), so
that a silent agent is first SUSPECT and only then DEAD. Time is compressed (``--speed``).

Story: a fleet comes up; one network node dies, goes suspect then dead, and its routers and networks
move; it comes back and waits out its hold; then half the L3 agents die at once and the mass-failure
brake holds; they return and nothing moves; a summary closes.

What the reader sees is ``fleetview.FleetDisplay``: the fleet as a table redrawn in place (plain changed
rows when the output is not a terminal or NO_COLOR is set), the moves as one progress bar per source ->
target, and the daemon's own INFO/WARNING/ERROR lines above it, all through one lock.
"""

from __future__ import annotations

import argparse
import functools
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
from rpcdaemon.broker.connection import publish_raw
from rpcdaemon.daemon.plugin_factory import AgentPluginConfig, build_plugin
from rpcdaemon.daemon.service import Service
from rpcdaemon.deciding.liveness import BrakePolicy, Judged, LivenessPolicy, Verdict
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Agent, Outcome, OutcomeStatus
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.plugins.report import PassReport
from rpcdaemon.terminal.fleetview import FleetDisplay, FleetRow, FleetState

BUS_URL = "memory://"
FRAME_INTERVAL = 0.1  # seconds between redraws of the table (real time: ages must move smoothly)
# Verdicts worth a line of their own when an agent enters or leaves them (the table shows the rest).
_TOLD = {Verdict.SUSPECT, Verdict.DEAD, Verdict.WARMING}


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
    """Agents that heartbeat on the in-memory bus, and a Neutron whose alive flags follow them.

    Neutron marks a silent agent dead ``neutron_lag`` after ``down_time`` (neutron-server checks its
    agents periodically, so it is always a little late): in between, rpcdaemon's second opinion says
    "Neutron still says alive" and the agent is SUSPECT.
    """

    def __init__(self, neutron: FakeNeutron, agents: list[Agent], *, report_interval: float,
                 down_time: float, stop: threading.Event, neutron_lag: float = 0.0) -> None:
        self.neutron = neutron
        self.sims = {a.id: SimAgent(a) for a in agents}
        self.report_interval = report_interval
        self.down_time = down_time
        self.neutron_lag = neutron_lag
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
                elif not s.alive and now - s.last_report > self.down_time + self.neutron_lag:
                    self.neutron.set_alive(s.agent.id, False)
            self.stop.wait(self.report_interval / 5)


class MoveGroups:
    """The moves of the current act per source -> target, fed by the plugins' plans (``on_decided``) and
    the executor's outcomes (``on_outcome``, from its worker threads). A resource counts as done when
    every action planned for it ended DONE (a DHCP move is an unbind and a bind)."""

    def __init__(self, display: FleetDisplay) -> None:
        self.display = display
        self._lock = threading.Lock()
        self._groups: dict[str, set[tuple[str, str]]] = {}  # label -> (plugin, resource) planned
        self._label: dict[tuple[str, str], str] = {}
        self._status: dict[tuple[str, str], dict[str, OutcomeStatus | None]] = {}  # action kind -> status

    def planned(self, plugin: FailoverPlugin, report: PassReport) -> None:
        by_resource: dict[str, list[str | None]] = {}
        kinds: dict[str, list[str]] = {}
        for a in report.plan.actions:
            ends = by_resource.setdefault(a.resource_id, [None, None])
            if a.source is not None:
                ends[0] = a.source.host
            if a.target is not None:
                ends[1] = a.target.host
            kinds.setdefault(a.resource_id, []).append(a.kind.value)
        word = plugin.resource.plural
        with self._lock:
            for rid, (src, dst) in by_resource.items():
                key = (plugin.name, rid)
                if key in self._label:  # planned again (a failed move): same group, same count
                    self._status[key].update({k: None for k in kinds[rid]})
                    continue
                label = f"{word:<8} {src or '(none)'} -> {dst or '(none)'}"
                self._label[key] = label
                self._groups.setdefault(label, set()).add(key)
                self._status[key] = {k: None for k in kinds[rid]}
            shown = {self._label[(plugin.name, rid)] for rid in by_resource}
            figures = [(label, *self._count(label)) for label in sorted(shown)]
        for label, done, total in figures:
            self.display.moves(label, done, total)

    def finished(self, plugin: FailoverPlugin, outcome: Outcome) -> None:
        key = (plugin.name, outcome.action.resource_id)
        with self._lock:
            if key not in self._label:
                return
            self._status[key][outcome.action.kind.value] = outcome.status
            label = self._label[key]
            done, total = self._count(label)
        self.display.moves(label, done, total)

    def reset(self) -> None:
        with self._lock:
            self._groups.clear()
            self._label.clear()
            self._status.clear()
        self.display.clear_moves()

    def _count(self, label: str) -> tuple[int, int]:
        keys = self._groups[label]
        done = sum(all(s is OutcomeStatus.DONE for s in self._status[k].values()) for k in keys)
        return done, len(keys)


class DisplayLog(logging.Handler):
    """The daemon's INFO/WARNING/ERROR lines, through the display's one lock. Left out: a move that went
    well (the progress bars count it: its record carries ``fields`` with status done) and the bus
    listener's INFO lines (queue names). A line that starts with its plugin's name ("L3Agent: ...",
    logged by rpcdaemon.l3agent) names it once."""

    def __init__(self, display: FleetDisplay) -> None:
        super().__init__(logging.INFO)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = getattr(record, "fields", None)
            if isinstance(fields, dict) and fields.get("status") == OutcomeStatus.DONE.value:
                return
            if record.levelno < logging.WARNING and record.name.startswith("rpcdaemon.observing"):
                return
            self.display.say(self.format_line(record),
                             style={logging.ERROR: "red", logging.WARNING: "yellow"}.get(record.levelno, ""))
        except Exception:
            self.handleError(record)

    @staticmethod
    def format_line(record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.CRITICAL:
            message = f"CRITICAL {message}"
        short = record.name.removeprefix("rpcdaemon").lstrip(".")
        if not short:
            return message
        head, sep, rest = message.partition(" ")
        if head.rstrip(":").lower() == short.lower() and sep:
            return f"{head.rstrip(':'):<9} {rest}"
        return f"{short:<9} {message}"


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
        self.neutron_lag = 1.0 * s
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.out = out
        self.neutron = FakeNeutron(latency=0.01 * s)
        self.hosts = [f"node-{i + 1}" for i in range(max(args.l3_agents, args.dhcp_agents))]
        self.plugins: list[FailoverPlugin] = []
        self.title = ""
        self._baseline: Counter[str] = Counter()  # what each agent hosted when the act began
        # (plugin, agent id) -> the last verdict seen, and every change: (seconds, host, type, old, new, why)
        self._verdicts: dict[tuple[str, str], Verdict] = {}
        self.changes: list[tuple[float, str, str, Verdict | None, Verdict, str]] = []
        self._changes_lock = threading.Lock()
        # plugin name -> the verdicts of its latest decision: set when a pass has decided (before its moves
        # run, so that the table shows an agent dead before its routers leave) and when it ends.
        self._judged: dict[str, dict[str, Judged]] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

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
                         down_time=self.down_time, stop=self.stop, neutron_lag=self.neutron_lag)
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
        self.plugins = [
            build_plugin(name, self.neutron, registry, cfg, bus_since=lambda: holder["svc"].bus_since(),
                         bus_outages=lambda: holder["svc"].bus_outages(), stop=self.stop)
            for name in ("L3Agent", "DHCPAgent")
        ]
        with FleetDisplay(self.out, stamp=lambda: f"{self.elapsed():5.1f}s") as display:
            svc = Service(bus_url=BUS_URL, registry=registry, plugins=self.plugins, dump=None,
                          check_interval=self.check_interval, queue_expire=None, stop=self.stop,
                          on_pass=lambda p: self._passed(p, display))
            holder["svc"] = svc
            groups = MoveGroups(display)
            for p in self.plugins:  # the service sets these only for its audit trail, off here
                p.on_decided = functools.partial(self._planned, p, display, groups)
                p.executor.on_outcome = functools.partial(groups.finished, p)
            handler = DisplayLog(display)
            root = logging.getLogger("rpcdaemon")
            root.addHandler(handler)
            level = root.level
            root.setLevel(logging.INFO)
            loop = threading.Thread(target=svc.run, name="demo-daemon", daemon=True)
            frames = threading.Thread(target=self._redraw, args=(display,), name="demo-view", daemon=True)
            frames.start()
            try:
                return self._story(cloud, display, groups, loop)
            finally:
                display.update(self.frame())  # the last frame, before the agents stop
                self.stop.set()
                loop.join(timeout=10)
                frames.join(timeout=2)
                root.removeHandler(handler)
                root.setLevel(level)

    # -- the view -------------------------------------------------------------------------------------
    def hosted(self) -> Counter[str]:
        counts = Counter(a for hosts in self.neutron.router_bindings().values() for a in hosts)
        counts.update(a for hosts in self.neutron.network_bindings().values() for a in hosts)
        return counts

    def frame(self) -> FleetState:
        now = time.monotonic()
        counts = self.hosted()
        rows: list[FleetRow] = []
        notes: list[str] = []
        for p in self.plugins:
            last = p.last
            for j in sorted(self._judged.get(p.name, last.judged).values(), key=lambda j: j.agent.host):
                aid = j.agent.id
                rows.append(FleetRow(
                    host=j.agent.host, agent_type=j.agent.agent_type, verdict=j.verdict.value,
                    why="" if j.verdict is Verdict.ALIVE else j.why,  # "heard 0.2s ago": the heard column says it
                    heard_ago=None if j.last_heard is None else max(0.0, now - j.last_heard),
                    down_time=self.down_time, hosted=counts[aid], hosted_change=counts[aid] - self._baseline[aid],
                    neutron_alive=self.neutron.agent(aid).alive,
                ))
            if last.plan.braked:
                notes += [f"{p.name}: {line.split(': this looks like')[0]}: moving nothing"
                          for line in last.plan.held if line.startswith("brake")]
        return FleetState(rows=tuple(rows), title=self.title, notes=tuple(notes))

    def _redraw(self, display: FleetDisplay) -> None:
        while not self.stop.wait(FRAME_INTERVAL):
            display.update(self.frame())

    def _planned(self, plugin: FailoverPlugin, display: FleetDisplay, groups: MoveGroups, report: PassReport) -> None:
        self._decided(plugin, report.judged, display)
        groups.planned(plugin, report)

    def _passed(self, plugin: FailoverPlugin, display: FleetDisplay) -> None:
        self._decided(plugin, plugin.last.judged, display)

    def _decided(self, plugin: FailoverPlugin, judged: dict[str, Judged], display: FleetDisplay) -> None:
        """When a pass has decided and when it ends (the daemon's loop thread): note every verdict change,
        tell the ones that matter (live: a line in the scrollback; plain: the changed row says it), redraw."""
        told = []
        with self._changes_lock:
            self._judged[plugin.name] = judged
            for j in judged.values():
                key = (plugin.name, j.agent.id)
                old = self._verdicts.get(key)
                if old is j.verdict:
                    continue
                self._verdicts[key] = j.verdict
                self.changes.append((self.elapsed(), j.agent.host, j.agent.agent_type, old, j.verdict, j.why))
                if display.live and (j.verdict in _TOLD or old in _TOLD):
                    told.append(f"{j.agent.host} {j.agent.agent_type}: {old.value if old else 'new'} -> "
                                f"{j.verdict.value} ({j.why})")
        style = {"dead": "red", "suspect": "yellow"}
        for line in told:
            display.say(line, style=style.get(line.split(" -> ")[-1].split(" ")[0], "cyan"))
        display.update(self.frame())

    def _act(self, display: FleetDisplay, groups: MoveGroups, title: str) -> None:
        groups.reset()
        self._baseline = self.hosted()
        self.title = title
        if display.live:  # plain output prints the new title with the next frame
            display.say(f"== {title} ==", style="bold")
        display.update(self.frame())

    def first_change(self, host: str, verdict: Verdict, after: float) -> float | None:
        with self._changes_lock:
            return next((t for t, h, _, _, new, _ in self.changes if h == host and new is verdict and t >= after),
                        None)

    # -- the story ------------------------------------------------------------------------------------
    def _wait(self, cond: Callable[[], bool], limit: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if cond():
                return time.monotonic() - start
            time.sleep(self.check_interval / 2)
        return None

    def _story(self, cloud: SimCloud, display: FleetDisplay, groups: MoveGroups, loop: threading.Thread) -> int:
        a, plugins, say = self.args, self.plugins, display.say
        l3 = plugins[0]
        self._act(display, groups,
                  f"A simulated cloud: {len(self.hosts)} network nodes, {a.routers} routers, {a.networks} networks")
        say(f"agent_down_time {self.down_time:.1f}s, report_interval {self.report_interval:.1f}s, "
            f"revive_hold {self.revive_hold:.1f}s; bus: kombu memory transport; Neutron: in-memory fake")
        cloud.start()
        loop.start()
        say("daemon listening; no agent is judged dead until one full agent_down_time has passed")
        settled = self._wait(lambda: all(j.verdict is Verdict.ALIVE for p in plugins for j in p.last.judged.values())
                             and all(p.last.judged for p in plugins), 4 * self.down_time)
        if settled is None:
            say("the fleet never settled; stopping", style="red")
            return 1

        victim = self.hosts[0]
        self._act(display, groups, f"{victim} loses power: its L3 and DHCP agents stop heartbeating")
        dead = cloud.crash(victim)
        died_at = time.monotonic()
        died_t = self.elapsed()
        dead_ids = {d.id for d in dead}

        def evacuated() -> bool:
            routers = self.neutron.router_bindings().values()
            networks = self.neutron.network_bindings().values()
            return not any(dead_ids & h for h in [*routers, *networks]) and all(routers)

        took = self._wait(evacuated, 6 * self.down_time + self.neutron_lag)
        if took is None:
            say("routers were not moved in time", style="red")
            return 1
        move_seconds = time.monotonic() - died_at
        suspect_t = self.first_change(victim, Verdict.SUSPECT, died_t)
        dead_t = self.first_change(victim, Verdict.DEAD, died_t)
        if suspect_t is not None and dead_t is not None:
            say(f"{victim}: suspect {suspect_t - died_t:.1f}s after its last heartbeat (silent, Neutron still "
                f"said alive: nothing moved), dead at {dead_t - died_t:.1f}s (Neutron agreed)")
        say(f"every router and network left {victim} {move_seconds:.1f}s after it died "
            f"(agent_down_time {self.down_time:.1f}s)", style="green")

        self._act(display, groups, f"{victim} comes back: it keeps nothing and gets nothing new until it has stayed up")
        cloud.revive(victim)
        self._wait(lambda: any(j.verdict is Verdict.WARMING for j in l3.last.judged.values()), 2 * self.down_time)
        self._wait(lambda: all(j.verdict is Verdict.ALIVE for p in plugins for j in p.last.judged.values()),
                   3 * self.revive_hold)

        half = self.hosts[1: 1 + a.l3_agents // 2]
        self._act(display, groups,
                  f"{len(half)} of {a.l3_agents} L3 agents die at once ({', '.join(half)}): the brake must hold")
        before = self.neutron.router_bindings()
        done_before = l3.totals[OutcomeStatus.DONE.value]
        for h in half:
            cloud.crash(h)
        self._wait(lambda: l3.last.plan.braked, 4 * self.down_time)
        time.sleep(2 * self.down_time)
        held = self.neutron.router_bindings() == before and l3.totals[OutcomeStatus.DONE.value] == done_before
        say("brake held: zero routers moved" if held else "routers moved while braked!",
            style="green" if held else "red")
        for h in half:
            cloud.revive(h)
        self._wait(lambda: not l3.last.plan.braked and all(
            j.verdict is not Verdict.DEAD for j in l3.last.judged.values()), 4 * self.down_time)
        time.sleep(self.down_time)
        stayed = self.neutron.router_bindings() == before
        say("they are back; every router stayed where it was" if stayed else "routers moved after the return!",
            style="green" if stayed else "red")
        held = held and stayed

        self._act(display, groups, "Summary")
        total = Counter[str]()
        for p in plugins:
            total.update(p.totals)
        say(f"failover of {victim}: {move_seconds:.1f}s from its death to all work moved")
        say(f"actions: {total['done']} done, {total['skipped']} skipped, {total['failed']} failed; "
            f"brake engaged and held: {'yes' if held else 'NO'}", style="green" if held else "red")
        say(f"Neutron API calls: {sum(self.neutron.calls.values())} in all "
            f"({', '.join(f'{k} {v}' for k, v in self.neutron.calls.most_common(4))})")
        return 0 if held else 1
