"""The one executor: applies planned actions through the narrow Neutron interface.

Called by the L3Agent and DHCPAgent plugins with the actions of one pass. Bounded parallelism (a
thread pool of ``workers``), retries with exponential backoff for temporary errors (tenacity),
"already done" treated as done (the adapter makes unbind-of-unbound and bind-twice succeed), a
last-moment check before each action (``still_valid``: is the source still dead, is the target still
alive?) so no router is bound to an agent that stopped answering, and a bulk read-back per target
agent so every reported success was seen in Neutron. One INFO line per action.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from rpcdaemon.acting.api import ErrorKind, NeutronAPI, NeutronError
from rpcdaemon.model import Action, ActionKind, Outcome, OutcomeStatus

log = logging.getLogger("rpcdaemon.executor")

T = TypeVar("T")

# Returns None when the action may go ahead, else why it must not (checked right before each call).
Validator = Callable[[Action], str | None]


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


class Executor:
    def __init__(
        self,
        api: NeutronAPI,
        policy: ExecutorPolicy,
        *,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self._api = api
        self._policy = policy
        self._stop = stop
        self._clock = clock
        self._log = logger or log
        self._dry_said: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=max(1, policy.workers), thread_name_prefix="rpcd-act")

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
                    self._log.info("DRY RUN would %s", line)
            self._dry_said = {o.action.describe() for o in out}
            return out
        futures = [self._pool.submit(self._apply_and_log, a, still_valid) for a in actions]
        outcomes = [f.result() for f in futures]
        if self._policy.verify:
            outcomes = self._verify(outcomes)
        return outcomes

    def _apply_and_log(self, action: Action, still_valid: Validator | None) -> Outcome:
        # One line per action as soon as it ends, so a crash mid-batch still leaves a record.
        o = self._apply(action, still_valid)
        level = logging.WARNING if o.status is OutcomeStatus.FAILED else logging.INFO
        self._log.log(
            level, "%s: %s in %.2fs%s", o.action.describe(), o.status.value, o.seconds,
            f" ({o.detail})" if o.detail else "",
        )
        return o

    # -- one action ------------------------------------------------------------------------------
    def _apply(self, action: Action, still_valid: Validator | None) -> Outcome:
        started = self._clock()
        try:
            if self._stop.is_set():
                raise _Skip("shutting down")
            self._check(action, still_valid)
            detail = self._call(action, still_valid)
            return Outcome(action, OutcomeStatus.DONE, self._clock() - started, detail)
        except _Skip as skip:
            return Outcome(action, OutcomeStatus.SKIPPED, self._clock() - started, str(skip))
        except NeutronError as err:
            return Outcome(action, OutcomeStatus.FAILED, self._clock() - started, str(err))
        except Exception as err:  # a bug must not kill the pass; it is retried next cycle
            self._log.exception("unexpected error on %s", action.describe())
            return Outcome(action, OutcomeStatus.FAILED, self._clock() - started, f"unexpected: {err!r}")

    def _check(self, action: Action, still_valid: Validator | None) -> None:
        if still_valid is not None:
            why = still_valid(action)
            if why is not None:
                raise _Skip(why)

    def _call(self, action: Action, still_valid: Validator | None) -> str:
        rid = action.resource_id
        api = self._api
        if action.kind is ActionKind.UNBIND_NETWORK:
            assert action.source is not None
            self._retry(api.unbind_network, action.source.id, rid)
            return ""
        if action.kind is ActionKind.BIND_NETWORK:
            assert action.target is not None
            self._retry_unless_gone(api.bind_network, action.target.id, rid)
            return ""
        assert action.target is not None
        if action.kind is ActionKind.MOVE_ROUTER:
            assert action.source is not None
            self._retry_unless_gone(api.unbind_router, action.source.id, rid)
            # The unbind took time: is the target still worth binding to? (A bind to an agent that
            # does not answer RPC blocks inside Neutron for minutes.) If not, the router is now
            # hosted nowhere and the next pass schedules it. The source is not asked again: the
            # router has left it, and binding it somewhere live beats leaving it nowhere.
            self._check(replace(action, source_dead=False), still_valid)
        try:
            self._retry(api.bind_router, action.target.id, rid)
        except NeutronError as err:
            if err.kind is ErrorKind.NOT_FOUND and err.neutron_type == "RouterNotFound":
                raise _Skip(f"router deleted: {err}") from err
            if err.kind is ErrorKind.CONFLICT:
                hosts = self._retry(api.agents_for_router, rid)
                if action.target.id in hosts:
                    return "already there"
                raise _Skip(f"hosted meanwhile by {', '.join(hosts) or 'nobody'}") from err
            raise
        return ""

    def _retry_unless_gone(self, fn: Callable[..., None], *args: str) -> None:
        """A NOT_FOUND (router, network or agent deleted meanwhile) means: nothing left to do."""
        try:
            self._retry(fn, *args)
        except NeutronError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                raise _Skip(f"gone: {err}") from err
            raise

    def _retry(self, fn: Callable[..., T], *args: str) -> T:
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
            retry=retry_if_exception(lambda e: isinstance(e, NeutronError) and e.temporary),
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                result = fn(*args)
        return result

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a shutdown cuts a backoff short

    # -- read-back ----------------------------------------------------------------------------------
    def _verify(self, outcomes: list[Outcome]) -> list[Outcome]:
        """One read per target agent confirms every reported bind (unbinds are not read back: an
        unbind that did not stick is seen, and planned again, at the next reconcile)."""
        needs: dict[tuple[str, str], set[str]] = {}
        for o in outcomes:
            a = o.action
            if o.status is not OutcomeStatus.DONE:
                continue
            if a.kind in (ActionKind.MOVE_ROUTER, ActionKind.BIND_ROUTER) and a.target:
                needs.setdefault(("router", a.target.id), set()).add(a.resource_id)
            elif a.kind is ActionKind.BIND_NETWORK and a.target:
                needs.setdefault(("network", a.target.id), set()).add(a.resource_id)
        seen: dict[tuple[str, str], set[str] | None] = {}
        for key in needs:
            kind, agent_id = key
            try:
                read = self._api.routers_on_agent if kind == "router" else self._api.networks_on_agent
                seen[key] = set(self._retry(read, agent_id))
            except NeutronError as err:
                self._log.warning("could not read back %ss on agent %s: %s", kind, agent_id, err)
                seen[key] = None
        checked = []
        for o in outcomes:
            a = o.action
            if o.status is OutcomeStatus.DONE and a.target is not None and a.kind is not ActionKind.UNBIND_NETWORK:
                kind = "network" if a.kind is ActionKind.BIND_NETWORK else "router"
                got = seen.get((kind, a.target.id))
                if got is not None and a.resource_id not in got:
                    o = Outcome(a, OutcomeStatus.FAILED, o.seconds, "not hosted by the target on read-back")
                    self._log.warning("%s: failed on read-back: not hosted by the target", a.describe())
            checked.append(o)
        return checked
