"""The Dump plugin: print one readable line per message seen on an exchange, for troubleshooting.

The service gives it its own ``BusListener`` over ``subscriptions()`` and calls ``handle`` from
that listener's thread. It never acts on anything. A filter, if configured, is a JMESPath
expression evaluated against the message's dict view (``decode.describe_message``); it is compiled
at start-up (``plugins.dump_filter``, bounded in length and depth) so that a typo fails there with a
message naming the expression (the CLI exits 2).

Fields a filter can use: ``exchange``, ``routing_key``, ``method`` (RPC method or event_type),
``host`` and ``agent_type`` (heartbeats), ``network_id`` (network events), ``body`` (the decoded
message, e.g. ``body.args.agent_state.agent_state.configurations.agent_mode``), ``context`` (the
``_context_*`` keys, unprefixed) and ``error`` (undecodable messages). Strings are quoted:
``host == 'net-1'``; an unquoted ``host == net1`` compares two fields and matches the wrong messages,
so a field no message has is reported with a WARNING when the plugin starts. A message the filter
fails on does not match: at DEBUG when JMESPath's own type check refused it (a function given a null
field), else (``ceil`` of 1e400, ``max_by`` over mixed types) one WARNING per kind of error per minute,
counting the ones in between. Secrets (passwords,
tokens, URL passwords) are replaced by ``***`` before filtering and printing.

Line format: ``<local time> <exchange>/<routing key> <method or event_type> [host=… type=…] <body>``,
the body compact JSON with the inner ``oslo.message`` decoded and the 20-odd ``_context_*`` keys
collapsed unless verbose.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

import jmespath.exceptions

from rpcdaemon.broker.link import RawMessage, Subscription, fanout_subscription, neutron_subscription
from rpcdaemon.observing.decode import describe_message
from rpcdaemon.plugins.dump_filter import (
    DumpFilterError,
    FilterDataError,
    abbreviate,
    compile_filter,
    field_warnings,
    search,
)
from rpcdaemon.textsafe import escape_text

log = logging.getLogger("rpcdaemon.dump")  # so [Dump] loglevel applies

# The fanout exchanges Neutron casts to agents on (network_delete_end goes to dhcp_agent_fanout):
# dumping the "neutron" exchange alone would never show them.
NEUTRON_FANOUT_TOPICS = ("dhcp_agent", "l3_agent")
FAILURE_WARN_EVERY = 60.0  # seconds: at most one WARNING per kind of filter failure in this span

__all__ = ["NEUTRON_FANOUT_TOPICS", "DumpFilterError", "DumpPlugin", "compile_filter"]


class DumpPlugin:
    """Prints what the bus carries; see the module docstring for the line format."""

    def __init__(
        self,
        exchange: str = "neutron",
        filter_expr: str | None = None,
        out: TextIO | None = None,
        verbose: bool = False,
        *,
        wallclock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not exchange:
            raise ValueError("[Dump] queue must name an exchange, e.g. neutron")
        self.exchange = exchange
        self.filter_expr = filter_expr.strip() if filter_expr and filter_expr.strip() else None
        self._filter = compile_filter(self.filter_expr) if self.filter_expr else None
        for warning in field_warnings(self._filter) if self._filter is not None else ():
            log.warning("%s", warning)
        self._out = out if out is not None else sys.stdout
        self._verbose = verbose
        self._wallclock = wallclock
        self._failures = _FailureLog(abbreviate(self.filter_expr or ""), clock)
        self.printed = 0
        self.filtered_out = 0

    def subscriptions(self) -> list[Subscription]:
        if self.exchange.endswith("_fanout"):
            return [fanout_subscription(self.exchange.removesuffix("_fanout"))]
        subs = [neutron_subscription("#", exchange=self.exchange)]
        if self.exchange == "neutron":
            subs.extend(fanout_subscription(topic) for topic in NEUTRON_FANOUT_TOPICS)
        return subs

    def handle(self, raw: RawMessage) -> None:
        data, line = describe_message(
            raw.body, exchange=raw.exchange, routing_key=raw.routing_key, verbose=self._verbose
        )
        if not self._matches(data):
            self.filtered_out += 1
            return
        stamp = datetime.fromtimestamp(self._wallclock()).isoformat(sep=" ", timespec="milliseconds")
        self._out.write(f"{stamp} {escape_text(line)}\n")  # decode quotes odd text already; one line whatever
        self._out.flush()
        self.printed += 1

    def _matches(self, data: dict[str, Any]) -> bool:
        try:
            return self._filter is None or bool(search(self._filter, data))
        except FilterDataError as exc:
            self._failures.failed(exc)
            return False
        except jmespath.exceptions.JMESPathError as exc:
            # e.g. a function applied to the wrong type for this one message: it does not match.
            log.debug("Dump filter %r failed on a message: %s", self.filter_expr, exc)
            return False


class _FailureLog:
    """One WARNING per kind of filter failure per ``FAILURE_WARN_EVERY`` seconds: a stream of odd
    messages must not become a stream of log lines. The kinds are exception types, so few."""

    def __init__(self, shown: str, clock: Callable[[], float]) -> None:
        self._shown = shown
        self._clock = clock
        self._warned: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def failed(self, exc: FilterDataError) -> None:
        now = self._clock()
        last = self._warned.get(exc.kind)
        if last is not None and now - last < FAILURE_WARN_EVERY:
            self._quiet[exc.kind] = self._quiet.get(exc.kind, 0) + 1
            return
        self._warned[exc.kind] = now
        quiet = self._quiet.pop(exc.kind, 0)
        since = f"; {quiet} more like it since the last warning" if quiet else ""
        log.warning("Dump filter %s failed on a message (%s), so it does not match%s"
                    " (at most one such warning a minute)", self._shown, exc, since)
