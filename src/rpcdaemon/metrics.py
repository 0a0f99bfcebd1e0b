"""Prometheus metrics: what the daemon believes, for operators and the end-to-end tests.

Owned by the service, which calls ``observe_pass`` after every plugin check and ``observe_bus`` every
loop; served on ``[Daemon] metrics_address:metrics_port`` when the port is not 0. A private
CollectorRegistry keeps tests and the demo independent of the global default registry. The service
asks ``server_problem()`` every loop: a server thread that died is restarted once per death, and if it
cannot be, the service exits non-zero. The same listener answers ``/healthz`` and ``/readyz`` from the
probe the service attaches (see ``rpcdaemon.health``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rpcdaemon.health import HealthServer, ProbeSource
from rpcdaemon.plugins.base import PassReport

log = logging.getLogger("rpcdaemon")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.leader = Gauge(
            "rpcdaemon_leader", "1 while this instance is the active one (it holds the leadership lease), 0 on a "
            "standby", registry=self.registry,
        )
        self._seen: dict[str, set[tuple[str, str, str, str]]] = {}
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

    def follow_leader(self, is_leader: Callable[[], bool]) -> None:
        """``rpcdaemon_leader`` is read from ``is_leader()`` at each scrape: never a check interval late."""
        self.leader.set_function(lambda: 1.0 if is_leader() else 0.0)

    def observe_bus(self, connected: bool) -> None:
        self.bus_connected.set(1 if connected else 0)

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
        for r in report.readiness:
            if r.ready:
                self.time_to_ready.labels(plugin).observe(r.seconds)
            else:
                self.not_ready.labels(plugin).inc()

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
