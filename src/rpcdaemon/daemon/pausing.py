"""The service's side of the control channel: pause, resume, brake release, and the live view it publishes.

``Service.step`` asks ``ControlGate.before_step`` once per check: it reads the last control state the
``control.loop.ControlLoop`` thread fetched (never the broker itself), says each change once in the log
(a WARNING while paused, so an operator sees it; INFO when it ends, with who resumed it or that it
expired) and in the audit trail (``pause``, ``resume``, ``brake-release``, ``brake-restore``, and
``control-reset`` for a ``rpcdaemon control reset`` made while this instance runs), and answers:

- ``moves_allowed``: False while paused, and until the first control state was read (a daemon started
  during a pause must not act before it knows). The service then runs the standby's pass (no write, one
  read per reconcile_interval: the verdicts stay fresh for ``status``), and on the way back every plugin
  starts a new term (a full reconcile first: the cloud changed while it looked away);
- ``brake_released``: the text the plugins' ``brake_released`` gets (None: the brake applies as configured).

``view`` builds the ``control.state.DaemonView`` the loop publishes, from the plugins' last passes; only
while this instance is the active one (a standby or a dry run publishes nothing: ``status`` shows the
acting instance's view); ``presence`` the roll-call entry every instance announces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rpcdaemon import __version__
from rpcdaemon.control.loop import ControlLoop
from rpcdaemon.control.state import AgentView, ControlState, DaemonView, Hold, PluginView, Presence
from rpcdaemon.model import AuditRecord, OutcomeStatus, no_audit
from rpcdaemon.plugins.base import FailoverPlugin

log = logging.getLogger("rpcdaemon")


@dataclass(frozen=True, slots=True)
class StepControl:
    moves_allowed: bool
    brake_released: str | None = None
    paused: Hold | None = None


class ControlGate:
    def __init__(self, loop: ControlLoop | None, plugins: Sequence[FailoverPlugin], *, instance: str,
                 role: Callable[[], str], dry_run: bool, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, audit: AuditRecord = no_audit) -> None:
        self.loop = loop
        self.plugins = list(plugins)
        self.instance = instance
        self._role = role
        self.dry_run = dry_run
        self.clock = clock
        self.wall = wall
        self.audit = audit
        self._pause: Hold | None = None  # the pause in force at the last step
        self._release: Hold | None = None
        self._waiting_said = False
        self._reset_seen: tuple[str, float] | None = None  # (by, at) of the last reset noted
        self.started = wall()
        self.last = StepControl(moves_allowed=loop is None)

    def before_step(self) -> StepControl:
        if self.loop is None:
            self.last = StepControl(moves_allowed=True)
            return self.last
        state = self.loop.current()
        if state is None:
            if not self._waiting_said:
                log.info("control channel: reading the pause state before moving anything")
                self._waiting_said = True
            self.last = StepControl(moves_allowed=False)
            return self.last
        now = self.wall()
        self._note_reset(state)
        pause, release = state.paused(now), state.brake_released(now)
        resumed = self._note_pause(state, pause, now)
        self._note_release(state, release, now)
        if resumed:
            for p in self.plugins:
                p.start_term()  # the cloud changed while we looked away: a full reconcile first
        text = f"released by {release.by} ({release.reason or 'no reason given'})" if release else None
        self.last = StepControl(moves_allowed=pause is None, brake_released=text, paused=pause)
        return self.last

    def _note_pause(self, state: ControlState, pause: Hold | None, now: float) -> bool:
        before = self._pause
        self._pause = pause
        if pause == before:
            return False
        if pause is not None:
            log.warning("PAUSED %s; no automatic moves on any instance until `rpcdaemon resume`%s",
                        pause.describe(now), "" if pause.until is None else " or the end of the pause")
            self.audit("pause", by=pause.by, reason=pause.reason, until=pause.until, since=pause.at)
            return False
        assert before is not None
        if state.event in ("resume", "reset") and state.at >= before.at:
            log.info("resumed by %s after %.0fs of pause; automatic moves again (a full reconcile first)",
                     state.by, max(0.0, now - before.at))
            self.audit("resume", by=state.by, paused_by=before.by, reason=before.reason,
                       paused_s=round(max(0.0, now - before.at), 1), how="command")
        else:
            log.info("pause by %s ended (%s); automatic moves again (a full reconcile first)", before.by,
                     "it expired" if before.until is not None and now >= before.until else "replaced")
            self.audit("resume", by=before.by, paused_by=before.by, reason=before.reason,
                       paused_s=round(max(0.0, now - before.at), 1), how="expired")
        return True

    def _note_release(self, state: ControlState, release: Hold | None, now: float) -> None:
        before = self._release
        self._release = release
        if release == before:
            return
        if release is not None:
            log.warning("mass-failure brake RELEASED %s: dead agents' work moves even when many are dead at once",
                        release.describe(now))
            self.audit("brake-release", by=release.by, reason=release.reason, until=release.until,
                       since=release.at)
            return
        assert before is not None
        how = "command" if state.event in ("restore-brake", "reset") and state.at >= before.at else "expired"
        log.info("mass-failure brake restored (%s)", f"by {state.by}" if how == "command" else "the release expired")
        self.audit("brake-restore", by=state.by if how == "command" else before.by, how=how)

    def _note_reset(self, state: ControlState) -> None:
        """A ``rpcdaemon control reset`` made while this instance runs (one read at its start is older news)."""
        if state.event != "reset" or (state.by, state.at) == self._reset_seen or state.at < self.started:
            return
        self._reset_seen = (state.by, state.at)
        log.info("control state reset by %s (%s): not paused, brake as configured", state.by,
                    state.reason or "no reason given")
        self.audit("control-reset", by=state.by, reason=state.reason)

    def presence(self) -> Presence:
        """This instance's roll-call entry (every role: a standby and a dry run too)."""
        return Presence(instance=self.instance, role=self._role(), at=self.wall(), since=self.started,
                        version=__version__, dry_run=self.dry_run, plugins=tuple(p.name for p in self.plugins))

    def view(self) -> DaemonView | None:
        """The live view to publish now (the control thread calls it), or None when this instance is not
        the acting one."""
        if self.dry_run or self._role() != "active":
            return None
        now = self.clock()
        plugins = []
        for p in self.plugins:
            report = p.last  # replaced whole by the loop thread: one consistent pass
            agents = []
            for aid, j in sorted(report.judged.items(), key=lambda kv: (kv[1].agent.host, kv[0])):
                # The registry's last heartbeat, now (the pass's may be a check_interval old).
                heard = p.registry.last_heard(j.agent.agent_type, j.agent.host)
                heard = heard if heard is not None else j.last_heard
                agents.append(AgentView(id=aid, host=j.agent.host, verdict=j.verdict.value, why=j.why,
                                        heard_ago=round(max(0.0, now - heard), 1) if heard is not None else None))
            brake = report.plan.held[0] if report.plan.braked and report.plan.held else None
            # Still to do: what the last pass planned and did not get done (a paused pass did none of it).
            done = sum(1 for o in report.outcomes if o.status is OutcomeStatus.DONE)
            plugins.append(PluginView(name=p.name, agent_type=p.agent_type, down_time=p.liveness.down_time,
                                      brake=brake, held=tuple(report.plan.held),
                                      pending=max(0, len(report.plan.actions) - done), agents=tuple(agents)))
        return DaemonView(instance=self.instance, at=self.wall(), version=__version__, role="active",
                          dry_run=self.dry_run, paused=self.last.paused, brake_release=self._release,
                          plugins=tuple(plugins))
