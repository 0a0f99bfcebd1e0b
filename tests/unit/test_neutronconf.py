"""neutron.conf as oslo.config reads it; kombu URLs; how the Neutron API is reached; resolve_settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rpcdaemon.access import NeutronAccess
from rpcdaemon.config.neutronconf import (
    AGENT_DOWN_TIME,
    REPORT_INTERVAL,
    NeutronConf,
    kombu_url,
    load_neutron_conf,
    neutron_access,
    parse_neutron_conf,
    resolve_settings,
)
from rpcdaemon.config.settings import ConfigError, L3AgentSettings, load_settings, parse_settings

V3 = """
[DEFAULT]
core_plugin = ml2
agent_down_time = 20
transport_url = rabbit://openstack:s3cret@10.0.0.1:5672/

[AGENT]
report_interval = 5

[keystone_authtoken]
www_authenticate_uri = http://10.0.0.2:5000
auth_url = http://10.0.0.2:5000/v3
auth_type = password
username = neutron
password = n3utr0n
project_name = service
user_domain_name = Users
project_domain_id = default
region_name = RegionTwo
cafile = /etc/ssl/certs/ca-certificates.crt
insecure = false
interface = public
"""

HAVANA = """
[DEFAULT]
rabbit_host = 10.0.0.1

[keystone_authtoken]
auth_host = 10.0.0.3
auth_port = 35357
auth_protocol = http
admin_tenant_name = service
admin_user = quantum
admin_password = q
"""


def test_v3_keys() -> None:
    conf = parse_neutron_conf(V3, "/etc/neutron/neutron.conf")
    assert (conf.agent_down_time, conf.report_interval) == (20.0, 5.0)
    assert conf.transport_url == "rabbit://openstack:s3cret@10.0.0.1:5672/"
    assert replace(conf.access, auth_options={}) == NeutronAccess(
        auth_url="http://10.0.0.2:5000/v3", username="neutron", password="n3utr0n", project_name="service",
        user_domain_name="Users", project_domain_id="default", region_name="RegionTwo",
        cafile="/etc/ssl/certs/ca-certificates.crt", insecure=False, interface="public",
    )
    assert conf.access.auth_options["user_domain_name"] == "Users"
    assert conf.source == "/etc/neutron/neutron.conf"


def test_havana_keys_map_to_auth_url_and_user() -> None:
    conf = parse_neutron_conf(HAVANA)
    access = conf.access
    assert (access.auth_url, access.username, access.password, access.project_name) == (
        "http://10.0.0.3:35357", "quantum", "q", "service")
    assert (access.user_domain_name, access.project_domain_name) == ("Default", "Default")
    assert conf.transport_url is None


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("auth_host = 10.0.0.3", "https://10.0.0.3:35357"),  # keystonemiddleware's defaults fill the rest
        ("auth_port = 5000", "https://127.0.0.1:5000"),
        ("auth_host = fd00::3\nauth_protocol = http", "http://[fd00::3]:35357"),
        ("auth_host = k\nauth_admin_prefix = /identity/", "https://k:35357/identity"),
        ("identity_uri = http://k:35357/\nauth_host = other", "http://k:35357/"),
        ("auth_uri = http://k:5000/v2.0", "http://k:5000/v2.0"),
        ("www_authenticate_uri = http://pub:5000\nauth_uri = http://old:5000", "http://pub:5000"),
    ],
)
def test_auth_url_sources(keys: str, expected: str) -> None:
    assert parse_neutron_conf(f"[keystone_authtoken]\n{keys}\n").access.auth_url == expected


def test_missing_keys_mean_neutron_defaults() -> None:
    for text in ("", "[DEFAULT]\n", "[DEFAULT]\nagent_down_time =\n[AGENT]\n"):
        conf = parse_neutron_conf(text)
        assert conf == NeutronConf(source="neutron.conf")
        assert (conf.agent_down_time, conf.report_interval) == (AGENT_DOWN_TIME, REPORT_INTERVAL) == (75.0, 30.0)
        assert conf.access == NeutronAccess()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[DEFAULT]\nagent_down_time = soon\n", "n.conf: [DEFAULT] agent_down_time = 'soon': expected a number"),
        ("[DEFAULT]\nagent_down_time = 0\n", "n.conf: [DEFAULT] agent_down_time = '0': expected a number of seconds"),
        ("[AGENT]\nreport_interval = -3\n", "n.conf: [AGENT] report_interval = '-3': expected a number of seconds"),
        ("[keystone_authtoken]\ninsecure = perhaps\n", "n.conf: [keystone_authtoken] insecure = 'perhaps': expected"),
        ("[keystone_authtoken]\nauth_host = k\nauth_port = http\n", "n.conf: [keystone_authtoken] auth_port = 'http'"),
        ("agent_down_time = 3\n", "n.conf, line 1: expected a [section] header first"),
        ("[DEFAULT]\nnot an assignment\n", "n.conf, line 2: cannot parse"),
    ],
)
def test_invalid_values_name_file_section_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_neutron_conf(text, "n.conf")
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("kafka://k/", "n.conf: [DEFAULT] transport_url = 'kafka://k/': expected"),
        ("rabbit:///", "expected at least one host"),
        ("rabbit://h/?ssl=maybe", "?ssl=maybe: expected true or false"),
    ],
)
def test_an_unusable_transport_url_is_kept_with_its_error(url: str, expected: str) -> None:
    # Raised only where the URL is the broker's (resolve_settings, without [Daemon] rpchost).
    conf = parse_neutron_conf(f"[DEFAULT]\ntransport_url = {url}\n", "n.conf")
    assert conf.transport_url_error is not None
    assert expected in str(conf.transport_url_error)
    assert "\n" not in str(conf.transport_url_error)


def test_oslo_quirks() -> None:
    text = """
[DEFAULT]
agent_down_time = 30
agent_down_time = 40
state_path = /var/lib/neutron
[agent]
report_interval = '7'
[keystone_authtoken]
password = "100%$$sure"
username = $DEFAULT.state_path/x
project_name = ${state_path}
region_name = $nothing
[KEYSTONE_AUTHTOKEN]
auth_url = http://k:5000/v3
Username = ignored-oslo-names-are-case-sensitive
"""
    conf = parse_neutron_conf(text)
    assert conf.agent_down_time == 40.0  # duplicate keys: the last wins, as in oslo.config
    assert conf.report_interval == 7.0  # section names are case-insensitive, quotes stripped
    assert conf.access.password == "100%$sure"  # no %-interpolation; $$ is a literal $
    assert conf.access.username == "/var/lib/neutron/x"
    assert conf.access.project_name == "/var/lib/neutron"
    assert conf.access.region_name == "$nothing"
    assert conf.access.auth_url == "http://k:5000/v3"


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_neutron_conf(tmp_path / "neutron.conf")
    assert str(caught.value) == f"{tmp_path / 'neutron.conf'}: cannot read: No such file or directory"


@pytest.mark.parametrize(
    ("transport_url", "expected"),
    [
        ("rabbit://guest:guest@127.0.0.1:5672/", "amqp://guest:guest@127.0.0.1:5672//"),
        ("rabbit://guest:guest@127.0.0.1:5672", "amqp://guest:guest@127.0.0.1:5672//"),
        ("rabbit://u:p@h:5672/openstack", "amqp://u:p@h:5672/openstack"),
        ("rabbit://u:p@h:5672/%2F", "amqp://u:p@h:5672/%2F"),
        ("rabbit://u:p%40x@h1:5672,u:p%40x@h2:5672,u:p%40x@h3:5672/nova?ssl=1&heartbeat=60",
         "amqp://u:p%40x@h1:5672/nova;amqp://u:p%40x@h2:5672/nova;amqp://u:p%40x@h3:5672/nova"),
        ("rabbit://a:b@[fd00::1]:5672,c:d@[fd00::2]:5672/", "amqp://a:b@[fd00::1]:5672//;amqp://c:d@[fd00::2]:5672//"),
        ("RABBIT://h/", "amqp://h//"),
        ("amqps://u:p@h:5671/", "amqps://u:p@h:5671//"),
        # oslo reads raw ';', ',' in a password's host entry and '@' up to the last one; kombu would split
        # its failover list at the ';': the credentials are percent-encoded for kombu.
        ("rabbit://open:Semi;Head@c1:5672,open:x@y@c2:5672/neutron",
         "amqp://open:Semi%3BHead@c1:5672/neutron;amqp://open:x%40y@c2:5672/neutron"),
        ("rabbit://us%20er:a b@h/", "amqp://us%20er:a%20b@h//"),
    ],
)
def test_kombu_url(transport_url: str, expected: str) -> None:
    assert kombu_url(transport_url) == expected


@pytest.mark.parametrize("bad", ["kafka://h:9092/", "127.0.0.1", "rabbit://", "rabbit://,/"])
def test_kombu_url_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        kombu_url(bad)


def test_kombu_url_refuses_a_raw_slash_in_a_password_without_quoting_it() -> None:
    with pytest.raises(ValueError, match="percent-encoded") as caught:
        kombu_url("rabbit://openstack:Sla/shPW@ctl1:5672/neutron")
    assert "Sla" not in str(caught.value)
    assert "shPW" not in str(caught.value)


def test_kombu_url_gives_kombu_the_password_oslo_reads() -> None:
    from kombu.connection import Connection  # tests may import kombu; src/ keeps it in broker/

    conn = Connection(kombu_url("rabbit://open:Semi;He%2Fad@c1:5672,open:x@y@c2:5672/neutron"))
    assert (conn.userid, conn.password, conn.hostname, conn.virtual_host) == ("open", "Semi;He/ad", "c1", "neutron")
    assert len(conn.alt) == 2


def test_access_precedence_endpoint_then_cloud_then_keystone() -> None:
    conf = parse_neutron_conf(V3)
    both = L3AgentSettings(endpoint="http://127.0.0.1:9696", cloud="c", timeout=7)
    assert neutron_access(both, conf) == NeutronAccess(endpoint="http://127.0.0.1:9696", timeout=7)
    assert neutron_access(L3AgentSettings(cloud="c", timeout=7), conf) == NeutronAccess(cloud="c", timeout=7)
    keystone = neutron_access(L3AgentSettings(timeout=7), conf)
    assert keystone.username == "neutron"
    assert keystone.password == "n3utr0n"
    assert keystone.timeout == 7
    assert "n3utr0n" not in repr(keystone)


def test_incomplete_credentials_name_what_is_missing() -> None:
    conf = parse_neutron_conf("[keystone_authtoken]\nusername = neutron\n", "/etc/neutron/neutron.conf")
    with pytest.raises(ConfigError) as caught:
        neutron_access(L3AgentSettings(), conf, section="DHCPAgent")
    assert str(caught.value) == (
        "/etc/neutron/neutron.conf: [keystone_authtoken] auth_url: no usable Neutron credentials: missing "
        "auth_url, password, project_name (auth_type password; user_id may stand for username, project_id, "
        "system_scope or domain_id for project_name) (or set endpoint or cloud in [DHCPAgent] of rpcdaemon.conf)"
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_resolve_reads_each_neutron_conf_and_applies_overrides(tmp_path: Path) -> None:
    _write(tmp_path / "neutron.conf", V3)
    conf = _write(tmp_path / "rpcdaemon.conf", "[Daemon]\nplugins = L3Agent DHCPAgent\n"
                  "[L3Agent]\nconffile = neutron.conf\nstartup_grace = 3\n"
                  "[DHCPAgent]\nconffile = neutron.conf\nagent_down_time = 50\nendpoint = http://n:9696\n")
    resolved = resolve_settings(load_settings(conf))
    assert resolved.broker_url == "amqp://openstack:s3cret@10.0.0.1:5672//"
    assert resolved.l3 is not None
    assert resolved.dhcp is not None
    assert (resolved.l3.agent_down_time, resolved.l3.startup_grace) == (20.0, 3.0)
    assert (resolved.dhcp.agent_down_time, resolved.dhcp.startup_grace) == (50.0, 50.0)
    assert resolved.l3.access.username == "neutron"
    assert resolved.dhcp.access == NeutronAccess(endpoint="http://n:9696")


def test_rpchost_wins_over_transport_url(tmp_path: Path) -> None:
    _write(tmp_path / "neutron.conf", V3)
    conf = _write(tmp_path / "rpcdaemon.conf", "[Daemon]\nplugins = L3Agent\nrpchost = rabbit://u:p@b1,u:p@b2/\n"
                  "[L3Agent]\nconffile = neutron.conf\n")
    assert resolve_settings(load_settings(conf)).broker_url == "amqp://u:p@b1//;amqp://u:p@b2//"
    settings = parse_settings("[Daemon]\nplugins = Dump\nrpchost = 10.1.1.1\n")
    assert resolve_settings(settings).broker_url == "amqp://10.1.1.1//"


def test_no_broker_anywhere_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[Daemon\] rpchost = '': expected a broker host or URL"):
        resolve_settings(parse_settings("[Daemon]\nplugins = Dump\n"))
    neutron = _write(tmp_path / "neutron.conf", "[keystone_authtoken]\nauth_url = http://k\nusername = u\n"
                     "password = p\nproject_name = s\n")
    conf = _write(tmp_path / "rpcdaemon.conf",
                  "[Daemon]\nplugins = DHCPAgent Dump\n[DHCPAgent]\nconffile = neutron.conf\n")
    with pytest.raises(ConfigError) as caught:
        resolve_settings(load_settings(conf))
    assert str(caught.value) == (f"{neutron}: [DEFAULT] transport_url: not set, and rpcdaemon.conf [Daemon] rpchost "
                                 "is empty: set one of them")


def _access(keystone: str, extra: str = "") -> NeutronAccess:
    return neutron_access(L3AgentSettings(), parse_neutron_conf(f"[keystone_authtoken]\n{keystone}\n{extra}"))


def test_application_credentials_from_auth_type() -> None:
    access = _access("auth_type = v3applicationcredential\nauth_url = http://k:5000/v3\n"
                     "application_credential_id = ac1\napplication_credential_secret = s3cr3t")
    assert (access.auth_type, access.auth_options["application_credential_id"]) == ("v3applicationcredential", "ac1")
    assert "s3cr3t" not in repr(access)
    assert "s3cr3t" not in access.describe()
    with pytest.raises(ConfigError, match=r"\[keystone_authtoken\] application_credential_secret: .*missing "
                       "application_credential_secret \\(auth_type v3applicationcredential"):
        _access("auth_type = v3applicationcredential\nauth_url = http://k:5000/v3\napplication_credential_id = ac1")


def test_v3token_user_id_project_id_and_system_scope() -> None:
    assert _access("auth_type = v3token\nauth_url = http://k/v3\ntoken = t0k\nproject_id = p1").auth_type == "v3token"
    by_id = _access("auth_url = http://k/v3\nuser_id = u1\npassword = p\nproject_id = p1")
    assert (by_id.auth_options["user_id"], by_id.auth_options["project_id"]) == ("u1", "p1")
    assert "u1@p1" in by_id.describe()
    system = _access("auth_url = http://k/v3\nusername = admin\npassword = p\nsystem_scope = all")
    assert "admin@system:all" in system.describe()


def test_unknown_auth_type_is_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        _access("auth_type = kerberos-ish\nauth_url = http://k/v3")
    text = str(caught.value)
    assert text.startswith("neutron.conf: [keystone_authtoken] auth_type = 'kerberos-ish': no usable")
    assert "v3applicationcredential" in text
    assert "\n" not in text


def test_auth_section_redirects_and_session_options(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    access = _access("auth_section = service_auth\ninsecure = true",
                     f"[service_auth]\nauth_type = password\nauth_url = http://k/v3\nusername = n\npassword = p\n"
                     f"project_name = service\ncertfile = {cert}\nkeyfile = {cert}\n")
    assert (access.auth_section, access.username, access.certfile, access.insecure) == (
        "service_auth", "n", str(cert), True)
    with pytest.raises(ConfigError, match=r"\[keystone_authtoken\] auth_section = 'nowhere': names a section"):
        _access("auth_section = nowhere")
    with pytest.raises(ConfigError, match=r"\[keystone_authtoken\] cafile = '/no/such/ca.pem': expected a readable"):
        _access("auth_url = http://k/v3\nusername = n\npassword = p\nproject_name = s\ncafile = /no/such/ca.pem")


def test_endpoint_mode_takes_cafile_and_insecure() -> None:
    conf = parse_neutron_conf("")
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    access = neutron_access(L3AgentSettings(endpoint="https://n:9696", cafile=bundle, insecure=False), conf)
    assert access.cafile == "/etc/ssl/certs/ca-certificates.crt"
    assert neutron_access(L3AgentSettings(endpoint="https://n:9696", insecure=True), conf).insecure
    with pytest.raises(ConfigError, match=r"rpcdaemon.conf: \[L3Agent\] cafile = '/nope': expected a readable"):
        neutron_access(L3AgentSettings(endpoint="https://n:9696", cafile=Path("/nope")), conf)


@pytest.mark.parametrize(
    ("rabbit", "url", "enabled"),
    [
        ("[oslo_messaging_rabbit]\nssl = true\n", "rabbit://u:p@h:5671/", True),
        ("[oslo_messaging_rabbit]\nrabbit_use_ssl = true\n", "rabbit://u:p@h:5671/", True),
        ("", "rabbit://u:p@h:5671/?ssl=1", True),
        ("[oslo_messaging_rabbit]\nssl = true\n", "rabbit://u:p@h:5671/?ssl=0", False),
        ("", "rabbit://u:p@h:5672/", False),
    ],
)
def test_oslo_ssl_switches(rabbit: str, url: str, enabled: bool) -> None:
    conf = parse_neutron_conf(f"[DEFAULT]\ntransport_url = {url}\n{rabbit}")
    assert conf.rabbit.enabled is enabled
    assert kombu_url(url) == "amqp://u:p@h:" + url.split(":")[3].split("/")[0] + "//"


def test_oslo_ssl_files_old_names_and_rpcdaemon_conf_wins(tmp_path: Path) -> None:
    ca = "/etc/ssl/certs/ca-certificates.crt"
    neutron = _write(tmp_path / "neutron.conf", "[DEFAULT]\ntransport_url = rabbit://u:p@h:5671/\n"
                     "[oslo_messaging_rabbit]\nssl = true\nkombu_ssl_ca_certs = /no/such/ca\nssl_version = TLSv1_2\n")
    conf = load_neutron_conf(neutron)
    assert (conf.rabbit.tls.ca_file, conf.rabbit.tls.minimum_version) == ("/no/such/ca", "TLSv1_2")
    text = f"[Daemon]\nplugins = L3Agent\n[L3Agent]\nconffile = {neutron}\nendpoint = http://n:9696\n"
    with pytest.raises(ConfigError, match=r"\[oslo_messaging_rabbit\] kombu_ssl_ca_certs = '/no/such/ca': expected a"):
        resolve_settings(parse_settings(text, str(tmp_path / "rpcdaemon.conf")))
    resolved = resolve_settings(parse_settings(text.replace("[L3Agent]", f"ssl_ca_file = {ca}\n[L3Agent]"),
                                               str(tmp_path / "rpcdaemon.conf")))
    assert resolved.broker_tls is not None
    assert (resolved.broker_tls.ca_file, resolved.broker_tls.verify_hostname) == (ca, True)
    off = text.replace("[L3Agent]", "ssl = false\n[L3Agent]")
    assert resolve_settings(parse_settings(off, str(tmp_path / "rpcdaemon.conf"))).broker_tls is None
    with pytest.raises(ConfigError, match=r"ssl_version = 'SSLv2': expected TLSv1_2"):
        parse_neutron_conf("[oslo_messaging_rabbit]\nssl_version = SSLv2\n")


def test_rpchost_amqps_means_tls_with_host_name_check() -> None:
    resolved = resolve_settings(parse_settings("[Daemon]\nplugins = Dump\nrpchost = amqps://u:p@b:5671//\n"))
    assert resolved.broker_tls is not None
    assert resolved.broker_tls.verify_hostname
    plain = resolve_settings(parse_settings("[Daemon]\nplugins = Dump\nrpchost = amqp://u:p@b:5672//\n"))
    assert plain.broker_tls is None
