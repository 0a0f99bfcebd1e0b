"""``rpcdaemon -d`` with the Dump plugin on the real Neutron bus: readable lines, filters, garbage.

Two daemons run side by side on the harness's broker while the fleet heartbeats: one dumps every
message, one only the report_state of one host (``--filter``). Garbage published on the bus must be
shown as such, and must neither stop nor crash either of them.
"""

from __future__ import annotations

import re
import uuid

import pytest
from tests.e2e.rpcd import Daemons, RpcDaemon, broker_url
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.kit.poll import wait_until

from rpcdaemon.broker.connection import publish_raw

pytestmark = pytest.mark.e2e

GARBAGE = [
    b"\xff\xfe not UTF-8",
    b"{not json",
    b'{"oslo.version": "2.0", "oslo.message": "{\\"method\\": \\"report_state\\", \\"args\\": 42"}',
    b'{"oslo.version": "2.0", "oslo.message": "{\\"method\\": \\"report_state\\", \\"args\\": {}}"}',
    b"[" * 5000 + b"]" * 5000,
]


def heartbeat_lines(daemon: RpcDaemon, host: str) -> list[str]:
    return [line for line in daemon.out().splitlines() if f"report_state host={host} " in line]


def test_dump_prints_the_fleets_heartbeats_filters_them_and_survives_garbage(
    neutron: NeutronServer, fleet: Fleet, rpcdaemon: Daemons
) -> None:
    a = fleet.add_host("a", ovs=False)
    b = fleet.add_host("b", dhcp=False, ovs=False)
    fleet.wait_registered(neutron.url)
    everything = rpcdaemon.start(rpcdaemon.config("dump", plugins=["Dump"]))
    only_a = rpcdaemon.start(rpcdaemon.config("dump-a", plugins=["Dump"]),
                             "--filter", f"method == 'report_state' && host == '{a}'")

    def dumped(daemon: RpcDaemon, host: str, count: int) -> list[str] | None:
        lines = heartbeat_lines(daemon, host)
        return lines if len(lines) >= count else None

    wait_until(lambda: dumped(everything, a, 4) and dumped(everything, b, 2), 15, "heartbeats of both hosts",
               everything.hint)
    # time, exchange/routing key, method, host and agent type, then the decoded body on one line
    line = heartbeat_lines(everything, b)[0]
    assert re.match(rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{3}} neutron/q-reports-plugin report_state "
                    rf'host={b} type="L3 agent" {{', line), line
    assert '"agent_state":{"agent_state":{' in line  # the inner oslo.message decoded, not a JSON string
    assert '"_context_*":"<' in line
    assert any('type="DHCP agent"' in x for x in heartbeat_lines(everything, a))

    tag = uuid.uuid4().hex[:8]
    for i, body in enumerate(GARBAGE):
        publish_raw(broker_url(neutron), "neutron", f"junk.{tag}.{i}", body)
    junk = wait_until(lambda: [x for x in everything.out().splitlines() if f"junk.{tag}." in x]
                      if everything.out().count(f"junk.{tag}.") == len(GARBAGE) else None,
                      10, "a line for every garbage message", everything.hint)
    assert "<undecodable: not UTF-8" in junk[0]
    seen = len(heartbeat_lines(everything, a))
    wait_until(lambda: len(heartbeat_lines(everything, a)) > seen, 10, "heartbeats after the garbage",
               everything.hint)

    filtered = wait_until(lambda: dumped(only_a, a, 3), 10, "host a's heartbeats, filtered", only_a.hint)
    assert only_a.out().splitlines() == filtered  # nothing else: no b, no garbage
    assert any('type="L3 agent"' in x for x in filtered)
    assert any('type="DHCP agent"' in x for x in filtered)
    for daemon in (everything, only_a):
        assert daemon.running, daemon.hint()
        assert daemon.tracebacks() == [], daemon.hint()
        assert daemon.stop() == 0
