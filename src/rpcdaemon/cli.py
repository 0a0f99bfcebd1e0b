"""The ``rpcdaemon`` command: options, configuration checks, then the daemon in the foreground or detached.

Installed as the ``rpcdaemon`` console script (``main``). It loads and checks rpcdaemon.conf and the
plugins' neutron.conf files *before* detaching, so every configuration error reaches the terminal as
one line (exit 2), then hands ``rpcdaemon.daemon.wiring.run`` (or an injected runner, in tests) to
``daemonize``. ``rpcdaemon demo ...`` runs ``rpcdaemon.demo.scenario`` instead; both are imported lazily so that
``--help`` and ``--check-config`` stay cheap.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from rpcdaemon import __version__
from rpcdaemon import commands as operator_commands
from rpcdaemon.config.neutronconf import Resolved, resolve_settings
from rpcdaemon.config.settings import (
    ConfigError,
    MissingConfigFile,
    Settings,
    load_settings,
    override,
    render_config,
    shown_problems,
)
from rpcdaemon.daemon.daemonize import DaemonError, run_detached, run_foreground, shutdown_bound
from rpcdaemon.daemon.preflight import PreflightError, run_checks
from rpcdaemon.exits import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from rpcdaemon.plugins.dump_filter import compile_filter, field_warnings
from rpcdaemon.redact import mask_text, redact_url, redact_value
from rpcdaemon.telemetry.logs import configure_logging, reopen_log_files, reset_logging

log = logging.getLogger("rpcdaemon")

DEFAULT_CONFIG = Path("/usr/local/etc/rpcdaemon.conf")


class Runner(Protocol):
    """What runs the daemon until ``stop`` is set; ``rpcdaemon.daemon.wiring.run`` in production."""

    def __call__(self, settings: Settings, stop: threading.Event, *, foreground: bool) -> int: ...


class _StartError(Exception):
    """The daemon cannot start (not a configuration problem): exit 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpcdaemon",
        description="Keeps Neutron routers and DHCP networks on live L3/DHCP agents, judging liveness from "
        "the agents' heartbeats on the AMQP bus and acting through the Neutron API.",
        epilog="Every configuration key, with its meaning and default: rpcdaemon --print-example-config. "
        "Exit status: 0 ok, 1 could not start or failed, 2 invalid configuration or usage. "
        "SIGTERM or SIGINT stop the daemon within seconds; SIGHUP reopens the log file (a restart applies "
        "configuration changes).",
    )
    parser.add_argument("-d", dest="foreground", action="store_true",
                        help="don't detach: stay in the foreground, write no pidfile, log to stderr "
                        "(at DEBUG, INFO under systemd, unless [Daemon] loglevel says otherwise)")
    parser.add_argument("-c", dest="config", metavar="FILE", type=Path, default=DEFAULT_CONFIG,
                        help="configuration file (default: %(default)s; packaged installs use /etc/rpcdaemon.conf)")
    parser.add_argument("--dry-run", action="store_true",
                        help="plan and log every move but change nothing in Neutron (overrides [Daemon] dry_run)")
    parser.add_argument("--filter", metavar="EXPR", default=None,
                        help="JMESPath filter for the Dump plugin's messages (overrides [Dump] filter)")
    parser.add_argument("--check-config", action="store_true",
                        help="load and check the configuration and the neutron.conf files it names, print the "
                        "effective settings (secrets masked), then exit: 0 if valid, 2 if not")
    parser.add_argument("--print-example-config", action="store_true",
                        help="print a configuration file documenting every key with its default, then exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     description="without a command, the daemon runs; each command has --help")
    # The demo's and the commands' own parsers read the rest of the line, --help included.
    commands.add_parser("demo", add_help=False,
                        help="simulate a cloud in this process and watch failover happen "
                        "(rpcdaemon demo --help for its options)")
    operator_commands.add_to(commands)
    return parser


def main(argv: Sequence[str] | None = None, runner: Runner | None = None) -> int:
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        if rest and args.command is None:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    if args.command == "demo":
        from rpcdaemon.demo import scenario as demo

        try:
            return demo.main(demo.build_parser().parse_args(rest))
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    if args.command in operator_commands.COMMANDS:
        if args.foreground or (args.dry_run and args.command not in ("evacuate", "rebalance")) or args.check_config:
            return _fail(f"-d, --dry-run and --check-config go with the daemon, not with {args.command}; "
                         f"see rpcdaemon {args.command} --help", EXIT_CONFIG)
        if args.dry_run:
            rest = [*rest, "--dry-run"]
        return operator_commands.main(args.command, rest, args.config)
    if args.print_example_config:
        sys.stdout.write(render_config())
        return EXIT_OK
    try:
        settings = _settings(args)
        resolved = resolve_settings(settings)
        settings = replace(settings, warnings=settings.warnings + resolved.warnings)
    except MissingConfigFile as exc:
        # Most often a first run: say how to get a file (or a look at the daemon without one).
        code = _fail(str(exc), EXIT_CONFIG)
        print(f"rpcdaemon: write one with `rpcdaemon --print-example-config > {args.config}` and edit it, or "
              "name another with -c FILE; `rpcdaemon demo` shows a failover without any setup", file=sys.stderr)
        return code
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    try:  # what loading cannot see: kombu's view of the URL, clouds.yaml, the metrics address and port
        run_checks(settings, resolved, starting=not args.check_config)
    except PreflightError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    if args.check_config:
        for warning in shown_problems(settings.warnings, "warnings"):
            print(f"rpcdaemon: warning: {warning}", file=sys.stderr)
        sys.stdout.write(describe(settings, resolved))
        return EXIT_OK
    try:
        run = runner or _service_runner()
        if args.foreground:
            return _run_foreground(settings, run)
        return _run_detached(settings, run)
    except (_StartError, DaemonError) as exc:
        return _fail(str(exc), EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    print(f"rpcdaemon: error: {mask_text(message)}", file=sys.stderr)
    return code


def _settings(args: argparse.Namespace) -> Settings:
    # Absolute now: the detached daemon runs in /.
    settings = load_settings(Path(args.config).absolute())
    if args.dry_run:
        settings = override(settings, "Daemon", "dry_run", "true", source="--dry-run")
    if args.filter is not None:
        settings = override(settings, "Dump", "filter", args.filter, source="--filter")
    return settings


def _service_runner() -> Runner:
    try:
        from rpcdaemon.daemon import wiring
    except ModuleNotFoundError as exc:
        if exc.name != "rpcdaemon.daemon.wiring":
            raise
        raise _StartError("rpcdaemon.daemon.wiring is missing from this installation") from None
    return wiring.run


def _started(settings: Settings, *, foreground: bool) -> None:
    for warning in shown_problems(settings.warnings, "warnings"):
        log.warning("%s", warning)
    mode = "foreground" if foreground else "detached"
    dry = " [dry run]" if settings.daemon.dry_run else ""
    log.info("rpcdaemon %s starting (pid %d, %s, config %s)%s", __version__, os.getpid(), mode, settings.source, dry)


def _shutdown_bound(settings: Settings) -> float:
    # Long enough for a move past its unbind to finish its bind (daemonize.shutdown_bound).
    return shutdown_bound((ps.timeout, ps.retry_attempts) for _, ps in settings.agent_plugins())


def _reopen_logs() -> None:
    """SIGHUP (daemonize calls this in the main thread): logrotate has moved the log file."""
    if reopen_log_files():
        log.info("SIGHUP: log file reopened")
    else:
        log.info("SIGHUP: no log file to reopen (logging to stderr); a restart applies configuration changes")


def _run_foreground(settings: Settings, run: Runner) -> int:
    configure_logging(settings, foreground=True)
    try:
        _started(settings, foreground=True)
        code = run_foreground(lambda stop: run(settings, stop, foreground=True),
                              shutdown_timeout=_shutdown_bound(settings), on_hup=_reopen_logs)
        log.info("rpcdaemon exiting (status %d)", code)
        return code
    finally:
        reset_logging()


def _run_detached(settings: Settings, run: Runner) -> int:
    logfile = settings.daemon.logfile
    try:
        # Fail here, on the terminal, rather than in a daemon whose stderr is /dev/null.
        with logfile.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise _StartError(f"cannot write logfile {logfile}: {exc.strerror}") from None
    audit_log = settings.daemon.audit_log
    try:
        if audit_log is not None:
            with audit_log.open("a", encoding="utf-8"):
                pass
    except OSError as exc:
        raise _StartError(f"cannot write audit_log {audit_log}: {exc.strerror}") from None
    for warning in shown_problems(settings.warnings, "warnings"):
        print(f"rpcdaemon: warning: {warning}", file=sys.stderr)

    def after_detach() -> None:
        configure_logging(settings, foreground=False)
        _started(settings, foreground=False)

    code = run_detached(lambda stop: run(settings, stop, foreground=False), pidfile=settings.daemon.pidfile,
                        after_detach=after_detach, shutdown_timeout=_shutdown_bound(settings),
                        on_hup=_reopen_logs)
    log.info("rpcdaemon exiting (status %d)", code)
    return code


def describe(settings: Settings, resolved: Resolved) -> str:
    """``--check-config`` output: the effective settings as an ini file, then what neutron.conf added.

    Each ``key = value`` line is redacted knowing its key (rpchost's passwords, any secret-named key),
    the broker URL is parsed and rebuilt without its passwords; the text filter then runs as a last resort."""
    settings_lines = []
    for line in render_config(settings, docs=False).rstrip().splitlines():
        key, sep, value = line.partition(" = ")
        settings_lines.append(f"{key}{sep}{redact_value(key, value)}" if sep else line)
    lines = [f"# {settings.source}: valid. Effective settings:", *settings_lines,
             "", "# Resolved:", f"# broker: {redact_url(resolved.broker_url)}"]
    for name, plugin in (("L3Agent", resolved.l3), ("DHCPAgent", resolved.dhcp)):
        if plugin is not None:
            timing = (f"agent_down_time {plugin.agent_down_time:g} s, "
                      f"report_interval {plugin.conf.report_interval:g} s, startup_grace {plugin.startup_grace:g} s")
            lines.append(f"# {name}: Neutron via {plugin.access.describe()}; {timing} ({plugin.conf.source})")
    if "Dump" in settings.daemon.plugins and settings.dump.filter:
        lines += [f"# warning: {text}" for text in field_warnings(compile_filter(settings.dump.filter))]
    return mask_text("\n".join(lines)) + "\n"
