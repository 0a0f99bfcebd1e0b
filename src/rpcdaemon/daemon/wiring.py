"""From validated settings to a ready ``Service``: the only place that knows both worlds.

``run`` is what ``cli.main`` runs (in the foreground or detached). Reads each failover plugin's neutron.conf
once, builds the Neutron adapter, the shared registry, the plugins, the Dump plugin and the metrics
server. Both agent plugins share one registry and one bus listener; if their neutron.conf files
disagree on ``agent_down_time`` the larger wins (the safer choice) and a WARNING says so. With
``[coordination] enabled`` (the default) it builds the leadership lease (``build_leadership``: the
broker's lock, or tooz's with ``backend_url``) and fences each plugin's Neutron adapter with it; a dry
run takes no lock.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from rpcdaemon.access import BrokerTLS
from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.acting.fencing import FencePolicy
from rpcdaemon.acting.openstack_neutron import OpenStackNeutron
from rpcdaemon.acting.readiness import ReadinessPolicy
from rpcdaemon.acting.write_guard import FencedNeutron
from rpcdaemon.broker.amqpurl import url_for_log
from rpcdaemon.broker.control_link import control_connection
from rpcdaemon.broker.leader_lock import BrokerLock, lock_connection
from rpcdaemon.config.neutronconf import PluginNeutron, resolve_settings
from rpcdaemon.config.settings import (
    AgentPluginSettings,
    CoordinationSettings,
    DHCPAgentSettings,
    L3AgentSettings,
    Settings,
)
from rpcdaemon.control.channel import ControlChannel
from rpcdaemon.control.loop import ControlLoop
from rpcdaemon.coordination.leader import Leadership, LockBackend
from rpcdaemon.daemon.daemonize import raise_open_files_limit
from rpcdaemon.daemon.plugin_factory import AgentPluginConfig, build_plugin
from rpcdaemon.daemon.service import Service, StartError
from rpcdaemon.deciding.liveness import BrakePolicy, LivenessPolicy
from rpcdaemon.exits import EXIT_START
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.plugins.dump import DumpPlugin
from rpcdaemon.telemetry.audit import AuditLog
from rpcdaemon.telemetry.metrics import Metrics
from rpcdaemon.telemetry.sdnotify import Notifier, watchdog_seconds, watchdog_warning

log = logging.getLogger("rpcdaemon")
# A real new agent is listed by Neutron within one report; invented host names must not cost more
# than one reconcile per this many seconds (or per report_interval, if longer).
UNKNOWN_RECONCILE_FLOOR = 10.0
# Followed moves' ports are read at most this often (one bulk listing for all of them).
READY_POLL_INTERVAL = 1.0

def plugin_config(ps: AgentPluginSettings, pn: PluginNeutron, down_time: float, dry_run: bool) -> AgentPluginConfig:
    """Map one plugin section (plus its neutron.conf) onto the deciders' and executor's policies."""
    report_interval = pn.conf.report_interval
    return AgentPluginConfig(
        liveness=LivenessPolicy(
            down_time=down_time,
            startup_grace=max(pn.startup_grace, down_time),
            revive_hold=ps.revive_hold,
            api_second_opinion=ps.api_second_opinion,
            report_interval=report_interval,
        ),
        timing=Timing(
            reconcile_interval=ps.reconcile_interval,
            retry_reconcile_after=min(ps.reconcile_interval, max(5.0, report_interval)),
            target_fresh=max(2.5 * report_interval, 1.0),
            opinion_interval=max(1.0, min(report_interval, 5.0)),
            unknown_reconcile_every=max(report_interval, UNKNOWN_RECONCILE_FLOOR),
        ),
        executor=ExecutorPolicy(workers=ps.workers, attempts=ps.retry_attempts, dry_run=dry_run),
        brake=BrakePolicy(max_dead_fraction=ps.max_dead_fraction, max_dead_agents=ps.max_dead_agents),
        max_moves=ps.max_moves_per_cycle,
        skip_ha_routers=ps.skip_ha_routers if isinstance(ps, L3AgentSettings) else True,
        agents_per_network=ps.agents_per_network if isinstance(ps, DHCPAgentSettings) else None,
        readiness=ReadinessPolicy(timeout=ps.ready_timeout, poll_interval=READY_POLL_INTERVAL,
                                  move_unready=ps.move_unready) if ps.ready_timeout > 0 else None,
        fence=FencePolicy(command=ps.fence_command, timeout=ps.fence_timeout,
                          move_when_fails=ps.move_when_fence_fails) if ps.fence_command else None,
    )


class _LogStream(io.TextIOBase):
    """Where Dump writes when detached: the log file, at DEBUG, as the original daemon did."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._log.debug("%s", line)
        return len(text)


def build_service(
    settings: Settings,
    stop: threading.Event,
    *,
    foreground: bool,
    out: TextIO,
    api_factory: type[OpenStackNeutron] | None = None,
) -> Service:
    d = settings.daemon
    resolved = resolve_settings(settings)
    found: dict[str, PluginNeutron | None] = {"L3Agent": resolved.l3, "DHCPAgent": resolved.dhcp}
    wanted = {name: pn for name, pn in found.items() if pn is not None}
    down_times = {name: pn.agent_down_time for name, pn in wanted.items()}
    down_time = max(down_times.values(), default=75.0)
    if len(set(down_times.values())) > 1:
        log.warning("plugins disagree on agent_down_time (%s); using the larger, %.0fs", down_times, down_time)

    bus_url = resolved.broker_url
    if wanted:
        log.info("bus %s; agent_down_time %.0fs", url_for_log(bus_url), down_time)
    else:
        log.info("bus %s", url_for_log(bus_url))
    if resolved.broker_tls is not None:
        log.info("bus over %s", resolved.broker_tls.describe())
    registry = AgentRegistry(down_time)
    factory = api_factory or OpenStackNeutron
    holder: dict[str, Service] = {}
    plugins: list[FailoverPlugin] = []
    leadership = None
    if wanted and d.dry_run:
        # A dry run next to the live instances must not take the lock from them: it would act for the
        # group and change nothing. It plans as if it were the active one.
        log.info("leadership: not taken by a dry run (the live instances keep the lock)")
    elif wanted:
        leadership = build_leadership(settings.coordination, bus_url, resolved.broker_tls)
    may_write = leadership.is_leader if leadership is not None else (lambda: True)
    for name, pn in wanted.items():
        ps = settings.section(name)
        assert isinstance(ps, AgentPluginSettings)
        log.info("%s: Neutron via %s", name, pn.access.describe())
        try:
            api: NeutronAPI = factory.from_access(pn.access)
        except ValueError as exc:  # e.g. a clouds.yaml cloud that is not there: the text says which
            raise StartError(f"{name}: {exc}") from None
        cfg = plugin_config(ps, pn, down_time, d.dry_run)
        api = FencedNeutron(api, may_write)  # the plugin, its executor and its follower: every write asks the lease
        plugins.append(build_plugin(name, api, registry, cfg, bus_since=lambda: holder["svc"].bus_since(),
                                    bus_outages=lambda: holder["svc"].bus_outages(),
                                    stop=stop, clock=time.monotonic, may_write=may_write))
    dump = None
    if "Dump" in d.plugins:
        sink: TextIO = out if foreground else _LogStream(logging.getLogger("rpcdaemon.dump"))  # type: ignore[assignment]
        dump = DumpPlugin(settings.dump.queue, settings.dump.filter, out=sink, verbose=settings.dump.verbose)
    queue_expire = max((settings.section(n).queue_expire for n in wanted), default=600.0) or None
    metrics = Metrics()
    notifier = Notifier.from_environ(os.environ)
    if notifier.enabled:
        _check_watchdog([settings.section(n).timeout for n in wanted])
    audit = open_audit(d.audit_log) if d.audit_log else None
    # The control channel (pause, resume, brake release; the live view of `rpcdaemon status`) on the bus's broker.
    control = None
    if wanted:
        channel = ControlChannel(lambda: control_connection(bus_url, resolved.broker_tls), settings.coordination.group)
        control = ControlLoop(channel, view=lambda: holder["svc"].control.view(), stop=stop,
                              presence=lambda: holder["svc"].control.presence())
    svc = Service(bus_url=bus_url, registry=registry, plugins=plugins, dump=dump, check_interval=d.check_interval,
                  queue_expire=queue_expire, stop=stop, metrics=metrics, bus_tls=resolved.broker_tls,
                  notifier=notifier, leadership=leadership, audit=audit, control=control)
    holder["svc"] = svc
    if d.metrics_port:
        try:
            metrics.serve(d.metrics_address, d.metrics_port)
        except OSError as exc:  # preflight probed it before detaching; something took it since
            if audit is not None:
                audit.close()
            raise StartError(f"[Daemon] metrics_address:metrics_port {d.metrics_address}:{d.metrics_port}: "
                             f"cannot listen: {exc.strerror or exc}") from None
        log.info("metrics on http://%s:%d/metrics (health: /healthz, /readyz)", d.metrics_address, d.metrics_port)
    if d.dry_run:
        log.warning("DRY RUN: actions are planned and logged, Neutron is never changed")
    return svc


def open_audit(path: Path) -> AuditLog:
    """The ``[Daemon] audit_log`` file, opened for appending (the CLI checked it before detaching)."""
    try:
        audit = AuditLog(path)
    except OSError as exc:
        raise StartError(f"[Daemon] audit_log {path}: cannot open for appending: {exc.strerror or exc}") from None
    log.info("audit trail: %s (one JSON line per decision and action)", path)
    return audit


def build_leadership(c: CoordinationSettings, bus_url: str, tls: BrokerTLS | None) -> Leadership | None:
    """The leadership lease of ``[coordination]``: on the bus's broker unless ``backend_url`` names a tooz
    backend; None when ``enabled = false`` (this instance always acts)."""
    if not c.enabled:
        log.info("leadership: off ([coordination] enabled = false): this instance always acts; run no other")
        return None
    backend: LockBackend
    if c.backend_url:
        try:
            from rpcdaemon.coordination.tooz_lock import ToozLock  # tooz: an optional extra
        except ImportError as exc:
            raise StartError(f"[coordination] backend_url is set, but {exc.name or 'tooz'} is not installed: "
                             "pip install 'rpcdaemon[coordination]'") from None
        try:
            backend = ToozLock(c.backend_url, c.group)
        except ValueError as exc:  # the text names the URL without its password
            raise StartError(f"[coordination] backend_url: {exc}") from None
    else:
        backend = BrokerLock(lambda: lock_connection(bus_url, tls), c.group)
    leadership = Leadership(backend)
    log.info("leadership: %s; only the instance holding it acts (lease %gs, confirmed every %gs)",
             leadership.describe(), leadership.lease, leadership.interval)
    return leadership


def _check_watchdog(timeouts: list[float]) -> None:
    """Warn when the unit's WatchdogSec would kill a healthy daemon (see ``sdnotify.watchdog_warning``)."""
    period = watchdog_seconds(os.environ, os.getpid())
    problem = watchdog_warning(period, timeouts, ExecutorPolicy().backoff_max) if period is not None else None
    if problem is not None:
        log.warning("%s", problem)


def run(settings: Settings, stop: threading.Event, *, foreground: bool, out: TextIO = sys.stdout) -> int:
    """Entry point used by the CLI: build everything from settings and run until ``stop`` is set."""
    before, after = raise_open_files_limit()
    log.debug("open files: limit %d%s", after, f" (raised from {before})" if after != before else "")
    try:
        service = build_service(settings, stop, foreground=foreground, out=out)
    except StartError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_START
    return service.run()
