"""How the text of one rpcdaemon.conf key is read: a ``Kind`` per sort of value, with its bounds.

``settings`` declares every key with one of these; its loader calls ``Kind.parse`` on the stripped
text and turns the ``ValueError`` into a ``ConfigError`` that quotes ``Kind.expected`` (and the
``Invalid`` detail, when there is one: which bound was crossed, which plugin name is unknown).
``render`` is the inverse, used for the example file and ``--check-config``. Pure functions only.
"""

from __future__ import annotations

import configparser
import ipaddress
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpcdaemon.coordination import TOOZ_SCHEMES
from rpcdaemon.plugins.dump_filter import DumpFilterError, check_filter

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# rabbit:// is oslo.messaging's spelling; neutronconf.kombu_url turns it into amqp:// failover URLs.
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "rabbit")
DAY = 86400.0


class Invalid(ValueError):
    """Raised by a ``Kind.parse`` with a detail worth showing (a plain ValueError shows none)."""


def render_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return " ".join(value)
    return str(value)


@dataclass(frozen=True)
class Kind:
    """How one key is read: ``parse`` raises ValueError (``Invalid`` to add a detail) for bad text."""

    expected: str
    parse: Callable[[str], Any]
    render: Callable[[Any], str] = render_value


def _check_bounds(value: float, low: float, high: float) -> None:
    # The detail names the bound, so that '1e-9' reads as "too small", not as "not a number".
    if value < low:
        raise Invalid(f"{value:g} is below the minimum {low:g}")
    if value > high:
        raise Invalid(f"{value:g} is above the maximum {high:g}")


def seconds(low: float, high: float, *, zero_means: str | None = None) -> Kind:
    """A finite number of seconds in [low, high]; with ``zero_means``, 0 is allowed too (and means that)."""
    expected = f"a number of seconds from {low:g} to {high:g}"
    if zero_means is not None:
        expected = f"0 ({zero_means}) or {expected}"

    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError
        if not (zero_means is not None and value == 0):
            _check_bounds(value, low, high)
        return value

    return Kind(expected, parse)


def fraction() -> Kind:
    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value) or not 0 < value <= 1:
            raise ValueError
        return value

    return Kind("a fraction > 0 and <= 1", parse)


def integer(low: int, high: int, *, what: str | None = None) -> Kind:
    def parse(text: str) -> int:
        value = int(text)
        _check_bounds(value, low, high)
        return value

    return Kind(what or f"an integer from {low} to {high}", parse)


def choice(*values: str) -> Kind:
    """One of a few fixed words (any case; the lower-case word is kept)."""

    def parse(text: str) -> str:
        if text.lower() not in values:
            raise ValueError
        return text.lower()

    return Kind(f"one of {', '.join(values)}", parse)


def optional(kind: Kind, empty_means: str) -> Kind:
    return Kind(f"{kind.expected}, or empty for {empty_means}", lambda t: kind.parse(t) if t else None)


def _parse_bool(text: str) -> bool:
    state = configparser.ConfigParser.BOOLEAN_STATES.get(text.lower())
    if state is None:
        raise ValueError
    return state


def _parse_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise ValueError
    return text.upper()


def plugin_names(known: tuple[str, ...]) -> Kind:
    """A space- or comma-separated list of plugin names from ``known`` (any case), without repeats, not empty."""
    canonical = {name.lower(): name for name in known}

    def parse(text: str) -> tuple[str, ...]:
        chosen: list[str] = []
        for word in text.replace(",", " ").split():
            name = canonical.get(word.lower())
            if name is None:
                raise Invalid(f"unknown plugin {word!r}")
            if name not in chosen:
                chosen.append(name)
        if not chosen:
            raise Invalid("no plugin listed")
        return tuple(chosen)

    return Kind(f"space-separated names from: {' '.join(known)}", parse)


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?$")


def _parse_rpchost(text: str) -> str:
    if "://" not in text:
        if not _HOST.match(text):
            raise ValueError
        return f"amqp://{text}//"  # the seed handed a bare host to kombu, which means amqp, guest, vhost /
    for url in text.split(";"):
        scheme, _, rest = url.strip().partition("://")
        if scheme.lower() not in BROKER_SCHEMES or not rest:
            raise Invalid(f"unsupported URL {url.strip()!r}")
    return text


def _parse_address(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", text):
            raise
    return text


def _parse_url(text: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError
    return text.rstrip("/")


def _parse_nonempty(text: str) -> str:
    if not text:
        raise ValueError
    return text


_LOCK_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _parse_lock_group(text: str) -> str:
    if not _LOCK_GROUP.fullmatch(text):
        raise ValueError
    return text


def _parse_coordination_url(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    if not sep or not rest.strip("/"):
        raise ValueError
    if scheme.lower() not in TOOZ_SCHEMES:
        raise Invalid(f"{scheme}:// locks do not expire when their holder goes silent, so a frozen instance "
                      "would keep the lock for ever")
    return text


def _parse_jmespath(text: str) -> str:
    # Bounded in length and depth, RecursionError caught: a one-line error, never a traceback.
    try:
        return check_filter(text)
    except DumpFilterError as exc:
        raise Invalid(exc.detail) from None


def _parse_per_network(text: str) -> int | None:
    if text.lower() == "all":
        return None
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _parse_paths(text: str) -> tuple[Path, ...]:
    # Spaces or commas separate entries (a path holding either cannot be listed), as for plugins.
    paths = tuple(Path(word) for word in text.replace(",", " ").split())
    if not paths:
        raise ValueError
    return paths


BOOL = Kind("a boolean (true/false, yes/no, on/off, 1/0)", _parse_bool)
LEVEL_NAME = Kind(f"one of {', '.join(LOG_LEVELS)}", _parse_level)
LEVEL = optional(LEVEL_NAME, "the [Daemon] loglevel")
PATH = Kind("a file path", lambda t: Path(_parse_nonempty(t)))
# Read like neutron-server's --config-file/--config-dir options: in order, later values win.
CONF_PATHS = Kind("space- or comma-separated files and directories (a directory: its *.conf files, sorted)",
                  _parse_paths, lambda v: " ".join(map(str, v)))
NAME = Kind("a name", _parse_nonempty)
TEXT = optional(NAME, "none")
BROKER = Kind("a host, host:port or amqp:// URL", _parse_rpchost)
ADDRESS = Kind("an IP address or host name", _parse_address)
HTTP_URL = Kind("an http:// or https:// URL", _parse_url)
JMESPATH = Kind("a JMESPath expression", _parse_jmespath)
LOCK_GROUP = Kind("a name of letters, digits, '.', '_' and '-' (at most 100 characters)", _parse_lock_group)
COORDINATION_URL = Kind(f"a tooz URL ({', '.join(s + '://' for s in TOOZ_SCHEMES)})", _parse_coordination_url)
PER_NETWORK = Kind("'all' or an integer >= 1", _parse_per_network, lambda v: "all" if v is None else str(v))


FENCE_PLACEHOLDERS = ("host", "agent_id", "agent_type")
_PLACEHOLDER = re.compile(r"\{(\w*)\}")


def _parse_command(text: str) -> tuple[str, ...]:
    """A command line split as a POSIX shell would split it (quotes, backslashes), never run by one."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise Invalid(f"cannot split it into arguments: {str(exc).lower()}") from None
    if not argv:
        return ()
    program = argv[0]
    if _PLACEHOLDER.search(program):
        raise Invalid("the program must be a fixed name; placeholders go in its arguments")
    if "/" in program and not program.startswith("/"):
        raise Invalid(f"{program!r} is a relative path: give an absolute path, or a name found on PATH")
    known = " ".join(f"{{{name}}}" for name in FENCE_PLACEHOLDERS)
    for arg in argv[1:]:
        for name in _PLACEHOLDER.findall(arg):
            if name not in FENCE_PLACEHOLDERS:
                raise Invalid(f"unknown placeholder {{{name}}} (known: {known})")
    return argv


# An empty text is no command (the default: no fencing).
FENCE_COMMAND = Kind("a command line (split like a shell would, run by none), or empty for none", _parse_command,
                     shlex.join)
