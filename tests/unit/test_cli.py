"""The rpcdaemon command in-process (foreground only; detaching is tested on real processes in
tests/component/test_daemon_process.py), with an injected runner instead of the service."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rpcdaemon import __version__
from rpcdaemon.cli import DEFAULT_CONFIG, main
from rpcdaemon.config.settings import Settings
from rpcdaemon.redact import mask_text

NEUTRON_CONF = """[DEFAULT]
transport_url = rabbit://openstack:rabbitpw@10.0.0.1:5672/
[keystone_authtoken]
auth_url = http://10.0.0.2:5000/v3
username = neutron
password = keystonepw
project_name = service
"""


@dataclass
class Recorder:
    """A runner that records how it was called, optionally does something, and returns ``code``."""

    code: int = 0
    action: Callable[[threading.Event], None] | None = None
    calls: list[tuple[Settings, bool]] = field(default_factory=list)

    def __call__(self, settings: Settings, stop: threading.Event, *, foreground: bool) -> int:
        self.calls.append((settings, foreground))
        if self.action is not None:
            self.action(stop)
        return self.code


BROKER = "amqp://guest:brokerpw@127.0.0.1:5672//"


def write_config(tmp_path: Path, body: str = "", *, plugins: str = "Dump", rpchost: str = BROKER) -> Path:
    """rpcdaemon.conf in tmp_path: [Daemon] with plugins, rpchost, pidfile, logfile (lines 1-5), then ``body``."""
    (tmp_path / "neutron.conf").write_text(NEUTRON_CONF)
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text(f"[Daemon]\nplugins = {plugins}\nrpchost = {rpchost}\n"
                    f"pidfile = {tmp_path / 'r.pid'}\nlogfile = {tmp_path / 'r.log'}\n{body}")
    return conf


def test_foreground_runs_the_runner_with_the_settings_and_returns_its_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = Recorder(code=7)
    conf = write_config(tmp_path)
    assert main(["-d", "-c", str(conf)], runner=runner) == 7
    [(settings, foreground)] = runner.calls
    assert foreground is True
    assert settings.daemon.plugins == ("Dump",)
    assert settings.source == str(conf)
    assert not (tmp_path / "r.pid").exists(), "the foreground writes no pidfile"
    assert not (tmp_path / "r.log").exists(), "the foreground logs to stderr, not the logfile"
    err = capsys.readouterr().err
    assert f"rpcdaemon {__version__} starting (pid {os.getpid()}, foreground, config {conf})" in err
    assert "rpcdaemon exiting (status 7)" in err


def test_relative_config_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = Recorder()
    assert main(["-d", "-c", "rpcdaemon.conf"], runner=runner) == 0
    assert runner.calls[0][0].source == str(tmp_path / "rpcdaemon.conf")


def test_dry_run_and_filter_options_override_the_file(tmp_path: Path) -> None:
    runner = Recorder()
    conf = write_config(tmp_path, "dry_run = false\n[Dump]\nfilter = host == 'a'\n")
    assert main(["-d", "-c", str(conf), "--dry-run", "--filter", "method == 'report_state'"], runner=runner) == 0
    settings = runner.calls[0][0]
    assert settings.daemon.dry_run is True
    assert settings.dump.filter == "method == 'report_state'"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_sets_the_stop_event(tmp_path: Path, capsys: pytest.CaptureFixture[str], signum: int) -> None:
    seen: list[bool] = []

    def wait_for_signal(stop: threading.Event) -> None:
        os.kill(os.getpid(), signum)
        seen.append(stop.wait(5.0))

    before = signal.getsignal(signum)
    started = time.monotonic()
    assert main(["-d", "-c", str(write_config(tmp_path))], runner=Recorder(action=wait_for_signal)) == 0
    assert seen == [True]
    assert time.monotonic() - started < 3.0
    assert signal.getsignal(signum) is before, "the previous handler is restored"
    assert f"received {signal.Signals(signum).name}, stopping" in capsys.readouterr().err


def test_a_crashing_runner_exits_1_and_is_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def crash(stop: threading.Event) -> None:
        raise RuntimeError("boom")

    assert main(["-d", "-c", str(write_config(tmp_path))], runner=Recorder(action=crash)) == 1
    err = capsys.readouterr().err
    assert "rpcdaemon failed" in err
    assert "RuntimeError: boom" in err


def test_logging_levels_format_and_masking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def chatter(stop: threading.Event) -> None:
        logging.getLogger("rpcdaemon.l3agent").debug("l3 debug line")
        logging.getLogger("rpcdaemon.l3agent").error("l3 error line")
        logging.getLogger("rpcdaemon.dump").debug("dumped amqp://guest:brokerpw@127.0.0.1//")
        logging.getLogger("rpcdaemon").info("connecting with password=keystonepw")
        logging.getLogger("kombu").info("kombu chatter")
        logging.getLogger("kombu").warning("kombu trouble")

    root_handlers = list(logging.getLogger().handlers)
    conf = write_config(tmp_path, "loglevel = INFO\n[L3Agent]\nloglevel = ERROR\n[Dump]\nloglevel = DEBUG\n")
    assert main(["-d", "-c", str(conf)], runner=Recorder(action=chatter)) == 0
    err = capsys.readouterr().err
    assert "l3 debug line" not in err
    assert " ERROR   rpcdaemon.l3agent: l3 error line" in err
    assert "rpcdaemon.dump: dumped amqp://guest:***@127.0.0.1//" in err
    assert "password=***" in err
    assert "kombu chatter" not in err
    assert "kombu trouble" in err
    assert "brokerpw" not in err
    assert "keystonepw" not in err
    assert logging.getLogger().handlers == root_handlers, "main() removes its handler when it returns"


def test_foreground_default_level_is_debug(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def debug(stop: threading.Event) -> None:
        logging.getLogger("rpcdaemon.l3agent").debug("visible at the seed's foreground default")

    assert main(["-d", "-c", str(write_config(tmp_path))], runner=Recorder(action=debug)) == 0
    assert "visible at the seed's foreground default" in capsys.readouterr().err


def test_unknown_keys_are_warnings_with_allow_unknown_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path, "allow_unknown_keys = true\ncolour = blue\n")
    assert main(["-d", "-c", str(conf)], runner=Recorder()) == 0
    assert f"WARNING rpcdaemon: {conf}, line 7: [Daemon] colour: ignored unknown key" in capsys.readouterr().err
    assert main(["-c", str(conf), "--check-config"], runner=Recorder()) == 0
    assert f"rpcdaemon: warning: {conf}, line 7: [Daemon] colour: ignored unknown key" in capsys.readouterr().err


def test_all_errors_of_a_file_exit_2_in_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = Recorder()
    conf = write_config(tmp_path, "chek_interval = 1\n[l3agent]\ntimeout = 5\n[DHCPAgent]\nagents_per_netwrok = 2\n"
                        "timeout = 1e300\n")
    for mode in (["-d"], [], ["--check-config"]):
        assert main([*mode, "-c", str(conf)], runner=runner) == 2
        captured = capsys.readouterr()
        assert captured.err.splitlines() == [
            f"rpcdaemon: error: {conf}: 4 errors:",
            f"{conf}, line 6: [Daemon] chek_interval: unknown key; did you mean check_interval?",
            f"{conf}, line 7: [l3agent]: unknown section (names are case-sensitive); did you mean [L3Agent]?",
            f"{conf}, line 10: [DHCPAgent] agents_per_netwrok: unknown key; did you mean agents_per_network?",
            f"{conf}, line 11: [DHCPAgent] timeout = '1e300': expected a number of seconds from 1 to 600 "
            "(1e+300 is above the maximum 600)",
        ]
        assert captured.out == ""
    assert runner.calls == []
    assert not (tmp_path / "r.pid").exists()


def test_check_config_prints_effective_settings_with_secrets_masked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path, "[L3Agent]\nconffile = neutron.conf\n", plugins="L3Agent", rpchost="")
    runner = Recorder()
    assert main(["-c", str(conf), "--check-config"], runner=runner) == 0
    assert runner.calls == []
    out = capsys.readouterr().out
    assert f"# {conf}: valid." in out
    assert "plugins = L3Agent\n" in out
    assert f"conffile = {tmp_path / 'neutron.conf'}\n" in out
    assert "# broker: amqp://openstack:***@10.0.0.1:5672//" in out
    assert "# L3Agent: Neutron via Keystone http://10.0.0.2:5000/v3 as neutron@service; agent_down_time 75 s" in out
    assert "rabbitpw" not in out
    assert "keystonepw" not in out


@pytest.mark.parametrize(
    ("body", "argv", "expected"),
    [
        ("check_interval = soon\n", [], "line 6: [Daemon] check_interval = 'soon': expected a number of seconds"),
        ("check_interval = 1e-9\n", [], "check_interval = '1e-9': expected a number of seconds from 0.1 to 600 "
         "(1e-09 is below the minimum 0.1)"),
        ("colour = red\n", [], "line 6: [Daemon] colour: unknown key"),
        ("metrics_port = 99999\n", [], "[Daemon] metrics_port = '99999': expected a TCP port"),
        ("dry_run\n", [], "line 6: cannot parse 'dry_run'"),
        ("[L3Agent]\ntimeout = 3\ntimeout = 4\n", [], "line 8: [L3Agent] timeout: duplicate key"),
        ("[Dump]\nqueue = a\n[Dump]\n", [], "line 8: [Dump]: duplicate section"),
        ("", ["--filter", "[?"], "--filter: [Dump] filter = '[?': expected a JMESPath expression"),
    ],
)
def test_config_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str,
                                               argv: list[str], expected: str) -> None:
    runner = Recorder()
    conf = write_config(tmp_path, body)
    for mode in (["-d"], [], ["--check-config"]):
        assert main([*mode, "-c", str(conf), *argv], runner=runner) == 2
        captured = capsys.readouterr()
        [line] = captured.err.splitlines()
        assert line.startswith("rpcdaemon: error: ")
        assert expected in line
        assert "Traceback" not in captured.err
        assert captured.out == ""
    assert runner.calls == []
    assert not (tmp_path / "r.pid").exists()


@pytest.mark.parametrize(
    ("plugins", "body", "expected"),
    [
        ("L3Agent Router", "", "[Daemon] plugins = 'L3Agent Router': expected space-separated names from: "
         "L3Agent DHCPAgent Dump (unknown plugin 'Router')"),
        ("L3Agent", "[L3Agent]\nconffile = nowhere.conf\n", "[L3Agent] conffile = "),
    ],
)
def test_plugin_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], plugins: str, body: str,
                              expected: str) -> None:
    assert main(["-d", "-c", str(write_config(tmp_path, body, plugins=plugins))], runner=Recorder()) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("rpcdaemon: error: ")
    assert expected in line


def test_neutron_conf_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_config(tmp_path, "[DHCPAgent]\nconffile = neutron.conf\n", plugins="DHCPAgent", rpchost="")
    (tmp_path / "neutron.conf").write_text("[DEFAULT]\nagent_down_time = never\n")
    assert main(["-d", "-c", str(conf)], runner=Recorder()) == 2
    assert capsys.readouterr().err == (f"rpcdaemon: error: {tmp_path / 'neutron.conf'}: [DEFAULT] agent_down_time = "
                                       "'never': expected a number of seconds > 0\n")
    (tmp_path / "neutron.conf").write_text("[DEFAULT]\n")
    assert main(["-d", "-c", str(conf)], runner=Recorder()) == 2
    assert "no usable Neutron credentials: missing auth_url, username, password" in capsys.readouterr().err


def test_missing_config_file_says_how_to_get_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["-d", "-c", str(tmp_path / "absent.conf")], runner=Recorder()) == 2
    error, hint = capsys.readouterr().err.splitlines()
    assert error == f"rpcdaemon: error: {tmp_path / 'absent.conf'}: no such file"
    assert f"rpcdaemon --print-example-config > {tmp_path / 'absent.conf'}" in hint
    assert "rpcdaemon demo" in hint
    # Bare `rpcdaemon`: the default path, relative to nothing.
    monkeypatch.chdir(tmp_path)
    if not DEFAULT_CONFIG.exists():
        assert main([], runner=Recorder()) == 2
        error, hint = capsys.readouterr().err.splitlines()
        assert error == f"rpcdaemon: error: {DEFAULT_CONFIG}: no such file"
        assert f"rpcdaemon --print-example-config > {DEFAULT_CONFIG}" in hint


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-such-option"], runner=Recorder()) == 2
    assert "rpcdaemon: error: unrecognized arguments: --no-such-option" in capsys.readouterr().err
    assert main(["-c"], runner=Recorder()) == 2
    assert "expected one argument" in capsys.readouterr().err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"rpcdaemon {__version__}\n"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("-d", "-c FILE", "--dry-run", "--filter EXPR", "--check-config", "--print-example-config",
                   "--version", "demo", "/usr/local/etc/rpcdaemon.conf", "Exit status"):
        assert option in out


def test_print_example_config_matches_the_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print-example-config"]) == 0
    shipped = Path(__file__).resolve().parents[2] / "etc" / "rpcdaemon.conf.example"
    assert capsys.readouterr().out == shipped.read_text()


def test_demo_subcommand_hands_the_rest_of_the_line_to_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: rpcdaemon demo" in out
    assert "--routers" in out
    # The demo's own validation runs on the passed-through options (and refuses before simulating).
    assert main(["demo", "--l3-agents", "1"]) == 2
    assert "--l3-agents >= 2" in capsys.readouterr().err


def test_mask_text() -> None:
    assert mask_text("amqp://u:p@h1//;amqp://u:p2@h2//") == "amqp://u:***@h1//;amqp://u:***@h2//"
    assert mask_text("admin_password = abc def") == "admin_password = *** def"
    assert mask_text("{'password': 'a b', \"token\": \"t\"}") == "{'password': '***', \"token\": \"***\"}"
    assert mask_text("X-Auth-Token: gAAAA123") == "X-Auth-Token: ***"
    assert mask_text("http://host:9696/v2.0/agents") == "http://host:9696/v2.0/agents"
    assert mask_text("agent_down_time=75 timeout=30") == "agent_down_time=75 timeout=30"


@pytest.mark.parametrize("bad", ["kafka://openstack:s3cret@k:9092/", "rabbit://openstack:s3cret@ctl1/?ssl=maybe"])
def test_a_broken_transport_url_is_only_a_warning_when_rpchost_overrides_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    conf = write_config(tmp_path, "[L3Agent]\nconffile = neutron.conf\n", plugins="L3Agent")
    neutron = tmp_path / "neutron.conf"
    neutron.write_text(NEUTRON_CONF.replace("rabbit://openstack:rabbitpw@10.0.0.1:5672/", bad))
    assert main(["--check-config", "-c", str(conf)]) == 0
    captured = capsys.readouterr()
    [warning] = captured.err.splitlines()
    assert warning.startswith(f"rpcdaemon: warning: {neutron}: [DEFAULT] transport_url = ")
    assert warning.endswith(f"(ignored: {conf} [Daemon] rpchost is set)")
    assert "s3cret" not in warning
    assert "# broker: amqp://guest:***@127.0.0.1:5672//" in captured.out
    recorder = Recorder()
    assert main(["-d", "-c", str(conf)], runner=recorder) == 0  # the start too, warning logged
    assert recorder.calls
    assert "[DEFAULT] transport_url" in capsys.readouterr().err
    conf = write_config(tmp_path, "[L3Agent]\nconffile = neutron.conf\n", plugins="L3Agent", rpchost="")
    neutron.write_text(NEUTRON_CONF.replace("rabbit://openstack:rabbitpw@10.0.0.1:5672/", bad))
    assert main(["--check-config", "-c", str(conf)]) == 2  # the broker's URL after all: refused
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith(f"rpcdaemon: error: {neutron}: [DEFAULT] transport_url = ")
    assert "s3cret" not in error
