"""neutron.conf, read the way oslo.config would (without importing it), and what it tells rpcdaemon.

The L3Agent/DHCPAgent plugins take from it: ``[DEFAULT] agent_down_time`` (when an agent is dead),
``[AGENT] report_interval``, ``[DEFAULT] transport_url`` (the broker, unless ``[Daemon] rpchost`` is
set: then one that cannot be used is only a warning) and the ``[keystone_authtoken]`` credentials
(Keystone v3 keys, or the Havana-era ``admin_*`` and ``auth_host`` keys). ``conffile`` may list
several files and directories, read over each other as neutron-server's ``--config-file``/
``--config-dir`` are (``osloini``); TLS to the broker is ``brokertls``'s. ``resolve_settings``
combines all that with rpcdaemon.conf into the values the service wires up; ``cli.main`` calls it
before detaching so a bad file is reported on the terminal.

``kombu_url`` is a pure function; ``broker.amqpurl.normalise_url`` does a similar job for the bus
listener (two implementations for now: this one is the one applied to configuration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote, unquote

from rpcdaemon.access import BrokerTLS, NeutronAccess
from rpcdaemon.config.brokertls import RabbitTLS, beside, broker_tls, rabbit_tls, url_ssl
from rpcdaemon.config.osloini import OsloSections, check_readable, read_files, section_key
from rpcdaemon.config.settings import AgentPluginSettings, ConfigError, Settings

# Neutron's own defaults, used when neutron.conf does not set the key.
AGENT_DOWN_TIME = 75.0
REPORT_INTERVAL = 30.0
# keystonemiddleware's defaults for the Havana-era auth_host/auth_port/auth_protocol keys.
LEGACY_AUTH = {"auth_host": "127.0.0.1", "auth_port": "35357", "auth_protocol": "https"}


@dataclass(frozen=True)
class NeutronConf:
    """What rpcdaemon uses from one neutron.conf. ``access`` may be incomplete: see ``neutron_access``."""

    agent_down_time: float = AGENT_DOWN_TIME
    report_interval: float = REPORT_INTERVAL
    transport_url: str | None = None
    access: NeutronAccess = field(default_factory=NeutronAccess)
    # The files read (", "-separated); messages about a key name the file that set it (``origin``).
    source: str = "neutron.conf"
    # [oslo_messaging_rabbit] ssl (or transport_url ?ssl=1) and the ssl_* files, as oslo.messaging reads them.
    rabbit: RabbitTLS = field(default_factory=RabbitTLS)
    origins: Mapping[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)
    # Why transport_url is unusable (None: it is fine, or unset); raised only if it is the broker URL.
    transport_url_error: ConfigError | None = field(default=None, compare=False, repr=False)

    def origin(self, key: str, *sections: str) -> str:
        """The file that set ``key`` in the first of ``sections`` that has it, else every file read."""
        for section in sections:
            found = self.origins.get((section_key(section), key))
            if found:
                return found
        return self.source


def _first(sections: OsloSections, *keys: str, section: str = "keystone_authtoken") -> str | None:
    for key in keys:
        value = sections.get(section, key)
        if value:
            return value
    return None


# v2-era and keystonemiddleware names of the password plugin's options, tried in this order.
_ALIASES = {
    "auth_url": ("auth_url", "identity_uri", "www_authenticate_uri", "auth_uri"),
    "username": ("username", "admin_user"),
    "password": ("password", "admin_password"),
    "project_name": ("project_name", "admin_tenant_name", "tenant_name"),
}


def _keystone_access(sections: OsloSections) -> NeutronAccess:
    """``[keystone_authtoken]`` as keystonemiddleware reads it: ``auth_section`` names the section holding
    the plugin options, ``auth_type`` (default password) the keystoneauth plugin; session options
    (``cafile``, ``certfile``, ``keyfile``, ``insecure``) are read there too, else in [keystone_authtoken]."""
    home = "keystone_authtoken"
    name = sections.get(home, "auth_section") or home
    if name != home and not sections.has(name):
        raise ConfigError(home, "auth_section", name, "names a section that is not in the file",
                          source=sections.origin(home, "auth_section"))
    options = sections.values(name)
    for key, aliases in _ALIASES.items():
        value = _first(sections, *aliases, section=name)
        if key == "auth_url":
            value = value or _legacy_auth_url(sections)
        if value:
            options.setdefault(key, value)
    auth_type = options.get("auth_type") or options.get("auth_plugin") or "password"

    def session(key: str) -> str | None:
        return sections.get(name, key) or sections.get(home, key) or None

    insecure = sections.boolean(name, "insecure")
    if insecure is None:
        insecure = sections.boolean(home, "insecure")
    return NeutronAccess(
        auth_type=auth_type,
        auth_options=options,
        auth_section=name,
        auth_url=options.get("auth_url"),
        username=options.get("username"),
        password=options.get("password"),
        project_name=options.get("project_name"),
        user_domain_name=options.get("user_domain_name") or NeutronAccess.user_domain_name,
        user_domain_id=options.get("user_domain_id"),
        project_domain_name=options.get("project_domain_name") or NeutronAccess.project_domain_name,
        project_domain_id=options.get("project_domain_id"),
        region_name=session("region_name"),
        interface=session("interface") or (session("valid_interfaces") or "").split(",")[0].strip()
        or NeutronAccess.interface,
        cafile=session("cafile"),
        certfile=session("certfile"),
        keyfile=session("keyfile"),
        insecure=bool(insecure),
    )


def _legacy_auth_url(sections: OsloSections) -> str | None:
    """Havana's auth_host/auth_port/auth_protocol (plus auth_admin_prefix) as one URL."""
    given = {key: sections.get("keystone_authtoken", key) for key in LEGACY_AUTH}
    if not any(given.values()):
        return None
    parts = {key: given[key] or default for key, default in LEGACY_AUTH.items()}
    if not parts["auth_port"].isdigit():
        raise ConfigError("keystone_authtoken", "auth_port", parts["auth_port"], "expected a TCP port number",
                          source=sections.origin("keystone_authtoken", "auth_port"))
    host = parts["auth_host"]
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    prefix = (sections.get("keystone_authtoken", "auth_admin_prefix") or "").strip("/")
    return f"{parts['auth_protocol']}://{host}:{parts['auth_port']}" + (f"/{prefix}" if prefix else "")


def parse_neutron_conf(text: str, source: str = "neutron.conf") -> NeutronConf:
    """The parts of neutron.conf rpcdaemon uses. Missing keys take Neutron's defaults. A transport_url
    rpcdaemon cannot use is kept with ``transport_url_error``: ``resolve_settings`` raises it only when
    that URL is the broker's (no ``[Daemon] rpchost``)."""
    return _neutron_conf(OsloSections(text, source))


def load_neutron_conf(entries: Path | Sequence[Path]) -> NeutronConf:
    """neutron.conf from one file, or from several files and directories read over each other as
    neutron-server's ``--config-file``/``--config-dir`` are (``osloini.read_files``)."""
    return _neutron_conf(read_files([entries] if isinstance(entries, Path) else entries))


def _neutron_conf(sections: OsloSections) -> NeutronConf:
    source = sections.source
    access = _keystone_access(sections)
    transport_url = sections.get("DEFAULT", "transport_url") or None
    url_error = None
    if transport_url is not None:
        try:
            kombu_url(transport_url)
            url_ssl(transport_url)
        except ValueError as exc:
            url_error = ConfigError("DEFAULT", "transport_url", transport_url, str(exc),
                                    source=sections.origin("DEFAULT", "transport_url"))
    return NeutronConf(
        agent_down_time=sections.number("DEFAULT", "agent_down_time", AGENT_DOWN_TIME),
        report_interval=sections.number("AGENT", "report_interval", REPORT_INTERVAL),
        transport_url=transport_url,
        access=access,
        source=source,
        rabbit=rabbit_tls(sections, None if url_error else transport_url),
        origins=dict(sections.origins),
        transport_url_error=url_error,
    )


def kombu_url(transport_url: str) -> str:
    """An oslo.messaging ``transport_url`` as a kombu URL: ``rabbit://`` becomes ``amqp://``, several
    hosts become kombu's ``;``-separated failover list, the virtual host is kept, query options dropped.

    Parsed as oslo.messaging parses it (the host list ends at the first ``/``, ``?`` or ``#``; each
    host's credentials end at its last ``@`` and are percent-decoded), then rebuilt with the user name
    and password percent-encoded, so a ``;``, ``,`` or ``@`` in a password cannot split kombu's list.

    Raises ValueError (its text says what is expected, never quoting a password) for anything that is
    not a RabbitMQ URL oslo.messaging would read the same way."""
    scheme, sep, rest = transport_url.strip().partition("://")
    if not sep or scheme.lower() not in ("rabbit", "amqp", "amqps", "pyamqp"):
        raise ValueError("expected a rabbit:// (or amqp://) URL")
    scheme = "amqp" if scheme.lower() == "rabbit" else scheme.lower()
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    if "@" in tail.split("?", 1)[0]:
        raise ValueError("a '/', '?' or '#' in a user name or password must be percent-encoded (%2F, %3F, %23): "
                         "neutron-server reads this URL the same broken way")
    vhost = tail[1:].split("?", 1)[0].split("#", 1)[0] if tail.startswith("/") else ""
    hosts = [_kombu_host(entry) for entry in netloc.split(",") if entry]
    if not hosts:
        raise ValueError("expected at least one host in the URL")
    # kombu reads an empty path as vhost "/"; spell it "//" to be explicit.
    return ";".join(f"{scheme}://{host}/{vhost or '/'}" for host in hosts)


def _kombu_host(entry: str) -> str:
    """One oslo host entry (``user:pass@host:port``) with its credentials percent-encoded for kombu."""
    creds, at, hostport = entry.rpartition("@")
    if not at:
        return entry
    user, colon, password = creds.partition(":")
    userinfo = quote(unquote(user), safe="")
    if colon:
        userinfo += ":" + quote(unquote(password), safe="")
    return f"{userinfo}@{hostport}"


def neutron_access(plugin: AgentPluginSettings, conf: NeutronConf, *, section: str = "L3Agent",
                   source: str = "rpcdaemon.conf") -> NeutronAccess:
    """How the plugin reaches the Neutron API: its ``endpoint`` (no auth; ``cafile``/``insecure`` for
    https), else its ``cloud`` (clouds.yaml), else neutron.conf's ``[keystone_authtoken]``, which must
    configure its ``auth_type`` plugin completely (checked with keystoneauth's own option list)."""
    if plugin.endpoint:
        cafile = str(plugin.cafile) if plugin.cafile else None
        check_readable(cafile, section, "cafile", source)
        return NeutronAccess(endpoint=plugin.endpoint, timeout=plugin.timeout, cafile=cafile,
                             insecure=plugin.insecure)
    if plugin.cloud:
        return NeutronAccess(cloud=plugin.cloud, timeout=plugin.timeout)
    access = conf.access
    # keystoneauth's plugin loaders (not openstacksdk); importing them here keeps a --help start fast.
    from rpcdaemon.acting.keystone import AuthOptionError, auth_plugin_options

    try:
        auth_plugin_options(access.auth_type, access.auth_options)
    except AuthOptionError as exc:
        value = access.auth_type if exc.key == "auth_type" else None
        raise ConfigError(
            access.auth_section, exc.key, value,
            f"no usable Neutron credentials: {exc.reason} (or set endpoint or cloud in [{section}] of rpcdaemon.conf)",
            source=conf.origin(exc.key, access.auth_section),
        ) from None
    for key in ("cafile", "certfile", "keyfile"):
        check_readable(getattr(access, key), access.auth_section, key,
                       conf.origin(key, access.auth_section, "keystone_authtoken"))
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
    broker_tls: BrokerTLS | None = None  # None: plain AMQP
    # Where broker_url was set, for messages ("FILE: [Daemon] rpchost"); "" when not known.
    broker_source: str = ""
    # What the files hold that is odd but unused (a broken transport_url that rpchost overrides).
    warnings: tuple[str, ...] = ()


def resolve_settings(settings: Settings) -> Resolved:
    """Read the listed agent plugins' neutron.conf files and settle the broker URL and Neutron access.

    Raises ConfigError (naming the file, section and key) when something is missing or invalid."""
    plugins: dict[str, PluginNeutron] = {}
    cache: dict[tuple[Path, ...], NeutronConf] = {}
    warnings: list[str] = []
    for name, plugin in settings.agent_plugins():
        if plugin.conffile not in cache:
            cache[plugin.conffile] = load_neutron_conf(plugin.conffile)
            error = cache[plugin.conffile].transport_url_error
            if error is not None and not settings.daemon.rpchost:
                raise error
            if error is not None:  # neutron-server may not start with it, but rpcdaemon does not use it
                warnings.append(f"{error} (ignored: {settings.source} [Daemon] rpchost is set)")
        conf = cache[plugin.conffile]
        if plugin.cafile is not None:
            plugin = replace(plugin, cafile=beside(settings, plugin.cafile))
        plugins[name] = PluginNeutron(
            conf=conf,
            access=neutron_access(plugin, conf, section=name, source=settings.source),
            agent_down_time=plugin.effective_agent_down_time(conf.agent_down_time),
            startup_grace=plugin.effective_startup_grace(conf.agent_down_time),
        )
    url = broker_url(settings, plugins)
    first = next((plugins[name].conf for name, _ in settings.agent_plugins()), None)
    if settings.daemon.rpchost or first is None:
        source = f"{settings.source}: [Daemon] rpchost"
    else:
        source = f"{first.origin('transport_url', 'DEFAULT')}: [DEFAULT] transport_url"
    return Resolved(broker_url=url, l3=plugins.get("L3Agent"), dhcp=plugins.get("DHCPAgent"),
                    broker_tls=broker_tls(settings, first.rabbit if first else None, url), broker_source=source,
                    warnings=tuple(warnings))


def broker_url(settings: Settings, plugins: Mapping[str, PluginNeutron]) -> str:
    """``[Daemon] rpchost`` when set (rabbit:// URLs converted), else the first agent plugin's transport_url."""
    rpchost = settings.daemon.rpchost
    if rpchost:
        if not rpchost.lower().startswith("rabbit://"):
            return rpchost
        try:
            return kombu_url(rpchost)
        except ValueError as exc:  # the value is not shown: it holds the password, maybe unparseable
            raise ConfigError("Daemon", "rpchost", None, str(exc), source=settings.source) from None
    for name, _ in settings.agent_plugins():
        conf = plugins[name].conf
        if conf.transport_url_error is not None:
            raise conf.transport_url_error
        if conf.transport_url:
            return kombu_url(conf.transport_url)
        raise ConfigError("DEFAULT", "transport_url", None,
                          "not set, and rpcdaemon.conf [Daemon] rpchost is empty: set one of them",
                          source=conf.source)
    raise ConfigError("Daemon", "rpchost", "",
                      "expected a broker host or URL: no L3Agent/DHCPAgent plugin is listed whose neutron.conf "
                      "transport_url could be used", source=settings.source)
