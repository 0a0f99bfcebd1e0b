"""Throughput of the observing path: RabbitMQ -> BusListener -> decode_message -> AgentRegistry.record.

Publishes N heartbeats in the real wire format (the oslo 2.0 envelope around report_state with the
22 ``_context_*`` keys, as captured from Neutron 29 agents) to the ``neutron`` exchange, and
measures how fast one listener drains them. To measure the consumer and not the publisher, the
listener's first delivery blocks until every message is on the broker; the clock runs from its
release to the last record. Also prints the decode-only rate (no broker).

    python bench/bench_decode.py [-n 20000] [--hosts 200] [--url amqp://guest:guest@127.0.0.1:5672//]

Goal: >= 5,000 messages/s through the whole path on the 2-core test machine.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from typing import Any

from rpcdaemon.broker.connection import make_connection, publish_raw
from rpcdaemon.broker.link import RawMessage, neutron_subscription
from rpcdaemon.model import Heartbeat
from rpcdaemon.observing.decode import decode_message
from rpcdaemon.observing.listener import QUEUE_MAX_BYTES, QUEUE_MAX_LENGTH, BusListener
from rpcdaemon.observing.registry import AgentRegistry

CONTEXT_KEYS = [
    "user",
    "tenant",
    "system_scope",
    "project",
    "domain",
    "user_domain",
    "project_domain",
    "is_admin",
    "read_only",
    "show_deleted",
    "auth_token",
    "request_id",
    "global_request_id",
    "resource_uuid",
    "roles",
    "user_identity",
    "is_admin_project",
    "user_id",
    "project_id",
    "tenant_id",
    "timestamp",
    "user_name",
]


def heartbeat_body(host: str, agent_type: str) -> bytes:
    """One report_state exactly shaped like an agent's (see neutron.md, "as seen by a separate kombu consumer")."""
    l3 = agent_type == "L3 agent"
    state: dict[str, Any] = {
        "binary": "neutron-l3-agent" if l3 else "neutron-dhcp-agent",
        "host": host,
        "availability_zone": "nova",
        "topic": "l3_agent" if l3 else "dhcp_agent",
        "agent_type": agent_type,
        "configurations": (
            {
                "agent_mode": "legacy",
                "handle_internal_only_routers": True,
                "interface_driver": "openvswitch",
                "log_agent_heartbeats": False,
                "extensions": [],
                "routers": 12,
                "ex_gw_ports": 12,
                "interfaces": 30,
                "floating_ips": 40,
            }
            if l3
            else {
                "dhcp_driver": "neutron.agent.linux.dhcp.Dnsmasq",
                "dhcp_lease_duration": 86400,
                "log_agent_heartbeats": False,
                "networks": 20,
                "subnets": 25,
                "ports": 60,
            }
        ),
        "uuid": str(uuid.uuid4()),
    }
    msg: dict[str, Any] = {
        "method": "report_state",
        "args": {"agent_state": {"agent_state": state}, "time": "2026-11-25T09:04:05.499087"},
        "version": "1.4",
        "_msg_id": uuid.uuid4().hex,
        "_reply_q": f"reply_{uuid.uuid4().hex}",
        "_timeout": None,
        "_unique_id": uuid.uuid4().hex,
    }
    for key in CONTEXT_KEYS:
        msg[f"_context_{key}"] = None
    msg.update(
        _context_is_admin=True,
        _context_roles=["member", "admin", "reader"],
        _context_request_id=f"req-{uuid.uuid4()}",
        _context_user_identity="- - - - -",
        _context_timestamp="2026-11-25 09:03:53.359375",
    )
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(msg)}).encode()


def bench_decode_only(bodies: list[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        decode_message(body, routing_key="q-reports-plugin", received_at=0.0)
    return len(bodies) / (time.perf_counter() - started)


def bench_bus(url: str, bodies: list[bytes]) -> tuple[float, float]:
    """(publish rate, consume+decode+record rate) in messages/s."""
    registry = AgentRegistry(down_time=75.0)
    registry.set_listening(time.monotonic())
    gate = threading.Event()
    done = threading.Event()
    received = 0
    released_at = 0.0
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"

    def on_message(raw: RawMessage) -> None:
        nonlocal received, released_at
        if not gate.is_set():
            gate.wait()
            released_at = time.perf_counter()
        event = decode_message(raw.body, routing_key=raw.routing_key, received_at=raw.received_at)
        if isinstance(event, Heartbeat) and event.host.startswith(prefix):
            registry.record(event)
            received += 1
            if received == len(bodies):
                done.set()

    stop = threading.Event()
    # The listener only binds to Neutron's exchange, it never creates it: declare it as neutron-server
    # does (publish_raw declares a non-durable topic exchange). The backlog this bench drains is larger
    # than the daemon's own queue bound on purpose, so the bound is raised here.
    publish_raw(url, "neutron", "bench.declare", b"{}")
    listener = BusListener(url, [neutron_subscription("q-reports-plugin")], on_message, stop=stop, name="bench",
                           queue_max_length=max(QUEUE_MAX_LENGTH, len(bodies) + 1000),
                           queue_max_bytes=max(QUEUE_MAX_BYTES, 4096 * (len(bodies) + 1000)))
    listener.start()
    try:
        deadline = time.monotonic() + 10
        while not listener.link().connected:
            if time.monotonic() > deadline:
                raise SystemExit(f"could not connect to {url}")
            time.sleep(0.05)
        bodies = [body.replace(b"bench-host-", prefix.encode()) for body in bodies]
        conn = make_connection(url)
        started = time.perf_counter()
        with conn:
            for body in bodies:
                publish_raw(conn, "neutron", "q-reports-plugin", body)
        publish_rate = len(bodies) / (time.perf_counter() - started)
        time.sleep(0.5)  # let the broker settle the last publishes into the queue
        gate.set()
        if not done.wait(120):
            raise SystemExit(f"only {received} of {len(bodies)} heartbeats arrived within 120 s")
        consume_rate = (len(bodies) - 1) / (time.perf_counter() - released_at)
        while listener.counts.acked < len(bodies):  # the last ack follows the last record
            time.sleep(0.001)
        return publish_rate, consume_rate
    finally:
        gate.set()
        stop.set()
        listener.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="heartbeats to publish (default 20000)")
    parser.add_argument("--hosts", type=int, default=200, help="distinct agent hosts (default 200)")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()
    bodies = [
        heartbeat_body(f"bench-host-{i % args.hosts}", "L3 agent" if i % 2 else "DHCP agent") for i in range(args.n)
    ]
    size = sum(map(len, bodies)) / len(bodies)
    print(f"{args.n} heartbeats, {args.hosts} hosts, {size:.0f} bytes each")
    print(f"decode only:                 {bench_decode_only(bodies):>9,.0f} msg/s")
    publish_rate, consume_rate = bench_bus(args.url, bodies)
    print(f"publish (kombu, one conn):   {publish_rate:>9,.0f} msg/s")
    print(f"consume+decode+record (bus): {consume_rate:>9,.0f} msg/s  (goal >= 5,000)")


if __name__ == "__main__":
    main()
