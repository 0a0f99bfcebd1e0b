"""``rpcdaemon evacuate`` and ``rpcdaemon rebalance`` against the real neutron-server, with a daemon running.

One test, so that one daemon and one fleet serve both commands: a host with 100 routers is evacuated
from a pseudo-terminal (the progress bar is drawn), every router is verified in Neutron, the agent is
admin-down, and the running daemon neither races the moves nor moves anything back; then a node dies (the
daemon fails its routers over), comes back empty, and ``rebalance`` evens the routers out, first bounded
by ``--max-moves``, at ``--rate`` (measured), then to within one. Figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tests.e2e.rpcd import (
    Daemons,
    add_hosts,
    command_env,
    hosts_of,
    routers_by_agent,
    run_in_pty,
    seed_routers,
    wait_alive_in_neutron,
)
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.audit import read_audit
from tests.kit.poll import wait_until
from tests.kit.process import RPCDAEMON, run

from rpcdaemon.model import L3_AGENT

pytestmark = pytest.mark.e2e

ROUTERS = 100


def run_plain(args: list[str], timeout: float) -> tuple[int, str, float]:
    began = time.monotonic()
    done = run([RPCDAEMON, *args], timeout=timeout, env=command_env())
    return done.returncode, done.stdout + done.stderr, time.monotonic() - began


def test_evacuate_100_routers_then_rebalance_onto_a_new_node(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons, tmp_path: Path
) -> None:
    l3 = add_hosts(fleet, neutron, ["drain", "b", "c"])
    routers = seed_routers(rest, l3["drain"], ROUTERS, prefix="evacuate")
    audit = tmp_path / "audit.log"
    # The daemon's and the commands' audit trail; a revived agent is a target 3 s after its return.
    config = rpcdaemon.config(daemon={"audit_log": audit}, agent={"revive_hold": 3})
    config.chmod(0o600)  # it holds the broker's credentials: as an operator keeps it
    daemon = rpcdaemon.start(config)
    daemon.wait_ready()
    drain_host = rest.agent(l3["drain"])["host"]

    # -- evacuate, from a terminal --------------------------------------------------------------------
    code, shown, took = run_in_pty(["-c", str(config), "evacuate", drain_host], timeout=120)
    print(f"\nevacuate: {ROUTERS} routers in {took:.1f} s (whole command, from a terminal)")
    assert code == 0, shown
    assert "\x1b[" in shown, shown  # drawn with terminal control sequences: the progress bar
    assert f"{ROUTERS}/{ROUTERS}" in shown, shown  # and finished
    assert f"{drain_host} is admin-down: nothing will be moved back to it" in shown, shown
    assert f"evacuate {drain_host}: {ROUTERS} routers moved in" in shown, shown
    assert rest.agent(l3["drain"])["admin_state_up"] is False
    placement = routers_by_agent(rest, l3.values())
    assert placement[l3["drain"]] == set()
    assert {rid: len(hosts) for rid, hosts in hosts_of(placement).items()} == dict.fromkeys(routers, 1)
    split = sorted(len(placement[l3[n]]) for n in ("b", "c"))
    print(f"evacuate: split {split}")
    assert split[1] - split[0] <= 1, split
    # The daemon hears each router between its unbind and its bind as hosted by no agent: it must not race
    # the evacuation (unhosted_grace).
    assert daemon.actions() == [], daemon.hint()

    # -- the running daemon moves nothing back --------------------------------------------------------
    daemon.wait_passes(5)  # a few check passes, with the agent alive and admin-down
    assert routers_by_agent(rest, [l3["drain"]])[l3["drain"]] == set()
    assert daemon.actions() == [], daemon.hint()  # nothing moved back, nothing moved at all
    assert daemon.running
    assert daemon.tracebacks() == []

    # -- c dies (the daemon moves its routers to b), comes back empty: rebalance, bounded and rate-limited ---
    fleet.crash("c")

    def failed_over() -> bool:
        return not routers_by_agent(rest, [l3["c"]])[l3["c"]] and len(daemon.actions(statuses=["done"])) >= 50

    wait_until(failed_over, neutron.agent_down_time + 30, "the daemon to move c's routers", daemon.hint)
    daemon.wait_passes(1)  # its last lines are in the log
    failover = daemon.actions()
    moved_off_c = {a.resource_id for a in failover if a.status == "done"}
    assert len(moved_off_c) == ROUTERS // 2
    assert moved_off_c <= routers_by_agent(rest, [l3["b"]])[l3["b"]]  # the only live admin-up target
    fleet.revive("c")
    wait_alive_in_neutron(rest, [l3["c"]], True, timeout=30)
    # While the daemon holds the revived agent back (revive_hold), rebalance leaves it alone too
    # (tests/unit/test_evacuate_rebalance_cmd.py): wait until the daemon says it is a target.

    def judged_alive() -> bool:
        # The daemon's own verdict (its metrics), then in its live view (what rebalance reads), not Neutron's:
        # status falls back to Neutron's alive flag for an agent the view does not show yet.
        if daemon.verdicts().get((L3_AGENT, rest.agent(l3["c"])["host"])) != "alive":
            return False
        code, text, _ = run_plain(["-c", str(config), "status", "-f", "json"], 60)
        if code != 0:
            return False
        rows = [r for r in json.loads(text)["agents"] if r["id"] == l3["c"]]
        return bool(rows) and rows[0]["verdict"] == "alive" and rows[0]["heard"] is not None

    wait_until(judged_alive, 30, "the daemon to judge the revived agent a target", daemon.hint)
    limit, rate = 20, 4.0
    code, text, took = run_plain(["-c", str(config), "rebalance", "--max-moves", str(limit), "--rate", str(rate)],
                                 timeout=120)
    print(f"rebalance: {limit} routers in {took:.1f} s (--rate {rate:g}) onto the revived node")
    assert code == 0, text
    assert text.count(": done in ") == limit, text  # one plain line per move
    placement = routers_by_agent(rest, l3.values())
    assert len(placement[l3["c"]]) == limit
    assert placement[l3["drain"]] == set()  # admin-down: never a target
    assert sum(len(v) for v in placement.values()) == ROUTERS
    # Batches of 4 moves, one a second: 20 moves start over at least 4 s.
    assert took >= (limit - rate) / rate, text

    # -- and to within one ----------------------------------------------------------------------------
    code, text, took = run_plain(["-c", str(config), "rebalance", "--rate", "50"], timeout=120)
    assert code == 0, text
    placement = routers_by_agent(rest, l3.values())
    counts = sorted(len(placement[l3[n]]) for n in ("b", "c"))
    print(f"rebalance to within one: {counts} in {took:.1f} s")
    assert counts[-1] - counts[0] <= 1, text
    assert {rid: len(hosts) for rid, hosts in hosts_of(placement).items()} == dict.fromkeys(routers, 1)
    daemon.wait_passes(2)
    assert daemon.actions() == failover, daemon.hint()  # the daemon moved nothing but the failover
    assert daemon.tracebacks() == []

    # -- the audit trail: who drained what, each move from/to host and id, every line per the schema ------
    lines = read_audit(audit)  # every line checked against the schema
    commands = [x for x in lines if x["event"] == "command"]
    assert [(x["command"], x["phase"]) for x in commands] == [
        ("evacuate", "start"), ("evacuate", "admin-down"), ("evacuate", "end"),
        ("rebalance", "start"), ("rebalance", "end"), ("rebalance", "start"), ("rebalance", "end")]
    assert commands[1]["agent_id"] == l3["drain"]
    assert commands[2]["exit_status"] == 0
    evacuated = [x for x in lines if x["event"] == "action" and x.get("command") == "evacuate"]
    assert {x["resource_id"] for x in evacuated if x["status"] == "done"} == set(routers)
    assert {x["from_id"] for x in evacuated} == {l3["drain"]}
    assert {x["to_host"] for x in evacuated} <= {rest.agent(l3[n])["host"] for n in ("b", "c")}
    assert all(x["seconds"] >= 0 for x in evacuated)
