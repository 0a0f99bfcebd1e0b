"""rpcdaemon.conf: the settings, declared once, validated when loaded.

One frozen dataclass per section (``[Daemon]``, ``[L3Agent]``, ``[DHCPAgent]``, ``[Dump]``). Every
field carries its default, a one-line reason and a ``Kind`` (how the ini text is parsed and what is
allowed); the loader, the error messages, ``--check-config`` and ``etc/rpcdaemon.conf.example`` are all
derived from those declarations. ``cli.main`` calls ``load_settings``; ``neutronconf.resolve_settings``
adds what comes from neutron.conf. Any bad value raises ``ConfigError``, whose text is one line.
"""

from __future__ import annotations

import configparser
import ipaddress
import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions

from rpcdaemon.logs import mask_secrets

L3AGENT, DHCPAGENT, DUMP = "L3Agent", "DHCPAgent", "Dump"
PLUGIN_NAMES = (L3AGENT, DHCPAGENT, DUMP)
AGENT_PLUGINS = (L3AGENT, DHCPAGENT)
DEFAULT_PIDFILE = Path("/var/run/rpcdaemon.pid")
DEFAULT_LOGFILE = Path("/var/log/rpcdaemon.log")
DEFAULT_NEUTRON_CONF = Path("/etc/neutron/neutron.conf")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# rabbit:// is oslo.messaging's spelling; neutronconf.kombu_url turns it into amqp:// failover URLs.
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "rabbit")


class ConfigError(Exception):
    """A configuration problem, told in one line: where, which key, the bad value, what is allowed."""

    def __init__(
        self,
        section: str | None,
        key: str | None,
        value: str | None,
        allowed: str,
        *,
        source: str = "rpcdaemon.conf",
        line: int | None = None,
    ) -> None:
        # Exception texts (jmespath, OSError) may span lines; the message must stay one line.
        self.section, self.key, self.value = section, key, value
        self.allowed = " ".join(allowed.split())
        self.source, self.line = source, line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}, line {self.line}"
        if self.section is not None and self.key is not None:
            shown = "" if self.value is None else f" = {self.value!r}"
            text = f"{where}: [{self.section}] {self.key}{shown}: {self.allowed}"
        elif self.section is not None:
            text = f"{where}: [{self.section}]: {self.allowed}"
        else:
            text = f"{where}: {self.allowed}"
        # The bad value may be a broker URL with its password: messages reach terminals and logs.
        return mask_secrets(text)


class Invalid(ValueError):
    """Raised by a ``Kind.parse`` with a detail worth showing (a plain ValueError shows none)."""


def _render(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return " ".join(value)
    return str(value)


@dataclass(frozen=True)
class Kind:
    """How one key is read: ``parse`` raises ValueError (``Invalid`` to add a detail) for bad text."""

    expected: str
    parse: Callable[[str], Any]
    render: Callable[[Any], str] = _render


def _number(minimum: float, *, strict: bool, maximum: float | None = None, what: str) -> Kind:
    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise ValueError
        if maximum is not None and value > maximum:
            raise ValueError
        return value

    return Kind(what, parse)


def _integer(minimum: int, maximum: int | None = None, *, what: str) -> Kind:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError
        return value

    return Kind(what, parse)


def _optional(kind: Kind, empty_means: str) -> Kind:
    return Kind(f"{kind.expected}, or empty for {empty_means}", lambda t: kind.parse(t) if t else None)


def _parse_bool(text: str) -> bool:
    state = configparser.ConfigParser.BOOLEAN_STATES.get(text.lower())
    if state is None:
        raise ValueError
    return state


def _parse_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise ValueError
    return text.upper()


def _parse_plugins(text: str) -> tuple[str, ...]:
    canonical = {name.lower(): name for name in PLUGIN_NAMES}
    names: list[str] = []
    for word in text.replace(",", " ").split():
        name = canonical.get(word.lower())
        if name is None:
            raise Invalid(f"unknown plugin {word!r}")
        if name not in names:
            names.append(name)
    if not names:
        raise Invalid("no plugin listed")
    return tuple(names)


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?$")


def _parse_rpchost(text: str) -> str:
    if "://" not in text:
        if not _HOST.match(text):
            raise ValueError
        return f"amqp://{text}//"  # the seed handed a bare host to kombu, which means amqp, guest, vhost /
    for url in text.split(";"):
        scheme, _, rest = url.strip().partition("://")
        if scheme.lower() not in BROKER_SCHEMES or not rest:
            raise Invalid(f"unsupported URL {url.strip()!r}")
    return text


def _parse_address(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", text):
            raise
    return text


def _parse_url(text: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError
    return text.rstrip("/")


def _parse_nonempty(text: str) -> str:
    if not text:
        raise ValueError
    return text


def _parse_jmespath(text: str) -> str:
    try:
        jmespath.compile(text)
    except jmespath.exceptions.JMESPathError as exc:
        position = getattr(exc, "lex_position", None)
        at = "" if position is None else f" at character {position}"
        raise Invalid(str(exc).splitlines()[0].rstrip(":") + at) from exc
    return text


def _parse_per_network(text: str) -> int | None:
    if text.lower() == "all":
        return None
    value = int(text)
    if value < 1:
        raise ValueError
    return value


SECONDS = _number(0, strict=True, what="a number of seconds > 0")
SECONDS_OR_ZERO = _number(0, strict=False, what="a number of seconds >= 0")
BOOL = Kind("a boolean (true/false, yes/no, on/off, 1/0)", _parse_bool)
LEVEL_NAME = Kind(f"one of {', '.join(LOG_LEVELS)}", _parse_level)
LEVEL = _optional(LEVEL_NAME, "the [Daemon] loglevel")
PATH = Kind("a file path", lambda t: Path(_parse_nonempty(t)))
TEXT = _optional(Kind("a name", _parse_nonempty), "none")


def setting(default: Any, doc: str, kind: Kind) -> Any:
    """A field of a settings section: its default, a one-line reason, and how its text is read."""
    return field(default=default, metadata={"doc": doc, "kind": kind})


@dataclass(frozen=True)
class DaemonSettings:
    plugins: tuple[str, ...] = setting(
        (L3AGENT, DHCPAGENT),
        "Plugins to run: L3Agent (routers off dead L3 agents), DHCPAgent (DHCP networks onto live DHCP "
        "agents), Dump (log bus traffic, for troubleshooting).",
        Kind(f"space-separated names from: {' '.join(PLUGIN_NAMES)}", _parse_plugins),
    )
    rpchost: str | None = setting(
        None,
        "Kombu URL of Neutron's RabbitMQ; a bare host or IP means amqp://guest:guest@HOST:5672//; empty "
        "means the transport_url of the first L3Agent/DHCPAgent plugin's neutron.conf.",
        _optional(Kind("a host, host:port or amqp:// URL", _parse_rpchost), "neutron.conf's transport_url"),
    )
    pidfile: Path = setting(  # noqa: RUF009 (setting() is a dataclasses.field)
        DEFAULT_PIDFILE,
        "Pid file of the detached daemon (none with -d); a start refuses while its process lives.", PATH)
    logfile: Path = setting(  # noqa: RUF009
        DEFAULT_LOGFILE, "Log file of the detached daemon; with -d logs go to stderr.", PATH)
    loglevel: str | None = setting(
        None, "Log level; empty means INFO when detached and DEBUG with -d.",
        _optional(LEVEL_NAME, "INFO (DEBUG with -d)"))
    check_interval: float = setting(
        2.0, "Seconds between checks of liveness and bindings; failover waits at most this long extra.", SECONDS)
    dry_run: bool = setting(
        False, "Plan and log every move but change nothing in Neutron (also --dry-run).", BOOL)
    metrics_port: int = setting(
        0, "TCP port of the Prometheus metrics endpoint; 0 turns it off.",
        _integer(0, 65535, what="a TCP port 1-65535, or 0 for off"))
    metrics_address: str = setting(
        "127.0.0.1", "Address the metrics endpoint listens on; keep it local unless firewalled.",
        Kind("an IP address or host name", _parse_address))


@dataclass(frozen=True)
class AgentPluginSettings:
    """Keys shared by [L3Agent] and [DHCPAgent]."""

    conffile: Path = setting(  # noqa: RUF009
        DEFAULT_NEUTRON_CONF,
        "neutron.conf giving agent_down_time, report_interval, transport_url and [keystone_authtoken].",
        PATH)
    loglevel: str | None = setting(None, "Log level of this plugin; empty means the [Daemon] loglevel.", LEVEL)
    timeout: float = setting(
        30.0, "Most seconds one Neutron API call may take; a hung call delays failover this long.", SECONDS)
    queue_expire: float = setting(
        600.0, "Seconds RabbitMQ keeps the daemon's queue after it disconnects (x-expires); 0 means never.",
        SECONDS_OR_ZERO)
    cloud: str | None = setting(
        None, "clouds.yaml cloud to reach the Neutron API with, instead of neutron.conf's [keystone_authtoken].",
        TEXT)
    endpoint: str | None = setting(
        None, "Neutron URL used without authentication (noauth test set-ups); wins over cloud and neutron.conf.",
        _optional(Kind("an http:// or https:// URL", _parse_url), "none"))
    agent_down_time: float | None = setting(
        None, "Seconds without a heartbeat after which an agent is dead.",
        _optional(SECONDS, "neutron.conf's agent_down_time"))
    api_second_opinion: bool = setting(
        True, "Move nothing off an agent unless the Neutron API also says it is not alive.", BOOL)
    revive_hold: float = setting(
        60.0, "Seconds a revived agent must keep heartbeating before it receives routers or networks again.",
        SECONDS_OR_ZERO)
    max_dead_fraction: float = setting(
        0.5, "Brake: move nothing while more than this fraction of the agents is dead (a bus fault, likely); "
        "1 disables it.", _number(0, strict=True, maximum=1, what="a fraction > 0 and <= 1"))
    max_dead_agents: int = setting(
        0, "Brake: move nothing while more than this many agents are dead; 0 means no count limit.",
        _integer(0, what="an integer >= 0"))
    max_moves_per_cycle: int = setting(
        500, "Most moves started in one check; the rest wait for the next one.", _integer(1, what="an integer >= 1"))
    workers: int = setting(8, "Neutron API calls made in parallel.", _integer(1, 256, what="an integer 1-256"))
    reconcile_interval: float = setting(
        60.0, "Seconds between full re-reads of agents and bindings from the Neutron API.", SECONDS)
    retry_attempts: int = setting(
        3, "Attempts at one API call that failed for a temporary reason, before leaving it to a later check.",
        _integer(1, what="an integer >= 1"))
    startup_grace: float | None = setting(
        None, "Seconds after start during which nothing is moved, so every live agent is heard first.",
        _optional(SECONDS_OR_ZERO, "one agent_down_time"))

    def effective_agent_down_time(self, neutron_default: float) -> float:
        return self.agent_down_time if self.agent_down_time is not None else neutron_default

    def effective_startup_grace(self, neutron_default: float) -> float:
        grace = self.startup_grace
        return grace if grace is not None else self.effective_agent_down_time(neutron_default)


@dataclass(frozen=True)
class L3AgentSettings(AgentPluginSettings):
    skip_ha_routers: bool = setting(
        True, "Leave HA routers alone: Neutron's keepalived pairs already fail them over.", BOOL)


@dataclass(frozen=True)
class DHCPAgentSettings(AgentPluginSettings):
    agents_per_network: int | None = setting(
        None, "'all' hosts every DHCP network on every live DHCP agent (the seed's way); N keeps it on N agents.",
        Kind("'all' or an integer >= 1", _parse_per_network, lambda v: "all" if v is None else str(v)))


@dataclass(frozen=True)
class DumpSettings:
    loglevel: str | None = setting(
        "DEBUG", "Log level of the Dump plugin; messages are dumped at DEBUG, so keep DEBUG.", LEVEL)
    queue: str = setting(
        "neutron", "Exchange whose traffic is dumped (Neutron's is neutron).", Kind("a name", _parse_nonempty))
    filter: str | None = setting(
        None, "JMESPath expression; only messages for which it is true are dumped (also --filter).",
        _optional(Kind("a JMESPath expression", _parse_jmespath), "all messages"))
    verbose: bool = setting(False, "Dump whole decoded messages instead of one summary line each.", BOOL)


@dataclass(frozen=True)
class Settings:
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    l3: L3AgentSettings = field(default_factory=L3AgentSettings)
    dhcp: DHCPAgentSettings = field(default_factory=DHCPAgentSettings)
    dump: DumpSettings = field(default_factory=DumpSettings)
    # Where the settings came from, for messages; and what the loader found odd but harmless.
    source: str = field(default="rpcdaemon.conf", compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def agent_plugins(self) -> list[tuple[str, AgentPluginSettings]]:
        """The listed L3Agent/DHCPAgent plugins with their settings, in the order of ``plugins``."""
        return [(name, self.section(name)) for name in self.daemon.plugins if name in AGENT_PLUGINS]

    def section(self, name: str) -> Any:
        return getattr(self, SECTIONS[name][0])


# Section name in the file -> (attribute of Settings, its dataclass).
SECTIONS: dict[str, tuple[str, type[Any]]] = {
    "Daemon": ("daemon", DaemonSettings),
    L3AGENT: ("l3", L3AgentSettings),
    DHCPAGENT: ("dhcp", DHCPAgentSettings),
    DUMP: ("dump", DumpSettings),
}


def _parse_value(section: str, key: str, text: str, kind: Kind, source: str) -> Any:
    try:
        return kind.parse(text.strip())
    except ValueError as exc:
        detail = f" ({exc})" if isinstance(exc, Invalid) else ""
        allowed = f"expected {kind.expected}{detail}"
        raise ConfigError(section, key, text, allowed, source=source) from None


def _read_ini(text: str, source: str) -> configparser.ConfigParser:
    # No interpolation: a '%' in a broker password must stay a '%'. [DEFAULT] is an ordinary
    # (unknown) section, not a source of values for every other section.
    parser = configparser.ConfigParser(interpolation=None, default_section="\0", empty_lines_in_values=False)
    try:
        parser.read_string(text, source)
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(exc.section, exc.option, None, "duplicate key (set once per section)",
                          source=source, line=exc.lineno) from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(exc.section, None, None, "duplicate section", source=source, line=exc.lineno) from None
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(None, None, None, f"expected a [Section] header before {exc.line.strip()!r}",
                          source=source, line=exc.lineno) from None
    except configparser.ParsingError as exc:
        lineno = exc.errors[0][0]
        line = text.splitlines()[lineno - 1].strip()
        raise ConfigError(None, None, None, f"cannot parse {line!r}: expected 'key = value'",
                          source=source, line=lineno) from None
    except configparser.Error as exc:
        raise ConfigError(None, None, None, str(exc), source=source) from None
    return parser


def parse_settings(text: str, source: str = "rpcdaemon.conf") -> Settings:
    """Settings from the text of an rpcdaemon.conf; pure (no file is looked at)."""
    parser = _read_ini(text, source)
    warnings: list[str] = []
    sections: dict[str, Any] = {}
    for section in parser.sections():
        if section not in SECTIONS:
            hint = [name for name in SECTIONS if name.lower() == section.lower()]
            warnings.append(f"{source}: unknown section [{section}] ignored"
                            + (f" (did you mean [{hint[0]}]?)" if hint else f" (known: {' '.join(SECTIONS)})"))
            continue
        attr, cls = SECTIONS[section]
        declared = {f.name: f.metadata["kind"] for f in fields(cls)}
        values = {}
        unknown = []
        for key, text_value in parser.items(section):
            if key in declared:
                values[key] = _parse_value(section, key, text_value, declared[key], source)
            else:
                unknown.append(key)
        if unknown:
            warnings.append(f"{source}: [{section}] unknown keys ignored: {', '.join(unknown)}")
        sections[attr] = cls(**values)
    return Settings(**sections, source=source, warnings=tuple(warnings))


def load_settings(path: Path) -> Settings:
    """Read, parse and check an rpcdaemon.conf: relative paths are taken from the file's directory, and
    the listed L3Agent/DHCPAgent plugins' neutron.conf files must be readable."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(None, None, None, "no such file", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError(None, None, None, "not a UTF-8 text file", source=source) from None
    except OSError as exc:
        raise ConfigError(None, None, None, f"cannot read: {exc.strerror}", source=source) from None
    settings = parse_settings(text, source)
    base = path.absolute().parent
    settings = replace(
        settings,
        daemon=replace(settings.daemon, pidfile=base / settings.daemon.pidfile,
                       logfile=base / settings.daemon.logfile),
        l3=replace(settings.l3, conffile=base / settings.l3.conffile),
        dhcp=replace(settings.dhcp, conffile=base / settings.dhcp.conffile),
    )
    for name, plugin in settings.agent_plugins():
        try:
            with plugin.conffile.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(name, "conffile", str(plugin.conffile),
                              f"expected a readable neutron.conf ({exc.strerror})", source=source) from None
    return settings


def override(settings: Settings, section: str, key: str, text: str, *, source: str) -> Settings:
    """``settings`` with one key replaced as if the file had said ``key = text`` (command-line options)."""
    current = settings.section(section)
    kind = {f.name: f.metadata["kind"] for f in fields(current)}[key]
    value = _parse_value(section, key, text, kind, source)
    return replace(settings, **{SECTIONS[section][0]: replace(current, **{key: value})})


def render_config(settings: Settings | None = None, *, docs: bool = True) -> str:
    """The settings as an rpcdaemon.conf; with ``docs``, every key preceded by its reason and allowed values.

    ``render_config()`` is ``etc/rpcdaemon.conf.example``; parsing the text gives the same settings back."""
    settings = settings or Settings()
    out: list[str] = []
    if docs:
        out += ["# rpcdaemon configuration. Generated by `rpcdaemon --print-example-config`; every key is",
                "# shown with its default. Sections of plugins that are not listed in [Daemon] plugins are",
                "# read but unused. Relative paths are taken from this file's directory.", ""]
    for name in SECTIONS:
        values = settings.section(name)
        out.append(f"[{name}]")
        for f in fields(values):
            kind: Kind = f.metadata["kind"]
            text = kind.render(getattr(values, f.name))
            if docs:
                out += textwrap.wrap(f.metadata["doc"], 106, initial_indent="# ", subsequent_indent="# ")
                out.append(f"# Allowed: {kind.expected}.")
            out.append(f"{f.name} = {text}".rstrip())
            if docs:
                out.append("")
        if not docs:
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
