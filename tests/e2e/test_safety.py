"""The real daemon's safety valves against a real neutron-server: when in doubt, it moves nothing.

Half the L3 agents dying at once trips the mass-failure brake; a Neutron API outage is survived and
caught up on; a flapping agent loses its routers once and gets nothing back while it warms up; a dry
run changes nothing; and a RabbitMQ outage longer than agent_down_time moves nothing at all, after
which failover works as before. The RabbitMQ test restarts the machine's broker, so it runs last of all
(the e2e conftest orders it so), with three instances running as on three controllers.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from tests.e2e.rpcd import (
    ActionLine,
    Daemons,
    RpcDaemon,
    add_hosts,
    routers_by_agent,
    run_command,
    seed_routers,
    wait_alive_in_neutron,
)
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.metrics import says_active
from tests.kit.poll import wait_until

from rpcdaemon.model import L3_AGENT

pytestmark = pytest.mark.e2e


def placement_of(rest: SeedClient, l3: dict[str, str]) -> dict[str, set[str]]:
    """Short host name -> routers Neutron binds to its L3 agent."""
    by_id = routers_by_agent(rest, l3.values())
    return {name: by_id[aid] for name, aid in l3.items()}


def wait_moved(rest: SeedClient, l3: dict[str, str], source: str, routers: list[str], daemon: RpcDaemon,
               timeout: float) -> dict[str, set[str]]:
    """Until none of ``routers`` is on ``source`` and each is on exactly one other agent."""

    def moved() -> dict[str, set[str]] | None:
        placement = placement_of(rest, l3)
        elsewhere = [rid for name, rids in placement.items() if name != source for rid in rids]
        if placement[source] & set(routers) or sorted(r for r in elsewhere if r in routers) != sorted(routers):
            return None
        return placement

    return wait_until(moved, timeout, f"{len(routers)} routers to leave {source}", daemon.hint)


def crash_together(fleet: Fleet, names: list[str]) -> None:
    """Crash hosts whose last heartbeats went out in the same instant, as if they died together.

    Unmuting makes each report at once (that aligns their phases); muting stops the next reports at
    once, whereas crash() also stops RPC servers, which takes a while per host."""
    for name in names:
        fleet.mute(name)
    for name in names:
        fleet.unmute(name)
    time.sleep(0.5)  # those reports are answered; the next ones are report_interval away
    for name in names:
        fleet.mute(name)
    for name in names:
        fleet.crash(name)


def test_half_the_agents_dying_at_once_trips_the_brake_and_nothing_moves(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["a", "b", "c", "d"])
    for name in ("a", "b"):
        seed_routers(rest, l3[name], 5, prefix=f"brake-{name}")
    before = placement_of(rest, l3)
    daemon = rpcdaemon.start(rpcdaemon.config())
    daemon.wait_ready()

    crash_together(fleet, ["a", "b"])  # the next test: their silences start seconds apart
    wait_alive_in_neutron(rest, [l3["a"], l3["b"]], False, timeout=neutron.agent_down_time + 5)
    daemon.wait_log(r"ERROR .*brake", timeout=10)
    assert daemon.metrics()["rpcdaemon_brake_engaged"] == [({"plugin": "L3Agent"}, 1.0)]
    daemon.wait_passes(3)  # three more checks while both are dead
    assert daemon.actions() == [], daemon.hint()
    assert placement_of(rest, l3) == before

    fleet.revive("a")
    fleet.revive("b")
    wait_alive_in_neutron(rest, [l3["a"], l3["b"]], True, timeout=10)
    daemon.wait_log(r"brake released", timeout=10)
    daemon.wait_passes(3)
    assert daemon.actions() == [], daemon.hint()
    assert placement_of(rest, l3) == before
    assert daemon.metrics()["rpcdaemon_brake_engaged"] == [({"plugin": "L3Agent"}, 0.0)]
    assert daemon.actions_total() == 0


def test_the_brake_holds_when_the_silences_start_seconds_apart(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["a", "b", "c", "d"])
    for name in ("a", "b"):
        seed_routers(rest, l3[name], 5, prefix=f"brake-{name}")
    before = placement_of(rest, l3)
    daemon = rpcdaemon.start(rpcdaemon.config())
    daemon.wait_ready()

    fleet.crash("a")
    # Seconds apart, as hosts losing one switch do. The brake sees b as failing once it has been
    # silent half of agent_down_time; when a is judged dead, b has been silent at least
    # down_time - report_interval - (this gap) = 7 s against 5 s: 2 s of margin for a loaded machine.
    time.sleep(0.5 * neutron.report_interval)
    fleet.crash("b")
    wait_alive_in_neutron(rest, [l3["a"], l3["b"]], False, timeout=neutron.agent_down_time + 5)
    daemon.wait_log(r"ERROR .*brake", timeout=10)
    daemon.wait_passes(2)
    assert daemon.actions() == [], daemon.hint()
    assert placement_of(rest, l3) == before


def test_neutron_api_outage_while_an_agent_dies_is_survived_and_caught_up(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c"])
    routers = seed_routers(rest, l3["dying"], 10, prefix="api-outage")
    daemon = rpcdaemon.start(rpcdaemon.config())
    daemon.wait_ready()

    neutron.stop_api()
    crashed = time.monotonic()
    fleet.crash("dying")
    # Dead by every measure meanwhile; the daemon finds out when it asks Neutron for a second opinion.
    daemon.wait_log(r"WARNING .*Neutron API call failed", timeout=neutron.agent_down_time + 10)
    wait_until(lambda: time.monotonic() - crashed > neutron.agent_down_time + 2, 30, "the outage to last")
    assert daemon.running, daemon.hint()
    assert daemon.actions() == []

    neutron.start_api()
    back = time.monotonic()
    wait_moved(rest, l3, "dying", routers, daemon, timeout=neutron.agent_down_time + 10)
    print(f"\nAPI outage: {len(routers)} routers moved {time.monotonic() - back:.1f} s after the API came back "
          f"({back - crashed:.0f} s after the crash)")
    assert daemon.running
    assert daemon.tracebacks() == [], daemon.hint()
    assert daemon.actions(statuses={"failed"}) == []


def test_a_flapping_agent_loses_its_routers_once_and_gets_nothing_while_warming(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    revive_hold = 60
    l3 = add_hosts(fleet, neutron, ["flappy", "b", "c", "d"])
    own = seed_routers(rest, l3["flappy"], 6, prefix="flap-own")
    daemon = rpcdaemon.start(rpcdaemon.config(l3={"revive_hold": revive_hold}))
    daemon.wait_ready()

    fleet.crash("flappy")  # down long enough to be dead once: its routers move
    wait_moved(rest, l3, "flappy", own, daemon, timeout=neutron.agent_down_time + 15)
    fleet.revive("flappy")
    back = time.monotonic()
    # Another agent dies while flappy flaps (up 6 s, down 6 s): flappy is the emptiest agent, yet
    # it must get none of c's routers until it has stayed up for revive_hold.
    seed_routers(rest, l3["c"], 6, prefix="flap-theirs")
    theirs = sorted(rest.routers_on_agent(l3["c"]))  # its own and those it got from flappy
    c_crashed = time.monotonic()
    fleet.crash("c")
    for _ in range(2):
        time.sleep(6)
        fleet.crash("flappy")
        time.sleep(6)
        fleet.revive("flappy")
    placement = wait_moved(rest, l3, "c", theirs, daemon, timeout=neutron.agent_down_time + 15)
    print(f"\nflapping: flappy up and down for {time.monotonic() - back:.0f} s of its {revive_hold} s hold, "
          f"c dead since {time.monotonic() - c_crashed:.0f} s: {len(daemon.actions())} moves in all")
    assert time.monotonic() - back < revive_hold

    assert placement["flappy"] == set(), daemon.hint()
    moves = daemon.actions(statuses={"done"})
    # Each router moved once off each agent that died under it, never because of the flapping.
    assert sorted(a.resource_id for a in moves if f"from {fleet.host('flappy')} " in a.line) == sorted(own)
    assert sorted(a.resource_id for a in moves if f"from {fleet.host('c')} " in a.line) == theirs
    assert len(moves) == len(own) + len(theirs), daemon.hint()
    assert not any(f"to {fleet.host('flappy')} " in a.line for a in daemon.actions()), daemon.hint()


def test_dry_run_logs_the_plan_and_changes_nothing(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c"])
    routers = seed_routers(rest, l3["dying"], 10, prefix="dry-run")
    before = placement_of(rest, l3)
    daemon = rpcdaemon.start(rpcdaemon.config(), "--dry-run")
    daemon.wait_ready()
    assert "DRY RUN" in daemon.log()

    fleet.crash("dying")

    def whole_plan() -> list[ActionLine] | None:
        planned = daemon.actions()
        return planned if {a.resource_id for a in planned} == set(routers) else None

    planned = wait_until(whole_plan, neutron.agent_down_time + 15, "the whole plan in the log", daemon.hint)
    daemon.wait_passes(2)  # two more checks: still nothing is changed
    assert {a.kind for a in planned} == {"move-router"}
    assert all(a.status == "dry-run" for a in daemon.actions())
    assert len(daemon.actions()) == len(routers), "a dry run says each planned action once"
    assert all(f"from {fleet.host('dying')} " in a.line for a in planned)
    assert placement_of(rest, l3) == before
    assert daemon.actions_total(status="dry-run") >= len(routers)
    assert daemon.actions_total(status="done") == 0


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.disruptive
def test_a_rabbitmq_outage_longer_than_agent_down_time_moves_nothing(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    """With three instances running, as on three controllers: zero moves by any of them, exactly one
    active afterwards, and that one handles the next real failure."""
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c", "d"])
    for name in l3:
        seed_routers(rest, l3[name], 4, prefix=f"broker-{name}")
    before = placement_of(rest, l3)
    trio = [rpcdaemon.start(rpcdaemon.config(name, coordination={"group": rpcdaemon.group}), name=name)
            for name in ("bo-1", "bo-2", "bo-3")]
    for daemon in trio:
        daemon.wait_ready()
    hosts = {(L3_AGENT, fleet.host(name)) for name in l3}
    for daemon in trio:
        wait_until(lambda d=daemon: all(d.verdicts().get(key) == "alive" for key in hosts), 10,  # type: ignore[misc]
                   "every instance to hear all")
    assert sum(says_active(d.metrics()) for d in trio) == 1

    outage = neutron.agent_down_time + 2
    try:
        rabbitmqctl("stop_app")
        stopped = time.monotonic()
        for daemon in trio:
            wait_until(lambda d=daemon: d.metrics()["rpcdaemon_bus_connected"] == [({}, 0.0)], 10,  # type: ignore[misc]
                       "every instance to notice")
        wait_until(lambda: time.monotonic() - stopped > outage, outage + 5, "the outage to last")
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    restarted = time.monotonic()

    # Neutron's processes, the fake agents and the daemons reconnect by themselves.
    wait_alive_in_neutron(rest, l3.values(), True, timeout=90)
    for daemon in trio:
        wait_until(lambda d=daemon: all(d.verdicts().get(key) == "alive" for key in hosts), 30,  # type: ignore[misc]
                   "every instance to hear every agent again", daemon.hint)
    wait_until(lambda: sum(says_active(d.metrics()) for d in trio) == 1, 20, "exactly one active instance again")
    recovered = time.monotonic() - restarted
    # Several more checks of the active instance after the recovery (a standby makes none).
    next(d for d in trio if says_active(d.metrics())).wait_passes(int(neutron.agent_down_time / 2))
    moves = [a for d in trio for a in d.actions()]
    print(f"\nbroker outage of {outage} s, three instances: everything back {recovered:.1f} s after start_app, "
          f"{len(moves)} moves")
    assert moves == [], "".join(d.hint() for d in trio)
    assert sum(d.actions_total() for d in trio) == 0
    assert sum(says_active(d.metrics()) for d in trio) == 1
    assert placement_of(rest, l3) == before
    # The roll call came back with the broker: `status` lists all three, one active.
    shown = run_command(trio[0].config, "status", "-f", "json")
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)["daemon"]["instances"]
    assert sorted(i["role"] for i in listed) == ["active", "standby", "standby"], listed

    # And then the ordinary service: a real failure is handled as usual. (Stopping the fake agent's
    # RPC server can take seconds after a broker restart; its heartbeats stop at once.)
    active = next(d for d in trio if says_active(d.metrics()))
    crashed = time.monotonic()
    fleet.crash("dying")
    wait_moved(rest, l3, "dying", sorted(before["dying"]), active, timeout=neutron.agent_down_time + 15)
    print(f"after the outage: {len(before['dying'])} routers moved {time.monotonic() - crashed:.1f} s after a crash")
    for daemon in trio:
        assert daemon.tracebacks() == [], daemon.hint()
        if daemon is not active:
            assert daemon.actions() == [], daemon.hint()
