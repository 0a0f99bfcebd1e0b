"""The running daemon: the service loop, its wiring from settings, pausing, preflight checks, daemonizing."""
