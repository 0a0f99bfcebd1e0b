"""Checks run before the daemon starts and by ``--check-config``: what loading the files cannot see.

``cli.main`` calls ``run_checks`` after the settings and neutron.conf files are loaded, before
detaching, so that a start failure reaches the terminal as one line and exit status 2 (a systemd
restart loop helps nobody when the configuration is wrong). Each check uses the code the daemon will
use: the broker URL goes through ``broker.checks.check_url`` (kombu's own parsing, every failover
alternate, each host as the socket module will encode it, the port as written), ``[coordination]
backend_url`` through ``coordination.tooz_lock`` (tooz and the backend's client installed, a lock
expiry longer than the lease), a clouds.yaml cloud through ``acting.openstack_neutron.check_cloud``, a
``fence_command``'s program on PATH, the metrics address through the resolver, and on the start path
only (``--check-config`` may run next to a live daemon) the metrics port is bound once and released.
"""

from __future__ import annotations

import errno
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from rpcdaemon.config.neutronconf import Resolved
from rpcdaemon.config.settings import Settings


class PreflightError(Exception):
    """One line saying what is wrong and where; the CLI prints it and exits 2."""


@dataclass(frozen=True)
class Checkers:
    """The collaborators, injectable so tests need no clouds.yaml or free port."""

    check_url: Callable[..., object]
    check_cloud: Callable[[str], None]
    resolve: Callable[[str, int], object] = socket.getaddrinfo
    check_coordination: Callable[[str], None] = field(default_factory=lambda: check_coordination)
    which: Callable[[str], str | None] = shutil.which  # where a fence_command's program is


def check_coordination(url: str) -> None:
    """``[coordination] backend_url`` as the daemon will use it: tooz and the backend's client library
    installed, a backend whose locks expire, an expiry longer than the lease (no connection is made)."""
    try:
        from rpcdaemon.coordination.tooz_lock import check_backend_url  # tooz: an optional extra
    except ImportError as exc:
        raise ValueError(f"{exc.name or 'tooz'} is not installed: pip install 'rpcdaemon[coordination]'") from None
    check_backend_url(url)


def default_checkers() -> Checkers:
    from rpcdaemon.acting.openstack_neutron import check_cloud  # openstacksdk: only when needed
    from rpcdaemon.broker.checks import check_url

    return Checkers(check_url=check_url, check_cloud=check_cloud)


def run_checks(settings: Settings, resolved: Resolved, *, starting: bool, checkers: Checkers | None = None) -> None:
    """Raise PreflightError for the first problem found."""
    c = checkers or default_checkers()
    try:
        c.check_url(resolved.broker_url, resolved.broker_tls)
    except ValueError as exc:  # the text names the URL without its password
        where = f"{resolved.broker_source}: " if resolved.broker_source else ""
        raise PreflightError(f"{where}{exc}") from None
    coordination = settings.coordination
    if coordination.enabled and coordination.backend_url and (resolved.l3 or resolved.dhcp):
        try:
            c.check_coordination(coordination.backend_url)
        except ValueError as exc:  # the text shows the URL without its password
            raise PreflightError(f"{settings.source}: [coordination] backend_url: {exc}") from None
    for name, plugin in (("L3Agent", resolved.l3), ("DHCPAgent", resolved.dhcp)):
        if plugin is not None and plugin.access.cloud and not plugin.access.endpoint:
            try:
                c.check_cloud(plugin.access.cloud)
            except ValueError as exc:
                raise PreflightError(f"{settings.source}: [{name}] cloud: {exc}") from None
    for name, ps in settings.agent_plugins():
        if ps.fence_command and c.which(ps.fence_command[0]) is None:
            # Every failover would wait on a fence that cannot run: refuse to start instead.
            raise PreflightError(f"{settings.source}: [{name}] fence_command: {ps.fence_command[0]!r} is not an "
                                 "executable program (searched on PATH unless given as an absolute path)")
    d = settings.daemon
    if d.metrics_port:
        where = f"{settings.source}: [Daemon] metrics_address = {d.metrics_address}"
        try:
            c.resolve(d.metrics_address, d.metrics_port)
        except (socket.gaierror, UnicodeError) as exc:
            raise PreflightError(f"{where}: does not resolve ({_reason(exc)})") from None
        if starting:
            probe_bind(d.metrics_address, d.metrics_port, where=f"{where}, metrics_port = {d.metrics_port}")


def probe_bind(address: str, port: int, *, where: str) -> None:
    """Bind ``address:port`` as the metrics server will (SO_REUSEADDR, like http.server), then release it."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PreflightError(f"{where}: does not resolve ({_reason(exc)})") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            why = "the port is in use" if exc.errno == errno.EADDRINUSE else _reason(exc)
            raise PreflightError(f"{where}: cannot listen: {why}") from None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
