"""Hypothesis strategies for the planner property tests: random judged fleets, routers, networks, bindings.

Used by ``test_plan_l3.py`` and ``test_plan_dhcp.py``. A fleet is built directly from verdicts (the
planners never see heartbeats), so every combination of mode, admin state, availability zone and
verdict is reachable. Bindings are realistic for Neutron (a non-HA router has at most one central
host, a distributed router's central host is a ``dvr_snat`` agent), with an occasional host id the
fleet does not list, as happens when Neutron lists an agent of another type or one just deleted.

Also home of the small helpers both planner test modules share: applying a plan to bindings and the
independent restatement of "who may host what" that the properties check against.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from rpcdaemon.deciding.l3 import Plan
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.model import (
    DHCP_AGENT,
    L3_AGENT,
    MODE_DVR,
    MODE_DVR_SNAT,
    MODE_LEGACY,
    ActionKind,
    Agent,
    Network,
    Router,
)

AZS = ("az1", "az2", "az3")
# An id that no fleet lists: a binding to it is a host the planner does not know.
STRANGER = "stranger-agent"

Bindings = dict[str, frozenset[str]]

# Sized for a fast unit suite; RPCD_PROPERTY_EXAMPLES=2000 for a thorough run.
PROPS = settings(
    max_examples=int(os.environ.get("RPCD_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class L3World:
    judged: dict[str, Judged]
    routers: dict[str, Router]
    bindings: Bindings


@dataclass(frozen=True)
class DhcpWorld:
    judged: dict[str, Judged]
    networks: dict[str, Network]
    bindings: Bindings


verdicts = st.sampled_from([Verdict.ALIVE, Verdict.ALIVE, Verdict.DEAD, Verdict.WARMING, Verdict.UNKNOWN])
zones = st.one_of(st.none(), st.sampled_from(AZS))
hints = st.one_of(st.just(()), st.lists(st.sampled_from(AZS), min_size=1, max_size=2, unique=True).map(tuple))


def judged_of(agent: Agent, verdict: Verdict) -> Judged:
    return Judged(agent, verdict, f"test says {verdict.value}")


@st.composite
def l3_agents(draw: st.DrawFn, min_size: int = 1, max_size: int = 10) -> dict[str, Judged]:
    n = draw(st.integers(min_size, max_size))
    out: dict[str, Judged] = {}
    for i in range(n):
        agent = Agent(
            id=f"l3-{i}",
            agent_type=L3_AGENT,
            host=f"net-{i}",
            admin_state_up=draw(st.integers(0, 3)) > 0,  # mostly up
            alive=draw(st.booleans()),
            agent_mode=draw(st.sampled_from([None, MODE_LEGACY, MODE_LEGACY, MODE_DVR, MODE_DVR_SNAT])),
            availability_zone=draw(zones),
        )
        out[agent.id] = judged_of(agent, draw(verdicts))
    return out


def is_central(agent: Agent) -> bool:
    """May host a router's central part (independent restatement of the planner's rule)."""
    return agent.agent_mode in (None, MODE_LEGACY, MODE_DVR_SNAT)


def may_host(agent: Agent, router: Router) -> bool:
    mode_ok = agent.agent_mode == MODE_DVR_SNAT if router.distributed else is_central(agent)
    zone_ok = not router.availability_zone_hints or agent.availability_zone in router.availability_zone_hints
    return mode_ok and zone_ok


@st.composite
def l3_worlds(draw: st.DrawFn, max_agents: int = 10, max_routers: int = 25) -> L3World:
    judged = draw(l3_agents(max_size=max_agents))
    agents = [j.agent for j in judged.values()]
    central = sorted(a.id for a in agents if is_central(a))
    snat = sorted(a.id for a in agents if a.agent_mode == MODE_DVR_SNAT)
    dvr = sorted(a.id for a in agents if a.agent_mode == MODE_DVR)
    routers: dict[str, Router] = {}
    bindings: Bindings = {}
    for i in range(draw(st.integers(0, max_routers))):
        router = Router(
            id=f"r-{i:03d}",
            distributed=draw(st.booleans()),
            ha=draw(st.integers(0, 4)) == 0,
            availability_zone_hints=draw(hints),
        )
        pool = snat if router.distributed else central
        hosts: set[str] = set()
        if pool and draw(st.integers(0, 5)) > 0:  # mostly hosted
            hosts.add(draw(st.sampled_from(pool)))
        if router.ha and pool:
            hosts |= set(draw(st.lists(st.sampled_from(pool), max_size=2)))
        if router.distributed and dvr:
            hosts |= set(draw(st.lists(st.sampled_from(dvr), max_size=2)))
        if not hosts and draw(st.integers(0, 9)) == 0:
            hosts.add(STRANGER)
        routers[router.id] = router
        if hosts:
            bindings[router.id] = frozenset(hosts)
    # A binding of a router the router list no longer has (deleted between the two reads).
    if draw(st.booleans()) and central:
        bindings["r-deleted"] = frozenset({central[0]})
    return L3World(judged, routers, bindings)


@st.composite
def dhcp_worlds(draw: st.DrawFn, max_agents: int = 8, max_networks: int = 20) -> DhcpWorld:
    judged: dict[str, Judged] = {}
    for i in range(draw(st.integers(1, max_agents))):
        agent = Agent(
            id=f"dhcp-{i}",
            agent_type=DHCP_AGENT,
            host=f"net-{i}",
            admin_state_up=draw(st.integers(0, 3)) > 0,
            alive=draw(st.booleans()),
            availability_zone=draw(zones),
        )
        judged[agent.id] = judged_of(agent, draw(verdicts))
    ids = sorted(judged)
    networks: dict[str, Network] = {}
    bindings: Bindings = {}
    for i in range(draw(st.integers(0, max_networks))):
        network = Network(
            id=f"n-{i:03d}", dhcp_enabled=draw(st.integers(0, 4)) > 0, availability_zone_hints=draw(hints)
        )
        networks[network.id] = network
        hosts = frozenset(draw(st.lists(st.sampled_from(ids), max_size=3)))
        if hosts:
            bindings[network.id] = hosts
    for i in range(draw(st.integers(0, 2))):  # deleted networks still bound somewhere
        hosts = frozenset(draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3)))
        bindings[f"gone-{i}"] = hosts
    return DhcpWorld(judged, networks, bindings)


def apply_plan(plan: Plan, bindings: Mapping[str, frozenset[str]]) -> Bindings:
    """What Neutron's bindings look like once every action of ``plan`` succeeded."""
    out = dict(bindings)
    for a in plan.actions:
        hosts = set(out.get(a.resource_id, frozenset()))
        if a.kind in (ActionKind.MOVE_ROUTER, ActionKind.UNBIND_NETWORK):
            assert a.source is not None
            hosts.discard(a.source.id)
        if a.kind in (ActionKind.MOVE_ROUTER, ActionKind.BIND_ROUTER, ActionKind.BIND_NETWORK):
            assert a.target is not None
            hosts.add(a.target.id)
        if hosts:
            out[a.resource_id] = frozenset(hosts)
        else:
            out.pop(a.resource_id, None)
    return out


def hosted_counts(bindings: Mapping[str, frozenset[str]]) -> dict[str, int]:
    """How many networks (or routers) each agent id hosts in ``bindings``."""
    out: dict[str, int] = {}
    for hosts in bindings.values():
        for aid in hosts:
            out[aid] = out.get(aid, 0) + 1
    return out
