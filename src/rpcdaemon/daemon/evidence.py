"""Gaps in what the daemon heard, and what follows from them: messages the broker dropped from the
heartbeat queue (silence across them proves nothing), casts dropped or missed off the bus (the plugins
cannot know what those said).

The service's check loop asks at each check, with its listeners' counts (``Service.step``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("rpcdaemon")

# A drop this long after the last one is said again (a WARNING), not counted silently.
_SAY_AGAIN_AFTER = 60.0


class EvidenceGaps:
    """The listeners' drop and outage counts at the last check, and when heartbeats may last have been lost."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._drops_seen = 0  # the heartbeat listener's drop count at the last check
        self._gap_at: float | None = None  # when drops were last seen
        self._casts_seen = (0, 0)  # the casts' listener's (drops, outages) at the last check

    def listening_since(self, since: float | None, dropped: int) -> float | None:
        """Since when silence is evidence: the heartbeat listener's link up ``since`` (None: off the bus),
        or later, the last time its drop count (``dropped``, so far) grew."""
        self._note_drops(dropped)
        if since is not None and self._gap_at is not None:
            # Messages dropped from our queue may have been heartbeats: silence since then proves nothing.
            since = max(since, self._gap_at)
        return since

    def _note_drops(self, dropped: int) -> None:
        """The broker dropped messages from the heartbeat queue (it was full): a gap in the evidence.
        Like a bus outage, it restarts the listening window, so that no agent is judged dead on a
        silence that may be our own (Neutron's own verdict, from its own queue, still counts)."""
        if dropped <= self._drops_seen:
            return
        first = self._gap_at is None or self._clock() - self._gap_at > _SAY_AGAIN_AFTER
        self._drops_seen = dropped
        self._gap_at = self._clock()
        if first:
            log.warning("bus: the broker dropped messages from the daemon's queue (%d in all): no agent is judged "
                        "dead on silence alone until a full window has passed without drops", dropped)

    def casts_missed(self, dropped: int, outages: int) -> bool:
        """Casts dropped from their queue, or missed while their listener was off the bus, since the last
        check (``dropped``, ``outages``: the casts' listener's counts so far)?"""
        seen = (dropped, outages)
        if seen == self._casts_seen:
            return False
        self._casts_seen = seen
        return True
