"""Reading a configuration file: a regular file only, and at most ``MAX_CONFIG_BYTES`` of it.

Every configuration file the daemon reads goes through here: rpcdaemon.conf (``settings``), the
``conffile`` neutron.conf files (``conffiles``, ``osloini``), the clouds.yaml files openstacksdk would
read (``acting.openstack_neutron``); ``osloini.check_readable`` (TLS and CA files) takes the regular-file
check without the size bound. A FIFO would block the start for ever, ``/dev/zero`` would eat memory until
a ``MemoryError``, and a 50 MB file is no configuration: each is refused with ``FileRefused``, whose text
says what the file is and what is allowed (the caller names the file). No rpcdaemon imports.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_CONFIG_BYTES = 1024 * 1024  # 1 MiB: hundreds of times the largest neutron.conf seen in the field

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class FileRefused(Exception):
    """Why a file is not read, in words, without the file's name (the caller's message names it)."""


def _too_big(size: str, limit: int) -> FileRefused:
    return FileRefused(f"{size} bytes, more than the {limit / 1024 / 1024:g} MiB ({limit} bytes) a configuration "
                       "file may hold")


def _open(path: Path | str, limit: int | None) -> int:
    """An open descriptor of ``path`` once it is known to be a regular file within ``limit`` bytes."""
    # O_NONBLOCK: a FIFO opens at once (instead of waiting for a writer) so that fstat can refuse it;
    # on a regular file it changes nothing. Raises OSError (missing, permission) for the caller.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise FileRefused(f"{kind}, not a regular file")
        if limit is not None and info.st_size > limit:
            raise _too_big(str(info.st_size), limit)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_file(path: Path | str, *, limit: int | None = MAX_CONFIG_BYTES) -> None:
    """Raise ``FileRefused`` unless ``path`` is a regular file of at most ``limit`` bytes (None: any
    size), ``OSError`` if it cannot be opened for reading. Nothing is read."""
    os.close(_open(path, limit))


def read_text(path: Path | str, *, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``, of at most ``limit`` bytes.

    Raises ``FileRefused`` (not a regular file, too big), ``UnicodeDecodeError`` or ``OSError`` (cannot
    open or read)."""
    fd = _open(path, limit)
    with os.fdopen(fd, "rb") as file:
        data = file.read(limit + 1)  # a file that grew since fstat is still bounded
    if len(data) > limit:
        raise _too_big(f"over {limit}", limit)
    # Newlines translated as a file opened in text mode (Path.read_text) would have them.
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
