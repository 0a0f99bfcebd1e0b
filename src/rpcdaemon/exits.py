"""Every exit status rpcdaemon gives, in one place (README, "Running it" and "Operator commands").

The daemon: 0 stopped cleanly; 1 could not start (pidfile held, log file not writable) or a part of the
running daemon gave up (systemd's ``Restart=always`` restarts it); 2 the configuration is invalid, told in
one line per problem (the unit's ``RestartPreventExitStatus=2``: restarting cannot help); 3 a stop did not
finish within its bound. The operator commands: 0 done, 1 failed (or, for ``check``, UNKNOWN), 2 a usage
error (an unknown host, a bad option) or, for ``check``, work to do.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a thread of the daemon gave up, it could not start, or a command failed
EXIT_CONFIG = 2  # invalid configuration: the daemon could not start, and a restart cannot help
EXIT_START = EXIT_CONFIG  # what the service returns when its configuration proves unusable at start
EXIT_STUCK = 3  # run() did not return in time after the stop request, or a second signal came
EXIT_USAGE = 2  # an operator command was asked something it cannot do as asked
EXIT_WORK = 2  # check: the daemon's next pass would move something
