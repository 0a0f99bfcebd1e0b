"""The executor (``acting.executor.Executor``) against the in-memory ``FakeNeutron``.

Retries never sleep: the backoff goes through the injected stop event, and these tests inject one
that records the requested waits and returns at once. Where the fake cannot misbehave the way a case
needs (a bind that does not stick, a Retry-After), a small subclass of it does, never a patch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from rpcdaemon.acting.api import ErrorKind, NeutronError
from rpcdaemon.acting.executor import Executor, ExecutorPolicy
from rpcdaemon.deciding.l3 import L3Policy, plan_l3
from rpcdaemon.deciding.liveness import Judged, Verdict
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Action, ActionKind, Outcome, OutcomeStatus

NO_WAIT = ExecutorPolicy(workers=4, attempts=3, backoff_min=0.0, backoff_max=0.0)


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are remembered (the executor's backoff sleeps)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


MakeExecutor = Callable[..., Executor]


@pytest.fixture
def make_executor() -> Iterator[MakeExecutor]:
    made: list[Executor] = []

    def make(api: FakeNeutron, policy: ExecutorPolicy = NO_WAIT, stop: threading.Event | None = None) -> Executor:
        ex = Executor(api, policy, stop=stop or RecordingStop())
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.close()


@pytest.fixture
def fake() -> FakeNeutron:
    """Three L3 agents (l3-a dead), a DHCP agent, router r1 on l3-a, network n1 nowhere."""
    fn = FakeNeutron()
    fn.add_agent(L3_AGENT, "net-a", agent_id="l3-a", alive=False)
    fn.add_agent(L3_AGENT, "net-b", agent_id="l3-b")
    fn.add_agent(L3_AGENT, "net-c", agent_id="l3-c")
    fn.add_agent(DHCP_AGENT, "net-b", agent_id="dhcp-b")
    fn.add_router("r1", router_id="r1")
    fn.place_router("r1", "l3-a")
    fn.add_network("n1", network_id="n1")
    return fn


def move(fn: FakeNeutron, rid: str = "r1", src: str = "l3-a", dst: str = "l3-b") -> Action:
    return Action(ActionKind.MOVE_ROUTER, rid, fn.agent(src), fn.agent(dst), "agent dead", source_dead=True)


def bind(fn: FakeNeutron, rid: str = "r1", dst: str = "l3-b") -> Action:
    return Action(ActionKind.BIND_ROUTER, rid, None, fn.agent(dst), "hosted by no agent")


def only(outcomes: list[Outcome]) -> Outcome:
    (o,) = outcomes
    return o


def api_calls(fn: FakeNeutron) -> int:
    return sum(fn.calls.values())


# -- the happy paths and dry run -----------------------------------------------------------------


def test_move_unbinds_binds_and_reads_back(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    o = only(make_executor(fake).run([move(fake)]))
    assert o.status is OutcomeStatus.DONE, o.detail
    assert fake.router_bindings()["r1"] == {"l3-b"}
    assert dict(fake.calls) == {"unbind_router": 1, "bind_router": 1, "routers_on_agent": 1}


def test_dry_run_calls_nothing(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    ex = make_executor(fake, ExecutorPolicy(dry_run=True))
    actions = [move(fake), Action(ActionKind.BIND_NETWORK, "n1", None, fake.agent("dhcp-b"))]
    outcomes = ex.run(actions)
    assert [o.status for o in outcomes] == [OutcomeStatus.DRY_RUN] * 2
    assert [o.action for o in outcomes] == actions
    assert api_calls(fake) == 0
    assert fake.router_bindings()["r1"] == {"l3-a"}


def test_dry_run_says_each_planned_action_once(
    fake: FakeNeutron, make_executor: MakeExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    ex = make_executor(fake, ExecutorPolicy(dry_run=True))
    with caplog.at_level(logging.INFO, logger="rpcdaemon.executor"):
        for _ in range(3):
            ex.run([move(fake)])
        ex.run([move(fake, dst="l3-c")])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DRY RUN")]
    assert len(lines) == 2, lines
    assert "to net-c" in lines[1]


def test_no_actions_no_calls(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    assert make_executor(fake).run([]) == []
    assert api_calls(fake) == 0


def test_network_actions(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    dhcp = fake.agent("dhcp-b")
    ex = make_executor(fake)
    assert only(ex.run([Action(ActionKind.BIND_NETWORK, "n1", None, dhcp)])).status is OutcomeStatus.DONE
    assert fake.network_bindings()["n1"] == {"dhcp-b"}
    unbind = Action(ActionKind.UNBIND_NETWORK, "n1", dhcp, None)
    assert only(ex.run([unbind])).status is OutcomeStatus.DONE
    # Unbinding what is no longer bound is done, not an error.
    assert only(ex.run([unbind])).status is OutcomeStatus.DONE
    assert fake.network_bindings()["n1"] == frozenset()


def test_one_log_line_per_action(
    fake: FakeNeutron, make_executor: MakeExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_router("r2", router_id="r2")
    with caplog.at_level(logging.INFO, logger="rpcdaemon.executor"):
        make_executor(fake).run([move(fake), bind(fake, "r2", "l3-c")])
    lines = [r.getMessage() for r in caplog.records if r.name == "rpcdaemon.executor"]
    assert len(lines) == 2
    assert any(line.startswith("move router r1 from net-a (l3-a) to net-b (l3-b)") for line in lines)
    assert all(": done in " in line for line in lines)


# -- retries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "status", "bind_calls"), [(1, "done", 2), (2, "done", 3), (3, "failed", 3)])
def test_temporary_errors_are_retried_up_to_attempts(
    fake: FakeNeutron, make_executor: MakeExecutor, failures: int, status: str, bind_calls: int
) -> None:
    fake.fail_next(failures, ErrorKind.TEMPORARY, method="bind_router")
    o = only(make_executor(fake).run([move(fake)]))
    assert o.status.value == status, o.detail
    assert fake.calls["bind_router"] == bind_calls
    assert fake.calls["unbind_router"] == 1
    if o.status is OutcomeStatus.FAILED:
        assert "temporary" in o.detail


@pytest.mark.parametrize("kind", [ErrorKind.PERMANENT, ErrorKind.INVALID_TARGET])
def test_permanent_errors_are_not_retried(fake: FakeNeutron, make_executor: MakeExecutor, kind: ErrorKind) -> None:
    fake.fail_next(1, kind, method="bind_router")
    o = only(make_executor(fake).run([move(fake)]))
    assert o.status is OutcomeStatus.FAILED
    assert fake.calls["bind_router"] == 1


def test_backoff_is_exponential_and_capped(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    stop = RecordingStop()
    fake.fail_next(4, ErrorKind.TEMPORARY, method="bind_router")
    policy = ExecutorPolicy(attempts=5, backoff_min=0.5, backoff_max=1.5)
    o = only(make_executor(fake, policy, stop).run([move(fake)]))
    assert o.status is OutcomeStatus.DONE
    assert stop.waits == [0.5, 1.0, 1.5, 1.5]


class RetryAfterNeutron(FakeNeutron):
    """Answers the first bind with 429 and a Retry-After."""

    def __init__(self, retry_after: float) -> None:
        super().__init__()
        self.retry_after = retry_after
        self.throttled = False

    def bind_router(self, agent_id: str, router_id: str) -> None:
        if not self.throttled:
            self.throttled = True
            raise NeutronError(ErrorKind.TEMPORARY, "slow down", status=429, retry_after=self.retry_after)
        super().bind_router(agent_id, router_id)


@pytest.mark.parametrize(("retry_after", "waited"), [(3.0, 3.0), (60.0, 10.0), (0.1, 0.5)])
def test_retry_after_is_honoured_within_backoff_max(
    make_executor: MakeExecutor, retry_after: float, waited: float
) -> None:
    fn = RetryAfterNeutron(retry_after)
    fn.add_agent(L3_AGENT, "net-b", agent_id="l3-b")
    fn.add_router(router_id="r1")
    stop = RecordingStop()
    o = only(make_executor(fn, ExecutorPolicy(backoff_min=0.5, backoff_max=10.0), stop).run([bind(fn)]))
    assert o.status is OutcomeStatus.DONE
    assert stop.waits == [waited]


def test_shutdown_skips_what_has_not_started(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    stop = RecordingStop()
    stop.set()
    o = only(make_executor(fake, NO_WAIT, stop).run([move(fake)]))
    assert o.status is OutcomeStatus.SKIPPED
    assert "shutting down" in o.detail
    assert api_calls(fake) == 0


# -- "already done" and "gone" -------------------------------------------------------------------


def test_conflict_with_the_router_already_on_the_target_is_done(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    # The bind went through but its answer was a 409 (e.g. a retried request that had succeeded).
    fake.fail_next(1, ErrorKind.CONFLICT, method="bind_router", applied=True)
    o = only(make_executor(fake).run([move(fake)]))
    assert o.status is OutcomeStatus.DONE
    assert o.detail == "already there"
    assert fake.calls["agents_for_router"] == 1


def test_conflict_with_the_router_hosted_elsewhere_is_skipped(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    fake.add_router(router_id="r2")
    fake.place_router("r2", "l3-c")  # someone else scheduled it meanwhile
    o = only(make_executor(fake).run([bind(fake, "r2", "l3-b")]))
    assert o.status is OutcomeStatus.SKIPPED
    assert "hosted meanwhile by l3-c" in o.detail
    assert fake.router_bindings()["r2"] == {"l3-c"}


def test_deleted_router_is_skipped_on_bind(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    fake.add_router(router_id="r2")
    fake.delete_router("r2")
    o = only(make_executor(fake).run([bind(fake, "r2")]))
    assert o.status is OutcomeStatus.SKIPPED
    assert "router deleted" in o.detail


def test_deleted_router_is_skipped_on_move(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    fake.delete_router("r1")
    o = only(make_executor(fake).run([move(fake)]))
    assert o.status is OutcomeStatus.SKIPPED
    assert fake.calls["bind_router"] == 0


def test_deleted_network_is_skipped_on_bind(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    fake.delete_network("n1")
    o = only(make_executor(fake).run([Action(ActionKind.BIND_NETWORK, "n1", None, fake.agent("dhcp-b"))]))
    assert o.status is OutcomeStatus.SKIPPED


class BrokenNeutron(FakeNeutron):
    def bind_router(self, agent_id: str, router_id: str) -> None:
        raise RuntimeError("bug in an adapter")


def test_unexpected_error_fails_the_action_not_the_pass(make_executor: MakeExecutor) -> None:
    fn = BrokenNeutron()
    fn.add_agent(L3_AGENT, "net-b", agent_id="l3-b")
    fn.add_router(router_id="r1")
    fn.add_router(router_id="r2")
    outcomes = make_executor(fn).run([bind(fn, "r1"), bind(fn, "r2")])
    assert [o.status for o in outcomes] == [OutcomeStatus.FAILED] * 2
    assert "unexpected" in outcomes[0].detail


# -- the last-moment check ------------------------------------------------------------------------


def test_veto_before_the_first_call_changes_nothing(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    seen: list[Action] = []

    def came_back(action: Action) -> str | None:
        seen.append(action)
        return "source net-a came back"

    o = only(make_executor(fake).run([move(fake)], came_back))
    assert o.status is OutcomeStatus.SKIPPED
    assert o.detail == "source net-a came back"
    assert seen == [move(fake)]
    assert api_calls(fake) == 0
    assert fake.router_bindings()["r1"] == {"l3-a"}


def test_veto_after_the_unbind_leaves_the_router_for_the_next_plan(
    fake: FakeNeutron, make_executor: MakeExecutor
) -> None:
    verdicts = iter([None, "target net-b is no longer heard"])

    def check(action: Action) -> str | None:
        return next(verdicts)  # fine before the unbind, not after it

    o = only(make_executor(fake).run([move(fake)], check))
    assert o.status is OutcomeStatus.SKIPPED
    assert fake.calls["bind_router"] == 0
    assert fake.router_bindings()["r1"] == frozenset()
    # The next pass sees a router hosted nowhere and schedules it.
    judged = {
        a.id: Judged(a, Verdict.DEAD if a.id == "l3-a" else Verdict.ALIVE, "")
        for a in fake.list_agents()
        if a.agent_type == L3_AGENT
    }
    routers = {r.id: r for r in fake.list_routers()}
    plan = plan_l3(judged, routers, fake.router_bindings(), L3Policy())
    (action,) = plan.actions
    assert (action.kind, action.resource_id) == (ActionKind.BIND_ROUTER, "r1")


# -- read-back -------------------------------------------------------------------------------------


class ForgetfulNeutron(FakeNeutron):
    """Accepts router binds and keeps none of them (another actor undoes them at once)."""

    def bind_router(self, agent_id: str, router_id: str) -> None:
        super().bind_router(agent_id, router_id)
        super().unbind_router(agent_id, router_id)


def forgetful() -> ForgetfulNeutron:
    fn = ForgetfulNeutron()
    fn.add_agent(L3_AGENT, "net-b", agent_id="l3-b")
    for rid in ("r1", "r2"):
        fn.add_router(router_id=rid)
    return fn


def test_read_back_fails_a_bind_that_did_not_stick(make_executor: MakeExecutor) -> None:
    fn = forgetful()
    outcomes = make_executor(fn).run([bind(fn, "r1"), bind(fn, "r2")])
    assert [o.status for o in outcomes] == [OutcomeStatus.FAILED] * 2
    assert outcomes[0].detail == "not hosted by the target on read-back"
    assert fn.calls["routers_on_agent"] == 1, "one read per target agent"


def test_without_verify_nothing_is_read_back(make_executor: MakeExecutor) -> None:
    fn = forgetful()
    outcomes = make_executor(fn, ExecutorPolicy(backoff_min=0, verify=False)).run([bind(fn, "r1")])
    assert [o.status for o in outcomes] == [OutcomeStatus.DONE]
    assert fn.calls["routers_on_agent"] == 0


def test_a_failed_read_back_keeps_the_reported_outcome(fake: FakeNeutron, make_executor: MakeExecutor) -> None:
    fake.fail_next(1, ErrorKind.PERMANENT, method="routers_on_agent")
    assert only(make_executor(fake).run([move(fake)])).status is OutcomeStatus.DONE


# -- bounded parallelism -------------------------------------------------------------------------


class InFlight:
    """The fake's latency sleep, counting how many calls are in flight at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(seconds)
        with self._lock:
            self.now -= 1


@pytest.mark.parametrize("workers", [1, 3])
def test_parallelism_is_bounded_by_workers(make_executor: MakeExecutor, workers: int) -> None:
    flight = InFlight()
    fn = FakeNeutron(latency=0.03, sleep=flight.sleep)
    agents = [fn.add_agent(DHCP_AGENT, f"net-{i}", agent_id=f"d{i}") for i in range(3)]
    for i in range(8):
        fn.add_network(network_id=f"n{i}")
    actions = [Action(ActionKind.BIND_NETWORK, f"n{i}", None, agents[i % 3]) for i in range(8)]
    outcomes = make_executor(fn, ExecutorPolicy(workers=workers, backoff_min=0)).run(actions)
    assert [o.status for o in outcomes] == [OutcomeStatus.DONE] * 8
    assert flight.peak == workers  # never more, and the pool is actually used
    assert fn.calls["bind_network"] == 8
    assert fn.calls["networks_on_agent"] == 3


def test_outcomes_keep_the_order_of_the_actions(make_executor: MakeExecutor) -> None:
    fn = FakeNeutron(latency=0.002)
    agent = fn.add_agent(DHCP_AGENT, "net-0", agent_id="d0")
    for i in range(10):
        fn.add_network(network_id=f"n{i}")
    actions = [Action(ActionKind.BIND_NETWORK, f"n{i}", None, agent) for i in range(10)]
    assert [o.action for o in make_executor(fn).run(actions)] == actions


# -- a target that dies under the bind -----------------------------------------------------------


class Heard:
    """A fake clock plus the last time each agent was heard: the plugin's target check in miniature."""

    def __init__(self, *agents: str) -> None:
        self.now = 0.0
        self.heard = dict.fromkeys(agents, 0.0)

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def still_valid(self, action: Action) -> str | None:
        if action.target is not None and self.now - self.heard[action.target.id] > 30.0:
            return f"target {action.target.describe()} is no longer heard"
        return None


def dying_target() -> tuple[FakeNeutron, Heard]:
    heard = Heard("l3-a", "l3-b")
    fn = FakeNeutron(dead_bind_delay=240.0, sleep=heard.sleep)
    fn.add_agent(L3_AGENT, "net-a", agent_id="l3-a", alive=False)
    fn.add_agent(L3_AGENT, "net-b", agent_id="l3-b")
    fn.add_router(router_id="r1")
    fn.place_router("r1", "l3-a")
    fn.stop_answering("l3-b")  # died after its last report; Neutron still lists it alive
    return fn, heard


def test_bind_that_timed_out_but_stuck_on_a_dead_target_is_failed(make_executor: MakeExecutor) -> None:
    fn, heard = dying_target()
    o = only(make_executor(fn).run([move(fn)], heard.still_valid))
    assert fn.calls["bind_router"] == 2, "the 500 was retried, and the retry found the router bound"
    assert fn.router_bindings()["r1"] == {"l3-b"}
    assert o.status is OutcomeStatus.FAILED
    assert o.detail == "bound after 2 attempt(s), but target net-b (l3-b) is no longer heard: to be moved again"


def test_bind_retried_on_a_target_still_heard_is_done(make_executor: MakeExecutor) -> None:
    fn, heard = dying_target()
    fn.stop_answering("l3-b", deaf=False)
    fn.fail_next(1, ErrorKind.TEMPORARY, method="bind_router", applied=True)
    o = only(make_executor(fn).run([move(fn)], heard.still_valid))
    assert (o.status, fn.calls["bind_router"]) == (OutcomeStatus.DONE, 2)


def test_already_there_on_a_target_gone_silent_is_failed(make_executor: MakeExecutor) -> None:
    fn, heard = dying_target()
    fn.stop_answering("l3-b", deaf=False)
    fn.place_router("r1", "l3-b")  # the bind went through earlier; this time it answers 409
    fn.fail_next(1, ErrorKind.CONFLICT, method="bind_router")
    heard.heard["l3-b"] = -100.0  # silent for a while: only the check after the 409 looks

    def after_the_bind(action: Action) -> str | None:
        return heard.still_valid(action) if fn.calls["bind_router"] else None

    o = only(make_executor(fn).run([bind(fn)], after_the_bind))
    assert o.status is OutcomeStatus.FAILED
    assert "no longer heard" in o.detail


def test_read_back_fails_a_bind_on_a_target_gone_silent_meanwhile(make_executor: MakeExecutor) -> None:
    fn, heard = dying_target()
    fn.stop_answering("l3-b", deaf=False)
    fn.add_router(router_id="r2")

    def silent_after_the_binds(action: Action) -> str | None:
        if fn.calls["bind_router"] < 2:
            return None
        heard.now = 100.0  # the batch's binds are through; b has said nothing since t=0
        return heard.still_valid(action)

    outcomes = make_executor(fn).run([move(fn), bind(fn, "r2")], silent_after_the_binds)
    assert [o.status for o in outcomes] == [OutcomeStatus.FAILED] * 2
    assert all(o.detail.startswith("hosted, but target net-b (l3-b) is no longer heard") for o in outcomes)
    assert fn.calls["routers_on_agent"] == 1


# -- stopping ---------------------------------------------------------------------------------------


class StopDuring(FakeNeutron):
    """Sets the stop event inside the first call of ``method`` (a stop that arrives mid-call)."""

    def __init__(self, stop: threading.Event, method: str, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.stop, self.method = stop, method

    def unbind_router(self, agent_id: str, router_id: str) -> None:
        if self.method == "unbind_router":
            self.stop.set()
        super().unbind_router(agent_id, router_id)

    def bind_router(self, agent_id: str, router_id: str) -> None:
        if self.method == "bind_router":
            self.stop.set()
        super().bind_router(agent_id, router_id)


def stop_world(stop: threading.Event, method: str, routers: int, latency: float = 0.0) -> StopDuring:
    fn = StopDuring(stop, method, latency)
    fn.add_agent(L3_AGENT, "net-a", agent_id="l3-a", alive=False)
    fn.add_agent(L3_AGENT, "net-b", agent_id="l3-b")
    for i in range(routers):
        fn.add_router(router_id=f"r{i}")
        fn.place_router(f"r{i}", "l3-a")
    return fn


def test_stop_after_the_unbind_finishes_the_bind_and_starts_nothing_new(
    make_executor: MakeExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    stop = RecordingStop()
    # Real time: each call takes 0.15 s, so the waiting pass sees the stop while the bind goes on.
    fn = stop_world(stop, "unbind_router", routers=3, latency=0.15)
    fn.fail_next(2, ErrorKind.TEMPORARY, method="bind_router")  # even a failing bind is retried to the end
    ex = make_executor(fn, ExecutorPolicy(workers=1, attempts=3, backoff_min=0.0, backoff_max=0.0), stop)
    with caplog.at_level(logging.INFO, logger="rpcdaemon.executor"):
        outcomes = ex.run([move(fn, f"r{i}") for i in range(3)])
    assert [o.status for o in outcomes] == [OutcomeStatus.DONE, OutcomeStatus.SKIPPED, OutcomeStatus.SKIPPED]
    assert fn.router_bindings() == {"r0": {"l3-b"}, "r1": {"l3-a"}, "r2": {"l3-a"}}, "nothing hosted nowhere"
    assert fn.calls["unbind_router"] == 1
    assert fn.calls["bind_router"] == 3
    assert fn.calls["routers_on_agent"] == 0, "no read-back while stopping"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert "stop: finishing 1 in-flight moves" in lines
    assert lines[-1] == "stopped: 1 finished, 2 abandoned before unbind"


def test_stop_during_a_failing_unbind_does_not_retry_it(make_executor: MakeExecutor) -> None:
    stop = RecordingStop()
    fn = stop_world(stop, "unbind_router", routers=1)
    fn.fail_next(1, ErrorKind.TEMPORARY, method="unbind_router")
    o = only(make_executor(fn, NO_WAIT, stop).run([move(fn)]))
    assert o.status is OutcomeStatus.FAILED
    assert (fn.calls["unbind_router"], fn.calls["bind_router"]) == (1, 0)
    assert fn.router_bindings()["r0"] == {"l3-a"}


def test_stop_during_a_failing_single_bind_does_not_retry_it(make_executor: MakeExecutor) -> None:
    stop = RecordingStop()
    fn = stop_world(stop, "bind_router", routers=0)
    fn.add_router(router_id="r1")
    fn.fail_next(1, ErrorKind.TEMPORARY, method="bind_router")
    o = only(make_executor(fn, NO_WAIT, stop).run([bind(fn)]))
    assert o.status is OutcomeStatus.FAILED
    assert fn.calls["bind_router"] == 1
