"""Drives the fake agents process (``fake_agents.py``) from the test process.

Used by the e2e ``fleet`` fixture, the benchmarks and ``neutron-harness up``. One ``Fleet`` is one
subprocess on the Neutron venv's python hosting every fake agent it is asked to add; commands go as
JSON lines on its stdin. The child exits when its stdin closes (and on SIGTERM when the thread that
started it dies), so fake agents never outlive the test process.

Host names: with ``prefix="t1-"``, ``add_host("a")`` registers host ``t1-a`` and returns that name;
every method accepts either the short or the full name.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import requests
from tests.harness import services

from rpcdaemon.model import DHCP_AGENT, L3_AGENT, OVS_AGENT

if TYPE_CHECKING:
    from tests.harness.neutron_server import NeutronServer

FAKE_AGENTS_PROGRAM = Path(__file__).with_name("fake_agents.py")
KIND_TYPES = {"l3": L3_AGENT, "dhcp": DHCP_AGENT, "ovs": OVS_AGENT}


class FleetError(RuntimeError):
    """The fake agents process refused a command, died, or did not answer in time."""


@dataclass(frozen=True)
class FakeAgentStatus:
    """One fake agent as its process reports it."""

    host: str
    kind: str  # l3, dhcp, ovs
    agent_type: str
    status: str  # running, muted, crashed
    reports: int  # report_state calls answered by Neutron
    failures: int
    last_reply: str | None  # "new", "alive" or "revived"
    start_flag_pending: bool
    rpc_serving: bool
    rpc_calls: dict[str, int] = field(default_factory=dict)  # e.g. router_added_to_agent: 1
    configurations: dict[str, int] = field(default_factory=dict)  # the counts it reports: routers, networks, ...


class Fleet:
    """Fake agents heartbeating to one Neutron. ``close()`` (or ``with``) ends them all."""

    def __init__(
        self,
        *,
        python: Path,
        transport_url: str,
        report_interval: float = 2.0,
        prefix: str = "",
        log_path: Path | None = None,
        command_timeout: float = 60.0,
    ) -> None:
        self.prefix = prefix
        self.report_interval = report_interval
        self.log_path = log_path
        self.command_timeout = command_timeout
        self._hosts: dict[str, tuple[str, ...]] = {}  # full host name -> kinds
        self._next_id = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._log: IO[bytes] | None = log_path.open("ab") if log_path else None
        self._proc = subprocess.Popen(
            [str(python), str(FAKE_AGENTS_PROGRAM), "--transport-url", transport_url,
             "--report-interval", str(report_interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=services.clean_env(),
            preexec_fn=services.die_with_parent,
        )
        threading.Thread(target=self._read_replies, name="fleet-replies", daemon=True).start()
        try:
            self._reply(None, self.command_timeout)
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_server(cls, neutron: NeutronServer, prefix: str = "") -> Fleet:
        """A fleet on ``neutron``'s bus with its report_interval, logging next to Neutron's logs."""
        name = f"fleet-{prefix.strip('-') or 'main'}.log"
        return cls(
            python=neutron.venv.python,
            transport_url=neutron.transport_url,
            report_interval=neutron.report_interval,
            prefix=prefix,
            log_path=neutron.log_dir / name,
        )

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the control channel ------------------------------------------------------------------

    def _read_replies(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _reply(self, request_id: int | None, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise FleetError(f"fake agents did not answer in {timeout:.0f} s{self._log_hint()}") from None
            if line is None:
                code = self._proc.wait()
                raise FleetError(f"fake agents process exited with {code}{self._log_hint()}")
            reply = json.loads(line)
            if reply.get("id") != request_id:
                continue  # the answer to an earlier command that timed out
            if not reply["ok"]:
                raise FleetError(reply["error"])
            return reply["result"]

    def _log_hint(self) -> str:
        return f"; log: {self.log_path}" if self.log_path else ""

    def _command(self, op: str, reply_timeout: float | None = None, **args: Any) -> Any:
        if self._proc.poll() is not None or self._proc.stdin is None:
            raise FleetError(f"fake agents process is gone (exit {self._proc.returncode}){self._log_hint()}")
        self._next_id += 1
        self._proc.stdin.write(json.dumps({"id": self._next_id, "op": op, **args}) + "\n")
        self._proc.stdin.flush()
        return self._reply(self._next_id, reply_timeout or self.command_timeout)

    def host(self, name: str) -> str:
        """The full host name for a short or full ``name`` of a host of this fleet."""
        for candidate in (name, self.prefix + name):
            if candidate in self._hosts:
                return candidate
        raise FleetError(f"no fake host {name!r} in this fleet; hosts: {sorted(self._hosts)}")

    # -- hosts and agents ---------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def hosts(self) -> list[str]:
        return list(self._hosts)

    def add_host(
        self,
        host: str,
        *,
        l3: bool = True,
        dhcp: bool = True,
        ovs: bool = True,
        agent_mode: str = "legacy",
        az: str = "nova",
        l3_config: dict[str, Any] | None = None,
    ) -> str:
        """Start the host's agents (RPC servers up before the first heartbeat); returns its full name.

        ``l3_config`` is merged into the L3 agent's reported ``configurations`` (e.g. ``router_id``,
        ``handle_internal_only_routers``)."""
        full = self.prefix + host
        kinds = self._command("add", host=full, l3=l3, dhcp=dhcp, ovs=ovs, agent_mode=agent_mode, az=az,
                              config=l3_config or {})
        self._hosts[full] = tuple(kinds)
        return full

    def set_host(self, host: str, *, sync_delay: float | None = None, up_delay: float | None = None,
                 broken: bool | None = None) -> dict[str, Any]:
        """How the host's agents do their work: its L3/DHCP agents sync ``sync_delay`` seconds after the
        server tells them, its OVS agent reports the bound ports up ``up_delay`` seconds later; ``broken``
        agents answer RPC but never sync. Returns the host's options as they now are."""
        options = {k: v for k, v in (("sync_delay", sync_delay), ("up_delay", up_delay), ("broken", broken))
                   if v is not None}
        result: dict[str, Any] = self._command("set", host=self.host(host), **options)
        return result

    def crash(self, host: str) -> None:
        """The host dies: its agents stop heartbeating and stop answering RPC."""
        self._command("crash", host=self.host(host))

    def revive(self, host: str) -> None:
        """The host's agents restart: RPC back, heartbeats again with start_flag."""
        self._command("revive", host=self.host(host))

    def mute(self, host: str) -> None:
        """Heartbeats stop but RPC still answers (a broken reporting path, not a dead host)."""
        self._command("mute", host=self.host(host))

    def unmute(self, host: str) -> None:
        self._command("unmute", host=self.host(host))

    def crash_agent(self, host: str, kind: str) -> None:
        """Crash one agent (``l3``, ``dhcp`` or ``ovs``) of the host."""
        self._command("crash", host=self.host(host), kind=_kind(kind))

    def revive_agent(self, host: str, kind: str) -> None:
        self._command("revive", host=self.host(host), kind=_kind(kind))

    def mute_agent(self, host: str, kind: str) -> None:
        self._command("mute", host=self.host(host), kind=_kind(kind))

    def remove(self, host: str) -> None:
        """Crash the host's agents and forget them (Neutron keeps their rows)."""
        full = self.host(host)
        self._command("remove", host=full)
        del self._hosts[full]

    def agents(self) -> list[FakeAgentStatus]:
        return [FakeAgentStatus(**item) for item in self._command("list")]

    def status(self, host: str, kind: str) -> FakeAgentStatus:
        full, kind = self.host(host), _kind(kind)
        for agent in self.agents():
            if agent.host == full and agent.kind == kind:
                return agent
        raise FleetError(f"host {full!r} has no {kind} agent")

    def wait_reported(self, timeout: float = 30.0) -> None:
        """Until Neutron answered a report of every running agent since its (re)start."""
        self._command("wait_reported", reply_timeout=timeout + 5.0, timeout=timeout)

    def wait_registered(self, neutron_url: str, timeout: float = 30.0) -> dict[tuple[str, str], str]:
        """Until every running agent is in ``GET /v2.0/agents`` with alive=true.

        Returns ``{(host, agent_type): agent_id}`` for this fleet's agents.
        """
        wanted = {(a.host, a.agent_type) for a in self.agents() if a.status == "running"}
        deadline = time.monotonic() + timeout
        missing: set[tuple[str, str]] = wanted
        while True:
            try:
                listed = requests.get(f"{neutron_url}/v2.0/agents", timeout=10).json()["agents"]
            except (requests.RequestException, ValueError, KeyError):
                listed = []
            alive = {(a["host"], a["agent_type"]): a["id"] for a in listed if a["alive"]}
            missing = wanted - alive.keys()
            if not missing:
                return {key: ident for key, ident in alive.items() if key[0] in self._hosts}
            if time.monotonic() > deadline:
                raise FleetError(f"agents not alive in Neutron after {timeout:.0f} s: {sorted(missing)[:10]}")
            time.sleep(0.2)

    def rss_bytes(self) -> int:
        return services.rss_of_pid(self._proc.pid) if self._proc.poll() is None else 0

    def close(self) -> None:
        """End the fake agents process (closing its stdin is enough; kill if it lingers)."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._log is not None:
            self._log.close()


def _kind(kind: str) -> str:
    if kind not in KIND_TYPES:
        raise FleetError(f"unknown agent kind {kind!r}; valid: {sorted(KIND_TYPES)}")
    return kind
