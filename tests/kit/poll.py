"""The one poller of the tests: ``wait_until`` a condition holds (or fail saying what was awaited), or
``poll_until`` it does (or give up, for the caller to assert on).

A condition is polled often at first and then less often (a tenth of the time waited so far, up to
``interval``): what is true at once is seen at once, and a wait of minutes does not hammer what it reads
(a neutron-server, a broker's management queue, a metrics port).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_INTERVAL = 0.01


class TimedOut(AssertionError):
    """What was awaited did not happen in time; the message says what it was."""


def poll_until(condition: Callable[[], T | None], timeout: float, *, interval: float = 0.25) -> T | None:
    """``condition()``'s first truthy value within ``timeout`` seconds, else None."""
    began = time.monotonic()
    deadline = began + timeout
    while True:
        value = condition()
        if value:
            return value
        now = time.monotonic()
        if now > deadline:
            return None
        time.sleep(min(interval, max(FIRST_INTERVAL, (now - began) / 10), max(0.0, deadline - now) + 0.001))


def wait_until(condition: Callable[[], T | None], timeout: float = 10.0, what: str = "condition",
               on_timeout: Callable[[], str] | None = None, *, interval: float = 0.25) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; after ``timeout`` seconds fail
    with ``what`` and ``on_timeout()`` (e.g. a daemon's log tail). An exception in ``condition`` ends the wait."""
    value = poll_until(condition, timeout, interval=interval)
    if not value:
        raise TimedOut(f"timed out after {timeout:.0f} s waiting for {what}{on_timeout() if on_timeout else ''}")
    return value
