"""The service: wires settings to the bus listener, the registry, the plugins and the check loop.

``wiring.run`` builds a ``Service`` from the settings (``cli.main`` calls it in the foreground or inside
python-daemon); the demo builds one directly around an in-memory bus and the fake Neutron. One stop event ends
everything: every wait is ``stop.wait(timeout)`` and shutdown is bounded. The plugins come built
(``plugin_factory``); the bus listeners bind the union of what they declare they hear (``plugins.hearing``)
and hand each decoded message to them all; what the listeners may have missed is ``evidence``.

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
from typing import TYPE_CHECKING, Any

from rpcdaemon import __version__
from rpcdaemon.access import BrokerTLS
from rpcdaemon.acting.watched import WatchedAPI
from rpcdaemon.broker.connection import make_connection
from rpcdaemon.broker.link import RawMessage, Subscription
from rpcdaemon.control.loop import ControlLoop
from rpcdaemon.coordination.leader import Leadership
from rpcdaemon.daemon.evidence import EvidenceGaps
from rpcdaemon.daemon.pausing import ControlGate
from rpcdaemon.deciding.liveness import Verdict
from rpcdaemon.exits import EXIT_FAILED
from rpcdaemon.model import Heartbeat, no_audit
from rpcdaemon.observing.decode import Rejected, decode_message
from rpcdaemon.observing.listener import BusListener
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin
from rpcdaemon.plugins.hearing import union
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


# Reconnect to the broker quickly once it is back: every second off the bus is a second in which
# the daemon cannot judge (the window restarts at reconnection); 5 s between tries is cheap.
RECONNECT_BACKOFF = (0.5, 5.0)


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
        self.link_since: float | None = None
        self.link_outages = 0
        self._gaps = EvidenceGaps(clock)
        factory = connection_factory or (lambda: make_connection(bus_url, bus_tls))

        def listener(name: str, subs: Sequence[Subscription], on_message: Callable[[RawMessage], None]) -> BusListener:
            return BusListener(bus_url, subs, on_message, clock=clock, stop=stop, queue_expire=queue_expire, name=name,
                               reconnect_backoff=RECONNECT_BACKOFF, connection_factory=factory)

        # What the plugins hear (``plugins.hearing``), in the order of their names, not of [Daemon] plugins:
        # the same bindings (and the line that lists them) whatever order the plugins are listed in.
        hearing = union(p.hears for p in sorted(self.plugins, key=lambda p: p.name))
        self.listeners = [listener("agents", hearing.agents, self.handle)] if hearing.agents else []
        # The agent-topic casts' listener, when a plugin wants them.
        self.casts = listener("casts", hearing.casts, self.handle) if hearing.casts else None
        if self.casts is not None:
            self.listeners.append(self.casts)
        if dump is not None:
            self.listeners.append(listener("dump", dump.subscriptions(), dump.handle))

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
        elif isinstance(event, Rejected):
            self.metrics.rejected.labels(event.kind).inc()
            log.debug("ignored message on %s/%s: %s", raw.exchange, raw.routing_key, event.reason)
        else:
            for p in self.plugins:
                p.take(event)  # news about networks or routers: each plugin takes what it hears

    def _update_link(self) -> None:
        if not self.listeners:
            return
        for listener in self.listeners:
            self.metrics.observe_drops(listener.name, listener.counts.dropped)
            self.metrics.observe_reconnects(listener.name, listener.link().outages)
        link = self.listeners[0].link()
        self.link_since = self._gaps.listening_since(link.since if link.connected else None,
                                                     self.listeners[0].counts.dropped)
        self.link_outages = link.outages
        self.registry.set_listening(self.link_since)
        self.metrics.observe_bus(link.connected)
        if self.casts is not None and self._gaps.casts_missed(self.casts.counts.dropped, self.casts.link().outages):
            # Casts dropped from their queue, or missed while their listener was off the bus: the
            # plugins cannot know what those said, so each reconciles (rate-limited).
            for p in self.plugins:
                p.news.add([], lost=True)

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

