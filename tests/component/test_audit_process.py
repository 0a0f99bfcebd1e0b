"""The audit trail and the JSON log of the real daemon process: start, the lock taken, SIGHUP after
logrotate's rename, stop; every audit line valid against the shipped schema, every log line one JSON
object. The L3Agent plugin against a scripted noauth Neutron on the real RabbitMQ (a lock group of its own).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.component.daemon_proc import NeutronStub, RpcDaemon, l3_config
from tests.component.rabbit import AMQP_URL
from tests.kit.audit import read_audit
from tests.kit.poll import wait_until


def events(path: Path) -> list[str]:
    return [doc["event"] for doc in read_audit(path, missing_ok=True)]


def test_the_daemon_writes_its_audit_trail_and_json_log(tmp_path: Path, stub: NeutronStub) -> None:
    audit = tmp_path / "audit.log"
    text = l3_config(bus_url=AMQP_URL, endpoint=stub.url, neutron_conf=tmp_path / "n.conf",
                     extra="audit_log = audit.log\nlog_format = json\nloglevel = INFO\n")  # relative: next to the conf
    daemon = RpcDaemon(tmp_path, text).start()
    try:
        wait_until(lambda: "leadership" in events(audit), 30, "the start and the lock in the audit trail")
        start, lead = read_audit(audit, missing_ok=True)[:2]
        assert (start["event"], start["plugins"], start["dry_run"]) == ("start", ["L3Agent"], False)
        assert start["instance"].endswith(f":{daemon.pids[0]}")
        assert (lead["event"], lead["previous"], lead["role"]) == ("leadership", "starting", "active")

        audit.rename(tmp_path / "audit.log.1")  # logrotate's rename, then its postrotate HUP
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(audit.exists, 10, "the audit trail reopened at its path")
        assert daemon.running
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    assert events(tmp_path / "audit.log.1")[:2] == ["start", "leadership"]
    [stop] = read_audit(audit, missing_ok=True)  # the rest of its life went to the new file
    assert (stop["event"], stop["exit_status"], stop["reason"]) == ("stop", 0, "stop requested")
    logs = [json.loads(line) for line in daemon.log().splitlines()]  # each line a whole JSON object
    messages = [doc["message"] for doc in logs]
    assert any(m.startswith("audit trail: ") and m.endswith("audit.log (one JSON line per decision and action)")
               for m in messages)
    assert any(m.startswith("SIGHUP: audit log ") and m.endswith(" reopened") for m in messages)
    assert "rpcdaemon exiting (status 0)" in messages
    assert all({"ts", "level", "logger", "message"} <= doc.keys() for doc in logs)
