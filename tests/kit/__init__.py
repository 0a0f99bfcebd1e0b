"""The test kit: the helpers every suite (unit, component, e2e, the harness) shares, each written once.

- ``poll``: ``wait_until`` (fail with what was awaited) and ``poll_until`` (give up quietly), one loop.
- ``clock``: the fake ``Clock`` the deciders, plugins and services are stepped on.
- ``ports``: ``free_port``.
- ``process``: ``clean_env`` (the one environment clean-up of every process a test starts), ``run`` (a
  command to its end) and ``DaemonProcess`` (a daemon a test starts, reads and stops).
- ``metrics``: the Prometheus text reader and what the tests read in it (sums, pass stamps, the leader gauge).
- ``audit``: the audit trail read back, every line checked against the shipped schema.
- ``service``: ``make_service``, the one place a unit test builds a ``Service``.

Fixtures are not here: they live in the conftest.py of the suite that uses them.
"""
