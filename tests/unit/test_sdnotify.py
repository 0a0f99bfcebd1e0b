"""``sdnotify.Notifier`` against real AF_UNIX datagram sockets (a path, and the abstract namespace).

What systemd reads is what these sockets receive: one datagram per message, ``KEY=value`` lines.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.kit.clock import Clock

from rpcdaemon.telemetry.sdnotify import Notifier, watchdog_seconds, watchdog_warning


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX socket paths end at 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


def drain(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock`` (none arrives later: sending is synchronous)."""
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2.0)
    return got


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    notifier.ready()
    notifier.status("active")
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    assert notifier.is_ready  # READY is remembered, so the service never builds it again


def test_messages_on_a_path_socket(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    with receiver(path) as sock:
        clock = Clock(100.0)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": path}, clock=clock)
        assert notifier.enabled
        notifier.ready("active; L3Agent 2 alive; bus up")
        notifier.ready("again")  # once for the life of the process
        assert drain(sock) == ["READY=1\nSTATUS=active; L3Agent 2 alive; bus up"]

        notifier.status("active; L3Agent 2 alive; bus up")  # what READY carried: not sent again
        notifier.status("active; L3Agent 1 alive 1 dead; bus up")
        notifier.status("active; L3Agent 1 alive 1 dead; bus up")
        assert drain(sock) == ["STATUS=active; L3Agent 1 alive 1 dead; bus up"]

        notifier.watchdog()
        clock.now += 0.5
        notifier.watchdog()  # within a second of the last ping: dropped
        clock.now += 0.5
        notifier.watchdog()
        clock.now += 5.0
        notifier.watchdog()
        assert drain(sock) == ["WATCHDOG=1"] * 3

        notifier.stopping()
        assert drain(sock) == ["STOPPING=1"]
        notifier.close()


def test_abstract_namespace_address() -> None:
    name = f"rpcd-test-{uuid.uuid4().hex}"
    with receiver("\0" + name) as sock:
        notifier = Notifier(f"@{name}")
        notifier.ready()
        notifier.watchdog()
        assert sock.recv(4096) == b"READY=1"
        assert sock.recv(4096) == b"WATCHDOG=1"
        notifier.close()


def test_send_errors_are_logged_once_at_debug_and_never_raised(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rpcdaemon")
    clock = Clock(100.0)
    notifier = Notifier(str(short_dir / "nobody-listens"), clock=clock)
    for n in range(5):
        notifier.status(f"status {n}")
        notifier.watchdog()
        clock.now += 2
    notifier.stopping()
    notifier.close()
    said = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.DEBUG
    assert "nobody-listens" in said[0].getMessage()


def test_a_receiver_that_appears_later_gets_the_next_messages(short_dir: Path) -> None:
    path = str(short_dir / "late")
    notifier = Notifier(path)
    notifier.status("before")  # nobody there: lost, not raised
    with receiver(path) as sock:
        notifier.status("after")
        assert drain(sock) == ["STATUS=after"]
    notifier.close()


@pytest.mark.parametrize(("environ", "pid", "seconds"), [
    ({"WATCHDOG_USEC": "120000000"}, 7, 120.0),
    ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "7"}, 7, 120.0),
    ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "8"}, 7, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, 7, None),
    ({"WATCHDOG_USEC": "soon"}, 7, None),
    ({}, 7, None),
])
def test_watchdog_period_from_the_environment(environ: dict[str, str], pid: int, seconds: float | None) -> None:
    assert watchdog_seconds(environ, pid) == seconds


def test_a_watchdog_shorter_than_twice_the_longest_healthy_silence_is_named() -> None:
    assert watchdog_warning(120.0, [30.0, 20.0], 10.0) is None  # the shipped unit with the default timeout
    assert watchdog_warning(120.0, [], 10.0) is None  # Dump only: no API calls
    said = watchdog_warning(120.0, [30.0, 60.0], 10.0)
    assert said == ("systemd watchdog (WatchdogSec=120s) is short: a healthy check loop may be silent for 70s "
                    "(a Neutron API call of timeout 60s, then a retry backoff); set WatchdogSec to at least 140s")
