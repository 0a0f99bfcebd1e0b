"""An ini text read the way ConfigParser reads it, but keeping where each section and key is.

``settings.parse_settings`` calls ``read_ini``: ConfigParser (no interpolation, no default section,
keys lower-cased) gives the values, a scan of the text gives the line of every section header and
``key =`` line, and every structural problem (a line that is not ``key = value``, a duplicate key or
section) is collected instead of stopping at the first, so that one run reports all of a file's
problems. It knows nothing of rpcdaemon's keys: ``unknown_section`` and ``unknown_key`` word the
error for a name missing from the known ones ``settings`` passes in, with a did-you-mean hint (difflib).
"""

from __future__ import annotations

import configparser
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    key: str  # lower-cased, as ConfigParser's optionxform does
    value: str
    line: int | None  # None for a key written on an indented line (rare; the scan skips those)


@dataclass(frozen=True)
class Section:
    name: str
    line: int
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Problem:
    """Something that keeps the text from being an ini file: where, and what (one line)."""

    line: int | None
    section: str | None
    key: str | None
    message: str


@dataclass(frozen=True)
class IniText:
    sections: tuple[Section, ...]
    problems: tuple[Problem, ...]


def _parser() -> configparser.ConfigParser:
    # No interpolation: a '%' in a broker password must stay a '%'. [DEFAULT] is an ordinary section,
    # not a source of values for every other one. strict=False: duplicates are found by the scan below,
    # all of them, where strict parsing would stop at the first.
    return configparser.ConfigParser(interpolation=None, default_section="\0", empty_lines_in_values=False,
                                     strict=False)


def _scan(text: str, parser: configparser.ConfigParser) -> tuple[dict[str, int], dict[tuple[str, str], int],
                                                                  list[Problem]]:
    """Line of each section header and of each section's keys; duplicates as problems."""
    headers: dict[str, int] = {}
    keys: dict[tuple[str, str], int] = {}
    problems: list[Problem] = []
    section: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or line[0].isspace():
            continue  # blank, comment, or the continuation of a value
        header = parser.SECTCRE.match(line)
        if header:
            section = header.group("header")
            if section in headers:
                problems.append(Problem(number, section, None,
                                        f"duplicate section (first at line {headers[section]})"))
            else:
                headers[section] = number
            continue
        option = parser.OPTCRE.match(line)
        if option is None or section is None:
            continue  # ConfigParser reports these lines itself
        key = parser.optionxform(option.group("option").rstrip())
        if (section, key) in keys:
            problems.append(Problem(number, section, key,
                                    f"duplicate key (first at line {keys[section, key]}; set it once per section)"))
        else:
            keys[section, key] = number
    return headers, keys, problems


def read_ini(text: str) -> IniText:
    """The sections of ``text`` in file order, each key with its value and line, and every problem found."""
    parser = _parser()
    problems: list[Problem] = []
    try:
        parser.read_string(text)
    except configparser.MissingSectionHeaderError as exc:
        # ConfigParser gives up here: nothing after this line was read, so nothing else can be judged.
        return IniText((), (Problem(exc.lineno, None, None,
                                    f"expected a [Section] header before {exc.line.strip()!r}"),))
    except configparser.ParsingError as exc:
        # Raised at the end of the text: everything else was read, so keep going with it.
        lines = text.splitlines()
        problems += [Problem(number, None, None, f"cannot parse {lines[number - 1].strip()!r}: expected 'key = value'")
                     for number, _ in exc.errors]
    except configparser.Error as exc:
        return IniText((), (Problem(None, None, None, " ".join(str(exc).split())),))
    headers, keys, duplicates = _scan(text, parser)
    problems += duplicates
    sections = tuple(
        Section(name, headers.get(name, 0),
                tuple(Entry(key, value, keys.get((name, key))) for key, value in parser.items(name)))
        for name in parser.sections()
    )
    problems.sort(key=lambda p: p.line or 0)
    return IniText(sections, tuple(problems))


def unknown_section(name: str, known: Sequence[str]) -> tuple[str, bool]:
    """What to say of a section not in ``known``, and whether it is a known one spelt in another case."""
    same_but_case = [section for section in known if section.lower() == name.lower()]
    if same_but_case:
        # The seed's ConfigParser matched section names exactly: [l3agent] never configured [L3Agent].
        return f"unknown section (names are case-sensitive); did you mean [{same_but_case[0]}]?", True
    lowered = {section.lower(): section for section in known}
    close = difflib.get_close_matches(name.lower(), lowered, n=1)
    if close:
        return f"unknown section; did you mean [{lowered[close[0]]}]?", False
    return f"unknown section; the sections are {' '.join(f'[{section}]' for section in known)}", False


def unknown_key(section: str, key: str, known: Mapping[str, Sequence[str]]) -> str:
    """'unknown key' and the likeliest intent: a key of another section, or a near spelling.

    ``known`` maps each section to its keys; ``section`` is one of them."""
    elsewhere = [name for name, keys in known.items() if key in keys]
    if elsewhere:
        return f"unknown key in this section; it belongs in {' or '.join(f'[{name}]' for name in elsewhere)}"
    close = difflib.get_close_matches(key, known[section], n=1)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    for other, keys in known.items():
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.8)  # stricter: far-fetched otherwise
        if close:
            return f"unknown key; did you mean {close[0]} in [{other}]?"
    return "unknown key (rpcdaemon --print-example-config lists every key)"
