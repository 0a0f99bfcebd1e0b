"""Logging set-up for the daemon, and the secret masking every log line goes through.

``cli.main`` calls ``configure_logging`` once the process is where it will run (after detaching, so
the log file is opened by the daemon itself) and ``reset_logging`` when it returns. Foreground (-d):
stderr, DEBUG unless the config names a level (INFO under systemd: the journal wants no DEBUG by
default). Detached: the ``[Daemon] logfile``, reopened when logrotate moves it and on SIGHUP
(``reopen_log_files``, called by the daemon shell outside the signal handler). Each plugin logs
through ``rpcdaemon.<plugin name in lower case>`` at its own level.
Every record goes through ``MaskingFormatter``: ``redact.mask_text``, the linear last-resort filter
(structural redaction of known secrets happens where they are known: see ``rpcdaemon.redact``).
``[Daemon] log_format = json`` swaps it for ``JsonFormatter``: one JSON object per record, same masking,
with an action's structured fields (``extra={"fields": ...}``) as keys of their own.
An operator command (``commands.main``) calls ``configure_command_logging``: the warnings libraries log
(keystoneauth's "Failed to discover available identity versions ...") reach stderr as the command's
own lines, ``rpcdaemon check: warning: keystoneauth: ...``, masked, rather than raw through Python's
last-resort handler.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from rpcdaemon.config.settings import PLUGIN_NAMES, Settings
from rpcdaemon.redact import mask_text, redact_mapping
from rpcdaemon.textsafe import escape_text

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Libraries that log every connection or request at INFO/DEBUG; operators want only their trouble.
NOISY_LOGGERS = ("kombu", "amqp", "urllib3", "keystoneauth", "openstack", "stevedore")

# A logged value (a host name off the bus, an error text from the API) must not forge a log line or a
# terminal escape: text arguments, and the str()/repr() of any other non-number, go through
# textsafe.escape_text.


class _Escaped:
    """A log argument that is neither text nor a number (an exception, an agent): its ``%s`` and ``%r``
    are escaped as text arguments are."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape_text(str(self.value))

    def __repr__(self) -> str:
        return escape_text(repr(self.value))


def _printable(value: object) -> object:
    if isinstance(value, str):
        return escape_text(value)
    return value if isinstance(value, numbers.Number) or value is None else _Escaped(value)


def _printable_args(record: logging.LogRecord) -> logging.LogRecord:
    """``record``, or a copy whose arguments are escaped (``textsafe.escape_text``)."""
    args = record.args
    if isinstance(args, tuple) and args:
        record = copy.copy(record)
        record.args = tuple(_printable(a) for a in args)
    elif isinstance(args, Mapping):
        record = copy.copy(record)
        record.args = {k: _printable(v) for k, v in args.items()}
    return record


class MaskingFormatter(logging.Formatter):
    """Masks secrets in the whole formatted record (message, arguments and traceback alike), and
    escapes the arguments (``textsafe.escape_text``: control, format and line-separator characters) so
    that no value can start a line of its own or reorder or recolour the line."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(_printable_args(record)))


class CommandFormatter(MaskingFormatter):
    """An operator command's stderr line for a record: ``rpcdaemon status: warning: keystoneauth: ...``
    (the top-level logger names a library); a traceback shows as its exception's last line only."""

    def __init__(self, command: str) -> None:
        super().__init__("%(message)s")
        self._prefix = f"rpcdaemon {command}: "

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        record = copy.copy(record)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        text = super().format(record)
        if exc is not None:
            text += f" ({mask_text(f'{type(exc).__name__}: {exc}')})"
        source = record.name.split(".")[0]
        source = "" if source == "rpcdaemon" else f"{source}: "
        return f"{self._prefix}{record.levelname.lower()}: {source}{text}"


def utc_timestamp(at: float) -> str:
    """``at`` (seconds since the epoch) in RFC 3339, UTC, to the millisecond: ``2026-12-02T10:41:40.123Z``."""
    whole = math.floor(at)
    millis = min(999, round((at - whole) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """``[Daemon] log_format = json``: one JSON object per record, on one line (ASCII only).

    ``ts`` (RFC 3339 UTC), ``level``, ``logger``, ``message`` (as the text format shows it: arguments
    escaped, secrets masked), ``exc_info`` with a traceback; and the record's
    ``fields`` (a mapping passed as ``extra={"fields": ...}``, as the executor does for each action:
    kind, resource_id, from_host, from_id, to_host, to_id, status, seconds ...), secret-named keys masked."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_text(_printable_args(record).getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in redact_mapping(dict(fields)).items():
                out.setdefault(str(key), value)
        if record.exc_info:
            out["exc_info"] = mask_text(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack_info"] = mask_text(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=True, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    """The main log's formatter for ``[Daemon] log_format`` (text or json)."""
    return JsonFormatter() if log_format == "json" else MaskingFormatter(FORMAT)


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
    handler.setFormatter(make_formatter(settings.daemon.log_format))
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


# Other files the daemon appends to (the audit trail): reopen_log_files reopens them too.
_reopeners: list[Callable[[], None]] = []


def reopen_on_hup(reopen: Callable[[], None]) -> Callable[[], None]:
    """Have ``reopen_log_files`` call ``reopen`` too (after the log file's); returns what undoes it."""
    _reopeners.append(reopen)

    def undo() -> None:
        if reopen in _reopeners:
            _reopeners.remove(reopen)

    return undo


def reopen_log_files() -> int:
    """Reopen the log file if it was moved or removed (logrotate's rename, then SIGHUP), then the other
    files registered with ``reopen_on_hup``; how many log file handlers were looked at. Holds each
    handler's lock, so no record is written meanwhile.
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
    for reopen in list(_reopeners):
        reopen()  # each says what it did
    return count


def configure_command_logging(command: str, stream: TextIO | None = None) -> None:
    """An operator command's logging: warnings and worse on stderr as ``rpcdaemon <command>: warning: ...``
    (the threshold Python's last-resort handler had). ``reset_logging`` undoes it."""
    reset_logging()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(CommandFormatter(command))
    logging.getLogger().addHandler(handler)
    _installed.append(handler)


def reset_logging() -> None:
    """Undo ``configure_logging`` (or ``configure_command_logging``): remove its handler, restore the
    levels it set."""
    root = logging.getLogger()
    while _installed:
        handler = _installed.pop()
        root.removeHandler(handler)
        handler.close()
    for name, value in _saved_levels.items():
        logging.getLogger(name or None).setLevel(value)
    _saved_levels.clear()
