"""The control channel's two records as typed values, and their JSON (see ``rpcdaemon.control``).

Both come off the bus, so parsing is strict: a record that is not what it should be is a ``ValueError``
naming what is wrong (the daemon then keeps what it had and says so once; a command says it and exits 1).
Times are wall-clock seconds (``time.time()``): a pause "until 14:00" must mean the same on every
controller (NTP keeps them together; the daemon's liveness judgement never uses them).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from rpcdaemon.textsafe import escape_text

VERSION = 1
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
    def from_dict(cls, value: Any, what: str) -> Hold | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"{what} is not an object")
        until = value.get("until")
        at = value.get("at")
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            raise ValueError(f"{what}.at is not a time")
        if until is not None and (not isinstance(until, (int, float)) or isinstance(until, bool)):
            raise ValueError(f"{what}.until is not a time")
        reason, by = value.get("reason", ""), value.get("by", "")
        if not isinstance(reason, str) or not isinstance(by, str):
            raise ValueError(f"{what}.reason and .by must be text")
        return cls(reason=clean_text(reason), by=clean_text(by), at=float(at),
                   until=float(until) if until is not None else None)


@dataclass(frozen=True, slots=True)
class ControlState:
    """What the operators asked of every instance: a pause, a brake release, and the last change."""

    pause: Hold | None = None
    brake_release: Hold | None = None
    # The last command that wrote it: "pause", "resume", "release-brake" or "restore-brake", by whom, when.
    event: str = ""
    by: str = ""
    at: float = 0.0

    def paused(self, now: float) -> Hold | None:
        return self.pause if self.pause is not None and self.pause.active(now) else None

    def brake_released(self, now: float) -> Hold | None:
        release = self.brake_release
        return release if release is not None and release.active(now) else None

    def to_json(self) -> bytes:
        body = {"v": VERSION, "pause": self.pause.to_dict() if self.pause else None,
                "brake_release": self.brake_release.to_dict() if self.brake_release else None,
                "event": self.event, "by": self.by, "at": self.at}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ControlState:
        body = _load(raw, "control state")
        event, by, at = body.get("event", ""), body.get("by", ""), body.get("at", 0.0)
        if not isinstance(event, str) or not isinstance(by, str) or not isinstance(at, (int, float)):
            raise ValueError("control state: event, by and at have the wrong types")
        return cls(pause=Hold.from_dict(body.get("pause"), "pause"),
                   brake_release=Hold.from_dict(body.get("brake_release"), "brake_release"),
                   event=clean_text(event), by=clean_text(by), at=float(at))


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
        body = _load(raw, "live view")
        try:
            plugins = tuple(
                PluginView(
                    name=str(p["name"]), agent_type=str(p["agent_type"]), down_time=float(p["down_time"]),
                    brake=str(p["brake"]) if p.get("brake") is not None else None,
                    held=tuple(str(h) for h in p.get("held", ())), pending=int(p.get("pending", 0)),
                    agents=tuple(
                        AgentView(id=str(a["id"]), host=str(a["host"]), verdict=str(a["verdict"]), why=str(a["why"]),
                                  heard_ago=float(a["heard_ago"]) if a.get("heard_ago") is not None else None)
                        for a in p.get("agents", ())),
                )
                for p in body.get("plugins", ()))
            return cls(instance=str(body["instance"]), at=float(body["at"]), version=str(body.get("version", "")),
                       role=str(body.get("role", "")), dry_run=bool(body.get("dry_run", False)),
                       paused=Hold.from_dict(body.get("paused"), "paused"),
                       brake_release=Hold.from_dict(body.get("brake_release"), "brake_release"), plugins=plugins)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"live view: malformed ({type(exc).__name__}: {exc})") from None


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
        body = _load(raw, "roll-call entry")
        instance, role, version = body.get("instance"), body.get("role"), body.get("version", "")
        plugins = body.get("plugins", [])
        if not isinstance(instance, str) or not instance:
            raise ValueError("roll-call entry: no instance")
        if role not in ROLES:
            raise ValueError(f"roll-call entry: role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(version, str) or not isinstance(plugins, list) or not all(
                isinstance(p, str) for p in plugins):
            raise ValueError("roll-call entry: version and plugins must be text")
        at, since = _time(body, "at"), _time(body, "since")
        return cls(instance=clean_text(instance), role=str(role), at=at, since=since,
                   version=clean_text(version), dry_run=body.get("dry_run") is True,
                   plugins=tuple(clean_text(p) for p in plugins))


def roll_call(entries: list[Presence], now: float, ttl: float) -> list[Presence]:
    """The instances running now: each one's newest entry, if younger than ``ttl`` and not ``stopped``;
    the active first, then by instance name."""
    newest: dict[str, Presence] = {}
    for e in entries:
        if e.instance not in newest or e.at >= newest[e.instance].at:
            newest[e.instance] = e
    running = [e for e in newest.values() if e.role != "stopped" and now - e.at <= ttl]
    return sorted(running, key=lambda e: (e.role != "active", e.instance))


def _time(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise ValueError(f"roll-call entry: {name} is not a time")
    return float(value)


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{what}: not JSON") from None
    if not isinstance(body, dict):
        raise ValueError(f"{what}: not a JSON object")
    if body.get("v") != VERSION:
        raise ValueError(f"{what}: version {body.get('v')!r}, this rpcdaemon reads version {VERSION}")
    return body
