"""``rpcdaemon evacuate`` and ``rpcdaemon rebalance`` against the real neutron-server, with a daemon running.

One test, so that one daemon and one fleet serve both commands: a host with 100 routers is evacuated
from a pseudo-terminal (the progress bar is drawn), every router is verified in Neutron, the agent is
admin-down, and the running daemon moves nothing back over a few check cycles; then an empty node joins
and ``rebalance`` evens the routers out, first bounded by ``--max-moves``, at ``--rate`` (measured),
then to within one. Figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
from tests.e2e.rpcd import RPCDAEMON, Daemons, add_hosts, hosts_of, routers_by_agent, seed_routers
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient

from rpcdaemon.audit import SCHEMA_FILE

pytestmark = pytest.mark.e2e
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))

ROUTERS = 100


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)  # the command runs as operators run it
    env.update(TERM="xterm-256color", COLUMNS="100")
    env.pop("NO_COLOR", None)
    return env


def run_in_pty(args: list[str], timeout: float) -> tuple[int, str, float]:
    """Run ``rpcdaemon ARGS`` with a pseudo-terminal as its stdout and stderr: (status, output, seconds)."""
    master, slave = pty.openpty()
    began = time.monotonic()
    proc = subprocess.Popen([str(RPCDAEMON), *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=command_env(), close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = began + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace"), time.monotonic() - began


def run_plain(args: list[str], timeout: float) -> tuple[int, str, float]:
    began = time.monotonic()
    done = subprocess.run([str(RPCDAEMON), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=command_env(), timeout=timeout, check=False)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - began


def test_evacuate_100_routers_then_rebalance_onto_a_new_node(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons, tmp_path: Path
) -> None:
    l3 = add_hosts(fleet, neutron, ["drain", "b", "c"])
    routers = seed_routers(rest, l3["drain"], ROUTERS, prefix="evacuate")
    audit = tmp_path / "audit.log"
    config = rpcdaemon.config(daemon={"audit_log": audit})  # the daemon's and the commands' audit trail
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
    time.sleep(5)  # check_interval = 1: a few check cycles, with the agent alive and admin-down
    assert routers_by_agent(rest, [l3["drain"]])[l3["drain"]] == set()
    assert daemon.actions() == [], daemon.hint()  # nothing moved back, nothing moved at all
    assert daemon.running
    assert daemon.tracebacks() == []

    # -- a new, empty node: rebalance, bounded and rate-limited (plain output) --------------------------
    l3.update(add_hosts(fleet, neutron, ["d"]))
    limit, rate = 20, 4.0
    code, text, took = run_plain(["-c", str(config), "rebalance", "--max-moves", str(limit), "--rate", str(rate)],
                                 timeout=120)
    print(f"rebalance: {limit} routers in {took:.1f} s (--rate {rate:g})")
    assert code == 0, text
    assert text.count(": done in ") == limit, text  # one plain line per move
    placement = routers_by_agent(rest, l3.values())
    assert len(placement[l3["d"]]) == limit
    assert placement[l3["drain"]] == set()  # admin-down: never a target
    assert sum(len(v) for v in placement.values()) == ROUTERS
    # Batches of 4 moves, one a second: 20 moves start over at least 4 s.
    assert took >= (limit - rate) / rate, text

    # -- and to within one ----------------------------------------------------------------------------
    code, text, took = run_plain(["-c", str(config), "rebalance", "--rate", "50"], timeout=120)
    assert code == 0, text
    placement = routers_by_agent(rest, l3.values())
    counts = sorted(len(placement[l3[n]]) for n in ("b", "c", "d"))
    print(f"rebalance to within one: {counts} in {took:.1f} s")
    assert counts[-1] - counts[0] <= 1, text
    assert {rid: len(hosts) for rid, hosts in hosts_of(placement).items()} == dict.fromkeys(routers, 1)
    time.sleep(2)
    assert daemon.actions() == [], daemon.hint()
    assert daemon.tracebacks() == []

    # -- the audit trail: who drained what, each move from/to host and id, every line per the schema ------
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    for line in lines:
        assert not list(VALIDATOR.iter_errors(line)), line
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
