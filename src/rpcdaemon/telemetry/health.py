"""The metrics listener's HTTP server: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (doing its job).

``Metrics.serve`` starts a ``HealthServer`` on ``[Daemon] metrics_address:metrics_port``; the service
attaches its ``probe`` (``Service.probe``, a ``Probe`` built from state the check loop and the bus
listener publish under their locks: the HTTP thread only reads). ``/healthz`` is for a liveness check
(restart me if it fails): 200 while the check loop iterates or its pass makes progress, 503 once it
has been silent longer than ``max(3 x check_interval, 30 s)``. ``/readyz`` is for a readiness check:
200 while the bus is connected and each failover plugin's last Neutron API call was answered. Bodies
are small JSON documents of the daemon's own words: no URL, no host name, no error text.

The connections are ``rpcdaemon.telemetry.httpd``'s (one thread, a cap, a deadline: no client of this port can take
the descriptors the bus and the Neutron API need); ``_Handler`` only turns a request head into a response.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from rpcdaemon.telemetry.httpd import DEADLINE, GuardedServer, connection_cap, open_files_limit

log = logging.getLogger("rpcdaemon")

ROLE_ACTIVE, ROLE_STANDBY, ROLE_STARTING = "active", "standby", "starting"
# /healthz fails once the check loop has been silent this many check intervals (and at least LOOP_AGE_FLOOR).
LOOP_AGE_INTERVALS = 3
LOOP_AGE_FLOOR = 30.0


def loop_age_limit(check_interval: float) -> float:
    return max(LOOP_AGE_INTERVALS * check_interval, LOOP_AGE_FLOOR)


@dataclass(frozen=True, slots=True)
class Probe:
    """One look at the daemon, for the health endpoints and the READY notification."""

    role: str
    bus: bool  # the heartbeat listener (the Dump listener in a Dump-only daemon) is connected
    api: tuple[tuple[str, bool | None], ...]  # per failover plugin: last call answered / failed / none yet
    loop_age: float  # seconds since the check loop last iterated or its running pass made progress
    loop_limit: float

    @property
    def alive(self) -> bool:
        return self.loop_age <= self.loop_limit

    @property
    def stuck(self) -> str | None:
        if self.alive:
            return None
        return f"check loop silent for {self.loop_age:.0f}s (limit {self.loop_limit:.0f}s)"

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the daemon is not ready (empty: it is)."""
        out: list[str] = []
        if self.stuck:
            out.append(self.stuck)
        if not self.bus:
            out.append("bus: not connected")
        if self.role == ROLE_STARTING:
            out.append("role: starting (not yet active or standby)")
        elif self.role != ROLE_STANDBY:  # a standby makes no API calls: its API is not its job yet
            for name, ok in self.api:
                if ok is None:
                    out.append(f"{name}: Neutron API not reached yet")
                elif not ok:
                    out.append(f"{name}: Neutron API call failed; retrying")
        return tuple(out)

    @property
    def ready(self) -> bool:
        return not self.reasons

    def healthz(self) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"status": "ok" if self.alive else "stuck", "loop_age_s": round(self.loop_age, 1)}
        if self.stuck:
            body["reason"] = self.stuck
        return (200 if self.alive else 503), body

    def readyz(self) -> tuple[int, dict[str, Any]]:
        reasons = self.reasons
        body = {"ready": not reasons, "role": self.role, "bus": "connected" if self.bus else "down",
                "api": dict(self.api), "reasons": list(reasons)}
        return (503 if reasons else 200), body


ProbeSource = Callable[[], Probe]


class _Handler(BaseHTTPRequestHandler):
    """One request head in, the whole response out, in memory: ``GuardedServer`` owns the socket."""

    server_version = "rpcdaemon"
    sys_version = ""

    def __init__(self, head: bytes, endpoints: HealthServer) -> None:  # not the socketserver protocol: no socket
        self.endpoints = endpoints
        self.client_address = ("", 0)
        self.rfile = io.BytesIO(head)
        self.out = io.BytesIO()
        self.wfile = self.out
        self.handle()

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        try:
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(self.endpoints.registry), content_type, body)
            elif path in ("/healthz", "/readyz"):
                probe = self.endpoints.probe
                if probe is None:
                    status, doc = 503, {"status": "starting", "reason": "the service is not attached yet"}
                else:
                    status, doc = probe().healthz() if path == "/healthz" else probe().readyz()
                self._send(status, json.dumps(doc).encode() + b"\n", "application/json", body)
            else:
                self._send(404, b'{"error": "not found; try /metrics, /healthz or /readyz"}\n', "application/json",
                           body)
        except Exception:  # a bug here must not end the serving thread: log and answer
            log.exception("health server: answering %s failed", path)
            self._send(500, b'{"error": "internal error"}\n', "application/json", body)

    def _send(self, status: int, payload: bytes, content_type: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not news


class HealthServer:
    """Binds at once (OSError if it cannot) and serves from a daemon thread until ``shutdown``. At most
    ``max_connections`` at a time (default: ``connection_cap`` of this process's open-files limit), each
    answered or closed within ``deadline`` seconds on ``clock``."""

    def __init__(self, address: str, port: int, registry: CollectorRegistry, probe: ProbeSource | None, *,
                 max_connections: int | None = None, deadline: float = DEADLINE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        family, sockaddr = _best_family(address, port)
        self.registry = registry
        self.probe = probe
        cap = max_connections or connection_cap(open_files_limit())
        self.server = GuardedServer(family, sockaddr, self.answer, cap=cap, deadline=deadline, clock=clock)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)
        self.thread.start()

    @property
    def server_address(self) -> tuple[Any, ...]:
        return tuple(self.server.server_address)

    def answer(self, head: bytes) -> bytes:
        """The whole response to one request head (the server's thread)."""
        return _Handler(head, self).out.getvalue()

    def attach(self, probe: ProbeSource | None) -> None:
        self.probe = probe

    def shutdown(self) -> None:
        """Stop serving (the thread ends); ``server_close`` then releases the port."""
        self.server.shutdown()

    def server_close(self) -> None:
        self.server.server_close()


def _best_family(address: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """IPv4 or IPv6, as ``address`` resolves (``::1`` needs an AF_INET6 socket)."""
    infos = socket.getaddrinfo(address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))
