"""A newly registered L3 agent is a failover target; a restarted known one waits out its hold (issue 7).

The real daemon against the real neutron-server, with fake L3 agents heartbeating every 2 s
(agent_down_time 10 s). (a) An agent that registers while the daemon runs, long after its start-up
window, reports for three intervals, then another agent dies: the new agent gets its share. (b) A known
agent is stopped for longer than agent_down_time and restarted (its first report carries start_flag):
it is warming, and the next failover within revive_hold (60 s) gives it nothing.
"""

from __future__ import annotations

import time

import pytest
from tests.e2e.rpcd import Daemons, add_hosts, hosts_of, routers_by_agent, seed_routers
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.poll import wait_until

from rpcdaemon.model import L3_AGENT

pytestmark = pytest.mark.e2e

ROUTERS = 30


def _all_moved(rest: SeedClient, l3: dict[str, str], dying: str) -> dict[str, set[str]] | None:
    placement = routers_by_agent(rest, l3.values())
    if placement[l3[dying]] or sum(len(v) for k, v in placement.items() if k != l3[dying]) < ROUTERS:
        return None
    return placement


def test_an_agent_registered_while_the_daemon_runs_gets_its_share(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c"])
    routers = seed_routers(rest, l3["dying"], ROUTERS, prefix="l3-new-agent")
    daemon = rpcdaemon.start(rpcdaemon.config())
    daemon.wait_ready()
    # Past the start-up window: a first heartbeat now follows a silence the daemon witnessed, which
    # made a new agent look like a revived one (and warm for revive_hold).
    time.sleep(neutron.agent_down_time + 2)
    l3.update(add_hosts(fleet, neutron, ["new"]))
    new_host = fleet.host("new")
    # A new agent is warming only until heard steadily (about a report interval), not for revive_hold (60 s,
    # the default here) as a revived one is: alive well within half of that, however slow the machine.
    revive_hold = 60
    wait_until(lambda: daemon.verdicts().get((L3_AGENT, new_host)) == "alive", revive_hold / 2,
               "the new agent to be judged alive (not warming for revive_hold)", daemon.hint)

    fleet.crash("dying")
    placement = wait_until(lambda: _all_moved(rest, l3, "dying"), neutron.agent_down_time + 20,
                           f"all {ROUTERS} routers to move", daemon.hint)
    counts = {name: len(placement[l3[name]]) for name in ("b", "c", "new")}
    print(f"\nnew agent's share of {ROUTERS} routers: {counts}")
    assert counts["new"] > 0, daemon.hint()
    assert max(counts.values()) - min(counts.values()) <= 2, (counts, daemon.hint())
    assert {rid: len(hosts) for rid, hosts in hosts_of(placement).items()} == dict.fromkeys(routers, 1)
    assert daemon.tracebacks() == []


def test_a_known_agent_restarted_after_down_time_gets_nothing_within_revive_hold(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["dying", "b", "back"])
    routers = seed_routers(rest, l3["dying"], ROUTERS, prefix="l3-restarted")
    daemon = rpcdaemon.start(rpcdaemon.config())
    daemon.wait_ready()
    fleet.crash("back")
    time.sleep(neutron.agent_down_time + 3)  # a silence the daemon witnessed, longer than agent_down_time
    fleet.revive("back")  # restarted by its operator: the first report carries start_flag
    back_host = fleet.host("back")
    wait_until(lambda: daemon.verdicts().get((L3_AGENT, back_host)) == "warming", 3 * neutron.report_interval + 5,
               "the restarted agent to be warming", daemon.hint)
    revived = time.monotonic()

    fleet.crash("dying")
    placement = wait_until(lambda: _all_moved(rest, l3, "dying"), neutron.agent_down_time + 20,
                           f"all {ROUTERS} routers to move", daemon.hint)
    assert time.monotonic() - revived < 60, "the failover came after revive_hold: the test proves nothing"
    print(f"\nrestarted agent's share: {len(placement[l3['back']])} of {ROUTERS}")
    assert placement[l3["back"]] == set(), daemon.hint()
    assert placement[l3["b"]] == set(routers)
    assert daemon.verdicts().get((L3_AGENT, back_host)) == "warming"
    assert daemon.tracebacks() == []
