"""The control channel's records as typed values, and their JSON (see ``rpcdaemon.control``).

All come off the bus, so parsing is strict: ``bounded.load_record`` bounds the bytes (size, depth, numbers)
and each field is checked here (type, range; fields this version does not know are ignored, see
``bounded``). A record that is not what it should be is a ``bounded.RecordError`` (a ``ValueError``)
naming what is wrong, and nothing else is ever raised for it (the daemon then keeps what it had and says so
once; a command says it in one line).
Times are wall-clock seconds (``time.time()``): a pause "until 14:00" must mean the same on every
controller (NTP keeps them together; the daemon's liveness judgement never uses them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rpcdaemon.control.bounded import (
    MAX_COUNT,
    ROLL_BYTES,
    STATE_BYTES,
    VERSION,
    VIEW_BYTES,
    RecordError,
    load_record,
    number,
    shown,
)

__all__ = ["VERSION", "RecordError"]  # re-exported: callers catch RecordError from here

from rpcdaemon.textsafe import escape_text

MAX_TEXT = 300  # a reason longer than this is cut (it goes into every status and log line)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 3650 * 86400.0  # ten years: anything longer is a typo (or "until resumed": no --for)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d`` -> seconds; ValueError naming the text otherwise."""
    s = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if m is None or m.end() == pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s) or total <= 0:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 30m, 2h, 1h30m, 1d)")
    if total > MAX_DURATION:  # also infinity: float() of 400 digits
        shown = text if len(text) <= 40 else f"{text[:20]}...{text[-5:]}"
        raise ValueError(f"{shown!r} is too long a duration (at most 3650d, ten years)")
    return total


def clean_text(text: str) -> str:
    """A reason or a name as it may be shown: one line, escaped (``textsafe.escape_text``), at most
    ``MAX_TEXT`` characters."""
    one_line = escape_text(text.strip())
    return one_line if len(one_line) <= MAX_TEXT else one_line[: MAX_TEXT - 1] + "…"


def describe_span(until: float | None, now: float) -> str:
    """``"until resumed"`` or ``"for 29m more"``."""
    if until is None:
        return "until resumed"
    left = max(0.0, until - now)
    if not math.isfinite(left):  # a record that says Infinity: never ends
        return "until resumed"
    if left >= 3600:
        return f"for {left / 3600:.1f}h more"
    if left >= 60:
        return f"for {left / 60:.0f}m more"
    return f"for {left:.0f}s more"


@dataclass(frozen=True, slots=True)
class Hold:
    """A pause, or a release of the brake: who asked, why, when, and until when (None: until resumed)."""

    reason: str
    by: str
    at: float
    until: float | None = None

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def describe(self, now: float) -> str:
        """``"by alice@ctl-1, for 29m more: kernel upgrade on net-3"``."""
        return f"by {self.by}, {describe_span(self.until, now)}: {self.reason or 'no reason given'}"

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "by": self.by, "at": self.at, "until": self.until}

    @classmethod
    def from_dict(cls, value: Any, what: str, record: str) -> Hold | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise RecordError(record, f"{what} is not an object")
        until = value.get("until")
        return cls(reason=_text(value, "reason", record, f"{what}.reason"), by=_text(value, "by", record, f"{what}.by"),
                   at=_time(value.get("at"), record, f"{what}.at"),
                   until=_time(until, record, f"{what}.until") if until is not None else None)


@dataclass(frozen=True, slots=True)
class ControlState:
    """What the operators asked of every instance: a pause, a brake release, and the last change."""

    pause: Hold | None = None
    brake_release: Hold | None = None
    # The last command that wrote it: "pause", "resume", "release-brake" or "restore-brake", by whom, when.
    event: str = ""
    by: str = ""
    at: float = 0.0
    reason: str = ""  # why, when the command took one (``rpcdaemon control reset --reason``)

    def paused(self, now: float) -> Hold | None:
        return self.pause if self.pause is not None and self.pause.active(now) else None

    def brake_released(self, now: float) -> Hold | None:
        release = self.brake_release
        return release if release is not None and release.active(now) else None

    def to_json(self) -> bytes:
        body = {"v": VERSION, "pause": self.pause.to_dict() if self.pause else None,
                "brake_release": self.brake_release.to_dict() if self.brake_release else None,
                "event": self.event, "by": self.by, "at": self.at}
        if self.reason:
            body["reason"] = self.reason
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ControlState:
        return _parse(raw, "control state", STATE_BYTES, cls._from_body)

    @classmethod
    def _from_body(cls, body: dict[str, Any], what: str) -> ControlState:
        return cls(pause=Hold.from_dict(body.get("pause"), "pause", what),
                   brake_release=Hold.from_dict(body.get("brake_release"), "brake_release", what),
                   event=_text(body, "event", what), by=_text(body, "by", what),
                   at=_time(body.get("at", 0.0), what, "at"), reason=_text(body, "reason", what))


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as the active instance judges it."""

    id: str
    host: str
    verdict: str
    why: str
    heard_ago: float | None  # seconds since its last heartbeat, None if never heard


@dataclass(frozen=True, slots=True)
class PluginView:
    """One failover plugin of the active instance, as its last pass left it."""

    name: str
    agent_type: str
    down_time: float
    brake: str | None = None  # why the mass-failure brake holds, None when it does not
    held: tuple[str, ...] = ()  # why work that looks wrong is left alone
    pending: int = 0  # moves the last pass planned (0 when nothing is to be done)
    agents: tuple[AgentView, ...] = ()


@dataclass(frozen=True, slots=True)
class DaemonView:
    """The live view the active instance publishes every ``control.POLL`` seconds."""

    instance: str
    at: float
    version: str
    role: str
    dry_run: bool = False
    paused: Hold | None = None
    brake_release: Hold | None = None
    plugins: tuple[PluginView, ...] = field(default_factory=tuple)

    def to_json(self) -> bytes:
        body = {
            "v": VERSION, "instance": self.instance, "at": self.at, "version": self.version, "role": self.role,
            "dry_run": self.dry_run, "paused": self.paused.to_dict() if self.paused else None,
            "brake_release": self.brake_release.to_dict() if self.brake_release else None,
            "plugins": [
                {"name": p.name, "agent_type": p.agent_type, "down_time": p.down_time, "brake": p.brake,
                 "held": list(p.held), "pending": p.pending,
                 "agents": [{"id": a.id, "host": a.host, "verdict": a.verdict, "why": a.why,
                             "heard_ago": a.heard_ago} for a in p.agents]}
                for p in self.plugins
            ],
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> DaemonView:
        return _parse(raw, "live view", VIEW_BYTES, cls._from_body)

    @classmethod
    def _from_body(cls, body: dict[str, Any], what: str) -> DaemonView:
        plugins = []
        for p in _objects(body, "plugins", what):
            brake = p.get("brake")
            agents = tuple(
                AgentView(id=_text(a, "id", what, "agent id", required=True), host=_text(a, "host", what, "agent host"),
                          verdict=_text(a, "verdict", what, "agent verdict", required=True),
                          why=_text(a, "why", what, "agent why"),
                          heard_ago=_time(a["heard_ago"], what, "agent heard_ago") if a.get("heard_ago") is not None
                          else None)
                for a in _objects(p, "agents", what))
            plugins.append(PluginView(
                name=_text(p, "name", what, "plugin name", required=True),
                agent_type=_text(p, "agent_type", what, "plugin agent_type"),
                down_time=_time(p.get("down_time"), what, "plugin down_time"),
                brake=_text(p, "brake", what, "plugin brake") if brake is not None else None,
                held=_texts(p, "held", what), pending=int(number(p.get("pending", 0), what, "plugin pending",
                                                                 high=MAX_COUNT, integer=True)),
                agents=agents))
        return cls(instance=_text(body, "instance", what, required=True), at=_time(body.get("at"), what, "at"),
                   version=_text(body, "version", what), role=_text(body, "role", what),
                   dry_run=_flag(body, "dry_run", what),
                   paused=Hold.from_dict(body.get("paused"), "paused", what),
                   brake_release=Hold.from_dict(body.get("brake_release"), "brake_release", what),
                   plugins=tuple(plugins))


ROLES = ("active", "standby", "starting", "stopped")


@dataclass(frozen=True, slots=True)
class Presence:
    """One instance's roll-call entry: who it is, its part, since when it runs, what it runs."""

    instance: str  # host:pid
    role: str  # one of ROLES
    at: float  # when it said so (wall clock)
    since: float  # when the instance started (wall clock)
    version: str
    dry_run: bool = False
    plugins: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        body = {"v": VERSION, "instance": self.instance, "role": self.role, "at": self.at, "since": self.since,
                "version": self.version, "dry_run": self.dry_run, "plugins": list(self.plugins)}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Presence:
        return _parse(raw, "roll-call entry", ROLL_BYTES, cls._from_body)

    @classmethod
    def _from_body(cls, body: dict[str, Any], what: str) -> Presence:
        role = body.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise RecordError(what, f"role {shown(role)} is not one of {', '.join(ROLES)}")
        return cls(instance=_text(body, "instance", what, required=True), role=role,
                   at=_time(body.get("at"), what, "at"), since=_time(body.get("since"), what, "since"),
                   version=_text(body, "version", what), dry_run=_flag(body, "dry_run", what),
                   plugins=_texts(body, "plugins", what))


def roll_call(entries: list[Presence], now: float, ttl: float) -> list[Presence]:
    """The instances running now: each one's newest entry, if younger than ``ttl`` and not ``stopped``;
    the active first, then by instance name."""
    newest: dict[str, Presence] = {}
    for e in entries:
        if e.instance not in newest or e.at >= newest[e.instance].at:
            newest[e.instance] = e
    running = [e for e in newest.values() if e.role != "stopped" and now - e.at <= ttl]
    return sorted(running, key=lambda e: (e.role != "active", e.instance))


T = TypeVar("T")


def _parse(raw: bytes, what: str, max_bytes: int, build: Callable[[dict[str, Any], str], T]) -> T:
    """``build`` from the bounded body of ``raw``. The field readers below name what is wrong; anything
    else a hostile record could still provoke is a RecordError too, never an exception of another kind."""
    body = load_record(raw, what, max_bytes=max_bytes)
    try:
        return build(body, what)
    except RecordError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError) as exc:
        raise RecordError(what, f"malformed ({type(exc).__name__})") from None


def _text(body: dict[str, Any], key: str, what: str, name: str | None = None, *, required: bool = False) -> str:
    """A text field, as it may be shown (``clean_text``); absent or blank: empty, or refused if ``required``."""
    value = body.get(key, "")
    if not isinstance(value, str):
        raise RecordError(what, f"{name or key} is not text")
    text = clean_text(value)
    if required and not any(escape_text(ch) == ch and not ch.isspace() for ch in value):  # nothing visible in it
        raise RecordError(what, f"no {name or key}")
    return text


def _texts(body: dict[str, Any], key: str, what: str) -> tuple[str, ...]:
    values = body.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RecordError(what, f"{key} must be text")
    return tuple(clean_text(v) for v in values)


def _objects(body: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    values = body.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise RecordError(what, f"{key} is not a list of objects")
    return values


def _time(value: Any, what: str, name: str) -> float:
    """A wall-clock time or a duration in seconds: a number from 0 to the year 9999."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise RecordError(what, f"{name} is not a time")
    return float(number(value, what, name))


def _flag(body: dict[str, Any], key: str, what: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise RecordError(what, f"{key} is not true or false")
    return value
