"""Prometheus metrics: what the daemon believes, for operators and the end-to-end tests.

Owned by the service, which calls ``observe_pass`` after every plugin check and ``observe_bus`` every
loop; served on ``[Daemon] metrics_address:metrics_port`` when the port is not 0. A private
CollectorRegistry keeps tests and the demo independent of the global default registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from rpcdaemon.plugins.base import PassReport


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
        self._seen: dict[str, set[tuple[str, str, str, str]]] = {}

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

    def serve(self, address: str, port: int) -> None:
        start_http_server(port, addr=address, registry=self.registry)
