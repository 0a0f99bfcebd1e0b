"""10,000 hostile bus messages at the real daemon, next to a healthy fleet: nothing breaks, nothing moves.

The messages (``tests/fuzz_messages.py``, seeded) go to the real RabbitMQ on every key the daemon binds
(``q-reports-plugin``, ``q-plugin``, ``notifications.info`` of exchange ``neutron``, and the
``dhcp_agent_fanout`` exchange) in the harness's vhost, while 3 L3 and 2 DHCP fake agents heartbeat
and the real ``rpcdaemon -d`` runs both failover plugins. Afterwards the daemon is alive, acted on
nothing, rejected what it had to, stayed within its memory, logged no traceback and no line an
attacker wrote, unpickled nothing, and still judges the fleet right: every agent alive, and one that
crashes after the flood has its routers moved as usual. Count, publish time and rate are printed
(``pytest -s``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from tests.e2e.rpcd import Daemons, RpcDaemon, add_hosts, broker_url, networks_by_agent, routers_by_agent, seed_routers
from tests.fuzz_messages import HEARTBEAT, REJECTED, UNPACKABLE, generate, publish
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.metrics import total
from tests.kit.poll import wait_until

from rpcdaemon.model import DHCP_AGENT, L3_AGENT

pytestmark = pytest.mark.e2e

COUNT = 10_000
RSS_GROWTH_LIMIT = 100 * 1024 * 1024


def status_kb(pid: int, field: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak) of a process, in kB, from /proc/PID/status."""
    m = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert m, f"no {field} in /proc/{pid}/status"
    return int(m.group(1))


def metric_sum(daemon: RpcDaemon, name: str) -> float:
    return total(daemon.metrics(), name)


def test_a_flood_of_hostile_messages_changes_nothing_and_the_daemon_still_judges_right(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons, tmp_path: Path
) -> None:
    l3 = add_hosts(fleet, neutron, ["l3-a", "l3-b", "l3-c"])
    dhcp = add_hosts(fleet, neutron, ["dhcp-a", "dhcp-b"], kind="dhcp")
    for name, aid in l3.items():
        seed_routers(rest, aid, 3, prefix=f"fuzz-{name}")
    networks = [rest.create_network(f"fuzz-net-{i}", cidr=f"10.6.{i}.0/24").id for i in range(2)]
    for net in networks:  # agents_per_network = all: already as the daemon wants it
        for aid in dhcp.values():
            rest.bind_network(aid, net)
    routers_before = routers_by_agent(rest, l3.values())
    networks_before = networks_by_agent(rest, dhcp.values())
    fleet_keys = {(L3_AGENT, fleet.host(n)) for n in l3} | {(DHCP_AGENT, fleet.host(n)) for n in dhcp}

    daemon = rpcdaemon.start(rpcdaemon.config(plugins=["L3Agent", "DHCPAgent"]))
    daemon.wait_ready(plugins=2)
    wait_until(lambda: all(daemon.verdicts().get(key) == "alive" for key in fleet_keys), 15,
               "the daemon to hear the whole fleet", daemon.hint)
    assert daemon.actions() == [], daemon.hint()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    rss_before, peak_before = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
    rejected_before = metric_sum(daemon, "rpcdaemon_messages_rejected_total")
    heartbeats_before = metric_sum(daemon, "rpcdaemon_heartbeats_total")

    canary = tmp_path / "unpickled"  # created only if some consumer unpickles a fuzz message
    messages = list(generate(COUNT, seed=6, host_prefix=fleet.prefix,
                             fleet=[(host, kind) for kind, host in sorted(fleet_keys)], canary=str(canary)))
    stats = publish(broker_url(neutron), messages)
    figures = stats.describe()
    print(f"\nfuzz: {figures}")
    assert stats.count >= 10_000

    want_rejected = stats.by_expect[REJECTED]
    began = time.monotonic()

    def all_rejected() -> bool:
        assert daemon.running, f"the daemon died during the flood ({figures}){daemon.hint()}"
        return metric_sum(daemon, "rpcdaemon_messages_rejected_total") - rejected_before >= want_rejected

    wait_until(all_rejected, 60, f"the daemon to reject {want_rejected} messages ({figures})", daemon.hint)
    consumed = time.monotonic() - began
    rss_after, peak_after = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
    print(f"fuzz: the daemon had rejected all {want_rejected} {consumed:.1f} s after the last publish; "
          f"RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MB, peak {peak_before / 1024:.0f} -> "
          f"{peak_after / 1024:.0f} MB")

    rejected = metric_sum(daemon, "rpcdaemon_messages_rejected_total") - rejected_before
    # Only the flood is rejected: the fleet's heartbeats and Neutron's own traffic are not.
    assert want_rejected <= rejected <= want_rejected + 50, f"{rejected} rejected ({figures})"
    assert metric_sum(daemon, "rpcdaemon_heartbeats_total") - heartbeats_before >= stats.by_expect[HEARTBEAT]
    assert len(re.findall(r"could not unpack", daemon.log())) == stats.by_expect[UNPACKABLE], daemon.hint()
    assert (rss_after - rss_before) * 1024 < RSS_GROWTH_LIMIT, f"RSS grew {rss_before} -> {rss_after} kB"
    assert (peak_after - rss_before) * 1024 < RSS_GROWTH_LIMIT, f"peak RSS {peak_after} kB, was {rss_before}"
    assert daemon.running
    assert daemon.tracebacks() == [], daemon.hint()
    assert not canary.exists(), "a fuzz message was unpickled"
    injected = [line for line in daemon.log().splitlines() if line.startswith("INJECTED")]
    assert injected == [], f"a host name wrote its own log line: {injected[:3]}"

    # Still judging right: the whole fleet alive, nothing acted on, Neutron's placement untouched.
    daemon.wait_passes(2 * int(neutron.report_interval))
    assert {key: daemon.verdicts().get(key) for key in fleet_keys} == dict.fromkeys(fleet_keys, "alive")
    assert daemon.actions() == [], daemon.hint()
    assert daemon.actions_total() == 0
    assert routers_by_agent(rest, l3.values()) == routers_before
    assert networks_by_agent(rest, dhcp.values()) == networks_before

    # And not deaf: an agent that dies now is judged dead and its routers move as usual.
    crashed = time.monotonic()
    fleet.crash("l3-a")
    doomed = routers_before[l3["l3-a"]]

    def moved() -> bool:
        placement = routers_by_agent(rest, l3.values())
        return not placement[l3["l3-a"]] and doomed <= placement[l3["l3-b"]] | placement[l3["l3-c"]]

    wait_until(moved, neutron.agent_down_time + 15, "the dead agent's routers to move", daemon.hint)
    print(f"fuzz: after the flood, {len(doomed)} routers moved {time.monotonic() - crashed:.1f} s after a crash")
    # The verdict metrics are written when the pass that made the moves ends, just after the moves.
    wait_until(lambda: daemon.verdicts().get((L3_AGENT, fleet.host("l3-a"))) == "dead", 10,
               "the daemon's verdict on the crashed agent to read dead", daemon.hint)
    done = daemon.actions(statuses={"done"})
    assert sorted(a.resource_id for a in done) == sorted(doomed), daemon.hint()
    assert all(f"from {fleet.host('l3-a')} " in a.line for a in done)
    assert daemon.tracebacks() == [], daemon.hint()
