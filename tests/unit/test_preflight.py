"""Preflight: what the configuration check cannot see, found before start as one line (exit 2)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rpcdaemon.cli import main
from rpcdaemon.neutronconf import resolve_settings
from rpcdaemon.observing.bus import check_url
from rpcdaemon.preflight import Checkers, PreflightError, run_checks
from rpcdaemon.settings import load_settings


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
        code = main(["-c", str(path), *extra], runner=lambda *a, **k: ran.append(True) or 0)
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1
        assert "broker URL" in err
        assert "s3cret" not in err
    assert not ran
