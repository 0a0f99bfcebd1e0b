"""What every operator command starts from: the configuration file, the Neutron API, the control channel.

``CommandContext.load(path)`` reads rpcdaemon.conf and its neutron.conf files exactly as the daemon does
(same errors, exit 2) and refuses a file others may read while it holds secrets (an operator command
is only as safe as that file: it holds the broker credentials that steer the daemon). ``api(plugin)``
builds that plugin's Neutron adapter, ``channel()`` the control channel on the bus's broker, ``who()``
says who runs the command (``alice@ctl-1``; the login name behind sudo). ``print_line`` is how a command
prints a line of text.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.acting.openstack_neutron import OpenStackNeutron
from rpcdaemon.broker.control_link import control_connection
from rpcdaemon.config.neutronconf import PluginNeutron, Resolved, resolve_settings
from rpcdaemon.config.settings import AgentPluginSettings, Settings, load_settings
from rpcdaemon.control.channel import ControlChannel
from rpcdaemon.daemon.plugin_factory import AgentPluginConfig
from rpcdaemon.exits import EXIT_FAILED, EXIT_USAGE
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, AuditRecord, no_audit
from rpcdaemon.telemetry.audit import AuditLog
from rpcdaemon.textsafe import escape_text

AGENT_TYPES = {"L3Agent": L3_AGENT, "DHCPAgent": DHCP_AGENT}


def print_line(out: TextIO, text: str) -> None:
    """One line of a command's output, escaped (``textsafe.escape_text``): host names, reasons and error
    texts come from Neutron and the bus, and none may split the line or steer the terminal."""
    print(escape_text(text), file=out)


class CommandError(Exception):
    """What stops a command, in one line for the operator (exit status ``code``)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class CommandContext:
    settings: Settings
    resolved: Resolved

    @classmethod
    def load(cls, path: Path) -> CommandContext:
        settings = load_settings(Path(path).absolute())
        return cls(settings, resolve_settings(settings))

    @property
    def group(self) -> str:
        return self.settings.coordination.group

    def plugins(self) -> dict[str, PluginNeutron]:
        """The failover plugins the configuration runs (L3Agent, DHCPAgent), with their Neutron access."""
        found = {"L3Agent": self.resolved.l3, "DHCPAgent": self.resolved.dhcp}
        return {name: pn for name, pn in found.items() if pn is not None}

    def api(self, plugin: str | None = None) -> NeutronAPI:
        """The Neutron adapter of ``plugin`` (default: the first configured)."""
        plugins = self.plugins()
        if not plugins:
            raise CommandError("the configuration runs neither L3Agent nor DHCPAgent ([Daemon] plugins)", EXIT_USAGE)
        pn = plugins[plugin] if plugin is not None else next(iter(plugins.values()))
        try:
            return OpenStackNeutron.from_access(pn.access)
        except ValueError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None

    def channel(self) -> ControlChannel:
        url, tls = self.resolved.broker_url, self.resolved.broker_tls
        return ControlChannel(lambda: control_connection(url, tls), self.group)

    def plugin_config(self, name: str) -> AgentPluginConfig:
        """The plugin's policies as the daemon builds them (liveness, executor, brake, limits)."""
        from rpcdaemon.daemon.wiring import plugin_config

        ps = self.settings.section(name)
        assert isinstance(ps, AgentPluginSettings)
        return plugin_config(ps, self.plugins()[name], self.down_time(), self.settings.daemon.dry_run)

    def audit(self, command: str) -> tuple[AuditRecord, Callable[[], None]]:
        """The audit trail's ``record`` for a command that changes Neutron, and what closes it: ``no_audit``
        when ``[Daemon] audit_log`` is not set, or (said on stderr) when this user cannot write it."""
        path = self.settings.daemon.audit_log
        if path is None:
            return no_audit, lambda: None
        if not path.exists():  # created by the daemon, as its user: a file root made first would lock it out
            print(f"rpcdaemon {command}: warning: the audit trail {path} does not exist yet (the daemon creates "
                  "it): this command's changes are not in it", file=sys.stderr)
            return no_audit, lambda: None
        try:
            trail = AuditLog(path)
        except OSError as exc:
            print(f"rpcdaemon {command}: warning: cannot write the audit trail {path} ({exc.strerror or exc}); "
                  "this command's changes are not in it", file=sys.stderr)
            return no_audit, lambda: None
        return trail.record, trail.close

    def down_time(self) -> float:
        return max((pn.agent_down_time for pn in self.plugins().values()), default=75.0)


def who() -> str:
    """Who runs this command: the login name (the one behind sudo, if any) and the host."""
    user = os.environ.get("SUDO_USER") or ""
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"
