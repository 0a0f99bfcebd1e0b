"""neutron.conf, read the way oslo.config would (without importing it), and what it tells rpcdaemon.

The L3Agent/DHCPAgent plugins take from it: ``[DEFAULT] agent_down_time`` (when an agent is dead),
``[AGENT] report_interval``, ``[DEFAULT] transport_url`` (the broker, unless ``[Daemon] rpchost`` is
set) and the ``[keystone_authtoken]`` credentials (Keystone v3 keys, or the Havana-era ``admin_*`` and
``auth_host`` keys). ``resolve_settings`` combines that with rpcdaemon.conf into the values the service
wires up; ``cli.main`` calls it before detaching so a bad file is reported on the terminal.

``kombu_url`` is a pure function; ``observing.bus.normalise_url`` does a similar job for the bus
listener (two implementations for now: this one is the one applied to configuration).
"""

from __future__ import annotations

import configparser
import math
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from rpcdaemon.access import NeutronAccess
from rpcdaemon.settings import AgentPluginSettings, ConfigError, Settings

# Neutron's own defaults, used when neutron.conf does not set the key.
AGENT_DOWN_TIME = 75.0
REPORT_INTERVAL = 30.0
# keystonemiddleware's defaults for the Havana-era auth_host/auth_port/auth_protocol keys.
LEGACY_AUTH = {"auth_host": "127.0.0.1", "auth_port": "35357", "auth_protocol": "https"}
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


@dataclass(frozen=True)
class NeutronConf:
    """What rpcdaemon uses from one neutron.conf. ``access`` may be incomplete: see ``neutron_access``."""

    agent_down_time: float = AGENT_DOWN_TIME
    report_interval: float = REPORT_INTERVAL
    transport_url: str | None = None
    access: NeutronAccess = field(default_factory=NeutronAccess)
    source: str = "neutron.conf"


def _section_key(name: str) -> str:
    # oslo.config lower-cases group names; DEFAULT is the one exception.
    return "DEFAULT" if name.upper() == "DEFAULT" else name.lower()


class _Template(string.Template):
    # oslo.config's substitution syntax: $opt or ${opt} (DEFAULT) and $group.opt; $$ is a literal $.
    idpattern = r"[_a-z][\._a-z0-9]*"


class _Sections:
    """Sections of an oslo ini file: names case-insensitive except DEFAULT, later values win, quotes and
    ``$`` substitutions handled as oslo.config does."""

    def __init__(self, text: str, source: str) -> None:
        parser = configparser.ConfigParser(
            interpolation=None, strict=False, default_section="\0", empty_lines_in_values=False
        )
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # oslo option names keep their case
        try:
            parser.read_string(text, source)
        except configparser.MissingSectionHeaderError as exc:
            raise ConfigError(None, None, None, "expected a [section] header first", source=source,
                              line=exc.lineno) from None
        except configparser.ParsingError as exc:
            raise ConfigError(None, None, None, "cannot parse: expected 'key = value'", source=source,
                              line=exc.errors[0][0]) from None
        self.source = source
        self.data: dict[str, dict[str, str]] = {}
        for section in parser.sections():
            self.data.setdefault(_section_key(section), {}).update(parser.items(section))

    def get(self, section: str, key: str) -> str | None:
        raw = self.data.get(_section_key(section), {}).get(key)
        if raw is None:
            return None
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            raw = raw[1:-1]
        return _Template(raw.replace(r"\$", "$$")).safe_substitute(_Lookup(self.data))

    def number(self, section: str, key: str, default: float) -> float:
        text = self.get(section, key)
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(section, key, text, "expected a number of seconds > 0", source=self.source)
        return value

    def boolean(self, section: str, key: str) -> bool | None:
        text = self.get(section, key)
        if not text:
            return None
        if text.lower() not in _BOOLEANS:
            raise ConfigError(section, key, text, "expected true or false", source=self.source)
        return _BOOLEANS[text.lower()]


class _Lookup(Mapping[str, str]):
    """``$opt`` -> [DEFAULT] opt, ``$group.opt`` -> [group] opt; unknown names stay as written."""

    def __init__(self, data: dict[str, dict[str, str]]) -> None:
        self.data = data

    def __getitem__(self, name: str) -> str:
        group, _, opt = name.rpartition(".")
        return self.data[_section_key(group or "DEFAULT")][opt]

    def __iter__(self) -> Iterator[str]:  # Template only looks names up
        return iter(())

    def __len__(self) -> int:
        return 0


def _first(sections: _Sections, *keys: str) -> str | None:
    for key in keys:
        value = sections.get("keystone_authtoken", key)
        if value:
            return value
    return None


def _legacy_auth_url(sections: _Sections) -> str | None:
    """Havana's auth_host/auth_port/auth_protocol (plus auth_admin_prefix) as one URL."""
    given = {key: sections.get("keystone_authtoken", key) for key in LEGACY_AUTH}
    if not any(given.values()):
        return None
    parts = {key: given[key] or default for key, default in LEGACY_AUTH.items()}
    if not parts["auth_port"].isdigit():
        raise ConfigError("keystone_authtoken", "auth_port", parts["auth_port"], "expected a TCP port number",
                          source=sections.source)
    host = parts["auth_host"]
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    prefix = (sections.get("keystone_authtoken", "auth_admin_prefix") or "").strip("/")
    return f"{parts['auth_protocol']}://{host}:{parts['auth_port']}" + (f"/{prefix}" if prefix else "")


def parse_neutron_conf(text: str, source: str = "neutron.conf") -> NeutronConf:
    """The parts of neutron.conf rpcdaemon uses. Missing keys take Neutron's defaults."""
    sections = _Sections(text, source)
    access = NeutronAccess(
        auth_url=_first(sections, "auth_url", "identity_uri", "www_authenticate_uri", "auth_uri")
        or _legacy_auth_url(sections),
        username=_first(sections, "username", "admin_user"),
        password=_first(sections, "password", "admin_password"),
        project_name=_first(sections, "project_name", "admin_tenant_name", "tenant_name"),
        user_domain_name=_first(sections, "user_domain_name") or NeutronAccess.user_domain_name,
        user_domain_id=_first(sections, "user_domain_id"),
        project_domain_name=_first(sections, "project_domain_name") or NeutronAccess.project_domain_name,
        project_domain_id=_first(sections, "project_domain_id"),
        region_name=_first(sections, "region_name"),
        interface=_first(sections, "interface") or NeutronAccess.interface,
        cafile=_first(sections, "cafile"),
        insecure=bool(sections.boolean("keystone_authtoken", "insecure")),
    )
    transport_url = sections.get("DEFAULT", "transport_url") or None
    if transport_url is not None:
        try:
            kombu_url(transport_url)
        except ValueError as exc:
            raise ConfigError("DEFAULT", "transport_url", transport_url, str(exc), source=source) from None
    return NeutronConf(
        agent_down_time=sections.number("DEFAULT", "agent_down_time", AGENT_DOWN_TIME),
        report_interval=sections.number("AGENT", "report_interval", REPORT_INTERVAL),
        transport_url=transport_url,
        access=access,
        source=source,
    )


def load_neutron_conf(path: Path) -> NeutronConf:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(None, None, None, f"cannot read: {reason}", source=str(path)) from None
    return parse_neutron_conf(text, str(path))


def kombu_url(transport_url: str) -> str:
    """An oslo.messaging ``transport_url`` as a kombu URL: ``rabbit://`` becomes ``amqp://``, several
    hosts become kombu's ``;``-separated failover list, the virtual host is kept, query options dropped.

    Raises ValueError (its text says what is expected) for anything that is not a RabbitMQ URL."""
    scheme, sep, rest = transport_url.strip().partition("://")
    if not sep or scheme.lower() not in ("rabbit", "amqp", "amqps", "pyamqp"):
        raise ValueError("expected a rabbit:// (or amqp://) URL")
    scheme = "amqp" if scheme.lower() == "rabbit" else scheme.lower()
    netloc, _, path = rest.partition("/")
    vhost = path.split("?", 1)[0].split("#", 1)[0]
    hosts = [host for host in netloc.split(",") if host]
    if not hosts:
        raise ValueError("expected at least one host in the URL")
    # kombu reads an empty path as vhost "/"; spell it "//" to be explicit.
    return ";".join(f"{scheme}://{host}/{vhost or '/'}" for host in hosts)


def neutron_access(plugin: AgentPluginSettings, conf: NeutronConf, *, section: str = "L3Agent") -> NeutronAccess:
    """How the plugin reaches the Neutron API: its ``endpoint`` (no auth), else its ``cloud``
    (clouds.yaml), else neutron.conf's ``[keystone_authtoken]`` credentials, which must then be complete."""
    if plugin.endpoint:
        return NeutronAccess(endpoint=plugin.endpoint, timeout=plugin.timeout)
    if plugin.cloud:
        return NeutronAccess(cloud=plugin.cloud, timeout=plugin.timeout)
    access = conf.access
    needed = {"auth_url": access.auth_url, "username": access.username, "password": access.password,
              "project_name": access.project_name}
    missing = [key for key, value in needed.items() if not value]
    if missing:
        raise ConfigError(
            "keystone_authtoken", None, None,
            f"no usable Neutron credentials: missing {', '.join(missing)} "
            f"(or set endpoint or cloud in [{section}] of rpcdaemon.conf)",
            source=conf.source,
        )
    return replace(access, timeout=plugin.timeout)


@dataclass(frozen=True)
class PluginNeutron:
    """One L3Agent/DHCPAgent plugin's view of Neutron, its neutron.conf and rpcdaemon.conf combined."""

    conf: NeutronConf
    access: NeutronAccess
    agent_down_time: float  # [plugin] agent_down_time, else neutron.conf's
    startup_grace: float  # [plugin] startup_grace, else one agent_down_time


@dataclass(frozen=True)
class Resolved:
    broker_url: str
    l3: PluginNeutron | None = None
    dhcp: PluginNeutron | None = None


def resolve_settings(settings: Settings) -> Resolved:
    """Read the listed agent plugins' neutron.conf files and settle the broker URL and Neutron access.

    Raises ConfigError (naming the file, section and key) when something is missing or invalid."""
    plugins: dict[str, PluginNeutron] = {}
    cache: dict[Path, NeutronConf] = {}
    for name, plugin in settings.agent_plugins():
        if plugin.conffile not in cache:
            cache[plugin.conffile] = load_neutron_conf(plugin.conffile)
        conf = cache[plugin.conffile]
        plugins[name] = PluginNeutron(
            conf=conf,
            access=neutron_access(plugin, conf, section=name),
            agent_down_time=plugin.effective_agent_down_time(conf.agent_down_time),
            startup_grace=plugin.effective_startup_grace(conf.agent_down_time),
        )
    return Resolved(broker_url=broker_url(settings, plugins), l3=plugins.get("L3Agent"),
                    dhcp=plugins.get("DHCPAgent"))


def broker_url(settings: Settings, plugins: Mapping[str, PluginNeutron]) -> str:
    """``[Daemon] rpchost`` when set (rabbit:// URLs converted), else the first agent plugin's transport_url."""
    rpchost = settings.daemon.rpchost
    if rpchost:
        return kombu_url(rpchost) if rpchost.lower().startswith("rabbit://") else rpchost
    for name, _ in settings.agent_plugins():
        conf = plugins[name].conf
        if conf.transport_url:
            return kombu_url(conf.transport_url)
        raise ConfigError("DEFAULT", "transport_url", None,
                          "not set, and rpcdaemon.conf [Daemon] rpchost is empty: set one of them",
                          source=conf.source)
    raise ConfigError("Daemon", "rpchost", "",
                      "expected a broker host or URL: no L3Agent/DHCPAgent plugin is listed whose neutron.conf "
                      "transport_url could be used", source=settings.source)
