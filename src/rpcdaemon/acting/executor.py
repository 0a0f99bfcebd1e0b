"""The one executor: applies planned actions through the narrow Neutron interface.

Called by the L3Agent and DHCPAgent plugins with the actions of one pass (and with the unbinds of their
readiness follow-up, ``move_unready``). What differs between routers and networks (which call unbinds
one, which reads one back) is ``acting.resources``' table. Bounded parallelism (a
thread pool of ``workers``), retries with exponential backoff for temporary errors (tenacity),
"already done" treated as done (the adapter makes unbind-of-unbound and bind-twice succeed), a
last-moment check before each action (``still_valid``: is the source still dead, is the target still
alive?) so no router is bound to an agent that stopped answering, and a bulk read-back per target
agent so every reported success was seen in Neutron. One INFO line per action (its ``Outcome.fields()``
ride along as the record's ``fields`` attribute, which the JSON log format shows), and with it a call of
``on_outcome`` (the service's audit trail), from the worker thread, as soon as the action ends; again
when the read-back turns a success into a failure, and in a dry run once per newly planned action.

A bind is trusted only on a target that still answers: a bind that needed a retry, ended in "already
there", or is confirmed on read-back is checked against ``still_valid`` once more, because Neutron
keeps a binding whose ``router_added_to_agent`` call timed out (500) and then answers the retry
with 201. Such a router sits on an agent that stopped answering: the outcome is FAILED, the plugin
reconciles, and the planner moves it off that agent once it is judged dead.

Stopping (the shared stop event): no action starts any more (SKIPPED "shutting down", counted as
abandoned before its unbind); an action already calling Neutron finishes, and a move past its
unbind still makes its bind (retried without backoff), so no router is left hosted nowhere by a
stop; single-step actions and unbinds are not retried. The log says "stop: finishing N in-flight
moves", then "stopped: N finished, M abandoned before unbind". ``daemonize.shutdown_bound`` sizes
the process's shutdown bound from the same ``timeout`` and ``attempts``.

Progress (``on_progress``): while ``run`` waits for its actions, the caller's thread (the service's
check loop, which pings systemd's watchdog from it) is called back after each finished action and
each finished API call attempt, answered or not. Only from the thread that called ``run``: a
worker's call ending is counted there and reported at the caller's next look (every 0.2 s), so that
actions stuck without end stop the callbacks, and with them the watchdog's pings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from rpcdaemon.acting.api import ErrorKind, NeutronAPI, NeutronError
from rpcdaemon.acting.resources import ResourceKind, kind_of
from rpcdaemon.acting.write_guard import Fenced
from rpcdaemon.model import Action, ActionKind, Outcome, OutcomeStatus

log = logging.getLogger("rpcdaemon.executor")

T = TypeVar("T")

# Returns None when the action may go ahead, else why it must not (checked right before each call).
Validator = Callable[[Action], str | None]

# How often a waiting pass looks at the stop event (only to say what it is finishing).
_STOP_POLL = 0.2
_SHUTTING_DOWN = "shutting down"


@dataclass(frozen=True, slots=True)
class ExecutorPolicy:
    workers: int = 8
    attempts: int = 3
    backoff_min: float = 0.5
    backoff_max: float = 10.0
    dry_run: bool = False
    verify: bool = True


class _Skip(Exception):
    """The action became pointless or unsafe; nothing (more) was changed."""


class _TargetGone(Exception):
    """The bind is in Neutron, but on a target that stopped answering: not done."""


class Executor:
    def __init__(
        self,
        api: NeutronAPI,
        policy: ExecutorPolicy,
        *,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        on_progress: Callable[[], None] | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self._api = api
        # Called with each outcome as soon as it is known (any thread; see the module docstring).
        self.on_outcome = on_outcome
        # Called in the thread that called run(), after each finished action or API call attempt.
        self.on_progress = on_progress
        self._calls_ended = 0  # API call attempts that returned or raised (any thread)
        self._calls_reported = 0
        self._runner: int | None = None  # the thread inside run(), while it is there
        self._policy = policy
        self._stop = stop
        self._clock = clock
        self._log = logger or log
        self._dry_said: set[str] = set()
        self._lock = threading.Lock()
        self._calling = 0  # actions whose first API call has begun and not ended
        self._finished_in_stop = 0
        self._abandoned = 0
        self._pool = ThreadPoolExecutor(max_workers=max(1, policy.workers), thread_name_prefix="rpcd-act")

    @property
    def dry_run(self) -> bool:
        return self._policy.dry_run

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, actions: Sequence[Action], still_valid: Validator | None = None) -> list[Outcome]:
        if not actions:
            return []
        if self._policy.dry_run:
            out = [Outcome(a, OutcomeStatus.DRY_RUN, 0.0, "dry run: not called") for a in actions]
            # Nothing changes in a dry run, so the same plan comes back every check: say each once.
            for o in out:
                line = o.action.describe()
                if line not in self._dry_said:
                    self._log.info("DRY RUN would %s", line, extra={"fields": o.fields()})
                    self._tell(o)
            self._dry_said = {o.action.describe() for o in out}
            return out
        with self._lock:
            self._finished_in_stop = self._abandoned = 0
        self._runner = threading.get_ident()
        try:
            futures = [self._pool.submit(self._apply_and_log, a, still_valid) for a in actions]
            said_stop = self._wait(futures)
            outcomes = [f.result() for f in futures]
            if self._policy.verify:
                outcomes = self._verify(outcomes, still_valid)
        finally:
            self._runner = None
        if said_stop or self._stop.is_set():
            with self._lock:
                finished, abandoned = self._finished_in_stop, self._abandoned
            self._log.info("stopped: %d finished, %d abandoned before unbind", finished, abandoned)
        return outcomes

    def _wait(self, futures: list[Future[Outcome]]) -> bool:
        """Wait for every action; when the stop comes meanwhile, say how many are being finished."""
        pending: set[Future[Outcome]] = set(futures)
        said = False
        while pending:
            done, pending = wait(pending, timeout=_STOP_POLL, return_when=FIRST_COMPLETED)
            self._report_progress(len(done))
            if pending and not said and self._stop.is_set():
                with self._lock:
                    calling = self._calling
                self._log.info("stop: finishing %d in-flight moves", calling)
                said = True
        return said

    def _report_progress(self, finished: int = 0) -> None:
        """In run()'s thread: one callback per finished action, or one if API calls ended meanwhile."""
        if self.on_progress is None:
            return
        with self._lock:
            ended = self._calls_ended
        calls, self._calls_reported = ended - self._calls_reported, ended
        for _ in range(finished or min(calls, 1)):
            self.on_progress()

    def _call_ended(self) -> None:
        with self._lock:
            self._calls_ended += 1
        if self._runner == threading.get_ident():
            self._report_progress()  # a read-back in run()'s own thread: report it now

    def _apply_and_log(self, action: Action, still_valid: Validator | None) -> Outcome:
        # One line per action as soon as it ends, so a crash mid-batch still leaves a record.
        o = self._apply(action, still_valid)
        level = logging.WARNING if o.status is OutcomeStatus.FAILED else logging.INFO
        if o.detail == _SHUTTING_DOWN:
            level = logging.DEBUG  # nothing happened; the "stopped:" line counts them
        self._log.log(
            level, "%s: %s in %.2fs%s", o.action.describe(), o.status.value, o.seconds,
            f" ({o.detail})" if o.detail else "",
            extra={"fields": o.fields()},  # structured, for [Daemon] log_format = json
        )
        self._tell(o)
        return o

    def _tell(self, o: Outcome) -> None:
        if self.on_outcome is None:
            return
        try:
            self.on_outcome(o)
        except Exception:  # the audit trail must never fail an action
            self._log.exception("reporting the outcome of %s failed", o.action.describe())

    # -- one action ------------------------------------------------------------------------------
    def _apply(self, action: Action, still_valid: Validator | None) -> Outcome:
        started = self._clock()
        if self._stop.is_set():
            with self._lock:
                self._abandoned += 1
            return Outcome(action, OutcomeStatus.SKIPPED, 0.0, _SHUTTING_DOWN)
        with self._lock:
            self._calling += 1
        try:
            return self._apply_calling(action, still_valid, started)
        finally:
            with self._lock:
                self._calling -= 1
                if self._stop.is_set():
                    self._finished_in_stop += 1

    def _apply_calling(self, action: Action, still_valid: Validator | None, started: float) -> Outcome:
        try:
            self._check(action, still_valid)
            detail = self._call(action, still_valid)
            return Outcome(action, OutcomeStatus.DONE, self._clock() - started, detail)
        except _TargetGone as gone:
            return Outcome(action, OutcomeStatus.FAILED, self._clock() - started, str(gone))
        except _Skip as skip:
            return Outcome(action, OutcomeStatus.SKIPPED, self._clock() - started, str(skip))
        except Fenced as fenced:
            # Another instance is the active one now: it plans this again from its own reads. Not a
            # failure (nothing was sent), and not retried here.
            return Outcome(action, OutcomeStatus.SKIPPED, self._clock() - started, str(fenced))
        except NeutronError as err:
            # Only a bind can meet INVALID_TARGET (an unbind's refusals are other kinds): that target
            # refuses this router or network for good, and the plugin stops planning the pair.
            refusal = ""
            if err.kind is ErrorKind.INVALID_TARGET and action.target is not None:
                refusal = err.neutron_type or err.kind.value
            return Outcome(action, OutcomeStatus.FAILED, self._clock() - started, str(err), refusal)
        except Exception as err:  # a bug must not kill the pass; it is retried next cycle
            self._log.exception("unexpected error on %s", action.describe())
            return Outcome(action, OutcomeStatus.FAILED, self._clock() - started, f"unexpected: {err!r}")

    def _check(self, action: Action, still_valid: Validator | None) -> None:
        if still_valid is not None:
            why = still_valid(action)
            if why is not None:
                raise _Skip(why)

    def _target_gone(self, action: Action, still_valid: Validator | None) -> str | None:
        """Why the target of a bind that Neutron holds is no good any more (the source is not asked)."""
        if still_valid is None or action.target is None:
            return None
        return still_valid(replace(action, source=None, source_dead=False))

    def _call(self, action: Action, still_valid: Validator | None) -> str:
        rid = action.resource_id
        api = self._api
        kind = kind_of(action.kind)
        if action.kind is kind.unbind:  # a network leaving an agent, or a router not up on its target
            assert action.source is not None
            self._retry(partial(kind.unbind_from, api), action.source.id, rid)
            return ""
        if action.kind is ActionKind.BIND_NETWORK:
            assert action.target is not None
            self._retry_unless_gone(api.bind_network, action.target.id, rid)
            return ""
        assert action.target is not None
        past_unbind = False
        if action.kind is ActionKind.MOVE_ROUTER:
            assert action.source is not None
            self._retry_unless_gone(api.unbind_router, action.source.id, rid)
            past_unbind = True
            # The unbind took time: is the target still worth binding to? (A bind to an agent that
            # does not answer RPC blocks inside Neutron for minutes.) If not, the router is now
            # hosted nowhere and the next pass schedules it. The source is not asked again: the
            # router has left it, and binding it somewhere live beats leaving it nowhere.
            self._check(replace(action, source_dead=False), still_valid)
        attempts = 0

        def bind_once(agent_id: str, router_id: str) -> None:
            nonlocal attempts
            attempts += 1
            api.bind_router(agent_id, router_id)

        detail = ""
        try:
            # Past its unbind, a move finishes even while stopping: else the router is hosted nowhere.
            self._retry(bind_once, action.target.id, rid, while_stopping=past_unbind)
        except NeutronError as err:
            if err.kind is ErrorKind.NOT_FOUND and err.neutron_type == "RouterNotFound":
                raise _Skip(f"router deleted: {err}") from err
            if err.kind is not ErrorKind.CONFLICT:
                raise
            hosts = self._retry(api.agents_for_router, rid, while_stopping=past_unbind)
            if action.target.id not in hosts:
                raise _Skip(f"hosted meanwhile by {', '.join(hosts) or 'nobody'}") from err
            detail = "already there"
        if attempts > 1 or detail:
            # A 500 on a bind may be Neutron's RPC to the target timing out with the binding kept:
            # the retry (or a 409) then finds the router "bound". Only a live target makes it done.
            why = self._target_gone(action, still_valid)
            if why is not None:
                raise _TargetGone(f"bound after {attempts} attempt(s), but {why}: to be moved again")
        return detail

    def _retry_unless_gone(self, fn: Callable[..., None], *args: str) -> None:
        """A NOT_FOUND (router, network or agent deleted meanwhile) means: nothing left to do."""
        try:
            self._retry(fn, *args, while_stopping=False)
        except NeutronError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                raise _Skip(f"gone: {err}") from err
            raise

    def _retry(self, fn: Callable[..., T], *args: str, while_stopping: bool = False) -> T:
        """Call ``fn`` with retries of temporary errors; after a stop, retry only ``while_stopping``."""
        policy = self._policy

        def wait(state: RetryCallState) -> float:
            err = state.outcome.exception() if state.outcome else None
            base = wait_exponential(multiplier=policy.backoff_min, max=policy.backoff_max)(state)
            if isinstance(err, NeutronError) and err.retry_after:
                return float(min(max(base, err.retry_after), policy.backoff_max))
            return float(base)

        retrying = Retrying(
            stop=stop_after_attempt(max(1, policy.attempts)),
            wait=wait,
            retry=retry_if_exception(
                lambda e: isinstance(e, NeutronError) and e.temporary and (while_stopping or not self._stop.is_set())
            ),
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    result = fn(*args)
                finally:
                    self._call_ended()
        return result

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a shutdown cuts a backoff short

    # -- read-back ----------------------------------------------------------------------------------
    def _verify(self, outcomes: list[Outcome], still_valid: Validator | None) -> list[Outcome]:
        """One read per target agent confirms every reported bind (unbinds are not read back: an
        unbind that did not stick is seen, and planned again, at the next reconcile); then the
        target must still be alive. While stopping nothing is read (the shutdown is bounded)."""
        def bound(o: Outcome) -> tuple[ResourceKind, str] | None:
            """(what, target agent id) of a DONE bind or move; None for anything else."""
            a = o.action
            kind = kind_of(a.kind)
            if o.status is not OutcomeStatus.DONE or a.target is None or a.kind not in kind.binds:
                return None
            return kind, a.target.id

        needs: dict[tuple[ResourceKind, str], set[str]] = {}
        for o in outcomes:
            if (key := bound(o)) is not None:
                needs.setdefault(key, set()).add(o.action.resource_id)
        seen: dict[tuple[ResourceKind, str], set[str] | None] = {}
        for key in needs if not self._stop.is_set() else ():
            kind, agent_id = key
            try:
                seen[key] = set(self._retry(partial(kind.hosted_on, self._api), agent_id))
            except NeutronError as err:
                self._log.warning("could not read back %s on agent %s: %s", kind.plural, agent_id, err)
                seen[key] = None
        checked = []
        for o in outcomes:
            a = o.action
            if (key := bound(o)) is not None:
                got = seen.get(key)
                if got is not None and a.resource_id not in got:
                    o = Outcome(a, OutcomeStatus.FAILED, o.seconds, "not hosted by the target on read-back")
                    self._log.warning("%s: failed on read-back: not hosted by the target", a.describe())
                    self._tell(o)
                elif (why := self._target_gone(a, still_valid)) is not None:
                    o = Outcome(a, OutcomeStatus.FAILED, o.seconds, f"hosted, but {why}: to be moved again")
                    self._log.warning("%s: failed on read-back: hosted, but %s", a.describe(), why)
                    self._tell(o)
            checked.append(o)
        return checked
