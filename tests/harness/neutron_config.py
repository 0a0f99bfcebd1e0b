"""The configuration files of the harness's Neutron: neutron.conf, ml2_conf.ini and the uWSGI ini.

Rendered by ``NeutronServer`` into its state directory. The settings follow the project's verified
Neutron notes; rpcdaemon itself reads ``transport_url``, ``agent_down_time`` and
``[AGENT] report_interval`` from the generated neutron.conf.
"""

from __future__ import annotations

from pathlib import Path

ML2_CONF = """\
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = openvswitch
extension_drivers = port_security

[ml2_type_flat]
flat_networks = *

[ml2_type_vlan]
network_vlan_ranges = physnet1:100:199

[ml2_type_vxlan]
vni_ranges = 1:10000
"""


def render_neutron_conf(
    *,
    state_dir: Path,
    transport_url: str,
    connection: str,
    agent_down_time: int,
    report_interval: int,
    l3_failover: bool,
    dhcp_failover: bool,
    notifications: bool = False,
) -> str:
    """neutron.conf. ``notifications``: set ``[oslo_messaging_notifications] driver = messagingv2``
    (``network.delete.end`` and friends on ``notifications.info``); off, the section is absent, as in
    a stock neutron.conf."""
    return f"""\
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = noauth
transport_url = {transport_url}
state_path = {state_dir}
api_paste_config = {state_dir}/etc/api-paste.ini
agent_down_time = {agent_down_time}
allow_automatic_l3agent_failover = {l3_failover}
allow_automatic_dhcp_failover = {dhcp_failover}
dhcp_agents_per_network = 1
rpc_workers = 1
rpc_state_report_workers = 1
notify_nova_on_port_status_changes = False
notify_nova_on_port_data_changes = False

[AGENT]
report_interval = {report_interval}

{_NOTIFICATIONS if notifications else ""}[quotas]
quota_router = -1
quota_network = -1
quota_subnet = -1
quota_port = -1
quota_floatingip = -1
quota_security_group = -1
quota_security_group_rule = -1

[database]
connection = {connection}

[oslo_concurrency]
lock_path = {state_dir}/lock
"""


_NOTIFICATIONS = """\
[oslo_messaging_notifications]
# network.delete.end and friends go to exchange neutron, routing key notifications.info
driver = messagingv2

"""


def render_uwsgi_ini(*, port: int, venv: Path, etc: Path, processes: int) -> str:
    # "Connection: close": plain http-socket closes after each answer without saying so, and a
    # keep-alive client then gets ECONNRESET on its next request.
    return f"""\
[uwsgi]
http-socket = 127.0.0.1:{port}
module = neutron.wsgi.api:application
virtualenv = {venv}
env = OS_NEUTRON_CONFIG_DIR={etc}
env = OS_NEUTRON_CONFIG_FILES=neutron.conf;plugins/ml2/ml2_conf.ini
master = true
processes = {processes}
threads = 1
lazy-apps = true
die-on-term = true
need-app = true
add-header = Connection: close
"""
