"""The daemon's side of the control channel: a thread that reads the control state and publishes the view.

Every ``POLL`` seconds ``ControlLoop`` reads the control state (a pause, a brake release: ``state``) and,
while ``view()`` gives one (the service gives one only while this instance is the active one), publishes
the live view; it also announces this instance on the roll call (``presence()``, every role), and
once more as ``stopped`` when it ends. The check loop only ever reads ``current()``: it never waits on
the broker for it.

Until the first read succeeded, ``current()`` is None and the service moves nothing (``loaded``): a
pause must be known before the first move, also for a daemon started during a pause. A broker outage is
one WARNING and a retry every ``POLL`` seconds with the last state kept (the bus listeners are off the
broker too, so nothing is judged dead meanwhile); a record that cannot be read is one WARNING, the last
state kept. Any other error ends the thread with ``fatal`` set: the service then exits non-zero.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from rpcdaemon.control import POLL
from rpcdaemon.control.channel import ControlChannel
from rpcdaemon.control.state import ControlState, DaemonView, Presence

log = logging.getLogger("rpcdaemon.control")


class ControlLoop(threading.Thread):
    def __init__(self, channel: ControlChannel, *, view: Callable[[], DaemonView | None], stop: threading.Event,
                 poll: float = POLL, presence: Callable[[], Presence] | None = None) -> None:
        super().__init__(name="control", daemon=True)
        self.channel = channel
        self._view = view
        self._presence = presence
        self._stop_event = stop
        self.poll = poll
        self._lock = threading.Lock()
        self._state: ControlState | None = None
        self.fatal: str | None = None
        self._trouble: str | None = None  # what the last WARNING said (said once until it changes)
        self.reads = 0

    def current(self) -> ControlState | None:
        """The last control state read (None before the first successful read)."""
        with self._lock:
            return self._state

    @property
    def loaded(self) -> bool:
        return self.current() is not None

    def run(self) -> None:
        try:
            while True:
                self.tick()
                if self._stop_event.wait(self.poll):
                    break
        except Exception as exc:  # a bug: the daemon must not run on without its control channel
            log.exception("control channel thread failed")
            self.fatal = f"{type(exc).__name__}: {exc}"
        finally:
            self._sign_off()
            self.channel.close()

    def _sign_off(self) -> None:
        """Leave the roll call at once (``stopped``) rather than after its entries' TTL; best effort."""
        if self._presence is None:
            return
        try:
            self.channel.announce(replace(self._presence(), role="stopped"))
        except Exception as exc:  # a broker gone at shutdown: the entries expire by themselves
            log.debug("control channel: no sign-off on the roll call (%s)", exc)

    def tick(self) -> None:
        """One read of the state and one publication of the view (the thread's step; tests call it)."""
        try:
            state = self.channel.read_state()
            view = self._view()
            if view is not None:
                self.channel.publish_view(view)
            if self._presence is not None:
                self.channel.announce(self._presence())
        except ValueError as exc:
            self._say(f"control state not understood ({exc}); keeping the last one")
            if self.current() is None:
                with self._lock:  # a broken record must not keep the daemon from ever acting
                    self._state = ControlState()
            return
        except Exception as exc:
            if not self.channel.is_broker_error(exc):
                raise
            self._say(f"control channel: cannot reach {self.channel.describe()} ({self.channel.explain(exc)});"
                      f" trying again every {self.poll:.0f}s")
            self.channel.reset()
            return
        with self._lock:
            if state is not None or self._state is None:
                self._state = state or ControlState()
        self.reads += 1
        if self._trouble is not None:
            log.info("control channel: reachable again")
            self._trouble = None

    def _say(self, text: str) -> None:
        if text != self._trouble:
            log.warning("%s", text)
            self._trouble = text
