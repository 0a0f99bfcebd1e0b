"""``rpcdaemon evacuate HOST``: drain a live host's L3 and DHCP agents for maintenance.

Run by ``commands.main``. For each agent of HOST that the configuration's plugins handle (``--l3``,
``--dhcp``: only those): mark it admin-down in Neutron first (the native maintenance mark: neither
Neutron's scheduler nor a running rpcdaemon ever places work on an admin-down agent, so nothing moves
back), unless ``--no-admin-down``; plan with ``deciding.drain``; run the plan through the executor with
the plugin's ``workers`` and ``retry_attempts``, every bind read back, a target refused once Neutron no
longer says it is alive (``progress.TargetCheck``). Networks are bound to their new agents before they
leave HOST. Then HOST's agents are read again: what still sits there is reported.

Exit status: 0 when everything moved and was verified; 1 with the list of what could not move (no
eligible target, failed, or still on HOST); 2 for bad usage (an unknown host: similar names are listed).
``--dry-run`` plans and prints, changes nothing (admin state included).
"""

from __future__ import annotations

import argparse
import difflib
import time
from collections.abc import Sequence
from typing import TextIO

from rpcdaemon.acting.api import NeutronAPI, NeutronError
from rpcdaemon.commands.context import CommandContext, CommandError, print_line
from rpcdaemon.commands.progress import (
    LABELS,
    Progress,
    Side,
    TargetCheck,
    read_placement,
    run_moves,
    sides_for,
    verb_counts,
)
from rpcdaemon.deciding.drain import DrainPlan, plan_drain_dhcp, plan_drain_l3
from rpcdaemon.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from rpcdaemon.model import L3_AGENT, Action, ActionKind, Agent, Outcome, OutcomeStatus, no_audit


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("host", metavar="HOST", help="the host to drain (as `openstack network agent list` shows it)")
    parser.add_argument("--l3", action="store_true", help="its L3 agent (default: every agent type configured)")
    parser.add_argument("--dhcp", action="store_true", help="its DHCP agent (default: every agent type configured)")
    parser.add_argument("--target-host", metavar="H", help="move everything to host H only")
    parser.add_argument("--dry-run", action="store_true", help="plan and print the moves, change nothing")
    parser.add_argument("--no-admin-down", action="store_true",
                        help="leave the agents admin-up (new work may then be scheduled onto them again)")
    parser.add_argument("--ha", action="store_true",
                        help="move HA routers' instances too (default: [L3Agent] skip_ha_routers; VRRP fails "
                             "them over by itself)")


def run(args: argparse.Namespace, ctx: CommandContext, out: TextIO, name: str) -> int:
    record, close = ctx.audit(name) if not args.dry_run else (no_audit, lambda: None)
    try:
        sides = sides_for(ctx, args, args.dry_run, record=record, command=name)
        record("command", command=name, phase="start", by=sides[0].by, host=args.host,
               plugins=[s.plugin for s in sides], target_host=args.target_host, admin_down=not args.no_admin_down)
        code = EXIT_FAILED
        try:
            code = evacuate(args.host, sides, out, target_host=args.target_host, dry_run=args.dry_run,
                            admin_down=not args.no_admin_down, required=bool(args.l3 or args.dhcp))
        finally:
            record("command", command=name, phase="end", by=sides[0].by, host=args.host, exit_status=code)
        return code
    finally:
        close()


def similar_hosts(host: str, hosts: Sequence[str]) -> str:
    close = difflib.get_close_matches(host, hosts, n=5, cutoff=0.5) or [h for h in hosts if host in h][:5]
    if close:
        return "similar: " + ", ".join(close)
    shown = sorted(hosts)[:10]
    return "known hosts: " + (", ".join(shown) + (f" and {len(hosts) - 10} more" if len(hosts) > 10 else "")
                              if shown else "none")


def _listing(api: NeutronAPI) -> list[Agent]:
    try:
        return api.list_agents()
    except NeutronError as err:
        raise CommandError(f"cannot list Neutron's agents: {err}") from None


def evacuate(host: str, sides: Sequence[Side], out: TextIO, *, target_host: str | None = None,
             dry_run: bool = False, admin_down: bool = True, required: bool = False,
             terminal: bool | None = None) -> int:
    """The command's work, with the Neutron adapters given (tests pass ``FakeNeutron``)."""
    listings = {side.plugin: _listing(side.api) for side in sides}
    hosts = sorted({a.host for agents in listings.values() for a in agents})
    if host not in hosts:
        raise CommandError(f"no agent on host {host!r} ({similar_hosts(host, hosts)})", EXIT_USAGE)
    if target_host is not None:
        if target_host == host:
            raise CommandError(f"--target-host {target_host!r} is the host being evacuated", EXIT_USAGE)
        if target_host not in hosts:
            raise CommandError(f"--target-host: no agent on host {target_host!r} "
                               f"({similar_hosts(target_host, hosts)})", EXIT_USAGE)
    jobs: list[tuple[Side, Agent, list[Agent]]] = []
    for side in sides:
        agents = listings[side.plugin]
        source = next((a for a in agents if a.agent_type == side.agent_type and a.host == host), None)
        if source is None:
            if required:
                raise CommandError(f"host {host!r} has no {LABELS[side.plugin]}", EXIT_USAGE)
            print_line(out, f"{host} has no {LABELS[side.plugin]}: nothing to do for {side.plugin}")
            continue
        jobs.append((side, source, agents))
    if not jobs:
        raise CommandError(f"host {host!r} has no L3 or DHCP agent that this configuration handles", EXIT_USAGE)

    problems: list[str] = []
    for side, source, agents in jobs:
        problems += _evacuate_one(side, source, agents, out, target_host=target_host, dry_run=dry_run,
                                  admin_down=admin_down, terminal=terminal)
    if problems:
        print_line(out, f"could not move ({len(problems)}):")
        for line in problems:
            print_line(out, f"  {line}")
        return EXIT_FAILED
    return EXIT_OK


def _evacuate_one(side: Side, source: Agent, agents: list[Agent], out: TextIO, *, target_host: str | None,
                  dry_run: bool, admin_down: bool, terminal: bool | None) -> list[str]:
    """One agent of HOST; returns one line per resource that could not move."""
    api, label, things = side.api, LABELS[side.plugin], side.things
    began = time.monotonic()
    state = ("alive" if source.alive else "NOT alive") + (", admin-up" if source.admin_state_up else ", admin-down")
    print_line(out, f"{label} {source.describe()}: {state} by Neutron")
    if not source.alive:
        print_line(out, f"  Neutron says it is not alive: its {things} move all the same")
    if dry_run:
        print_line(out, f"  dry run: would mark it admin-down{' (not: --no-admin-down)' if not admin_down else ''}; "
                        "nothing is changed")
    elif admin_down:
        try:
            api.set_agent_admin_state(source.id, False)
        except NeutronError as err:
            raise CommandError(f"cannot mark {label} {source.describe()} admin-down: {err}") from None
        side.record("command", command=side.command, phase="admin-down", by=side.by, host=source.host,
                    plugin=side.plugin, agent_id=source.id)
        print_line(out, f"  {source.host} is admin-down: nothing will be moved back to it; "
                        f"`openstack network agent set --enable {source.id}` when done")
    else:
        print_line(out, f"  --no-admin-down: it stays admin-up, so Neutron (and rpcdaemon) may place new {things} "
                        "on it")
    try:
        plan = _plan(side, source, agents, target_host)
    except NeutronError as err:
        raise CommandError(f"cannot read what {label} {source.describe()} hosts: {err}") from None
    for left in plan.kept:
        print_line(out, f"  kept on {source.host}: {left.resource_id}: {left.why}")
    for note in plan.held:
        print_line(out, f"  note: {note}")
    problems = [f"{things[:-1]} {x.resource_id}: {x.why}" for x in plan.stuck]
    for line in problems:
        print_line(out, f"  cannot move {line}")
    moves = sum(1 for a in plan.actions if a.kind is not ActionKind.BIND_NETWORK)
    if dry_run:
        for a in plan.actions:
            print_line(out, f"  would {a.describe()}")
        print_line(out, f"dry run: {moves} {things} would leave {source.host}, {len(plan.stuck)} cannot, "
                        f"{len(plan.kept)} kept")
        return problems
    check = TargetCheck(api)
    check.prime(agents)
    outcomes: list[Outcome] = []
    with Progress(out, len(plan.actions), f"evacuate {source.host} ({things})", terminal=terminal,
                  side=side) as progress:
        binds = [a for a in plan.actions if a.kind is ActionKind.BIND_NETWORK]
        rest = [a for a in plan.actions if a.kind is not ActionKind.BIND_NETWORK]
        bound = run_moves(api, side.policy, binds, progress, check)
        outcomes += bound
        rest, refused = _unbinds_allowed(rest, binds, bound)
        outcomes += run_moves(api, side.policy, rest, progress, check)
    for a, why in refused:
        problems.append(f"{things[:-1]} {a.resource_id}: not removed from {source.host}: {why}")
    try:
        still = set(side.resource.hosted_on(api, source.id))
    except NeutronError as err:
        problems.append(f"could not read back what {source.host} still hosts: {err}")
        still = set()
    problems += _failures(outcomes, still, things, source)
    moved = sum(1 for a in rest if a.resource_id not in still)
    expected = {x.resource_id for x in (*plan.stuck, *plan.kept)}
    strays = sorted(still - expected - {a.resource_id for a in plan.actions})
    for rid in strays:  # placed there meanwhile (before the admin-down took effect, or with --no-admin-down)
        problems.append(f"{things[:-1]} {rid}: on {source.host} now, but not when the plan was made")
    took = time.monotonic() - began
    print_line(out, f"evacuate {source.host}: {moved} {things} moved in {took:.1f} s, verified "
                    f"({verb_counts(outcomes)}); {len(still)} left on it"
                    + (f" ({len(plan.kept)} kept)" if plan.kept else ""))
    return problems


def _plan(side: Side, source: Agent, agents: list[Agent], target_host: str | None) -> DrainPlan:
    resources, bindings = read_placement(side, agents)
    if side.agent_type == L3_AGENT:
        return plan_drain_l3(source, agents, resources, bindings, include_ha=side.include_ha,
                             target_host=target_host)
    return plan_drain_dhcp(source, agents, resources, bindings, agents_per_network=side.agents_per_network,
                           target_host=target_host)


def _unbinds_allowed(rest: list[Action], binds: list[Action],
                     bound: list[Outcome]) -> tuple[list[Action], list[tuple[Action, str]]]:
    """A network leaves HOST only if it needed no bind or one of its binds succeeded (it keeps DHCP)."""
    wanted = {a.resource_id for a in binds}
    ok = {o.action.resource_id for o in bound if o.status is OutcomeStatus.DONE}
    allowed, refused = [], []
    for a in rest:
        if a.kind is ActionKind.UNBIND_NETWORK and a.resource_id in wanted and a.resource_id not in ok:
            refused.append((a, "no new DHCP agent took it (it would have no DHCP)"))
        else:
            allowed.append(a)
    return allowed, refused


def _failures(outcomes: list[Outcome], still: set[str], things: str, source: Agent) -> list[str]:
    """Failed actions, and skipped ones whose resource is still on HOST (moved meanwhile by another: fine)."""
    lines = []
    for o in outcomes:
        a = o.action
        if o.status is OutcomeStatus.FAILED:
            lines.append(f"{a.describe()}: failed: {o.detail}")
        elif o.status is OutcomeStatus.SKIPPED and a.resource_id in still:
            lines.append(f"{things[:-1]} {a.resource_id}: still on {source.host}: {o.detail}")
    return lines
