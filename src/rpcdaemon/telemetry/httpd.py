"""The metrics listener's connections: one thread, one selector, a cap and a deadline, so that no number of
clients of that port can take the daemon's descriptors or threads (its bus and Neutron connections need them).

``rpcdaemon.telemetry.health.HealthServer`` runs a ``GuardedServer`` in its thread and hands it ``answer``, which turns
a request head into the bytes of a whole HTTP/1.0 response (one request per connection, as before). A
connection costs one descriptor and no thread. Each has ``deadline`` seconds (``DEADLINE``) from its accept
to the last byte of its answer, however its bytes trickle in: a slow client holds a slot no longer than an
idle one. At most ``cap`` are open (``connection_cap``: 32, never more than an eighth of the open-files
limit). A connection that arrives at the cap is still accepted: the oldest one still waiting for its
request (else the oldest) is closed to make room, so ``/healthz`` is answered while a flood of idle
connections holds the port (a request sent on connecting is read at once). Answers are computed in this
thread; the endpoints read published state and never wait.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("rpcdaemon")

DEADLINE = 5.0  # seconds from accept to the answer's last byte; a scrape of /metrics takes milliseconds
MAX_CONNECTIONS = 32
HEAD_LIMIT = 16 * 1024  # a request head longer than this is answered 431 (Prometheus and curl send < 1 KiB)
BACKLOG = 128  # connections waiting in the kernel cost the daemon no descriptor
POLL = 0.5  # the longest select: how soon shutdown is seen, and an injected clock's deadlines
ACCEPT_PAUSE = 0.5  # out of descriptors (taken elsewhere in the process): accepting waits this long
WARN_EVERY = 60.0  # one WARNING a minute for a flood, not one per connection
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _canned(status: str) -> bytes:
    body = b'{"error": "' + status.split(" ", 1)[1].lower().encode() + b'"}\n'
    return (f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n\r\n").encode() + body


TOO_LARGE = _canned("431 Request Header Fields Too Large")
INTERNAL_ERROR = _canned("500 Internal Server Error")


def open_files_limit() -> int:
    """This process's soft RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def connection_cap(open_files: int) -> int:
    """The listener's share of the descriptors: ``MAX_CONNECTIONS``, never more than an eighth of them."""
    return max(2, min(MAX_CONNECTIONS, open_files // 8))


class _Every:
    """True at most once per ``seconds`` on ``clock``."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self.clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        now = self.clock()
        if self._last is not None and now - self._last < self.seconds:
            return False
        self._last = now
        return True


class _Connection:
    __slots__ = ("deadline", "head", "out", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.head = bytearray()
        self.out: memoryview | None = None  # the answer still to send, once the request is in


class GuardedServer:
    """Binds and listens at once (OSError if it cannot); ``serve_forever`` in one thread until ``shutdown``."""

    def __init__(self, family: socket.AddressFamily, address: tuple[str, int], answer: Callable[[bytes], bytes], *,
                 cap: int, deadline: float = DEADLINE, clock: Callable[[], float] = time.monotonic) -> None:
        self.answer = answer
        self.cap = cap
        self.deadline = deadline
        self.clock = clock
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(BACKLOG)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address: tuple[Any, ...] = tuple(self.socket.getsockname())
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ, None)
        # In accept order, which is also deadline order: the first is the next to expire.
        self._conns: dict[_Connection, None] = {}
        self._paused_until: float | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self.evicted = 0  # connections closed at the cap to make room for a new one
        self._warn_full = _Every(WARN_EVERY, clock)
        self._warn_accept = _Every(WARN_EVERY, clock)

    @property
    def connections(self) -> int:
        """Connections open now (accepted, not yet answered and closed)."""
        return len(self._conns)

    def serve_forever(self) -> None:
        self._done.clear()
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            self._done.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` and wait for it to return."""
        self._stop.set()
        self._done.wait()

    def server_close(self) -> None:
        """Close every connection and the listening socket (after ``shutdown``, or once the thread died)."""
        for conn in list(self._conns):
            self._close(conn)
        self._selector.close()
        self.socket.close()

    def _step(self) -> None:
        now = self.clock()
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            self._selector.register(self.socket, selectors.EVENT_READ, None)
        first = next(iter(self._conns), None)
        timeout = POLL if first is None else min(POLL, max(0.0, first.deadline - now))
        accept = False
        # Requests before new connections: one whose bytes are in is answered before any eviction.
        for key, mask in self._selector.select(timeout):
            conn = key.data
            if conn is None:
                accept = True
            elif mask & selectors.EVENT_WRITE:
                self._send(conn)
            else:
                self._read(conn)
        if accept:
            self._accept()
        now = self.clock()
        while self._conns:
            first = next(iter(self._conns))
            if first.deadline > now:
                break
            self._close(first)

    def _accept(self) -> None:
        # Half the cap at most per step, so that a connection accepted here is read in the next step before
        # as many newer ones could push it out.
        for _ in range(max(1, self.cap // 2)):
            try:
                sock, _ = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._pause_accepting(exc)
                    return
                continue  # e.g. ECONNABORTED: the client left before it was taken
            sock.setblocking(False)
            if len(self._conns) >= self.cap:
                self._evict()
            conn = _Connection(sock, self.clock() + self.deadline)
            self._conns[conn] = None
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._read(conn)  # a client's request usually arrives with its connection

    def _evict(self) -> None:
        victim = next((c for c in self._conns if c.out is None), None) or next(iter(self._conns))
        self._close(victim)
        self.evicted += 1
        if self._warn_full.due():
            log.warning("metrics listener: %d connections open, its limit; closing the oldest idle one for each new "
                        "one (%d closed so far): a client holding connections open?", self.cap, self.evicted)

    def _pause_accepting(self, exc: OSError) -> None:
        if self._paused_until is None:
            self._selector.unregister(self.socket)
        self._paused_until = self.clock() + ACCEPT_PAUSE
        if self._warn_accept.due():
            log.warning("metrics listener: cannot accept a connection: %s (%d of them open); trying again",
                        exc.strerror or exc, len(self._conns))

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if not data:  # the client gave up
            self._close(conn)
            return
        conn.head += data
        end = _head_end(conn.head)
        if end is None and len(conn.head) <= HEAD_LIMIT:
            return
        conn.out = memoryview(TOO_LARGE if end is None else self._answer(bytes(conn.head[:end])))
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._send(conn)

    def _answer(self, head: bytes) -> bytes:
        try:
            return self.answer(head)
        except Exception:  # a bug in an endpoint: that request fails, the listener goes on
            log.exception("metrics listener: answering a request failed")
            return INTERNAL_ERROR

    def _send(self, conn: _Connection) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        self._conns.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()


def _head_end(data: bytearray) -> int | None:
    """Where the request head ends (its blank line included), or None while it has not."""
    ends = [i + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (i := data.find(mark)) >= 0]
    return min(ends) if ends else None
