"""The operator's commands: ``rpcdaemon [-c FILE] COMMAND ...``, one module each.

Each module (``status``, ``check``, ``pause``, ``evacuate``, ``rebalance``) has ``add_arguments(parser, name)``
and ``run(args, ctx, out, name) -> int`` and imports no other command module (an import-linter contract):
what they share is ``context`` (configuration, Neutron, control channel, audit trail), ``fleet`` (what the API
and the daemon's live view say about the agents) and ``progress`` (running and showing moves). ``cli.main``
looks the name up in ``COMMANDS`` and hands the rest of the command line to ``main`` here; a module is
imported only when its command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rpcdaemon.commands.context import CommandContext, CommandError
from rpcdaemon.config.settings import ConfigError
from rpcdaemon.exits import EXIT_USAGE
from rpcdaemon.redact import mask_text
from rpcdaemon.telemetry.logs import configure_command_logging, reset_logging
from rpcdaemon.textsafe import escape_text

# name -> (module, one line of help). "resume", "release-brake" and "control" live with "pause".
COMMANDS: dict[str, tuple[str, str]] = {
    "status": ("status", "the agents as Neutron and the running daemon see them, the brake, the pause, the active "
                         "instance (-f table|json|yaml|value, -c COLUMN, --watch)"),
    "check": ("check", "what would be done now: exit 0 nothing, 2 work needed, 1 could not tell (-f json: the plan)"),
    "evacuate": ("evacuate", "drain a live agent's host for maintenance: mark it admin-down, move its routers and "
                             "networks, verified"),
    "rebalance": ("rebalance", "even out routers (and networks) across live agents, a bounded number of moves"),
    "pause": ("pause", "stop all automatic moves on every instance (--for DURATION, --reason TEXT)"),
    "resume": ("pause", "end a pause: automatic moves again"),
    "release-brake": ("pause", "let dead agents' work move although the mass-failure brake holds "
                               "(--for DURATION, --reason TEXT; audited)"),
    "restore-brake": ("pause", "end a brake release early"),
    "control": ("pause", "control reset: write a fresh control state (not paused, brake as configured), also over "
                         "a record not understood (--reason TEXT; audited)"),
}


def add_to(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """List every command in ``rpcdaemon --help`` (their own parsers are built when they run)."""
    for name, (_, text) in COMMANDS.items():
        commands.add_parser(name, add_help=False, help=text)


def main(name: str, argv: Sequence[str], config: Path, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    module = importlib.import_module(f"rpcdaemon.commands.{COMMANDS[name][0]}")
    parser = argparse.ArgumentParser(prog=f"rpcdaemon [-c FILE] {name}", description=COMMANDS[name][1])
    module.add_arguments(parser, name)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    configure_command_logging(name)
    try:
        ctx = CommandContext.load(config)
        code: int = module.run(args, ctx, out, name)
        return code
    except ConfigError as exc:
        print(f"rpcdaemon {name}: error: {mask_text(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(refusal(name, exc), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"rpcdaemon {name}: interrupted", file=sys.stderr)
        return 130
    finally:
        reset_logging()


def refusal(name: str, exc: CommandError) -> str:
    """What a command that stops says on stderr: one line whatever Neutron or the bus put in it (escaped
    by ``textsafe``), no secret."""
    return f"rpcdaemon {name}: error: {escape_text(mask_text(str(exc)))}"
