"""The real ``rpcdaemon`` process, run against the e2e harness's Neutron: config, start, logs, metrics, stop.

Used by the end-to-end tests (through the ``rpcdaemon`` fixture in ``tests/e2e/conftest.py``). Each
``RpcDaemon`` is one run of the installed console script (``rpcdaemon -d -c FILE``, the one next to the
test interpreter) with a config written for the harness: the broker URL with the harness's vhost,
``check_interval = 1``, metrics on a free port, and for ``[L3Agent]``/``[DHCPAgent]`` the harness's
neutron.conf and its no-auth API URL. Its log (stderr, DEBUG) and its stdout (the Dump plugin's lines)
go to files; the tests read those and scrape the Prometheus metrics. A failing test shows the tail of
every daemon log (printed at teardown, so pytest only shows it on failure).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from urllib.parse import quote

from tests import terminal
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.kit.metrics import total
from tests.kit.poll import wait_until
from tests.kit.ports import free_port
from tests.kit.process import RPCDAEMON, DaemonError, DaemonProcess, clean_env, metrics_port_in, run

from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Action, ActionKind

# One INFO line per action (executor): "<Action.describe()>: <status> in 0.12s", and in a dry run
# "DRY RUN would <Action.describe()>". The verbs come from the model, so the pattern follows its wording.
_VERBS = {Action(kind, "ID").describe().removesuffix(" ID"): kind.value for kind in ActionKind}
_VERB = "|".join(re.escape(verb) for verb in _VERBS)
ACTION_LINE = re.compile(
    rf"(?P<dry>DRY RUN would )?(?P<verb>{_VERB}) (?P<id>\S+)(?: .*)?(?(dry)|: (?P<status>done|skipped|failed) in \d)"
)


@dataclass(frozen=True)
class ActionLine:
    kind: str
    resource_id: str
    status: str  # done, skipped, failed, dry-run
    line: str


def broker_url(neutron: NeutronServer) -> str:
    """The kombu URL of the harness's broker, its vhost included (what ``[Daemon] rpchost`` takes)."""
    rabbit = neutron.rabbit
    vhost = quote(neutron.vhost, safe="") if rabbit.isolate_vhost else ""
    return f"amqp://{quote(rabbit.user)}:{quote(rabbit.password)}@{rabbit.host}:{rabbit.port}/{vhost}"


def render_config(
    neutron: NeutronServer,
    *,
    plugins: Iterable[str] = ("L3Agent",),
    metrics_port: int,
    daemon: Mapping[str, object] | None = None,
    agent: Mapping[str, object] | None = None,
    l3: Mapping[str, object] | None = None,
    dhcp: Mapping[str, object] | None = None,
    dump: Mapping[str, object] | None = None,
    coordination: Mapping[str, object] | None = None,
) -> str:
    """rpcdaemon.conf for the harness. ``agent`` applies to both [L3Agent] and [DHCPAgent]; ``l3``,
    ``dhcp``, ``daemon``, ``dump`` and ``coordination`` add to or override their section's keys."""
    sections: dict[str, dict[str, object]] = {
        "Daemon": {"plugins": " ".join(plugins), "rpchost": broker_url(neutron), "check_interval": 1,
                   "metrics_port": metrics_port, **(daemon or {})},
    }
    common = {"conffile": neutron.conf_path, "endpoint": neutron.url, "timeout": 30, **(agent or {})}
    sections["L3Agent"] = {**common, **(l3 or {})}
    sections["DHCPAgent"] = {**common, **(dhcp or {})}
    if dump:
        sections["Dump"] = dict(dump)
    if coordination:
        sections["coordination"] = dict(coordination)
    lines: list[str] = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_ini(value)}" for key, value in keys.items()]
        lines.append("")
    return "\n".join(lines)


def _ini(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class RpcDaemon(DaemonProcess):
    """One run of the real daemon (``tests.kit.process.DaemonProcess``): ``start()`` it, then read ``log()``,
    ``out()``, ``metrics()``; ``stop()`` or ``kill()``. Adds what the end-to-end tests wait for and read."""

    def __init__(self, workdir: Path, name: str, config: Path, args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.args = args
        super().__init__([RPCDAEMON, "-d", "-c", config, *args], name=name, log_path=workdir / f"{name}.log",
                         out_path=workdir / f"{name}.out", cwd=config.parent,
                         metrics_port=metrics_port_in(config.read_text()))

    def wait_ready(self, plugins: int = 1, timeout: float = 30.0) -> None:
        """Until every failover plugin has read Neutron once (the daemon is judging from now on)."""

        def reached() -> bool:
            self.assert_running()
            return self.log().count("Neutron API reachable") >= plugins

        wait_until(reached, timeout, f"{self.name} to reach the Neutron API", self.hint)

    def actions(self, *, statuses: Iterable[str] | None = None) -> list[ActionLine]:
        """The per-action lines logged so far (optionally only those with these statuses)."""
        wanted = set(statuses) if statuses is not None else None
        found = []
        for line in self.log().splitlines():
            m = ACTION_LINE.search(line)
            if m is None:
                continue
            status = "dry-run" if m.group("dry") else m.group("status")
            action = ActionLine(_VERBS[m.group("verb")], m.group("id"), status, line)
            if wanted is None or action.status in wanted:
                found.append(action)
        return found

    def actions_total(self, **labels: str) -> float:
        """Sum of ``rpcdaemon_actions_total`` over the samples matching ``labels`` (plugin, kind, status)."""
        return total(self.metrics(), "rpcdaemon_actions_total", **labels)

    def verdicts(self) -> dict[tuple[str, str], str]:
        """The daemon's current verdict per (agent_type, host), from ``rpcdaemon_agent_verdict``."""
        return {(labels["agent_type"], labels["host"]): labels["verdict"]
                for labels, value in self.metrics().get("rpcdaemon_agent_verdict", []) if value == 1}


class Daemons:
    """Writes configs and starts daemons for one test; ``close()`` kills whatever still runs and prints
    each daemon's log tail (pytest shows it when the test failed)."""

    def __init__(self, workdir: Path, neutron: NeutronServer) -> None:
        self.workdir = workdir
        self.neutron = neutron
        self.started: list[RpcDaemon] = []
        # A leadership lock per test and config name: two configs side by side in one test are two
        # deployments (both act); a daemon left over from an earlier test (frozen, cut off) must not hold
        # this test's daemons in standby. Instances of one deployment pass ``coordination={"group": ...}``
        # (e.g. ``self.group``).
        self.group = f"e2e-{uuid.uuid4().hex[:10]}"

    def config(
        self,
        name: str = "rpcdaemon",
        *,
        plugins: Iterable[str] = ("L3Agent",),
        daemon: Mapping[str, object] | None = None,
        agent: Mapping[str, object] | None = None,
        l3: Mapping[str, object] | None = None,
        dhcp: Mapping[str, object] | None = None,
        dump: Mapping[str, object] | None = None,
        coordination: Mapping[str, object] | None = None,
    ) -> Path:
        """Write ``<name>.conf`` for the harness (see ``render_config``), metrics on a free port."""
        path = self.workdir / f"{name}.conf"
        coordination = {"group": f"{self.group}-{name}", **(coordination or {})}
        path.write_text(render_config(self.neutron, plugins=plugins, metrics_port=free_port(), daemon=daemon,
                                      agent=agent, l3=l3, dhcp=dhcp, dump=dump, coordination=coordination))
        return path

    def start(self, config: Path, *args: str, name: str | None = None) -> RpcDaemon:
        """Start ``rpcdaemon -d -c config *args``; each run gets its own log file."""
        name = name or f"{config.stem}-{len(self.started) + 1}"
        daemon = RpcDaemon(self.workdir, name, config, args).start()
        self.started.append(daemon)
        return daemon

    def close(self) -> None:
        for daemon in self.started:
            with contextlib.suppress(DaemonError):
                if daemon.running:
                    daemon.stop(timeout=10)
            daemon.kill()
            print(daemon.hint())


@contextlib.contextmanager
def daemons_for(workdir: Path, neutron: NeutronServer) -> Iterator[Daemons]:
    daemons = Daemons(workdir, neutron)
    try:
        yield daemons
    finally:
        daemons.close()


# -- what Neutron says: placement read through the harness's REST client ----------------------------


def routers_by_agent(rest: SeedClient, agent_ids: Iterable[str]) -> dict[str, set[str]]:
    """Agent id -> the routers Neutron binds to it (one call per agent)."""
    return {aid: set(rest.routers_on_agent(aid)) for aid in agent_ids}


def networks_by_agent(rest: SeedClient, agent_ids: Iterable[str]) -> dict[str, set[str]]:
    """Agent id -> the networks Neutron binds to it (one call per agent)."""
    return {aid: set(rest.networks_on_agent(aid)) for aid in agent_ids}


def hosts_of(placement: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Invert a placement: resource id -> the agents hosting it."""
    hosts: dict[str, set[str]] = {}
    for aid, resources in placement.items():
        for rid in resources:
            hosts.setdefault(rid, set()).add(aid)
    return hosts


def wait_alive_in_neutron(rest: SeedClient, agent_ids: Iterable[str], alive: bool, timeout: float) -> float:
    """Seconds until Neutron's ``alive`` is as wanted for every agent."""
    ids = list(agent_ids)
    began = time.monotonic()
    wait_until(lambda: all(rest.agent(aid)["alive"] is alive for aid in ids), timeout,
               f"Neutron to say alive={alive} for {ids}")
    return time.monotonic() - began


def add_hosts(fleet: Fleet, neutron: NeutronServer, names: Iterable[str], *, kind: str = "l3") -> dict[str, str]:
    """Start one ``kind`` agent (``l3`` or ``dhcp``) on each named host; returns short name -> agent id
    once Neutron lists them all alive."""
    agent_type = {"l3": L3_AGENT, "dhcp": DHCP_AGENT}[kind]
    full = {name: fleet.add_host(name, l3=kind == "l3", dhcp=kind == "dhcp", ovs=False) for name in names}
    ids = fleet.wait_registered(neutron.url, timeout=30)
    return {name: ids[(host, agent_type)] for name, host in full.items()}


def seed_routers(rest: SeedClient, agent_id: str, count: int, prefix: str) -> list[str]:
    """``count`` new routers, all bound to ``agent_id``."""
    routers = rest.create_routers_bulk(count, prefix=prefix)
    rest.bind_routers_bulk(agent_id, routers)
    return routers


# -- operator commands run as an operator would: on a terminal, or piped ---------------------------


def command_env(**extra: str) -> dict[str, str]:
    """The environment of an operator's command (``clean_env``): a colour terminal, ``extra``."""
    return clean_env(drop=("NO_COLOR",), **{"TERM": "xterm-256color", "COLUMNS": "120", **extra})


def run_command(config: Path, *args: str, user: str = "alice") -> CompletedProcess[str]:
    """``rpcdaemon -c CONFIG ARGS`` as an operator runs it off a terminal, with ``user`` behind sudo (the
    audit trail names them): its status and output."""
    return run([RPCDAEMON, "-c", config, *args], timeout=120, env=command_env(SUDO_USER=user, NO_COLOR="1"))


def run_in_pty(args: list[str], timeout: float, *, interrupt_after: float | None = None,
               env: Mapping[str, str] | None = None) -> tuple[int, str, float]:
    """``rpcdaemon ARGS`` on a pseudo-terminal (``tests.terminal.run_in_pty``): (status, output, seconds)."""
    return terminal.run_in_pty([str(RPCDAEMON), *args], timeout, env=env if env is not None else command_env(),
                               interrupt_after=interrupt_after)
