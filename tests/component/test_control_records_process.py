"""Issue 15's hostile control records against the real daemon process on the real RabbitMQ.

A 400-digit time and bracket nests written into ``rpcdaemon.control.<group>`` used to end every running
instance within a poll (``OverflowError``, ``RecursionError`` in the control thread: CRITICAL, exit 1),
end a restarted one again, and make ``status``, ``check``, ``pause`` and ``resume`` exit 1 with a
traceback. Now a running daemon says each problem once and goes on with the last good state; one
started on a bad record holds its moves; the commands say it in one line, and ``control reset`` and
``resume`` repair it. Neutron is a scripted noauth endpoint; the lock group is the test's own.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.daemon_proc import NeutronStub, RpcDaemon, l3_config
from tests.component.rabbit import AMQP_URL
from tests.kit.audit import read_audit
from tests.kit.poll import wait_until
from tests.kit.process import RPCDAEMON, run

from rpcdaemon.broker.connection import make_connection
from rpcdaemon.broker.control_link import control_connection
from rpcdaemon.control import control_queue, roll_queue, view_queue
from rpcdaemon.control.channel import ControlChannel

HUGE_INT = b'{"v":1,"at":1' + b"0" * 400 + b"}"  # the issue's: float() of it raises OverflowError
DEEP = b"[" * 30_000 + b"]" * 30_000  # json.loads of it raises RecursionError (60 kB: under the size bound)
WIDE_DEEP = b"[" * 100_000 + b"]" * 100_000  # the 100,000-deep nest: over the size bound already
WARNING = "control state on the broker is not understood"


class Rig:
    def __init__(self, tmp_path: Path, stub: NeutronStub) -> None:
        text = l3_config(bus_url=AMQP_URL, endpoint=stub.url, neutron_conf=tmp_path / "n.conf",
                         extra="audit_log = audit.log\nloglevel = INFO\n")
        found = re.search(r"^group = (\S+)$", text, re.MULTILINE)
        assert found is not None
        self.group = found.group(1)
        self.tmp_path = tmp_path
        self.text = text
        self.audit = tmp_path / "audit.log"
        self.channel = ControlChannel(lambda: control_connection(AMQP_URL), self.group)

    def daemon(self, name: str) -> RpcDaemon:
        workdir = self.tmp_path / name
        workdir.mkdir()
        daemon = RpcDaemon(workdir, self.text.replace("audit_log = audit.log", f"audit_log = {self.audit}"))
        daemon.config.chmod(0o600)  # the commands refuse a file others may read while it holds the broker's password
        return daemon

    def write(self, raw: bytes) -> None:
        self.channel.link.write(control_queue(self.group), raw, durable=True)

    def announced(self, pid: int) -> float:
        """When the daemon ``pid`` last announced itself on the roll call (0: not there)."""
        running, _ = self.channel.read_roll(time.time())
        return max((i.at for i in running if i.instance.endswith(f":{pid}")), default=0.0)

    def polls(self, daemon: RpcDaemon, count: int) -> None:
        """Wait until the daemon went through ``count`` more control polls (each announces it once)."""
        pid = daemon.pids[-1]
        for _ in range(count):
            last = self.announced(pid)

            def announced_again(last: float = last) -> bool:
                return self.announced(pid) > last

            wait_until(announced_again, 20, "the daemon's next control poll")

    def command(self, daemon: RpcDaemon, *argv: str) -> subprocess.CompletedProcess[str]:
        done = run([RPCDAEMON, "-c", daemon.config, *argv], timeout=60)
        assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
        return done

    def cleanup(self) -> None:
        self.channel.close()
        with make_connection(AMQP_URL) as conn:
            channel = conn.channel()
            for queue in (control_queue(self.group), view_queue(self.group), roll_queue(self.group)):
                channel.queue_delete(queue)


@pytest.fixture
def rig(tmp_path: Path, stub: NeutronStub) -> Iterator[Rig]:
    r = Rig(tmp_path, stub)
    yield r
    r.cleanup()


def test_a_running_daemon_rides_out_bad_records_and_control_reset_repairs_them(rig: Rig) -> None:
    daemon = rig.daemon("a").start()
    try:
        wait_until(lambda: rig.announced(daemon.pids[0]), 30, "the daemon on the roll call")
        for raw, problem in [(HUGE_INT, "an integer of 401 digits"), (WIDE_DEEP, "200000 bytes (at most 65536)"),
                             (DEEP, "nested deeper than 8")]:
            rig.write(raw)
            daemon.wait_text(f"{WARNING} ({problem}); keeping the last one read", 30)
        rig.polls(daemon, 3)  # the deep nest read again and again: said once, the daemon still there
        log = daemon.log()
        assert daemon.running, log
        assert log.count(WARNING) == 3, log
        assert "control channel thread failed" not in log
        assert "CRITICAL" not in log

        status = rig.command(daemon, "status")
        assert status.returncode == 0, status.stderr
        assert ("control channel: the control state on the broker is not understood (nested deeper than 8): run "
                "`rpcdaemon control reset`") in status.stdout
        assert "pause: unknown" in status.stdout
        title = status.stdout.splitlines()[0]  # the live view, still published and read
        assert title.startswith("rpcdaemon status: live view of the active instance "), title
        assert f":{daemon.pids[0]} (" in title
        assert f":{daemon.pids[0]} active" in status.stdout  # and the roll call
        check = rig.command(daemon, "check")
        assert check.returncode == 1
        assert check.stdout.startswith("UNKNOWN - L3Agent: ok (0 agents, 0 dead)")
        assert check.stdout.rstrip().endswith("not understood (nested deeper than 8): run `rpcdaemon control reset`")
        for argv in (["pause", "--reason", "x"], ["release-brake", "--reason", "x"], ["restore-brake"]):
            done = rig.command(daemon, *argv)
            assert done.returncode == 1
            assert done.stderr.splitlines() == [
                f"rpcdaemon {argv[0]}: error: the control state on the broker is not understood (nested deeper than "
                "8): run `rpcdaemon control reset` (it writes a fresh one); nothing was changed"]

        reset = rig.command(daemon, "control", "reset", "--reason", "garbage on the broker")
        assert reset.returncode == 0, reset.stdout + reset.stderr
        lines = reset.stdout.splitlines()
        assert lines[0] == "replaced a control state not understood (nested deeper than 8)"
        assert lines[1].startswith("control state reset: not paused, brake as configured, on every instance of group")
        assert lines[2] == f"confirmed by the active instance {lines[2].split()[-1]}"
        daemon.wait_text("control state on the broker understood again", 30)
        wait_until(lambda: any(d["event"] == "control-reset" for d in read_audit(rig.audit, missing_ok=True)), 20,
                   "the audit line")
        [audited] = [d for d in read_audit(rig.audit, missing_ok=True) if d["event"] == "control-reset"]
        assert audited["reason"] == "garbage on the broker"
        assert audited["instance"].endswith(f":{daemon.pids[0]}")
        assert "@" in audited["by"]
        assert rig.command(daemon, "pause", "--reason", "after the repair", "--no-wait").returncode == 0
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()


def test_a_daemon_started_on_a_bad_record_stays_up_holding_its_moves_until_resume(rig: Rig) -> None:
    rig.write(HUGE_INT)
    daemon = rig.daemon("b").start()
    try:
        daemon.wait_text(WARNING, 30)
        rig.polls(daemon, 3)
        log = daemon.log()
        assert daemon.running, log
        assert log.count(WARNING) == 1, log
        assert (f"{WARNING} (an integer of 401 digits); no automatic moves until it is (it may hold a pause): "
                "`rpcdaemon control reset` writes a fresh one") in log
        assert "control channel: reading the pause state before moving anything" in log  # its moves are held

        resume = rig.command(daemon, "resume")
        assert resume.returncode == 0, resume.stdout + resume.stderr
        assert resume.stdout.startswith("the control state on the broker was not understood (an integer of 401 "
                                        "digits): replaced it with a fresh one; resumed: automatic moves again")
        daemon.wait_text("control state on the broker understood again", 30)
        status = rig.command(daemon, "status")
        assert status.returncode == 0
        assert "pause: not paused" in status.stdout
        assert "not understood" not in status.stdout
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
