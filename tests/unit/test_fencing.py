"""fence_command: a dead agent's work moves only once a command has fenced it (or, if told, anyway).

Real commands (``sh -c 'exit 0'``, ``exit 1``, ``sleep 30`` under a 1 s timeout, a program that does not
exist) run through ``acting.fencing.run_command`` and through the plugins against the fake Neutron with
an injected clock (``plugin_rig.Rig``): the fence runs with the dead agent's host and id before any of
its routers or networks move; a failed or hung fence holds its work (and is retried on a backoff, not every
check), or lets it move with ``move_when_fence_fails``; the brake is decided before any fence runs; a
standby never fences; a successful fence is remembered until the agent is heard again. Then the
settings' validation, the preflight check, the metric and the audit record.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.kit.audit import check_audit_line
from tests.unit.plugin_rig import DOWN, LIVENESS, TICK, TIMING, Rig
from tests.unit.strategies import PROPS, DhcpWorld, L3World, dhcp_worlds, l3_worlds

from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.acting.fencing import (
    ENV_AGENT_ID,
    ENV_AGENT_TYPE,
    ENV_HOST,
    FencePolicy,
    Fencer,
    FenceResult,
    FenceRun,
    Finished,
    run_command,
)
from rpcdaemon.cli import main
from rpcdaemon.config.neutronconf import resolve_settings
from rpcdaemon.config.settings import ConfigError, load_settings, parse_settings, render_config
from rpcdaemon.daemon.plugin_factory import build_plugin
from rpcdaemon.daemon.wiring import plugin_config
from rpcdaemon.deciding.dhcp import DhcpPolicy, plan_dhcp
from rpcdaemon.deciding.l3 import L3Policy, plan_l3
from rpcdaemon.deciding.liveness import Verdict
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, ActionKind, Agent
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.dhcpagent import DHCPAgentPlugin
from rpcdaemon.plugins.l3agent import L3AgentPlugin
from rpcdaemon.plugins.report import PassReport
from rpcdaemon.telemetry.audit import render_line
from rpcdaemon.telemetry.metrics import Metrics

AGENT = Agent("a1-uuid", L3_AGENT, "net-1")
NEVER = threading.Event()


def fencer(command: Sequence[str], *, timeout: float = 5.0, **kw: Any) -> Fencer:
    kw.setdefault("may_run", lambda: True)
    kw.setdefault("stop", threading.Event())
    return Fencer(FencePolicy(tuple(command), timeout=timeout), **kw)


# -- the runner: real processes ------------------------------------------------------------------------


def test_a_command_gets_the_dead_agents_host_id_and_type_in_arguments_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "fenced"
    script = (f'printf "%s|%s|%s|%s|%s|%s|%s\\n" "$1" "$2" "$3" "$RPCDAEMON_FENCE_HOST" "$RPCDAEMON_FENCE_AGENT_ID" '
              f'"$RPCDAEMON_FENCE_AGENT_TYPE" "${{NOTIFY_SOCKET-none}}" >> {out}')
    f = fencer(["sh", "-c", script, "fence", "{host}", "--id={agent_id}", "{agent_type}"],
               environ={"PATH": os.environ["PATH"], "NOTIFY_SOCKET": "/run/systemd/notify"})
    (run,) = f.fence([AGENT])
    assert (run.result, run.status, run.detail, run.program) == (FenceResult.OK, 0, "exit status 0", "sh")
    # One argument each, whatever they hold; systemd's notify socket is the daemon's, not the command's.
    assert out.read_text() == "net-1|--id=a1-uuid|L3 agent|net-1|a1-uuid|L3 agent|none\n"


def test_a_failing_command_reports_its_status_and_last_stderr_line_without_secrets() -> None:
    f = fencer(["sh", "-c", "echo first >&2; echo 'ipmi: bad login, password=hunter2' >&2; exit 3"])
    (run,) = f.fence([AGENT])
    assert (run.result, run.status, run.detail) == (FenceResult.FAILED, 3, "exit status 3")
    assert run.stderr_line.startswith("ipmi: bad login, password=")
    assert "hunter2" not in run.stderr_line


def test_a_missing_program_is_a_failed_fence() -> None:
    (run,) = fencer(["/nonexistent/fence-agent", "{host}"]).fence([AGENT])
    assert (run.result, run.detail, run.program) == (FenceResult.FAILED, "not found", "fence-agent")


def test_a_hanging_command_is_killed_with_its_process_group_at_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    # The child in the background is in the command's process group: it must die too.
    f = fencer(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=1.0)
    began = time.monotonic()
    (run,) = f.fence([AGENT])
    took = time.monotonic() - began
    assert run.result is FenceResult.TIMEOUT
    assert run.detail == "timed out after 1s (process group killed)"
    assert 0.9 <= took < 3.0
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead: it waits only for its parent (the killed shell's parent, init) to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_stop_event_kills_a_running_fence() -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    (run,) = fencer(["sleep", "30"], timeout=60, stop=stop).fence([AGENT])
    assert (run.result, run.detail) == (FenceResult.FAILED, "stopped")
    assert time.monotonic() - began < 2.5


def test_several_dead_agents_are_fenced_in_parallel_and_the_caller_hears_progress() -> None:
    agents = [Agent(f"id-{i}", L3_AGENT, f"net-{i}") for i in range(3)]
    ticks: list[float] = []
    began = time.monotonic()
    runs = fencer(["sleep", "0.5"]).fence(agents, progress=lambda: ticks.append(time.monotonic()))
    assert [r.agent for r in runs] == agents
    assert all(r.ok for r in runs)
    assert time.monotonic() - began < 1.4  # not 3 x 0.5 s
    assert len(ticks) >= 2  # called back while it waited (the watchdog's pings)


@pytest.mark.parametrize("host", ["-rf", "net 1", "net-1\nFAKE LOG LINE", ""])
def test_a_host_name_that_is_no_plain_name_is_never_handed_to_the_command(tmp_path: Path, host: str) -> None:
    out = tmp_path / "ran"
    (run,) = fencer(["sh", "-c", f"touch {out}"]).fence([Agent("id", L3_AGENT, host)])
    assert run.result is FenceResult.FAILED
    assert run.detail.startswith("refused: host name")
    assert not out.exists()


def test_a_standby_or_a_dry_run_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ran"
    asked: list[bool] = []

    def not_leader() -> bool:
        asked.append(True)
        return False

    (run,) = fencer(["touch", str(out)], may_run=not_leader).fence([AGENT])
    assert (run.result, asked) == (FenceResult.NOT_ACTIVE, [True])
    (run,) = fencer(["touch", str(out)], dry_run=True).fence([AGENT])
    assert run.result is FenceResult.DRY_RUN
    assert not out.exists()


def test_a_runner_that_raises_is_a_failed_fence_not_a_dead_thread(caplog: pytest.LogCaptureFixture) -> None:
    def broken(argv: Sequence[str], env: Mapping[str, str], timeout: float, cancel: threading.Event) -> Finished:
        raise RuntimeError("bug")

    (run,) = fencer(["true"], runner=broken).fence([AGENT])
    assert (run.result, run.detail) == (FenceResult.FAILED, "runner failed: RuntimeError")
    assert any("the runner failed" in r.getMessage() for r in caplog.records)


def test_run_command_reports_a_program_that_is_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "fence.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    assert run_command([str(script)], dict(os.environ), 5, NEVER).error == "not executable (permission denied)"
    script.chmod(0o755)
    assert run_command([str(script)], dict(os.environ), 5, NEVER).status == 0


# -- the plugins: L3 and DHCP against the fake Neutron --------------------------------------------------


class FenceRig(Rig):
    """``plugin_rig.Rig`` with a fence command; ``runs`` logs each run's host and id and where the dead
    agent's routers/networks were at that moment."""

    def __init__(self, agent_type: str, command: Sequence[str], *, move_anyway: bool = False,
                 may_run: Callable[[], bool] = lambda: True, timeout: float = 5.0, **kw: Any) -> None:
        super().__init__(agent_type, **kw)
        self.calls: list[tuple[str, str, dict[str, frozenset[str]]]] = []
        self.stop = threading.Event()

        def runner(argv: Sequence[str], env: Mapping[str, str], timeout: float, cancel: threading.Event) -> Finished:
            placed = self.api.router_bindings() if agent_type == L3_AGENT else self.api.network_bindings()
            self.calls.append((env[ENV_HOST], env[ENV_AGENT_ID], placed))
            assert env[ENV_AGENT_TYPE] == agent_type
            return run_command(argv, env, timeout, cancel)

        self.fencer = Fencer(FencePolicy(tuple(command), timeout=timeout, move_when_fails=move_anyway),
                             may_run=may_run, stop=self.stop, runner=runner)
        self.audited: list[tuple[str, dict[str, Any]]] = []
        args = (self.api, self.registry, self.executor, LIVENESS, TIMING)
        common: dict[str, Any] = {"bus_since": lambda: self.bus, "bus_outages": lambda: self.bus_outages,
                                  "clock": self.clock, "fencer": self.fencer}
        if agent_type == L3_AGENT:
            self.plugin = L3AgentPlugin(*args, policy=kw.get("l3") or L3Policy(), **common)
        else:
            self.plugin = DHCPAgentPlugin(*args, policy=kw.get("dhcp") or DhcpPolicy(agents_per_network=1), **common)
        self.plugin.audit = lambda event, /, **fields: self.audited.append((event, fields))

    def fences(self) -> list[FenceRun]:
        return [run for r in self.reports for run in r.fences]


@pytest.fixture
def make_rig() -> Iterator[Callable[..., FenceRig]]:
    rigs: list[FenceRig] = []

    def make(*args: Any, **kw: Any) -> FenceRig:
        rig = FenceRig(*args, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def l3_fleet(rig: FenceRig, agents: Sequence[str] = ("a", "b", "c"), routers: int = 4) -> None:
    rig.agents(*agents)
    for i in range(routers):
        rig.api.add_router(router_id=f"r{i}")
        rig.api.place_router(f"r{i}", "a")


def kill(rig: FenceRig, *agents: str) -> None:
    """Silence them and step until they are judged dead (and one check beyond)."""
    rig.run(100)  # a full window of listening first
    rig.silent.update(agents)
    rig.run(DOWN + 2 * TICK)


def on(rig: FenceRig, agent: str) -> set[str]:
    return {rid for rid, hosts in rig.api.router_bindings().items() if agent in hosts}


def test_routers_move_after_the_fence_ran_with_the_dead_agents_host_and_id(
    make_rig: Callable[..., FenceRig], tmp_path: Path
) -> None:
    out = tmp_path / "fenced"
    rig = make_rig(L3_AGENT, ["sh", "-c", f'echo "$1 $2" >> {out}', "fence", "{host}", "{agent_id}"])
    l3_fleet(rig)
    kill(rig, "a")
    assert out.read_text() == "host-a a\n"
    ((host, aid, placed),) = rig.calls
    assert (host, aid) == ("host-a", "a")
    assert all(placed[f"r{i}"] == {"a"} for i in range(4)), "a router moved before the fence"
    assert on(rig, "a") == set()
    assert sorted(rig.done(ActionKind.MOVE_ROUTER)) == [f"r{i}" for i in range(4)]
    (report,) = [r for r in rig.reports if r.fences]
    assert [o.action.kind for o in report.outcomes] == [ActionKind.MOVE_ROUTER] * 4  # in that same pass
    assert [(e, f["host"], f["agent_id"], f["result"], f["work"]) for e, f in rig.audited] == [
        ("fence", "host-a", "a", "ok", "moves")]
    assert_audit_lines_valid(rig)


def assert_audit_lines_valid(rig: FenceRig) -> None:
    """The fence records, as the audit trail writes them, match its schema (``audit_schema.json``)."""
    for event, fields in rig.audited:
        check_audit_line(json.loads(render_line(event, fields, instance="test:1", at=0.0)))


def test_a_successful_fence_is_remembered_until_the_agent_is_heard_again(
    make_rig: Callable[..., FenceRig], tmp_path: Path
) -> None:
    out = tmp_path / "fenced"
    rig = make_rig(L3_AGENT, ["sh", "-c", f'echo "$1" >> {out}', "fence", "{host}"])
    l3_fleet(rig)
    kill(rig, "a")
    # A router Neutron places on the dead agent later moves without a second fence.
    rig.api.add_router(router_id="late")
    rig.api.place_router("late", "a")
    rig.run(2 * TIMING.reconcile_interval)
    assert on(rig, "a") == set()
    assert out.read_text() == "host-a\n"
    # It comes back, then dies again: fenced again before its routers move.
    rig.silent.discard("a")
    rig.run(200)
    rig.api.add_router(router_id="again")
    rig.api.place_router("again", "a")
    rig.run(TIMING.reconcile_interval)
    assert on(rig, "a") == {"again"}
    rig.silent.add("a")
    rig.run(DOWN + 2 * TICK)
    assert on(rig, "a") == set()
    assert out.read_text() == "host-a\nhost-a\n"


def test_a_failed_fence_moves_nothing_and_is_retried_on_a_backoff(
    make_rig: Callable[..., FenceRig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rig = make_rig(L3_AGENT, ["sh", "-c", "echo 'BMC unreachable' >&2; exit 1"])
    l3_fleet(rig)
    kill(rig, "a")
    assert on(rig, "a") == {f"r{i}" for i in range(4)}
    assert rig.done() == []
    (first,) = rig.fences()
    assert (first.result, first.status, first.stderr_line) == (FenceResult.FAILED, 1, "BMC unreachable")
    calls = rig.api.calls["routers_on_agent"]
    # 30 s, then 60 s, then 120 s later: three more runs in 220 s of checks every 10 s, not 22.
    rig.run(220)
    assert len(rig.fences()) == 4
    assert on(rig, "a") == {f"r{i}" for i in range(4)}
    assert rig.done() == []
    # While it waits for its retry, its routers are not re-read every check either.
    assert rig.api.calls["routers_on_agent"] - calls <= 3 * 4 + 3
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    runs = [w for w in warned if "fence of host-a (a) failed: sh exit status 1" in w]
    assert len(runs) == 4
    assert "stderr: 'BMC unreachable'" in runs[0]
    assert "its routers stay on it (move_when_fence_fails = false), next try in 30s" in runs[0]
    assert "next try in 240s" in runs[-1]
    assert len([w for w in warned if "is not fenced" in w]) == 1  # the held line, said once
    assert rig.reports[-1].plan.held == ("host-a (a) is not fenced (sh exit status 1); its routers stay on it "
                                         "until a fence succeeds",)
    assert {f["work"] for _, f in rig.audited} == {"stays"}
    assert_audit_lines_valid(rig)


def test_with_move_when_fence_fails_the_routers_move_anyway(
    make_rig: Callable[..., FenceRig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(L3_AGENT, ["sh", "-c", "exit 1"], move_anyway=True)
    l3_fleet(rig)
    kill(rig, "a")
    assert on(rig, "a") == set()
    assert len(rig.done(ActionKind.MOVE_ROUTER)) == 4
    assert [r.result for r in rig.fences()] == [FenceResult.FAILED]
    assert any("moving its routers anyway (move_when_fence_fails = true)" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


def test_a_hanging_fence_is_killed_within_its_timeout_and_nothing_moves(make_rig: Callable[..., FenceRig]) -> None:
    rig = make_rig(L3_AGENT, ["sleep", "30"], timeout=1.0)
    l3_fleet(rig)
    rig.run(100)
    rig.silent.add("a")
    rig.run(DOWN)
    took = []
    for _ in range(5):  # judged dead within a few checks
        began = time.monotonic()
        rig.tick()
        took.append(time.monotonic() - began)
        if rig.fences():
            break
    assert 0.9 <= took[-1] < 3.0
    assert [r.result for r in rig.fences()] == [FenceResult.TIMEOUT]
    rig.run(20)  # within the retry delay: no second run
    assert len(rig.fences()) == 1
    assert on(rig, "a") == {f"r{i}" for i in range(4)}
    assert rig.done() == []


def test_a_missing_fence_program_moves_nothing(make_rig: Callable[..., FenceRig]) -> None:
    rig = make_rig(L3_AGENT, ["/nonexistent/fence_ipmilan", "--ip={host}"])
    l3_fleet(rig)
    kill(rig, "a")
    assert [(r.result, r.detail) for r in rig.fences()] == [(FenceResult.FAILED, "not found")]
    assert on(rig, "a") == {f"r{i}" for i in range(4)}


def test_the_brake_is_decided_before_any_fence_runs(make_rig: Callable[..., FenceRig]) -> None:
    rig = make_rig(L3_AGENT, ["true"])
    l3_fleet(rig, agents=("a", "b", "c", "d"))
    rig.api.add_router(router_id="rb")
    rig.api.place_router("rb", "b")
    kill(rig, "a", "b")  # half the agents: the brake holds
    assert rig.reports[-1].plan.braked
    assert rig.calls == []
    assert rig.fences() == []
    assert rig.done() == []


def test_a_standby_never_fences(make_rig: Callable[..., FenceRig]) -> None:
    rig = make_rig(L3_AGENT, ["true"], may_run=lambda: False)
    l3_fleet(rig)
    kill(rig, "a")
    assert rig.calls == []
    assert {r.result for r in rig.fences()} == {FenceResult.NOT_ACTIVE}
    assert on(rig, "a") == {f"r{i}" for i in range(4)}


def test_one_dead_agents_failed_fence_does_not_hold_another_ones_routers(make_rig: Callable[..., FenceRig]) -> None:
    # Fails for host-a only. max_moves 2: the first plan reaches only a's routers; once a is held, the
    # plan made again reaches b's, and b is fenced in the same pass.
    rig = make_rig(L3_AGENT, ["sh", "-c", 'test "$1" != host-a', "fence", "{host}"],
                   l3=L3Policy(max_moves=2))
    l3_fleet(rig, agents=("a", "b", "c", "d", "e"), routers=2)
    for rid in ("x0", "x1"):  # after r0 and r1 in the planner's (router id) order
        rig.api.add_router(router_id=rid)
        rig.api.place_router(rid, "b")
    kill(rig, "a", "b")
    report = next(r for r in rig.reports if r.fences)
    assert [(r.agent.id, r.result.value) for r in report.fences] == [("a", "failed"), ("b", "ok")]
    assert sorted(o.action.resource_id for o in report.outcomes) == ["x0", "x1"]
    assert on(rig, "a") == {"r0", "r1"}
    assert on(rig, "b") == set()


def test_dhcp_networks_stay_on_an_unfenced_agent_and_move_once_it_is_fenced(
    make_rig: Callable[..., FenceRig], tmp_path: Path
) -> None:
    flag = tmp_path / "bmc-up"
    rig = make_rig(DHCP_AGENT, ["sh", "-c", f"test -e {flag}"])
    rig.agents("a", "b", "c")
    for i in range(3):
        rig.api.add_network(network_id=f"n{i}")
        rig.api.place_network(f"n{i}", "a")
    kill(rig, "a")
    assert all(hosts == {"a"} for hosts in rig.api.network_bindings().values())
    assert rig.done() == []
    flag.touch()  # the BMC answers again: the next try fences it
    rig.run(40)
    assert [r.result for r in rig.fences()] == [FenceResult.FAILED, FenceResult.OK]
    bindings = rig.api.network_bindings()
    assert all("a" not in hosts and len(hosts) == 1 for hosts in bindings.values()), bindings
    assert rig.calls[-1][2] == {f"n{i}": frozenset({"a"}) for i in range(3)}


# -- the planners: the unfenced agents keep their work ------------------------------------------------


@PROPS
@given(world=l3_worlds(), data=st.data())
def test_no_l3_plan_moves_work_off_an_unfenced_agent(world: L3World, data: st.DataObject) -> None:
    dead = sorted(aid for aid, j in world.judged.items() if j.verdict is Verdict.DEAD)
    unfenced = frozenset(data.draw(st.lists(st.sampled_from(dead), unique=True))) if dead else frozenset()
    plan = plan_l3(world.judged, world.routers, world.bindings, L3Policy(), unfenced=unfenced)
    for a in plan.actions:
        assert a.source is None or a.source.id not in unfenced
        if a.source is None:  # an unhosted router, never one an unfenced agent hosts
            assert not world.bindings.get(a.resource_id, frozenset()) & unfenced
    # The brake still counts them: holding their work never releases it.
    assert plan.braked == plan_l3(world.judged, world.routers, world.bindings, L3Policy()).braked


@PROPS
@given(world=dhcp_worlds(), data=st.data(), per=st.sampled_from([None, 1, 2]))
def test_no_dhcp_plan_unbinds_or_replaces_an_unfenced_agents_networks(
    world: DhcpWorld, data: st.DataObject, per: int | None
) -> None:
    dead = sorted(aid for aid, j in world.judged.items() if j.verdict is Verdict.DEAD)
    unfenced = frozenset(data.draw(st.lists(st.sampled_from(dead), unique=True))) if dead else frozenset()
    policy = DhcpPolicy(agents_per_network=per)
    plan = plan_dhcp(world.judged, world.networks, world.bindings, policy, unfenced=unfenced)
    for a in plan.actions:
        if a.kind is ActionKind.UNBIND_NETWORK and a.resource_id in world.networks:
            assert a.source is not None
            assert a.source.id not in unfenced
    assert plan.braked == plan_dhcp(world.judged, world.networks, world.bindings, policy).braked


# -- settings, preflight, metric ------------------------------------------------------------------------


def test_fence_settings_are_read_and_round_trip() -> None:
    text = ("[L3Agent]\nfence_command = /usr/sbin/fence_ipmilan --ip {host}-ipmi --plug 'id {agent_id}'\n"
            "fence_timeout = 20\nmove_when_fence_fails = yes\n[DHCPAgent]\nfence_command = ssh {host} true\n")
    s = parse_settings(text)
    assert s.l3.fence_command == ("/usr/sbin/fence_ipmilan", "--ip", "{host}-ipmi", "--plug", "id {agent_id}")
    assert (s.l3.fence_timeout, s.l3.move_when_fence_fails) == (20.0, True)
    assert s.dhcp.fence_command == ("ssh", "{host}", "true")
    assert (s.dhcp.fence_timeout, s.dhcp.move_when_fence_fails) == (60.0, False)
    assert parse_settings(render_config(s)) == s
    assert parse_settings("").l3.fence_command == ()  # the default: no fencing


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("fence_command = fence --ip '{host}", "fence_command = \"fence --ip '{host}\": expected a command line"),
        ("fence_command = fence {hostname}", "unknown placeholder {hostname} (known: {host} {agent_id} {agent_type})"),
        ("fence_command = {host} off", "the program must be a fixed name"),
        ("fence_command = bin/fence {host}", "'bin/fence' is a relative path"),
        ("fence_timeout = 0", "fence_timeout = '0': expected a number of seconds from 1 to 600"),
        ("fence_timeout = 601", "601 is above the maximum 600"),
        ("fence_timeout = soon", "fence_timeout = 'soon'"),
        ("move_when_fence_fails = perhaps", "move_when_fence_fails = 'perhaps': expected a boolean"),
    ],
)
def test_bad_fence_settings_are_one_line_errors_naming_the_key(line: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(f"[L3Agent]\n{line}\n")
    text = str(info.value)
    assert "[L3Agent]" in text
    assert says in text
    assert "\n" not in text


def test_check_config_refuses_a_fence_program_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "neutron.conf").write_text("[DEFAULT]\n")
    conf = tmp_path / "rpcdaemon.conf"
    base = (f"[Daemon]\nplugins = L3Agent\nrpchost = 127.0.0.1\n[L3Agent]\nconffile = {tmp_path / 'neutron.conf'}\n"
            "endpoint = http://127.0.0.1:9696\n")
    conf.write_text(base + "fence_command = no-such-fence-agent --ip {host}\n")
    assert main(["-c", str(conf), "--check-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("[L3Agent] fence_command: 'no-such-fence-agent' is not an executable program (searched on "
                        "PATH unless given as an absolute path)")
    assert "\n" not in err
    conf.write_text(base + "fence_command = sh -c true\n")
    assert main(["-c", str(conf), "--check-config"]) == 0


def test_fence_runs_are_counted_by_result() -> None:
    metrics = Metrics()
    runs = [FenceRun(AGENT, result, "ipmitool", None, 0.1, "", "") for result in
            (FenceResult.OK, FenceResult.FAILED, FenceResult.TIMEOUT, FenceResult.TIMEOUT, FenceResult.NOT_ACTIVE,
             FenceResult.DRY_RUN)]
    metrics.observe_pass("L3Agent", PassReport(fences=runs))

    def count(result: str) -> float | None:
        return metrics.registry.get_sample_value("rpcdaemon_fence_runs_total",
                                                 {"plugin": "L3Agent", "result": result})

    assert (count("ok"), count("failed"), count("timeout")) == (1.0, 1.0, 2.0)
    assert count("not_active") is None  # nothing ran
    assert count("dry_run") is None


def test_settings_reach_the_plugin_and_its_fence_asks_the_lease(tmp_path: Path) -> None:
    (tmp_path / "neutron.conf").write_text("[DEFAULT]\n")
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text(f"[Daemon]\nrpchost = 127.0.0.1\n[L3Agent]\nconffile = {tmp_path / 'neutron.conf'}\nendpoint = http://127.0.0.1:9696\n"
                    "fence_command = true {host}\nfence_timeout = 7\nmove_when_fence_fails = true\n"
                    f"[DHCPAgent]\nconffile = {tmp_path / 'neutron.conf'}\nendpoint = http://127.0.0.1:9696\n")
    settings = load_settings(conf)
    resolved = resolve_settings(settings)
    assert resolved.l3 is not None
    assert resolved.dhcp is not None
    l3_cfg = plugin_config(settings.l3, resolved.l3, 75.0, False)
    assert l3_cfg.fence == FencePolicy(("true", "{host}"), timeout=7.0, move_when_fails=True)
    assert plugin_config(settings.dhcp, resolved.dhcp, 75.0, False).fence is None  # no command: no fencing
    leader = [False]
    stop = threading.Event()
    plugin = build_plugin("L3Agent", FakeNeutron(), AgentRegistry(75.0), l3_cfg, bus_since=lambda: None, stop=stop,
                          may_write=lambda: leader[0])
    try:
        assert plugin.fencing is not None
        (run,) = plugin.fencing.fencer.fence([AGENT])
        assert run.result is FenceResult.NOT_ACTIVE  # asked the lease: not held
        leader[0] = True
        (run,) = plugin.fencing.fencer.fence([AGENT])
        assert run.result is FenceResult.OK
    finally:
        plugin.executor.close()
    dry = replace(l3_cfg, executor=ExecutorPolicy(dry_run=True))
    plugin = build_plugin("L3Agent", FakeNeutron(), AgentRegistry(75.0), dry, bus_since=lambda: None, stop=stop)
    try:
        assert plugin.fencing is not None
        assert plugin.fencing.fencer.fence([AGENT])[0].result is FenceResult.DRY_RUN
    finally:
        plugin.executor.close()
