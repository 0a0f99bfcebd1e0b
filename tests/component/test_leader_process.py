"""Two real ``rpcdaemon -d`` processes with one config on the real RabbitMQ: exactly one is active.

The Neutron endpoint is a port nobody listens on (the API is not what is tested here: the roles are).
The lock group is unique per test, so other suites on the shared broker never meet these instances.
Killing the active one with SIGKILL closes its sockets (the kernel sends FIN): the broker drops its
exclusive queue at once and the standby takes over at its next try (1 s). A SIGTERM releases the lock
on the way out, after the in-flight moves. The real neutron-server scenarios are in tests/e2e.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.rabbit import AMQP_URL
from tests.kit.process import RPCDAEMON, DaemonProcess


def instance(workdir: Path, name: str, config: Path) -> DaemonProcess:
    return DaemonProcess([RPCDAEMON, "-d", "-c", config], name=name, log_path=workdir / f"{name}.log",
                         cwd=config.parent)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    (tmp_path / "neutron.conf").write_text("[DEFAULT]\n")
    config = tmp_path / "rpcdaemon.conf"
    config.write_text(
        f"[Daemon]\nplugins = L3Agent\nrpchost = {AMQP_URL}\ncheck_interval = 0.5\nloglevel = DEBUG\n"
        "[L3Agent]\nconffile = neutron.conf\nendpoint = http://127.0.0.1:9\ntimeout = 1\n"
        f"[coordination]\ngroup = test-{uuid.uuid4().hex}\n"
    )
    made = (instance(tmp_path, "one", config), instance(tmp_path, "two", config))
    yield made
    for inst in made:
        inst.cleanup()


def test_one_of_two_instances_is_active_and_the_other_takes_over_when_it_is_killed(
    pair: tuple[DaemonProcess, DaemonProcess],
) -> None:
    one, two = pair
    one.start()
    one.wait_text("now ACTIVE")
    two.start()
    two.wait_text("now STANDBY (lock rpcdaemon.leader.test-")
    two.wait_text("held by another instance")
    time.sleep(2.0)  # several confirmations and tries: nothing changes
    assert "now ACTIVE" not in two.log()
    assert "API write" not in two.log()

    mark = len(two.log())
    killed = time.monotonic()
    assert one.stop(signal.SIGKILL) == -signal.SIGKILL
    two.wait_text("now ACTIVE", timeout=10.0, after=mark)
    took = time.monotonic() - killed
    print(f"\nSIGKILL of the active instance: the standby active after {took:.2f} s")
    assert took < 4.0  # the kernel closed the killed one's socket: no heartbeat timeout to wait for

    one.start()  # it comes back as a standby
    mark_one = len(one.log())
    one.wait_text("held by another instance", after=mark_one)
    stopped = time.monotonic()
    assert two.stop() == 0  # SIGTERM: it releases the lock on the way out
    one.wait_text("now ACTIVE", timeout=10.0, after=mark_one)
    print(f"SIGTERM of the active instance: the standby active {time.monotonic() - stopped:.2f} s after the signal")
    assert "released: this instance is stopping" in two.log()
    for inst in pair:
        assert "Traceback" not in inst.log(), inst.log()
