"""A second, throwaway RabbitMQ node with a TLS listener, and the certificates it and its clients use.

The shared broker on 5672 is never touched: this node has its own name, ports, config, database, log
and cookie directories under a tmp dir, and is stopped with ``rabbitmqctl -n NODE stop``. Certificates
are made with ``cryptography`` (a dependency of openstacksdk): one CA the broker trusts, a server
certificate for 127.0.0.1/localhost, one for ``evil.example``, a client certificate, and a CA nobody
trusts. Used by ``test_tls.py``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.kit.ports import free_port
from tests.kit.process import clean_env

_RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_missing() -> str | None:
    """Why no TLS node can be started here, or None."""
    if not (_RABBIT_BIN / "rabbitmq-server").exists() and shutil.which("rabbitmq-server") is None:
        return "rabbitmq-server is not installed"
    return None


def _bin(name: str) -> str:
    path = _RABBIT_BIN / name  # the scripts themselves: /usr/sbin's wrappers switch to the rabbitmq user
    return str(path) if path.exists() else (shutil.which(name) or name)


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    evil_cert: Path
    evil_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          *, ca: bool = False, names: tuple[x509.GeneralName, ...] = ()) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                        critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)

    def pem(cert: x509.Certificate, name: str) -> Path:
        path = directory / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key, other_key = _key(), _key()
    ca_cert = _cert("rpcdaemon test CA", ca_key, None, ca=True)
    issuer = (ca_cert.subject, ca_key)
    server_key, evil_key, client_key = _key(), _key(), _key()
    local = (x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1")))
    return Pki(
        ca=pem(ca_cert, "ca.pem"),
        other_ca=pem(_cert("somebody else's CA", other_key, None, ca=True), "other-ca.pem"),
        server_cert=pem(_cert("localhost", server_key, issuer, names=local), "server.pem"),
        server_key=_write_key(server_key, directory / "server.key"),
        evil_cert=pem(_cert("evil.example", evil_key, issuer, names=(x509.DNSName("evil.example"),)), "evil.pem"),
        evil_key=_write_key(evil_key, directory / "evil.key"),
        client_cert=pem(_cert("rpcdaemon", client_key, issuer), "client.pem"),
        client_key=_write_key(client_key, directory / "client.key"),
    )


class TlsBroker:
    """One RabbitMQ node listening only on TLS (``port``), guest allowed from anywhere."""

    def __init__(self, base: Path, *, cert: Path, key: Path, ca: Path, require_client_cert: bool) -> None:
        self.base = base
        self.port = free_port()
        self.node = f"rpcd-tls-{os.getpid()}-{self.port}@localhost"
        base.mkdir(parents=True, exist_ok=True)
        for sub in ("mnesia", "log", "home"):
            (base / sub).mkdir(exist_ok=True)
        verify = "verify_peer" if require_client_cert else "verify_none"
        (base / "rabbitmq.conf").write_text(
            "listeners.tcp = none\n"
            f"listeners.ssl.default = {self.port}\n"
            f"ssl_options.cacertfile = {ca}\n"
            f"ssl_options.certfile = {cert}\n"
            f"ssl_options.keyfile = {key}\n"
            f"ssl_options.verify = {verify}\n"
            f"ssl_options.fail_if_no_peer_cert = {'true' if require_client_cert else 'false'}\n"
            "loopback_users = none\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        self.env = clean_env(
            HOME=str(base / "home"),  # its own Erlang cookie
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(free_port()),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
        )
        self._process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start the node without waiting (several nodes boot in parallel); then ``wait_ready``."""
        with (self.base / "server.out").open("wb") as out:
            self._process = subprocess.Popen([_bin("rabbitmq-server")], env=self.env, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self._process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"TLS RabbitMQ node exited: see {self.base / 'server.out'}")
            done = subprocess.run([_bin("rabbitmqctl"), "-n", self.node, "await_startup", "--timeout", "2"],
                                  env=self.env, capture_output=True, check=False)
            if done.returncode == 0:
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"TLS RabbitMQ node did not start within {timeout:g} s: see {self.base}")

    def stop(self) -> None:
        if self._process is None:
            return
        subprocess.run([_bin("rabbitmqctl"), "-n", self.node, "stop"], env=self.env, capture_output=True,
                       check=False, timeout=60)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()  # only the process this fixture started
            self._process.wait(timeout=10)
        self._process = None
