"""The metrics listener against hostile clients: ``HealthServer`` on 127.0.0.1 with a small cap and a manual
clock. A request's deadline runs from its accept however its bytes trickle; at the cap the oldest idle
connection makes room, so /healthz still answers; an endless head is refused. And the descriptor budget:
the cap's share of the open-files limit, and the daemon raising its own soft limit (in a child process,
since a lowered hard limit cannot be raised again).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.kit.clock import Clock
from tests.kit.poll import wait_until

from rpcdaemon.telemetry.health import HealthServer, Probe
from rpcdaemon.telemetry.httpd import connection_cap


def alive() -> Probe:
    return Probe(role="active", bus=True, api=(), loop_age=0.5, loop_limit=30.0)


@pytest.fixture
def server(clock: Clock) -> Iterator[HealthServer]:
    s = HealthServer("127.0.0.1", 0, CollectorRegistry(), alive, max_connections=4, deadline=5.0, clock=clock)
    yield s
    s.shutdown()
    s.server_close()


def healthz(server: HealthServer) -> tuple[int, dict[str, Any]]:
    """GET /healthz on a connection of its own: the status and the JSON body."""
    with socket.create_connection(server.server_address[:2], timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: rpcdaemon\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def idle(server: HealthServer) -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=5)


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.settimeout(5)


def closed_by_server(sock: socket.socket) -> bool:
    """Waits (up to the socket's 5 s) for the server's FIN."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_request_has_its_deadline_from_accept_however_slowly_it_trickles_in(server: HealthServer,
                                                                              clock: Clock) -> None:
    with idle(server) as slow:
        slow.sendall(b"GET /hea")
        wait_until(lambda: server.server.connections == 1, what="the slow connection accepted")
        clock.advance(4.0)
        slow.sendall(b"lthz HTTP/1.0\r\n")  # still no blank line: the head is not complete
        assert healthz(server) == (200, {"status": "ok", "loop_age_s": 0.5})  # the listener ran at 4 s
        assert still_open(slow)  # bytes keep coming and 4 s is within the deadline
        clock.advance(1.5)
        assert closed_by_server(slow)  # 5.5 s after its accept: closed, though it sent bytes 1.5 s ago
    assert server.server.connections == 0
    assert healthz(server)[0] == 200


def test_at_its_cap_the_oldest_idle_connection_makes_room_and_healthz_answers(
        server: HealthServer, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rpcdaemon")
    held = [idle(server) for _ in range(4)]
    try:
        wait_until(lambda: server.server.connections == 4, what="four idle connections accepted")
        assert healthz(server)[0] == 200  # a fifth: the oldest idle one was closed for it
        assert closed_by_server(held[0])
        assert [still_open(s) for s in held[1:]] == [True, True, True]
        # Many more idle ones than the cap (and the descriptors it stands for): never more than 4 open.
        for i in range(60):
            held.append(idle(server))
            if i % 10 == 9:
                assert healthz(server) == (200, {"status": "ok", "loop_age_s": 0.5})
            assert server.server.connections <= 4
        held.append(idle(server))  # the last /healthz left a place: four idle ones again
        wait_until(lambda: server.server.connections == 4, what="the listener at its cap")
        assert [still_open(s) for s in held] == [False] * (len(held) - 4) + [True] * 4  # the newest four stay
        warned = [r.getMessage() for r in caplog.records if "connections open, its limit" in r.getMessage()]
        assert warned == ["metrics listener: 4 connections open, its limit; closing the oldest idle one for each new "
                          "one (1 closed so far): a client holding connections open?"]  # once a minute, not per one
        clock.advance(61.0)
        held.append(idle(server))
        wait_until(lambda: len([r for r in caplog.records if "its limit" in r.getMessage()]) == 2, what="the next line")
    finally:
        for sock in held:
            sock.close()


def test_a_head_without_an_end_is_refused(server: HealthServer) -> None:
    with idle(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Padding: " + b"a" * 20000)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 431 Request Header Fields Too Large\r\n")
    assert server.server.connections == 0


@pytest.mark.parametrize(("open_files", "cap"), [(16, 2), (128, 16), (256, 32), (1024, 32), (65536, 32)])
def test_the_listener_takes_at_most_an_eighth_of_the_descriptors(open_files: int, cap: int) -> None:
    assert connection_cap(open_files) == cap


RAISE_CHILD = textwrap.dedent("""
    import resource, sys
    from rpcdaemon.daemon.daemonize import raise_open_files_limit
    soft, hard, ceiling = map(int, sys.argv[1:])
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    print(*raise_open_files_limit(ceiling), *resource.getrlimit(resource.RLIMIT_NOFILE))
""")


@pytest.mark.parametrize(("soft", "hard", "ceiling", "after"), [
    (128, 1024, 65536, "128 1024 1024 1024"),  # systemd's 1,024 / 524,288, smaller: up to the hard limit
    (128, 1024, 512, "128 512 512 1024"),  # never above the ceiling (65,536, what the unit sets)
    (1024, 1024, 65536, "1024 1024 1024 1024"),  # nothing to raise
])
def test_the_daemon_raises_its_soft_open_files_limit(soft: int, hard: int, ceiling: int, after: str) -> None:
    done = subprocess.run([sys.executable, "-c", RAISE_CHILD, str(soft), str(hard), str(ceiling)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == after.split()
