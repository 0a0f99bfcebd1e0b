"""What a ``[L3Agent]``/``[DHCPAgent] conffile`` list stands for: neutron-server's config-file rules.

neutron-server is started as ``--config-file /etc/neutron/neutron.conf --config-file
.../ml2_conf.ini --config-dir /etc/neutron/neutron.conf.d``: files in order, a directory meaning its
``*.conf`` files in sorted order, later values winning. ``conffile`` lists the same entries.
``settings.load_settings`` checks them with ``conffile_problems`` (and hints at an unlisted
``neutron.conf.d`` with ``unlisted_conf_dirs``); ``osloini.read_files`` reads ``neutron_conf_files``.
Pure path logic over the file system; it imports only ``textfile``, so both sides may use it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from rpcdaemon.textfile import FileRefused, check_file


def neutron_conf_files(entries: Sequence[Path]) -> list[Path]:
    """The files ``entries`` stand for, in reading order: a file is itself, a directory its ``*.conf``
    files sorted by name (oslo.config's ``--config-dir``; hidden files left out, as its glob does)."""
    files: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            files += [Path(p) for p in sorted(glob.glob(os.path.join(glob.escape(str(entry)), "*.conf")))]
        else:
            files.append(entry)
    return files


def conffile_problems(entries: Sequence[Path]) -> list[tuple[Path, str]]:
    """(the entry or file at fault, why) for each entry that cannot be read: a file must be a regular
    file that opens, within ``textfile.MAX_CONFIG_BYTES``; a directory must list and each of its
    ``*.conf`` files be such a file; an empty directory is fine."""
    problems: list[tuple[Path, str]] = []
    for number, entry in enumerate(entries, 1):
        which = f"entry {number} of {len(entries)}" if len(entries) > 1 else ""
        files = [entry]
        prefix = f"{which}: " if which else ""
        if entry.is_dir():
            try:
                os.listdir(entry)
            except OSError as exc:
                problems.append((entry, f"{prefix}expected a listable directory ({exc.strerror})"))
                continue
            files = neutron_conf_files([entry])
            prefix = f"in directory {entry}" + (f" ({which})" if which else "") + ": "
        for file in files:
            try:
                check_file(file)
            except OSError as exc:
                problems.append((file, f"{prefix}expected a readable neutron.conf ({exc.strerror})"))
            except FileRefused as exc:
                problems.append((file, f"{prefix}expected a readable neutron.conf ({exc})"))
    return problems


def unlisted_conf_dirs(entries: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(file, its ``<file>.d``) for each listed file whose ``.d`` directory holds ``*.conf`` files but
    is not listed: neutron-server may read it (oslo.config's default config dirs), rpcdaemon does not
    add it by itself."""
    found = []
    for entry in entries:
        beside = entry.with_name(entry.name + ".d")
        if beside not in entries and not entry.is_dir() and beside.is_dir() and neutron_conf_files([beside]):
            found.append((entry, beside))
    return found
