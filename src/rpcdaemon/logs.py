"""Logging set-up for the daemon, and the secret masking every log line goes through.

``cli.main`` calls ``configure_logging`` once the process is where it will run (after detaching, so
the log file is opened by the daemon itself) and ``reset_logging`` when it returns. Foreground (-d):
stderr, DEBUG unless the config names a level (INFO under systemd: the journal wants no DEBUG by
default). Detached: the ``[Daemon] logfile``, reopened when logrotate moves it and on SIGHUP
(``reopen_log_files``, called by the daemon shell outside the signal handler). Each plugin logs
through ``rpcdaemon.<plugin name in lower case>`` at its own level.
Every record goes through ``MaskingFormatter``: ``redact.mask_text``, the linear last-resort filter
(structural redaction of known secrets happens where they are known: see ``rpcdaemon.redact``).
"""

from __future__ import annotations

import copy
import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from rpcdaemon.redact import mask_text
from rpcdaemon.settings import PLUGIN_NAMES, Settings

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Libraries that log every connection or request at INFO/DEBUG; operators want only their trouble.
NOISY_LOGGERS = ("kombu", "amqp", "urllib3", "keystoneauth", "openstack", "stevedore")

# Control characters in a logged value (a host name off the bus, say) would let it forge log lines or
# terminal escapes; tabs are harmless.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c != 0x09} | {0x0A: "\\n", 0x0D: "\\r"}


def _printable(value: object) -> object:
    return value.translate(_CONTROL) if isinstance(value, str) else value


class MaskingFormatter(logging.Formatter):
    """Masks secrets in the whole formatted record (message, arguments and traceback alike), and
    escapes control characters in string arguments so that no value can start a line of its own."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) for a in args):
            record = copy.copy(record)
            record.args = tuple(_printable(a) for a in args)
        elif isinstance(args, Mapping):
            record = copy.copy(record)
            record.args = {k: _printable(v) for k, v in args.items()}
        return mask_text(super().format(record))


def plugin_logger_name(plugin: str) -> str:
    """The logger a plugin logs through: ``rpcdaemon.l3agent``, ``rpcdaemon.dhcpagent``, ``rpcdaemon.dump``."""
    return f"rpcdaemon.{plugin.lower()}"


def under_systemd(environ: Mapping[str, str]) -> bool:
    """Started by systemd: its output goes to the journal (JOURNAL_STREAM) or it speaks sd_notify."""
    return bool(environ.get("JOURNAL_STREAM") or environ.get("NOTIFY_SOCKET"))


def daemon_level(settings: Settings, *, foreground: bool, environ: Mapping[str, str] | None = None) -> int:
    """The ``[Daemon] loglevel``; unset means DEBUG in the foreground (as the seed did), but INFO under
    systemd (the journal keeps what it is given) and when detached."""
    env = os.environ if environ is None else environ
    name = settings.daemon.loglevel or ("DEBUG" if foreground and not under_systemd(env) else "INFO")
    return logging.getLevelNamesMapping()[name]


# What configure_logging changed, so reset_logging can put it back (tests run main() in-process).
_installed: list[logging.Handler] = []
_saved_levels: dict[str, int] = {}


def configure_logging(settings: Settings, *, foreground: bool, stream: TextIO | None = None,
                      environ: Mapping[str, str] | None = None) -> None:
    reset_logging()
    level = daemon_level(settings, foreground=foreground, environ=environ)
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


def reopen_log_files() -> int:
    """Reopen the log file if it was moved or removed (logrotate's rename, then SIGHUP); how many
    file handlers were looked at. Holds each handler's lock, so no record is written meanwhile.
    Never from a signal handler: the thread it interrupts may hold that lock."""
    count = 0
    for handler in _installed:
        if isinstance(handler, logging.handlers.WatchedFileHandler):
            handler.acquire()  # emit() holds it too: a record is never written to a half-swapped stream
            try:
                handler.reopenIfNeeded()
            finally:
                handler.release()
            count += 1
    return count


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
