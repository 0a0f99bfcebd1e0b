"""The real RabbitMQ on 127.0.0.1:5672 as the component tests use it: where it is, whether it answers, what
neutron-server and the agents would declare on it, ``rabbitmqctl``, and a thread-safe message collector.

Imported by this folder's conftest.py (its fixtures) and by the tests and helpers here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

import pytest
from kombu.connection import Connection
from kombu.entity import Exchange
from tests.kit.poll import wait_until

from rpcdaemon.broker.link import RawMessage

AMQP_HOST = "127.0.0.1"
AMQP_PORT = 5672
AMQP_URL = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//"
OSLO_URL = f"rabbit://guest:guest@{AMQP_HOST}:{AMQP_PORT}/"


def broker_answers(timeout: float = 3.0) -> str | None:
    """None if an AMQP 0-9-1 broker answers the protocol header, else what went wrong."""
    try:
        with socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if len(frame) < 7 or frame[0] != 1:  # method frame carrying connection.start
        return f"unexpected answer {frame!r}"
    return None


def declare_oslo_exchange(name: str = "neutron", url: str = AMQP_URL, *, durable: bool = False) -> None:
    """Declare a topic exchange as oslo.messaging does (``durable`` is ``amqp_durable_queues``)."""
    with Connection(url) as conn:
        Exchange(name, type="topic", durable=durable, auto_delete=False)(conn.default_channel).declare()


def declare_fanout(topic: str) -> None:
    """What an agent's fanout consumer declares while it is connected (oslo: durable=False, auto_delete)."""
    with Connection(AMQP_URL) as conn:
        Exchange(f"{topic}_fanout", type="fanout", durable=False, auto_delete=True)(conn.default_channel).declare()


def wait_broker_up(deadline: float = 60.0) -> None:
    wait_until(lambda: broker_answers(timeout=1.0) is None, deadline, "RabbitMQ to come back", interval=0.2)


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        pytest.fail("rabbitmqctl is not on PATH; it is needed to inspect and restart the broker", pytrace=False)
    done = subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class Collector:
    """A thread-safe on_message target that remembers every RawMessage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[RawMessage] = []

    def __call__(self, raw: RawMessage) -> None:
        with self._lock:
            self.messages.append(raw)

    def snapshot(self) -> list[RawMessage]:
        with self._lock:
            return list(self.messages)
