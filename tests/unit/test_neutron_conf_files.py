"""``conffile`` as a list of neutron.conf files and directories, read as neutron-server's
``--config-file a --config-file b --config-dir d`` are: in order, a directory's ``*.conf`` sorted,
later values winning; every entry checked when rpcdaemon.conf is loaded; messages naming the file
that set the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rpcdaemon.config.neutronconf import load_neutron_conf, resolve_settings
from rpcdaemon.config.settings import ConfigError, ConfigErrors, load_settings, parse_settings, render_config

KEYSTONE = ("[keystone_authtoken]\nauth_url = http://k:5000/v3\nusername = neutron\npassword = pw\n"
            "project_name = service\n")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _rpcdaemon_conf(tmp_path: Path, conffile: str, plugins: str = "L3Agent") -> Path:
    return _write(tmp_path / "rpcdaemon.conf", f"[Daemon]\nplugins = {plugins}\n[L3Agent]\nconffile = {conffile}\n")


def test_one_file_reads_and_renders_as_before(tmp_path: Path) -> None:
    settings = parse_settings("[L3Agent]\nconffile = /etc/neutron/other.conf\n")
    assert settings.l3.conffile == (Path("/etc/neutron/other.conf"),)
    assert "conffile = /etc/neutron/other.conf\n" in render_config(settings, docs=False)
    assert parse_settings("").l3.conffile == (Path("/etc/neutron/neutron.conf"),)
    neutron = _write(tmp_path / "neutron.conf", "[DEFAULT]\nagent_down_time = 20\n")
    assert load_neutron_conf(neutron) == load_neutron_conf([neutron])
    assert load_neutron_conf(neutron).source == str(neutron)


def test_spaces_and_commas_separate_entries() -> None:
    settings = parse_settings("[DHCPAgent]\nconffile = /a.conf, /b.ini,/c.d  /e.conf\n")
    assert settings.dhcp.conffile == (Path("/a.conf"), Path("/b.ini"), Path("/c.d"), Path("/e.conf"))
    assert "conffile = /a.conf /b.ini /c.d /e.conf\n" in render_config(settings, docs=False)
    with pytest.raises(ConfigError, match=r"\[DHCPAgent\] conffile = ',': expected space- or comma-separated"):
        parse_settings("[DHCPAgent]\nconffile =  , \n")


def test_later_files_win_in_the_order_listed(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.conf", "[DEFAULT]\nagent_down_time = 20\ntransport_url = rabbit://h1/\n[AGENT]\n"
               "report_interval = 4\n")
    b = _write(tmp_path / "b.ini", "[DEFAULT]\nagent_down_time = 30\n")
    ab, ba = load_neutron_conf([a, b]), load_neutron_conf([b, a])
    assert (ab.agent_down_time, ab.report_interval, ab.transport_url) == (30.0, 4.0, "rabbit://h1/")
    assert ba.agent_down_time == 20.0
    assert ab.source == f"{a}, {b}"


def test_directory_means_its_conf_files_sorted(tmp_path: Path) -> None:
    main = _write(tmp_path / "neutron.conf", "[DEFAULT]\nagent_down_time = 10\n")
    confd = tmp_path / "neutron.conf.d"
    _write(confd / "20-b.conf", "[DEFAULT]\nagent_down_time = 40\n")
    _write(confd / "10-a.conf", "[DEFAULT]\nagent_down_time = 30\n[AGENT]\nreport_interval = 3\n")
    _write(confd / ".99-hidden.conf", "[DEFAULT]\nagent_down_time = 99\n")  # oslo's glob skips it
    _write(confd / "99-notes.txt", "[DEFAULT]\nagent_down_time = 98\n")
    last = _write(tmp_path / "last.conf", "[AGENT]\nreport_interval = 5\n")
    conf = load_neutron_conf([main, confd, last])
    assert (conf.agent_down_time, conf.report_interval) == (40.0, 5.0)
    assert conf.source == ", ".join(map(str, [main, confd / "10-a.conf", confd / "20-b.conf", last]))
    # A directory first, a file after it: the file wins.
    assert load_neutron_conf([confd, main]).agent_down_time == 10.0


def test_empty_directory_is_fine(tmp_path: Path) -> None:
    _write(tmp_path / "neutron.conf", "[DEFAULT]\nagent_down_time = 10\ntransport_url = rabbit://h/\n" + KEYSTONE)
    (tmp_path / "empty.d").mkdir()
    settings = load_settings(_rpcdaemon_conf(tmp_path, "neutron.conf empty.d"))
    resolved = resolve_settings(settings)
    assert resolved.l3 is not None
    assert resolved.l3.agent_down_time == 10.0
    only_empty = load_neutron_conf([tmp_path / "empty.d"])
    assert (only_empty.agent_down_time, only_empty.source) == (75.0, str(tmp_path / "empty.d"))


def test_relative_entries_are_taken_from_rpcdaemon_conf_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  ) -> None:
    etc = tmp_path / "etc"
    _write(etc / "neutron" / "neutron.conf", "[DEFAULT]\ntransport_url = rabbit://u:p@h1/\n" + KEYSTONE)
    _write(etc / "neutron" / "neutron.conf.d" / "50-down.conf", "[DEFAULT]\nagent_down_time = 12\n")
    conf = _write(etc / "rpcdaemon.conf", "[Daemon]\nplugins = L3Agent\n[L3Agent]\n"
                  "conffile = neutron/neutron.conf, neutron/neutron.conf.d\n")
    monkeypatch.chdir(tmp_path)  # not the config's directory
    settings = load_settings(conf)
    assert settings.l3.conffile == (etc / "neutron" / "neutron.conf", etc / "neutron" / "neutron.conf.d")
    resolved = resolve_settings(settings)
    assert resolved.l3 is not None
    assert resolved.l3.agent_down_time == 12.0
    assert resolved.broker_url == "amqp://u:p@h1//"


def test_each_unreadable_entry_is_one_line_naming_the_entry(tmp_path: Path) -> None:
    _write(tmp_path / "neutron.conf", "[DEFAULT]\n")
    (tmp_path / "conf.d" / "50-dir.conf").mkdir(parents=True)  # matches *.conf, cannot be read
    conf = _rpcdaemon_conf(tmp_path, "neutron.conf missing.ini conf.d")
    with pytest.raises(ConfigErrors) as caught:
        load_settings(conf)
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{conf}: 2 errors:",
        f"{conf}: [L3Agent] conffile = '{tmp_path / 'missing.ini'}': entry 2 of 3: expected a readable "
        "neutron.conf (No such file or directory)",
        f"{conf}: [L3Agent] conffile = '{tmp_path / 'conf.d' / '50-dir.conf'}': in directory {tmp_path / 'conf.d'} "
        "(entry 3 of 3): expected a readable neutron.conf (a directory, not a regular file)",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any directory")
def test_unlistable_directory_is_an_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked.d"
    locked.mkdir(mode=0)
    try:
        with pytest.raises(ConfigError, match=r"\[L3Agent\] conffile = '.*locked.d': expected a listable directory"):
            load_settings(_rpcdaemon_conf(tmp_path, "locked.d"))
    finally:
        locked.chmod(0o700)


def test_messages_name_the_file_that_set_the_key(tmp_path: Path) -> None:
    a = _write(tmp_path / "neutron.conf", "[DEFAULT]\nagent_down_time = never\n[AGENT]\nreport_interval = 2\n")
    b = _write(tmp_path / "conf.d" / "10-fix.conf", "[DEFAULT]\nagent_down_time = 20\n")
    c = _write(tmp_path / "conf.d" / "20-bad.conf", "[AGENT]\nreport_interval = -1\n")
    with pytest.raises(ConfigError) as caught:
        load_neutron_conf([a, tmp_path / "conf.d"])  # a's bad value is overridden by b: only c's is wrong
    assert str(caught.value) == f"{c}: [AGENT] report_interval = '-1': expected a number of seconds > 0"
    c.write_text("[keystone_authtoken]\nauth_type = kerberos-ish\n")
    _write(tmp_path / "rpcdaemon.conf", "[Daemon]\nplugins = L3Agent\nrpchost = h\n[L3Agent]\n"
           f"conffile = {a} {tmp_path / 'conf.d'}\n")
    with pytest.raises(ConfigError) as caught:
        resolve_settings(load_settings(tmp_path / "rpcdaemon.conf"))
    assert str(caught.value).startswith(f"{c}: [keystone_authtoken] auth_type = 'kerberos-ish': no usable Neutron")
    assert load_neutron_conf([a, tmp_path / "conf.d"]).origin("agent_down_time", "DEFAULT") == str(b)


def test_a_key_no_file_sets_names_every_file_read(tmp_path: Path) -> None:
    a = _write(tmp_path / "neutron.conf", KEYSTONE)
    b = _write(tmp_path / "ml2_conf.ini", "[ml2]\ntype_drivers = vxlan\n")
    conf = _rpcdaemon_conf(tmp_path, "neutron.conf ml2_conf.ini")
    with pytest.raises(ConfigError) as caught:
        resolve_settings(load_settings(conf))
    assert str(caught.value) == (f"{a}, {b}: [DEFAULT] transport_url: not set, and rpcdaemon.conf [Daemon] rpchost "
                                 "is empty: set one of them")


def test_rabbit_tls_key_names_the_file_that_set_it(tmp_path: Path) -> None:
    a = _write(tmp_path / "neutron.conf", "[DEFAULT]\ntransport_url = rabbit://u:p@h:5671/\n"
               "[oslo_messaging_rabbit]\nssl = true\nssl_ca_file = /etc/ssl/certs/ca-certificates.crt\n")
    b = _write(tmp_path / "tls.conf", "[oslo_messaging_rabbit]\nssl_ca_file = /no/such/ca\n")
    conf = _write(tmp_path / "rpcdaemon.conf", f"[Daemon]\nplugins = L3Agent\n[L3Agent]\nconffile = {a} {b}\n"
                  "endpoint = http://n:9696\n")
    with pytest.raises(ConfigError) as caught:
        resolve_settings(load_settings(conf))
    assert str(caught.value) == (f"{b}: [oslo_messaging_rabbit] ssl_ca_file = '/no/such/ca': expected a readable "
                                 "file (No such file or directory)")


def test_an_unlisted_conf_d_beside_a_listed_file_is_a_warning_not_read(tmp_path: Path) -> None:
    _write(tmp_path / "neutron.conf", "[DEFAULT]\nagent_down_time = 10\n")
    (tmp_path / "neutron.conf.d").mkdir()
    conf = _rpcdaemon_conf(tmp_path, "neutron.conf")
    assert load_settings(conf).warnings == ()  # empty: nothing to say
    _write(tmp_path / "neutron.conf.d" / "50-x.conf", "[DEFAULT]\nagent_down_time = 99\n")
    settings = load_settings(conf)
    [warning] = settings.warnings
    assert warning.startswith(f"{conf}: [L3Agent] conffile: {tmp_path / 'neutron.conf.d'} holds *.conf files")
    assert load_neutron_conf(settings.l3.conffile).agent_down_time == 10.0  # not added silently
    listed = _rpcdaemon_conf(tmp_path, "neutron.conf neutron.conf.d")
    assert load_settings(listed).warnings == ()
    assert load_neutron_conf(load_settings(listed).l3.conffile).agent_down_time == 99.0
