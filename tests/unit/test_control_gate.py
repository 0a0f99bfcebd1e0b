"""Pause, resume and brake release as the running service honours them (``pausing.ControlGate``).

The real service around the real L3Agent plugin, executor and FakeNeutron (``service_rig.Cloud``), stepped on
a fake clock; the control state comes from a loop stand-in whose ``current()`` the test sets, as the
``ControlLoop`` thread would after reading the broker. Every audit line is checked against the schema.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from tests.kit.audit import read_audit
from tests.unit.service_rig import DOWN, Cloud

from rpcdaemon.control.state import ControlState, Hold
from rpcdaemon.model import OutcomeStatus

TICK = 2.0


class Loop:
    """What the service reads of ``control.loop.ControlLoop``: the last state read (None: not yet)."""

    def __init__(self, state: ControlState | None) -> None:
        self.state = state
        self.ident = None
        self.fatal = None

    def current(self) -> ControlState | None:
        return self.state


def moved(c: Cloud) -> set[str]:
    return {rid for rid, hosts in c.api.router_bindings().items() if "a" not in hosts}


def events(c: Cloud, *names: str) -> list[dict[str, Any]]:
    return [line for line in read_audit(c.path) if line["event"] in names]


def test_a_pause_holds_every_move_and_resume_moves_them(cloud: Callable[..., Cloud],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    now = time.time()
    loop = Loop(ControlState())
    c = cloud(control=loop)
    c.run(2 * DOWN)
    loop.state = ControlState(pause=Hold("kernel upgrade", "alice@ctl-1", now), event="pause", by="alice@ctl-1", at=now)
    c.run(4.0)
    assert c.svc.metrics.registry.get_sample_value("rpcdaemon_paused") == 1
    assert "PAUSED by alice@ctl-1" in c.svc.status_text(c.svc.probe())
    c.speaking.discard("a")
    c.run(3 * DOWN)  # a is long dead: paused, nothing moves
    assert moved(c) == set()
    assert c.svc.plugins[0].last.judged["a"].verdict.value == "dead"  # still judged (status shows it)
    loop.state = ControlState(event="resume", by="bob@ctl-2", at=time.time())
    c.run(3 * TICK)
    assert moved(c) == {"r0", "r1", "r2", "r3"}
    assert c.svc.metrics.registry.get_sample_value("rpcdaemon_paused") == 0
    [pause] = events(c, "pause")
    assert pause["by"] == "alice@ctl-1"
    assert pause["reason"] == "kernel upgrade"
    assert pause["until"] is None
    [resume] = events(c, "resume")
    assert resume["by"] == "bob@ctl-2"
    assert resume["how"] == "command"
    assert resume["paused_by"] == "alice@ctl-1"
    log = caplog.text
    assert "PAUSED by alice@ctl-1, until resumed: kernel upgrade" in log
    assert "resumed by bob@ctl-2" in log



def test_a_pause_with_a_duration_expires_by_itself(cloud: Callable[..., Cloud]) -> None:
    loop = Loop(None)
    c = cloud(control=loop)
    wall = {"now": 1_800_000_000.0}
    c.svc.control.wall = lambda: wall["now"]
    c.speaking.discard("a")
    c.run(3 * DOWN)  # no control state read yet: nothing moves (a pause may be in force)
    assert moved(c) == set()
    loop.state = ControlState(pause=Hold("", "alice@ctl-1", wall["now"], until=wall["now"] + 60),
                              event="pause", by="alice@ctl-1", at=wall["now"])
    c.run(3 * TICK)
    assert moved(c) == set()
    wall["now"] += 61
    c.run(3 * TICK)
    assert moved(c) == {"r0", "r1", "r2", "r3"}
    [resume] = events(c, "resume")
    assert resume["how"] == "expired"


def test_a_released_brake_lets_a_mass_failure_move_and_restores(cloud: Callable[..., Cloud]) -> None:
    loop = Loop(ControlState())
    c = cloud(control=loop)
    c.run(2 * DOWN)
    c.speaking -= {"a", "b"}  # two of three: the brake holds
    c.run(3 * DOWN)
    assert moved(c) == set()
    assert c.svc.plugins[0].last.plan.braked
    now = time.time()
    loop.state = ControlState(brake_release=Hold("two nodes really died", "carol@ctl-3", now, until=now + 600),
                              event="release-brake", by="carol@ctl-3", at=now)
    c.run(3 * TICK)
    assert moved(c) == {"r0", "r1", "r2", "r3"}
    assert {o.status for r in [c.svc.plugins[0].last] for o in r.outcomes} <= {OutcomeStatus.DONE}
    loop.state = replace(loop.state, brake_release=None, event="restore-brake", by="carol@ctl-3", at=time.time())
    c.run(TICK)
    assert c.svc.plugins[0].brake_released is None
    [release] = events(c, "brake-release")
    assert release["by"] == "carol@ctl-3"
    assert release["reason"] == "two nodes really died"
    [restore] = events(c, "brake-restore")
    assert restore["how"] == "command"


def test_the_view_is_the_active_instances_and_says_the_pause(cloud: Callable[..., Cloud]) -> None:
    now = time.time()
    loop = Loop(ControlState(pause=Hold("x", "alice@ctl-1", now), event="pause", by="alice@ctl-1", at=now))
    c = cloud(control=loop)
    c.run(2 * DOWN)
    view = c.svc.control.view()
    assert view is not None
    assert view.role == "active"
    assert view.paused is not None
    assert view.paused.by == "alice@ctl-1"
    [plugin] = view.plugins
    assert {a.id: a.verdict for a in plugin.agents} == {"a": "alive", "b": "alive", "c": "alive"}
    assert all(a.heard_ago is not None and a.heard_ago <= TICK for a in plugin.agents)
    from rpcdaemon.control.state import DaemonView

    assert DaemonView.from_json(view.to_json()) == view


def test_every_instance_announces_itself_on_the_roll_call(cloud: Callable[..., Cloud]) -> None:
    before = time.time()
    c = cloud(control=Loop(ControlState()))
    entry = c.svc.control.presence()
    assert entry.role == "active"  # no leadership in this rig: it always acts
    assert entry.instance == c.svc.control.instance
    assert entry.plugins == ("L3Agent",)
    assert not entry.dry_run
    assert before - 1 <= entry.since <= entry.at <= time.time()
    c.svc.control.dry_run = True  # a dry run announces itself too (it publishes no view)
    assert c.svc.control.presence().dry_run
    assert c.svc.control.view() is None


def test_a_dead_control_thread_ends_the_daemon(cloud: Callable[..., Cloud]) -> None:
    loop = Loop(ControlState())
    c = cloud(control=loop)
    c.svc.listeners = []  # no bus threads in this rig: only the control thread is looked at
    assert c.svc.health() is None
    loop.ident = 1  # type: ignore[assignment]  # started ...
    loop.fatal = "RuntimeError: boom"  # type: ignore[assignment]  # ... and gave up
    assert c.svc.health() == "control channel gave up: RuntimeError: boom"


def test_a_reset_lets_a_daemon_that_read_nothing_move_and_is_audited_once(cloud: Callable[..., Cloud],
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    loop = Loop(None)  # the record on the broker is not understood: no state read yet
    c = cloud(control=loop)
    c.speaking.discard("a")
    c.run(3 * DOWN)
    assert moved(c) == set()  # it may hold a pause: nothing moves
    loop.state = ControlState(event="reset", by="dave@ctl-4", at=time.time(), reason="garbage on the broker")
    c.run(3 * TICK)
    assert moved(c) == {"r0", "r1", "r2", "r3"}
    [reset] = events(c, "control-reset")
    assert (reset["by"], reset["reason"]) == ("dave@ctl-4", "garbage on the broker")
    assert "control state reset by dave@ctl-4 (garbage on the broker): not paused, brake as configured" in caplog.text


def test_a_reset_ends_a_pause_and_a_brake_release_by_command(cloud: Callable[..., Cloud]) -> None:
    now = time.time()
    loop = Loop(None)
    c = cloud(control=loop)
    before = ControlState(event="reset", by="old@ctl-1", at=c.svc.control.started - 60)  # made before it ran
    loop.state = before
    c.run(TICK)
    loop.state = ControlState(pause=Hold("x", "alice@ctl-1", now), brake_release=Hold("y", "carol@ctl-3", now,
                              until=now + 600), event="release-brake", by="carol@ctl-3", at=now)
    c.run(TICK)
    loop.state = ControlState(event="reset", by="dave@ctl-4", at=time.time())
    c.run(2 * TICK)
    [resume] = events(c, "resume")
    assert (resume["by"], resume["how"], resume["paused_by"]) == ("dave@ctl-4", "command", "alice@ctl-1")
    [restore] = events(c, "brake-restore")
    assert (restore["by"], restore["how"]) == ("dave@ctl-4", "command")
    assert [e["by"] for e in events(c, "control-reset")] == ["dave@ctl-4"]  # not the one before its start
