"""``make_service``: the one place a unit or component test builds the daemon's ``Service`` (the check loop
around the plugins), so that a test names only what it is about.

Unless given: no plugins, an empty registry (75 s down time), no Dump plugin, one check a second, no
queue expiry, a stop event of its own, the in-memory bus (its listeners are never started unless the test
runs the service). Everything else is passed to ``Service`` as given (clock, metrics, leadership, audit,
notifier, on_pass, connection_factory, control).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from rpcdaemon.daemon.service import Service
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin
from rpcdaemon.plugins.dump import DumpPlugin


def make_service(
    *,
    plugins: Sequence[FailoverPlugin] = (),
    registry: AgentRegistry | None = None,
    dump: DumpPlugin | None = None,
    check_interval: float = 1.0,
    stop: threading.Event | None = None,
    bus_url: str = "memory://",
    **options: Any,
) -> Service:
    return Service(bus_url=bus_url, registry=registry if registry is not None else AgentRegistry(75.0),
                   plugins=plugins, dump=dump, check_interval=check_interval, queue_expire=None,
                   stop=stop if stop is not None else threading.Event(), **options)
