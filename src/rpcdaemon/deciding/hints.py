"""Which bus hints need a targeted re-read from the API, and when to reconcile instead.

Pure. The DHCPAgent and L3Agent plugins call ``plan_refresh`` at the start of a pass with the hints
taken from the bus since the last one (neutron-server's casts to the agents' own topics, copied to
the daemon's queue) and their cached view. A hint the cache already explains is dropped: the
``router_added_to_agent`` that the daemon's own bind caused, the ``network_delete_end`` of its own
unbind, the ``routers_updated`` of a router whose host it knows. A failover of 1,000 routers therefore
costs no extra reads. What is left is re-read one resource at a time; more than ``limit`` distinct
resources (a bulk creation, or a flood of forged casts) is one full reconcile instead.

Everything here came off the bus and is untrusted: a hint can only make the daemon *read*, never act.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from rpcdaemon.model import HintKind

_NOBODY: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Hint:
    """One hint about one resource (a network or a router), as the planner needs it."""

    resource_id: str
    host: str | None
    kind: HintKind
    method: str = ""


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    """``refresh``: resource ids to re-read, in the order first heard; ``full``: reconcile instead;
    ``explained``: hints dropped because the cache already says so; ``why``: the first unexplained
    hint of each id in ``refresh`` (for the log)."""

    refresh: tuple[str, ...] = ()
    full: bool = False
    explained: int = 0
    why: Mapping[str, Hint] = field(default_factory=dict)


def explained(
    hint: Hint,
    *,
    known: Collection[str],
    settled: Collection[str],
    bindings: Mapping[str, frozenset[str]],
    agents_by_host: Mapping[str, str],
) -> bool:
    """Whether the cache already agrees with what ``hint`` says.

    ``known``: resources in the cache; ``settled``: those whose cached details a change hint cannot
    alter in a way that matters (DHCP: networks already DHCP-enabled; L3: every known router);
    ``bindings``: resource -> agent ids; ``agents_by_host``: the agents this plugin places onto, by host.
    """
    hosts = bindings.get(hint.resource_id, _NOBODY)
    agent = agents_by_host.get(hint.host) if hint.host is not None else None
    if hint.kind is HintKind.PLACED:
        return hint.resource_id in known and agent is not None and agent in hosts
    if hint.kind is HintKind.REMOVED:
        return agent is not None and agent not in hosts
    if hint.kind is HintKind.DELETED:
        return hint.resource_id not in known and not hosts
    # CHANGED: nothing new if the details are settled and the cache has the host it was told to; told
    # to nobody in particular, if it has some host at all; told to a host with no agent this plugin
    # places onto (a DVR compute node's router part), nothing it places changed.
    if hint.resource_id not in settled:
        return False
    if hint.host is None:
        return bool(hosts)
    return agent is None or agent in hosts


def plan_refresh(
    hints: Iterable[Hint],
    *,
    known: Collection[str],
    settled: Collection[str],
    bindings: Mapping[str, frozenset[str]],
    agents_by_host: Mapping[str, str],
    limit: int,
) -> RefreshPlan:
    """The resources to re-read for ``hints`` (see the module docstring); ``limit`` >= 0."""
    why: dict[str, Hint] = {}
    dropped = 0
    for hint in hints:
        if hint.resource_id in why:
            continue  # one read settles every hint about it
        if explained(hint, known=known, settled=settled, bindings=bindings, agents_by_host=agents_by_host):
            dropped += 1
            continue
        why[hint.resource_id] = hint
        if len(why) > limit:
            return RefreshPlan(full=True, explained=dropped)
    return RefreshPlan(refresh=tuple(why), explained=dropped, why=why)
