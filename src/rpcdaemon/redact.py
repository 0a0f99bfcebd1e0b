"""Secrets out of everything rpcdaemon shows: URLs, decoded message bodies, and any text at all.

Used by ``settings`` (``ConfigError`` texts), ``cli`` (``--check-config``), ``logs`` (every log line),
``observing.amqpurl`` (broker URLs in logs) and ``observing.decode`` (the Dump plugin's lines). It imports
nothing of rpcdaemon, so every layer may use it.

Where the secret is known it is removed structurally: ``redact_url`` parses a broker URL (every host of a
kombu ``;`` failover list or an oslo ``,`` host list, passwords holding ``/``, spaces, ``@`` or percent
escapes) and rebuilds it with ``***`` for each password; ``redact_mapping`` replaces the values of
secret-named keys (``password``, ``auth_token``, ``_context_auth_token`` ...) in a decoded body;
``redact_value`` does the same for one ``key = value`` setting. ``mask_text`` is the last resort for
free text (log lines, exception texts): a scanner that finds ``scheme://`` URLs, ``secret-key = value``
pairs, HTTP Basic credentials and command-line password options (``-P pw``, ``--password pw``) in time
linear in the text, whatever its content (no backtracking regular expression). It masks the secret and
nothing next to it: a key in a URL path (``.../auth/tokens: ...``) or in a configuration error's
``[Section] key: explanation`` is a name, not a ``key: value`` pair.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
# A key naming a secret contains one of these (case-insensitive) ...
_SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "api-key", "private_key",
                 "privatekey", "private-key")
# ... or has "pw" or "pwd" as a whole part between _ . - (db_pw, pw, pwd; not "upward"). One search.
_SECRET_KEY = re.compile("|".join([*map(re.escape, _SECRET_WORDS), r"(?<![a-z0-9])pwd?(?![a-z0-9])"]))
# ... unless it only counts or describes one (tokens_count, token_type, token_expires_at).
_NOT_SECRET_SUFFIXES = ("_count", "_ttl", "_expires", "_expires_at", "_type", "_length", "_len")
_MAX_DEPTH = 64  # real messages are < 10 levels deep; deeper structure is not shown
_LOOKAHEAD = 256  # how far past a space mask_text looks for the '@' ending a password

# Each of these patterns is a single character class repeated, or fixed text: linear whatever the input.
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_WORD = re.compile(r"[\w.-]+")
_SEPARATOR = re.compile(r"""['"]?[ \t]*[:=][ \t]*""")
_BARE_VALUE = re.compile(r"""[^\s'",;&})\]]+""")
_URL_END = re.compile(r"""[^\s"'`<>]*""")
_FAILOVER_SPLIT = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]{0,31}://)")
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?")
# A configuration error's "<file, line n>: [Section] " right before a key: what follows "key: " is
# rpcdaemon's own explanation (a value is shown as "key = '***'"). Searched in a bounded window.
_SECTION_BEFORE = re.compile(r": \[[\w.-]{1,64}\] \Z")
_BASIC = re.compile(r"\b[Bb][Aa][Ss][Ii][Cc][ \t]+([A-Za-z0-9+/]{4,}={0,2})")
# A command's password option (ipmitool -P, fence agents' -p / --password), also as a quoted argv list
# ("'-P', 'pw'"): the value after it is masked. Any other option or a port number (-p 2222) is not.
_PASSWORD_OPTION = re.compile(r"(?<![\w-])(-P|-p|--password|--passwd|--pass)['\"]?(?:,[ \t]*|[ \t]+)")
_OPTION_VALUE = re.compile(r"""[^\s'",)\]]+""")


def is_secret_key(key: str) -> bool:
    """Whether a key's value is a secret: ``password``, ``admin_password``, ``_context_auth_token``, ..."""
    lowered = key.lower()
    return _SECRET_KEY.search(lowered) is not None and not lowered.endswith(_NOT_SECRET_SUFFIXES)


# -- URLs ----------------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***``; anything without a password is returned unchanged.

    ``amqp://u:p@h1//;amqp://u:q@h2//`` -> ``amqp://u:***@h1//;amqp://u:***@h2//``;
    ``rabbit://u:p@h1:5672,w:q@h2:5672/v`` -> ``rabbit://u:***@h1:5672,w:***@h2:5672/v``; a password may
    hold any character (``/``, space, ``@``, ``,``, ``%2F``): everything up to the last ``@`` is credentials.
    """
    return ";".join(_redact_one(part) for part in _FAILOVER_SPLIT.split(url))


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _redact_schemeless(url)
    at = rest.rfind("@")
    if at < 0:
        return url
    return f"{scheme}://{_redact_userinfo(rest[:at])}{rest[at:]}"


def _redact_schemeless(text: str) -> str:
    # Not a URL, but "user:pass@host" (a typo'd rpchost, "rabbit:/u:p@h"): hide all before the last '@'.
    at = text.rfind("@")
    return text if at < 0 or ":" not in text[:at] else f"{MASK}{text[at:]}"


def _redact_userinfo(creds: str) -> str:
    """``u1:p1@h1:5672,u2:p2`` (all before the last '@') with each password masked, hosts kept.

    A piece after an '@' starts a new host entry only when it reads ``host[:port],...``; otherwise the
    '@' was part of the previous password."""
    entries: list[tuple[str, str]] = []  # (host[:port] of the previous entry, userinfo of this one)
    head, userinfo = "", ""
    pieces = creds.split("@")
    userinfo = pieces[0]
    for piece in pieces[1:]:
        host, comma, after = piece.partition(",")
        if comma and _HOST.fullmatch(host):
            entries.append((head, userinfo))
            head, userinfo = host, after
        else:
            userinfo = f"{userinfo}@{piece}"
    entries.append((head, userinfo))
    out = []
    for host, info in entries:
        user, colon, _ = info.partition(":")
        shown = f"{user}:{MASK}" if colon else info
        out.append(f"{host},{shown}" if host else shown)
    return "@".join(out)


# -- decoded bodies and settings -----------------------------------------------------------------------


def redact_mapping(obj: Any, _depth: int = 0) -> Any:
    """A copy of ``obj`` (decoded JSON) with secret-named keys' values replaced by ``***`` at any depth,
    and passwords in URLs and ``key=value`` texts inside strings masked. Structure deeper than 64 levels
    is replaced by a placeholder (it cannot be checked cheaply, and no real message has it)."""
    if isinstance(obj, str):
        return mask_text(obj)
    if _depth >= _MAX_DEPTH and isinstance(obj, (Mapping, list, tuple)):
        return f"<nested deeper than {_MAX_DEPTH} levels>"
    if isinstance(obj, Mapping):
        return {
            key: (MASK if isinstance(key, str) and is_secret_key(key) and value not in (None, "")
                  else redact_mapping(value, _depth + 1))
            for key, value in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact_mapping(item, _depth + 1) for item in obj]
    return obj


def redact_value(key: str, value: str) -> str:
    """One setting's value as it may be shown: ``***`` for a secret key, URLs without their passwords."""
    if is_secret_key(key):
        return MASK if value else value
    if _URL_START.match(value.lstrip()):
        return mask_text(redact_url(value))
    if "@" in value and ("url" in key.lower() or "host" in key.lower()):  # rpchost, transport_url
        return f"{MASK}{value[value.rfind('@') :]}"  # not a URL, yet user:pass@host-like: hide all up to '@'
    return mask_text(value)


def redact_within(text: str, key: str, value: str) -> str:
    """``text`` (an explanation that may quote ``value`` or one of its ``;`` parts) with those quotes
    replaced by their redacted form."""
    if not value:
        return text
    parts = sorted({value, *(part.strip() for part in value.split(";"))}, key=len, reverse=True)
    for part in parts:
        shown = redact_value(key, part)
        if shown == part and "@" in value and not is_secret_key(key):
            # A piece cut out of a URL whose password held the separator: "amqp://u:first" of "...first;rest@h".
            shown = _redact_dangling(part)
        if part and shown != part:
            text = text.replace(part, shown)
    return text


def _redact_dangling(part: str) -> str:
    scheme, sep, rest = part.partition("://")
    user, colon, after = rest.partition(":")
    if not sep or not colon or not after or after.split("/", 1)[0].isdigit() or rest.startswith("["):
        return part
    return f"{scheme}://{user}:{MASK}"


# -- free text: the last resort ------------------------------------------------------------------------


def mask_text(text: str) -> str:
    """``text`` with URL passwords and ``password=...``-like values replaced by ``***``, in linear time.

    A last resort for text whose structure is unknown (log records, exception messages): it finds
    ``scheme://user:pass@host`` URLs (also failover and multi-host lists) and ``<secret key> = value``
    pairs (``password=x``, ``'token': 'x'``, ``X-Auth-Token: x``, ``api_key: x``, ``pw=x``), HTTP Basic
    credentials (``Basic dXNlcjpwdw==``) and password options (``-P x``, ``--password x``). Prefer
    ``redact_url`` and ``redact_mapping`` where the structure is known."""
    lowered = text.lower()
    if "://" in text:
        text = _mask_urls(text)
    if _SECRET_KEY.search(lowered):
        text = _mask_pairs(text)
    if "basic" in lowered:
        text = _mask_basic(text)
    if "-p" in lowered:
        text = _mask_options(text)
    return text


def _mask_urls(text: str) -> str:
    out: list[str] = []
    done = 0  # text[:done] is already in out
    pos = text.find("://")
    while pos >= 0:
        start = pos
        while start > done and pos - start < 32 and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        if start == pos:  # "://" without a scheme in front
            pos = text.find("://", pos + 3)
            continue
        match = _URL_END.match(text, pos + 3)
        end = match.end() if match else pos + 3
        end = _extend_past_space(text, pos + 3, end)
        out.append(text[done:start])
        out.append(redact_url(text[start:end]))
        done = end
        pos = text.find("://", end)
    out.append(text[done:])
    return "".join(out)


def _extend_past_space(text: str, authority: int, end: int) -> int:
    """Where a URL whose password holds a space or quote really ends: at the '@' within a short look ahead.

    Only when what was found so far reads ``user:something`` that is not ``host:port``, has no '@', and
    the '@' comes before the end of the line."""
    found = text[authority:end]
    if "@" in found or found.startswith("["):
        return end
    user, colon, after = found.partition(":")
    if not colon or not user or after.split("/", 1)[0].isdigit():
        return end
    window = text[end : end + _LOOKAHEAD]
    at = window.find("@")
    if at < 0 or "\n" in window[:at] or "://" in window[:at]:
        return end
    host_end = _URL_END.match(text, end + at + 1)
    return host_end.end() if host_end else end + at + 1


def _mask_pairs(text: str) -> str:
    out: list[str] = []
    done = 0
    for word in _WORD.finditer(text):
        if word.start() < done or not is_secret_key(word.group()):
            continue
        if word.start() > 0 and text[word.start() - 1] == "/":
            continue  # a path segment (http://keystone/v3/auth/tokens: ...), not a key
        sep = _SEPARATOR.match(text, word.end())
        if sep is None:
            continue
        if sep.group().strip() == ":" and _SECTION_BEFORE.search(text, max(0, word.start() - 69), word.start()):
            continue  # "[Daemon] rabbit_password: ignored unknown key": a name and an explanation
        value_start = sep.end()
        if value_start >= len(text):
            continue
        quote = text[value_start]
        if quote in "'\"":
            close = text.find(quote, value_start + 1)
            if close < 0:
                close = len(text)
            out.append(f"{text[done:value_start]}{quote}{MASK}{quote}")
            done = min(close + 1, len(text))
            continue
        value = _BARE_VALUE.match(text, value_start)
        if value is None or value.group() == MASK:
            continue
        out.append(f"{text[done:value_start]}{MASK}")
        done = value.end()
    out.append(text[done:])
    return "".join(out)


def _mask_basic(text: str) -> str:
    """``Basic <base64 of user:password>`` (an HTTP Authorization header) with the credentials masked;
    a word after "basic" that does not decode to ``user:password`` is prose and stays."""
    out: list[str] = []
    done = 0
    for match in _BASIC.finditer(text):
        token = match.group(1)
        try:
            decoded = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            continue
        if b":" not in decoded:
            continue
        out.append(f"{text[done:match.start(1)]}{MASK}")
        done = match.end(1)
    out.append(text[done:])
    return "".join(out)


def _mask_options(text: str) -> str:
    """The value after a password option (``-P pw``, ``--password 'p w'``, ``'-P', 'pw'``) masked."""
    out: list[str] = []
    done = 0
    for match in _PASSWORD_OPTION.finditer(text):
        start = match.end()
        if start < done or start >= len(text):
            continue
        quote = text[start]
        if quote in "'\"":
            close = text.find(quote, start + 1)
            end = len(text) if close < 0 else close
            if end > start + 1 and text[start + 1 : end] != MASK:
                out.append(f"{text[done:start + 1]}{MASK}")
                done = end
            continue
        value = _OPTION_VALUE.match(text, start)
        if value is None or value.group() == MASK or value.group().startswith("-"):
            continue  # another option: -P is also fence_ipmilan's --lanplus flag
        if match.group(1) == "-p" and value.group().isdigit() and len(value.group()) <= 5:
            continue  # ssh -p 2222: a port
        out.append(f"{text[done:start]}{MASK}")
        done = value.end()
    out.append(text[done:])
    return "".join(out)
