"""TLS to RabbitMQ on real brokers: two throwaway TLS-only RabbitMQ nodes (``tls_broker``), reached
through the real ``BusListener`` / ``make_connection`` path and through ``resolve_settings``.

``evil`` presents a certificate for evil.example signed by the trusted CA and does not ask for a client
certificate; ``strict`` presents a certificate for 127.0.0.1/localhost and demands a client certificate
(``fail_if_no_peer_cert``). Every refusal must be one WARNING naming the broker (password hidden) and why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.tls_broker import Pki, TlsBroker, make_pki, rabbitmq_missing
from tests.kit.poll import poll_until

from rpcdaemon.access import BrokerTLS
from rpcdaemon.broker.connection import make_connection, publish_raw
from rpcdaemon.broker.link import RawMessage, Subscription
from rpcdaemon.config.neutronconf import resolve_settings
from rpcdaemon.config.settings import parse_settings
from rpcdaemon.observing.listener import BusListener

SECRET = "guest"  # the password in the URL; logs must show *** instead
MISMATCH = "address mismatch, certificate is not valid for '127.0.0.1'"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def brokers(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TlsBroker]]:
    missing = rabbitmq_missing()
    if missing:
        pytest.skip(f"TLS broker tests need a local RabbitMQ installation: {missing}")
    base = tmp_path_factory.mktemp("tls-nodes")
    nodes = {
        "evil": TlsBroker(base / "evil", cert=pki.evil_cert, key=pki.evil_key, ca=pki.ca, require_client_cert=False),
        "strict": TlsBroker(base / "strict", cert=pki.server_cert, key=pki.server_key, ca=pki.ca,
                            require_client_cert=True),
    }
    try:
        for node in nodes.values():
            node.launch()  # both boot at once: about 5-7 s in all
        for node in nodes.values():
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def _url(broker: TlsBroker, host: str = "127.0.0.1") -> str:
    return f"amqp://guest:{SECRET}@{host}:{broker.port}//"


SUB = Subscription("rpcdaemon-tls-test", "probe")


def _listen(url: str, tls: BrokerTLS | None, got: list[RawMessage]) -> tuple[BusListener, threading.Event]:
    stop = threading.Event()
    listener = BusListener(url, [SUB], got.append, stop=stop, name="tls", reconnect_backoff=(5.0, 5.0),
                           connection_factory=lambda: make_connection(url, tls))
    listener.start()
    return listener, stop


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "rpcdaemon.observing.listener" and "cannot listen on" in r.getMessage()]


def assert_refused(url: str, tls: BrokerTLS, caplog: pytest.LogCaptureFixture, reason: str) -> None:
    caplog.set_level(logging.DEBUG, logger="rpcdaemon.observing")
    got: list[RawMessage] = []
    listener, stop = _listen(url, tls, got)
    try:
        assert poll_until(lambda: _refusals(caplog), 8.0), "no refusal was logged"
        assert not listener.link().connected
    finally:
        stop.set()
        listener.join(10)
    (record,) = _refusals(caplog)
    line = record.getMessage()
    assert record.levelno == logging.WARNING
    assert not record.exc_info
    assert "\n" not in line
    assert f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in line
    assert f":{SECRET}@" not in line
    assert "***" in line
    assert reason in line, line


def assert_round_trip(url: str, tls: BrokerTLS | None) -> None:
    got: list[RawMessage] = []
    with make_connection(url, tls) as conn:  # declares the exchange, as Neutron would
        publish_raw(conn, SUB.exchange, SUB.routing_key, b'{"before": "listening"}')
    listener, stop = _listen(url, tls, got)
    try:
        assert poll_until(lambda: listener.link().connected, 8.0), "the TLS listener never connected"
        with make_connection(url, tls) as conn:
            publish_raw(conn, SUB.exchange, SUB.routing_key, b'{"over": "tls"}')
        assert poll_until(lambda: got, 8.0), "the message sent over TLS did not arrive"
        assert got[0].body == b'{"over": "tls"}'
    finally:
        stop.set()
        listener.join(10)


def test_client_certificate_and_right_ca_connect(brokers: dict[str, TlsBroker], pki: Pki) -> None:
    tls = BrokerTLS(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    assert_round_trip(_url(brokers["strict"]), tls)
    assert_round_trip(_url(brokers["strict"], "localhost"), tls)  # checked as localhost, not as 127.0.0.1


def test_no_client_certificate_is_refused_when_the_broker_demands_one(
    brokers: dict[str, TlsBroker], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # The broker hangs up right after the handshake ("SSLEOFError: EOF occurred in violation of protocol"):
    # the line must say what to do about it.
    assert_refused(_url(brokers["strict"]), BrokerTLS(ca_file=str(pki.ca)), caplog,
                   "TLS handshake refused by the broker (it may require a client certificate:"
                   " set ssl_cert_file/ssl_key_file")


def test_certificate_for_another_host_is_refused(
    brokers: dict[str, TlsBroker], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    assert_refused(_url(brokers["evil"]), BrokerTLS(ca_file=str(pki.ca)), caplog, MISMATCH)


def test_amqps_url_alone_checks_the_host_name_too(
    brokers: dict[str, TlsBroker], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # The CA comes in via make_connection; the scheme alone must not mean "chain only".
    url = _url(brokers["evil"]).replace("amqp://", "amqps://")
    assert_refused(url, BrokerTLS(ca_file=str(pki.ca)), caplog, MISMATCH)


def test_host_name_check_can_be_turned_off_but_the_chain_is_still_checked(
    brokers: dict[str, TlsBroker], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    assert_round_trip(_url(brokers["evil"]), BrokerTLS(ca_file=str(pki.ca), verify_hostname=False))
    assert_refused(_url(brokers["evil"]), BrokerTLS(ca_file=str(pki.other_ca), verify_hostname=False), caplog,
                   "certificate verify failed")


def test_unknown_ca_is_refused(brokers: dict[str, TlsBroker], pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    tls = BrokerTLS(ca_file=str(pki.other_ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    assert_refused(_url(brokers["strict"]), tls, caplog, "certificate verify failed")


def test_settings_to_listener(brokers: dict[str, TlsBroker], pki: Pki, tmp_path: Path) -> None:
    """rpcdaemon.conf [Daemon] ssl keys over neutron.conf's [oslo_messaging_rabbit] (whose CA is wrong)."""
    neutron = tmp_path / "neutron.conf"
    neutron.write_text(f"[DEFAULT]\ntransport_url = rabbit://guest:{SECRET}@127.0.0.1:{brokers['strict'].port}/\n"
                       f"[oslo_messaging_rabbit]\nssl = true\nssl_ca_file = {pki.other_ca}\n"
                       f"ssl_cert_file = {pki.client_cert}\nssl_key_file = {pki.client_key}\n")
    settings = parse_settings(f"[Daemon]\nplugins = L3Agent\nssl_ca_file = {pki.ca}\n"
                              f"[L3Agent]\nconffile = {neutron}\nendpoint = http://127.0.0.1:9696\n",
                              str(tmp_path / "rpcdaemon.conf"))
    resolved = resolve_settings(settings)
    assert resolved.broker_tls == BrokerTLS(ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                                            key_file=str(pki.client_key))
    assert_round_trip(resolved.broker_url, resolved.broker_tls)
