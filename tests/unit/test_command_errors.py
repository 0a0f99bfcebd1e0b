"""The operator commands' refusals: each a clear line and the documented exit status, never a traceback.

Neutron and the broker are unreachable ports here; the unprivileged user is a real one (``setpriv``), run as
an operator's shell would, against a configuration file only root may read.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.kit.process import RPCDAEMON, clean_env

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.cli import main
from rpcdaemon.commands import check
from rpcdaemon.commands.context import CommandContext
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import L3_AGENT


@pytest.fixture
def config(tmp_path: Path) -> Path:
    neutron = tmp_path / "neutron.conf"
    neutron.write_text("[DEFAULT]\nagent_down_time = 10\n")
    path = tmp_path / "rpcdaemon.conf"
    path.write_text("[Daemon]\nplugins = L3Agent\nrpchost = amqp://guest:s3cret@127.0.0.1:1//\n"
                    f"[L3Agent]\nendpoint = http://127.0.0.1:1\nconffile = {neutron}\n")
    path.chmod(0o600)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "s3cret" not in out + err
    return code, out, err


def test_check_cannot_tell_without_neutron(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-c", str(config), "check")
    assert code == 1
    assert out.startswith("UNKNOWN - L3Agent: cannot tell (Neutron:")
    assert "cannot reach the broker" not in out  # the line stays about Neutron; -f json has the rest


def test_status_says_what_it_cannot_read(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-c", str(config), "status")
    assert code == 1
    assert "rpcdaemon status: error: L3Agent: cannot read Neutron" in err


def test_pause_without_a_broker_changes_nothing(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-c", str(config), "pause", "--reason", "x")
    assert code == 1
    assert "cannot reach the broker amqp://guest:***@127.0.0.1:1//" in err
    assert "nothing was changed" in err
    code, _, err = run(capsys, "-c", str(config), "control", "reset")
    assert code == 1
    assert err.startswith("rpcdaemon control: error: cannot reach the broker amqp://guest:***@127.0.0.1:1//")


@pytest.mark.parametrize(("argv", "says"), [
    (("pause", "--for", "soon"), "is not a duration"),
    (("pause", "--for", "1" + "0" * 400 + "s"), "is too long a duration"),
    (("release-brake",), "--reason"),
    (("status", "-c", "nonsense"), "invalid choice: 'nonsense'"),
    (("status", "-f", "xml"), "invalid choice: 'xml'"),
    (("evacuate",), "HOST"),
    (("rebalance", "--max-moves", "0"), "--max-moves"),
    (("control",), "action"),
    (("control", "purge"), "invalid choice: 'purge' (choose from 'reset')"),
])
def test_usage_errors_exit_2(config: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
                             says: str) -> None:
    code, _, err = run(capsys, "-c", str(config), *argv)
    assert code == 2
    assert says in err


def test_release_brake_must_end_within_a_day(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-c", str(config), "release-brake", "--for", "2d", "--reason", "x")
    assert code == 2  # refused before the broker is asked
    assert "--for is at most 1d" in err


def test_daemon_options_do_not_go_with_a_command(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-d", "-c", str(config), "status")
    assert code == 2
    assert "go with the daemon, not with status" in err


def test_a_missing_configuration_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-c", str(tmp_path / "nope.conf"), "check")
    assert code == 2
    assert "nope.conf" in err


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_an_unprivileged_user_cannot_pause(config: Path) -> None:
    config.parent.chmod(0o755)
    env = clean_env()
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(RPCDAEMON),
                           "-c", str(config), "pause", "--reason", "mine now"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 2
    assert "cannot read: Permission denied" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_never_creates_the_audit_trail(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rpcdaemon.commands.context import CommandContext
    from rpcdaemon.model import no_audit

    trail = config.parent / "audit.log"
    config.write_text(config.read_text().replace("[Daemon]\n", f"[Daemon]\naudit_log = {trail}\n"))
    record, close = CommandContext.load(config).audit("evacuate")
    close()
    assert record is no_audit
    assert not trail.exists()  # created by the daemon, as its own user
    assert "does not exist yet (the daemon creates it)" in capsys.readouterr().err
    trail.touch()
    record, close = CommandContext.load(config).audit("evacuate")
    record("command", command="evacuate", phase="start", by="alice@ctl-1")
    close()
    assert '"event": "command"' in trail.read_text()


class _NeutronUp(CommandContext):
    """The configuration's context with a reachable (fake) Neutron; the broker stays unreachable."""

    def api(self, plugin: str | None = None) -> NeutronAPI:
        api = FakeNeutron()
        api.add_agent(L3_AGENT, "net-1")
        return api


def test_check_without_the_broker_is_unknown_not_ok(config: Path) -> None:
    ctx = _NeutronUp.load(config)
    out = io.StringIO()
    code = check.run(argparse.Namespace(format="line"), ctx, out, "check")
    line = out.getvalue()
    assert code == 1
    assert line.startswith("UNKNOWN - L3Agent: ok (1 agents, 0 dead) (Neutron's verdicts; cannot reach the broker ")
    assert "no daemon acting" not in line
    assert "s3cret" not in line


def test_keystoneauth_warnings_are_the_commands_own_lines(tmp_path: Path) -> None:
    neutron = tmp_path / "neutron.conf"
    neutron.write_text("[DEFAULT]\nagent_down_time = 10\n[keystone_authtoken]\nauth_type = password\n"
                       "auth_url = http://127.0.0.1:1/v3\nusername = neutron\npassword = s3cret\n"
                       "project_name = service\nuser_domain_name = Default\nproject_domain_name = Default\n")
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text(f"[Daemon]\nplugins = L3Agent\nrpchost = amqp://guest:s3cret@127.0.0.1:1//\n"
                    f"[L3Agent]\nconffile = {neutron}\n")
    conf.chmod(0o600)
    env = clean_env()
    done = subprocess.run([str(RPCDAEMON), "-c", str(conf), "check"], capture_output=True, text=True, timeout=60,
                          env=env, check=False)
    assert done.returncode == 1
    assert done.stdout.startswith("UNKNOWN - L3Agent: cannot tell (Neutron:")
    # keystoneauth logs its failed version discovery: through rpcdaemon's handler, not Python's last resort
    assert "rpcdaemon check: warning: keystoneauth: Failed to discover available identity versions" in done.stderr
    for line in done.stderr.splitlines():
        assert line.startswith("rpcdaemon check: "), line
    assert "s3cret" not in done.stdout + done.stderr
