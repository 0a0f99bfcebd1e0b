"""Every output path, fed secrets of every awkward shape: not one secret reaches the output.

The paths: ``--check-config`` (rpcdaemon.conf rpchost, neutron.conf transport_url and
[keystone_authtoken] password), the configuration error lines (unsupported schemes), log records through
``logs.MaskingFormatter``, the Dump plugin's lines (plain and verbose) and the Prometheus metrics text.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from pathlib import Path

import prometheus_client
import pytest

from rpcdaemon.broker.amqpurl import url_for_log
from rpcdaemon.broker.link import RawMessage
from rpcdaemon.cli import main
from rpcdaemon.config.settings import ConfigError
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.model import Agent, Heartbeat
from rpcdaemon.observing.decode import Rejected, decode_message
from rpcdaemon.plugins.dump import DumpPlugin
from rpcdaemon.plugins.report import PassReport
from rpcdaemon.telemetry.logs import FORMAT, MaskingFormatter
from rpcdaemon.telemetry.metrics import Metrics

# Each secret's pieces are distinctive, so a partial leak ("the part after the space") is caught too.
SECRETS = {
    "plain": "Pl4inSecret",
    "slash": "Sl4shHead/Sl4shTail",
    "space": "Sp4ceHead Sp4ceTail",
    "at": "At4Head@At4Tail",
    "percent": "Pct4Head%2FPct4Tail%40",
    "semicolon": "Semi4Head;Semi4Tail",
    "hash": "H4shHead#H4shTail",
    "comma-colon": "C0mmaHead:C0mmaTail",
}
SECOND = "SecondPW7x"  # the second host's password in multi-host URLs
TOKEN = "gAAAAABtok3nValue"


def pieces(secret: str) -> list[str]:
    return [p for p in re.split(r"[ /@;#%:,]", secret) if len(p) >= 4] + [secret, SECOND, TOKEN]


def assert_clean(text: str, secret: str) -> None:
    for piece in pieces(secret):
        assert piece not in text, f"{piece!r} leaked in:\n{text}"


def urls(secret: str) -> list[str]:
    return [
        f"rabbit://openstack:{secret}@ctl1:5672,openstack:{SECOND}@ctl2:5672/neutron",
        f"amqp://openstack:{secret}@ctl1:5672//;amqp://openstack:{SECOND}@ctl2:5672//",
        f"amqp://openstack:{secret}@ctl1:5672/neutron",
    ]


def run_cli(capsys: pytest.CaptureFixture[str], conf: Path, *extra: str) -> tuple[int, str]:
    def never_run(settings: object, stop: object, *, foreground: bool) -> int:
        raise AssertionError("--check-config does not run the daemon")

    code = main(["--check-config", "-c", str(conf), *extra], runner=never_run)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out + captured.err


def write(tmp_path: Path, rpchost: str, neutron: str = "", plugins: str = "Dump") -> Path:
    (tmp_path / "neutron.conf").write_text(neutron)
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text(f"[Daemon]\nplugins = {plugins}\nrpchost = {rpchost}\n[L3Agent]\nconffile = neutron.conf\n")
    return conf


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_check_config_and_error_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str], secret: str) -> None:
    for url in urls(secret):
        code, text = run_cli(capsys, write(tmp_path, url))
        assert code in (0, 2)
        assert_clean(text, secret)
        if code == 0:
            [broker] = [line for line in text.splitlines() if line.startswith("# broker: ")]
            assert "openstack:***@ctl" in broker
    for url in (f"qpid://openstack:{secret}@ctl1:5672//", f"openstack:{secret}@ctl1:5672"):
        code, text = run_cli(capsys, write(tmp_path, url))
        assert code == 2
        assert_clean(text, secret)


def neutron_conf(transport_url: str, password: str) -> str:
    return (f"[DEFAULT]\ntransport_url = {transport_url}\n[keystone_authtoken]\nauth_url = http://10.0.0.2:5000/v3\n"
            f"username = neutron\npassword = {password}\nproject_name = service\n")


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_check_config_from_neutron_conf(tmp_path: Path, capsys: pytest.CaptureFixture[str], secret: str) -> None:
    url = f"rabbit://openstack:{secret}@ctl1:5672,openstack:{SECOND}@ctl2:5672/neutron"
    conf = write(tmp_path, "", neutron_conf(url, secret), plugins="L3Agent")
    code, text = run_cli(capsys, conf)
    assert code in (0, 2)
    assert_clean(text, secret)
    for bad in (f"kafka://openstack:{secret}@ctl1:9092", f"rabbit:/openstack:{secret}@ctl1"):
        code, text = run_cli(capsys, write(tmp_path, "", neutron_conf(bad, secret), plugins="L3Agent"))
        assert code == 2
        assert "transport_url" in text
        assert_clean(text, secret)


def format_record(message: str, *args: object, exc: BaseException | None = None) -> str:
    record = logging.LogRecord("rpcdaemon", logging.ERROR, __file__, 1, message, args,
                               (type(exc), exc, exc.__traceback__) if exc else None)
    return MaskingFormatter(FORMAT).format(record)


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_log_records(secret: str) -> None:
    lines = []
    for url in urls(secret):
        lines.append(format_record("bus %s", url_for_log(url)))
        lines.append(format_record("connecting to %s failed", url))  # a raw URL: the last resort
        lines.append(format_record("settings %r", {"rpchost": url, "password": secret}))
        try:
            raise ConnectionError(f"cannot reach {url}")
        except ConnectionError as exc:
            lines.append(format_record("lost the bus", exc=exc))
    lines.append(format_record("request headers %r", {"X-Auth-Token": TOKEN}))
    lines.append(format_record("%s", ConfigError("Daemon", "rpchost", f"qpid://u:{secret}@h", "unsupported")))
    assert_clean("\n".join(lines), secret)


def oslo_body(secret: str) -> bytes:
    inner = {
        "method": "report_state",
        "args": {"agent_state": {"agent_state": {
            "host": "net-1", "agent_type": "L3 agent", "binary": "neutron-l3-agent", "topic": "l3_agent",
            "configurations": {"password": secret, "transport_url": urls(secret)[0]}}},
            "time": "2026-11-25T09:04:05.499087"},
        "_context_auth_token": TOKEN,
        "_context_auth_token_info": {"token": {"id": TOKEN}},
        "_context_user_name": "neutron",
        "_msg_id": "4062e717",
        "extra": {"admin_password": secret, "urls": urls(secret), "note": f"password='{secret}'"},
    }
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
@pytest.mark.parametrize("verbose", [False, True], ids=["plain", "verbose"])
def test_dump_lines(secret: str, verbose: bool) -> None:
    out = io.StringIO()
    dump = DumpPlugin("neutron", None, out, verbose=verbose, wallclock=lambda: 0.0)
    bodies = [
        oslo_body(secret),
        json.dumps({"method": "x", "args": {"password": secret, "auth_token": TOKEN}}).encode(),
        # Undecodable (cut short): only the text filter stands between the bytes and the terminal.
        json.dumps({"password": secret, "url": urls(secret)[0], "token": TOKEN}).encode()[:-1],
    ]
    for body in bodies:
        dump.handle(RawMessage("neutron", "q-reports-plugin", body, "application/json", "utf-8", 0.0))
    text = out.getvalue()
    assert dump.printed == 3
    assert "host=net-1" in text
    assert_clean(text, secret)
    if verbose:
        assert '"_context_auth_token":"***"' in text


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_metrics(secret: str) -> None:
    metrics = Metrics()
    heartbeats = []
    for body in (oslo_body(secret), json.dumps({"method": secret, "password": secret}).encode(), secret.encode()):
        event = decode_message(body, routing_key="q-reports-plugin", received_at=1.0)
        if isinstance(event, Heartbeat):
            metrics.heartbeats.inc()
            heartbeats.append(event)
        elif isinstance(event, Rejected):
            metrics.rejected.labels(event.kind).inc()
    assert heartbeats
    agent = Agent("a1", heartbeats[0].agent_type, heartbeats[0].host)
    metrics.observe_pass("L3Agent", PassReport(judged={"a1": Judged(agent, Verdict.ALIVE, "heard")}))
    metrics.observe_bus(True)
    text = prometheus_client.generate_latest(metrics.registry).decode()
    assert 'host="net-1"' in text
    assert_clean(text, secret)


def test_the_table_catches_a_leak(capsys: pytest.CaptureFixture[str]) -> None:
    # The checker itself: a raw secret piece in the output fails it.
    with pytest.raises(AssertionError):
        assert_clean("amqp://u:Sp4ceHead ***@h", SECRETS["space"])
    print("ok", file=sys.stderr)
    assert capsys.readouterr().err == "ok\n"
