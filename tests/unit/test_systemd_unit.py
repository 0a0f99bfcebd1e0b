"""The shipped ``etc/rpcdaemon.service``: systemd's own checks, what the daemon relies on, and its hardening.

``systemd-analyze verify`` must print nothing at all: it reports unknown keys and bad values as warnings
with exit status 0, so a silent run is the check (a broken copy shows it is not silent by accident).
``systemd-analyze security --offline=yes`` must score 3.0 or lower ("OK"). MemoryDenyWriteExecute=yes
is checked for real: a child process loads the seccomp rule systemd installs for it (libseccomp, as
systemd does) and then runs the daemon's TLS path, an https call through the Neutron adapter.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.config.settings import AgentPluginSettings
from rpcdaemon.daemon.daemonize import OPEN_FILES_CEILING, shutdown_bound

UNIT = Path(__file__).resolve().parents[2] / "etc" / "rpcdaemon.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def unit_keys(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> its values in order (systemd allows a key several times)."""
    keys: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        keys.setdefault(f"{section}.{key}", []).append(value)
    return keys


def verify_problems(unit: Path) -> list[str]:
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60,
                          check=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0:
        lines.append(f"exit status {done.returncode}")
    return lines


@needs_analyze
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    assert verify_problems(UNIT) == []
    # The check is meaningful: a misspelled key, a bad value and a missing binary are all reported.
    for old, new, said in [
        ("WatchdogSec=120", "WatchdogSecs=120", "Unknown key"),
        ("Type=notify", "Type=notifyy", "Failed to parse service type"),
        ("ExecStart=/usr/bin/env", "ExecStart=/nonexistent/env", "is not executable"),
    ]:
        broken = tmp_path / "rpcdaemon.service"
        broken.write_text(UNIT.read_text().replace(old, new))
        problems = verify_problems(broken)
        assert any(said in line for line in problems), (new, problems)


@needs_analyze
def test_security_exposure_is_ok(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(UNIT)], capture_output=True,
                          text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for rpcdaemon\.service: (\d+\.\d+) (\w+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 3.0
    assert match.group(2) == "OK"


def test_the_unit_matches_what_the_daemon_does() -> None:
    keys = unit_keys(UNIT.read_text())
    service = {k.removeprefix("Service."): v for k, v in keys.items() if k.startswith("Service.")}
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["always"]
    assert service["RestartSec"] == ["5"]
    assert service["RestartPreventExitStatus"] == ["2"]  # an invalid configuration
    assert service["User"] == ["neutron"]
    assert service["ExecStart"] == ["/usr/bin/env rpcdaemon -d -c /etc/rpcdaemon.conf"]
    assert service["ExecStartPre"] == ["/usr/bin/env rpcdaemon -c /etc/rpcdaemon.conf --check-config"]
    (path,) = service["Environment"]
    assert path.startswith("PATH=/opt/rpcdaemon/venv/bin:")
    defaults = AgentPluginSettings()
    # The stop bound of a daemon with default settings fits in TimeoutStopSec.
    assert float(service["TimeoutStopSec"][0]) >= shutdown_bound([(defaults.timeout, defaults.retry_attempts)])
    # The watchdog gives a healthy loop twice its longest silence: one API call plus one retry backoff.
    assert float(service["WatchdogSec"][0]) >= 2 * (defaults.timeout + ExecutorPolicy().backoff_max)
    # Never systemd's default soft limit of 1,024 (and what the daemon raises its own soft limit to).
    assert service["LimitNOFILE"] == [str(OPEN_FILES_CEILING)]
    assert service["MemoryDenyWriteExecute"] == ["yes"]
    assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["SystemCallFilter"] == ["@system-service"]


# The seccomp rule behind MemoryDenyWriteExecute=yes (systemd's seccomp_memory_deny_write_execute):
# EPERM for mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC, shmat with SHM_EXEC.
MDWE_CHILD = textwrap.dedent("""
    import ctypes, errno, json, mmap, ssl, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ALLOW, EPERM, MASKED_EQ = 0x7FFF0000, 0x00050000 | errno.EPERM, 7
    ctx = lib.seccomp_init(ALLOW)
    rules = [("mmap", mmap.PROT_WRITE | mmap.PROT_EXEC), ("mprotect", mmap.PROT_EXEC),
             ("pkey_mprotect", mmap.PROT_EXEC), ("shmat", 0o100000)]
    for name, mask in rules:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        assert lib.seccomp_rule_add_array(ctx, EPERM, nr, 1, (Cmp * 1)(Cmp(2, MASKED_EQ, mask, mask))) == 0, name
    assert lib.seccomp_load(ctx) == 0

    try:  # the rule is in force
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        sys.exit("a writable and executable mapping was allowed: the seccomp rule is not in force")

    # Everything the daemon loads, cryptography's and cffi's compiled modules among them.
    import cffi, cryptography.hazmat.bindings._rust, cryptography.x509, kombu, openstack
    import rpcdaemon.cli, rpcdaemon.daemon.wiring
    from rpcdaemon.access import NeutronAccess
    from rpcdaemon.acting.openstack_neutron import OpenStackNeutron

    cert, key = sys.argv[1], sys.argv[2]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/":
                doc = {"versions": [{"id": "v2.0", "status": "CURRENT",
                                     "links": [{"href": f"https://127.0.0.1:{port}/v2.0/", "rel": "self"}]}]}
            else:
                doc = {"agents": [{"id": "a1", "agent_type": "L3 agent", "host": "net-1", "alive": True,
                                   "admin_state_up": True, "configurations": {}}]}
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = OpenStackNeutron.from_access(NeutronAccess(endpoint=f"https://127.0.0.1:{port}", cafile=cert, timeout=10))
    agents = api.list_agents()
    api.close()
    server.shutdown()
    print("ok", [a.host for a in agents])
""")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_memory_deny_write_execute_keeps_tls_working(tmp_path: Path) -> None:
    import ctypes.util

    if ctypes.util.find_library("seccomp") is None:
        pytest.skip("libseccomp is not installed: the rule cannot be loaded here")
    cert, key = _self_signed(tmp_path)
    done = subprocess.run([sys.executable, "-c", MDWE_CHILD, str(cert), str(key)], capture_output=True, text=True,
                          timeout=120, check=False, env={"PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok ['net-1']"
