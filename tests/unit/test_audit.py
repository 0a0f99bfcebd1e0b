"""The audit trail ([Daemon] audit_log): what the service writes from each pass, checked line by line
against the shipped JSON schema; redaction; the file reopened after logrotate's rename; concurrent
writers whose lines never interleave; a write that fails never stops the caller.

The service is the real one around the real L3Agent plugin, the real executor and FakeNeutron, stepped
check by check on a fake clock (``service_rig.Cloud``, the ``cloud`` fixture of conftest.py; no bus
thread: the plugin listens since the start of the test).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.kit.audit import read_audit
from tests.kit.clock import Clock
from tests.kit.poll import poll_until
from tests.kit.service import make_service
from tests.unit.fake_lock import SharedLock, leader
from tests.unit.service_rig import DOWN, Cloud

from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.acting.readiness import ReadinessPolicy
from rpcdaemon.daemon.wiring import open_audit
from rpcdaemon.deciding.l3 import Plan
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import L3_AGENT, Action, ActionKind, OutcomeStatus
from rpcdaemon.plugins.report import PassReport
from rpcdaemon.telemetry.audit import AuditLog, PassAuditor
from rpcdaemon.telemetry.logs import reopen_log_files


def test_a_failover_after_a_brake_is_told_line_by_line(cloud: Callable[..., Cloud]) -> None:
    c = cloud()
    c.run(2 * DOWN)  # a full window, everyone heard
    c.speaking -= {"a", "b"}  # two of three go silent: the brake holds
    c.run(DOWN + 10)
    assert c.api.router_bindings() == dict.fromkeys([f"r{i}" for i in range(4)], frozenset({"a"}))
    c.speaking.add("b")  # b is back: a alone is dead, its routers move
    c.run(10)
    lines = read_audit(c.path)

    assert all(line["instance"] == "ctl-1:4242" for line in lines)
    assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)
    assert lines[0]["ts"].startswith("2026-05-28T")
    assert lines[0]["ts"].endswith("Z")

    def verdicts(aid: str) -> list[tuple[str | None, str | None]]:
        return [(x["from"], x["to"]) for x in lines if x["event"] == "verdict" and x["agent_id"] == aid]

    assert verdicts("c") == [(None, "alive")]  # first judged, then never changed
    assert verdicts("a")[0] == (None, "alive")
    assert verdicts("a")[-1][1] == "dead"
    assert ("dead", "alive") in verdicts("b")
    dead_a = next(x for x in lines if x["event"] == "verdict" and x["agent_id"] == "a" and x["to"] == "dead")
    assert dead_a["host"] == "host-a"
    assert dead_a["agent_type"] == L3_AGENT
    assert dead_a["why"]

    brakes = [x for x in lines if x["event"] == "brake"]
    assert [b["state"] for b in brakes] == ["engaged", "released"]
    assert brakes[0]["dead"] == 2
    assert brakes[0]["agents"] == 3
    assert "dead" in brakes[0]["why"]
    assert brakes[1]["held_for"] > 0

    actions = [x for x in lines if x["event"] == "action"]
    assert sorted(a["resource_id"] for a in actions) == ["r0", "r1", "r2", "r3"]
    for a in actions:
        assert (a["plugin"], a["kind"], a["status"]) == ("L3Agent", "move-router", "done")
        assert (a["from_host"], a["from_id"]) == ("host-a", "a")
        assert a["to_host"] == f"host-{a['to_id']}"
        assert a["to_id"] in ("b", "c")
        assert a["seconds"] >= 0
    assert lines.index(brakes[1]) < lines.index(actions[0])  # released, then moved

    ready = [x for x in lines if x["event"] == "ready"]
    assert sorted(r["resource_id"] for r in ready) == ["r0", "r1", "r2", "r3"]
    to = {a["resource_id"]: a["to_id"] for a in actions}
    assert all(r["ready"] and r["kind"] == "router" and r["to_id"] == to[r["resource_id"]] for r in ready)


def test_a_router_its_target_never_brings_up_is_unbound_by_the_executor_in_one_action_line(
    cloud: Callable[..., Cloud], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    c = cloud(readiness=ReadinessPolicy(timeout=10.0, poll_interval=1.0, move_unready=True))
    c.api.set_up_delay("b", None)  # b takes routers but never brings their ports up
    c.run(2 * DOWN)
    c.speaking.discard("a")
    c.run(DOWN + 40)
    assert c.api.router_bindings() == dict.fromkeys([f"r{i}" for i in range(4)], frozenset({"c"}))
    lines = read_audit(c.path)
    actions = [x for x in lines if x["event"] == "action"]
    sent_to_b = sorted(x["resource_id"] for x in actions if x["kind"] == "move-router" and x["to_id"] == "b")
    unbinds = [x for x in actions if x["kind"] == "unbind-router"]
    assert sent_to_b
    assert sorted(x["resource_id"] for x in unbinds) == sent_to_b  # one line each
    messages = [r.getMessage() for r in caplog.records if r.name == "rpcdaemon.l3agent"]
    for x in unbinds:
        # The line the follow-up wrote itself before its unbind went through the executor, field for field.
        assert list(x) == ["ts", "event", "instance", "plugin", "kind", "resource_id", "from_host", "from_id",
                           "to_host", "to_id", "reason", "status", "seconds", "detail"]
        assert (x["plugin"], x["from_host"], x["from_id"], x["to_host"], x["to_id"], x["status"], x["detail"]) == (
            "L3Agent", "host-b", "b", None, None, "done", "")
        assert re.fullmatch(r"not ready after \d+s", x["reason"]), x
        # ... and the executor's one INFO line per action, as for every other action.
        said = f"remove router {x['resource_id']} from host-b (b) ({x['reason']}): done in "
        assert sum(m.startswith(said) for m in messages) == 1, messages


def test_fence_runs_come_through_the_plugin_hook_with_secrets_redacted(cloud: Callable[..., Cloud]) -> None:
    c = cloud()
    plugin = c.svc.plugins[0]
    assert plugin.audit == c.audit.record  # the service hands the trail to the plugins
    plugin.audit("fence", plugin="L3Agent", host="host-a", agent_id="a", agent_type=L3_AGENT, result="failed",
                 program="fence-ipmi", exit_status=1, seconds=0.25,
                 detail="login password=hunter2 rejected by amqp://admin:s3cret@bmc-1//",
                 stderr="Error: token: tok-123", work="stays")
    [line] = read_audit(c.path)  # valid: the fields the fence gate (plugins/fence_gate.py) writes are the schema's
    c.audit.record("stop", exit_status=0, reason="x", auth_token="tok-456", nested={"password": "hunter3"})
    text = c.path.read_text()
    for secret in ("hunter2", "s3cret", "tok-123", "tok-456", "hunter3"):
        assert secret not in text
    odd = json.loads(text.splitlines()[1])  # fields the schema does not know: still redacted, at any depth
    assert odd["auth_token"] == "***"
    assert odd["nested"] == {"password": "***"}
    assert line["event"] == "fence"
    assert line["stderr"] == "Error: token: ***"
    assert "password=***" in line["detail"]
    assert "amqp://admin:***@bmc-1//" in line["detail"]
    assert (line["host"], line["agent_id"], line["result"], line["exit_status"]) == ("host-a", "a", "failed", 1)


def test_leadership_changes_are_written(cloud: Callable[..., Cloud]) -> None:
    lock = SharedLock()
    lock.holder = "someone else"
    clock = Clock()
    lead, _ = leader(lock, "me", clock)
    c = cloud(leadership=lead)
    c.svc.step()  # starting: no change yet
    lead.step()
    c.svc.step()  # standby
    lock.holder = None
    clock.now += 1
    lead.step()
    c.svc.step()  # active
    roles = [(x["previous"], x["role"]) for x in read_audit(c.path) if x["event"] == "leadership"]
    assert roles == [("starting", "standby"), ("standby", "active")]
    assert all(x["lock"].startswith("lock ") for x in read_audit(c.path) if x["event"] == "leadership")


def test_start_and_stop_lines_from_the_running_service(tmp_path: Path) -> None:
    stop = threading.Event()
    audit = AuditLog(tmp_path / "audit.log")
    svc = make_service(check_interval=0.01, stop=stop, audit=audit)
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(svc.run()), daemon=True)
    thread.start()
    stop.set()
    thread.join(10)
    assert done == [0]
    start, stop_line = read_audit(tmp_path / "audit.log")
    assert (start["event"], start["plugins"], start["dry_run"]) == ("start", [], False)
    assert (stop_line["event"], stop_line["exit_status"], stop_line["reason"]) == ("stop", 0, "stop requested")
    host, _, pid = start["instance"].partition(":")
    assert host
    assert int(pid) > 0
    audit.record("stop", exit_status=0, reason="after close")  # closed by run(): nothing more is written
    assert len(read_audit(tmp_path / "audit.log")) == 2


class WatchingNeutron(FakeNeutron):
    """Notes, at each bind, the action lines the audit trail already holds (set ``path`` first)."""

    path: Path | None = None
    seen_at_bind: list[int]

    def bind_router(self, agent_id: str, router_id: str) -> None:
        if self.path is not None:
            seen = [x for x in read_audit(self.path) if x["event"] in ("action", "verdict")]
            self.seen_at_bind = [*getattr(self, "seen_at_bind", []), sum(x["event"] == "action" for x in seen)]
            assert any(x["event"] == "verdict" and x["to"] == "dead" for x in seen)  # said before the first move
        super().bind_router(agent_id, router_id)


def test_each_action_is_written_as_it_ends_not_after_the_pass(cloud: Callable[..., Cloud]) -> None:
    c = cloud(workers=1, api=WatchingNeutron)
    api = c.api
    assert isinstance(api, WatchingNeutron)
    c.run(2 * DOWN)
    api.path = c.path
    c.speaking.discard("a")
    c.run(DOWN + 10)
    assert api.seen_at_bind == [0, 1, 2, 3]  # a crash during the 4th move leaves the first three in the trail
    assert [x["status"] for x in read_audit(c.path) if x["event"] == "action"] == ["done"] * 4


def test_a_dry_run_writes_each_planned_move_once(cloud: Callable[..., Cloud]) -> None:
    c = cloud(dry_run=True)
    c.run(2 * DOWN)
    c.speaking.discard("a")
    c.run(3 * DOWN)  # the same plan, check after check: nothing changes in a dry run
    actions = [x for x in read_audit(c.path) if x["event"] == "action"]
    assert sorted(x["resource_id"] for x in actions) == ["r0", "r1", "r2", "r3"]
    assert {(x["status"], x["detail"]) for x in actions} == {("dry-run", "dry run: not called")}
    assert c.api.router_bindings() == dict.fromkeys([f"r{i}" for i in range(4)], frozenset({"a"}))


def test_a_read_back_that_finds_no_binding_is_a_second_line_for_the_action(tmp_path: Path) -> None:
    class Forgetful(FakeNeutron):
        def routers_on_agent(self, agent_id: str) -> list[str]:
            super().routers_on_agent(agent_id)
            return []  # the bind answered 201, the agent's list does not show it

    api = Forgetful()
    b = api.add_agent(L3_AGENT, "host-b", agent_id="b")
    api.add_router(router_id="r1")
    audit = AuditLog(tmp_path / "audit.log", instance="h:1")
    auditor = PassAuditor(audit.record)
    executor = Executor(api, ExecutorPolicy(workers=1), stop=threading.Event(),
                        on_outcome=lambda o: auditor.outcome("L3Agent", o))
    try:
        [outcome] = executor.run([Action(ActionKind.BIND_ROUTER, "r1", target=b)])
    finally:
        executor.close()
        audit.close()
    assert outcome.status is OutcomeStatus.FAILED
    said = [(x["status"], x["detail"]) for x in read_audit(tmp_path / "audit.log")]
    assert said == [("done", ""), ("failed", "not hosted by the target on read-back")]


def test_a_pass_that_judged_nothing_says_nothing_of_verdicts_or_the_brake() -> None:
    written: list[str] = []
    auditor = PassAuditor(lambda event, **fields: written.append(event))
    auditor._braked_since["L3Agent"] = 1.0  # the brake held at the last pass
    auditor.note("L3Agent", PassReport(plan=Plan()))  # a failed reconcile: no verdicts, an empty plan
    assert written == []


def test_reopened_on_sighup_after_logrotate_renames_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    path = tmp_path / "audit.log"
    audit = AuditLog(path, instance="h:1")
    try:
        audit.record("stop", exit_status=0, reason="one")
        path.rename(tmp_path / "audit.log.1")
        reopen_log_files()  # what SIGHUP runs (cli -> logs): the audit trail is reopened with the log file
        assert path.exists()
        assert path.read_text() == ""
        audit.record("stop", exit_status=0, reason="two")
        assert [x["reason"] for x in read_audit(path)] == ["two"]
        assert [x["reason"] for x in read_audit(tmp_path / "audit.log.1")] == ["one"]
        assert any("audit log" in r.getMessage() and "reopened" in r.getMessage() for r in caplog.records)
        # Moved away without a HUP: the next line notices and goes to a new file at the path.
        path.rename(tmp_path / "audit.log.2")
        audit.record("stop", exit_status=0, reason="three")
        assert [x["reason"] for x in read_audit(path)] == ["three"]
    finally:
        audit.close()
    reopen_log_files()  # closed: no longer reopened
    assert not any("cannot" in r.getMessage() for r in caplog.records)


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    trails = [AuditLog(path, instance="h:1"), AuditLog(path, instance="h:2")]  # two open files, one path
    threads, per_thread, filler = 8, 200, "x" * 3000  # 3 KB lines: a buffered writer would split them
    try:
        def write(n: int) -> None:
            trail = trails[n % 2]
            for i in range(per_thread):
                trail.record("stop", exit_status=n, reason=f"{n}-{i}-{filler}")

        workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
    finally:
        for t in trails:
            t.close()
    lines = read_audit(path)  # each one whole JSON
    assert len(lines) == threads * per_thread
    seen = {x["reason"].rsplit("-", 1)[0] for x in lines}
    assert seen == {f"{n}-{i}" for n in range(threads) for i in range(per_thread)}


def test_one_line_whatever_the_values_hold(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path, instance="h:1")
    try:
        audit.record("verdict", plugin="L3Agent", agent_id="a\nb", host="evil\r\n{\"event\": \"stop\"}\u2028x",
                     agent_type=L3_AGENT, why="\x1b[31mred", **{"from": None, "to": "dead"}, ts="forged",
                     event="forged", instance="forged")
        audit.record("ready", plugin="L3Agent", kind="router", resource_id="r", to_host="h", to_id="b",
                     ready=False, seconds=float("nan"))  # not JSON: written as null (and refused by the schema)
    finally:
        audit.close()
    raw = path.read_bytes()
    assert raw.isascii()
    assert raw.count(b"\n") == 2
    first = json.loads(raw.splitlines()[0])
    assert first["host"] == "evil\r\n{\"event\": \"stop\"}\u2028x"
    assert first["agent_id"] == "a\nb"
    assert (first["event"], first["instance"]) == ("verdict", "h:1")
    assert first["ts"] != "forged"
    second = json.loads(raw.splitlines()[1])
    assert second["seconds"] is None


def test_a_failing_write_is_one_error_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    audit = AuditLog(Path("/dev/full"), instance="h:1")  # every write: ENOSPC
    try:
        for _ in range(5):
            audit.record("stop", exit_status=0, reason="x")
    finally:
        audit.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "cannot write" in errors[0].getMessage()
    assert audit.lines == 0


def test_an_unwritable_audit_log_is_a_one_line_start_error(tmp_path: Path) -> None:
    from rpcdaemon.daemon.service import StartError

    with pytest.raises(StartError) as err:
        open_audit(tmp_path / "missing-dir" / "audit.log")
    text = str(err.value)
    assert "\n" not in text
    assert "[Daemon] audit_log" in text
    assert "No such file or directory" in text


def test_the_shipped_logrotate_snippet_rotates_the_audit_trail_which_the_hup_reopens(tmp_path: Path) -> None:
    """The snippet as shipped, paths moved into tmp_path and run by the real logrotate (forced): it
    renames the file, creates none, and its postrotate HUPs the pid of the pid file (no systemd unit
    here): this process, whose handler then reopens as the daemon's main thread does."""
    import grp
    import os
    import pwd
    import shutil
    import signal
    import subprocess

    snippet = Path(__file__).parents[2] / "etc" / "logrotate.d" / "rpcdaemon"
    text = snippet.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "/var/log/rpcdaemon.log {" in body
    assert "/var/log/rpcdaemon/*.log {" in body
    assert "copytruncate" not in body
    assert body.count("nocreate") == 2
    assert body.count("systemctl kill --kill-whom=main -s HUP rpcdaemon.service") == 2
    if shutil.which("logrotate") is None:
        pytest.skip("logrotate is not installed")
    logs, pidfile = tmp_path / "logs", tmp_path / "rpcdaemon.pid"
    logs.mkdir()
    pidfile.write_text(f"{os.getpid()}\n")
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    local = (text.replace("/var/log/rpcdaemon/", f"{logs}/").replace("/var/log/rpcdaemon.log", f"{tmp_path}/main.log")
             .replace("/run/rpcdaemon/rpcdaemon.pid", str(pidfile)).replace("/var/run/rpcdaemon.pid", str(pidfile))
             .replace("su neutron neutron", f"su {user} {group}"))
    conf = tmp_path / "logrotate.conf"
    conf.write_text(local)
    path = logs / "audit.log"
    audit = AuditLog(path, instance="h:1")
    hups: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: hups.append(signum))
    try:
        audit.record("stop", exit_status=0, reason="before")
        done = subprocess.run(["logrotate", "--force", "--state", str(tmp_path / "state"), str(conf)],
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not path.exists()  # renamed, and nocreate: the daemon makes the new one
        assert [x["reason"] for x in read_audit(logs / "audit.log.1")] == ["before"]
        poll_until(lambda: hups, 5)
        assert hups == [signal.SIGHUP]  # the postrotate's kill reached the pid in the pid file
        reopen_log_files()  # what the daemon's main thread then does
        assert path.exists()
        audit.record("stop", exit_status=0, reason="after")
        assert [x["reason"] for x in read_audit(path)] == ["after"]
    finally:
        signal.signal(signal.SIGHUP, previous)
        audit.close()


def test_audit_log_is_off_by_default_and_relative_to_the_config_file(tmp_path: Path) -> None:
    from rpcdaemon.config.settings import load_settings

    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text("[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\n")
    assert load_settings(conf).daemon.audit_log is None
    conf.write_text("[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\naudit_log = logs/audit.log\n")
    assert load_settings(conf).daemon.audit_log == tmp_path / "logs" / "audit.log"
