"""rpcdaemon.redact: URLs rebuilt without passwords, secret keys of decoded bodies replaced, and the
last-resort text filter, which must stay linear whatever the text."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rpcdaemon.config.settings import ConfigError, parse_settings
from rpcdaemon.redact import is_secret_key, mask_text, redact_mapping, redact_url, redact_value, redact_within


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@host//", "amqp://guest:***@host//"),
        ("amqp://u:p@h1:5672/v;amqp://u:q@h2:5672/v", "amqp://u:***@h1:5672/v;amqp://u:***@h2:5672/v"),
        ("rabbit://openstack:FirstPW@ctl1:5672,openstack:SecondPW@ctl2:5672/neutron",
         "rabbit://openstack:***@ctl1:5672,openstack:***@ctl2:5672/neutron"),
        ("rabbit://a:x@h1,b:y@h2,c:z@h3:5671/v?ssl=1", "rabbit://a:***@h1,b:***@h2,c:***@h3:5671/v?ssl=1"),
        ("amqp://u:pa/ss@h//", "amqp://u:***@h//"),
        ("amqp://u:pa ss@h:5672//", "amqp://u:***@h:5672//"),
        ("amqp://u:p@ss@h//", "amqp://u:***@h//"),
        ("amqp://u:p%2F%40w@h//", "amqp://u:***@h//"),
        ("amqp://u:pa;ss@h//", "amqp://u:***@h//"),
        ("rabbit://u:a,b@h1,w:c@d@h2/v", "rabbit://u:***@h1,w:***@h2/v"),
        ("amqp://u:p@[fd00::1]:5672//", "amqp://u:***@[fd00::1]:5672//"),
        ("kafka://u:pw@h:9092", "kafka://u:***@h:9092"),
        ("amqp://guest@host//", "amqp://guest@host//"),
        ("amqp://host//", "amqp://host//"),
        ("amqp://[::1]:5672//", "amqp://[::1]:5672//"),
        ("memory://", "memory://"),
        ("10.0.0.5", "10.0.0.5"),
        ("rabbit:/u:typo@h", "***@h"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amqp://u:p@h1//;amqp://u:p2@h2//", "amqp://u:***@h1//;amqp://u:***@h2//"),
        ("bus rabbit://o:FirstPW@c1:5672,o:SecondPW@c2:5672/n up", "bus rabbit://o:***@c1:5672,o:***@c2:5672/n up"),
        ("rpchost = amqp://u:pa ss@h// more", "rpchost = amqp://u:***@h// more"),
        ("admin_password = abc def", "admin_password = *** def"),
        ("{'password': 'a b', \"token\": \"t\"}", "{'password': '***', \"token\": \"***\"}"),
        ('{"_context_auth_token":"gAAA","u":"amqp://a:b@c//"}', '{"_context_auth_token":"***","u":"amqp://a:***@c//"}'),
        ("X-Auth-Token: gAAAA123", "X-Auth-Token: ***"),
        ("http://host:9696/v2.0/agents for a@b", "http://host:9696/v2.0/agents for a@b"),
        ("agent_down_time=75 timeout=30 tokens_count=4", "agent_down_time=75 timeout=30 tokens_count=4"),
        ("no secrets here", "no secrets here"),
        ("api_key=abc def", "api_key=*** def"),
        ("{'apiKey': 'k1', 'private_key': 'pem'}", "{'apiKey': '***', 'private_key': '***'}"),
        ("pw=abc db_pw: x upward: y", "pw=*** db_pw: *** upward: y"),
        ("Authorization: Basic dXNlcjpwYXNz more", "Authorization: Basic *** more"),
        ("{'Authorization': 'Basic YTpi'}", "{'Authorization': 'Basic ***'}"),
        ("Basic Authentication failed: basic settings", "Basic Authentication failed: basic settings"),
        ("ipmitool -I lanplus -H h -U fence -P s3cret chassis power off",
         "ipmitool -I lanplus -H h -U fence -P *** chassis power off"),
        ("fence_ipmilan -P -a 10.0.0.1 -l admin -p s3cret -o off",
         "fence_ipmilan -P -a 10.0.0.1 -l admin -p *** -o off"),
        ("fence_x --password s3cret --passwd 'p w' x", "fence_x --password *** --passwd '***' x"),
        ("('/usr/bin/ipmitool', '-P', 's3cret', 'power')", "('/usr/bin/ipmitool', '-P', '***', 'power')"),
        ("ssh -p 2222 root@h q-plugin -pdq", "ssh -p 2222 root@h q-plugin -pdq"),
    ],
)
def test_mask_text(text: str, shown: str) -> None:
    assert mask_text(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "Unable to establish connection to http://127.0.0.1:1/v3/auth/tokens: HTTPConnectionPool(host='127.0.0.1',"
        " port=1): Max retries exceeded",
        "rpcdaemon.conf, line 5: [Daemon] rabbit_password: ignored unknown key (see --print-example-config)",
        "# warning: neutron.conf: [keystone_authtoken] password: unknown key",
    ],
    ids=["url-path", "config-warning", "section-token"],
)
def test_mask_text_leaves_names_next_to_no_value_alone(text: str) -> None:
    assert mask_text(text) == text


def test_an_ignored_secret_named_key_keeps_its_warning_whole() -> None:
    settings = parse_settings("[Daemon]\nallow_unknown_keys = true\nplugins = Dump\nrpchost = 127.0.0.1\n"
                              "rabbit_password = hunter2\n")
    [warning] = settings.warnings
    assert "[Daemon] rabbit_password: ignored unknown key" in warning
    assert "hunter2" not in warning


@pytest.mark.parametrize(
    "text",
    [
        "a" * 1_000_000,  # the old regex took seconds on 20 kB of this
        "password" * 125_000,
        "password=" * 110_000,
        "x://" * 250_000,
        "://" * 330_000,
        "amqp://u:" + "p" * 1_000_000,
        "amqp://u:p " * 90_000,
        "@:" * 500_000,
        ("." * 999_999) + "token",
        "-P " * 330_000,
        "'-P', " * 160_000,
        "Basic " * 160_000,
        "Basic " + "A" * 1_000_000,
        ": [S] pw: " * 100_000,
    ],
    ids=["word", "keyword", "pairs", "schemes", "separators", "long-password", "spaces", "at-colon", "dots",
         "options", "argv-options", "basic", "basic-long", "sections"],
)
def test_mask_text_is_linear(text: str) -> None:
    # A correctness bound against catastrophic backtracking, not a benchmark: 1 MB in well under 2 s of
    # CPU (about 5 ms here; the old quadratic regex needed 10 s for 20 kB). CPU time, not wall time, so
    # that a stalled or busy CI machine cannot fail it.
    started = time.process_time()
    mask_text(text)
    assert time.process_time() - started < 2.0


def test_redact_mapping_replaces_secret_keys_at_any_depth() -> None:
    body: dict[str, Any] = {
        "_context_auth_token": "gAAAAtoken",
        "_context_auth_token_info": {"token": {"user": "x"}},
        "args": {"password": "pw1", "Admin_Password": "pw2", "secret": 5, "tokens_count": 3, "empty_token": "",
                 "urls": ["amqp://u:pw3@h//", {"transport_url": "rabbit://u:pw4@h1,u:pw5@h2/"}]},
        "method": "report_state",
    }
    assert redact_mapping(body) == {
        "_context_auth_token": "***",
        "_context_auth_token_info": "***",
        "args": {"password": "***", "Admin_Password": "***", "secret": "***", "tokens_count": 3, "empty_token": "",
                 "urls": ["amqp://u:***@h//", {"transport_url": "rabbit://u:***@h1,u:***@h2/"}]},
        "method": "report_state",
    }
    assert body["args"]["password"] == "pw1", "a copy, the input is untouched"


def test_redact_mapping_bounds_depth() -> None:
    deep: object = {"password": "pw"}
    for _ in range(2000):
        deep = {"a": deep}
    assert "pw" not in repr(redact_mapping(deep))


@pytest.mark.parametrize(
    ("key", "secret"),
    [("password", True), ("admin_password", True), ("passwd", True), ("_context_auth_token", True),
     ("client_secret", True), ("X-Auth-Token", True), ("tokens_count", False), ("token_type", False),
     ("host", False), ("rpchost", False), ("api_key", True), ("X-API-Key", True), ("private_key", True),
     ("pw", True), ("db_pw", True), ("pwd", True), ("upward", False), ("api_key_count", False)],
)
def test_is_secret_key(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redact_value_and_within() -> None:
    assert redact_value("password", "s3cr3t") == "***"
    assert redact_value("rpchost", "amqp://u:pa ss@h//;amqp://u:q@h2//") == "amqp://u:***@h//;amqp://u:***@h2//"
    assert redact_value("rpchost", "u:pw@host") == "***@host"
    assert redact_value("filter", "host == 'a@b'") == "host == 'a@b'"
    assert redact_within("unsupported URL 'kafka://u:pw@h'", "rpchost", "amqp://h//;kafka://u:pw@h") == (
        "unsupported URL 'kafka://u:***@h'")


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("rpchost", "kafka://u:Sec ret/1@h", "unsupported URL 'kafka://u:Sec ret/1@h'"),
        ("rpchost", "rabbit://o:FirstPW@c1,o:SecondPW@c2;qpid://x:ThirdPW@c3", "unsupported URL 'qpid://x:ThirdPW@c3'"),
        ("password", "Sec ret/1", "too short"),
    ],
)
def test_config_error_text_has_no_secret(key: str, value: str, allowed: str) -> None:
    text = str(ConfigError("Daemon", key, value, allowed))
    for secret in ("Sec ret/1", "Sec", "ret/1", "FirstPW", "SecondPW", "ThirdPW"):
        assert secret not in text
    assert f"[Daemon] {key} = " in text
