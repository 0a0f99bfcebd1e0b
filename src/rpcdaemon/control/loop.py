"""The daemon's side of the control channel: a thread that reads the control state and publishes the view.

Every ``POLL`` seconds ``ControlLoop`` reads the control state (a pause, a brake release: ``state``) and,
while ``view()`` gives one (the service gives one only while this instance is the active one), publishes
the live view; it also announces this instance on the roll call (``presence()``, every role), and
once more as ``stopped`` when it ends. The check loop only ever reads ``current()``: it never waits on
the broker for it.

Until the first read succeeded, ``current()`` is None and the service moves nothing (``loaded``): a
pause must be known before the first move, also for a daemon started during a pause. A broker outage is
one WARNING and a retry every ``POLL`` seconds with the last state kept (the bus listeners are off the
broker too, so nothing is judged dead meanwhile). A record that is not understood (``state.RecordError``:
garbage, a forgery, a newer version's) is one WARNING per distinct problem, not one per read: the last
good state is kept, and before any was read nothing moves (the record may hold a pause) until
``rpcdaemon control reset`` or ``resume`` writes a fresh one; the view and the roll call go on meanwhile.
Any other error ends the thread with ``fatal`` set: the service then exits non-zero.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from rpcdaemon.control import POLL
from rpcdaemon.control.channel import ControlChannel
from rpcdaemon.control.state import ControlState, DaemonView, Presence, RecordError

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
        self._record_trouble: str | None = None  # what is wrong with the record on the broker, as last said
        self.reads = 0  # good reads of the control state
        self.bad_reads = 0  # reads that found a record not understood

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
            self._read()
            view = self._view()
            if view is not None:
                self.channel.publish_view(view)
            if self._presence is not None:
                self.channel.announce(self._presence())
        except Exception as exc:
            if not self.channel.is_broker_error(exc):
                raise
            self._say(f"control channel: cannot reach {self.channel.describe()} ({self.channel.explain(exc)});"
                      f" trying again every {self.poll:.0f}s")
            self.channel.reset()
            return
        if self._trouble is not None:
            log.info("control channel: reachable again")
            self._trouble = None

    def _read(self) -> None:
        try:
            state = self.channel.read_state()
        except RecordError as exc:
            self.bad_reads += 1
            if exc.problem != self._record_trouble:
                self._record_trouble = exc.problem
                held = ("keeping the last one read" if self.current() is not None else
                        "no automatic moves until it is (it may hold a pause)")
                log.warning("control state on the broker is not understood (%s); %s: `rpcdaemon control reset` "
                            "writes a fresh one", exc.problem, held)
            return
        with self._lock:
            if state is not None or self._state is None:
                self._state = state or ControlState()
        self.reads += 1
        if state is not None and self._record_trouble is not None:
            log.info("control state on the broker understood again")
            self._record_trouble = None

    def _say(self, text: str) -> None:
        if text != self._trouble:
            log.warning("%s", text)
            self._trouble = text
