"""Publish on the bus exactly as Neutron's agents and server do, through oslo.messaging itself.

Used by the component tests and the decode benchmark, so that what the listener is tested against
is the real wire format (oslo 2.0 envelope, ``_context_*`` keys, exchange and routing keys chosen
by oslo's rabbit driver), not a hand-written imitation of it.

Agents send ``report_state`` as an RPC call with ``Target(topic='q-reports-plugin', version='1.4')``;
a call needs neutron-server to reply, so we cast: the same envelope, exchange and routing key, minus
``_msg_id``/``_reply_q``/``_timeout`` and the AMQP expiration (checked in test_bus).
"""

from __future__ import annotations

import datetime
import uuid
import warnings
from typing import Any

with warnings.catch_warnings():
    # Importing oslo.messaging pulls in eventlet and oslo.service's eventlet backends, which warn
    # about their own deprecation at import time. Only these three warnings are silenced.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)
    warnings.filterwarnings("ignore", message=r"eventletutils module is deprecated", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"The 'oslo_service\.eventlet_backdoor'", category=DeprecationWarning)
    import oslo_messaging
    from oslo_config import cfg
    from oslo_context import context as oslo_context

REPORTS_TOPIC = "q-reports-plugin"
PLUGIN_TOPIC = "q-plugin"


def l3_state(host: str, *, agent_mode: str = "legacy", start_flag: bool = False, az: str = "nova") -> dict[str, Any]:
    """An L3 agent's agent_state as Neutron 29 builds it (see neutron.md)."""
    state: dict[str, Any] = {
        "binary": "neutron-l3-agent",
        "host": host,
        "availability_zone": az,
        "topic": "l3_agent",
        "agent_type": "L3 agent",
        "configurations": {
            "agent_mode": agent_mode,
            "handle_internal_only_routers": True,
            "interface_driver": "openvswitch",
            "log_agent_heartbeats": False,
            "extensions": [],
            "routers": 0,
            "ex_gw_ports": 0,
            "interfaces": 0,
            "floating_ips": 0,
        },
        "uuid": str(uuid.uuid4()),
    }
    if start_flag:
        state["start_flag"] = True
    return state


def dhcp_state(host: str, *, start_flag: bool = False, az: str = "nova") -> dict[str, Any]:
    state: dict[str, Any] = {
        "binary": "neutron-dhcp-agent",
        "host": host,
        "availability_zone": az,
        "topic": "dhcp_agent",
        "agent_type": "DHCP agent",
        "configurations": {
            "dhcp_driver": "neutron.agent.linux.dhcp.Dnsmasq",
            "dhcp_lease_duration": 86400,
            "log_agent_heartbeats": False,
            "networks": 0,
            "subnets": 0,
            "ports": 0,
        },
        "uuid": str(uuid.uuid4()),
    }
    if start_flag:
        state["start_flag"] = True
    return state


def agent_time() -> str:
    """The ``time`` argument agents send: their own UTC clock, no timezone."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


class OsloSender:
    """One oslo.messaging transport (like one neutron process) bound to the ``neutron`` exchange."""

    def __init__(self, url: str, *, control_exchange: str = "neutron") -> None:
        # The global CONF, like a neutron process: oslo.messaging registers some options (tracing)
        # only there.
        self.conf = cfg.CONF
        self.conf([], project="rpcdaemon-tests")
        # What neutron_lib.rpc.init does: neutron's RPC lives on the "neutron" exchange.
        oslo_messaging.set_transport_defaults(control_exchange)
        self.transport = oslo_messaging.get_rpc_transport(self.conf, url=url)
        self.notification_transport = oslo_messaging.get_notification_transport(self.conf, url=url)
        self.context = oslo_context.RequestContext(is_admin=True, request_id=f"req-{uuid.uuid4()}")

    def report_state(self, state: dict[str, Any], *, topic: str = REPORTS_TOPIC) -> None:
        """An agent's heartbeat, as PluginReportStateAPI sends it (cast instead of call)."""
        target = oslo_messaging.Target(topic=topic, version="1.4")
        client = oslo_messaging.get_rpc_client(self.transport, target)
        client.prepare(timeout=5).cast(
            self.context.to_dict(), "report_state", agent_state={"agent_state": state}, time=agent_time()
        )

    def network_delete_fanout(self, network_id: str) -> None:
        """What DhcpAgentNotifyAPI sends to every DHCP agent when a network is deleted."""
        target = oslo_messaging.Target(topic="dhcp_agent", version="1.0")
        client = oslo_messaging.get_rpc_client(self.transport, target)
        client.prepare(fanout=True).cast(
            self.context.to_dict(), "network_delete_end", payload={"network_id": network_id, "priority": 0}
        )

    def network_removed_from_agent(self, network_id: str, host: str) -> None:
        """The per-host cast Neutron sends when a network is merely unbound from one DHCP agent."""
        target = oslo_messaging.Target(topic="dhcp_agent", version="1.0")
        client = oslo_messaging.get_rpc_client(self.transport, target)
        client.prepare(server=host).cast(
            self.context.to_dict(), "network_delete_end", payload={"network_id": network_id, "priority": 0}
        )

    def notify(self, event_type: str, payload: dict[str, Any], *, driver: str = "messagingv2") -> None:
        """An oslo notification, as neutron-server emits with [oslo_messaging_notifications] driver."""
        notifier = oslo_messaging.Notifier(
            self.notification_transport, publisher_id="network.test", driver=driver, topics=["notifications"]
        )
        notifier.info(self.context.to_dict(), event_type, payload)

    def close(self) -> None:
        self.transport.cleanup()
        self.notification_transport.cleanup()
