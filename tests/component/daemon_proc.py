"""The real ``rpcdaemon`` process for the component tests that run it: a scripted Neutron endpoint
(noauth, as ``[L3Agent] endpoint`` talks to), a datagram socket standing in for systemd's notify socket,
a vhost of the test's own on the shared RabbitMQ, and ``RpcDaemon``, the kit's ``DaemonProcess`` on a
config of the test's (``l3_config`` writes the usual one).

Used by the test_*_process.py files here (and the ``stub`` fixture of conftest.py).
"""

from __future__ import annotations

import json
import resource
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.component.rabbit import AMQP_HOST, AMQP_PORT, declare_oslo_exchange, rabbitmqctl
from tests.kit.poll import wait_until
from tests.kit.ports import free_port
from tests.kit.process import RPCDAEMON, DaemonProcess, metrics_port_in, run


class NeutronStub:
    """A Neutron v2.0 API with no agents and no routers, on a port chosen up front (``start`` binds it,
    so a daemon can be started while nothing listens there). ``hang()``: requests are accepted and
    never answered until ``release()``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._hang = threading.Event()
        self._release = threading.Event()
        self.hanging = threading.Event()  # a request is being held
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                stub.requests += 1
                if stub._hang.is_set():
                    stub.hanging.set()
                    stub._release.wait(120)
                path = self.path.split("?")[0]
                if path == "/":
                    doc: dict[str, Any] = {"versions": [{"id": "v2.0", "status": "CURRENT",
                                                         "links": [{"href": f"{stub.url}/v2.0/", "rel": "self"}]}]}
                elif path == "/v2.0/agents":
                    doc = {"agents": []}
                elif path == "/v2.0/routers":
                    doc = {"routers": []}
                else:
                    self._send(404, {"NeutronError": {"type": "HTTPNotFound", "message": path, "detail": ""}})
                    return
                self._send(200, doc)

            def _send(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def hang(self) -> None:
        self._release.clear()
        self.hanging.clear()
        self._hang.set()

    def release(self) -> None:
        self._hang.clear()
        self._release.set()

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class NotifySocket:
    """Where the daemon's sd_notify datagrams go (a short path: AF_UNIX paths end at 108 bytes). A
    reader thread stamps each datagram on arrival, so the spacing of the pings can be measured."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="rpcd-n-", dir="/tmp"))
        self.path = str(self._dir / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.seen: list[tuple[float, str]] = []  # (monotonic time received, message)
        self._lock = threading.Lock()
        self._arrived: list[tuple[float, str]] = []
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._arrived.append((time.monotonic(), data.decode()))

    def poll(self) -> list[tuple[float, str]]:
        """Messages that arrived since the last poll (also kept in ``seen``)."""
        with self._lock:
            new, self._arrived = self._arrived, []
        self.seen += new
        return new

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        def found() -> str | None:
            for _, message in self.poll():
                if predicate(message):
                    return message
            return None

        return str(wait_until(found, timeout, what))

    def close(self) -> None:
        self._closing.set()
        self._reader.join(5)
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class Vhost:
    """A RabbitMQ vhost of the test's own (guest may use it), with Neutron's exchange declared in it.
    Deleting it closes every connection in it: a bus outage for one daemon, the broker untouched."""

    def __init__(self) -> None:
        self.name = f"rpcd-test-{uuid.uuid4().hex[:12]}"
        self.url = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{self.name}"

    def create(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        declare_oslo_exchange(url=self.url)

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)


def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.headers.get("Content-Type", ""), answer.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers.get("Content-Type", ""), err.read()


class IdleFlood:
    """``count`` TCP connections to ``port`` that never send a byte, kept open from this side and renewed
    ``churn`` a second (the oldest closed, a new one opened): what any local user can do to a listener.
    ``dropped`` counts ours that the listener closed (seen as EOF or a reset before we closed them)."""

    def __init__(self, port: int, count: int, *, churn: float = 100.0) -> None:
        self.port = port
        self.count = count
        self.churn = churn
        self.opened = 0
        self.dropped = 0
        self._open: deque[socket.socket] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-flood", daemon=True)

    def start(self) -> IdleFlood:
        self._thread.start()
        return self

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)  # a full accept queue must not hold this thread up: the kernel retries the SYN
        sock.connect_ex(("127.0.0.1", self.port))
        self._open.append(sock)
        self.opened += 1

    def _retire_oldest(self) -> None:
        sock = self._open.popleft()
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except OSError:  # BlockingIOError: still open; ENOTCONN: the handshake has not completed
            closed = False
        sock.close()
        self.dropped += closed

    def _run(self) -> None:
        tick = 0.02
        while len(self._open) < self.count:
            self._connect()
        while not self._stop.wait(tick):
            for _ in range(max(1, round(self.churn * tick))):
                self._retire_oldest()
                self._connect()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)
        while self._open:
            self._open.popleft().close()


def open_files_limit(pid: int) -> tuple[int, int]:
    """The soft and hard RLIMIT_NOFILE of a running process."""
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


class RpcDaemon(DaemonProcess):
    """One real ``rpcdaemon`` on ``config_text`` (written to ``workdir/rpcdaemon.conf``): ``start()`` runs it
    in the foreground (``-d``), its log in ``workdir/stderr.log``; ``start_detached`` lets it fork off."""

    def __init__(self, workdir: Path, config_text: str) -> None:
        self.workdir = workdir
        self.config = workdir / "rpcdaemon.conf"
        self.config.write_text(config_text)
        super().__init__([RPCDAEMON, "-d", "-c", self.config], name="rpcdaemon", log_path=workdir / "stderr.log",
                         cwd=workdir, metrics_port=metrics_port_in(config_text))

    def start_detached(self, pidfile: Path) -> int:
        """Run it without ``-d`` (it returns once the daemon has forked off); the daemon's pid, from ``pidfile``."""
        done = run([RPCDAEMON, "-c", self.config], timeout=30, cwd=self.workdir)
        assert done.returncode == 0, done.stderr
        pid = int(wait_until(lambda: pidfile.read_text().strip() if pidfile.exists() else None, 10, "the pid file"))
        self.adopt(pid)
        return pid


def l3_config(*, bus_url: str, endpoint: str, neutron_conf: Path, metrics_port: int = 0,
              timeout: float = 30.0, extra: str = "") -> str:
    """The L3Agent plugin against ``endpoint`` (noauth), checking every 0.2 s, reconciling every second."""
    neutron_conf.write_text("[DEFAULT]\nagent_down_time = 10\n[AGENT]\nreport_interval = 2\n")
    return (f"[Daemon]\nplugins = L3Agent\nrpchost = {bus_url}\ncheck_interval = 0.2\n"
            f"metrics_port = {metrics_port}\nmetrics_address = 127.0.0.1\n{extra}"
            f"[L3Agent]\nconffile = {neutron_conf}\nendpoint = {endpoint}\ntimeout = {timeout:g}\n"
            "reconcile_interval = 1\nready_timeout = 0\n"
            # a lock of its own: daemons of other tests (or other people's) on this broker are not its group
            f"[coordination]\ngroup = test-{uuid.uuid4().hex[:10]}\n")
