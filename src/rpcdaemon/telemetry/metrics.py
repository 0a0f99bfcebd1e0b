"""Prometheus metrics: what the daemon believes, for operators and the end-to-end tests.

Owned by the service, which calls ``observe_check`` after every plugin check and ``observe_bus`` every
loop; served on ``[Daemon] metrics_address:metrics_port`` when the port is not 0. A private
CollectorRegistry keeps tests and the demo independent of the global default registry. The service
asks ``server_problem()`` every loop: a server thread that died is restarted once per death, and if it
cannot be, the service exits non-zero. The same listener answers ``/healthz`` and ``/readyz`` from the
probe the service attaches (see ``rpcdaemon.telemetry.health``).

What a dashboard needs, and where it comes from: the heartbeat age of each agent is computed at each
scrape from the registry on the daemon's own monotonic clock (``follow_agents``: the agents the API lists,
of the types the plugins watch; an agent that leaves the listing leaves the metric). Routers and networks
hosted per agent come from the plugin's cache after each active pass; API errors by ``ErrorKind`` from the
plugin's ``api_errors`` (its own calls and its executor's); bus reconnects from each listener's outage
count. Labels are bounded by the cloud: agent type, host and id, never a router or network id. A standby
(``observe_check`` with ``active=False``) exports the agent metrics (it listens and reads the agent list)
but no action metrics: no resources (it keeps no bindings), durations or last pass.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from rpcdaemon import __version__
from rpcdaemon.acting.api import ErrorKind
from rpcdaemon.model import OutcomeStatus
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin
from rpcdaemon.plugins.report import PassReport
from rpcdaemon.telemetry.health import HealthServer, ProbeSource

log = logging.getLogger("rpcdaemon")

# Outcomes whose duration is an action's: those that called Neutron to the end (a skip is a pre-check, a dry
# run calls nothing).
_TIMED = frozenset({OutcomeStatus.DONE, OutcomeStatus.FAILED})
AgentLabels = tuple[str, str, str]  # agent_type, host, agent_id


class HeartbeatAges:
    """``rpcdaemon_agent_heartbeat_age_seconds``: computed at each scrape (an HTTP thread) from the registry,
    on the daemon's own clock, for the listed agents of the watched types that have been heard."""

    NAME = "rpcdaemon_agent_heartbeat_age_seconds"

    def __init__(self) -> None:
        self.source: tuple[AgentRegistry, Callable[[], float], frozenset[str]] | None = None

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.NAME, "seconds since the agent's last report_state was heard on the bus (the "
                                 "daemon's monotonic clock); absent while it has not been heard",
                                 labels=["agent_type", "host", "agent_id"])

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        if self.source is not None:
            registry, clock, types = self.source
            now = clock()
            for o in registry.observations():
                if o.last_heard is not None and o.agent.agent_type in types:
                    family.add_metric([o.agent.agent_type, o.agent.host, o.agent.id], max(0.0, now - o.last_heard))
        return [family]


class Metrics:
    def __init__(self, *, wall: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._wall = wall  # rpcdaemon_last_pass_timestamp_seconds is wall-clock time, for time() in alerts
        self.agent = Gauge(
            "rpcdaemon_agent_verdict",
            "1 for the daemon's current verdict on each agent (alive, warming, dead, unknown)",
            ["agent_type", "host", "agent_id", "verdict"],
            registry=self.registry,
        )
        self.bus_connected = Gauge(
            "rpcdaemon_bus_connected", "1 while the AMQP bus is connected", registry=self.registry
        )
        self.heartbeats = Counter(
            "rpcdaemon_heartbeats", "report_state heartbeats decoded", registry=self.registry
        )
        self.rejected = Counter(
            "rpcdaemon_messages_rejected", "bus messages acked and ignored", ["reason"], registry=self.registry
        )
        self.actions = Counter(
            "rpcdaemon_actions", "actions executed, by outcome", ["plugin", "kind", "status"], registry=self.registry
        )
        self.brake = Gauge(
            "rpcdaemon_brake_engaged", "1 while the mass-failure brake holds", ["plugin"], registry=self.registry
        )
        self.dropped = Counter(
            "rpcdaemon_messages_dropped", "messages the broker dropped from the daemon's full (bounded) queue",
            ["listener"], registry=self.registry,
        )
        self.time_to_ready = Histogram(
            "rpcdaemon_time_to_ready_seconds",
            "seconds from the start of a move until the resource's ports were bound to the new host and ACTIVE",
            ["plugin"], registry=self.registry,
            buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600),
        )
        self.not_ready = Counter(
            "rpcdaemon_not_ready", "moved resources not ready within ready_timeout", ["plugin"], registry=self.registry
        )
        self.fence_runs = Counter(
            "rpcdaemon_fence_runs", "fence_command runs before a dead agent's work moved, by result (ok, failed: "
            "non-zero exit or not found, timeout: killed after fence_timeout)", ["plugin", "result"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "rpcdaemon_leader", "1 while this instance is the active one (it holds the leadership lease, or runs "
            "without coordination), 0 on a standby, a dry run and a Dump-only instance", registry=self.registry,
        )
        self.resources = Gauge(
            "rpcdaemon_agent_resources", "routers (L3 agents) or networks (DHCP agents) each agent hosts, in the "
            "active instance's cache after its last pass", ["agent_type", "host", "agent_id"], registry=self.registry,
        )
        self.action_duration = Histogram(
            "rpcdaemon_action_duration_seconds", "seconds one action took, from its pre-check to its last API call, "
            "for actions done or failed", ["plugin", "kind"], registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
        )
        self.api_errors = Counter(
            "rpcdaemon_api_errors", "Neutron API calls that failed, by error class (" + ", ".join(
                k.value for k in ErrorKind) + "), the plugin's and its executor's", ["plugin", "kind"],
            registry=self.registry,
        )
        self.bus_reconnects = Counter(
            "rpcdaemon_bus_reconnects", "times a bus listener lost its link to the broker and set out to reconnect",
            ["listener"], registry=self.registry,
        )
        self.last_pass = Gauge(
            "rpcdaemon_last_pass_timestamp_seconds", "wall-clock time (Unix seconds) at which the active instance's "
            "last check pass ended without an error", ["plugin"], registry=self.registry,
        )
        self.paused = Gauge(
            "rpcdaemon_paused", "1 while automatic moves are paused (rpcdaemon pause; resume or its --for ends it)",
            registry=self.registry,
        )
        self.build_info = Gauge(
            "rpcdaemon_build_info", "always 1; the labels say which rpcdaemon and which Python run",
            ["version", "python"], registry=self.registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.heartbeat_ages = HeartbeatAges()
        self.registry.register(self.heartbeat_ages)
        self._seen: dict[str, set[tuple[str, str, str, str]]] = {}
        self._hosted_seen: dict[str, set[AgentLabels]] = {}
        self._hosted: dict[str, Tally[str]] = {}  # per plugin: agent id -> resources, as last counted
        self._errors_seen: dict[str, dict[str, int]] = {}
        self._reconnects_seen: dict[str, int] = {}
        self._dropped_seen: dict[str, int] = {}
        self._server: HealthServer | None = None
        self._thread: threading.Thread | None = None
        self._probe: ProbeSource | None = None
        self._where: tuple[str, int] | None = None

    def observe_drops(self, listener: str, total: int) -> None:
        """``total``: the listener's running count (the counter only ever grows by the difference)."""
        delta = total - self._dropped_seen.get(listener, 0)
        if delta > 0:
            self.dropped.labels(listener).inc(delta)
        self._dropped_seen[listener] = total

    def observe_reconnects(self, listener: str, outages: int) -> None:
        """``outages``: the listener's running count of lost links (0 exports the series at 0)."""
        counter = self.bus_reconnects.labels(listener)
        delta = outages - self._reconnects_seen.get(listener, 0)
        if delta > 0:
            counter.inc(delta)
        self._reconnects_seen[listener] = outages

    def follow_agents(self, registry: AgentRegistry, clock: Callable[[], float], agent_types: Iterable[str]) -> None:
        """Heartbeat ages are read from ``registry`` on ``clock`` at each scrape, for agents of ``agent_types``."""
        self.heartbeat_ages.source = (registry, clock, frozenset(agent_types))

    def follow_leader(self, is_leader: Callable[[], bool]) -> None:
        """``rpcdaemon_leader`` is read from ``is_leader()`` at each scrape: never a check interval late."""
        self.leader.set_function(lambda: 1.0 if is_leader() else 0.0)

    def observe_bus(self, connected: bool) -> None:
        self.bus_connected.set(1 if connected else 0)

    def observe_check(self, plugin: FailoverPlugin, report: PassReport, *, active: bool) -> None:
        """After each check of ``plugin``: ``observe_pass``, its API errors, and on the active instance the
        resources per agent and (when the pass ended without an error) the last pass time."""
        self.observe_pass(plugin.name, report)
        self._observe_api_errors(plugin.name, plugin.api_errors.counts())
        name = plugin.name
        if not active:
            self._hosted.pop(name, None)
            self._set_hosted(name, {})  # a standby keeps no bindings: none exported, none stale
            return
        if not report.ok:
            return  # judged may be partial: keep the last pass's counts
        self.last_pass.labels(name).set(self._wall())
        hosted = self._hosted.get(name)
        if hosted is None or report.api_calls:  # the cache changes only in passes that call the API
            hosted = Tally(aid for hosts in plugin.bindings.values() for aid in hosts)
            self._hosted[name] = hosted
        self._set_hosted(name, {(j.agent.agent_type, j.agent.host, j.agent.id): hosted[aid]
                                for aid, j in report.judged.items()})

    def _set_hosted(self, plugin: str, counts: dict[AgentLabels, int]) -> None:
        for gone in self._hosted_seen.get(plugin, set()) - counts.keys():
            self.resources.remove(*gone)
        for labels, n in counts.items():
            self.resources.labels(*labels).set(n)
        self._hosted_seen[plugin] = set(counts)

    def _observe_api_errors(self, plugin: str, counts: dict[str, int]) -> None:
        seen = self._errors_seen.setdefault(plugin, {})
        for kind in ErrorKind:  # every class exported from the start, so that rate() sees the first error
            counter = self.api_errors.labels(plugin, kind.value)
            total = counts.get(kind.value, 0)
            if total > seen.get(kind.value, 0):
                counter.inc(total - seen.get(kind.value, 0))
            seen[kind.value] = total

    def observe_pass(self, plugin: str, report: PassReport) -> None:
        labels = {
            (j.agent.agent_type, j.agent.host, j.agent.id, j.verdict.value) for j in report.judged.values()
        }
        for gone in self._seen.get(plugin, set()) - labels:
            self.agent.remove(*gone)
        for lab in labels:
            self.agent.labels(*lab).set(1)
        self._seen[plugin] = labels
        self.brake.labels(plugin).set(1 if report.plan.braked else 0)
        for o in report.outcomes:
            self.actions.labels(plugin, o.action.kind.value, o.status.value).inc()
            if o.status in _TIMED:
                self.action_duration.labels(plugin, o.action.kind.value).observe(o.seconds)
        for r in report.readiness:
            if r.ready:
                self.time_to_ready.labels(plugin).observe(r.seconds)
            else:
                self.not_ready.labels(plugin).inc()
        for run in report.fences:
            if run.result.ran:  # not the runs a standby or a dry run skipped
                self.fence_runs.labels(plugin, run.result.value).inc()

    def attach_probe(self, probe: ProbeSource) -> None:
        """What ``/healthz`` and ``/readyz`` report (the service's ``probe``)."""
        self._probe = probe
        if self._server is not None:
            self._server.attach(probe)

    def serve(self, address: str, port: int) -> None:
        """Bind and serve ``/metrics``, ``/healthz`` and ``/readyz`` in a thread. Raises OSError if the
        address cannot be bound."""
        self._server = HealthServer(address, port, self.registry, self._probe)
        self._thread = self._server.thread
        self._where = (address, port)

    @property
    def port(self) -> int | None:
        return int(self._server.server_address[1]) if self._server is not None else None

    def server_problem(self) -> str | None:
        """None while the server thread runs (or none was asked for); after it died, one restart is
        tried and None returned if it worked, else what is wrong."""
        if self._thread is None or self._thread.is_alive() or self._where is None or self._server is None:
            return None
        address, port = self._where
        log.error("metrics server on %s:%d stopped; restarting it", address, port)
        try:
            self._server.server_close()
            self.serve(address, port)
        except OSError as exc:
            return f"metrics server on {address}:{port} stopped and cannot be restarted: {exc.strerror or exc}"
        return None

    def close(self) -> None:
        self._where = None  # a stopped server is not a dead one
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
