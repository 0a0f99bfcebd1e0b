"""What a failover plugin hears on the bus: the subscriptions it declares, and the news it takes.

Each plugin class declares ``hears`` (a ``Hearing``) and takes the decoded news in ``take``; the service
listens for the union of every plugin's declaration (``union``) and hands each decoded message to every
plugin. Heartbeats are everyone's (the service records them in the registry); the rest is a plugin's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rpcdaemon.broker.link import Subscription
from rpcdaemon.model import BusHints, NetworkChanged, NetworkDeleted

NEUTRON_EXCHANGE = "neutron"
# Where agents' report_state calls go: q-reports-plugin since Neutron 8.0, q-plugin before.
HEARTBEAT_SUBSCRIPTIONS = (
    Subscription(NEUTRON_EXCHANGE, "q-reports-plugin"),
    Subscription(NEUTRON_EXCHANGE, "q-plugin"),
)

# What the bus says about networks and routers (decoded by ``observing.decode``), for the plugins' ``take``.
BusEvent = NetworkDeleted | NetworkChanged | BusHints


@dataclass(frozen=True, slots=True)
class Hearing:
    """The subscriptions of one plugin, by the service's listener that binds them.

    ``agents``: the heartbeats' queue (the heartbeats, and news cheap enough to share it). ``casts``:
    neutron-server's casts to the agents' own topics, which a stock neutron.conf sends (notifications it
    does not): copies in a queue of the daemon's own, Neutron's agent queues untouched. "#", not "*": a
    host name with dots (an FQDN) is several words of a routing key. Their own listener and queue: a
    burst of port casts must never push heartbeats out of the heartbeat queue."""

    agents: tuple[Subscription, ...] = HEARTBEAT_SUBSCRIPTIONS
    casts: tuple[Subscription, ...] = ()


def union(hearings: Iterable[Hearing]) -> Hearing:
    """Every subscription of ``hearings``, once each, in the order they first come."""
    agents: dict[Subscription, None] = {}
    casts: dict[Subscription, None] = {}
    for hearing in hearings:
        agents.update(dict.fromkeys(hearing.agents))
        casts.update(dict.fromkeys(hearing.casts))
    return Hearing(agents=tuple(agents), casts=tuple(casts))
