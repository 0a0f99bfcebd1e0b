"""The service: wires settings to the bus listener, the registry, the plugins and the check loop.

``wiring.run`` builds a ``Service`` from the settings (``cli.main`` calls it in the foreground or inside
python-daemon); the demo builds one directly around an in-memory bus and the fake Neutron. One stop event ends
everything: every wait is ``stop.wait(timeout)`` and shutdown is bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.acting.readiness import ReadinessPolicy
from rpcdaemon.deciding.dhcp import DhcpPolicy
from rpcdaemon.deciding.l3 import L3Policy
from rpcdaemon.deciding.liveness import BrakePolicy, LivenessPolicy
from rpcdaemon.metrics import Metrics
from rpcdaemon.model import BusHints, Heartbeat, NetworkChanged, NetworkDeleted
from rpcdaemon.observing.bus import BrokerTLS, RawMessage, Subscription, make_connection
from rpcdaemon.observing.decode import Rejected, decode_message
from rpcdaemon.observing.listener import BusListener
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.plugins.dhcpagent import DHCPAgentPlugin
from rpcdaemon.plugins.l3agent import L3AgentPlugin

if TYPE_CHECKING:
    from rpcdaemon.plugins.dump import DumpPlugin

log = logging.getLogger("rpcdaemon")

EXIT_FAILED, EXIT_START = 1, 2  # a thread of the daemon gave up; the daemon could not start
# This many check passes in a row raising end the process (non-zero: systemd restarts it).
MAX_STEP_FAILURES = 5


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
) -> FailoverPlugin:
    logger = logging.getLogger(f"rpcdaemon.{name.lower()}")
    executor = Executor(api, cfg.executor, stop=stop, clock=clock, logger=logger)
    common = {"bus_since": bus_since, "bus_outages": bus_outages, "clock": clock, "readiness": cfg.readiness}
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
    ) -> None:
        self.registry = registry
        self.plugins = list(plugins)
        self.dump = dump
        self.check_interval = check_interval
        self.stop = stop
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.on_pass = on_pass
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
        """One check: refresh the link state, then one pass of every failover plugin."""
        self._update_link()
        for p in self.plugins:
            if self.stop.is_set():
                break  # stopping: no new pass (its API calls are not bounded by the shutdown bound)
            report = p.check()
            self.metrics.observe_pass(p.name, report)
            if self.on_pass is not None:
                self.on_pass(p)

    def start(self) -> None:
        for listener in self.listeners:
            listener.start()

    def run(self) -> int:
        """Run until ``stop``: 0 then; EXIT_FAILED when a part of the daemon gave up (CRITICAL logged)."""
        self.start()
        log.info("rpcdaemon running: plugins %s", " ".join(
            [p.name for p in self.plugins] + (["Dump"] if self.dump else [])) or "none")
        code = 0
        failures = 0
        try:
            while not self.stop.is_set():
                problem = self.health()
                if problem is None:
                    try:
                        self.step()
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
                self.stop.wait(self.check_interval)
        finally:
            self.shutdown()
        log.info("rpcdaemon stopped")
        return code

    def health(self) -> str | None:
        """What makes this daemon useless (a bus listener or the metrics server gave up), or None."""
        for listener in self.listeners:
            if listener.fatal is not None:
                return f"bus listener {listener.name} gave up: {listener.fatal}"
            if not listener.is_alive() and not self.stop.is_set():
                return f"bus listener {listener.name} stopped"
        return self.metrics.server_problem()

    def shutdown(self) -> None:
        self.stop.set()
        for listener in self.listeners:
            listener.join(timeout=5)
        for p in self.plugins:
            p.executor.close()
        self.metrics.close()

