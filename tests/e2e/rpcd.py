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
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import quote

import requests
from prometheus_client.parser import text_string_to_metric_families
from tests import terminal
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer, free_port
from tests.harness.seed import SeedClient

from rpcdaemon.model import DHCP_AGENT, L3_AGENT, Action, ActionKind

RPCDAEMON = Path(sys.executable).parent / "rpcdaemon"
T = TypeVar("T")

# One INFO line per action (executor): "<Action.describe()>: <status> in 0.12s", and in a dry run
# "DRY RUN would <Action.describe()>". The verbs come from the model, so the pattern follows its wording.
_VERBS = {Action(kind, "ID").describe().removesuffix(" ID"): kind.value for kind in ActionKind}
_VERB = "|".join(re.escape(verb) for verb in _VERBS)
ACTION_LINE = re.compile(
    rf"(?P<dry>DRY RUN would )?(?P<verb>{_VERB}) (?P<id>\S+)(?: .*)?(?(dry)|: (?P<status>done|skipped|failed) in \d)"
)


class DaemonError(AssertionError):
    """The daemon did not do what a test waited for; the message carries its log tail."""


@dataclass(frozen=True)
class ActionLine:
    kind: str
    resource_id: str
    status: str  # done, skipped, failed, dry-run
    line: str


def wait_until(condition: Callable[[], T | None], timeout: float, what: str,
               on_timeout: Callable[[], str] = lambda: "", interval: float = 0.25) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` (and a hint) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DaemonError(f"timed out after {timeout:.0f} s waiting for {what}{on_timeout()}")
        time.sleep(interval)


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


class RpcDaemon:
    """One run of the real daemon. ``start()`` it, then read ``log()``, ``metrics()``; ``stop()`` or ``kill()``."""

    def __init__(self, workdir: Path, name: str, config: Path, args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.config = config
        self.args = args
        self.log_path = workdir / f"{name}.log"
        self.out_path = workdir / f"{name}.out"
        self.metrics_port = _metrics_port(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> RpcDaemon:
        log = self.log_path.open("ab")
        out = self.out_path.open("ab")
        self._files = [log, out]
        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)  # the daemon runs as operators run it, not with pytest's "error"
        for var in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(var, None)  # a CI runner under systemd must not make these daemons talk to it
        self.proc = subprocess.Popen(
            [str(RPCDAEMON), "-d", "-c", str(self.config), *self.args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=log, cwd=self.config.parent, env=env,
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for the exit status; SIGKILL (and fail) if it does not stop in ``timeout``."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise DaemonError(f"{self.name} ignored SIGTERM for {timeout:.0f} s{self.hint()}") from None
        self._close_files()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the daemon gets no chance to finish anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_files()

    def _close_files(self) -> None:
        for handle in self._files:
            handle.close()
        self._files = []

    def wait_ready(self, plugins: int = 1, timeout: float = 30.0) -> None:
        """Until every failover plugin has read Neutron once (the daemon is judging from now on)."""
        wait_until(lambda: self._assert_running() or self.log().count("Neutron API reachable") >= plugins,
                   timeout, f"{self.name} to reach the Neutron API", self.hint)

    def _assert_running(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonError(f"{self.name} exited with status {self.proc.returncode}{self.hint()}")
        return False

    # -- the log ------------------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def out(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def hint(self) -> str:
        """Appended to failure messages: the end of the log without the per-request DEBUG lines,
        then its very last lines whatever their level."""
        lines = self.log().splitlines()
        told = [line for line in lines if " DEBUG " not in line][-40:]
        return (f"\n--- {self.name} log ({self.log_path}), last lines above DEBUG ---\n" + "\n".join(told)
                + f"\n--- {self.name} log, last lines ---\n" + "\n".join(lines[-8:]))

    def wait_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """Until a log line matches the regex ``pattern``; returns the first match."""
        compiled = re.compile(pattern)
        return wait_until(lambda: compiled.search(self.log()), timeout, f"{pattern!r} in {self.name}'s log",
                          self.hint, interval=0.1)

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

    def tracebacks(self) -> list[str]:
        return [line for line in self.log().splitlines() if "Traceback" in line]

    # -- the metrics --------------------------------------------------------------------------

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Every sample served on the metrics port: name -> [(labels, value)]."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return samples

    def actions_total(self, **labels: str) -> float:
        """Sum of ``rpcdaemon_actions_total`` over the samples matching ``labels`` (plugin, kind, status)."""
        return sum(value for got, value in self.metrics().get("rpcdaemon_actions_total", [])
                   if all(got.get(k) == v for k, v in labels.items()))

    def pass_stamps(self) -> dict[str, float]:
        """Each failover plugin's ``rpcdaemon_last_pass_timestamp_seconds`` (set by every good check pass)."""
        return {labels["plugin"]: value
                for labels, value in self.metrics().get("rpcdaemon_last_pass_timestamp_seconds", []) if value > 0}

    def wait_passes(self, count: int = 3, timeout: float = 120.0, plugin: str | None = None) -> None:
        """Until every failover plugin (or only ``plugin``) has completed ``count`` more good check passes.

        What a test waits for before it asserts that nothing happened: however slow the machine is, the daemon
        has looked ``count`` times. Each pass stamps a new time; a poll that misses one only waits longer.
        """
        before = self.pass_stamps()
        seen: dict[str, set[float]] = {}

        def advanced() -> bool:
            self._assert_running()
            now = self.pass_stamps()
            for name, stamp in now.items():
                seen.setdefault(name, set()).add(stamp)
            names = [plugin] if plugin is not None else list(now)
            return bool(names) and all(len(seen.get(n, set()) - {before.get(n)}) >= count for n in names)

        wait_until(advanced, timeout, f"{count} check passes of {self.name}", self.hint, interval=0.05)

    def verdicts(self) -> dict[tuple[str, str], str]:
        """The daemon's current verdict per (agent_type, host), from ``rpcdaemon_agent_verdict``."""
        return {(labels["agent_type"], labels["host"]): labels["verdict"]
                for labels, value in self.metrics().get("rpcdaemon_agent_verdict", []) if value == 1}


def _metrics_port(config: Path) -> int:
    m = re.search(r"^metrics_port\s*=\s*(\d+)", config.read_text(), re.MULTILINE)
    return int(m.group(1)) if m else 0


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
    """The environment of an operator's command: no pytest warning filters, a colour terminal, ``extra``."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)  # the command runs as operators run it
    env.pop("NO_COLOR", None)
    env.update(TERM="xterm-256color", COLUMNS="120", **extra)
    return env


def run_command(config: Path, *args: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
    """``rpcdaemon -c CONFIG ARGS`` as an operator runs it off a terminal, with ``user`` behind sudo (the
    audit trail names them): its status and output."""
    env = command_env(SUDO_USER=user, NO_COLOR="1")
    return subprocess.run([str(RPCDAEMON), "-c", str(config), *args], capture_output=True, text=True, timeout=120,
                          env=env, check=False)


def run_in_pty(args: list[str], timeout: float, *, interrupt_after: float | None = None,
               env: Mapping[str, str] | None = None) -> tuple[int, str, float]:
    """``rpcdaemon ARGS`` on a pseudo-terminal (``tests.terminal.run_in_pty``): (status, output, seconds)."""
    return terminal.run_in_pty([str(RPCDAEMON), *args], timeout, env=env if env is not None else command_env(),
                               interrupt_after=interrupt_after)
