"""The control channel's link (``ControlLink``): the records of ``rpcdaemon.control`` (the pause, the
active instance's live view, the roll call) kept on the broker as the newest message(s) of a queue each,
on a connection of its own (``control_connection``).
"""

from __future__ import annotations

from typing import Any

from kombu import entity as _entity
from kombu import messaging as _messaging

from rpcdaemon.access import BrokerTLS
from rpcdaemon.broker.connection import Connection, make_connection
from rpcdaemon.broker.link import BrokerLink

# kombu's constructors are untyped; calling them through Any keeps mypy strict for the rest.
_Producer: Any = _messaging.Producer
_Queue: Any = _entity.Queue

CONTROL_HEARTBEAT = 10  # seconds: the AMQP heartbeat of the control channel's connection
CONTROL_IO_TIMEOUT = 5.0  # the control channel's bound on each socket read and write (ControlLink)


class ControlLink(BrokerLink):
    """Records kept on the broker, one per queue: the newest message of a queue of length 1.

    ``write`` publishes a record as a persistent message (optionally with a time to live); the queue's
    ``x-max-length`` of 1 with ``drop-head`` overflow keeps only the newest. ``read`` takes that message
    without acknowledging it and gives it back at once (``requeue``): the record stays for the next reader.
    A reader that looks while another holds it (for the few milliseconds between its get and its requeue)
    finds the queue empty: ``read`` answers None, which callers treat as "nothing new", never as "no
    record". ``durable`` queues (the pause) survive a broker restart, the others (the live view) do not.
    A queue that keeps more (``keep``, the roll call) is read whole with ``read_all``.
    Every call raises on a broker problem (``is_broker_error``); the caller retries."""

    def _queue(self, name: str, durable: bool, keep: int = 1) -> Any:
        return _Queue(name, durable=durable, auto_delete=False,
                      queue_arguments={"x-max-length": keep, "x-overflow": "drop-head"})

    def read(self, name: str, *, durable: bool) -> bytes | None:
        self.connect()
        queue = self._queue(name, durable)(self._conn.default_channel)
        queue.declare()
        message = queue.get(no_ack=False, accept=["application/json"])
        if message is None:
            return None
        body = message.body
        message.requeue()
        return body.encode("utf-8") if isinstance(body, str) else bytes(body)

    def read_all(self, name: str, *, keep: int) -> list[bytes]:
        """Every message of a queue that keeps the ``keep`` newest (a roll call), left in place: all are
        taken unacknowledged, then given back."""
        self.connect()
        queue = self._queue(name, False, keep)(self._conn.default_channel)
        queue.declare()
        held = []
        try:
            for _ in range(keep):
                message = queue.get(no_ack=False, accept=["application/json"])
                if message is None:
                    break
                held.append(message)
        finally:
            for message in held:
                message.requeue()
        return [m.body.encode("utf-8") if isinstance(m.body, str) else bytes(m.body) for m in held]

    def write(self, name: str, body: bytes, *, durable: bool, ttl: float | None = None, keep: int = 1) -> None:
        self.connect()
        channel = self._conn.default_channel
        self._queue(name, durable, keep)(channel).declare()
        producer = _Producer(channel, auto_declare=False)
        producer.publish(body, exchange="", routing_key=name, content_type="application/json",
                         content_encoding="utf-8", delivery_mode=2 if durable else 1,
                         expiration=ttl)


def control_connection(url: str, tls: BrokerTLS | None = None) -> Connection:
    """The connection a ``ControlLink`` uses: the bus URL and TLS, bounded socket calls (a black-holed
    broker fails a read instead of hanging it) and confirmed publishes (a command knows its record landed)."""
    return make_connection(url, tls, heartbeat=CONTROL_HEARTBEAT, io_timeout=CONTROL_IO_TIMEOUT,
                           confirm_publish=not url.startswith("memory://"))
