"""The agent registry: what the Neutron API lists, merged with what the bus hears.

The bus listener's callback calls ``record`` (cheap, under a short lock); the plugins' check loop
calls ``observations`` to get an immutable snapshot for the pure deciders, and ``replace_agents``
after each reconcile with the Neutron API. Times are the daemon's own monotonic clock.

Hysteresis input: ``revived_at`` is set when an agent speaks again after a silence longer than
``down_time`` that the daemon itself witnessed while listening. A silence that overlaps a bus outage
is not witnessed, so a broker restart never makes every agent look "just revived".

A *new* agent is not a revived one: a key never heard before that was neither listed at the first
reconcile nor listed by Neutron as dead since (an agent that registered while the daemon runs) gets
``new_beats``, the times of its recent heartbeats, instead of ``revived_at``; the deciders make it a
target once it has been heard steadily (``deciding.liveness.heard_steadily``). Before the first
listing every key counts as known, so start-up is never more eager than before. A start_flag
(the agent restarted) inside that first run starts the run again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Agent, Heartbeat

# The heartbeat ``configurations`` key that counts what an agent of each type hosts.
LOAD_KEYS = {DHCP_AGENT: "networks", L3_AGENT: "routers"}


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything known about one agent at one instant."""

    agent: Agent
    last_heard: float | None = None
    revived_at: float | None = None
    # Set only for a new agent (see the module docstring): its recent heartbeat times, oldest first.
    new_beats: tuple[float, ...] | None = None
    heartbeat: Heartbeat | None = field(default=None, compare=False)


@dataclass(slots=True)
class _Heard:
    last: Heartbeat
    revived_at: float | None
    new_beats: tuple[float, ...] | None = None


# Heartbeats kept per new agent: enough to show a steady run at any sane report rate, bounded
# against a host that floods the bus.
_BEATS_KEPT = 32


class AgentRegistry:
    """Thread-safe merge of API agents and bus heartbeats, keyed by (agent type, host)."""

    def __init__(self, down_time: float) -> None:
        self._down_time = down_time
        self._lock = threading.Lock()
        self._agents: dict[tuple[str, str], Agent] = {}
        self._heard: dict[tuple[str, str], _Heard] = {}
        self._listening_since: float | None = None
        # Hosts heard that the API did not list, not yet taken by a plugin. Bounded: a key is added
        # once per heartbeat source, and ``replace_agents`` drops stale unknown sources.
        self._unknown: set[tuple[str, str]] = set()
        # Keys whose first heartbeat is a return, not a birth: listed at the first reconcile, or
        # listed by Neutron as dead. None until the first listing (then every key counts as known).
        self._known: set[tuple[str, str]] | None = None
        # When each listed agent last said start_flag (it restarted): refusals of it are forgotten then.
        self._started: dict[tuple[str, str], float] = {}
        # Last load count per listed agent key, and the keys whose count changed since the last take.
        # Both bounded by the cloud: only keys the API lists are kept.
        self._loads: dict[tuple[str, str], int] = {}
        self._load_changed: set[tuple[str, str]] = set()

    # -- fed by the bus thread -------------------------------------------------------------------
    def set_listening(self, since: float | None) -> None:
        """The bus link state: connected since ``since`` (monotonic), or None while disconnected."""
        with self._lock:
            self._listening_since = since

    def record(self, hb: Heartbeat) -> None:
        key = hb.key
        with self._lock:
            prior = self._heard.get(key)
            revived_at = prior.revived_at if prior is not None else None
            new_beats = prior.new_beats if prior is not None else None
            if prior is None and self._known is not None and key not in self._known:
                new_beats = (hb.received_at,)  # never heard, never listed before: born, not back
            else:
                if self._listening_since is not None:
                    # Start of the silence we witnessed: our last hearing, or when we began listening.
                    witnessed_from = self._listening_since
                    if prior is not None and prior.last.received_at > witnessed_from:
                        witnessed_from = prior.last.received_at
                    if hb.received_at - witnessed_from > self._down_time:
                        revived_at = hb.received_at
                        new_beats = None  # back after a witnessed silence: a returning agent now
                if new_beats is not None:
                    new_beats = (hb.received_at,) if hb.start_flag else (*new_beats, hb.received_at)[-_BEATS_KEPT:]
            self._heard[key] = _Heard(hb, revived_at, new_beats)
            if hb.start_flag and key in self._agents:
                self._started[key] = hb.received_at
            if key not in self._agents:
                self._unknown.add(key)
            else:
                self._note_load(key, hb)

    def _note_load(self, key: tuple[str, str], hb: Heartbeat) -> None:
        """Under the lock: remember the agent's load count; note a change (ints only: junk is ignored)."""
        load_key = LOAD_KEYS.get(key[0])
        count = hb.configurations.get(load_key) if load_key else None
        if type(count) is not int:  # exact type: a bool is an int subclass, and no count
            return
        prior = self._loads.get(key)
        self._loads[key] = count
        if prior is not None and prior != count:
            self._load_changed.add(key)

    # -- fed by the reconcile --------------------------------------------------------------------
    def replace_agents(self, agents: list[Agent], now: float) -> None:
        """The Neutron API's full agent list; agents missing from it are forgotten (deleted).

        Heartbeats from hosts the API does not list are kept a while (the agent may be registering)
        but dropped once stale, so junk host names cannot grow the registry without bound.
        """
        fresh = {a.key: a for a in agents}
        horizon = now - 10 * self._down_time
        with self._lock:
            self._agents = fresh
            self._note_known(agents, first=self._known is None)
            self._heard = {
                k: v for k, v in self._heard.items() if k in fresh or v.last.received_at > horizon
            }
            self._unknown = {k for k in self._unknown if k not in fresh and k in self._heard}
            self._started = {k: v for k, v in self._started.items() if k in fresh}
            self._loads = {k: v for k, v in self._loads.items() if k in fresh}
            self._load_changed &= fresh.keys()

    def update_agents(self, agents: list[Agent]) -> None:
        """Refresh some agents (e.g. a fresh second opinion) without forgetting the others."""
        with self._lock:
            for a in agents:
                self._agents[a.key] = a
            self._note_known(agents, first=self._known is None)

    def _note_known(self, agents: list[Agent], *, first: bool) -> None:
        """Under the lock: the first listing makes all its agents known; later, the dead ones."""
        # Keys come from Neutron's listing, never from the bus, so this set is bounded by the cloud.
        known = self._known if self._known is not None else set()
        known.update(a.key for a in agents if first or not a.alive)
        self._known = known

    # -- read by the deciders --------------------------------------------------------------------
    def take_unknown_heard(self) -> bool:
        """True once after a heartbeat from an agent the API did not list: time for a reconcile."""
        return bool(self.take_unknown())

    def take_unknown(self, agent_type: str | None = None) -> list[tuple[str, str]]:
        """The (agent type, host) keys of ``agent_type`` heard since the last take that the API does
        not list, sorted; each is returned once per take. The plugins rate-limit what they do about it:
        anyone who can publish on the bus can invent host names."""
        with self._lock:
            taken = {k for k in self._unknown if agent_type is None or k[0] == agent_type}
            self._unknown -= taken
            return sorted(taken)

    def take_load_changes(self, agent_type: str) -> dict[str, int]:
        """Host -> new load count of the ``agent_type`` agents whose count changed since the last take."""
        with self._lock:
            taken = {k for k in self._load_changed if k[0] == agent_type}
            self._load_changed -= taken
            return {k[1]: self._loads[k] for k in taken if k in self._loads}

    def observations(self, agent_type: str | None = None) -> list[Observation]:
        with self._lock:
            out = []
            for key, agent in self._agents.items():
                if agent_type is not None and agent.agent_type != agent_type:
                    continue
                heard = self._heard.get(key)
                if heard is None:
                    out.append(Observation(agent))
                else:
                    out.append(Observation(agent, heard.last.received_at, heard.revived_at,
                                           heard.new_beats, heard.last))
            return out

    def restarted_at(self, agent_type: str, host: str) -> float | None:
        """When the agent's last heartbeat with ``start_flag`` (a restart) arrived, if one was heard."""
        with self._lock:
            return self._started.get((agent_type, host))

    def last_heard(self, agent_type: str, host: str) -> float | None:
        with self._lock:
            heard = self._heard.get((agent_type, host))
            return heard.last.received_at if heard is not None else None

    def agent(self, agent_id: str) -> Agent | None:
        with self._lock:
            for a in self._agents.values():
                if a.id == agent_id:
                    return a
            return None

    def heard_hosts(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return {k: v.last.received_at for k, v in self._heard.items()}
