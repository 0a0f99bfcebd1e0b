"""The operator's commands against the real neutron-server and a fleet heartbeating over the real bus.

``status`` in every format with no daemon and with one running (its live view), ``check``'s exit codes as
the state changes, and ``pause`` honoured by the running daemon while an agent dies (zero moves), then
``resume`` moving the routers; the audit trail tells who paused and who resumed, each line valid against
the shipped schema. The commands are the installed ``rpcdaemon`` run as an operator would.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.rpcd import Daemons, add_hosts, routers_by_agent, run_command, run_in_pty, seed_routers
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.audit import read_audit
from tests.kit.poll import wait_until

pytestmark = pytest.mark.e2e

ROUTERS = 6


def command(config: Path, *args: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
    return run_command(config, *args, user=user)


def status_json(config: Path) -> dict[str, Any]:
    done = command(config, "status", "-f", "json")
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def ours(body: dict[str, Any], hosts: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The status rows of this test's agents, by short host name."""
    by_id = {aid: name for name, aid in hosts.items()}
    return {by_id[row["id"]]: row for row in body["agents"] if row["id"] in by_id}


def test_status_check_pause_and_resume(neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons,
                                       tmp_path: Path) -> None:
    l3 = add_hosts(fleet, neutron, ["a", "b", "c"])
    routers = seed_routers(rest, l3["a"], ROUTERS, prefix="cmd")
    audit = tmp_path / "audit.log"
    config = rpcdaemon.config(daemon={"audit_log": audit})

    # -- no daemon: Neutron's word, and said so -------------------------------------------------------
    body = status_json(config)
    rows = ours(body, l3)
    assert set(rows) == {"a", "b", "c"}
    assert rows["a"]["hosted"] == ROUTERS
    assert rows["a"]["verdict"] == "alive"
    assert rows["a"]["why"].startswith("Neutron's verdict")
    assert body["daemon"]["active_instance"] is None
    assert body["daemon"]["instances"] == []
    table = command(config, "status")
    assert table.returncode == 0, table.stderr
    assert "no instance is acting" in table.stdout
    assert fleet.host("a") in table.stdout
    values = command(config, "status", "-f", "value", "-c", "host", "-c", "hosted")
    assert f"{fleet.host('a')} {ROUTERS}" in values.stdout.splitlines()
    as_yaml = yaml.safe_load(command(config, "status", "-f", "yaml", "-c", "host", "-c", "verdict").stdout)
    assert {"host": fleet.host("b"), "verdict": "alive"} in as_yaml["agents"]
    assert command(config, "status", "-c", "nonsense").returncode == 2
    ok = command(config, "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK - L3Agent: ok")

    # -- a daemon: its live view ----------------------------------------------------------------------
    daemon = rpcdaemon.start(config)
    daemon.wait_ready()

    def live() -> dict[str, Any] | None:
        # Published from the first check on: the verdicts say "unknown" until the API has answered once.
        got = status_json(config)
        judged = {r["verdict"] for r in ours(got, l3).values()}
        return got if got["daemon"]["active_instance"] and judged == {"alive"} else None

    body = wait_until(live, 30, "the daemon's live view", daemon.hint)
    rows = ours(body, l3)
    assert {r["verdict"] for r in rows.values()} == {"alive"}
    assert rows["b"]["heard"] < neutron.agent_down_time
    [me] = body["daemon"]["instances"]
    assert me["role"] == "active"
    assert me["instance"] == body["daemon"]["active_instance"]
    shown_table = command(config, "status").stdout
    assert "live view of the active instance" in shown_table
    assert f"instances: {me['instance']} active (up " in shown_table
    assert "no standby instance" in shown_table
    code, shown, _ = run_in_pty(["-c", str(config), "status", "--watch", "--interval", "0.5"], timeout=60,
                                interrupt_after=4)  # Ctrl-C after a few redraws
    assert code == 0, shown
    assert shown.count("\x1b[1A") >= 3, shown  # redrawn in place (cursor up), not printed again below
    assert fleet.host("a") in shown
    assert "alive" in shown
    assert "Traceback" not in shown

    # -- pause, then an agent dies: nothing moves -------------------------------------------------------
    paused = command(config, "pause", "--reason", "e2e maintenance", "--for", "30m")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert "confirmed by the active instance" in paused.stdout
    body = status_json(config)
    assert body["daemon"]["paused"]["by"].startswith("alice@")
    assert "PAUSED by alice@" in command(config, "status").stdout
    fleet.crash("a")
    crashed = time.monotonic()

    def dead() -> dict[str, Any] | None:
        got = status_json(config)
        return got if ours(got, l3)["a"]["verdict"] == "dead" else None

    wait_until(dead, neutron.agent_down_time + 20, "the daemon to judge a dead", daemon.hint)
    daemon.wait_passes(4)  # several checks of a daemon that would have moved them by now
    assert routers_by_agent(rest, [l3["a"]])[l3["a"]] == set(routers), "routers moved while paused"
    work = command(config, "check")
    assert work.returncode == 2, work.stdout + work.stderr
    assert work.stdout.startswith(f"WORK - L3Agent: {ROUTERS} moves needed off {fleet.host('a')}")
    assert "[daemon paused]" in work.stdout
    plan = json.loads(command(config, "check", "-f", "json").stdout)
    assert plan["exit_status"] == 2
    assert {a["resource_id"] for a in plan["plugins"]["L3Agent"]["actions"]} == set(routers)
    assert daemon.actions() == []

    # -- resume: they move ------------------------------------------------------------------------------
    resumed = command(config, "resume", user="bob")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    def moved() -> bool:
        return not routers_by_agent(rest, [l3["a"]])[l3["a"]]

    wait_until(moved, 30, "the routers to move after resume", daemon.hint)
    print(f"\npaused {time.monotonic() - crashed:.1f}s with a dead agent and zero moves; moved after resume")
    wait_until(lambda: command(config, "check").returncode == 0, 30, "check to say OK again", daemon.hint)
    assert command(config, "resume").stdout.startswith("not paused")

    lines = read_audit(audit)  # every line checked against the schema
    [pause] = [x for x in lines if x["event"] == "pause"]
    assert pause["by"].startswith("alice@")
    assert pause["reason"] == "e2e maintenance"
    [resume] = [x for x in lines if x["event"] == "resume"]
    assert resume["by"].startswith("bob@")
    assert resume["how"] == "command"
    moves = [x for x in lines if x["event"] == "action" and x["status"] == "done"]
    assert {m["resource_id"] for m in moves} == set(routers)
    assert all(x["ts"] > pause["ts"] for x in moves)
    assert all(x["ts"] >= resume["ts"] for x in moves)
