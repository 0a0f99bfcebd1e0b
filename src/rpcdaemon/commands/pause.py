"""``rpcdaemon pause``, ``resume``, ``release-brake``, ``restore-brake`` and ``control reset``: the control
state on the broker.

Each reads the control state (``control.state.ControlState``) from its queue, changes its part and writes
it back; every instance of the group (``[coordination] group``) reads it within ``control.POLL`` seconds,
writes it to its audit trail and log, and a daemon started later finds it there. Then the command waits
a few seconds for the active instance's live view to show the change and says which instance did (or
that no daemon runs: the state holds for the next one to start).

Only who can read the configuration file can do this: the broker credentials are in it (see
``rpcdaemon.control``). ``release-brake`` always has an end (default 15 minutes, at most a day) and a
reason: it lets dead agents' work move even when a large share of the agents looks dead at once.

A record on the broker that is not understood (garbage, a forgery, a newer version's) is one line and exit
1 for ``pause``, ``release-brake`` and ``restore-brake``, which change nothing then. ``control reset``
writes a fresh control state (not paused, brake as configured) whatever is there, and says what it
replaced; ``resume`` too, when the record is not understood. The instances audit a reset as
``control-reset`` with who ran it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import TextIO

from rpcdaemon.commands.context import (
    CommandContext,
    CommandError,
    print_line,
    who,
)
from rpcdaemon.control import POLL
from rpcdaemon.control.channel import ControlChannel
from rpcdaemon.control.state import (
    ControlState,
    DaemonView,
    Hold,
    RecordError,
    clean_text,
    describe_span,
    parse_duration,
)
from rpcdaemon.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE

RELEASE_DEFAULT = 15 * 60.0
RELEASE_MAX = 86400.0


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "control":
        parser.add_argument("action", choices=("reset",),
                            help="reset: write a fresh control state (not paused, brake as configured), whatever "
                                 "the broker holds now, even a record not understood")
        parser.add_argument("--reason", default="", help="why; in every instance's log and audit trail")
    if name in ("pause", "release-brake"):
        default = "until `rpcdaemon resume`" if name == "pause" else "15m; at most 1d"
        parser.add_argument("--for", dest="duration", type=_duration, metavar="DURATION",
                            help=f"how long, e.g. 90s, 30m, 2h, 1h30m (default: {default})")
        parser.add_argument("--reason", default="", required=name == "release-brake",
                            help="why; shown by status, in every instance's log and in the audit trail")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for the active instance to confirm the change")
    parser.epilog = ("Every instance of the group ([coordination] group) honours it within "
                     f"{POLL:.0f}s; it is kept on the broker, across daemon restarts, until changed. "
                     "Exit status: 0 done, 1 the broker could not be reached, the control state there is not "
                     "understood (only `control reset` and `resume` replace it) or the change not written, 2 usage.")


def run(args: argparse.Namespace, ctx: CommandContext, out: TextIO, name: str) -> int:
    if name == "release-brake" and (args.duration or RELEASE_DEFAULT) > RELEASE_MAX:
        raise CommandError("--for is at most 1d: a brake release must end", EXIT_USAGE)
    channel = ctx.channel()
    try:
        return _run(args, channel, out, name, ctx.group)
    except RecordError as exc:
        raise CommandError(f"the control state on the broker is not understood ({exc.problem}): run `rpcdaemon "
                           "control reset` (it writes a fresh one); nothing was changed") from None
    except Exception as exc:
        if not channel.is_broker_error(exc):
            raise
        raise CommandError(f"cannot reach the broker {channel.describe()} ({channel.explain(exc)}); nothing "
                           "was changed") from None
    finally:
        channel.close()


def _run(args: argparse.Namespace, channel: ControlChannel, out: TextIO, name: str, group: str) -> int:
    now = time.time()
    by = who()
    if name == "control":
        return _reset(args, channel, out, group, by, now)
    try:
        state = channel.read_state() or ControlState()
    except RecordError as exc:
        if name != "resume":
            raise
        # resume is a way out of a broken record: it may hold a pause the daemons still honour
        channel.write_state(ControlState(event="resume", by=by, at=now))
        print(f"the control state on the broker was not understood ({exc.problem}): replaced it with a fresh one; "
              f"resumed: automatic moves again on every instance of group {group!r} (by {by})", file=out)
        return EXIT_OK if args.no_wait else _confirm(channel, ControlState(), name, out)
    if name == "pause":
        until = now + args.duration if args.duration else None
        hold = Hold(reason=clean_text(args.reason), by=by, at=now, until=until)
        new = replace(state, pause=hold, event="pause", by=by, at=now)
        said = f"paused {describe_span(until, now)}: no automatic moves on any instance of group {group!r}"
    elif name == "resume":
        if state.paused(now) is None:
            print_line(out, "not paused: nothing to do")
            return EXIT_OK
        new = replace(state, pause=None, event="resume", by=by, at=now)
        said = f"resumed: automatic moves again on every instance of group {group!r}"
    elif name == "release-brake":
        duration = args.duration or RELEASE_DEFAULT
        hold = Hold(reason=clean_text(args.reason), by=by, at=now, until=now + duration)
        new = replace(state, brake_release=hold, event="release-brake", by=by, at=now)
        said = (f"mass-failure brake released {describe_span(now + duration, now)}: dead agents' work moves even "
                "when many are dead at once")
    else:  # restore-brake
        if state.brake_released(now) is None:
            print_line(out, "the brake is not released: nothing to do")
            return EXIT_OK
        new = replace(state, brake_release=None, event="restore-brake", by=by, at=now)
        said = "mass-failure brake restored"
    channel.write_state(new)
    print_line(out, f"{said} (by {by})")
    if args.no_wait:
        return EXIT_OK
    return _confirm(channel, new, name, out)


def _reset(args: argparse.Namespace, channel: ControlChannel, out: TextIO, group: str, by: str, now: float) -> int:
    """``control reset``: a fresh control state, whatever was there; says what it replaced."""
    try:
        old = channel.read_state()
        replaced = _describe(old, now) if old is not None else "no control state (none was ever written)"
    except RecordError as exc:
        replaced = f"a control state not understood ({exc.problem})"
    new = ControlState(event="reset", by=by, at=now, reason=clean_text(args.reason))
    channel.write_state(new)
    print(f"replaced {replaced}", file=out)
    print(f"control state reset: not paused, brake as configured, on every instance of group {group!r} (by {by})",
          file=out)
    return EXIT_OK if args.no_wait else _confirm(channel, new, "control", out)


def _describe(state: ControlState, now: float) -> str:
    """``"PAUSED by alice@ctl-1, for 29m more: r; brake not released (last change: pause by alice@ctl-1)"``."""
    pause, release = state.paused(now), state.brake_released(now)
    parts = [f"PAUSED {pause.describe(now)}" if pause else "not paused",
             f"brake RELEASED {release.describe(now)}" if release else "brake not released"]
    last = f" (last change: {state.event} by {state.by})" if state.event else ""
    return "; ".join(parts) + last


def _confirm(channel: ControlChannel, new: ControlState, name: str, out: TextIO) -> int:
    """Wait for the active instance's live view to show the change (two polls and a bit)."""
    deadline = time.monotonic() + 2 * POLL + 2
    view: DaemonView | None = None
    while time.monotonic() < deadline:
        try:
            view = channel.read_view()
        except RecordError as exc:
            print(f"the live view on the broker is not understood ({exc.problem}): the change is written, but no "
                  "instance confirmed it; check with `rpcdaemon status`", file=out)
            return EXIT_FAILED
        if view is None:
            break
        if _shows(view, new, name):
            print_line(out, f"confirmed by the active instance {view.instance}")
            return EXIT_OK
        time.sleep(0.5)
    if view is None:
        print_line(out, "no rpcdaemon instance is acting now: the change is kept on the broker for the next one "
                        "to start")
        return EXIT_OK
    print_line(out, f"the active instance {view.instance} has not shown it yet (it reads the control state every "
                    f"{POLL:.0f}s); check with `rpcdaemon status`")
    return EXIT_FAILED


def _shows(view: DaemonView, new: ControlState, name: str) -> bool:
    if name == "pause":
        return view.paused is not None and view.paused.at == (new.pause.at if new.pause else None)
    if name == "resume":
        return view.paused is None
    if name == "control":
        return view.paused is None and view.brake_release is None
    if name == "release-brake":
        return view.brake_release is not None and view.brake_release.at == (
            new.brake_release.at if new.brake_release else None)
    return view.brake_release is None
