"""``BrokerLink.explain``: the words an operator reads for a failed connection, without any network.

The real TLS refusals (from throwaway RabbitMQ nodes) are in tests/component/test_tls.py; here the
branches: no client certificate, a client certificate the broker may not accept, and errors that
must stay as Python states them (certificate verification, host name mismatch, a refused port).
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from rpcdaemon.access import BrokerTLS
from rpcdaemon.broker.connection import make_connection
from rpcdaemon.broker.link import BrokerLink


class _NoNetwork:
    """A real kombu connection whose connect is a no-op, so that ``BrokerLink`` holds it."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def ensure_connection(self, **_: Any) -> None:
        return None


def _link(tls: BrokerTLS | None) -> BrokerLink:
    link = BrokerLink(lambda: _NoNetwork(make_connection("amqp://guest:pw@broker.example:5671//", tls)))  # type: ignore[arg-type,return-value]
    link.connect()
    return link


def _eof() -> ssl.SSLEOFError:
    return ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)")


def _alert() -> ssl.SSLError:
    err = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    err.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    return err


@pytest.mark.parametrize("exc", [_eof(), _alert()], ids=["eof", "tls13-alert"])
def test_refused_handshake_without_a_client_certificate_says_to_set_one(exc: Exception) -> None:
    line = _link(BrokerTLS(ca_file="/etc/ssl/ca.pem")).explain(exc)
    assert line.startswith("TLS handshake refused by the broker (it may require a client certificate:"
                           " set ssl_cert_file/ssl_key_file")
    assert type(exc).__name__ in line


def test_refused_handshake_with_a_client_certificate_points_at_that_certificate() -> None:
    tls = BrokerTLS(ca_file="/etc/ssl/ca.pem", cert_file="/etc/ssl/me.pem", key_file="/etc/ssl/me.key")
    line = _link(tls).explain(_eof())
    assert "TLS handshake refused by the broker (it may not accept the client certificate" in line
    assert "set ssl_cert_file" not in line


@pytest.mark.parametrize(
    "exc",
    [
        ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        ssl.SSLCertVerificationError(1, "hostname mismatch, certificate is not valid for '127.0.0.1'"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_other_errors_stay_as_they_are(exc: Exception) -> None:
    assert _link(BrokerTLS(ca_file="/etc/ssl/ca.pem")).explain(exc) == f"{type(exc).__name__}: {exc}"


def test_a_host_name_the_socket_refuses_is_a_broker_error_said_in_one_line() -> None:
    # UnicodeError from the socket module's IDNA encoding, classified once here: like a name DNS does not
    # know, retried as an outage (the listener's "unexpected" path logged tracebacks and gave up).
    link = BrokerLink(lambda: make_connection("amqp://guest:s3cret@rabbit..example.com:5672//"))
    with pytest.raises(OSError, match="cannot be looked up") as caught:
        link.connect()
    assert link.is_broker_error(caught.value)
    assert link.explain(caught.value) == ("HostNameError: host name 'rabbit..example.com' cannot be looked up: it has "
                                          "an empty label (two dots in a row, or a leading dot)")
