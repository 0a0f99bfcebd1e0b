"""TLS to RabbitMQ: what neutron.conf says about it, merged with rpcdaemon.conf's ``[Daemon] ssl*`` keys.

``neutronconf`` calls ``rabbit_tls`` while reading neutron.conf (``[oslo_messaging_rabbit]`` ssl,
ssl_ca_file, ssl_cert_file, ssl_key_file, ssl_version and their deprecated names, also in [DEFAULT];
``transport_url``'s ``?ssl=1``), and ``broker_tls`` from ``resolve_settings`` to settle the
``BrokerTLS`` value that ``broker.connection.make_connection`` uses. Every file named is opened here and
the whole set loaded once as the bus will load it, so a wrong file fails before the daemon starts,
with a message naming the key and the file that set it.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rpcdaemon.access import BrokerTLS
from rpcdaemon.config.osloini import BOOLEANS, OsloSections, check_readable
from rpcdaemon.config.settings import ConfigError, Settings

# oslo.messaging's [oslo_messaging_rabbit] TLS options and their deprecated names (also read in [DEFAULT]).
_RABBIT_TLS = {
    "ssl": ("ssl", "rabbit_use_ssl"),
    "ssl_ca_file": ("ssl_ca_file", "kombu_ssl_ca_certs"),
    "ssl_cert_file": ("ssl_cert_file", "kombu_ssl_certfile"),
    "ssl_key_file": ("ssl_key_file", "kombu_ssl_keyfile"),
    "ssl_version": ("ssl_version", "kombu_ssl_version"),
}
# ssl_version as oslo spells it -> the lowest ssl.TLSVersion accepted (None: Python's default).
_TLS_VERSIONS = {"tlsv1": "TLSv1", "tlsv1_1": "TLSv1_1", "tlsv1_2": "TLSv1_2", "tlsv1_3": "TLSv1_3",
                 "sslv23": None, "tls": None, "tls_client": None}
# [Daemon] key -> (the oslo option, the BrokerTLS attribute).
_FILES = (("ssl_ca_file", "ca_file"), ("ssl_cert_file", "cert_file"), ("ssl_key_file", "key_file"))


@dataclass(frozen=True)
class RabbitTLS:
    """neutron.conf's view of TLS to the broker, as oslo.messaging reads it."""

    enabled: bool = False
    tls: BrokerTLS = field(default_factory=BrokerTLS)
    # oslo option (ssl_ca_file, ...) -> (section, name as spelled, file that set it), for messages.
    keys: Mapping[str, tuple[str, str, str]] = field(default_factory=dict, compare=False)
    source: str = field(default="neutron.conf", compare=False)


def _rabbit_option(sections: OsloSections, key: str) -> tuple[str, str, str] | None:
    """(section, name, value) of the first of ``key``'s names that is set."""
    for section in ("oslo_messaging_rabbit", "DEFAULT"):
        for name in _RABBIT_TLS[key]:
            value = sections.get(section, name)
            if value:
                return section, name, value
    return None


def rabbit_tls(sections: OsloSections, transport_url: str | None) -> RabbitTLS:
    """The TLS settings of neutron.conf; raises ConfigError (naming the file that set the key)."""
    found = {key: _rabbit_option(sections, key) for key in _RABBIT_TLS}
    keys = {key: (f[0], f[1], sections.origin(f[0], f[1])) for key, f in found.items() if f}
    enabled = False
    if found["ssl"]:
        section, name, _ = found["ssl"]
        enabled = bool(sections.boolean(section, name))
    try:
        url_enabled = url_ssl(transport_url or "")
    except ValueError as exc:
        raise ConfigError("DEFAULT", "transport_url", transport_url, str(exc),
                          source=sections.origin("DEFAULT", "transport_url")) from None
    if url_enabled is not None:
        enabled = url_enabled  # the URL wins, as in oslo.messaging
    files = {key: (found[key] or (None, None, None))[2] for key, _ in _FILES}
    minimum = None
    if found["ssl_version"]:
        section, name, text = found["ssl_version"]
        if text.lower() not in _TLS_VERSIONS:
            raise ConfigError(section, name, text, "expected TLSv1_2, TLSv1_3 (or TLSv1, TLSv1_1, SSLv23)",
                              source=sections.origin(section, name))
        minimum = _TLS_VERSIONS[text.lower()]
    tls = BrokerTLS(ca_file=files["ssl_ca_file"], cert_file=files["ssl_cert_file"],
                    key_file=files["ssl_key_file"], minimum_version=minimum)
    return RabbitTLS(enabled=enabled, tls=tls, keys=keys, source=sections.source)


def url_ssl(transport_url: str) -> bool | None:
    """A ``transport_url``'s ``?ssl=`` (None when it has none); ValueError for one that is not a boolean."""
    query = urllib.parse.parse_qs(transport_url.partition("?")[2])
    if not query.get("ssl"):
        return None
    text = query["ssl"][-1]
    if text.lower() not in BOOLEANS:
        raise ValueError(f"?ssl={text}: expected true or false")
    return BOOLEANS[text.lower()]


def beside(settings: Settings, path: Path) -> Path:
    """A path from rpcdaemon.conf, relative to that file's directory (the detached daemon runs in /)."""
    return path if path.is_absolute() else Path(settings.source).absolute().parent / path


def broker_tls(settings: Settings, rabbit: RabbitTLS | None, url: str) -> BrokerTLS | None:
    """TLS to the broker, or None. On when ``[Daemon] ssl`` says so; when that is empty, when the URL is
    amqps:// or (the URL being neutron.conf's transport_url) neutron.conf (``rabbit``, the first agent
    plugin's) enables it. Each file is rpcdaemon.conf's ``ssl_*_file`` if set, else neutron.conf's; all
    are loaded once here to check them."""
    d = settings.daemon
    if d.ssl is not None:
        enabled = d.ssl
    else:
        enabled = url.lower().startswith("amqps://") or (not d.rpchost and rabbit is not None and rabbit.enabled)
    if not enabled:
        return None
    theirs = rabbit or RabbitTLS()
    files: dict[str, str | None] = {}
    for key, attr in _FILES:
        mine: Path | None = getattr(d, key)
        if mine is not None:
            files[attr] = str(beside(settings, mine))
            check_readable(files[attr], "Daemon", key, settings.source)
        else:
            files[attr] = getattr(theirs.tls, attr)
            section, name, source = theirs.keys.get(key, ("oslo_messaging_rabbit", key, theirs.source))
            check_readable(files[attr], section, name, source)
    tls = BrokerTLS(ca_file=files["ca_file"], cert_file=files["cert_file"], key_file=files["key_file"],
                    verify_hostname=d.ssl_verify_hostname, minimum_version=theirs.tls.minimum_version)
    if tls.key_file and not tls.cert_file:
        raise ConfigError("Daemon", "ssl_cert_file", None, "a key file is set but no certificate file",
                          source=settings.source)
    from rpcdaemon.broker.checks import check_tls  # the ssl files are loaded as the bus will load them

    try:
        check_tls(tls)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        named = ", ".join(f for f in (tls.ca_file, tls.cert_file, tls.key_file) if f)
        raise ConfigError("Daemon", "ssl", None, f"cannot use the TLS files {named}: {exc}",
                          source=settings.source) from None
    return tls
