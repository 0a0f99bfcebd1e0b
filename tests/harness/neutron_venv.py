"""The cached virtualenv that holds a real Neutron, its API server (uWSGI) and the MySQL driver.

Called by ``NeutronServer`` and ``Fleet`` (the fake agents run on this venv's python) and by the
``neutron-harness venv`` command. The venv lives under ``~/.cache/rpcdaemon/neutron-venv/<key>``,
where the key names the Neutron version, the Python version and a hash of the requirement list, so a
version bump builds a new one beside the old. A build goes into a temporary directory that is renamed
into place only when complete, under a file lock, so an interrupted build never leaves a half venv and
two pytest processes never build at once. A warm check is one ``stat``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NEUTRON_VERSION = "29.0.0"
REQUIREMENTS: tuple[str, ...] = (f"neutron=={NEUTRON_VERSION}", "uwsgi==2.0.31", "PyMySQL==1.2.4")
# Points at an existing venv (with the requirements above) instead of the cache, e.g. on a machine
# where the cache directory is read-only.
VENV_ENV_VAR = "RPCDAEMON_NEUTRON_VENV"
# The exact versions of everything the venv holds (pip install -c): a new machine builds what CI tested.
CONSTRAINTS = Path(__file__).with_name("neutron-constraints.txt")
_STAMP = "rpcdaemon-venv.json"
_PIP_TIMEOUT_S = 900.0


class VenvUnavailable(RuntimeError):
    """The Neutron venv could not be built (typically: no access to the package index)."""


@dataclass(frozen=True)
class NeutronVenv:
    path: Path
    # Seconds spent in ensure_neutron_venv: about 0 when warm, a minute or two when built.
    seconds: float
    built: bool

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def script(self, name: str) -> Path:
        return self.bin / name


def cache_root() -> Path:
    return Path.home() / ".cache" / "rpcdaemon" / "neutron-venv"


def venv_key() -> str:
    digest = hashlib.sha256("\n".join(REQUIREMENTS).encode() + CONSTRAINTS.read_bytes()).hexdigest()[:10]
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"neutron-{NEUTRON_VERSION}-{py}-{digest}"


def ensure_neutron_venv(log: Path | None = None) -> NeutronVenv:
    """Return the Neutron venv, building it first when it is missing. Raises ``VenvUnavailable``."""
    started = time.monotonic()
    override = os.environ.get(VENV_ENV_VAR)
    if override:
        path = Path(override)
        if not (path / "bin" / "neutron-db-manage").exists():
            raise VenvUnavailable(f"{VENV_ENV_VAR}={override} has no bin/neutron-db-manage")
        return NeutronVenv(path, time.monotonic() - started, built=False)
    root = cache_root()
    final = root / venv_key()
    if _complete(final):
        return NeutronVenv(final, time.monotonic() - started, built=False)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        # Another process may have finished the build while this one waited for the lock.
        if _complete(final):
            return NeutronVenv(final, time.monotonic() - started, built=False)
        _build(root, final, log or root / f"{final.name}.build.log")
    return NeutronVenv(final, time.monotonic() - started, built=True)


def _complete(path: Path) -> bool:
    return (path / _STAMP).is_file() and (path / "bin" / "python").exists()


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(root: Path, final: Path, log: Path) -> None:
    # Leftovers of builds that were killed half way; we hold the lock, so nobody is using them.
    for stale in root.glob(f"{final.name}.building-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    tmp = root / f"{final.name}.building-{os.getpid()}"
    try:
        _run([sys.executable, "-m", "venv", str(tmp)], log)
        pip = [str(tmp / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install"]
        _run([*pip, "--upgrade", "pip"], log)
        _run([*pip, "-c", str(CONSTRAINTS), *REQUIREMENTS], log)
        _relocate_scripts(tmp, final)
        (tmp / _STAMP).write_text(json.dumps({"requirements": list(REQUIREMENTS)}) + "\n")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _relocate_scripts(tmp: Path, final: Path) -> None:
    """Point the scripts' shebangs (and activate, pyvenv.cfg) at the final path the rename creates.

    pip writes the venv's absolute path into each console script; nothing else in a venv depends on
    it (co_filename in cached bytecode is fixed up on import).
    """
    old, new = str(tmp).encode(), str(final).encode()
    for path in [*(tmp / "bin").iterdir(), tmp / "pyvenv.cfg"]:
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if b"\0" not in data[:4096] and old in data:
            path.write_bytes(data.replace(old, new))


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            result = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, timeout=_PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise VenvUnavailable(f"{cmd[-1]!r} took over {_PIP_TIMEOUT_S:.0f} s; see {log}") from exc
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise VenvUnavailable(
            f"building the Neutron venv failed (exit {result.returncode}) at: {' '.join(cmd[-3:])}\n"
            f"(is the package index reachable?) log: {log}\n{tail}"
        )
