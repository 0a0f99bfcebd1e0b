"""Logging set-up for the daemon, and the secret masking every log line goes through.

``cli.main`` calls ``configure_logging`` once the process is where it will run (after detaching, so
the log file is opened by the daemon itself) and ``reset_logging`` when it returns. Foreground (-d):
stderr, DEBUG unless the config names a level. Detached: the ``[Daemon] logfile`` (reopened when
logrotate moves it). Each plugin logs through ``rpcdaemon.<plugin name in lower case>`` at its own level.
``mask_secrets`` is also used for config error messages and ``--check-config`` output.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rpcdaemon.settings import Settings

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Libraries that log every connection or request at INFO/DEBUG; operators want only their trouble.
NOISY_LOGGERS = ("kombu", "amqp", "urllib3", "keystoneauth", "openstack", "stevedore")

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")
_KEY_SECRET = re.compile(
    r"(?P<key>[\w.-]*(?:password|passwd|secret|token)[\w.-]*)(?P<sep>['\"]?\s*[:=]\s*)"
    r"(?:(?P<quote>['\"]).*?(?P=quote)|[^\s'\",;&})\]]+)",
    re.IGNORECASE,
)


def _mask_value(match: re.Match[str]) -> str:
    quote = match.group("quote") or ""
    return f"{match.group('key')}{match.group('sep')}{quote}***{quote}"


def mask_secrets(text: str) -> str:
    """``text`` with passwords in URLs (``amqp://user:***@host``) and ``password=...``-like values hidden."""
    return _KEY_SECRET.sub(_mask_value, _URL_PASSWORD.sub(r"\g<head>***@", text))


class MaskingFormatter(logging.Formatter):
    """Masks secrets in the whole formatted record (message, arguments and traceback alike)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def plugin_logger_name(plugin: str) -> str:
    """The logger a plugin logs through: ``rpcdaemon.l3agent``, ``rpcdaemon.dhcpagent``, ``rpcdaemon.dump``."""
    return f"rpcdaemon.{plugin.lower()}"


def daemon_level(settings: Settings, *, foreground: bool) -> int:
    """The ``[Daemon] loglevel``; unset means DEBUG in the foreground (as the seed did) and INFO detached."""
    name = settings.daemon.loglevel or ("DEBUG" if foreground else "INFO")
    return logging.getLevelNamesMapping()[name]


# What configure_logging changed, so reset_logging can put it back (tests run main() in-process).
_installed: list[logging.Handler] = []
_saved_levels: dict[str, int] = {}


def configure_logging(settings: Settings, *, foreground: bool, stream: TextIO | None = None) -> None:
    from rpcdaemon.settings import PLUGIN_NAMES  # settings imports this module for mask_secrets

    reset_logging()
    level = daemon_level(settings, foreground=foreground)
    handler: logging.Handler
    if foreground:
        handler = logging.StreamHandler(stream or sys.stderr)
    else:
        # Watched: a log file moved away by logrotate is reopened, no copytruncate needed.
        handler = logging.handlers.WatchedFileHandler(settings.daemon.logfile, encoding="utf-8")
    handler.setFormatter(MaskingFormatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    _installed.append(handler)
    levels = {"": level, "rpcdaemon": level}
    for name in PLUGIN_NAMES:
        plugin_level = settings.section(name).loglevel
        levels[plugin_logger_name(name)] = logging.getLevelNamesMapping()[plugin_level] if plugin_level else level
    for name in NOISY_LOGGERS:
        levels[name] = max(logging.WARNING, level)
    for name, value in levels.items():
        logger = logging.getLogger(name or None)
        _saved_levels[name] = logger.level
        logger.setLevel(value)


def reset_logging() -> None:
    """Undo ``configure_logging``: remove its handler, restore the levels it set."""
    root = logging.getLogger()
    while _installed:
        handler = _installed.pop()
        root.removeHandler(handler)
        handler.close()
    for name, value in _saved_levels.items():
        logging.getLogger(name or None).setLevel(value)
    _saved_levels.clear()
