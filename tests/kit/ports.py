"""A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick), for a test's servers
and for the daemons' metrics listeners."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
