"""The Dump plugin's ``[Dump] filter``: a JMESPath expression checked, bounded and compiled once.

Called by ``plugins.dump`` (``DumpPlugin`` compiles its filter and warns about unknown fields) and by
the configuration loader (``kinds``), so that a bad filter is a one-line configuration error before
anything starts. No kombu here, and nothing is ever ``eval``-ed: JMESPath is a query language with its
own parser. The expression's length and bracket nesting are bounded before the (recursive) parser sees
it, its syntax tree is bounded after, and a RecursionError is caught at both compile and search time.
Whatever else a search raises on one message's data (``ceil`` of 1e400, which JSON reads as infinity;
``max_by`` over mixed types) is a ``FilterDataError`` naming its kind, for the plugin to rate-limit.

A filter is evaluated against ``observing.decode.describe_message``'s ``data``, whose top-level fields
are listed in ``FIELDS``. A bare word is a field, not a string: ``host == net1`` compares the field
``host`` with a field ``net1`` that does not exist (so it matches only messages without a host);
``unknown_fields`` finds such names so the plugin can warn about them.
"""

from __future__ import annotations

from typing import Any

import jmespath
import jmespath.exceptions

from rpcdaemon.observing.decode import DESCRIPTION_FIELDS

MAX_LENGTH = 1000  # characters; real filters are one line of a few dozen
MAX_NESTING = 32  # ( [ { levels, outside quoted literals
MAX_TREE_DEPTH = 64  # levels of the parsed expression (a.b.c... is one level per dot)

FIELDS: dict[str, str] = {
    "exchange": "the exchange the message came from (neutron, dhcp_agent_fanout, ...)",
    "routing_key": "its routing key (q-reports-plugin, notifications.info, dhcp_agent.<host>, ...)",
    "method": "the RPC method or the notification's event_type (report_state, network.delete.end, ...)",
    "host": "for heartbeats: the agent's host",
    "agent_type": "for heartbeats: the agent type ('L3 agent', 'DHCP agent', ...)",
    "network_id": "for network events: the network's id",
    "body": "the decoded message (inner oslo.message) without _context_* keys, e.g. body.args",
    "context": "the _context_* keys without the prefix (secrets read ***)",
    "error": "for undecodable messages: why",
}

_QUOTES = {"'": "'", '"': '"', "`": "`"}
_OPEN = "([{"
_CLOSE = ")]}"
# Children after the first of these nodes are evaluated against something other than the message.
_SCOPING = frozenset({"subexpression", "index_expression", "projection", "filter_projection",
                      "value_projection", "pipe"})


class DumpFilterError(ValueError):
    """``[Dump] filter`` is not a usable JMESPath expression; the text is one line naming the problem,
    ``detail`` the problem alone (for the configuration loader's own message)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class FilterDataError(ValueError):
    """The filter failed on one message's data with something other than JMESPath's own type check:
    ``kind`` names the error (OverflowError, TypeError, RecursionError, ...), the text says what it was."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def compile_filter(expression: str) -> Any:
    """The compiled JMESPath expression, or DumpFilterError naming it and what is wrong."""
    shown = abbreviate(expression)
    problem = _bound_problem(expression)
    if problem is None:
        try:
            compiled = jmespath.compile(expression)
        except jmespath.exceptions.JMESPathError as exc:
            text = str(exc).strip()
            detail = text.splitlines()[0].rstrip(":") if text else type(exc).__name__
            position = getattr(exc, "lex_position", None)
            problem = detail + ("" if position is None else f" at character {position}")
        except RecursionError:
            problem = "nested too deeply"
        else:
            depth = _tree_depth(compiled.parsed)
            if depth <= MAX_TREE_DEPTH:
                return compiled
            problem = f"{depth} levels deep (at most {MAX_TREE_DEPTH})"
    raise DumpFilterError(
        f"[Dump] filter {shown} is not a valid JMESPath expression: {problem}"
        " (example: method == 'report_state' && host == 'net-1')",
        problem,
    )


def check_filter(expression: str) -> str:
    """What the configuration loader calls: the expression if it compiles, else DumpFilterError."""
    compile_filter(expression)
    return expression


def search(compiled: Any, data: dict[str, Any]) -> Any:
    """``compiled.search(data)``; JMESPath's own errors (a function given a null field) pass through,
    anything else the search raises is a FilterDataError: a RecursionError (nested
    data met by a deep expression), or what jmespath's functions let escape on odd data."""
    try:
        return compiled.search(data)
    except jmespath.exceptions.JMESPathError:
        raise
    except RecursionError:
        raise FilterDataError("RecursionError", "nested too deeply for this message") from None
    except Exception as exc:  # the data, not the expression: any message may hold any JSON
        text = " ".join(str(exc).split())
        raise FilterDataError(type(exc).__name__, text[:200] or "no detail") from None


def unknown_fields(compiled: Any) -> list[str]:
    """The fields the expression reads from the message itself that no message has, in order."""
    found: list[str] = []
    stack: list[tuple[dict[str, Any], bool]] = [(compiled.parsed, True)]
    while stack:
        node, at_root = stack.pop()
        kind = node.get("type")
        name = node.get("value")
        if kind == "field" and at_root and isinstance(name, str) and name not in DESCRIPTION_FIELDS | set(found):
            found.append(name)
        children = node.get("children", [])
        for i, child in reversed(list(enumerate(children))):
            if isinstance(child, dict):
                root = at_root and kind != "expref" and (i == 0 or kind not in _SCOPING)
                stack.append((child, root))
    return found


def field_warnings(compiled: Any) -> list[str]:
    """One warning per field the expression reads that no message has (``host == net1``: net1)."""
    return [f"[Dump] filter reads the field {name!r}, which no message has (fields: {', '.join(FIELDS)}); "
            f"to compare with a string, quote it: '{name}'" for name in unknown_fields(compiled)]


def _bound_problem(expression: str) -> str | None:
    """Too long, or brackets nested too deeply: checked by a linear scan before the recursive parser."""
    if len(expression) > MAX_LENGTH:
        return f"{len(expression)} characters long (at most {MAX_LENGTH})"
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for char in expression:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in _QUOTES:
            quote = char
        elif char in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif char in _CLOSE:
            depth -= 1
    if deepest > MAX_NESTING:
        return f"brackets nested {deepest} deep (at most {MAX_NESTING})"
    return None


def _tree_depth(tree: dict[str, Any]) -> int:
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.get("children", []) if isinstance(child, dict))
    return deepest


def abbreviate(expression: str) -> str:
    """The expression as log lines and errors show it: quoted, cut short if long."""
    if len(expression) <= 80:
        return repr(expression)
    return f"{expression[:60]!r}... ({len(expression)} characters)"
