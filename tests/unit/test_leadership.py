"""Several instances, one acts: the leadership lease, the fence in front of Neutron, and the service's roles.

``Leadership`` is stepped by hand on an injected clock against ``fake_lock.SharedLock``, an in-memory lock server
with the semantics of the real backends (one holder; a holder whose lease lapsed may find the lock
given away). The fence wraps the real ``FakeNeutron``; the executor and the plugins are the real ones.
The real broker and Redis backends are in ``tests/component/test_leader_lock.py``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.kit.clock import Clock
from tests.kit.service import make_service
from tests.unit.fake_lock import LEASE, FakeBackend, SharedLock, leader

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.acting.watched import WatchedAPI
from rpcdaemon.acting.write_guard import NOT_ACTIVE, Fenced, FencedNeutron
from rpcdaemon.config.settings import ConfigError, Settings, load_settings, parse_settings
from rpcdaemon.coordination.leader import MAX_UNEXPECTED, Leadership, Role
from rpcdaemon.daemon import wiring
from rpcdaemon.daemon.plugin_factory import AgentPluginConfig, build_plugin
from rpcdaemon.daemon.service import Service
from rpcdaemon.deciding.liveness import LivenessPolicy, Verdict
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import L3_AGENT, Action, ActionKind, Heartbeat, OutcomeStatus
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import Timing
from rpcdaemon.telemetry.metrics import Metrics

START = 1000.0


# -- the lease ---------------------------------------------------------------------------------------


def test_the_lease_holds_for_3_s_after_the_last_confirmation_sent_and_not_a_moment_longer() -> None:
    clock, lock = Clock(), SharedLock()
    a, _ = leader(lock, "a", clock)
    assert a.role() is Role.STARTING
    assert not a.is_leader()
    a.step()
    assert a.role() is Role.ACTIVE
    assert a.is_leader(START + 2.99)
    assert not a.is_leader(START + LEASE)  # no confirmation since: a frozen thread is no leader
    clock.now = START + 1.0
    a.step()  # confirmed: the lease now runs from this confirmation
    assert a.is_leader(START + 3.99)
    assert not a.is_leader(START + 4.0)


def test_an_instance_frozen_past_its_lease_wakes_as_no_leader_and_its_confirmation_fails() -> None:
    clock, lock = Clock(), SharedLock()
    a, _ = leader(lock, "a", clock)
    b, _ = leader(lock, "b", clock)
    a.step()
    b.step()
    assert (a.role(), b.role()) == (Role.ACTIVE, Role.STANDBY)
    clock.now += 10.0  # SIGSTOP: a's thread did not run; meanwhile the backend let a's lock go
    lock.holder = None
    b.step()
    assert b.is_leader()
    assert not a.is_leader()  # before its thread runs again: the lease alone says no
    a.step()  # SIGCONT: its confirmation finds the lock gone
    assert a.role() is Role.STANDBY
    assert b.is_leader() and lock.holder == "b"  # noqa: PT018 (one moment, two facts)


def test_a_confirmation_slower_than_the_lease_gives_the_lock_up() -> None:
    clock, lock = Clock(), SharedLock()
    a, backend = leader(lock, "a", clock)
    a.step()
    clock.now += 1.0
    backend.confirm_takes = 3.5  # the backend still says "yours", but the lease ran out meanwhile
    a.step()
    assert not a.is_leader()
    assert lock.holder is None, "a lapsed lease must release the lock, not keep it"
    assert backend.released == 1


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "frozen"]), st.floats(0.0, 2.5)), max_size=80))
def test_two_instances_never_both_lead_when_the_expiry_exceeds_the_lease(
    rounds: list[tuple[str, float]],
) -> None:
    """Any order of rounds, any pauses (a frozen process runs no round): with the backend's expiry
    (4 s) longer than the lease (3 s), never two leaders at any instant."""
    clock = Clock()
    lock = SharedLock(clock, expiry=4.0)
    pair = {name: leader(lock, name, clock)[0] for name in ("a", "b")}
    for who, pause in rounds:
        if who in pair:
            pair[who].step()
        for _ in range(5):  # look at several instants of the pause
            assert sum(x.is_leader() for x in pair.values()) <= 1
            clock.now += pause / 5


def test_with_an_expiry_shorter_than_the_lease_the_invariant_breaks() -> None:
    """The same rig with the invariant violated (expiry 2 s < lease 3 s): two leaders. The property
    above depends on the invariant, not on luck."""
    clock = Clock()
    lock = SharedLock(clock, expiry=2.0)
    a, _ = leader(lock, "a", clock)
    b, _ = leader(lock, "b", clock)
    a.step()
    clock.now += 2.5  # a frozen for 2.5 s: the backend expired it, its lease has not run out
    b.step()
    assert a.is_leader() and b.is_leader()  # noqa: PT018


def test_role_changes_are_one_info_line_each_and_reach_callbacks_and_wait_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon.leadership")
    clock, lock = Clock(), SharedLock()
    a, _ = leader(lock, "a", clock)
    b, _ = leader(lock, "b", clock)
    seen: list[Role] = []
    b.on_change(seen.append)
    a.step()
    b.step()
    assert b.wait_changed(0) is True
    clock.now += 1
    b.step()  # still standby: no new line, no wake-up
    assert b.wait_changed(0) is False
    lock.holder = None
    b.step()
    assert seen == [Role.STANDBY, Role.ACTIVE]
    lines = [r.getMessage() for r in caplog.records if r.name == "rpcdaemon.leadership.b"]
    assert lines == [
        "leadership: this instance is now STANDBY (lock rpcdaemon.leader.test on fake: held by another instance)",
        "leadership: this instance is now ACTIVE (lock rpcdaemon.leader.test on fake)",
    ]


def test_an_unreachable_backend_is_retried_for_ever_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock, lock = Clock(), SharedLock()
    a, _ = leader(lock, "a", clock)
    a.step()
    lock.down = True
    for _ in range(3 * MAX_UNEXPECTED):
        clock.now += 1
        a.step()
    assert a.role() is Role.STANDBY
    assert a.fatal is None and a.problem() is None  # noqa: PT018
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot reach fake: BackendDown: connection refused" in warnings[0].getMessage()
    lock.down = False
    a.step()
    assert a.is_leader()


def test_a_bug_in_the_lock_thread_is_fatal_after_a_few_and_the_service_exits_non_zero() -> None:
    clock, lock = Clock(), SharedLock()
    a, backend = leader(lock, "a", clock)
    backend.bug = KeyError("boom")
    for _ in range(MAX_UNEXPECTED):
        a.step()
    assert a.fatal is not None
    assert not a.is_leader()
    svc = make_service(clock=clock, leadership=a)
    problem = svc.health()
    assert problem is not None
    assert "leadership lock rpcdaemon.leader.test on fake" in problem
    assert "5 unexpected errors in a row" in problem


def test_the_lock_thread_dying_is_reported_not_silent(caplog: pytest.LogCaptureFixture) -> None:
    class Dying(FakeBackend):
        def acquire(self) -> bool:
            raise SystemExit("the thread dies")  # not an Exception: escapes step()

    clock, lock = Clock(), SharedLock()
    a = Leadership(Dying(lock, "a", clock), clock=clock)
    a.start()
    deadline = time.monotonic() + 5
    while a.problem() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.problem() is not None
    assert "the lock thread failed: SystemExit: the thread dies" in str(a.problem())
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    a.close()


def test_close_releases_the_lock_so_another_takes_it_at_once() -> None:
    clock, lock = Clock(), SharedLock()
    a, _ = leader(lock, "a", clock)
    b, _ = leader(lock, "b", clock)
    a.step()
    b.step()
    a.close()
    assert not a.is_leader()
    b.step()
    assert b.is_leader()


# -- the fence ---------------------------------------------------------------------------------------


def _neutron() -> FakeNeutron:
    api = FakeNeutron()
    api.add_agent(L3_AGENT, "host-a", agent_id="a")
    api.add_agent(L3_AGENT, "host-b", agent_id="b")
    api.add_router(router_id="r1")
    api.place_router("r1", "a")
    return api


def test_the_fence_refuses_every_write_while_not_active_and_lets_reads_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rpcdaemon.fence")
    api = _neutron()
    active = [False]
    fenced = FencedNeutron(api, lambda: active[0])
    before = api.router_bindings()
    writes: list[Callable[[], None]] = [
        lambda: fenced.unbind_router("a", "r1"), lambda: fenced.bind_router("b", "r1"),
        lambda: fenced.bind_network("b", "n1"), lambda: fenced.unbind_network("a", "n1"),
    ]
    for write in writes:
        with pytest.raises(Fenced, match=NOT_ACTIVE):
            write()
    assert fenced.refused == 4
    assert api.router_bindings() == before
    assert not any(method.startswith(("bind_", "unbind_")) for method in api.calls)
    assert fenced.routers_on_agent("a") == ["r1"]  # reads pass
    assert not [r for r in caplog.records if r.getMessage().startswith("API write:")]
    active[0] = True
    fenced.unbind_router("a", "r1")
    fenced.bind_router("b", "r1")
    assert api.router_bindings() == {"r1": frozenset({"b"})}
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("API write:")] == [
        "API write: unbind router r1 from agent a", "API write: bind router r1 to agent b"]


def test_the_fence_has_every_method_of_the_neutron_interface_and_fences_every_write() -> None:
    members = {name for name in vars(NeutronAPI) if not name.startswith("_")}
    assert members <= set(vars(FencedNeutron))
    writes = {name for name in members if name.startswith(("bind_", "unbind_"))}
    assert writes == {"bind_router", "unbind_router", "bind_network", "unbind_network"}
    fenced = FencedNeutron(_neutron(), lambda: False)
    for name in writes:
        with pytest.raises(Fenced):
            getattr(fenced, name)("a", "r1")


def test_the_executor_reports_a_fenced_action_skipped_not_failed_and_does_not_retry_it() -> None:
    api = _neutron()
    writes_allowed = [1]  # the unbind passes, then this instance is demoted before the bind

    def may_write() -> bool:
        writes_allowed[0] -= 1
        return writes_allowed[0] >= 0

    executor = Executor(FencedNeutron(api, may_write), ExecutorPolicy(workers=1, attempts=3, backoff_min=0,
                                                                      backoff_max=0), stop=threading.Event())
    try:
        a, b = api.agent("a"), api.agent("b")
        move = Action(ActionKind.MOVE_ROUTER, "r1", source=a, target=b)
        [outcome] = executor.run([move])
        assert outcome.status is OutcomeStatus.SKIPPED
        assert NOT_ACTIVE in outcome.detail
        assert api.calls["bind_router"] == 0  # fenced: never sent, never retried
        assert api.calls["unbind_router"] == 1
        [again] = executor.run([Action(ActionKind.BIND_ROUTER, "r1", target=b)])
        assert again.status is OutcomeStatus.SKIPPED
    finally:
        executor.close()


# -- the service: standby, promotion, demotion -------------------------------------------------------


TIMING = Timing(reconcile_interval=60.0, retry_reconcile_after=10.0, target_fresh=75.0, opinion_interval=2.0)
LIVENESS = LivenessPolicy(down_time=75.0, startup_grace=75.0, revive_hold=120.0)


def _service(api: FakeNeutron, leadership: Leadership | None, clock: Clock,
             registry: AgentRegistry | None = None) -> Service:
    cfg = AgentPluginConfig(liveness=LIVENESS, timing=TIMING, executor=ExecutorPolicy(workers=1, backoff_min=0,
                            backoff_max=0), brake=_brake(), max_moves=100)
    may_write = leadership.is_leader if leadership is not None else (lambda: True)
    registry = registry or AgentRegistry(75.0)
    holder: dict[str, Service] = {}
    plugin = build_plugin("L3Agent", FencedNeutron(api, may_write), registry, cfg,
                          bus_since=lambda: holder["svc"].bus_since(), stop=threading.Event(), clock=clock)
    svc = make_service(registry=registry, plugins=[plugin], clock=clock, metrics=Metrics(), leadership=leadership)
    holder["svc"] = svc
    return svc


def _brake():  # type: ignore[no-untyped-def]
    from rpcdaemon.deciding.liveness import BrakePolicy

    return BrakePolicy()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    made: list[Service] = []
    yield made
    for svc in made:
        for p in svc.plugins:
            p.executor.close()


def _writes(api: FakeNeutron) -> int:
    return sum(n for method, n in api.calls.items() if method.startswith(("bind_", "unbind_")))


def test_a_standby_makes_no_write_and_one_read_per_reconcile_interval(services: list[Service]) -> None:
    clock, lock = Clock(), SharedLock()
    lock.holder = "someone else"
    lead, _ = leader(lock, "b", clock)
    api = _neutron()
    svc = _service(api, lead, clock)
    services.append(svc)
    svc.step()  # starting: nothing at all
    assert sum(api.calls.values()) == 0
    lead.step()
    assert svc.role() == "standby"
    for _ in range(120):  # two minutes of checks, once a second
        svc.step()
        clock.now += 1
        lead.step()
    assert _writes(api) == 0
    assert dict(api.calls) == {"list_agents": 2}
    assert svc.plugins[0].api_ok is True  # /readyz can say the API answers
    assert svc.metrics.registry.get_sample_value("rpcdaemon_leader") == 0.0


def test_a_promoted_standby_reconciles_at_once_and_a_demoted_one_stops_at_once(services: list[Service]) -> None:
    clock, lock = Clock(), SharedLock()
    lock.holder = "someone else"
    lead, _ = leader(lock, "b", clock)
    api = _neutron()
    svc = _service(api, lead, clock)
    services.append(svc)
    lead.step()
    svc.step()
    assert svc.metrics.registry.get_sample_value("rpcdaemon_leader") == 0.0
    lock.holder = None  # the active instance died
    clock.now += 1
    lead.step()
    assert lead.wait_changed(0)
    api.calls.clear()
    svc.step()  # the first check after the promotion: a full reconcile, not a window later
    assert svc.role() == "active"
    assert svc.metrics.registry.get_sample_value("rpcdaemon_leader") == 1.0
    assert api.calls["list_routers"] == 1 and api.calls["list_agents"] >= 1  # noqa: PT018
    lock.holder = "someone else"  # lost the lock (confirmation fails): standby at once
    clock.now += 1
    lead.step()
    api.calls.clear()
    svc.step()
    assert svc.role() == "standby"
    assert "list_routers" not in api.calls
    assert _writes(api) == 0
    lock.holder = None  # promoted again within one reconcile_interval of its last term's reconcile
    clock.now += 1
    lead.step()
    api.calls.clear()
    svc.step()
    assert svc.role() == "active"
    assert api.calls["list_routers"] == 1, "a new term starts from a fresh reconcile, not the old term's cache"


def test_the_idle_loop_wakes_at_once_on_a_promotion(services: list[Service]) -> None:
    clock, lock = Clock(), SharedLock()
    lock.holder = "someone else"
    lead, _ = leader(lock, "b", clock)
    svc = _service(_neutron(), lead, clock)
    services.append(svc)
    lead.step()
    lead.wait_changed(0)
    lock.holder = None
    threading.Timer(0.2, lead.step).start()
    began = time.monotonic()
    svc._idle(10.0)
    assert time.monotonic() - began < 5.0  # woken by the promotion (0.2 s), not by the 10 s idle ending
    assert lead.is_leader()


def test_a_role_change_is_never_lost_between_a_waiter_timing_out_and_looking_again() -> None:
    """The check loop polls ``wait_changed`` 0.1 s at a time. A change that lands just as one poll times
    out must be reported by the next poll (an Event cleared after the wait lost it: a promoted standby
    then idled the whole check interval)."""
    clock, lock = Clock(), SharedLock()
    lead, _ = leader(lock, "b", clock)
    for trial in range(200):
        lock.holder = None if trial % 2 == 0 else "someone else"
        if trial % 2:
            clock.now += 10  # past the lease, so that the next step is a demotion
        lead.wait_changed(0)
        seen = threading.Event()
        stop = threading.Event()

        def poll(seen: threading.Event = seen, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                if lead.wait_changed(0):
                    seen.set()
                    return

        waiter = threading.Thread(target=poll)
        waiter.start()
        before = lead.changes
        lead.step()
        assert lead.changes == before + 1
        reported = seen.wait(2.0)
        stop.set()
        waiter.join()
        assert reported, f"change {trial + 1} was lost"


def test_a_standby_that_listened_a_full_window_judges_at_once_when_promoted() -> None:
    """The window counts from the standby's own bus connection and API reads: no new window."""
    clock, lock = Clock(), SharedLock()
    lock.holder = "someone else"
    lead, _ = leader(lock, "b", clock)
    api = _neutron()
    registry = AgentRegistry(75.0)
    registry.set_listening(START)
    # Our silence alone decides (no second opinion), so that Neutron's own "dead" cannot shortcut the window.
    liveness = replace(LIVENESS, api_second_opinion=False)
    cfg = AgentPluginConfig(liveness=liveness, timing=TIMING, executor=ExecutorPolicy(workers=1), brake=_brake(),
                            max_moves=100)
    plugin = build_plugin("L3Agent", FencedNeutron(api, lead.is_leader), registry, cfg, bus_since=lambda: START,
                          stop=threading.Event(), clock=clock)
    try:
        lead.step()
        for _ in range(100):  # 100 s as a standby, listening since START; agent a falls silent after 10 s
            for host in ("host-b", "host-a") if clock.now < START + 10 else ("host-b",):
                registry.record(Heartbeat(L3_AGENT, host, clock.now))
            plugin.standby_check()
            clock.now += 1
        lock.holder = None  # the active instance died; this one takes over
        lead.step()
        plugin.start_term()
        report = plugin.check()
        assert report.judged["a"].verdict is Verdict.DEAD  # at once: no agent_down_time to wait first
        assert api.router_bindings() == {"r1": frozenset({"b"})}
    finally:
        plugin.executor.close()


# -- settings and start checks -----------------------------------------------------------------------


def test_a_backend_url_password_never_reaches_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("[coordination]\nbackend_url = mysql://rpcd:s3cr3t@db/x\n")
    assert "s3cr3t" not in str(caught.value)
    assert "mysql://rpcd:***@db/x" in str(caught.value)


def test_tooz_lock_refuses_an_expiry_shorter_than_the_lease_and_masks_passwords() -> None:
    from rpcdaemon.coordination.tooz_lock import ToozLock

    with pytest.raises(ValueError, match="lock_timeout = 3: must be at least 4 s") as caught:
        ToozLock("redis://:s3cr3t@127.0.0.1:6379?lock_timeout=3", "g")
    assert "s3cr3t" not in str(caught.value)
    lock = ToozLock("redis://:s3cr3t@127.0.0.1:6379?password=other", "g")
    assert lock.expiry == 5.0
    assert lock.describe() == "tooz redis://:***@127.0.0.1:6379?password=***"
    assert lock.lease < lock.expiry - 1


def test_a_backend_url_without_tooz_installed_is_one_line() -> None:
    # A process of its own in which tooz cannot be imported, as on a machine without the extra.
    code = ("import sys; sys.modules['tooz'] = None\n"
            "from rpcdaemon.daemon.preflight import check_coordination\n"
            "try:\n    check_coordination('redis://127.0.0.1:6379')\n"
            "except ValueError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == "tooz is not installed: pip install 'rpcdaemon[coordination]'\n"


# -- wiring ------------------------------------------------------------------------------------------


def _settings(tmp_path: Path, extra: str) -> Settings:
    (tmp_path / "neutron.conf").write_text("[DEFAULT]\n")
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text("[Daemon]\nplugins = L3Agent\nrpchost = amqp://u:pw@127.0.0.1:5672//\n"
                    f"[L3Agent]\nconffile = neutron.conf\nendpoint = http://127.0.0.1:9\n{extra}")
    return load_settings(conf)


@pytest.mark.parametrize(("extra", "dry_run", "backend"), [
    ("", False, "amqp://u:***@127.0.0.1:5672//"),
    ("[coordination]\nbackend_url = redis://:pw@127.0.0.1:6379\ngroup = dc1\n", False,
     "tooz redis://:***@127.0.0.1:6379"),
    ("[coordination]\nenabled = false\n", False, None),
    ("", True, None),  # a dry run next to the live instances takes no lock from them
])
def test_the_service_is_built_with_the_lease_the_settings_ask_for(tmp_path: Path, extra: str, dry_run: bool,
                                                                  backend: str | None) -> None:
    settings = _settings(tmp_path, extra)
    settings = replace(settings, daemon=replace(settings.daemon, dry_run=dry_run))
    svc = wiring.build_service(settings, threading.Event(), foreground=True, out=sys.stdout)
    try:
        lead = svc.leadership
        if backend is None:
            assert lead is None
            assert svc.role() == "active"
        else:
            assert lead is not None
            group = "dc1" if "group" in extra else "rpcdaemon"
            assert lead.describe() == f"lock rpcdaemon.leader.{group} on {backend}"
            assert svc.role() == "starting"  # not started: no try yet
            assert isinstance(svc.plugins[0].api, WatchedAPI)
            fenced = svc.plugins[0].api.api
            assert isinstance(fenced, FencedNeutron)
            with pytest.raises(Fenced):
                fenced.bind_router("a", "r1")  # not the leader: nothing is sent
    finally:
        for p in svc.plugins:
            p.executor.close()
        svc.metrics.close()
