"""A TCP proxy on 127.0.0.1 that can cut a link the way a dead network does: no FIN, no RST, silence.

``TcpProxy(host, port)`` listens on a free local port (``.port``) and forwards each connection to
``host:port`` (RabbitMQ, Redis) in both directions. ``blackhole()`` stops forwarding without closing
anything: bytes already read are dropped, nothing more is read, a side that closes is not told to the
other, and new connections are accepted and then left silent. Both ends keep an open socket and hear
nothing, as when a switch dies or a cable is pulled: only their heartbeats and timeouts can tell.
``restore()`` forwards again (connections cut meanwhile stay cut); ``close()`` closes every socket.
Used by the component tests of the leadership lock and the end-to-end tests of several instances.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType

_POLL = 0.05  # how often a pump looks at the blackhole and close flags


class TcpProxy:
    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.upstream = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(_POLL)
        self.port: int = self._server.getsockname()[1]
        self._blackholed = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.connections = 0  # accepted so far
        self._spawn(self._accept, "tcp-proxy-accept")

    # -- control -------------------------------------------------------------------------------------

    def blackhole(self) -> None:
        self._blackholed.set()

    def restore(self) -> None:
        self._blackholed.clear()

    @property
    def blackholed(self) -> bool:
        return self._blackholed.is_set()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [self._server, *sockets]:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(2.0)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- the threads ---------------------------------------------------------------------------------

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._keep(client)
            if self._blackholed.is_set():
                continue  # accepted, then silence: the client's handshake times out
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            self._keep(upstream)
            self._spawn(self._pump, "tcp-proxy-up", client, upstream)
            self._spawn(self._pump, "tcp-proxy-down", upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(source, selectors.EVENT_READ)
            while not self._closed.is_set():
                if self._blackholed.is_set():
                    self._closed.wait(_POLL)  # read nothing: the sender's data stays unread, unanswered
                    continue
                if not selector.select(_POLL):
                    continue
                data = source.recv(65536)
                if self._blackholed.is_set():
                    continue  # read just as the link died: lost
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)  # a clean close is passed on, while the link is up
                    return
                sink.sendall(data)
        except (OSError, ValueError):
            return  # closed under us (close(), or the other end reset)
        finally:
            selector.close()
