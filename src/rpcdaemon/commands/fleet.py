"""What the commands know of the fleet: Neutron's agents and bindings, and the active daemon's live view.

``read_daemon`` asks the control channel for the acting instance's live view (``control.state.DaemonView``;
None with the reason when no instance publishes one or the broker cannot be reached), the control state
and the roll call of the instances; a record there that is not understood is one problem line of its
own, and the others are still read. ``bindings`` reads
which agent hosts what (one call per agent, eight at a time), ``judged`` turns the view's verdicts (or,
without a daemon, Neutron's ``alive``) into the ``Judged`` values the planners take.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.acting.resources import hosted_by
from rpcdaemon.commands.context import CommandContext
from rpcdaemon.control import VIEW_TTL
from rpcdaemon.control.state import AgentView, ControlState, DaemonView, PluginView, Presence, RecordError
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.model import Agent

READ_WORKERS = 8


@dataclass(frozen=True)
class DaemonFacts:
    """What the control channel said: the live view (None: no daemon acts), the control state, and the
    problem when the broker could not be asked or a record there is not understood."""

    view: DaemonView | None
    state: ControlState | None
    problem: str | None = None  # the broker could not be asked: nothing was read
    instances: tuple[Presence, ...] = ()  # the roll call: every instance running, the active first
    unreadable: int = 0  # roll-call entries that could not be read
    unreachable: bool = False  # the broker did not answer: whether a daemon acts is unknown
    view_problem: str | None = None  # the live view is not understood (then None: verdicts are Neutron's)
    state_problem: str | None = None  # the control state is not understood (then None: the pause is unknown)

    @property
    def problems(self) -> str | None:
        """Every problem, in one line (None: none)."""
        found = [p for p in (self.problem, self.view_problem, self.state_problem) if p]
        return "; ".join(found) if found else None

    @property
    def state_known(self) -> bool:
        """Whether ``state`` is what the broker holds (None then means: never written, not paused)."""
        return self.problem is None and self.state_problem is None

    def plugin(self, name: str) -> PluginView | None:
        if self.view is None:
            return None
        return next((p for p in self.view.plugins if p.name == name), None)

    def agent(self, name: str, agent_id: str) -> AgentView | None:
        p = self.plugin(name)
        return next((a for a in p.agents if a.id == agent_id), None) if p is not None else None


def read_daemon(ctx: CommandContext, *, wall: float | None = None) -> DaemonFacts:
    now = time.time() if wall is None else wall
    channel = ctx.channel()
    view_problem = state_problem = None
    try:
        try:
            view = channel.read_view()
        except RecordError as exc:
            view, view_problem = None, f"the live view on the broker is not understood ({exc.problem})"
        try:
            state = channel.read_state()
        except RecordError as exc:
            state, state_problem = None, (f"the control state on the broker is not understood ({exc.problem}): run "
                                          "`rpcdaemon control reset`")
        instances, unreadable = channel.read_roll(now)
    except Exception as exc:
        if not channel.is_broker_error(exc):
            raise
        return DaemonFacts(None, None, f"cannot reach the broker {channel.describe()} ({channel.explain(exc)})",
                           unreachable=True)
    finally:
        channel.close()
    if view is not None and now - view.at > 3 * VIEW_TTL:
        view = None  # a message that outlived its TTL (a broker without TTLs): that daemon is gone
    if view is not None and all(i.instance != view.instance for i in instances):
        # Met another reader of the roll call: the view itself says the active instance runs.
        instances = [Presence(instance=view.instance, role="active", at=view.at, since=view.at,
                              version=view.version, dry_run=view.dry_run), *instances]
    return DaemonFacts(view, state, instances=tuple(instances), unreadable=unreadable, view_problem=view_problem,
                       state_problem=state_problem)


def agents_of(api: NeutronAPI, agent_type: str) -> list[Agent]:
    return sorted((a for a in api.list_agents() if a.agent_type == agent_type), key=lambda a: (a.host, a.id))


def bindings(api: NeutronAPI, agents: Iterable[Agent]) -> dict[str, list[str]]:
    """agent id -> ids of the routers (L3) or networks (DHCP) it hosts."""
    agents = list(agents)

    def hosted(agent: Agent) -> list[str]:
        return hosted_by(agent.agent_type).hosted_on(api, agent.id)

    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        return dict(zip((a.id for a in agents), pool.map(hosted, agents), strict=True))


def resource_bindings(per_agent: Mapping[str, list[str]]) -> dict[str, frozenset[str]]:
    """resource id -> ids of the agents hosting it (the planners' ``bindings``)."""
    out: dict[str, set[str]] = {}
    for aid, ids in per_agent.items():
        for rid in ids:
            out.setdefault(rid, set()).add(aid)
    return {rid: frozenset(aids) for rid, aids in out.items()}


def judged(agents: Iterable[Agent], facts: DaemonFacts, plugin: str) -> dict[str, Judged]:
    """The daemon's verdict on each agent when it publishes one, else Neutron's (alive or dead)."""
    out: dict[str, Judged] = {}
    for a in agents:
        seen = facts.agent(plugin, a.id)
        if seen is not None:
            try:
                verdict = Verdict(seen.verdict)
            except ValueError:
                verdict = Verdict.UNKNOWN
            out[a.id] = Judged(a, verdict, seen.why)
        elif a.alive:
            out[a.id] = Judged(a, Verdict.ALIVE, "Neutron says alive (no daemon's view)")
        else:
            out[a.id] = Judged(a, Verdict.DEAD, "Neutron says dead (no daemon's view)")
    return out
