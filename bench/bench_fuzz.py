"""Soak: a long stream of hostile bus messages through the daemon's observing path, on the real RabbitMQ.

    python bench/bench_fuzz.py [-n 100000] [--url amqp://guest:guest@127.0.0.1:5672/VHOST]

The suite's ``tests/e2e/test_fuzz.py`` runs 10,000 generated messages (``tests/fuzz_messages.py``)
past the real daemon process next to a real neutron-server; this runs ten times as many through the
same listener, decoder and registry in one process, with two healthy agents heartbeating all along,
and prints: publish and consume rates, how the decoder classed the messages against what the
generator expected, failed handler calls (must be 0), resident memory before/after (must stay
bounded: the registry keeps at most its cap of unknown hosts), and whether the healthy agents stayed
heard throughout (their last heartbeat never older than two intervals). Without ``--url`` it makes a
throwaway vhost with ``rabbitmqctl`` and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # ``python bench/bench_fuzz.py``: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fuzz_messages as fm

from rpcdaemon.broker.connection import publish_raw
from rpcdaemon.broker.link import RawMessage, fanout_subscription, neutron_subscription
from rpcdaemon.model import Heartbeat, NetworkChanged, NetworkDeleted
from rpcdaemon.observing.decode import Rejected, decode_message
from rpcdaemon.observing.listener import BusListener
from rpcdaemon.observing.registry import AgentRegistry

HEALTHY = (("soak-net-1", "L3 agent"), ("soak-net-2", "DHCP agent"))
INTERVAL = 0.5  # seconds between the healthy agents' heartbeats


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def heartbeat(host: str, agent_type: str) -> bytes:
    state = {"host": host, "agent_type": agent_type, "binary": "neutron-l3-agent", "topic": "l3_agent",
             "configurations": {}, "uuid": uuid.uuid4().hex}
    msg = {"method": "report_state", "args": {"agent_state": {"agent_state": state}, "time": fm.STALE_TIME},
           "version": "1.4"}
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(msg)}).encode()


def soak(url: str, count: int) -> dict[str, object]:
    registry = AgentRegistry(down_time=10.0)
    registry.set_listening(time.monotonic())
    classes: Counter[str] = Counter()
    worst_gap = {host: 0.0 for host, _ in HEALTHY}
    last_heard: dict[str, float] = {}
    lock = threading.Lock()

    def handle(raw: RawMessage) -> None:  # what Service.handle does, minus the plugins
        event = decode_message(raw.body, routing_key=raw.routing_key, received_at=raw.received_at)
        if isinstance(event, Heartbeat):
            registry.record(event)
            classes[fm.HEARTBEAT] += 1
            if event.host in worst_gap:
                with lock:
                    last_heard[event.host] = raw.received_at
        elif isinstance(event, NetworkDeleted | NetworkChanged):
            classes[fm.NETWORK] += 1
        elif isinstance(event, Rejected):
            classes[fm.REJECTED] += 1

    subs = [neutron_subscription(fm.REPORTS), neutron_subscription(fm.PLUGIN),
            neutron_subscription(fm.NOTIFICATIONS), fanout_subscription("dhcp_agent")]
    publish_raw(url, fm.NEUTRON, "soak.declare", b"{}")  # the listener never creates Neutron's exchange
    publish_raw(url, fm.DHCP_FANOUT, "", b"{}", exchange_type="fanout", auto_delete=True)
    stop = threading.Event()
    listener = BusListener(url, subs, handle, stop=stop, name="soak")
    listener.start()
    deadline = time.monotonic() + 10
    while not listener.link().connected:
        if time.monotonic() > deadline:
            raise SystemExit(f"could not connect to {url}")
        time.sleep(0.05)
    time.sleep(1.5)  # the fanout binding follows the main one

    healthy_sent = [0]

    def healthy_fleet() -> None:
        while not stop.is_set():
            for host, agent_type in HEALTHY:
                publish_raw(url, fm.NEUTRON, fm.REPORTS, heartbeat(host, agent_type))
                healthy_sent[0] += 1
            now = time.monotonic()
            with lock:
                for host in worst_gap:
                    if host in last_heard:
                        worst_gap[host] = max(worst_gap[host], now - last_heard[host])
            stop.wait(INTERVAL)

    fleet = threading.Thread(target=healthy_fleet, daemon=True)
    messages = list(fm.generate(count, seed=6, host_prefix="soak-junk-", fleet=HEALTHY))
    rss_before = rss_mib()  # with the generated messages already in memory
    fleet.start()
    expected = Counter(m.expect for m in messages)
    began = time.perf_counter()
    stats = fm.publish(url, messages)
    # Wait until every message has been handled or dropped by the queue bound, or until the queue is
    # drained: nothing but the healthy agents' heartbeats arriving for 3 s (drops beyond the bound of
    # the daemon's own dead-letter queue go uncounted).
    deadline = time.monotonic() + 300
    next_report = time.monotonic() + 10
    last_junk, quiet_since = -1, time.monotonic()
    while listener.counts.received + listener.counts.dropped < count and time.monotonic() < deadline:
        time.sleep(0.05)
        junk = listener.counts.received - healthy_sent[0]
        if junk != last_junk:
            last_junk, quiet_since = junk, time.monotonic()
        elif time.monotonic() - quiet_since > 3.0:
            break
        if time.monotonic() >= next_report:
            next_report += 10
            print(f"  ... {time.perf_counter() - began:.0f} s: received {listener.counts.received:,}, "
                  f"dropped {listener.counts.dropped:,}", flush=True)
    drained_early = listener.counts.received + listener.counts.dropped < count  # the 3 s of quiet do not count
    consumed_in = time.perf_counter() - began - (3.0 if drained_early else 0.0)
    time.sleep(2 * INTERVAL)
    stop.set()
    fleet.join(5)
    listener.join(10)
    return {
        "published": stats.count, "publish_rate": stats.rate, "megabytes": stats.bytes / 1e6,
        "consume_seconds": consumed_in, "consume_rate": count / consumed_in,
        "received": listener.counts.received, "failed": listener.counts.failed,
        "dropped": listener.counts.dropped,
        "lost": count - (listener.counts.received - healthy_sent[0]) - listener.counts.dropped,
        "classes": dict(classes), "expected": dict(expected),
        "rss_before_mib": rss_before, "rss_after_mib": rss_mib(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worst_healthy_gap_s": max(worst_gap.values()), "fatal": listener.fatal,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="hostile messages to publish (default 100000)")
    parser.add_argument("--url", help="broker URL (default: a throwaway vhost on 127.0.0.1)")
    args = parser.parse_args()
    vhost = None
    url = args.url
    if url is None:
        vhost = f"rpcd-soak-{uuid.uuid4().hex[:6]}"
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True)
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    try:
        r = soak(url, args.n)
    finally:
        if vhost:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
    print(f"{r['published']:,} hostile messages ({r['megabytes']:.0f} MB): published at {r['publish_rate']:,.0f} msg/s,"
          f" all handled in {r['consume_seconds']:.1f} s ({r['consume_rate']:,.0f} msg/s)")
    print(f"received {r['received']:,}, failed {r['failed']} (kombu cannot unpack: "
          f"{r['expected'].get(fm.UNPACKABLE, 0)}), dropped by the queue bound {r['dropped']:,} counted"
          f" + {max(0, int(r['lost'])):,} uncounted")  # type: ignore[attr-defined]
    print(f"decoded as {r['classes']}; generator expected {r['expected']} (+ the healthy agents' heartbeats)")
    print(f"RSS {r['rss_before_mib']:.0f} -> {r['rss_after_mib']:.0f} MiB (peak {r['peak_rss_mib']:.0f} MiB, "
          "both with the generated messages held in memory)")
    print(f"healthy agents: longest silence seen {r['worst_healthy_gap_s']:.2f} s (interval {INTERVAL} s); "
          f"listener fatal: {r['fatal']}")
    # kombu refuses the bad-compression ones before any handler: those are the only failures allowed.
    unpackable = r["expected"].get(fm.UNPACKABLE, 0)  # type: ignore[attr-defined]
    # (fewer than that when the queue bound dropped some of them)
    ok = r["failed"] <= unpackable and not r["fatal"] and float(r["worst_healthy_gap_s"]) < 5.0  # type: ignore[arg-type]
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
