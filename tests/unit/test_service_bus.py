"""What the service hears and where each message goes: the bus listeners are the union of what the
plugins declare (in one order, whatever order [Daemon] plugins lists them in), and a decoded message
reaches the plugins that take it. The listeners are built, never started (no bus here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.broker.link import RawMessage, Subscription
from rpcdaemon.daemon.plugin_factory import AgentPluginConfig, build_plugin
from rpcdaemon.daemon.service import Service
from rpcdaemon.deciding.hints import Hint
from rpcdaemon.deciding.liveness import BrakePolicy, LivenessPolicy
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, HintKind, Network
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import Timing
from rpcdaemon.plugins.dhcpagent import DHCPAgentPlugin
from rpcdaemon.plugins.dump import DumpPlugin

CFG = AgentPluginConfig(liveness=LivenessPolicy(down_time=30.0, startup_grace=30.0, revive_hold=60.0),
                        timing=Timing(), brake=BrakePolicy(), executor=ExecutorPolicy(workers=1), max_moves=10)

HEARTBEATS = [Subscription("neutron", "q-reports-plugin"), Subscription("neutron", "q-plugin")]
DHCP_NEWS = [Subscription("neutron", "notifications.info"),
             Subscription("dhcp_agent_fanout", "", "fanout", auto_delete=True)]
DHCP_CASTS = [Subscription("neutron", "dhcp_agent.#")]
L3_CASTS = [Subscription("neutron", "l3_agent.#"), Subscription("l3_agent_fanout", "", "fanout", auto_delete=True)]
DUMP = DumpPlugin("neutron", None).subscriptions()


@pytest.fixture
def make_service() -> Iterator[Any]:
    made: list[Service] = []

    def make(*names: str, dump: bool = False) -> Service:
        registry = AgentRegistry(75.0)
        stop = threading.Event()
        plugins = [build_plugin(n, FakeNeutron(), registry, CFG, bus_since=lambda: None, stop=stop) for n in names]
        svc = Service(bus_url="memory://", registry=registry, plugins=plugins,
                      dump=DumpPlugin("neutron", None) if dump else None, check_interval=1.0, queue_expire=None,
                      stop=stop)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.shutdown()


@pytest.mark.parametrize(("names", "dump", "expected"), [
    ((), False, []),
    ((), True, [("bus-dump", DUMP)]),
    (("L3Agent",), False, [("bus-agents", HEARTBEATS), ("bus-casts", L3_CASTS)]),
    (("DHCPAgent",), False, [("bus-agents", HEARTBEATS + DHCP_NEWS), ("bus-casts", DHCP_CASTS)]),
    (("L3Agent", "DHCPAgent"), True,
     [("bus-agents", HEARTBEATS + DHCP_NEWS), ("bus-casts", DHCP_CASTS + L3_CASTS), ("bus-dump", DUMP)]),
    (("DHCPAgent", "L3Agent"), False, [("bus-agents", HEARTBEATS + DHCP_NEWS), ("bus-casts", DHCP_CASTS + L3_CASTS)]),
])
def test_the_listeners_are_the_union_of_what_the_plugins_declare(
    make_service: Any, names: Sequence[str], dump: bool, expected: list[tuple[str, list[Subscription]]],
) -> None:
    svc = make_service(*names, dump=dump)
    assert [(listener.name, list(listener.subscriptions)) for listener in svc.listeners] == expected


class _Heard:
    """Stands in for a plugin's BusNews: what the bus thread handed it."""

    def __init__(self) -> None:
        self.hints: list[Hint] = []

    def add(self, hints: Sequence[Hint], *, lost: bool = False) -> None:
        self.hints.extend(hints)


def _raw(exchange: str, routing_key: str, body: dict[str, Any]) -> RawMessage:
    return RawMessage(exchange, routing_key, json.dumps(body).encode(), "application/json", "utf-8", 1.0)


def test_each_message_reaches_the_plugins_that_take_it(make_service: Any) -> None:
    svc = make_service("L3Agent", "DHCPAgent")
    heard = {p.name: _Heard() for p in svc.plugins}
    for p in svc.plugins:
        p.news = heard[p.name]
    dhcp = next(p for p in svc.plugins if isinstance(p, DHCPAgentPlugin))
    dhcp.networks = {"n-gone": Network("n-gone"), "n-kept": Network("n-kept")}

    svc.handle(_raw("neutron", "l3_agent.host-a", {"method": "router_added_to_agent", "args": {"payload": ["r1"]}}))
    svc.handle(_raw("neutron", "dhcp_agent.host-a",
                    {"method": "network_create_end", "args": {"payload": {"network": {"id": "n1"}}}}))
    svc.handle(_raw("neutron", "dhcp_agent.host-b", {"method": "port_create_end", "args": {"payload": {"port": {
        "device_owner": "network:router_interface", "device_id": "r2", "network_id": "n2"}}}}))
    svc.handle(_raw("neutron", "notifications.info",
                    {"event_type": "network.update.end", "payload": {"network": {"id": "n3"}}}))
    svc.handle(_raw("dhcp_agent_fanout", "", {"method": "network_delete_end",
                                              "args": {"payload": {"network_id": "n-gone"}}}))
    svc.handle(_raw("neutron", "q-reports-plugin", {"method": "report_state", "args": {"agent_state": {
        "agent_state": {"host": "host-a", "agent_type": DHCP_AGENT}}}}))

    assert [(h.resource_id, h.host, h.kind, h.method) for h in heard["L3Agent"].hints] == [
        ("r1", "host-a", HintKind.PLACED, "router_added_to_agent"),
        ("r2", None, HintKind.CHANGED, "port_create_end"),
    ]
    assert [(h.resource_id, h.host, h.kind, h.method) for h in heard["DHCPAgent"].hints] == [
        ("n1", "host-a", HintKind.PLACED, "network_create_end"),
        ("n2", "host-b", HintKind.CHANGED, "port_create_end"),
        ("n3", None, HintKind.CHANGED, "notification"),
    ]
    assert set(dhcp.networks) == {"n-kept"}  # the fanout's network_delete_end
    assert svc.registry.last_heard(DHCP_AGENT, "host-a") == 1.0  # the heartbeat went to the registry
