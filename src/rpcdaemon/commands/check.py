"""``rpcdaemon check``: what would be done now, as an exit status and one line (neutron-ha-tool's
``--l3-agent-check``), or the whole plan with ``-f json``.

It plans exactly as the daemon's pass does (the same pure planners and policies, brake included), from
Neutron's agents and bindings and the verdicts of the active instance's live view; without one, from
Neutron's own ``alive``. It changes nothing. Exit status: 0 nothing to do, 2 work needed (moves planned,
or held back by the brake or a missing target), 1 could not tell (Neutron or the broker unreachable, the
configuration runs no failover plugin, or a record on the broker, the live view or the control state, is not
understood: the line then ends with what is wrong; without the broker, whether a daemon acts is unknown). The
line starts with OK, WORK or UNKNOWN, for a Nagios check or a Prometheus textfile collector.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any, TextIO

from rpcdaemon.acting.api import NeutronAPI, NeutronError
from rpcdaemon.commands.context import AGENT_TYPES, CommandContext
from rpcdaemon.commands.fleet import DaemonFacts, agents_of, bindings, judged, read_daemon, resource_bindings
from rpcdaemon.deciding.dhcp import DhcpPolicy, plan_dhcp
from rpcdaemon.deciding.l3 import L3Policy, Plan, plan_l3
from rpcdaemon.deciding.liveness import Verdict
from rpcdaemon.exits import EXIT_FAILED, EXIT_OK, EXIT_WORK
from rpcdaemon.model import Outcome, OutcomeStatus
from rpcdaemon.textsafe import escape_text

UNLIMITED = 10**9  # the check counts every move, not one pass's max_moves


@dataclass
class PluginCheck:
    name: str
    agents: int = 0
    dead: list[str] = field(default_factory=list)
    plan: Plan = field(default_factory=Plan)
    error: str | None = None

    @property
    def work(self) -> bool:
        return bool(self.plan.actions or self.plan.held)

    def summary(self) -> str:
        if self.error is not None:
            return f"{self.name}: cannot tell ({self.error})"
        if self.plan.braked:
            return f"{self.name}: brake holds, {len(self.dead)} of {self.agents} agents dead ({', '.join(self.dead)})"
        if self.plan.actions:
            sources = sorted({a.source.host for a in self.plan.actions if a.source is not None})
            off = f" off {', '.join(sources)}" if sources else ""
            return f"{self.name}: {len(self.plan.actions)} moves needed{off}"
        if self.plan.held:
            return f"{self.name}: {self.plan.held[0]}"
        return f"{self.name}: ok ({self.agents} agents, {len(self.dead)} dead)"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("-f", "--format", choices=("line", "json"), default="line",
                        help="line: one summary line (default); json: the whole plan")
    parser.epilog = ("Exit status: 0 nothing to do, 2 work needed, 1 could not tell (also: a record on the broker "
                     "not understood). Changes nothing.")


def check_plugin(name: str, api: NeutronAPI, ctx: CommandContext, facts: DaemonFacts) -> PluginCheck:
    result = PluginCheck(name)
    cfg = ctx.plugin_config(name)
    try:
        agents = agents_of(api, AGENT_TYPES[name])
        verdicts = judged(agents, facts, name)
        placed = resource_bindings(bindings(api, agents))
        if name == "L3Agent":
            routers = {r.id: r for r in api.list_routers()}
            policy = L3Policy(skip_ha_routers=cfg.skip_ha_routers, max_moves=UNLIMITED, brake=cfg.brake)
            result.plan = plan_l3(verdicts, routers, placed, policy)
        else:
            networks = {n.id: n for n in api.list_networks()}
            dpolicy = DhcpPolicy(agents_per_network=cfg.agents_per_network, max_moves=UNLIMITED, brake=cfg.brake)
            result.plan = plan_dhcp(verdicts, networks, placed, dpolicy)
    except NeutronError as exc:
        result.error = f"Neutron: {exc}"
        return result
    result.agents = len(agents)
    result.dead = sorted(j.agent.host for j in verdicts.values() if j.verdict is Verdict.DEAD)
    return result


def run(args: argparse.Namespace, ctx: CommandContext, out: TextIO, name: str) -> int:
    facts = read_daemon(ctx)
    checks = []
    for plugin in ctx.plugins():
        api = ctx.api(plugin)
        try:
            checks.append(check_plugin(plugin, api, ctx, facts))
        finally:
            close = getattr(api, "close", None)
            if close is not None:
                close()
    records = "; ".join(p for p in (facts.view_problem, facts.state_problem) if p)
    if any(c.error for c in checks) or facts.unreachable or records:
        code, word = EXIT_FAILED, "UNKNOWN"
    elif any(c.work for c in checks):
        code, word = EXIT_WORK, "WORK"
    else:
        code, word = EXIT_OK, "OK"
    if facts.view is not None:
        source = f"live view of {facts.view.instance}"
    elif facts.unreachable and not any(c.error for c in checks):  # else the line stays about Neutron
        source = f"Neutron's verdicts; {facts.problem}"
    else:
        source = "Neutron's verdicts, no daemon acting"
    paused = " [daemon paused]" if facts.view is not None and facts.view.paused is not None else ""
    line = f"{word} - " + "; ".join(c.summary() for c in checks) + f" ({source}){paused}"
    if records:
        line += f"; {records}"
    # One line whatever a host name or an error text holds (textsafe): a monitoring system reads it.
    line = escape_text(line)
    if args.format == "json":
        print(json.dumps(_json(checks, word, code, facts, line), indent=2), file=out)
    else:
        print(line, file=out)
    return code


def _json(checks: list[PluginCheck], word: str, code: int, facts: DaemonFacts, line: str) -> dict[str, Any]:
    return {
        "status": word.lower(), "exit_status": code, "summary": line,
        "source": "daemon" if facts.view is not None else "neutron",
        "active_instance": facts.view.instance if facts.view is not None else None,
        "control_problem": facts.problems,
        "plugins": {
            c.name: {
                "agents": c.agents, "dead": c.dead, "braked": c.plan.braked, "held": list(c.plan.held),
                "error": c.error,
                "actions": [Outcome(a, OutcomeStatus.DRY_RUN, 0.0).fields() for a in c.plan.actions],
            } for c in checks
        },
    }
