"""Running a command on a pseudo-terminal, as an operator's shell would: what the tests of live displays share
(the demo's fleet table, ``status --watch``, evacuate's progress bar)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence


def run_in_pty(argv: Sequence[str], timeout: float, *, env: Mapping[str, str] | None = None,
               interrupt_after: float | None = None) -> tuple[int, str, float]:
    """Run ``argv`` with a pseudo-terminal as its stdout and stderr: (exit status, output, seconds).
    ``interrupt_after``: send SIGINT (Ctrl-C) that many seconds after its first output (on a loaded machine
    the start alone can take seconds: counted from the start, the Ctrl-C could come before it draws anything).
    A child still running at ``timeout`` is killed and the test fails with what it printed."""
    master, slave = pty.openpty()
    began = time.monotonic()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=dict(env) if env is not None else None, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = began + timeout
    interrupted = False
    first_output: float | None = None
    try:
        while time.monotonic() < deadline:
            if (interrupt_after is not None and not interrupted and first_output is not None
                    and time.monotonic() - first_output >= interrupt_after):
                proc.send_signal(signal.SIGINT)
                interrupted = True
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not data:
                    break
                chunks.append(data)
                first_output = first_output if first_output is not None else time.monotonic()
            elif proc.poll() is not None:
                break
        try:
            code = proc.wait(timeout=max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            tail = b"".join(chunks).decode("utf-8", "replace")[-2000:]
            raise AssertionError(f"{argv[1:]} still running after {timeout:.0f} s"
                                 f"{' (Ctrl-C sent)' if interrupted else ''}; its last output:\n{tail}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace"), time.monotonic() - began
