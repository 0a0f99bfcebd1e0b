"""Many fake Neutron agents in one process, heartbeating over the real RabbitMQ like real agents.

Runs with the Neutron venv's python (it needs oslo.messaging and neutron-lib), started and driven by
``tests.harness.fleet.Fleet``; never imported by the test process. Each agent sends ``report_state``
as an RPC call exactly as neutron's ``PluginReportStateAPI`` does (topic ``q-reports-plugin``,
version 1.4, ``agent_state={'agent_state': {...}}``, ``time``, ``start_flag`` until the first report
succeeds after a (re)start) every ``report_interval`` seconds. L3 and DHCP agents also serve RPC on
``Target(topic='l3_agent'|'dhcp_agent', server=host)``, answering every method with None, because
Neutron blocks on ``router_added_to_agent`` until the agent answers.

Control: one JSON object per line on stdin, one reply per line on stdout:
  {"id": 1, "op": "add", "host": "h1", "l3": true, "dhcp": true, "ovs": true,
   "agent_mode": "legacy", "az": "nova", "config": {"router_id": "..."}}  (config: extra L3 configurations)
  {"id": 2, "op": "crash" | "revive" | "mute" | "unmute", "host": "h1", "kind": "l3"}  (kind optional)
  {"id": 3, "op": "remove", "host": "h1"}   {"id": 4, "op": "list"}
  {"id": 5, "op": "wait_reported", "timeout": 10}   {"id": 6, "op": "quit"}
  {"id": 7, "op": "set", "host": "h1", "sync_delay": 2, "up_delay": 1, "broken": false}  (each optional)
  -> {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error": "..."}
crash = a dead host (no heartbeats, no RPC); mute = heartbeats stop, RPC still answers; revive =
restart (start_flag again); unmute = heartbeats resume as if nothing happened. The process exits
when stdin closes, so it never outlives the test process.

Work, as the real agents do it (``HostWork``): an L3 agent told ``router_added_to_agent`` /
``routers_updated`` calls ``sync_routers(host, router_ids)`` on ``q-l3-plugin`` after the host's
``sync_delay`` (the server then binds the routers' ports to this host); a DHCP agent told
``network_create_end`` reads ``get_network_info`` and claims (``update_dhcp_port``) or creates
(``create_dhcp_port``) its DHCP port on ``q-plugin``. Then the host's Open vSwitch agent reports the
ports bound to it up with ``update_device_list`` after ``up_delay`` (the server marks them ACTIVE).
``broken`` = the agents answer RPC but never sync (a target that never brings anything up). The
counts in ``configurations`` (L3: routers, ex_gw_ports, interfaces; DHCP: networks, subnets, ports)
follow what each agent was given and what the sync returned, as the real agents recompute them.
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import oslo_messaging
from neutron_lib import context as n_context
from neutron_lib import rpc as n_rpc
from oslo_config import cfg
from oslo_messaging import opts as messaging_opts

LOG = logging.getLogger("fake_agents")
ISO8601 = "%Y-%m-%dT%H:%M:%S.%f"
KINDS = ("l3", "dhcp", "ovs")
RUNNING, MUTED, CRASHED = "running", "muted", "crashed"


def base_state(kind: str, host: str, agent_mode: str, az: str) -> dict[str, Any]:
    """The agent_state dict a real agent of this kind sends (counts of resources stay 0)."""
    if kind == "l3":
        return {
            "binary": "neutron-l3-agent", "host": host, "availability_zone": az, "topic": "l3_agent",
            "agent_type": "L3 agent",
            "configurations": {
                "agent_mode": agent_mode, "handle_internal_only_routers": True,
                "interface_driver": "openvswitch", "log_agent_heartbeats": False, "extensions": [],
                "routers": 0, "ex_gw_ports": 0, "interfaces": 0, "floating_ips": 0,
            },
        }
    if kind == "dhcp":
        return {
            "binary": "neutron-dhcp-agent", "host": host, "availability_zone": az, "topic": "dhcp_agent",
            "agent_type": "DHCP agent",
            "configurations": {
                "dhcp_driver": "neutron.agent.linux.dhcp.Dnsmasq", "dhcp_lease_duration": 86400,
                "log_agent_heartbeats": False, "networks": 0, "subnets": 0, "ports": 0,
            },
        }
    # An L2 agent on the host: Neutron's DHCP scheduler only picks hosts whose L2 agent reaches
    # the network's segment (vxlan via tunnel_types, flat/vlan via bridge_mappings).
    return {
        "binary": "neutron-openvswitch-agent", "host": host, "topic": "N/A",
        "agent_type": "Open vSwitch agent",
        "configurations": {
            "bridge_mappings": {"physnet1": "br-ex"}, "tunnel_types": ["vxlan"],
            "tunneling_ip": "127.0.0.1", "l2_population": False, "arp_responder_enabled": False,
            "enable_distributed_routing": agent_mode != "legacy", "log_agent_heartbeats": False,
            "extensions": [], "datapath_type": "system", "ovs_hybrid_plug": False,
            "integration_bridge": "br-int", "devices": 0, "in_distributed_mode": agent_mode != "legacy",
        },
    }


class AnyMethod:
    """RPC endpoint that accepts every method the server calls or casts, and answers None."""

    target = oslo_messaging.Target(version="1.99")

    def __init__(self, agent: FakeAgent) -> None:
        self._agent = agent

    def __getattr__(self, method: str) -> Any:
        # oslo_* names are probed by the dispatcher (oslo_rpc_server_ping) and must stay absent.
        if method.startswith(("_", "oslo_")):
            raise AttributeError(method)

        def handle(context: Any, **kwargs: Any) -> None:
            self._agent.record_call(method)
            if self._agent.work is not None:  # never blocks: Neutron waits on router_added_to_agent
                self._agent.work.notified(self._agent, method, kwargs)

        return handle


class FakeAgent:
    def __init__(self, kind: str, host: str, agent_mode: str, az: str, interval: float) -> None:
        self.kind, self.host, self.interval = kind, host, interval
        self.state = base_state(kind, host, agent_mode, az)
        self.status = RUNNING
        self.start_flag = True
        self.next_due = 0.0
        self.in_flight = False
        self.reports = self.failures = 0
        self.reported_since_start = False
        self.last_reply: str | None = None
        self.calls: dict[str, int] = {}
        self.server: Any = None
        self.lock = threading.Lock()
        self.work: HostWork | None = None  # set by Fleet.add for L3 and DHCP agents

    def record_call(self, method: str) -> None:
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1

    def start_rpc(self) -> None:
        if self.kind == "ovs" or self.server is not None:
            return
        target = oslo_messaging.Target(topic=self.state["topic"], server=self.host)
        self.server = oslo_messaging.get_rpc_server(
            n_rpc.TRANSPORT, target, [AnyMethod(self)], serializer=n_rpc.RequestContextSerializer(),
        )
        self.server.start()  # declares and consumes <topic>.<host> before this returns

    def stop_rpc(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()
            server.wait()

    def describe(self) -> dict[str, Any]:
        with self.lock:
            calls = dict(self.calls)
        return {
            "host": self.host, "kind": self.kind, "agent_type": self.state["agent_type"],
            "status": self.status, "reports": self.reports, "failures": self.failures,
            "last_reply": self.last_reply, "start_flag_pending": self.start_flag,
            "rpc_serving": self.server is not None, "rpc_calls": calls,
            "configurations": {k: v for k, v in self.state["configurations"].items()
                               if isinstance(v, int) and not isinstance(v, bool)},  # the counts
        }


class Fleet:
    def __init__(self, interval: float, workers: int) -> None:
        self.interval = interval
        self.agents: dict[tuple[str, str], FakeAgent] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="report")
        self.client = n_rpc.get_client(oslo_messaging.Target(topic="q-reports-plugin", version="1.4"))
        self.ticker = threading.Thread(target=self._tick, name="ticker", daemon=True)
        self.ticker.start()
        self.work = Work(self.stopping)

    # -- heartbeats ---------------------------------------------------------------------------

    def _tick(self) -> None:
        while not self.stopping.wait(0.05):
            now = time.monotonic()
            with self.lock:
                due = [a for a in self.agents.values()
                       if a.status == RUNNING and not a.in_flight and a.next_due <= now]
                for agent in due:
                    agent.in_flight = True
                    agent.next_due = now + agent.interval
            for agent in due:
                self.pool.submit(self._report, agent)

    def _report(self, agent: FakeAgent) -> None:
        try:
            with self.lock:
                if agent.status != RUNNING:
                    return
                state = json.loads(json.dumps(agent.state))
                if agent.start_flag:
                    state["start_flag"] = True
            state["uuid"] = str(uuid.uuid4())
            sent = datetime.datetime.now(datetime.UTC).strftime(ISO8601)
            cctxt = self.client.prepare(timeout=agent.interval)
            try:
                reply = cctxt.call(n_context.get_admin_context_without_session(), "report_state",
                                   agent_state={"agent_state": state}, time=sent)
            except Exception as exc:  # timeouts, a broker restart: real agents just try again
                LOG.warning("report_state of %s %s failed: %s", agent.kind, agent.host, exc)
                with self.lock:
                    agent.failures += 1
                return
            with self.lock:
                agent.reports += 1
                agent.last_reply = reply
                if "start_flag" in state and agent.status == RUNNING:
                    agent.start_flag = False
                agent.reported_since_start = True
        finally:
            agent.in_flight = False

    # -- control ------------------------------------------------------------------------------

    def _select(self, host: str, kind: str | None) -> list[FakeAgent]:
        with self.lock:
            chosen = [a for (h, k), a in self.agents.items() if h == host and kind in (None, k)]
        if not chosen:
            raise KeyError(f"no fake {kind or ''} agent on host {host!r}".replace("  ", " "))
        return chosen

    def add(self, host: str, l3: bool = True, dhcp: bool = True, ovs: bool = True,
            agent_mode: str = "legacy", az: str = "nova", config: dict[str, Any] | None = None) -> list[str]:
        kinds = [k for k, wanted in (("l3", l3), ("dhcp", dhcp), ("ovs", ovs)) if wanted]
        with self.lock:
            clash = [k for k in kinds if (host, k) in self.agents]
        if clash:
            raise ValueError(f"host {host!r} already has fake agents {clash}")
        for kind in kinds:
            agent = FakeAgent(kind, host, agent_mode, az, self.interval)
            if config and kind == "l3":  # e.g. router_id, handle_internal_only_routers
                agent.state["configurations"].update(config)
            if kind != "ovs":
                agent.work = self.work.host(host)
            agent.start_rpc()
            with self.lock:
                self.agents[(host, kind)] = agent
        return kinds

    def set(self, host: str, **options: Any) -> dict[str, Any]:
        """Per-host work options: sync_delay, up_delay (seconds), broken (bool)."""
        self._select(host, None)
        return self.work.host(host).configure(**options)

    def crash(self, host: str, kind: str | None = None) -> None:
        for agent in self._select(host, kind):
            with self.lock:
                agent.status = CRASHED
            agent.stop_rpc()

    def mute(self, host: str, kind: str | None = None) -> None:
        for agent in self._select(host, kind):
            with self.lock:
                agent.status = MUTED

    def unmute(self, host: str, kind: str | None = None) -> None:
        for agent in self._select(host, kind):
            with self.lock:
                if agent.status == MUTED:
                    agent.status, agent.next_due = RUNNING, 0.0

    def revive(self, host: str, kind: str | None = None) -> None:
        for agent in self._select(host, kind):
            agent.start_rpc()
            with self.lock:
                agent.status, agent.start_flag, agent.next_due = RUNNING, True, 0.0
                agent.reported_since_start = False

    def remove(self, host: str) -> None:
        self.crash(host)
        with self.lock:
            for key in [key for key in self.agents if key[0] == host]:
                del self.agents[key]

    def list(self) -> list[dict[str, Any]]:
        with self.lock:
            agents = list(self.agents.values())
        return [agent.describe() for agent in agents]

    def wait_reported(self, timeout: float = 30.0) -> None:
        """Until every running agent had a report answered since its (re)start."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                waiting = [f"{a.kind}@{a.host}" for a in self.agents.values()
                           if a.status == RUNNING and not a.reported_since_start]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no report_state answered in {timeout} s for {waiting[:10]}")
            time.sleep(0.05)

    def close(self) -> None:
        # No graceful RPC server stops: the process exits next and the broker drops its consumers.
        self.stopping.set()
        with self.lock:
            for agent in self.agents.values():
                agent.status = CRASHED


class Work:
    """The RPC clients the agents use towards the server, and a timer that runs delayed work in a pool."""

    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping
        self.l3_plugin = n_rpc.get_client(oslo_messaging.Target(topic="q-l3-plugin", version="1.0"))
        self.plugin = n_rpc.get_client(oslo_messaging.Target(topic="q-plugin", version="1.9"))
        self.dhcp_plugin = n_rpc.get_client(oslo_messaging.Target(topic="q-plugin", version="1.1"))
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="work")
        self.hosts: dict[str, HostWork] = {}
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._cond = threading.Condition()
        threading.Thread(target=self._timer, name="work-timer", daemon=True).start()

    def host(self, host: str) -> HostWork:
        with self._cond:
            if host not in self.hosts:
                self.hosts[host] = HostWork(self, host)
            return self.hosts[host]

    def later(self, delay: float, job: Callable[[], None]) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._due, (time.monotonic() + max(0.0, delay), self._seq, job))
            self._cond.notify()

    def _timer(self) -> None:
        while not self.stopping.is_set():
            with self._cond:
                now = time.monotonic()
                if not self._due or self._due[0][0] > now:
                    self._cond.wait(min(0.2, self._due[0][0] - now) if self._due else 0.2)
                    continue
                _, _, job = heapq.heappop(self._due)
            self.pool.submit(self._run, job)

    @staticmethod
    def _run(job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # the server was busy or restarting: the real agents resync later
            LOG.warning("agent work failed: %s: %s", type(exc).__name__, exc)


class HostWork:
    """What one host's L3, DHCP and OVS agents do with the work the server gives them."""

    def __init__(self, work: Work, host: str) -> None:
        self.work, self.host = work, host
        self.sync_delay = self.up_delay = 0.0
        self.broken = False
        self.lock = threading.Lock()
        self.routers: dict[str, tuple[int, int]] = {}  # router id -> (gateway ports, interfaces)
        self.networks: dict[str, tuple[int, int]] = {}  # network id -> (subnets, ports)
        self.sync_pending: set[str] = set()
        self.dhcp_pending: set[str] = set()
        self.up_pending: set[str] = set()
        self.l3: FakeAgent | None = None
        self.dhcp: FakeAgent | None = None

    def configure(self, sync_delay: float | None = None, up_delay: float | None = None,
                  broken: bool | None = None) -> dict[str, Any]:
        with self.lock:
            if sync_delay is not None:
                self.sync_delay = float(sync_delay)
            if up_delay is not None:
                self.up_delay = float(up_delay)
            if broken is not None:
                self.broken = bool(broken)
            return {"sync_delay": self.sync_delay, "up_delay": self.up_delay, "broken": self.broken}

    # -- casts and calls from the server (on the RPC server's thread: quick, never blocking) ----------

    def notified(self, agent: FakeAgent, method: str, kwargs: dict[str, Any]) -> None:
        payload = kwargs.get("payload")
        if agent.kind == "l3":
            self.l3 = agent
            if method in ("router_added_to_agent", "routers_updated"):
                ids = payload if method == "router_added_to_agent" else kwargs.get("routers")
                self._queue(self.sync_pending, [str(r) for r in ids or ()], self._sync_routers)
            elif method == "router_removed_from_agent" and isinstance(payload, dict):
                with self.lock:
                    self.routers.pop(str(payload.get("router_id")), None)
                self._count()
        elif agent.kind == "dhcp":
            self.dhcp = agent
            if method == "network_create_end" and isinstance(payload, dict):
                network = payload.get("network") or {}
                self._queue(self.dhcp_pending, [str(network.get("id"))], self._enable_dhcp)
            elif method == "network_delete_end" and isinstance(payload, dict):
                with self.lock:
                    self.networks.pop(str(payload.get("network_id")), None)
                self._count()

    def _queue(self, pending: set[str], ids: list[str], flush: Callable[[], None]) -> None:
        with self.lock:
            if self.broken or not ids:
                return
            first = not pending
            pending.update(ids)
            delay = self.sync_delay
        if first:  # one call for everything that arrives within the delay, as the real agents batch
            self.work.later(delay, flush)

    # -- the agents' own RPC calls (in the work pool) ------------------------------------------------

    def _sync_routers(self) -> None:
        with self.lock:
            ids, self.sync_pending = sorted(self.sync_pending), set()
            if self.broken or self.l3 is None or self.l3.status != RUNNING:
                return
        ctx = n_context.get_admin_context_without_session()
        routers = self.work.l3_plugin.prepare(timeout=60).call(ctx, "sync_routers", host=self.host, router_ids=ids)
        devices = []
        with self.lock:
            for router in routers or ():
                gateway = router.get("gw_port")
                interfaces = list(router.get("_interfaces") or ()) + list(router.get("_snat_router_interfaces") or ())
                ports = ([gateway] if gateway else []) + interfaces
                devices += [p["id"] for p in ports if p.get("binding:host_id") == self.host]
                self.routers[str(router["id"])] = (1 if gateway else 0, len(interfaces))
        self._count()
        self._ports_up(devices)

    def _enable_dhcp(self) -> None:
        with self.lock:
            ids, self.dhcp_pending = sorted(self.dhcp_pending), set()
            if self.broken or self.dhcp is None or self.dhcp.status != RUNNING:
                return
        ctx = n_context.get_admin_context_without_session()
        devices = []
        for network_id in ids:
            info = self.work.dhcp_plugin.prepare(version="1.0", timeout=60).call(
                ctx, "get_network_info", network_id=network_id, host=self.host)
            subnets = [s for s in (info or {}).get("subnets") or () if s.get("enable_dhcp")]
            if not subnets:
                continue
            mine = dhcp_device_id(network_id, self.host)
            ports = list(info.get("ports") or ())
            existing = next((p for p in ports if p.get("device_owner") == "network:dhcp"
                             and p.get("device_id") in (mine, "reserved_dhcp_port")), None)
            cctxt = self.work.dhcp_plugin.prepare(timeout=60)
            body: dict[str, Any] = {"network_id": network_id, "device_id": mine}
            if existing is not None:
                port = cctxt.call(ctx, "update_dhcp_port", port_id=existing["id"], port={"port": body},
                                  host=self.host)
            else:
                body.update({"tenant_id": info.get("tenant_id") or info.get("project_id"), "name": "",
                             "admin_state_up": True, "fixed_ips": [{"subnet_id": s["id"]} for s in subnets]})
                port = cctxt.call(ctx, "create_dhcp_port", port={"port": body}, host=self.host)
                ports.append(port)
            if port:
                devices.append(port["id"])
            with self.lock:
                self.networks[network_id] = (len(subnets), len(ports))
        self._count()
        self._ports_up(devices)

    def _ports_up(self, devices: list[str]) -> None:
        with self.lock:
            if not devices:
                return
            first = not self.up_pending
            self.up_pending.update(devices)
            delay = self.up_delay
        if first:
            self.work.later(delay, self._update_device_list)

    def _update_device_list(self) -> None:
        """The host's Open vSwitch agent saw the ports plugged: it reports them up."""
        with self.lock:
            devices, self.up_pending = sorted(self.up_pending), set()
        ctx = n_context.get_admin_context_without_session()
        self.work.plugin.prepare(timeout=60).call(
            ctx, "update_device_list", devices_up=devices, devices_down=[], agent_id=f"ovs-agent-{self.host}",
            host=self.host, refresh_tunnels=False)

    def _count(self) -> None:
        """The counts a real agent puts in its next report's configurations."""
        with self.lock:
            routers, networks = dict(self.routers), dict(self.networks)
        if self.l3 is not None:
            self.l3.state["configurations"].update(
                routers=len(routers), ex_gw_ports=sum(g for g, _ in routers.values()),
                interfaces=sum(i for _, i in routers.values()))
        if self.dhcp is not None:
            self.dhcp.state["configurations"].update(
                networks=len(networks), subnets=sum(s for s, _ in networks.values()),
                ports=sum(p for _, p in networks.values()))


def dhcp_device_id(network_id: str, host: str) -> str:
    """The device_id a DHCP agent gives its port (neutron.common.utils.get_dhcp_agent_device_id)."""
    return f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host.split('.')[0])}-{network_id}"


def serve(fleet: Fleet, commands: Any, replies: Any) -> None:
    ops: dict[str, Callable[..., Any]] = {
        "add": fleet.add, "crash": fleet.crash, "mute": fleet.mute, "unmute": fleet.unmute,
        "revive": fleet.revive, "remove": fleet.remove, "list": fleet.list,
        "wait_reported": fleet.wait_reported, "set": fleet.set,
    }
    for line in commands:
        if not line.strip():
            continue
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.pop("id", None)
            op = request.pop("op")
            if op == "quit":
                replies.write(json.dumps({"id": request_id, "ok": True, "result": None}) + "\n")
                return
            if op not in ops:
                raise ValueError(f"unknown op {op!r}; valid: {sorted([*ops, 'quit'])}")
            reply = {"id": request_id, "ok": True, "result": ops[op](**request)}
        except Exception as exc:  # a bad command must not kill the whole fleet
            reply = {"id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")


def watch_parent(parent: int) -> None:
    """Exit if the parent dies even when stdin somehow stays open."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport-url", required=True)
    parser.add_argument("--report-interval", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=32, help="threads sending heartbeats")
    args = parser.parse_args()

    # stdout is the control channel: keep a private copy of it, send stray prints to the log.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()

    # The global CONF, because neutron-lib reads it (e.g. in the RPC client's back-off).
    conf = cfg.CONF
    for group, options in messaging_opts.list_opts():
        if group is None or group == "DEFAULT":
            conf.register_opts(options)
    conf([], project="fake-agents", default_config_files=[], default_config_dirs=[])
    conf.set_override("transport_url", args.transport_url)
    conf.set_override("control_exchange", "neutron")
    n_rpc.init(conf)

    fleet = Fleet(args.report_interval, args.workers)
    replies.write(json.dumps({"id": None, "ok": True, "result": "ready"}) + "\n")
    try:
        serve(fleet, sys.stdin, replies)
    finally:
        fleet.close()
        # Executor and driver threads need not be joined: the process is done.
        os._exit(0)


if __name__ == "__main__":
    main()
