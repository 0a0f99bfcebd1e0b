"""The broker settings checked as the connection will use them, without any network.

``check_url`` (kombu's own parsing of every failover host; each host through ``host_problem``, as the
socket module will take it) and ``check_tls`` (the CA, certificate and key loaded as the connection loads
them) serve the configuration checks (``daemon.preflight``, ``config.brokertls``), so that a bad setting
is one line before start. ``HostNameError`` is what the link raises for a host name the socket module
cannot look up.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

from kombu.utils.url import url_to_parts

from rpcdaemon.access import BrokerTLS
from rpcdaemon.broker.amqpurl import url_for_log
from rpcdaemon.broker.connection import make_connection, quietly

_MAX_LABEL, _MAX_NAME = 63, 253  # DNS: octets per label, and in a name (RFC 1035, without the root's dot)
_IDNA_DOTS = re.compile("[.\u3002\uff0e\uff61]")  # the label separators of Python's idna codec
_CODEC_FAILED = re.compile(r"^encoding with 'idna' codec failed \((?:\w+: )?(.*)\)$")


class HostNameError(OSError):
    """A broker host name the socket module refuses to look up (it IDNA-encodes every name first): as
    unreachable as a name DNS does not know (``socket.gaierror``), so a broker problem like that one,
    never a malformed record. The configuration checks (``check_url``) refuse such a name before start."""


def check_url(url: str, tls: BrokerTLS | None = None) -> list[str]:
    """Check ``url`` the way the connection will use it, without any network: build the kombu
    connection, then each failover alternate, and read its transport, host, port and virtual host; the
    host goes through ``host_problem`` (what the socket module does with it before looking it up), the
    port as written must be 1-65535 (kombu silently takes a ``:0`` for its default port).

    ``preflight.run_checks`` calls it for ``--check-config`` and on every start, so the two cannot
    disagree. Returns the alternates as they may be logged (passwords masked). Raises ValueError with
    one line naming the alternate (masked) and what is wrong; kombu's own text is not shown, it may
    quote a password."""
    try:
        alternates = list(make_connection(url, tls).alt) or [url]
    except Exception:
        alternates = [part for part in url.split(";") if part.strip()] or [url]
    shown = []
    for alt in alternates:
        shown_alt = url_for_log(alt)
        masked = shorten(shown_alt)
        conn: Any = None
        try:
            conn = make_connection(alt, tls)
            host, port, vhost = conn.hostname, conn.port, conn.virtual_host
            conn.transport  # noqa: B018 - resolves the transport class (no connection is made)
            written_port = url_to_parts(alt).port  # as written: kombu turns a 0 into its default
        except KeyError:
            raise ValueError(f"broker URL {masked}: unknown transport (expected amqp://, amqps:// or"
                             " memory://)") from None
        except Exception as exc:
            hint = ""
            if any(c in _userinfo(alt) for c in "/?#@"):
                hint = "; a '/', '?', '#' or '@' in the user name or password must be written %2F, %3F, %23, %40"
            port_problem = "port" in str(exc).lower()
            what = "the port is not a number between 1 and 65535" if port_problem else type(exc).__name__
            raise ValueError(f"broker URL {masked}: kombu cannot use it: {what}{hint}") from None
        finally:
            if conn is not None:
                quietly(conn.release)
        if conn.transport_cls == "memory":
            shown.append(shown_alt)
            continue
        if not host:
            raise ValueError(f"broker URL {masked}: no host name")
        problem = host_problem(str(host))
        if problem:
            raise ValueError(f"broker URL {masked}: host name {shorten(str(host))!r} cannot be looked up: {problem}")
        for number in (port, written_port):
            if number is not None and not 0 < int(number) < 65536:
                raise ValueError(f"broker URL {masked}: the port is not a number between 1 and 65535")
        if not isinstance(vhost, str):
            raise ValueError(f"broker URL {masked}: cannot read the virtual host")
        shown.append(shown_alt)
    return shown


def check_tls(tls: BrokerTLS) -> None:
    """Load ``tls``'s files into an ``SSLContext`` as the connection will, so that a bad CA, certificate
    or key is found when the configuration is read. Raises ``ssl.SSLError``, ``OSError`` or ``KeyError``."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.minimum_version:
        context.minimum_version = ssl.TLSVersion[tls.minimum_version]


def host_problem(host: str) -> str | None:
    """Why the connection could not look ``host`` up, or None. Python's socket module encodes every host
    name with the ``idna`` codec before asking the resolver, and that raises UnicodeError for an empty
    label or one over 63 characters; DNS also carries no name over 253 characters. IP addresses pass."""
    try:
        encoded = host.encode("idna")
    except UnicodeError as exc:
        labels = _IDNA_DOTS.split(host)
        if len(labels) > 1 and not labels[-1]:
            labels.pop()  # a trailing dot (the root) is allowed
        if not all(labels):
            return "it has an empty label (two dots in a row, or a leading dot)"
        longest = max(len(label) for label in labels)
        if longest > _MAX_LABEL:
            return f"it has a label of {longest} characters (at most {_MAX_LABEL})"
        # Python words it "encoding with 'idna' codec failed (UnicodeError: <reason>)": keep the reason.
        reason = _CODEC_FAILED.sub(r"\1", str(exc))
        return f"it is not a valid internationalised domain name ({reason})"
    name = encoded[:-1] if encoded.endswith(b".") else encoded
    if len(name) > _MAX_NAME:
        return f"it is {len(name)} characters long (at most {_MAX_NAME})"
    return None


def shorten(text: str) -> str:
    """``text`` as a message may quote it: a 10,000-character host name is not worth a screenful."""
    return text if len(text) <= 200 else f"{text[:60]}... ({len(text)} characters)"


def _userinfo(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[0] if "@" in rest else ""
