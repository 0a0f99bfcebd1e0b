"""AMQP URLs as operators write them, made into what kombu expects, and made safe for logs.

Pure string functions (no kombu): ``normalise_url`` turns ``[Daemon] rpchost`` or an oslo
``transport_url`` into a kombu URL (a ``;``-separated failover list when there are several hosts);
``url_for_log`` hides every password (``rpcdaemon.redact.redact_url``). The other ``broker``
modules use both.
"""

from __future__ import annotations

from rpcdaemon.redact import redact_url

_DEFAULT_PORT = 5672


def normalise_url(rpchost: str) -> str:
    """The kombu URL for ``[Daemon] rpchost`` (or an oslo ``transport_url``).

    A bare host or IP means ``amqp://guest:guest@HOST:5672//``; ``rabbit://`` becomes ``amqp://``;
    oslo's several hosts (``rabbit://u:p@h1:5672,u:p@h2:5672/vhost``) become kombu's failover list
    ``amqp://u:p@h1:5672/vhost;amqp://u:p@h2:5672/vhost``.
    """
    text = rpchost.strip()
    if not text:
        raise ValueError("rpchost is empty: give a host name, an IP address or an amqp:// URL")
    if "://" not in text:
        host, port = _split_bare(text)
        return f"amqp://guest:guest@{host}:{port}//"
    scheme, rest = text.split("://", 1)
    scheme = {"rabbit": "amqp", "kombu": "amqp"}.get(scheme.lower(), scheme.lower())
    netloc, slash, tail = _split_netloc(rest)
    hosts = [h for h in netloc.split(",") if h]
    if not hosts:
        return f"{scheme}://{rest}"
    path = f"{slash}{tail}" if slash else "//"
    if path == "/":
        path = "//"  # kombu: an empty vhost after a single slash is ambiguous; be explicit
    return ";".join(f"{scheme}://{host}{path}" for host in hosts)


def _split_bare(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [v6]:port
        host, _, port = text[1:].partition("]")
        return f"[{host}]", _port(port.lstrip(":"), text)
    if text.count(":") > 1:  # a bare IPv6 address
        return f"[{text}]", _DEFAULT_PORT
    host, _, port = text.partition(":")
    return host, _port(port, text)


def _port(text: str, whole: str) -> int:
    if not text:
        return _DEFAULT_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"rpchost {whole!r}: port {text!r} is not a number between 1 and 65535")
    return int(text)


def _split_netloc(rest: str) -> tuple[str, str, str]:
    """``user:pass@h1,user:pass@h2/vhost?q`` -> (netloc, "/", "vhost?q"); the password may hold '/'."""
    at = rest.rfind("@")
    slash = rest.find("/", at + 1 if at >= 0 else 0)
    if slash < 0:
        return rest, "", ""
    return rest[:slash], "/", rest[slash + 1 :]


def url_for_log(url: str) -> str:
    """``url`` with every password replaced by ``***`` (also in failover lists and oslo host lists)."""
    return redact_url(url)
