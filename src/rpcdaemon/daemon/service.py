"""The service: wires settings to the bus listener, the registry, the plugins and the check loop.

``wiring.run`` builds a ``Service`` from the settings (``cli.main`` calls it in the foreground or inside
python-daemon); the demo builds one directly around an in-memory bus and the fake Neutron. One stop event ends
everything: every wait is ``stop.wait(timeout)`` and shutdown is bounded.

Proof of life: the check loop thread, and only it, pings systemd's watchdog (``sdnotify``): at each
iteration, during its idle wait, and while a long pass runs, after each API call of the plugin and each
finished action or call attempt of the executor (``_pass_progress``). A loop blocked for good stops the
pings, and ``/healthz`` (``probe``) turns 503. READY=1 is sent once the bus listener is connected and
every failover plugin's Neutron API answered; STATUS= whenever the summary (``status_text``) changes.

Several instances (``leadership``, a ``coordination.leader.Leadership`` that ``wiring`` builds): every
check asks the lease for the role, before each plugin. Active: the full pass. Standby: the bus
listeners and the registry stay warm, each plugin makes at most one read per reconcile_interval and no
write. Starting: nothing yet. A promotion wakes the idle loop at once and starts a new term in every
plugin; a demotion stops the passes at once (the fence skips the writes of the running one). The lock
is released in ``shutdown``, after the executors have finished their in-flight moves.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rpcdaemon import __version__
from rpcdaemon.access import BrokerTLS
from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.acting.fencing import FencePolicy, Fencer
from rpcdaemon.acting.readiness import ReadinessPolicy
from rpcdaemon.acting.watched import ApiErrors, WatchedAPI
from rpcdaemon.broker.connection import make_connection
from rpcdaemon.broker.link import RawMessage, Subscription
from rpcdaemon.control.loop import ControlLoop
from rpcdaemon.coordination.leader import Leadership
from rpcdaemon.daemon.pausing import ControlGate
from rpcdaemon.deciding.dhcp import DhcpPolicy
from rpcdaemon.deciding.l3 import L3Policy
from rpcdaemon.deciding.liveness import BrakePolicy, LivenessPolicy, Verdict
from rpcdaemon.exits import EXIT_FAILED
from rpcdaemon.model import BusHints, Heartbeat, NetworkChanged, NetworkDeleted, no_audit
from rpcdaemon.observing.decode import Rejected, decode_message
from rpcdaemon.observing.listener import BusListener
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.plugins.dhcpagent import DHCPAgentPlugin
from rpcdaemon.plugins.l3agent import L3AgentPlugin
from rpcdaemon.telemetry.audit import AuditLog, PassAuditor, instance_name
from rpcdaemon.telemetry.health import ROLE_ACTIVE, ROLE_STANDBY, ROLE_STARTING, Probe, loop_age_limit
from rpcdaemon.telemetry.metrics import Metrics
from rpcdaemon.telemetry.sdnotify import WATCHDOG_MIN_INTERVAL, Notifier

if TYPE_CHECKING:
    from rpcdaemon.plugins.dump import DumpPlugin

log = logging.getLogger("rpcdaemon")

# This many check passes in a row raising end the process (non-zero: systemd restarts it).
MAX_STEP_FAILURES = 5
# While it waits on the leadership's role changes, the idle loop looks at the stop event this often.
STOP_POLL = 0.1


class StartError(Exception):
    """The daemon cannot start (e.g. the metrics port is taken): one ERROR line, exit status 2."""

NEUTRON_EXCHANGE = "neutron"
# Reconnect to the broker quickly once it is back: every second off the bus is a second in which
# the daemon cannot judge (the window restarts at reconnection); 5 s between tries is cheap.
RECONNECT_BACKOFF = (0.5, 5.0)
# Where agents' report_state calls go: q-reports-plugin since Neutron 8.0, q-plugin before.
HEARTBEAT_SUBSCRIPTIONS = (
    Subscription(NEUTRON_EXCHANGE, "q-reports-plugin"),
    Subscription(NEUTRON_EXCHANGE, "q-plugin"),
)
# Network life-cycle news for the DHCPAgent plugin: oslo notifications (when neutron-server has a
# notification driver) and the server's casts to DHCP agents.
DHCP_SUBSCRIPTIONS = (
    Subscription(NEUTRON_EXCHANGE, "notifications.info"),
    Subscription("dhcp_agent_fanout", "", exchange_type="fanout", auto_delete=True),
)
# neutron-server's casts to the agents' own topics, which a stock neutron.conf sends (notifications
# it does not): copies in a queue of the daemon's own, Neutron's agent queues untouched. "#", not "*":
# a host name with dots (an FQDN) is several words of a routing key. Their own listener and queue: a
# burst of port casts must never push heartbeats out of the heartbeat queue.
DHCP_CAST_SUBSCRIPTIONS = (Subscription(NEUTRON_EXCHANGE, "dhcp_agent.#"),)
L3_CAST_SUBSCRIPTIONS = (
    Subscription(NEUTRON_EXCHANGE, "l3_agent.#"),
    Subscription("l3_agent_fanout", "", exchange_type="fanout", auto_delete=True),  # router_deleted
)


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


class Service:
    """The running daemon: one bus listener for heartbeats, one for Dump, and the check loop."""

    def __init__(
        self,
        *,
        bus_url: str,
        registry: AgentRegistry,
        plugins: Sequence[FailoverPlugin],
        dump: DumpPlugin | None,
        check_interval: float,
        queue_expire: float | None,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        on_pass: Callable[[FailoverPlugin], None] | None = None,
        bus_tls: BrokerTLS | None = None,
        connection_factory: Callable[[], Any] | None = None,
        notifier: Notifier | None = None,
        leadership: Leadership | None = None,
        audit: AuditLog | None = None,
        control: ControlLoop | None = None,
    ) -> None:
        self.registry = registry
        # The audit trail ([Daemon] audit_log): start, stop, role changes and what each pass decided and did
        # (PassAuditor, through the plugins' on_decided and the executors' on_outcome as it happens); the
        # plugins' own events (fence runs) through FailoverPlugin.audit. Closed by run().
        self.audit = audit
        self._audited = PassAuditor(audit.record) if audit is not None else None
        # Several instances (coordination.leader): only the one holding the lease checks and moves; None
        # means this one always does ([coordination] enabled = false, the demo, the tests).
        self.leadership = leadership
        self._term: str = ROLE_STARTING if leadership is not None else ROLE_ACTIVE  # the role of the last step
        self.plugins = list(plugins)
        self.dump = dump
        self.check_interval = check_interval
        self.stop = stop
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.on_pass = on_pass
        self.notifier = notifier or Notifier(None)
        # The check loop's signs of life (see probe): written by the loop thread, read by the HTTP threads.
        self._life_lock = threading.Lock()
        self._loop_at = clock()  # its last iteration (or idle wake-up)
        self._progress_at: float | None = None  # the running pass's last finished call or action
        self._loop_thread: int | None = None
        for plugin in self.plugins:
            if self._audited is not None and audit is not None:
                plugin.audit = audit.record
                plugin.on_decided = functools.partial(self._audited.decided, plugin.name)
                plugin.executor.on_outcome = functools.partial(self._audited.outcome, plugin.name)
            plugin.executor.on_progress = self._pass_progress
            if isinstance(plugin.api, WatchedAPI):
                plugin.api.on_call_end = self._pass_progress
        # The control channel (``pausing``): pause, resume and brake release by the operator's commands, and
        # the live view they read. None: never paused (the demo, the tests, a daemon without a broker).
        dry_run = any(getattr(p.executor, "dry_run", False) for p in self.plugins)
        self.control = ControlGate(control, self.plugins, instance=instance_name(), role=self.role,
                                   dry_run=dry_run, clock=clock, audit=audit.record if audit is not None else no_audit)
        self.metrics.attach_probe(self.probe)
        # 1 only on the instance that moves work for the group: a dry run or a Dump-only instance acts for
        # no one, and a 1 there would hide from "no active instance" that the real one is gone.
        acts = bool(self.plugins) and not dry_run
        self.metrics.follow_leader(lambda: acts and self.role() == ROLE_ACTIVE)
        self.metrics.follow_agents(registry, clock, {p.agent_type for p in self.plugins})
        self.listeners: list[BusListener] = []
        factory = connection_factory or (lambda: make_connection(bus_url, bus_tls))
        self.link_since: float | None = None
        self._drops_seen = 0  # the heartbeat listener's drop count at the last check
        self._evidence_gap_at: float | None = None  # when drops were last seen
        self.link_outages = 0
        self.casts: BusListener | None = None  # the agent-topic casts' listener, when a plugin wants them
        self._casts_seen = (0, 0)  # its (drops, outages) at the last check
        if self.plugins:
            subs = list(HEARTBEAT_SUBSCRIPTIONS)
            if any(isinstance(p, DHCPAgentPlugin) for p in self.plugins):
                subs += DHCP_SUBSCRIPTIONS
            self.listeners.append(
                BusListener(bus_url, subs, self.handle, clock=clock, stop=stop, queue_expire=queue_expire,
                            name="agents", reconnect_backoff=RECONNECT_BACKOFF,
                            connection_factory=factory)
            )
            casts: list[Subscription] = []
            if any(isinstance(p, DHCPAgentPlugin) for p in self.plugins):
                casts += DHCP_CAST_SUBSCRIPTIONS
            if any(isinstance(p, L3AgentPlugin) for p in self.plugins):
                casts += L3_CAST_SUBSCRIPTIONS
            self.casts = BusListener(
                bus_url, casts, self.handle, clock=clock, stop=stop, queue_expire=queue_expire, name="casts",
                reconnect_backoff=RECONNECT_BACKOFF, connection_factory=factory) if casts else None
            if self.casts is not None:
                self.listeners.append(self.casts)
        if dump is not None:
            self.listeners.append(
                BusListener(bus_url, dump.subscriptions(), dump.handle, clock=clock, stop=stop,
                            queue_expire=queue_expire, name="dump", reconnect_backoff=RECONNECT_BACKOFF,
                            connection_factory=factory)
            )

    def bus_since(self) -> float | None:
        return self.link_since

    def role(self) -> str:
        """This instance's part: "active" (checks and moves), "standby" (another instance is active) or
        "starting" (not settled yet). Read by STATUS= and /readyz; the leadership lease decides it, now."""
        if self.leadership is None:
            return ROLE_ACTIVE
        return self.leadership.role().value

    def probe(self) -> Probe:
        """Alive? Ready? For /healthz, /readyz and READY=1. Any thread: it only reads state published
        under locks (the loop's signs of life here, the link state in the listener) and plain values."""
        now = self.clock()
        with self._life_lock:
            last = self._loop_at if self._progress_at is None else max(self._loop_at, self._progress_at)
        primary = self.listeners[0] if self.listeners else None
        return Probe(
            role=self.role(),
            bus=primary.link().connected if primary is not None else False,
            api=tuple((p.name, p.api_ok) for p in self.plugins),
            loop_age=max(0.0, now - last),
            loop_limit=loop_age_limit(self.check_interval),
        )

    def status_text(self, probe: Probe) -> str:
        """The STATUS= line: "active; L3Agent 3 alive 1 dead; DHCPAgent 3 alive; bus up"."""
        parts = [probe.role]
        if self.control.last.paused is not None:
            parts.append(f"PAUSED by {self.control.last.paused.by}")
        for p in self.plugins:
            if p.api_ok is None:
                parts.append(f"{p.name} waiting for the Neutron API")
                continue
            counts = Counter(j.verdict for j in p.last.judged.values())
            said = " ".join(f"{counts[v]} {v.value}" for v in Verdict if counts[v]) or "no agents"
            if p.last.plan.braked:
                said += ", brake engaged"
            if p.api_ok is False:
                said += ", Neutron API failing"
            parts.append(f"{p.name} {said}")
        if self.dump is not None:
            parts.append("Dump")
        parts.append("bus up" if probe.bus else "bus down")
        return "; ".join(parts)

    def _loop_beat(self) -> None:
        """The check loop thread is here: record it, ping the watchdog (the notifier limits the rate)."""
        with self._life_lock:
            self._loop_at = self.clock()
            self._progress_at = None
        self.notifier.watchdog()

    def _pass_progress(self) -> None:
        """A call or action of the running pass ended. Proof of life only in the loop thread itself:
        the executor reports its workers' progress from there, and nothing else may ping for it."""
        if threading.get_ident() != self._loop_thread:
            return
        with self._life_lock:
            self._progress_at = self.clock()
        self.notifier.watchdog()

    def _notify_state(self) -> None:
        probe = self.probe()
        text = self.status_text(probe)
        if probe.ready and not self.notifier.is_ready:
            log.info("ready: %s", text)
            self.notifier.ready(text)
        self.notifier.status(text)

    def _idle(self, seconds: float) -> None:
        """Wait for the next check (or the stop), still pinging: an idle loop is a live one. Real time,
        as ``stop.wait`` is (the injected clock may be a simulation's)."""
        end = time.monotonic() + seconds
        while not self.stop.is_set():
            left = end - time.monotonic()
            if left <= 0 or self._wait(min(left, WATCHDOG_MIN_INTERVAL)):
                return
            self._loop_beat()

    def _wait(self, seconds: float) -> bool:
        """``stop.wait(seconds)``, also cut short by a leadership role change, so that a promoted standby
        checks at once. True when cut short (stop or role change)."""
        if self.leadership is None:
            return self.stop.wait(seconds)
        end = time.monotonic() + seconds
        while not self.stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self.leadership.wait_changed(min(left, STOP_POLL)):
                return True
        return True

    def bus_outages(self) -> int:
        return self.link_outages

    def handle(self, raw: RawMessage) -> None:
        """Bus thread: decode, record, return. Never calls Neutron."""
        event = decode_message(raw.body, routing_key=raw.routing_key, received_at=raw.received_at)
        if isinstance(event, Heartbeat):
            self.registry.record(event)
            self.metrics.heartbeats.inc()
        elif isinstance(event, NetworkDeleted):
            for p in self.plugins:
                if isinstance(p, DHCPAgentPlugin):
                    p.on_network_deleted(event.network_id)
        elif isinstance(event, NetworkChanged):
            for p in self.plugins:
                if isinstance(p, DHCPAgentPlugin):
                    p.on_network_changed(event.network_id)
        elif isinstance(event, BusHints):
            for p in self.plugins:
                if isinstance(p, (DHCPAgentPlugin, L3AgentPlugin)):
                    p.on_bus_hints(event)
        elif isinstance(event, Rejected):
            self.metrics.rejected.labels(event.kind).inc()
            log.debug("ignored message on %s/%s: %s", raw.exchange, raw.routing_key, event.reason)

    def _update_link(self) -> None:
        if not self.listeners:
            return
        for listener in self.listeners:
            self.metrics.observe_drops(listener.name, listener.counts.dropped)
            self.metrics.observe_reconnects(listener.name, listener.link().outages)
        link = self.listeners[0].link()
        since = link.since if link.connected else None
        self._note_drops(self.listeners[0].counts.dropped)
        if since is not None and self._evidence_gap_at is not None:
            # Messages dropped from our queue may have been heartbeats: silence since then proves nothing.
            since = max(since, self._evidence_gap_at)
        self.link_since = since
        self.link_outages = link.outages
        self.registry.set_listening(self.link_since)
        self.metrics.observe_bus(link.connected)
        self._note_cast_gaps()

    def _note_cast_gaps(self) -> None:
        """Casts dropped from their queue, or missed while their listener was off the bus: the
        plugins cannot know what those said, so each reconciles (rate-limited)."""
        if self.casts is None:
            return
        seen = (self.casts.counts.dropped, self.casts.link().outages)
        if seen != self._casts_seen:
            self._casts_seen = seen
            for p in self.plugins:
                p.news.add([], lost=True)

    def _note_drops(self, dropped: int) -> None:
        """The broker dropped messages from the heartbeat queue (it was full): a gap in the evidence.
        Like a bus outage, it restarts the listening window, so that no agent is judged dead on a
        silence that may be our own (Neutron's own verdict, from its own queue, still counts)."""
        if dropped <= self._drops_seen:
            return
        first = self._evidence_gap_at is None or self.clock() - self._evidence_gap_at > 60.0
        self._drops_seen = dropped
        self._evidence_gap_at = self.clock()
        if first:
            log.warning("bus: the broker dropped messages from the daemon's queue (%d in all): no agent is judged "
                        "dead on silence alone until a full window has passed without drops", dropped)

    def step(self) -> None:
        """One check: refresh the link state, then one pass of every failover plugin: a full one while
        this instance is the active one, a standby's (no write, one read per reconcile_interval) while
        another is, none while starting. The role is asked again before each plugin: a demotion stops
        the passes at once (and the fence skips the writes of the one running)."""
        self._update_link()
        control = self.control.before_step() if self.plugins else None
        if control is not None:
            self.metrics.paused.set(1 if control.paused is not None else 0)
        for p in self.plugins:
            if self.stop.is_set():
                break  # stopping: no new pass (its API calls are not bounded by the shutdown bound)
            role = self._note_role()
            if role == ROLE_ACTIVE and control is not None and not control.moves_allowed:
                # Paused (or the pause state not read yet): judge and plan, move nothing.
                report = p.check(act=False) if control.paused is not None else p.standby_check()
            elif role == ROLE_ACTIVE:
                p.brake_released = control.brake_released if control is not None else None
                report = p.check()
            elif role == ROLE_STANDBY:
                report = p.standby_check()
            else:
                continue
            self.metrics.observe_check(p, report, active=role == ROLE_ACTIVE)
            if self._audited is not None:
                self._audited.note(p.name, report, follows=p.follows)
            if self.on_pass is not None:
                self.on_pass(p)

    def _note_role(self) -> str:
        """The role now; on a promotion every plugin starts a new term (a fresh reconcile first)."""
        role = self.role()
        if role != self._term:
            if self.audit is not None and self.leadership is not None:
                self.audit.record("leadership", role=role, previous=self._term, lock=self.leadership.describe())
            if role == ROLE_ACTIVE:
                for p in self.plugins:
                    p.start_term()
            self._term = role
        return role

    def start(self) -> None:
        for listener in self.listeners:
            listener.start()
        if self.leadership is not None:
            self.leadership.start()
        if self.control.loop is not None:
            self.control.loop.start()

    def run(self) -> int:
        """Run until ``stop``: 0 then; EXIT_FAILED when a part of the daemon gave up (CRITICAL logged)."""
        self._loop_thread = threading.get_ident()
        self.start()
        names = [p.name for p in self.plugins] + (["Dump"] if self.dump else [])
        log.info("rpcdaemon running: plugins %s", " ".join(names) or "none")
        if self.audit is not None:
            self.audit.record("start", version=__version__, plugins=names,
                              dry_run=any(p.executor.dry_run for p in self.plugins))
        code = 0
        failures = 0
        problem: str | None = None
        try:
            while not self.stop.is_set():
                self._loop_beat()
                problem = self.health()
                if problem is None:
                    try:
                        self.step()
                        self._notify_state()
                        failures = 0
                    except Exception:
                        failures += 1
                        log.exception("check failed (%d of %d in a row before giving up)", failures,
                                      MAX_STEP_FAILURES)
                        if failures >= MAX_STEP_FAILURES:
                            problem = f"{failures} checks in a row failed"
                if problem is not None:
                    log.critical("%s; exiting with status %d so that the service manager restarts rpcdaemon",
                                 problem, EXIT_FAILED)
                    code = EXIT_FAILED
                    break
                self._idle(self.check_interval)
        finally:
            self.shutdown()
            if self.audit is not None:
                # After the in-flight moves (their lines are in) and the lock's release.
                self.audit.record("stop", exit_status=code, reason=problem or "stop requested")
                self.audit.close()
        log.info("rpcdaemon stopped")
        return code

    def health(self) -> str | None:
        """What makes this daemon useless (a bus listener or the metrics server gave up), or None."""
        for listener in self.listeners:
            if listener.fatal is not None:
                return f"bus listener {listener.name} gave up: {listener.fatal}"
            if not listener.is_alive() and not self.stop.is_set():
                return f"bus listener {listener.name} stopped"
        if self.leadership is not None and (problem := self.leadership.problem()) is not None:
            return problem
        loop = self.control.loop
        if loop is not None and loop.ident is not None and not self.stop.is_set():
            if loop.fatal is not None:
                return f"control channel gave up: {loop.fatal}"
            if not loop.is_alive():
                return "control channel thread stopped"
        return self.metrics.server_problem()

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.stop.set()
        for listener in self.listeners:
            if listener.ident is not None:  # started (a service may be shut down before it ran)
                listener.join(timeout=5)
        for p in self.plugins:
            p.executor.close()
        if self.control.loop is not None and self.control.loop.ident is not None:
            self.control.loop.join(timeout=5)
        if self.leadership is not None:
            # Only now: a move past its unbind has made its bind (the fence let it, holding the lease).
            self.leadership.close()
        self.metrics.close()
        self.notifier.close()

