"""Preflight: what the configuration check cannot see, found before start as one line (exit 2)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rpcdaemon.broker.checks import check_url
from rpcdaemon.cli import main
from rpcdaemon.config.neutronconf import resolve_settings
from rpcdaemon.config.settings import load_settings
from rpcdaemon.daemon.preflight import Checkers, PreflightError, run_checks


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("amqp://u:s3cret@127.0.0.1:notaport//", "port is not a number"),
        ("amqp://u:pa/s3cret@127.0.0.1:5672//", "%2F"),
        ("amqp://u:p@h1:5672/v;amqp://u:s3cret@h2:99999/v", "h2"),  # the second alternate too
        ("nosuch://h1//", "unknown transport"),
    ],
)
def test_check_url_rejects_in_one_line_without_the_password(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="broker URL") as info:
        check_url(url)
    text = str(info.value)
    assert says in text
    assert "s3cret" not in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@127.0.0.1:5672//", "amqp://u:p%2Fx@h1:5672/v;amqp://u:p@h2/v", "memory://"]
)
def test_check_url_accepts_what_kombu_can_use(url: str) -> None:
    assert len(check_url(url)) == url.count(";") + 1


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "neutron.conf").write_text("[DEFAULT]\n")
    path = tmp_path / "rpcdaemon.conf"
    path.write_text(text.replace("NEUTRON", str(tmp_path / "neutron.conf")))
    return path


def checks(path: Path, *, starting: bool, cloud_error: str | None = None) -> None:
    settings = load_settings(path)

    def check_cloud(name: str) -> None:
        if cloud_error:
            raise ValueError(cloud_error)

    run_checks(settings, resolve_settings(settings), starting=starting,
               checkers=Checkers(check_url=check_url, check_cloud=check_cloud))


def test_bad_cloud_and_unresolvable_metrics_address_are_caught(tmp_path: Path) -> None:
    path = write(tmp_path, "[Daemon]\nplugins = L3Agent\nrpchost = 127.0.0.1\n[L3Agent]\nconffile = NEUTRON\n"
                 "cloud = nosuchcloud\n")
    with pytest.raises(PreflightError, match=r"\[L3Agent\] cloud: .*nosuchcloud"):
        checks(path, starting=False, cloud_error="clouds.yaml cloud 'nosuchcloud': not found")
    checks(path, starting=False)
    path = write(tmp_path, "[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\nmetrics_port = 9465\n"
                 "metrics_address = no-such-host.invalid\n")
    with pytest.raises(PreflightError, match=r"metrics_address = no-such-host\.invalid: does not resolve"):
        checks(path, starting=False)


def test_metrics_port_in_use_is_caught_on_the_start_path_only(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(tmp_path, f"[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\nmetrics_port = {port}\n"
                     "metrics_address = 127.0.0.1\n")
        checks(path, starting=False)  # --check-config may run next to the live daemon
        with pytest.raises(PreflightError, match="the port is in use"):
            checks(path, starting=True)


def test_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[Daemon]\nplugins = Dump\nrpchost = amqp://u:pa/s3cret@127.0.0.1:5672//\n")
    ran: list[bool] = []
    for extra in (["--check-config"], ["-d"]):
        code = main(["-c", str(path), *extra], runner=lambda *a, **k: ran.append(True) or 0)  # type: ignore[func-returns-value]
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1
        assert "broker URL" in err
        assert "s3cret" not in err
    assert not ran


# Host names the socket module refuses before any lookup (its 'idna' encoding raises UnicodeError),
# and one DNS cannot carry (over 253 characters); each with what the message says.
UNUSABLE_HOSTS = {
    "empty label": ("rabbit..example.com", "an empty label"),
    "leading dot": (".example.com", "an empty label"),
    "label of 64": ("a" * 64 + ".example.com", "a label of 64 characters (at most 63)"),
    "10,000 characters": ("a" * 10_000, "a label of 10000 characters (at most 63)"),
    "lone surrogate": ("rabbit\udcff.example.com", "not a valid internationalised domain name"),
    "over 253": ("abc." * 64 + "com", "259 characters long (at most 253)"),
}


@pytest.mark.parametrize(("host", "says"), UNUSABLE_HOSTS.values(), ids=UNUSABLE_HOSTS.keys())
def test_check_url_refuses_a_host_name_the_connection_cannot_look_up(host: str, says: str) -> None:
    if "at most 253" not in says:  # what the connection would meet (the last one is a resolver error)
        with pytest.raises(UnicodeError):
            socket.getaddrinfo(host, 5672)
    for url in (f"amqp://u:s3cret@{host}:5672//", f"amqp://u:p@127.0.0.1//;amqps://u:s3cret@{host}//"):
        with pytest.raises(ValueError, match="broker URL") as info:
            check_url(url)
        text = str(info.value)
        assert "cannot be looked up: it " in text
        assert says in text
        assert "s3cret" not in text
        assert "\n" not in text
        assert len(text) < 500  # a 10,000-character name is shortened, not quoted whole


@pytest.mark.parametrize("host", ["rabbit.example.com.", "b\u00fccher.example", "x" * 63 + ".example.com",
                                  "[::1]", "[fe80::1%25eth0]", "10.0.0.1", "abc." * 62 + "com"])
def test_check_url_accepts_a_host_name_the_socket_takes(host: str) -> None:
    assert check_url(f"amqp://u:p@{host}:5672//") == [f"amqp://u:***@{host}:5672//"]


@pytest.mark.parametrize("url", ["amqp://u:s3cret@rabbit:0//", "amqp://u:p@h1:5672//;amqp://u:s3cret@h2:0//"])
def test_check_url_refuses_port_0_rather_than_taking_5672(url: str) -> None:
    with pytest.raises(ValueError, match="port is not a number between 1 and 65535") as info:
        check_url(url)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(("rpchost", "says"), [
    ("amqp://u:s3cret@rabbit..example.com:5672//", "host name 'rabbit..example.com' cannot be looked up"),
    ("rabbit:0", "the port is not a number between 1 and 65535"),
    ("rabbit://u:s3cret@" + "a" * 10_000 + ":5672/", "a label of 10000 characters"),
])
def test_an_unusable_broker_url_exits_2_on_check_config_and_on_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], rpchost: str, says: str) -> None:
    path = write(tmp_path, f"[Daemon]\nplugins = Dump\nrpchost = {rpchost}\n")
    ran: list[bool] = []
    for extra in (["--check-config"], ["-d"]):  # the same check on both paths: they cannot disagree
        code = main(["-c", str(path), *extra], runner=lambda *a, **k: ran.append(True) or 0)  # type: ignore[func-returns-value]
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith(f"rpcdaemon: error: {path}: [Daemon] rpchost: broker URL ")
        assert says in err
        assert err.count("\n") == 1
        assert "s3cret" not in err
    assert not ran  # never started, so never a retry loop


def test_an_unusable_transport_url_host_names_neutron_conf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    neutron = tmp_path / "neutron.conf"
    path = tmp_path / "rpcdaemon.conf"
    path.write_text(f"[Daemon]\nplugins = DHCPAgent\n[DHCPAgent]\nconffile = {neutron}\nendpoint = http://n:9696\n")
    neutron.write_text("[DEFAULT]\ntransport_url = rabbit://u:s3cret@ctl1:5672,u:s3cret@ctl..2:5672/\n")
    assert main(["-c", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rpcdaemon: error: {neutron}: [DEFAULT] transport_url: broker URL amqp://u:***@ctl..2:5672//")
    assert "s3cret" not in err
