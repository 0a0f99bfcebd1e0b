"""Configuration files are read bounded: regular files only, at most 1 MiB, each refusal one line naming
the file and what it is (rpcdaemon.conf with -c, conffile entries, clouds.yaml, TLS files)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rpcdaemon.acting.openstack_neutron import check_cloud
from rpcdaemon.cli import main
from rpcdaemon.textfile import MAX_CONFIG_BYTES, FileRefused, read_text

LIMIT_TEXT = f"more than the 1 MiB ({MAX_CONFIG_BYTES} bytes) a configuration file may hold"


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "fifo.conf"
    os.mkfifo(path)
    yield path
    _release(path)


def _release(path: Path) -> None:
    """Open the FIFO for writing (non-blocking) and close it: a reader blocked on it gets end of file."""
    with contextlib.suppress(OSError):  # ENXIO: no reader waiting
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def within(seconds: float, fifo: Path, call: Callable[[], object]) -> object:
    """``call()`` (its result, or its exception raised here), which must not block on ``fifo``: a reader
    left waiting is released and the test fails."""
    result: list[object] = []
    errors: list[Exception] = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        _release(fifo)
        thread.join(5)
        pytest.fail(f"blocked reading the FIFO {fifo}")
    if errors:
        raise errors[0]
    return result[0]


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main([*argv, "--check-config"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("rpcdaemon: error: ")
    return line


def big_file(path: Path, size: int, head: str = "[Daemon]\n") -> Path:
    """``head``, then a comment line making the file ``size`` bytes."""
    path.write_text(head + "#" * (size - len(head) - 1) + "\n")
    assert path.stat().st_size == size
    return path


def test_rpcdaemon_conf_must_be_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               fifo: Path) -> None:
    assert cli_error(capsys, "-c", "/dev/zero") == (
        "rpcdaemon: error: /dev/zero: cannot read: a character device, not a regular file")
    assert cli_error(capsys, "-c", str(tmp_path)) == (
        f"rpcdaemon: error: {tmp_path}: cannot read: a directory, not a regular file")
    code = within(20, fifo, lambda: main(["-c", str(fifo), "--check-config"]))
    assert code == 2
    assert capsys.readouterr().err == (f"rpcdaemon: error: {fifo}: cannot read: a FIFO (named pipe), not a "
                                       "regular file\n")


def test_rpcdaemon_conf_over_1_mib_is_refused_at_1_mib_it_is_read(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = big_file(tmp_path / "big.conf", MAX_CONFIG_BYTES + 1)
    assert cli_error(capsys, "-c", str(path)) == (
        f"rpcdaemon: error: {path}: cannot read: {MAX_CONFIG_BYTES + 1} bytes, {LIMIT_TEXT}")
    path = big_file(tmp_path / "big.conf", MAX_CONFIG_BYTES, "[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\n")
    assert main(["-c", str(path), "--check-config"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "big", "fifo in a directory"])
def test_conffile_entries_must_be_regular_files_within_the_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 fifo: Path, kind: str) -> None:
    entry: Path = Path("/dev/zero")
    says = "a character device, not a regular file"
    if kind == "fifo":
        entry, says = fifo, "a FIFO (named pipe), not a regular file"
    elif kind == "big":
        entry = big_file(tmp_path / "neutron.conf", MAX_CONFIG_BYTES + 5)
        says = f"{MAX_CONFIG_BYTES + 5} bytes, {LIMIT_TEXT}"
    elif kind == "fifo in a directory":
        entry = tmp_path / "neutron.conf.d"
        entry.mkdir()
        os.mkfifo(entry / "50-pipe.conf")
        says = "a FIFO (named pipe), not a regular file"
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text(f"[Daemon]\nplugins = L3Agent\nrpchost = 127.0.0.1\n[L3Agent]\nconffile = {entry}\n"
                    "endpoint = http://127.0.0.1:9696\n")
    try:
        code = within(20, entry / "50-pipe.conf" if entry.is_dir() else entry,
                      lambda: main(["-c", str(conf), "--check-config"]))
    finally:
        if entry.is_dir():
            _release(entry / "50-pipe.conf")
    assert code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"rpcdaemon: error: {conf}: [L3Agent] conffile = ")
    assert line.endswith(f"expected a readable neutron.conf ({says})")


def test_read_text_refuses_what_it_cannot_bound(tmp_path: Path) -> None:
    # osloini.read_files reads conffile entries through it too (a file may change after the check).
    with pytest.raises(FileRefused, match="a character device, not a regular file"):
        read_text("/dev/zero")
    with pytest.raises(FileRefused, match=f"^{MAX_CONFIG_BYTES + 1} bytes, more than the 1 MiB"):
        read_text(big_file(tmp_path / "big.conf", MAX_CONFIG_BYTES + 1))
    (tmp_path / "crlf.conf").write_bytes(b"[DEFAULT]\r\nx = 1\r\n")
    assert read_text(tmp_path / "crlf.conf") == "[DEFAULT]\nx = 1\n"  # as Path.read_text has it


def test_clouds_yaml_must_be_a_regular_file_within_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             fifo: Path) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(fifo))
    with pytest.raises(ValueError, match=r"clouds\.yaml cloud") as caught:
        within(20, fifo, lambda: check_cloud("mycloud"))
    assert str(caught.value) == (f"clouds.yaml cloud 'mycloud': {fifo}: cannot read: a FIFO (named pipe), "
                                 "not a regular file")
    big = tmp_path / "clouds.yaml"
    big.write_text("clouds:\n  mycloud:\n    auth: {}\n" + "#" * MAX_CONFIG_BYTES + "\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(big))
    with pytest.raises(ValueError, match=r"clouds\.yaml cloud") as caught:
        check_cloud("mycloud")
    size = big.stat().st_size
    assert str(caught.value) == f"clouds.yaml cloud 'mycloud': {big}: cannot read: {size} bytes, {LIMIT_TEXT}"


def test_a_tls_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            fifo: Path) -> None:
    conf = tmp_path / "rpcdaemon.conf"
    conf.write_text(f"[Daemon]\nplugins = Dump\nrpchost = 127.0.0.1\nssl = true\nssl_ca_file = {fifo}\n")
    code = within(20, fifo, lambda: main(["-c", str(conf), "--check-config"]))
    assert code == 2
    assert capsys.readouterr().err == (f"rpcdaemon: error: {conf}: [Daemon] ssl_ca_file = '{fifo}': expected a "
                                       "readable file (a FIFO (named pipe), not a regular file)\n")
