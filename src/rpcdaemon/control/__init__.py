"""The control channel: how operator commands reach the daemon, and how they see it.

Two records live on the bus's own RabbitMQ, each the one newest message of a queue of its own
(``broker.control_link.ControlLink``), named after ``[coordination] group`` like the leadership lock:

- ``rpcdaemon.control.<group>`` (durable, persistent): the **control state**
  (``state.ControlState``): a pause (who, why, since when, until when) and a deliberate release of the
  mass-failure brake (same fields, always with an end). ``rpcdaemon pause``, ``resume`` and
  ``release-brake`` write it; every instance reads it every ``POLL`` seconds (``loop.ControlLoop``), so a
  pause holds on every instance, for one started later, across restarts of the daemons and of a
  clustered broker, and with no daemon running at all (the next one to start finds it).
- ``rpcdaemon.view.<group>`` (not durable, each message lives ``VIEW_TTL`` seconds): the **live view**
  of the active instance (``state.DaemonView``: its verdicts, the brake, what it is doing), published
  every ``POLL`` seconds. ``rpcdaemon status`` and ``check`` read it; when it is missing or stale, no
  daemon is acting and they say so and fall back to what the Neutron API says.

Beside them, a **roll call** ``rpcdaemon.instances.<group>`` (not durable, at most ``ROLL_MAX``
messages, each living ``VIEW_TTL`` seconds): every instance, active, standby or dry run, announces itself
there every ``POLL`` seconds (``state.Presence``: host:pid, role, version, since when), and once more as
``stopped`` when it shuts down cleanly. ``rpcdaemon status`` lists the instances from it: an operator sees
that the standbys are there before the day the active one dies.

Every record read off the broker is bounded before it is trusted (``bounded``: size, depth, numbers;
``state``: each field): one that is not is a ``state.RecordError``, never another exception.

Who may steer: whoever can publish to those queues, that is whoever holds the broker credentials of
the configuration file, which is root's and the daemon user's only (mode 0640). An unprivileged local user
cannot read it, so cannot connect, so cannot pause (``commands`` refuse to run without the file). Every
change is written to the audit trail by each instance that sees it, with the ``by`` the command recorded
(the login name behind sudo, and the host). The broker is trusted as it already is for heartbeats: a
party that can publish there can also forge agents' heartbeats.
"""

CONTROL_PREFIX = "rpcdaemon.control."
VIEW_PREFIX = "rpcdaemon.view."
ROLL_PREFIX = "rpcdaemon.instances."
ROLL_MAX = 64  # roll-call messages kept: VIEW_TTL / POLL = 5 per instance, so room for a dozen instances
POLL = 2.0  # seconds between an instance's reads of the control state (and its view publications)
VIEW_TTL = 10.0  # a view older than this is gone from the queue: its daemon stopped publishing


def control_queue(group: str) -> str:
    return CONTROL_PREFIX + group


def view_queue(group: str) -> str:
    return VIEW_PREFIX + group


def roll_queue(group: str) -> str:
    return ROLL_PREFIX + group
