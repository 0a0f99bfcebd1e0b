"""From validated settings to a ready ``Service``: the only place that knows both worlds.

Called by ``service.run`` (itself called by ``cli.main``). Reads each failover plugin's neutron.conf
once, builds the Neutron adapter, the shared registry, the plugins, the Dump plugin and the metrics
server. Both agent plugins share one registry and one bus listener; if their neutron.conf files
disagree on ``agent_down_time`` the larger wins (the safer choice) and a WARNING says so.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.acting.openstack_neutron import OpenStackNeutron
from rpcdaemon.deciding.liveness import BrakePolicy, LivenessPolicy
from rpcdaemon.metrics import Metrics
from rpcdaemon.neutronconf import NeutronConf, kombu_url, load_neutron_conf, neutron_access
from rpcdaemon.observing.bus import normalise_url, url_for_log
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.base import FailoverPlugin, Timing
from rpcdaemon.plugins.dump import DumpPlugin
from rpcdaemon.service import AgentPluginConfig, Service, build_plugin
from rpcdaemon.settings import AgentPluginSettings, ConfigError, DHCPAgentSettings, L3AgentSettings, Settings

log = logging.getLogger("rpcdaemon")

AGENT_PLUGINS = ("L3Agent", "DHCPAgent")


def plugin_config(ps: AgentPluginSettings, nconf: NeutronConf, down_time: float, dry_run: bool) -> AgentPluginConfig:
    """Map one plugin section (plus its neutron.conf) onto the deciders' and executor's policies."""
    return AgentPluginConfig(
        liveness=LivenessPolicy(
            down_time=down_time,
            startup_grace=ps.startup_grace if ps.startup_grace is not None else down_time,
            revive_hold=ps.revive_hold,
            api_second_opinion=ps.api_second_opinion,
        ),
        timing=Timing(
            reconcile_interval=ps.reconcile_interval,
            retry_reconcile_after=min(ps.reconcile_interval, max(5.0, nconf.report_interval)),
            target_fresh=max(2.5 * nconf.report_interval, 1.0),
            opinion_interval=max(1.0, min(nconf.report_interval, 5.0)),
        ),
        executor=ExecutorPolicy(workers=ps.workers, attempts=ps.retry_attempts, dry_run=dry_run),
        brake=BrakePolicy(max_dead_fraction=ps.max_dead_fraction, max_dead_agents=ps.max_dead_agents),
        max_moves=ps.max_moves_per_cycle,
        skip_ha_routers=ps.skip_ha_routers if isinstance(ps, L3AgentSettings) else True,
        agents_per_network=ps.agents_per_network if isinstance(ps, DHCPAgentSettings) else None,
    )


def build_service(
    settings: Settings,
    stop: threading.Event,
    *,
    foreground: bool,
    out: TextIO,
    api_factory: type[OpenStackNeutron] | None = None,
) -> Service:
    d = settings.daemon
    names = [n for n in d.plugins if n in AGENT_PLUGINS]
    sections: dict[str, AgentPluginSettings] = {"L3Agent": settings.l3, "DHCPAgent": settings.dhcp}
    nconfs = {n: load_neutron_conf(sections[n].conffile) for n in names}
    down_times = {n: sections[n].effective_agent_down_time(nconfs[n].agent_down_time) for n in names}
    down_time = max(down_times.values(), default=75.0)
    if len(set(down_times.values())) > 1:
        log.warning("plugins disagree on agent_down_time (%s); using the larger, %.0fs", down_times, down_time)

    bus_url = _bus_url(settings, nconfs)
    log.info("bus %s; agent_down_time %.0fs", url_for_log(bus_url), down_time)
    registry = AgentRegistry(down_time)
    factory = api_factory or OpenStackNeutron
    holder: dict[str, Service] = {}
    plugins: list[FailoverPlugin] = []
    for name in names:
        ps, nconf = sections[name], nconfs[name]
        access = neutron_access(ps, nconf)
        log.info("%s: Neutron via %s", name, access.describe())
        api: NeutronAPI = factory.from_access(access)
        cfg = plugin_config(ps, nconf, down_time, d.dry_run)
        plugins.append(build_plugin(name, api, registry, cfg, bus_since=lambda: holder["svc"].bus_since(),
                                    stop=stop, clock=time.monotonic))
    dump = None
    if "Dump" in d.plugins:
        dump = DumpPlugin(settings.dump.queue, settings.dump.filter, out=out, verbose=settings.dump.verbose)
    queue_expire = max((sections[n].queue_expire for n in names), default=600.0) or None
    metrics = Metrics()
    svc = Service(bus_url=bus_url, registry=registry, plugins=plugins, dump=dump, check_interval=d.check_interval,
                  queue_expire=queue_expire, stop=stop, metrics=metrics)
    holder["svc"] = svc
    if d.metrics_port:
        metrics.serve(d.metrics_address, d.metrics_port)
        log.info("metrics on http://%s:%d/metrics", d.metrics_address, d.metrics_port)
    if d.dry_run:
        log.warning("DRY RUN: actions are planned and logged, Neutron is never changed")
    return svc


def _bus_url(settings: Settings, nconfs: dict[str, NeutronConf]) -> str:
    if settings.daemon.rpchost:
        return normalise_url(settings.daemon.rpchost)
    for name, nconf in nconfs.items():
        if nconf.transport_url:
            return kombu_url(nconf.transport_url)
        log.debug("%s: neutron.conf has no transport_url", name)
    raise ConfigError("Daemon", "rpchost", "", "a broker host or URL (neutron.conf has no transport_url either)")
