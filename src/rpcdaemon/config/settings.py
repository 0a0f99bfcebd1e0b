"""rpcdaemon.conf: the settings, declared once, validated when loaded.

One frozen dataclass per section (``[Daemon]``, ``[L3Agent]``, ``[DHCPAgent]``, ``[Dump]``,
``[coordination]``). Every
field carries its default, a one-line reason and a ``Kind`` (``rpcdaemon.config.kinds``: how the ini text is
parsed and what is allowed, bounds included); the loader, the error messages, ``--check-config`` and
``etc/rpcdaemon.conf.example`` are all derived from those declarations. ``cli.main`` calls
``load_settings``; ``neutronconf.resolve_settings`` adds what comes from neutron.conf. The loader reads
the text with ``rpcdaemon.config.inifile`` (which keeps line numbers) and is strict: an unknown section or key
is an error with a did-you-mean hint, unless ``[Daemon] allow_unknown_keys`` makes it a warning. Every
problem of a file is found in one pass: one is a ``ConfigError`` (one line), several a ``ConfigErrors``
(a count line, then one line each).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rpcdaemon.config.conffiles import conffile_problems, unlisted_conf_dirs
from rpcdaemon.config.inifile import IniText, read_ini, unknown_key, unknown_section
from rpcdaemon.config.kinds import (
    ADDRESS,
    BOOL,
    BROKER,
    CONF_PATHS,
    COORDINATION_URL,
    DAY,
    FENCE_COMMAND,
    HTTP_URL,
    JMESPATH,
    LEVEL,
    LEVEL_NAME,
    LOCK_GROUP,
    NAME,
    PATH,
    PER_NETWORK,
    TEXT,
    Invalid,
    Kind,
    choice,
    fraction,
    integer,
    optional,
    plugin_names,
    seconds,
)
from rpcdaemon.redact import mask_text, redact_value, redact_within
from rpcdaemon.textfile import FileRefused, read_text

L3AGENT, DHCPAGENT, DUMP = "L3Agent", "DHCPAgent", "Dump"
COORDINATION = "coordination"  # lower case, as in the other OpenStack services' [coordination] backend_url
PLUGIN_NAMES = (L3AGENT, DHCPAGENT, DUMP)
AGENT_PLUGINS = (L3AGENT, DHCPAGENT)
DEFAULT_PIDFILE = Path("/var/run/rpcdaemon.pid")
DEFAULT_LOGFILE = Path("/var/log/rpcdaemon.log")
DEFAULT_NEUTRON_CONF = Path("/etc/neutron/neutron.conf")


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
        # The bad value may be a broker URL or a password: messages reach terminals and logs. It is
        # redacted knowing its key (also where the explanation quotes it), then the text filter runs.
        allowed = self.allowed
        if self.section is not None and self.key is not None:
            shown = ""
            if self.value is not None:
                value = redact_value(self.key, self.value)
                shown = f" = {value!r}" if len(value) <= 200 else f" = {value[:60]!r}... ({len(value)} characters)"
                allowed = redact_within(allowed, self.key, self.value)
            text = f"{where}: [{self.section}] {self.key}{shown}: {allowed}"
        elif self.section is not None:
            text = f"{where}: [{self.section}]: {allowed}"
        else:
            text = f"{where}: {allowed}"
        return mask_text(text)


MAX_SHOWN = 20  # problems printed one per line; a file with thousands gets a count of the rest


def shown_problems(lines: Sequence[str], what: str = "problems") -> list[str]:
    """``lines`` as printed: the first ``MAX_SHOWN``, then one line counting the rest."""
    if len(lines) <= MAX_SHOWN:
        return list(lines)
    return [*lines[:MAX_SHOWN], _more(len(lines) - MAX_SHOWN, what)]


def _more(count: int, what: str) -> str:
    return f"... and {count} more {what}"


class ConfigErrors(ConfigError):
    """All the problems of one file at once: a line saying how many, then one line for each (the
    first ``MAX_SHOWN`` of them, then how many more)."""

    def __init__(self, errors: Sequence[ConfigError], *, source: str) -> None:
        self.errors = tuple(errors)
        super().__init__(None, None, None, f"{len(self.errors)} errors", source=source)

    def __str__(self) -> str:
        shown = [str(error) for error in self.errors[:MAX_SHOWN]]
        if len(self.errors) > MAX_SHOWN:
            shown.append(_more(len(self.errors) - MAX_SHOWN, "problems"))
        return "\n".join([f"{self.source}: {len(self.errors)} errors:", *shown])


class MissingConfigFile(ConfigError):
    """The configuration file does not exist (``cli`` then says how to write one)."""


def setting(default: Any, doc: str, kind: Kind) -> Any:
    """A field of a settings section: its default, a one-line reason, and how its text is read."""
    return field(default=default, metadata={"doc": doc, "kind": kind})


@dataclass(frozen=True)
class DaemonSettings:
    plugins: tuple[str, ...] = setting(
        (L3AGENT, DHCPAGENT),
        "Plugins to run: L3Agent (routers off dead L3 agents), DHCPAgent (DHCP networks onto live DHCP "
        "agents), Dump (log bus traffic, for troubleshooting).",
        plugin_names(PLUGIN_NAMES),
    )
    rpchost: str | None = setting(
        None,
        "Kombu URL of Neutron's RabbitMQ; a bare host or IP means amqp://guest:guest@HOST:5672//; empty "
        "means the transport_url of the first L3Agent/DHCPAgent plugin's neutron.conf.",
        optional(BROKER, "neutron.conf's transport_url"),
    )
    pidfile: Path = setting(  # noqa: RUF009 (setting() is a dataclasses.field)
        DEFAULT_PIDFILE,
        "Pid file of the detached daemon (none with -d); a start refuses while its process lives.", PATH)
    logfile: Path = setting(  # noqa: RUF009
        DEFAULT_LOGFILE, "Log file of the detached daemon; with -d logs go to stderr.", PATH)
    loglevel: str | None = setting(
        None, "Log level; empty means INFO when detached or under systemd, and DEBUG with -d otherwise.",
        optional(LEVEL_NAME, "INFO (DEBUG with -d outside systemd)"))
    log_format: str = setting(
        "text", "Format of the log: text (one line per record), or json (one JSON object per line: ts, level, "
        "logger, message, and for each action kind, resource_id, from/to host and id, status, seconds).",
        choice("text", "json"))
    audit_log: Path | None = setting(  # noqa: RUF009
        None, "Audit trail: a file receiving one JSON line per decision and action (verdict changes, brake, "
        "fence runs, moves, leadership, start and stop), appended to, reopened on SIGHUP; empty means none.",
        optional(PATH, "no audit trail"))
    check_interval: float = setting(
        2.0, "Seconds between checks of liveness and bindings; failover waits at most this long extra.",
        seconds(0.1, 600))
    dry_run: bool = setting(
        False, "Plan and log every move but change nothing in Neutron (also --dry-run).", BOOL)
    allow_unknown_keys: bool = setting(
        False, "Start despite unknown sections and keys (a file written for a newer rpcdaemon): each is then "
        "logged as a warning and ignored; false refuses them, with a did-you-mean hint.", BOOL)
    metrics_port: int = setting(
        0, "TCP port of the Prometheus metrics endpoint; 0 turns it off.",
        integer(0, 65535, what="a TCP port 1-65535, or 0 for off"))
    metrics_address: str = setting(
        "127.0.0.1", "Address the metrics endpoint listens on; keep it local unless firewalled.",
        ADDRESS)
    ssl: bool | None = setting(
        None, "TLS to RabbitMQ; empty means as rpchost's amqps:// or neutron.conf's [oslo_messaging_rabbit] ssl "
        "and transport_url ?ssl=1 say.", optional(BOOL, "as the broker URL and neutron.conf say"))
    ssl_ca_file: Path | None = setting(  # noqa: RUF009
        None, "CA certificates (PEM) the broker's certificate must chain to; empty means neutron.conf's "
        "ssl_ca_file, else the system CAs.", optional(PATH, "neutron.conf's, else the system CAs"))
    ssl_cert_file: Path | None = setting(  # noqa: RUF009
        None, "Client certificate (PEM) for brokers that demand one; empty means neutron.conf's ssl_cert_file.",
        optional(PATH, "neutron.conf's, else none"))
    ssl_key_file: Path | None = setting(  # noqa: RUF009
        None, "Private key of ssl_cert_file; empty means neutron.conf's ssl_key_file (or the key inside the "
        "certificate file).", optional(PATH, "neutron.conf's, else the certificate file"))
    ssl_verify_hostname: bool = setting(
        True, "Require the broker's certificate to name the host rpcdaemon connects to; turn off only for "
        "brokers reached by a name their certificate lacks.", BOOL)


@dataclass(frozen=True)
class AgentPluginSettings:
    """Keys shared by [L3Agent] and [DHCPAgent]."""

    conffile: tuple[Path, ...] = setting(
        (DEFAULT_NEUTRON_CONF,),
        "neutron.conf giving agent_down_time, report_interval, transport_url and [keystone_authtoken]; list "
        "several files and directories as neutron-server's --config-file/--config-dir get them, e.g. "
        "/etc/neutron/neutron.conf /etc/neutron/neutron.conf.d (a directory is not added by itself).",
        CONF_PATHS)
    loglevel: str | None = setting(None, "Log level of this plugin; empty means the [Daemon] loglevel.", LEVEL)
    timeout: float = setting(
        30.0, "Most seconds one Neutron API call may take; a hung call delays failover this long.",
        seconds(1, 600))
    queue_expire: float = setting(
        600.0, "Kept for old files: sets x-expires on the daemon's queue, which has no effect (the queue is "
        "exclusive, so RabbitMQ deletes it when the daemon's connection closes).",
        seconds(1, 7 * DAY, zero_means="never"))
    cloud: str | None = setting(
        None, "clouds.yaml cloud to reach the Neutron API with, instead of neutron.conf's [keystone_authtoken].",
        TEXT)
    endpoint: str | None = setting(
        None, "Neutron URL used without authentication (noauth test set-ups); wins over cloud and neutron.conf.",
        optional(HTTP_URL, "none"))
    agent_down_time: float | None = setting(
        None, "Seconds without a heartbeat after which an agent is dead.",
        optional(seconds(1, DAY), "neutron.conf's agent_down_time"))
    api_second_opinion: bool = setting(
        True, "Move nothing off an agent unless the Neutron API also says it is not alive.", BOOL)
    revive_hold: float = setting(
        60.0, "Seconds a revived agent must keep heartbeating before it receives routers or networks again.",
        seconds(0, DAY))
    max_dead_fraction: float = setting(
        0.5, "Brake: move nothing while more than this fraction of the agents is dead (a bus fault, likely); "
        "1 disables it.", fraction())
    max_dead_agents: int = setting(
        0, "Brake: move nothing while more than this many agents are dead; 0 means no count limit.",
        integer(0, 100_000))
    max_moves_per_cycle: int = setting(
        500, "Most moves started in one check; the rest wait for the next one.", integer(1, 100_000))
    workers: int = setting(8, "Neutron API calls made in parallel.", integer(1, 256))
    reconcile_interval: float = setting(
        60.0, "Seconds between full re-reads of agents and bindings from the Neutron API.", seconds(1, DAY))
    retry_attempts: int = setting(
        3, "Attempts at one API call that failed for a temporary reason, before leaving it to a later check.",
        integer(1, 100))
    startup_grace: float | None = setting(
        None, "Seconds after start during which nothing is moved, so every live agent is heard first.",
        optional(seconds(0, DAY), "one agent_down_time"))
    cafile: Path | None = setting(  # noqa: RUF009
        None, "CA certificates (PEM) for an https endpoint (with endpoint only; clouds.yaml and neutron.conf "
        "have their own).", optional(PATH, "the system CAs"))
    insecure: bool = setting(
        False, "Do not verify the https endpoint's certificate (with endpoint only; test set-ups).", BOOL)
    ready_timeout: float = setting(
        120.0, "After a move, follow the resource until its ports are bound to the new host and ACTIVE (routers: "
        "interfaces and gateway; networks: the DHCP port); not ready within this many seconds is a WARNING.",
        seconds(5, DAY, zero_means="do not follow"))
    move_unready: bool = setting(
        False, "Unbind a resource not ready within ready_timeout from that agent, so that it moves to another "
        "one (never back to that agent).", BOOL)
    fence_command: tuple[str, ...] = setting(
        (), "Command run once per dead agent before its routers or networks move (e.g. an IPMI power-off), so "
        "that a node judged dead cannot keep forwarding next to the new host: split like a shell would, never "
        "run by one; {host}, {agent_id} and {agent_type} in its arguments (and RPCDAEMON_FENCE_HOST, "
        "RPCDAEMON_FENCE_AGENT_ID, RPCDAEMON_FENCE_AGENT_TYPE in its environment) name the dead agent; exit "
        "status 0 means fenced. Empty means no fencing.", FENCE_COMMAND)
    fence_timeout: float = setting(
        60.0, "Seconds fence_command may run; then its process group is killed and the fence counts as failed.",
        seconds(1, 600))
    move_when_fence_fails: bool = setting(
        False, "When fence_command fails (non-zero exit, timeout, not found): false keeps the agent's work where "
        "it is and tries the fence again later (30 s, doubling up to 5 min); true moves it anyway.", BOOL)

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
        PER_NETWORK)


@dataclass(frozen=True)
class DumpSettings:
    loglevel: str | None = setting(
        "DEBUG", "Log level of the Dump plugin; messages are dumped at DEBUG, so keep DEBUG.", LEVEL)
    queue: str = setting(
        "neutron", "Exchange whose traffic is dumped (Neutron's is neutron).", NAME)
    filter: str | None = setting(
        None, "JMESPath expression; only messages for which it is true are dumped (also --filter). Fields: "
        "exchange, routing_key, method (RPC method or event_type), host and agent_type (heartbeats), network_id, "
        "body (the decoded message, e.g. body.args), context (_context_* keys), error. Quote strings: "
        "host == 'net-1' (host == net1 compares two fields).",
        optional(JMESPATH, "all messages"))
    verbose: bool = setting(False, "Dump whole decoded messages instead of one summary line each.", BOOL)


@dataclass(frozen=True)
class CoordinationSettings:
    enabled: bool = setting(
        True, "Run as one of several instances with the same configuration (one per controller): only the one "
        "holding the leadership lock moves anything, the others listen and stand by; a lone instance simply holds "
        "it. false: this instance always acts (never run two of those).", BOOL)
    backend_url: str | None = setting(
        None, "tooz coordination URL of the lock (the OpenStack convention; needs pip install "
        "'rpcdaemon[coordination]'), e.g. redis://host:6379, etcd3+http://host:2379, zookeeper://host:2181; "
        "empty means the RabbitMQ broker of the bus holds it (an exclusive queue, no extra server).",
        optional(COORDINATION_URL, "the bus's RabbitMQ"))
    group: str = setting(
        "rpcdaemon", "Name of the lock (rpcdaemon.leader.GROUP): the same on every instance of one deployment, "
        "different for deployments that share a broker or backend.", LOCK_GROUP)


@dataclass(frozen=True)
class Settings:
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    l3: L3AgentSettings = field(default_factory=L3AgentSettings)
    dhcp: DHCPAgentSettings = field(default_factory=DHCPAgentSettings)
    dump: DumpSettings = field(default_factory=DumpSettings)
    coordination: CoordinationSettings = field(default_factory=CoordinationSettings)
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
    COORDINATION: ("coordination", CoordinationSettings),
}


def _parse_value(section: str, key: str, text: str, kind: Kind, source: str, line: int | None = None) -> Any:
    try:
        return kind.parse(text.strip())
    except ValueError as exc:
        detail = f" ({exc})" if isinstance(exc, Invalid) else ""
        allowed = f"expected {kind.expected}{detail}"
        raise ConfigError(section, key, text, allowed, source=source, line=line) from None


def _declared(section: str) -> dict[str, Kind]:
    return {f.name: f.metadata["kind"] for f in fields(SECTIONS[section][1])}


def _allows_unknown(ini: IniText) -> bool:
    texts = [e.value for s in ini.sections if s.name == "Daemon" for e in s.entries if e.key == "allow_unknown_keys"]
    try:
        return bool(texts) and bool(BOOL.parse(texts[0].strip()))
    except ValueError:
        return False  # reported as a bad value with the rest


def raise_all(errors: Sequence[ConfigError], source: str) -> None:
    """Raise nothing, the one error, or all of them in file order as one ``ConfigErrors``."""
    ordered = sorted(errors, key=lambda e: (e.line is None, e.line or 0))
    if len(ordered) == 1:
        raise ordered[0]
    if ordered:
        raise ConfigErrors(ordered, source=source)


def parse_settings(text: str, source: str = "rpcdaemon.conf") -> Settings:
    """Settings from the text of an rpcdaemon.conf; pure (no file is looked at).

    Every problem of the text is collected and raised together (``raise_all``). Unknown sections and
    keys are errors, unless ``[Daemon] allow_unknown_keys`` is true: then they are ``Settings.warnings``
    (a section name that is only a known one in another case stays an error)."""
    ini = read_ini(text)
    errors = [ConfigError(p.section, p.key, None, p.message, source=source, line=p.line) for p in ini.problems]
    allow_unknown = _allows_unknown(ini)
    warnings: list[str] = []
    sections: dict[str, Any] = {}

    def unknown(section: str, key: str | None, message: str, line: int | None, *, allowed: bool) -> None:
        if allowed:
            warnings.append(str(ConfigError(section, key, None, f"ignored {message}", source=source, line=line)))
        else:
            errors.append(ConfigError(section, key, None, message, source=source, line=line))

    for section in ini.sections:
        if section.name not in SECTIONS:
            message, wrong_case = unknown_section(section.name, tuple(SECTIONS))
            unknown(section.name, None, message, section.line, allowed=allow_unknown and not wrong_case)
            continue
        declared = _declared(section.name)
        values = {}
        for entry in section.entries:
            kind = declared.get(entry.key)
            if kind is None:
                message = unknown_key(section.name, entry.key, {name: tuple(_declared(name)) for name in SECTIONS})
                unknown(section.name, entry.key, message, entry.line, allowed=allow_unknown)
                continue
            try:
                values[entry.key] = _parse_value(section.name, entry.key, entry.value, kind, source, entry.line)
            except ConfigError as exc:
                errors.append(exc)
        attr, cls = SECTIONS[section.name]
        sections[attr] = cls(**values)
    raise_all(errors, source)
    return Settings(**sections, source=source, warnings=tuple(warnings))


def load_settings(path: Path) -> Settings:
    """Read, parse and check an rpcdaemon.conf (a regular file of at most ``textfile.MAX_CONFIG_BYTES``):
    relative paths are taken from the file's directory, and every entry of the listed L3Agent/DHCPAgent
    plugins' ``conffile`` must be readable (a directory listable, its ``*.conf`` files readable; an
    empty one is fine)."""
    source = str(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise MissingConfigFile(None, None, None, "no such file", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError(None, None, None, "not a UTF-8 text file", source=source) from None
    except FileRefused as exc:
        raise ConfigError(None, None, None, f"cannot read: {exc}", source=source) from None
    except OSError as exc:
        raise ConfigError(None, None, None, f"cannot read: {exc.strerror}", source=source) from None
    settings = parse_settings(text, source)
    base = path.absolute().parent
    settings = replace(
        settings,
        daemon=replace(settings.daemon, pidfile=base / settings.daemon.pidfile,
                       logfile=base / settings.daemon.logfile,
                       audit_log=base / settings.daemon.audit_log if settings.daemon.audit_log else None),
        l3=replace(settings.l3, conffile=tuple(base / entry for entry in settings.l3.conffile)),
        dhcp=replace(settings.dhcp, conffile=tuple(base / entry for entry in settings.dhcp.conffile)),
    )
    errors: list[ConfigError] = []
    warnings = list(settings.warnings)
    for name, plugin in settings.agent_plugins():
        errors += [ConfigError(name, "conffile", str(entry), why, source=source)
                   for entry, why in conffile_problems(plugin.conffile)]
        warnings += [str(ConfigError(name, "conffile", None, f"{confd} holds *.conf files, which neutron-server "
                                     f"may read as well, but rpcdaemon reads only what is listed: add it after "
                                     f"{file} if it sets keys rpcdaemon uses", source=source))
                     for file, confd in unlisted_conf_dirs(plugin.conffile)]
    raise_all(errors, source)
    return replace(settings, warnings=tuple(warnings))


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
