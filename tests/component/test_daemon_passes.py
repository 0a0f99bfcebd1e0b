"""``RpcDaemon.wait_passes`` (the kit's ``DaemonProcess``) on the real daemon: what a test waits for before
it asserts that nothing happened is a count of the daemon's good check passes, read from its
``rpcdaemon_last_pass_timestamp_seconds``, not a sleep. Neutron is the scripted noauth endpoint (no agents:
every pass is a good one); the stand-in daemon of tests/unit/test_kit.py covers the passes that fail.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.component.daemon_proc import NeutronStub, RpcDaemon, l3_config
from tests.component.rabbit import AMQP_URL
from tests.kit.metrics import pass_stamps
from tests.kit.poll import wait_until
from tests.kit.ports import free_port
from tests.kit.process import DaemonError


def test_wait_passes_counts_the_real_daemons_good_check_passes(tmp_path: Path, stub: NeutronStub) -> None:
    daemon = RpcDaemon(tmp_path, l3_config(bus_url=AMQP_URL, endpoint=stub.url, neutron_conf=tmp_path / "n.conf",
                                           metrics_port=free_port()))
    daemon.start()
    try:
        def first_pass() -> float | None:
            samples = daemon.metrics_if_answering()  # None while its listener is not up yet
            return pass_stamps(samples).get("L3Agent") if samples is not None else None

        first = wait_until(first_pass, 30, "the daemon's first good pass")
        daemon.wait_passes(3, timeout=60)
        last = daemon.pass_stamps()["L3Agent"]
        assert last > first  # three more passes stamped it since (0.2 s apart: check_interval)
        assert abs(last - time.time()) < 60  # wall-clock time, as alerts read it
        assert daemon.stop() == 0
        with pytest.raises(DaemonError, match="rpcdaemon exited with status 0"):
            daemon.wait_passes(1)  # an ended daemon fails the wait at once, with its log
    finally:
        daemon.cleanup()
    assert daemon.tracebacks() == []
