"""The real daemon moves routers off a dead L3 agent of a real neutron-server.

Fake L3 agents heartbeat over the real RabbitMQ and answer Neutron's RPC; a crash stops both, as a
dead network node would. The daemon is the installed ``rpcdaemon`` command, judging liveness from the
bus and acting through the Neutron API. Timings are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.e2e.rpcd import Daemons, add_hosts, hosts_of, routers_by_agent, seed_routers, wait_alive_in_neutron
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.poll import wait_until

pytestmark = pytest.mark.e2e

ROUTERS = 50


def test_routers_of_a_dead_agent_move_to_live_agents_by_load(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons, tmp_path: Path
) -> None:
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c", "d"])
    routers = seed_routers(rest, l3["dying"], ROUTERS, prefix="l3-failover")
    live = [l3[name] for name in ("b", "c", "d")]
    # The fence hook: a command run with the dead agent's host and id before its routers move.
    fenced = tmp_path / "fenced"
    fence = f"sh -c 'echo \"$1 $2\" >> {fenced}' fence {{host}} {{agent_id}}"
    daemon = rpcdaemon.start(rpcdaemon.config(l3={"fence_command": fence}))
    daemon.wait_ready()

    crashed = time.monotonic()  # heartbeats stop now; crash() returns once its RPC server is down
    fleet.crash("dying")

    def all_moved() -> dict[str, set[str]] | None:
        placement = routers_by_agent(rest, l3.values())
        if placement[l3["dying"]] or sum(len(placement[aid]) for aid in live) < ROUTERS:
            return None
        return placement

    placement = wait_until(all_moved, neutron.agent_down_time + 15, f"all {ROUTERS} routers to move",
                           daemon.hint)
    took = time.monotonic() - crashed
    print(f"\nL3 failover: {ROUTERS} routers moved {took:.1f} s after the crash "
          f"(agent_down_time {neutron.agent_down_time} s)")

    assert took < neutron.agent_down_time + 15
    # Spread by load: the three live agents started empty, so 50 = 17 + 17 + 16.
    assert sorted(len(placement[aid]) for aid in live) == [16, 17, 17], daemon.hint()
    assert {rid: len(hosts) for rid, hosts in hosts_of(placement).items()} == dict.fromkeys(routers, 1)
    # Not too early either: the agent must have been silent for agent_down_time first.
    assert took > neutron.agent_down_time - 2 * neutron.report_interval
    moves = daemon.actions()
    assert [(a.kind, a.status) for a in moves] == [("move-router", "done")] * ROUTERS, daemon.hint()
    assert {a.resource_id for a in moves} == set(routers)
    # Action lines are logged as each action ends; the metrics follow when the pass (with its
    # read-back) is over.
    wait_until(lambda: daemon.actions_total(plugin="L3Agent", kind="move-router", status="done") == ROUTERS,
               10, "the metrics to count the moves", daemon.hint)
    # Fenced once, with the dead agent's host and id, before the first move.
    dying_host = rest.agent(l3["dying"])["host"]
    assert fenced.read_text() == f"{dying_host} {l3['dying']}\n", daemon.hint()
    lines = daemon.log().splitlines()
    said = f"fenced {dying_host} ({l3['dying']}): sh exit status 0"
    fence_at = next(i for i, line in enumerate(lines) if said in line)
    assert fence_at < lines.index(moves[0].line), daemon.hint()
    assert daemon.metrics()["rpcdaemon_fence_runs_total"] == [({"plugin": "L3Agent", "result": "ok"}, 1.0)]
    assert daemon.tracebacks() == []


def test_killed_in_the_middle_of_a_failover_a_restarted_daemon_converges(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c"])
    routers = seed_routers(rest, l3["dying"], ROUTERS, prefix="l3-kill")
    # One worker: the 50 moves take a few seconds, so the kill lands in the middle of the batch.
    config = rpcdaemon.config(l3={"workers": 1})
    first = rpcdaemon.start(config)
    first.wait_ready()
    fleet.crash("dying")
    wait_alive_in_neutron(rest, [l3["dying"]], False, timeout=neutron.agent_down_time + 5)

    # The executor logs each action when its batch is done, so watch Neutron instead of the log.
    wait_until(lambda: 0 < len(rest.routers_on_agent(l3["dying"])) < ROUTERS - 5, 20, "the first moves",
               first.hint, interval=0.05)
    first.kill()
    at_kill = routers_by_agent(rest, l3.values())
    stranded = at_kill[l3["dying"]] | (set(routers) - set(hosts_of(at_kill)))  # still on it, or on nobody
    print(f"\nSIGKILL with {ROUTERS - len(at_kill[l3['dying']])} of {ROUTERS} routers moved, "
          f"{len(stranded)} left to do")
    assert 0 < len(stranded) < ROUTERS, first.hint()

    second = rpcdaemon.start(config)

    def converged() -> dict[str, set[str]] | None:
        placement = routers_by_agent(rest, l3.values())
        hosts = hosts_of(placement)
        if placement[l3["dying"]] or any(len(hosts.get(rid, ())) != 1 for rid in routers):
            return None
        return placement

    began = time.monotonic()
    placement = wait_until(converged, 30, "every router on exactly one live agent", second.hint)
    print(f"restarted daemon converged in {time.monotonic() - began:.1f} s")
    second.wait_log(r"L3Agent pass: \d+ actions", timeout=10)  # action lines come when the batch is done
    assert not placement[l3["dying"]]
    assert len(placement[l3["b"]]) + len(placement[l3["c"]]) == ROUTERS
    assert abs(len(placement[l3["b"]]) - len(placement[l3["c"]])) <= 1, second.hint()
    # The restarted daemon did exactly the rest: the routers still on the dead agent, and any caught
    # between unbind and bind (hosted by nobody).
    assert {a.resource_id for a in second.actions(statuses={"done"})} == stranded, second.hint()
    assert second.running
    assert second.tracebacks() == []
