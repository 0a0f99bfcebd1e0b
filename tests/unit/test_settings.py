"""rpcdaemon.conf: every key's good and bad values, the error format, the example file."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from rpcdaemon.cli import main
from rpcdaemon.config.settings import (
    MAX_SHOWN,
    SECTIONS,
    ConfigError,
    ConfigErrors,
    DaemonSettings,
    MissingConfigFile,
    Settings,
    load_settings,
    override,
    parse_settings,
    render_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "rpcdaemon.conf.example"
AGENT_SECTIONS = ("L3Agent", "DHCPAgent")


def one(section: str, key: str, value: str) -> Settings:
    return parse_settings(f"[{section}]\n{key} = {value}\n")


def value_of(settings: Settings, section: str, key: str) -> object:
    return getattr(settings.section(section), key)


# (section, key, text, parsed value)
GOOD: list[tuple[str, str, str, object]] = [
    ("Daemon", "plugins", "L3Agent", ("L3Agent",)),
    ("Daemon", "plugins", "DHCPAgent  L3Agent Dump", ("DHCPAgent", "L3Agent", "Dump")),
    ("Daemon", "plugins", "l3agent, dump l3agent", ("L3Agent", "Dump")),
    ("Daemon", "rpchost", "10.0.0.5", "amqp://10.0.0.5//"),
    ("Daemon", "rpchost", "rabbit.example.org:5673", "amqp://rabbit.example.org:5673//"),
    ("Daemon", "rpchost", "amqp://u:p@h1:5672//;amqp://u:p@h2:5672//", "amqp://u:p@h1:5672//;amqp://u:p@h2:5672//"),
    ("Daemon", "rpchost", "rabbit://u:p@h1,u:p@h2/", "rabbit://u:p@h1,u:p@h2/"),
    ("Daemon", "rpchost", "", None),
    ("Daemon", "pidfile", "/run/rpcdaemon/rpcdaemon.pid", Path("/run/rpcdaemon/rpcdaemon.pid")),
    ("Daemon", "logfile", "/tmp/r.log", Path("/tmp/r.log")),
    ("Daemon", "loglevel", "warning", "WARNING"),
    ("Daemon", "loglevel", "", None),
    ("Daemon", "log_format", "JSON", "json"),
    ("Daemon", "log_format", "text", "text"),
    ("Daemon", "audit_log", "/var/log/rpcdaemon/audit.log", Path("/var/log/rpcdaemon/audit.log")),
    ("Daemon", "audit_log", "", None),
    ("Daemon", "check_interval", "0.5", 0.5),
    ("Daemon", "dry_run", "yes", True),
    ("Daemon", "dry_run", "Off", False),
    ("Daemon", "allow_unknown_keys", "true", True),
    ("Daemon", "metrics_port", "9127", 9127),
    ("Daemon", "metrics_port", "0", 0),
    ("Daemon", "metrics_address", "0.0.0.0", "0.0.0.0"),
    ("Daemon", "metrics_address", "::1", "::1"),
    ("Daemon", "metrics_address", "localhost", "localhost"),
    ("Daemon", "ssl", "true", True),
    ("Daemon", "ssl", "", None),
    ("Daemon", "ssl_ca_file", "ca.pem", Path("ca.pem")),
    ("Daemon", "ssl_cert_file", "", None),
    ("Daemon", "ssl_key_file", "/k.pem", Path("/k.pem")),
    ("Daemon", "ssl_verify_hostname", "false", False),
    ("L3Agent", "skip_ha_routers", "false", False),
    ("DHCPAgent", "agents_per_network", "ALL", None),
    ("DHCPAgent", "agents_per_network", "2", 2),
    ("Dump", "loglevel", "info", "INFO"),
    ("Dump", "queue", "nova", "nova"),
    ("Dump", "filter", "method == 'report_state'", "method == 'report_state'"),
    ("Dump", "filter", "", None),
    ("Dump", "verbose", "1", True),
    ("coordination", "enabled", "no", False),
    ("coordination", "backend_url", "redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
    ("coordination", "backend_url", "etcd3+http://10.0.0.1:2379?lock_timeout=10", "etcd3+http://10.0.0.1:2379?lock_timeout=10"),
    ("coordination", "backend_url", "", None),
    ("coordination", "group", "dc1.region-a_2", "dc1.region-a_2"),
]
# Keys shared by both agent plugins.
GOOD_AGENT: list[tuple[str, str, object]] = [
    ("conffile", "/etc/neutron/other.conf", (Path("/etc/neutron/other.conf"),)),
    ("loglevel", "Error", "ERROR"),
    ("timeout", "2.5", 2.5),
    ("queue_expire", "0", 0.0),
    ("queue_expire", "3600", 3600.0),
    ("cloud", "mycloud", "mycloud"),
    ("cloud", "", None),
    ("endpoint", "http://127.0.0.1:9696/", "http://127.0.0.1:9696"),
    ("agent_down_time", "10", 10.0),
    ("agent_down_time", "", None),
    ("api_second_opinion", "no", False),
    ("revive_hold", "0", 0.0),
    ("max_dead_fraction", "1", 1.0),
    ("max_dead_fraction", "0.25", 0.25),
    ("max_dead_agents", "0", 0),
    ("max_dead_agents", "3", 3),
    ("max_moves_per_cycle", "1", 1),
    ("workers", "1", 1),
    ("reconcile_interval", "300", 300.0),
    ("retry_attempts", "1", 1),
    ("startup_grace", "0", 0.0),
    ("startup_grace", "", None),
    ("cafile", "/ca.pem", Path("/ca.pem")),
    ("insecure", "yes", True),
    ("ready_timeout", "0", 0.0),
    ("ready_timeout", "30", 30.0),
    ("move_unready", "true", True),
    ("fence_command", "", ()),
    ("fence_command", "/usr/sbin/fence_ipmilan --ip '{host}-bmc' -n {agent_id}",
     ("/usr/sbin/fence_ipmilan", "--ip", "{host}-bmc", "-n", "{agent_id}")),
    ("fence_timeout", "10", 10.0),
    ("move_when_fence_fails", "yes", True),
]

# (section, key, bad text, fragment of the error message)
BAD: list[tuple[str, str, str, object]] = [
    ("Daemon", "plugins", "L3Agent Bogus", "unknown plugin 'Bogus'"),
    ("Daemon", "plugins", "", "no plugin listed"),
    ("Daemon", "rpchost", "http://h/", "unsupported URL"),
    ("Daemon", "rpchost", "bad host", "a host, host:port or amqp:// URL"),
    ("Daemon", "pidfile", "", "a file path"),
    ("Daemon", "logfile", "", "a file path"),
    ("Daemon", "loglevel", "verbose", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("Daemon", "log_format", "xml", "one of text, json"),
    ("Daemon", "check_interval", "0", "a number of seconds from 0.1 to 600 (0 is below the minimum 0.1)"),
    ("Daemon", "check_interval", "-1", "a number of seconds from 0.1 to 600"),
    ("Daemon", "check_interval", "nan", "a number of seconds from 0.1 to 600"),
    ("Daemon", "check_interval", "inf", "a number of seconds from 0.1 to 600"),
    ("Daemon", "dry_run", "maybe", "a boolean"),
    ("Daemon", "allow_unknown_keys", "perhaps", "a boolean"),
    ("Daemon", "metrics_port", "65536", "a TCP port"),
    ("Daemon", "metrics_port", "http", "a TCP port"),
    ("Daemon", "metrics_address", "not an address!", "an IP address or host name"),
    ("Daemon", "ssl", "tls", "a boolean"),
    ("Daemon", "ssl_verify_hostname", "", "a boolean"),
    ("L3Agent", "skip_ha_routers", "2", "a boolean"),
    ("DHCPAgent", "agents_per_network", "0", "'all' or an integer >= 1"),
    ("DHCPAgent", "agents_per_network", "some", "'all' or an integer >= 1"),
    ("Dump", "loglevel", "loud", "one of DEBUG"),
    ("Dump", "queue", "", "a name"),
    ("Dump", "filter", "a[", "a JMESPath expression"),
    ("Dump", "filter", "`bad", "a JMESPath expression"),
    ("Dump", "verbose", "very", "a boolean"),
    ("coordination", "enabled", "sometimes", "a boolean"),
    ("coordination", "backend_url", "file:///var/lib/rpcdaemon", "file:// locks do not expire"),
    ("coordination", "backend_url", "mysql://db/rpcdaemon", "mysql:// locks do not expire"),
    ("coordination", "backend_url", "127.0.0.1:6379", "a tooz URL"),
    ("coordination", "group", "two words", "a name of letters, digits"),
    ("coordination", "group", "x" * 101, "at most 100 characters"),
]
BAD_AGENT: list[tuple[str, str, object]] = [
    ("conffile", "", "space- or comma-separated files and directories"),
    ("loglevel", "chatty", "one of DEBUG"),
    ("timeout", "abc", "a number of seconds from 1 to 600"),
    ("timeout", "0", "a number of seconds from 1 to 600 (0 is below the minimum 1)"),
    ("queue_expire", "-5", "0 (never) or a number of seconds from 1 to 604800"),
    ("endpoint", "127.0.0.1:9696", "an http:// or https:// URL"),
    ("agent_down_time", "0", "a number of seconds from 1 to 86400"),
    ("api_second_opinion", "sometimes", "a boolean"),
    ("revive_hold", "-1", "a number of seconds from 0 to 86400"),
    ("max_dead_fraction", "0", "a fraction > 0 and <= 1"),
    ("max_dead_fraction", "1.5", "a fraction > 0 and <= 1"),
    ("max_dead_agents", "-1", "an integer from 0 to 100000"),
    ("max_dead_agents", "1.5", "an integer from 0 to 100000"),
    ("max_moves_per_cycle", "0", "an integer from 1 to 100000"),
    ("workers", "0", "an integer from 1 to 256"),
    ("workers", "1000", "an integer from 1 to 256 (1000 is above the maximum 256)"),
    ("reconcile_interval", "never", "a number of seconds from 1 to 86400"),
    ("retry_attempts", "0", "an integer from 1 to 100"),
    ("startup_grace", "soon", "a number of seconds from 0 to 86400"),
    ("insecure", "sure", "a boolean"),
    ("ready_timeout", "2", "0 (do not follow) or a number of seconds from 5 to 86400"),
    ("move_unready", "maybe", "a boolean"),
    ("fence_command", "fence --ip '{host}", "a command line (split like a shell would, run by none), or empty for "
     "none (cannot split it into arguments: no closing quotation)"),
    ("fence_command", "fence {hostname}", "unknown placeholder {hostname}"),
    ("fence_timeout", "never", "a number of seconds from 1 to 600"),
    ("move_when_fence_fails", "maybe", "a boolean"),
]


def _agent_cases(table: list[tuple[str, str, object]]) -> list[tuple[str, str, str, object]]:
    return [(section, key, text, result) for section in AGENT_SECTIONS for key, text, result in table]


@pytest.mark.parametrize(("section", "key", "text", "expected"), GOOD + _agent_cases(GOOD_AGENT))
def test_good_value_is_parsed(section: str, key: str, text: str, expected: object) -> None:
    settings = one(section, key, text)
    assert value_of(settings, section, key) == expected
    assert settings.warnings == ()


@pytest.mark.parametrize(("section", "key", "text", "fragment"), BAD + _agent_cases(BAD_AGENT))
def test_bad_value_names_section_key_value_and_what_is_allowed(section: str, key: str, text: str,
                                                              fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        one(section, key, text)
    message = str(caught.value)
    assert message.startswith(f"rpcdaemon.conf, line 2: [{section}] {key} = {text!r}: expected ")
    assert fragment in message
    assert "\n" not in message
    assert (caught.value.section, caught.value.key, caught.value.value, caught.value.line) == (section, key, text, 2)


def test_every_declared_key_has_a_good_and_a_bad_case() -> None:
    good = {(s, k) for s, k, _, _ in GOOD + _agent_cases(GOOD_AGENT)}
    bad = {(s, k) for s, k, _, _ in BAD + _agent_cases(BAD_AGENT)}
    declared = {(name, f.name) for name, (_, cls) in SECTIONS.items() for f in fields(cls)}
    assert declared - good == set()
    # Free-form names (cloud) and optional paths (empty means none) have no bad value; everything else must.
    assert declared - bad == {("L3Agent", "cloud"), ("DHCPAgent", "cloud"), ("L3Agent", "cafile"),
                              ("DHCPAgent", "cafile"), ("Daemon", "ssl_ca_file"), ("Daemon", "ssl_cert_file"),
                              ("Daemon", "ssl_key_file"), ("Daemon", "audit_log")}


def test_error_message_is_exactly_one_clear_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("[L3Agent]\ntimeout = abc\n")
    assert str(caught.value) == ("rpcdaemon.conf, line 2: [L3Agent] timeout = 'abc': "
                                 "expected a number of seconds from 1 to 600")


def test_plugin_error_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match="L3Agent DHCPAgent Dump") as caught:
        parse_settings("[Daemon]\nplugins = L3Agent Firewall\n")
    assert "unknown plugin 'Firewall'" in str(caught.value)


def test_jmespath_error_says_where_the_expression_breaks() -> None:
    with pytest.raises(ConfigError, match=r"at character 2\)$"):
        parse_settings("[Dump]\nfilter = a[\n")


def test_broker_password_never_appears_in_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("[Daemon]\nrpchost = http://admin:hunter2@broker/\n")
    assert "hunter2" not in str(caught.value)
    assert "admin:***@broker" in str(caught.value)


def test_seed_config_keeps_its_meaning() -> None:
    seed = """
[Daemon]
plugins = DHCPAgent L3Agent
rpchost = 192.168.1.10
pidfile = /var/run/rpcdaemon.pid
logfile = /var/log/rpcdaemon.log
loglevel = INFO
check_interval = 1

[L3Agent]
conffile = /etc/neutron/neutron.conf
loglevel = DEBUG
timeout = 30
queue_expire = 60

[DHCPAgent]
conffile = /etc/neutron/neutron.conf
loglevel = DEBUG
timeout = 30
queue_expire = 60

[Dump]
loglevel = DEBUG
queue = neutron
"""
    settings = parse_settings(seed)
    assert settings.daemon == DaemonSettings(plugins=("DHCPAgent", "L3Agent"), rpchost="amqp://192.168.1.10//",
                                             loglevel="INFO", check_interval=1.0)
    assert (settings.l3.loglevel, settings.l3.timeout, settings.l3.queue_expire) == ("DEBUG", 30.0, 60.0)
    assert settings.dhcp.queue_expire == 60.0
    assert (settings.dump.loglevel, settings.dump.queue) == ("DEBUG", "neutron")
    assert [name for name, _ in settings.agent_plugins()] == ["DHCPAgent", "L3Agent"]
    assert settings.warnings == ()


def test_missing_sections_mean_defaults_and_unlisted_sections_are_fine() -> None:
    settings = parse_settings("[Daemon]\nplugins = Dump\n\n[L3Agent]\ntimeout = 5\n")
    assert settings.dhcp == Settings().dhcp
    assert settings.dump == Settings().dump
    assert settings.l3.timeout == 5.0
    assert settings.agent_plugins() == []
    assert settings.warnings == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Daemon]\nchek_interval = 1\n", "line 2: [Daemon] chek_interval: unknown key; did you mean check_interval?"),
        ("[DHCPAgent]\nagents_per_netwrok = 2\n",
         "line 2: [DHCPAgent] agents_per_netwrok: unknown key; did you mean agents_per_network?"),
        ("[L3Agent]\nagents_per_netwrok = 2\n",
         "line 2: [L3Agent] agents_per_netwrok: unknown key; did you mean agents_per_network in [DHCPAgent]?"),
        ("[DHCPAgent]\nskip_ha_routers = false\n",
         "line 2: [DHCPAgent] skip_ha_routers: unknown key in this section; it belongs in [L3Agent]"),
        ("[L3Agent]\ncheck_interval = 1\n",
         "line 2: [L3Agent] check_interval: unknown key in this section; it belongs in [Daemon]"),
        ("[Daemon]\nfrobnicate = 1\n",
         "line 2: [Daemon] frobnicate: unknown key (rpcdaemon --print-example-config lists every key)"),
        ("[Daemon]\n\n[l3agent]\ntimeout = 5\n",
         "line 3: [l3agent]: unknown section (names are case-sensitive); did you mean [L3Agent]?"),
        ("[DHCP_Agent]\n", "line 1: [DHCP_Agent]: unknown section; did you mean [DHCPAgent]?"),
        ("[DEFAULT]\n", "line 1: [DEFAULT]: unknown section; the sections are [Daemon] [L3Agent] [DHCPAgent] [Dump]"
                       " [coordination]"),
    ],
)
def test_unknown_keys_and_sections_are_errors_with_a_suggestion(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text)
    assert str(caught.value) == f"rpcdaemon.conf, {expected}"


def test_line_numbers_count_comments_blank_lines_and_continuations() -> None:
    text = ("# rpcdaemon.conf\n\n[Dump]\n; the filter goes on\nfilter = host == 'a'\n  || host == 'b'\n\n"
            "verbose = very\n")
    with pytest.raises(ConfigError) as caught:
        parse_settings(text)
    assert caught.value.line == 8
    assert parse_settings(text.replace("very", "yes")).dump.filter == "host == 'a'\n|| host == 'b'"


def test_every_unparsable_line_is_reported() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_settings("[Daemon]\njust words\nplugins = Dump\nmore words\n")
    assert [(error.line, str(error)) for error in caught.value.errors] == [
        (2, "rpcdaemon.conf, line 2: cannot parse 'just words': expected 'key = value'"),
        (4, "rpcdaemon.conf, line 4: cannot parse 'more words': expected 'key = value'"),
    ]


def test_keys_are_case_insensitive_as_in_the_seed() -> None:
    assert parse_settings("[Daemon]\nCheck_Interval = 1\n").daemon.check_interval == 1.0


ISSUE_TYPOS = """\
[Daemon]
plugins = L3Agent DHCPAgent
chek_interval = 1

[l3agent]
max_dead_fraction = 0.3

[DHCPAgent]
agents_per_netwrok = 2
"""


def test_all_errors_of_a_file_come_in_one_message_with_their_line_numbers() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(ISSUE_TYPOS, "/etc/rpcdaemon.conf")
    assert str(caught.value).splitlines() == [
        "/etc/rpcdaemon.conf: 3 errors:",
        "/etc/rpcdaemon.conf, line 3: [Daemon] chek_interval: unknown key; did you mean check_interval?",
        "/etc/rpcdaemon.conf, line 5: [l3agent]: unknown section (names are case-sensitive); did you mean [L3Agent]?",
        "/etc/rpcdaemon.conf, line 9: [DHCPAgent] agents_per_netwrok: unknown key; did you mean agents_per_network?",
    ]
    assert [error.line for error in caught.value.errors] == [3, 5, 9]


def test_bad_values_duplicates_and_unparsable_lines_are_reported_with_unknown_keys() -> None:
    text = ("[Daemon]\ncheck_interval = 1e-9\ncolour = red\n[L3Agent]\ntimeout = 1e300\nworkers = 2\nworkers = 3\n"
            "just words\n[Dump]\nverbose = very\n")
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(text)
    lines = str(caught.value).splitlines()
    assert lines[0] == "rpcdaemon.conf: 6 errors:"
    assert [line.split(":")[0] for line in lines[1:]] == [f"rpcdaemon.conf, line {n}" for n in (2, 3, 5, 7, 8, 10)]
    assert "[Daemon] check_interval = '1e-9': expected a number of seconds from 0.1 to 600" in lines[1]
    assert "[Daemon] colour: unknown key" in lines[2]
    assert "[L3Agent] timeout = '1e300'" in lines[3]
    assert "[L3Agent] workers: duplicate key (first at line 6" in lines[4]
    assert "cannot parse 'just words'" in lines[5]
    assert "[Dump] verbose = 'very': expected a boolean" in lines[6]


def test_allow_unknown_keys_turns_unknown_names_into_warnings() -> None:
    text = "[Daemon]\nallow_unknown_keys = true\nplugins = Dump\nchek_interval = 1\n[Firewall]\nrules = 3\n"
    settings = parse_settings(text)
    assert settings.daemon.plugins == ("Dump",)
    assert settings.daemon.check_interval == Settings().daemon.check_interval
    assert settings.warnings == (
        "rpcdaemon.conf, line 4: [Daemon] chek_interval: ignored unknown key; did you mean check_interval?",
        "rpcdaemon.conf, line 5: [Firewall]: ignored unknown section; "
        "the sections are [Daemon] [L3Agent] [DHCPAgent] [Dump] [coordination]",
    )
    # It is not a way around bad values, nor around a known section spelt in another case.
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(text + "[l3agent]\n[Dump]\nverbose = very\n")
    assert [error.line for error in caught.value.errors] == [7, 9]
    # Where it stands in [Daemon] does not matter; elsewhere it is itself an unknown key.
    assert parse_settings("[Daemon]\nnew_key = 1\nallow_unknown_keys = yes\n").warnings != ()
    with pytest.raises(ConfigErrors):
        parse_settings("[L3Agent]\nallow_unknown_keys = true\nnew_key = 1\n")


# (section, key, smallest allowed, largest allowed, just below, just above): floors stop busy loops and
# zero-length windows, ceilings stop values nobody means (a timeout of 1e300 s).
BOUNDS = [
    ("Daemon", "check_interval", "0.1", "600", "0.09", "601"),
    ("L3Agent", "timeout", "1", "600", "0.5", "1e300"),
    ("L3Agent", "reconcile_interval", "1", "86400", "0.5", "86401"),
    ("L3Agent", "agent_down_time", "1", "86400", "1e-9", "86401"),
    ("L3Agent", "revive_hold", "0", "86400", "-0.1", "86401"),
    ("L3Agent", "startup_grace", "0", "86400", "-1", "1e9"),
    ("DHCPAgent", "queue_expire", "1", "604800", "0.5", "604801"),
    ("DHCPAgent", "retry_attempts", "1", "100", "0", "101"),
    ("DHCPAgent", "max_moves_per_cycle", "1", "100000", "0", "100001"),
    ("DHCPAgent", "max_dead_agents", "0", "100000", "-1", "100001"),
    ("DHCPAgent", "workers", "1", "256", "0", "257"),
    ("L3Agent", "ready_timeout", "5", "86400", "4.9", "86401"),
    ("DHCPAgent", "fence_timeout", "1", "600", "0.9", "601"),
]


@pytest.mark.parametrize(("section", "key", "low", "high", "below", "above"), BOUNDS)
def test_bounds_are_enforced_and_named(section: str, key: str, low: str, high: str, below: str,
                                       above: str) -> None:
    assert value_of(one(section, key, low), section, key) == float(low)
    assert value_of(one(section, key, high), section, key) == float(high)
    for text, bound in ((below, f"below the minimum {low}"), (above, f"above the maximum {high}")):
        with pytest.raises(ConfigError) as caught:
            one(section, key, text)
        assert str(caught.value).endswith(f" is {bound})")


def test_zero_queue_expire_still_means_never() -> None:
    assert one("L3Agent", "queue_expire", "0").l3.queue_expire == 0.0


def test_every_interval_refuses_a_busy_loop_value() -> None:
    floors = {key for section, key, low, *_ in BOUNDS if float(low) > 0}
    intervals = {f.name for _, cls in SECTIONS.values() for f in fields(cls)
                 if f.name.endswith(("_interval", "timeout", "_down_time"))}
    assert intervals <= floors


def test_percent_signs_are_literal() -> None:
    settings = parse_settings("[Daemon]\nrpchost = amqp://u:50%off@h//\n")
    assert settings.daemon.rpchost == "amqp://u:50%off@h//"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Daemon]\nplugins = Dump\nplugins = L3Agent\n", "rpcdaemon.conf, line 3: [Daemon] plugins: duplicate key"),
        ("[Dump]\nqueue = a\n[Dump]\n", "rpcdaemon.conf, line 3: [Dump]: duplicate section"),
        ("plugins = Dump\n", "rpcdaemon.conf, line 1: expected a [Section] header before 'plugins = Dump'"),
        ("[Daemon]\nplugins = Dump\njust words\n", "rpcdaemon.conf, line 3: cannot parse 'just words'"),
    ],
)
def test_unparsable_files_are_one_line_with_the_line_number(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_missing_and_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "nope.conf")
    assert str(caught.value) == f"{tmp_path / 'nope.conf'}: no such file"
    assert isinstance(caught.value, MissingConfigFile)
    with pytest.raises(ConfigError, match="cannot read: a directory, not a regular file"):
        load_settings(tmp_path)
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"\xff\xfe[Daemon]\n")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_settings(binary)


def test_load_checks_conffile_of_listed_plugins_only(tmp_path: Path) -> None:
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text("[Daemon]\nplugins = L3Agent\n[L3Agent]\nconffile = missing.conf\n"
                    "[DHCPAgent]\nconffile = also-missing.conf\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(conf)
    assert str(caught.value) == (f"{conf}: [L3Agent] conffile = '{tmp_path / 'missing.conf'}': "
                                 "expected a readable neutron.conf (No such file or directory)")
    (tmp_path / "missing.conf").write_text("[DEFAULT]\n")
    settings = load_settings(conf)
    assert settings.l3.conffile == (tmp_path / "missing.conf",)


def test_load_reports_every_unreadable_conffile_at_once(tmp_path: Path) -> None:
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text("[Daemon]\nplugins = L3Agent DHCPAgent\n[L3Agent]\nconffile = a.conf\n"
                    "[DHCPAgent]\nconffile = b.conf\n")
    with pytest.raises(ConfigErrors) as caught:
        load_settings(conf)
    assert [(error.section, error.key) for error in caught.value.errors] == [("L3Agent", "conffile"),
                                                                             ("DHCPAgent", "conffile")]
    assert str(caught.value).splitlines()[0] == f"{conf}: 2 errors:"


def test_load_makes_relative_paths_absolute_from_the_config_directory(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "rpcdaemon.conf"
    conf.parent.mkdir()
    conf.write_text("[Daemon]\nplugins = Dump\npidfile = run/r.pid\nlogfile = /var/log/r.log\n")
    settings = load_settings(conf)
    assert settings.daemon.pidfile == tmp_path / "etc" / "run" / "r.pid"
    assert settings.daemon.logfile == Path("/var/log/r.log")
    assert settings.source == str(conf)


def test_override_parses_like_the_file_and_names_its_source() -> None:
    settings = override(Settings(), "Dump", "filter", "host == 'a'", source="--filter")
    assert settings.dump.filter == "host == 'a'"
    assert settings.daemon == Settings().daemon
    with pytest.raises(ConfigError) as caught:
        override(settings, "Dump", "filter", "a[", source="--filter")
    assert str(caught.value).startswith("--filter: [Dump] filter = 'a[': expected a JMESPath expression")


def test_effective_down_time_and_grace() -> None:
    default = Settings().l3
    assert default.effective_agent_down_time(75.0) == 75.0
    assert default.effective_startup_grace(75.0) == 75.0
    tuned = one("L3Agent", "agent_down_time", "20").l3
    assert tuned.effective_agent_down_time(75.0) == 20.0
    assert tuned.effective_startup_grace(75.0) == 20.0
    assert parse_settings("[L3Agent]\nagent_down_time = 20\nstartup_grace = 5\n").l3.effective_startup_grace(75) == 5


def test_example_file_is_in_sync_and_loads_to_the_defaults() -> None:
    text = EXAMPLE.read_text()
    assert text == render_config(), "regenerate: rpcdaemon --print-example-config > etc/rpcdaemon.conf.example"
    settings = parse_settings(text, str(EXAMPLE))
    assert settings == Settings()
    assert settings.warnings == ()


def test_example_documents_every_key_with_reason_and_allowed_values() -> None:
    text = render_config()
    for name, (_, cls) in SECTIONS.items():
        assert f"[{name}]" in text
        for f in fields(cls):
            assert f.metadata["doc"].split()[0] in text
            assert f"\n{f.name} =" in text


def test_rendered_non_default_settings_parse_back_to_themselves() -> None:
    chosen: dict[str, dict[str, str]] = {}
    for section, key, text, _ in GOOD + _agent_cases(GOOD_AGENT):
        chosen.setdefault(section, {})[key] = text  # the last good value of each key
    conf = "\n".join(f"[{section}]\n" + "\n".join(f"{k} = {t}" for k, t in keys.items())
                     for section, keys in chosen.items())
    changed = parse_settings(conf)
    assert changed != Settings()
    assert parse_settings(render_config(changed)) == changed
    assert parse_settings(render_config(changed, docs=False)) == changed


def test_thousands_of_problems_print_twenty_lines_and_a_count(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    head = "[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\n"
    sections = "".join(f"[S{i}]\n" for i in range(10_000))
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(head + sections)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 + MAX_SHOWN + 1
    assert lines[0] == "rpcdaemon.conf: 10000 errors:"
    assert "[S19]: unknown section" in lines[MAX_SHOWN]
    assert lines[-1] == f"... and {10_000 - MAX_SHOWN} more problems"
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text(head + "allow_unknown_keys = true\n" + sections)
    assert main(["--check-config", "-c", str(conf)]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == MAX_SHOWN + 1
    assert warnings[-1] == f"rpcdaemon: warning: ... and {10_000 - MAX_SHOWN} more warnings"
