"""oslo.config-style ini files, read as neutron-server reads them, without importing oslo.config.

``neutronconf`` (agent timings, transport_url, ``[keystone_authtoken]``) and ``brokertls``
(``[oslo_messaging_rabbit]`` ssl keys) read neutron.conf through ``OsloSections``. Like neutron-server's
``--config-file a --config-file b --config-dir d``, several files may be read over each other: in
order, a directory standing for its ``*.conf`` files in sorted order, later values winning. Each value
remembers the file that set it last, so that a message about a key names that file.
"""

from __future__ import annotations

import configparser
import math
import string
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from rpcdaemon.config.conffiles import neutron_conf_files
from rpcdaemon.config.settings import ConfigError
from rpcdaemon.textfile import FileRefused, check_file, read_text

BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def section_key(name: str) -> str:
    """oslo.config lower-cases group names; DEFAULT is the one exception."""
    return "DEFAULT" if name.upper() == "DEFAULT" else name.lower()


class _Template(string.Template):
    # oslo.config's substitution syntax: $opt or ${opt} (DEFAULT) and $group.opt; $$ is a literal $.
    idpattern = r"[_a-z][\._a-z0-9]*"


class OsloSections:
    """Sections of oslo ini files: names case-insensitive except DEFAULT, later values win, quotes and
    ``$`` substitutions handled as oslo.config does. ``source`` names every file read, for messages
    about a key that no file sets; ``origin`` names the file that set a key."""

    def __init__(self, text: str | None = None, source: str = "neutron.conf") -> None:
        self.files: list[str] = []
        self.data: dict[str, dict[str, str]] = {}
        self.origins: dict[tuple[str, str], str] = {}
        if text is not None:
            self.add(text, source)

    @property
    def source(self) -> str:
        return ", ".join(dict.fromkeys(self.files)) or "neutron.conf"

    def add(self, text: str, source: str) -> None:
        """Read one more file over the others: its values win, as with oslo.config's --config-file."""
        parser = configparser.ConfigParser(
            interpolation=None, strict=False, default_section="\0", empty_lines_in_values=False
        )
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # oslo option names keep their case
        try:
            parser.read_string(text, source)
        except configparser.MissingSectionHeaderError as exc:
            raise ConfigError(None, None, None, "expected a [section] header first", source=source,
                              line=exc.lineno) from None
        except configparser.ParsingError as exc:
            raise ConfigError(None, None, None, "cannot parse: expected 'key = value'", source=source,
                              line=exc.errors[0][0]) from None
        self.files.append(source)
        for section in parser.sections():
            name = section_key(section)
            items = parser.items(section)
            self.data.setdefault(name, {}).update(items)
            self.origins.update({(name, key): source for key, _ in items})

    def origin(self, section: str, key: str) -> str:
        """The file that set ``[section] key`` last; every file read when none did."""
        return self.origins.get((section_key(section), key), self.source)

    def has(self, section: str) -> bool:
        return section_key(section) in self.data

    def values(self, section: str) -> dict[str, str]:
        """Every key of ``section``, substituted; empty values left out (oslo: unset)."""
        found = {key: self.get(section, key) for key in self.data.get(section_key(section), {})}
        return {key: value for key, value in found.items() if value}

    def get(self, section: str, key: str) -> str | None:
        raw = self.data.get(section_key(section), {}).get(key)
        if raw is None:
            return None
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            raw = raw[1:-1]
        return _Template(raw.replace(r"\$", "$$")).safe_substitute(_Lookup(self.data))

    def number(self, section: str, key: str, default: float) -> float:
        text = self.get(section, key)
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(section, key, text, "expected a number of seconds > 0", source=self.origin(section, key))
        return value

    def boolean(self, section: str, key: str) -> bool | None:
        text = self.get(section, key)
        if not text:
            return None
        if text.lower() not in BOOLEANS:
            raise ConfigError(section, key, text, "expected true or false", source=self.origin(section, key))
        return BOOLEANS[text.lower()]


class _Lookup(Mapping[str, str]):
    """``$opt`` -> [DEFAULT] opt, ``$group.opt`` -> [group] opt; unknown names stay as written."""

    def __init__(self, data: dict[str, dict[str, str]]) -> None:
        self.data = data

    def __getitem__(self, name: str) -> str:
        group, _, opt = name.rpartition(".")
        return self.data[section_key(group or "DEFAULT")][opt]

    def __iter__(self) -> Iterator[str]:  # Template only looks names up
        return iter(())

    def __len__(self) -> int:
        return 0


def read_files(entries: Sequence[Path]) -> OsloSections:
    """Every file of ``entries`` (``conffiles.neutron_conf_files``: a directory is its sorted ``*.conf``
    files) read over the previous ones, each a regular file within ``textfile.MAX_CONFIG_BYTES``.

    Raises ConfigError naming the file that cannot be read or parsed."""
    sections = OsloSections()
    for path in neutron_conf_files(entries):
        try:
            text = read_text(path)
        except OSError as exc:
            raise ConfigError(None, None, None, f"cannot read: {exc.strerror}", source=str(path)) from None
        except UnicodeDecodeError:
            raise ConfigError(None, None, None, "cannot read: not UTF-8 text", source=str(path)) from None
        except FileRefused as exc:
            raise ConfigError(None, None, None, f"cannot read: {exc}", source=str(path)) from None
        sections.add(text, str(path))
    if not sections.files:  # only empty directories: messages name them
        sections.files = [str(entry) for entry in entries]
    return sections


def check_readable(path: str | None, section: str, key: str, source: str) -> None:
    """A file named by ``[section] key`` of ``source`` must be a regular file that opens for reading (None:
    nothing named); any size (a CA bundle may be large). A FIFO would block the start for ever."""
    if path is None:
        return
    try:
        check_file(path, limit=None)
    except OSError as exc:
        raise ConfigError(section, key, path, f"expected a readable file ({exc.strerror})", source=source) from None
    except FileRefused as exc:
        raise ConfigError(section, key, path, f"expected a readable file ({exc})", source=source) from None
