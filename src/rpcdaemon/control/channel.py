"""Reading and writing the control channel's records (``rpcdaemon.control``) through ``ControlLink``.

One ``ControlChannel`` per process and thread: the daemon's ``loop.ControlLoop`` and each command own
theirs. Every method raises on a broker problem (``is_broker_error`` tells which) and on a record that
is not understood (``state.RecordError``, a ``ValueError``; never another exception for it).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from rpcdaemon.broker.connection import Connection
from rpcdaemon.broker.control_link import ControlLink
from rpcdaemon.control import ROLL_MAX, VIEW_TTL, control_queue, roll_queue, view_queue
from rpcdaemon.control.state import ControlState, DaemonView, Presence, roll_call

# A read that finds the queue empty may have met another reader between its get and its requeue (about a
# millisecond; each instance reads every 2 s): look again this many times, a random 20-60 ms apart (so that
# two readers do not keep meeting), before concluding there is no record.
EMPTY_READS = 10
EMPTY_GAP = (0.02, 0.06)


class ControlChannel:
    def __init__(self, factory: Callable[[], Connection], group: str, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._factory = factory
        self.group = group
        self._sleep = sleep
        self.link = ControlLink(factory)

    def describe(self) -> str:
        return self.link.describe()

    def is_broker_error(self, exc: BaseException) -> bool:
        return self.link.is_broker_error(exc)

    def explain(self, exc: BaseException) -> str:
        return self.link.explain(exc)

    def read_state(self) -> ControlState | None:
        """The control state, or None when no record was found (never written, or held by another
        reader through every look)."""
        raw = self._read(control_queue(self.group), durable=True)
        return ControlState.from_json(raw) if raw is not None else None

    def write_state(self, state: ControlState) -> None:
        self.link.write(control_queue(self.group), state.to_json(), durable=True)

    def read_view(self) -> DaemonView | None:
        """The active instance's live view, or None when none is published (no instance acts)."""
        raw = self._read(view_queue(self.group), durable=False)
        return DaemonView.from_json(raw) if raw is not None else None

    def _read(self, queue: str, *, durable: bool) -> bytes | None:
        for attempt in range(EMPTY_READS):
            raw = self.link.read(queue, durable=durable)
            if raw is not None:
                return raw
            if attempt + 1 < EMPTY_READS:
                self._sleep(random.uniform(*EMPTY_GAP))  # spreads the retries of readers that met
        return None

    def publish_view(self, view: DaemonView) -> None:
        self.link.write(view_queue(self.group), view.to_json(), durable=False, ttl=VIEW_TTL)

    def announce(self, presence: Presence) -> None:
        """This instance's roll-call entry (every ``POLL`` seconds, and ``stopped`` at a clean exit)."""
        self.link.write(roll_queue(self.group), presence.to_json(), durable=False, ttl=VIEW_TTL, keep=ROLL_MAX)

    def read_roll(self, now: float) -> tuple[list[Presence], int]:
        """The instances running (``state.roll_call``) and how many entries could not be read. A reader
        that meets another one may see fewer for that moment: the list is what the roll call showed."""
        entries, unreadable = [], 0
        for raw in self.link.read_all(roll_queue(self.group), keep=ROLL_MAX):
            try:
                entries.append(Presence.from_json(raw))
            except ValueError:
                unreadable += 1
        return roll_call(entries, now, VIEW_TTL), unreadable

    def reset(self) -> None:
        """Forget a broken connection (without talking to a broker that may be gone); the next call reconnects."""
        self.link.discard()
        self.link = ControlLink(self._factory)

    def close(self) -> None:
        self.link.close()
