"""``rpcdaemon rebalance``: even out routers (and networks) across live agents, at a bounded rate.

Run by ``commands.main``, for example after a failed node came back empty. It refuses (exit 1, one line)
while the running daemon's live view (``ControlChannel.read_view``) says the mass-failure brake holds or
moves are pending, and when Neutron says an agent that hosts work is dead (a failover is due: that is
the daemon's job, not a rebalance's). A broker error on the live view is an exit 1 too, unless
``--force``: then only the API's facts count. With no daemon publishing a view it says so and goes by
the API. The plan is ``deciding.rebalance`` (at most ``--max-moves``); moves run in batches through the
executor, at most ``--rate`` moves per second (a network move binds the new agent before it unbinds the
old one), each bind read back, a target refused once Neutron no longer says it is alive.

Exit status: 0 when every move was made and verified (or nothing was to do), 1 when something refused
it or a move failed (listed), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from rpcdaemon.acting.api import NeutronError
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
from rpcdaemon.control.state import DaemonView
from rpcdaemon.deciding.rebalance import RebalancePlan, plan_rebalance_dhcp, plan_rebalance_l3
from rpcdaemon.exits import EXIT_FAILED, EXIT_OK
from rpcdaemon.model import L3_AGENT, Action, ActionKind, Agent, Outcome, OutcomeStatus, no_audit

DEFAULT_MAX_MOVES = 50
DEFAULT_RATE = 2.0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of moves per second") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of moves per second above 0")
    return value


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--max-moves", metavar="N", type=_positive_int, default=DEFAULT_MAX_MOVES,
                        help="at most N moves (default %(default)s); run it again for more")
    parser.add_argument("--rate", metavar="MOVES_PER_S", type=_rate, default=DEFAULT_RATE,
                        help="at most this many moves per second (default %(default)g)")
    parser.add_argument("--dry-run", action="store_true", help="plan and print the moves, change nothing")
    parser.add_argument("--l3", action="store_true", help="routers only (default: every agent type configured)")
    parser.add_argument("--dhcp", action="store_true",
                        help="networks only (only with [DHCPAgent] agents_per_network = N; with all there is "
                             "nothing to balance)")
    parser.add_argument("--ha", action="store_true", help="move HA routers' instances too")
    parser.add_argument("--force", action="store_true",
                        help="go by the Neutron API's facts alone when the daemon's live view cannot be read")


def run(args: argparse.Namespace, ctx: CommandContext, out: TextIO, name: str) -> int:
    record, close = ctx.audit(name) if not args.dry_run else (no_audit, lambda: None)
    try:
        sides = sides_for(ctx, args, args.dry_run, record=record, command=name)
        view, problem = read_live_view(ctx)
        record("command", command=name, phase="start", by=sides[0].by, plugins=[s.plugin for s in sides],
               max_moves=args.max_moves)
        code = EXIT_FAILED
        try:
            code = rebalance(sides, out, view=view, view_problem=problem, force=args.force,
                             max_moves=args.max_moves, rate=args.rate, dry_run=args.dry_run)
        finally:
            record("command", command=name, phase="end", by=sides[0].by, exit_status=code)
        return code
    finally:
        close()


def read_live_view(ctx: CommandContext) -> tuple[DaemonView | None, str | None]:
    """The active daemon's live view, or why it could not be read."""
    channel = ctx.channel()
    try:
        return channel.read_view(), None
    except ValueError as exc:
        return None, f"the daemon's live view is unreadable ({exc})"
    except Exception as exc:
        if not channel.is_broker_error(exc):
            raise
        return None, f"cannot reach the daemon's live view ({channel.explain(exc)})"
    finally:
        channel.close()


def refusal_by_view(view: DaemonView | None, plugins: Sequence[str]) -> str | None:
    if view is None:
        return None
    for p in view.plugins:
        if p.name not in plugins:
            continue
        if p.brake:
            return f"the daemon's mass-failure brake holds for {p.name} ({p.brake}): rebalance waits for it"
        if p.pending:
            return (f"the daemon has {p.pending} moves pending for {p.name}: a failover is under way; "
                    "rebalance when it is done")
    return None


def rebalance(sides: Sequence[Side], out: TextIO, *, view: DaemonView | None, view_problem: str | None = None,
              force: bool = False, max_moves: int = DEFAULT_MAX_MOVES, rate: float = DEFAULT_RATE,
              dry_run: bool = False, terminal: bool | None = None, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """The command's work, with the adapters and the live view given (tests pass ``FakeNeutron``)."""
    if view_problem is not None:
        if not force:
            raise CommandError(f"{view_problem}; --force goes by the Neutron API's facts alone", EXIT_FAILED)
        print_line(out, f"{view_problem}; --force: going by the Neutron API's facts alone")
    elif view is None:
        print_line(out, "no daemon publishes a live view (none runs, or none is active): going by the Neutron API")
    why = refusal_by_view(view, [s.plugin for s in sides])
    if why is not None:
        raise CommandError(why, EXIT_FAILED)
    if view is not None and view.paused is not None:
        # A pause stops the daemon's automatic moves; a rebalance is an operator's own, asked for now.
        print_line(out, f"note: the daemon is paused {view.paused.describe(view.at)}; a rebalance is a manual "
                        "action and goes ahead (the paused daemon moves nothing meanwhile)")

    planned: list[tuple[Side, list[Agent], RebalancePlan]] = []
    for side in sides:
        try:
            agents = side.api.list_agents()
            resources, bindings = read_placement(side, agents)
        except NeutronError as err:
            raise CommandError(f"cannot read {side.things} and agents from Neutron: {err}") from None
        load: dict[str, int] = {}
        for hosts in bindings.values():
            for aid in hosts:
                load[aid] = load.get(aid, 0) + 1
        for agent in agents:
            if agent.agent_type == side.agent_type and not agent.alive and load.get(agent.id):
                raise CommandError(
                    f"Neutron says the {LABELS[side.plugin]} {agent.describe()} is dead and hosts "
                    f"{load[agent.id]} {side.things}: a failover is due; rebalance waits for it", EXIT_FAILED)
        agents = _judged_targets(agents, view, side, out)
        if side.agent_type == L3_AGENT:
            plan = plan_rebalance_l3(agents, resources, bindings, max_moves=max_moves, include_ha=side.include_ha)
        else:
            plan = plan_rebalance_dhcp(agents, resources, bindings, agents_per_network=side.agents_per_network,
                                       max_moves=max_moves)
        planned.append((side, agents, plan))
        max_moves -= len(plan.moves)  # --max-moves counts every move of the command
        if max_moves <= 0:
            break

    problems: list[str] = []
    for side, agents, plan in planned:
        problems += _run_side(side, agents, plan, out, rate=rate, dry_run=dry_run, terminal=terminal,
                              clock=clock, sleep=sleep)
    if problems:
        print_line(out, f"could not move ({len(problems)}):")
        for line in problems:
            print_line(out, f"  {line}")
        return EXIT_FAILED
    return EXIT_OK


def _judged_targets(agents: list[Agent], view: DaemonView | None, side: Side, out: TextIO) -> list[Agent]:
    """Without the agents the running daemon does not judge alive (warming after a return, suspect, unknown):
    they would get work before the daemon itself gives them any (``revive_hold``)."""
    if view is None:
        return agents
    plugin = next((p for p in view.plugins if p.name == side.plugin), None)
    if plugin is None:
        return agents
    verdicts = {a.id: a for a in plugin.agents}
    kept = []
    for agent in agents:
        seen = verdicts.get(agent.id)
        if agent.agent_type == side.agent_type and seen is not None and seen.verdict != "alive":
            print_line(out, f"not a target yet: {agent.describe()} ({seen.verdict}: {seen.why})")
            continue
        kept.append(agent)
    return kept


def _loads_line(plan: RebalancePlan, agents: Sequence[Agent], which: str) -> str:
    hosts = {a.id: a.host for a in agents}
    loads = plan.before if which == "before" else plan.after
    named = sorted((hosts.get(aid, aid), n) for aid, n in loads.items())
    return ", ".join(f"{host} {n}" for host, n in named)


def _run_side(side: Side, agents: list[Agent], plan: RebalancePlan, out: TextIO, *, rate: float, dry_run: bool,
              terminal: bool | None, clock: Callable[[], float], sleep: Callable[[float], None]) -> list[str]:
    things = side.things
    for note in plan.held:
        print_line(out, f"{side.plugin}: {note}")
    if not plan.before:
        return []
    print_line(out, f"{side.plugin}: {things} per live agent now: {_loads_line(plan, agents, 'before')}")
    if not plan.moves:
        print_line(out, f"{side.plugin}: balanced already (spread {plan.spread_before}): nothing to move")
        return []
    if dry_run:
        for a in plan.actions:
            print_line(out, f"  would {a.describe()}")
        print_line(out, f"dry run: {len(plan.moves)} {things} would move; spread {plan.spread_before} -> "
                        f"{plan.spread_after} ({_loads_line(plan, agents, 'after')})")
        return []
    check = TargetCheck(side.api)
    check.prime(agents)
    # Batches of whole moves, one every ``interval`` seconds: at most ``rate`` moves per second.
    batch = max(1, int(rate))
    interval = batch / rate
    moves = list(plan.moves)
    by_id: dict[str, list[Action]] = {}
    for a in plan.actions:
        by_id.setdefault(a.resource_id, []).append(a)
    outcomes: list[Outcome] = []
    refused: list[str] = []
    began = clock()
    with Progress(out, len(plan.actions), f"rebalance {things}", terminal=terminal, side=side) as progress:
        for i in range(0, len(moves), batch):
            wait = began + (i // batch) * interval - clock()
            if wait > 0:
                sleep(wait)
            chunk = [a for m in moves[i:i + batch] for a in by_id[m.resource_id]]
            binds = [a for a in chunk if a.kind is ActionKind.BIND_NETWORK]
            done = run_moves(side.api, side.policy, binds, progress, check)
            ok = {o.action.resource_id for o in done if o.status is OutcomeStatus.DONE}
            rest = []
            for a in chunk:
                if a.kind is ActionKind.BIND_NETWORK:
                    continue
                if a.kind is ActionKind.UNBIND_NETWORK and a.resource_id not in ok:
                    refused.append(f"network {a.resource_id}: left on {a.source.host if a.source else '?'}: "
                                   "its bind failed")
                    continue
                rest.append(a)
            outcomes += done + run_moves(side.api, side.policy, rest, progress, check)
    took = clock() - began
    problems = [f"{o.action.describe()}: {o.status.value}: {o.detail}" for o in outcomes
                if o.status is not OutcomeStatus.DONE] + refused
    done_count: dict[str, int] = {}
    for o in outcomes:
        if o.status is OutcomeStatus.DONE:
            done_count[o.action.resource_id] = done_count.get(o.action.resource_id, 0) + 1
    moved = sum(1 for m in moves if done_count.get(m.resource_id, 0) == len(by_id[m.resource_id]))
    print_line(out, f"rebalance {things}: {moved} of {len(plan.moves)} moved in {took:.1f} s "
                    f"(started at most {rate:g} a second), verified ({verb_counts(outcomes)}); "
                    f"spread {plan.spread_before} -> {plan.spread_after} planned")
    return problems

