"""How to reach the outside systems: the values the config layer hands to the two adapters.

Built by ``neutronconf`` from rpcdaemon.conf and neutron.conf. ``NeutronAccess`` (a no-auth endpoint,
a clouds.yaml cloud name, or a keystoneauth plugin and its options from ``[keystone_authtoken]``) is
consumed by ``acting.openstack_neutron``; ``BrokerTLS`` (CA, client certificate, host-name check) by
``broker.connection.make_connection``. Secrets never reach a log: every secret field has ``repr=False``
and ``describe()`` names no secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NeutronAccess:
    # Exactly one way is used, in this order: endpoint (no auth), cloud (clouds.yaml), Keystone.
    endpoint: str | None = None
    cloud: str | None = None
    # The keystoneauth plugin (``[keystone_authtoken] auth_type``; neutron's default is password) and
    # the raw section it is configured from (after ``auth_section``; v2-era keys already mapped).
    # The adapter reads the plugin's own options from it, so every plugin works as in neutron.
    auth_type: str = "password"
    auth_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The neutron.conf section ``auth_options`` came from (``auth_section``), for messages.
    auth_section: str = "keystone_authtoken"
    # The usual password-plugin values, kept apart for describe() and for tests.
    auth_url: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    project_name: str | None = None
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    # From neutron.conf user_domain_id / project_domain_id; when set, they name the domain instead.
    user_domain_id: str | None = None
    project_domain_id: str | None = None
    region_name: str | None = None
    interface: str = "internal"
    # Session options: TLS to Keystone and Neutron (also used by the no-auth endpoint).
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False
    # Max seconds for one API call ([L3Agent]/[DHCPAgent] timeout).
    timeout: float = 30.0

    def describe(self) -> str:
        tls = " (TLS unverified)" if self.insecure else f" (CA {self.cafile})" if self.cafile else ""
        if self.endpoint:
            return f"no-auth endpoint {self.endpoint}{tls}"
        if self.cloud:
            return f"clouds.yaml cloud {self.cloud!r}"
        who = self.username or self.auth_options.get("user_id") or self.auth_options.get(
            "application_credential_name") or self.auth_options.get("application_credential_id") or "?"
        scope = (self.project_name or self.auth_options.get("project_id")
                 or (f"system:{self.auth_options['system_scope']}" if self.auth_options.get("system_scope") else "")
                 or "-")
        plugin = "" if self.auth_type == "password" else f" ({self.auth_type})"
        return f"Keystone {self.auth_url}{plugin} as {who}@{scope}{tls}"


@dataclass(frozen=True)
class BrokerTLS:
    """TLS to RabbitMQ: the chain is always verified (the system CAs unless ``ca_file``), the host name
    too unless ``verify_hostname`` is off; a client certificate when ``cert_file`` is set."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_hostname: bool = True
    # Lowest TLS version accepted, as ssl.TLSVersion names it ("TLSv1_2"); None: Python's default.
    minimum_version: str | None = None

    def describe(self) -> str:
        parts = [f"CA {self.ca_file}" if self.ca_file else "system CAs"]
        if self.cert_file:
            parts.append(f"client certificate {self.cert_file}")
        if not self.verify_hostname:
            parts.append("host name NOT verified")
        if self.minimum_version:
            parts.append(f"at least {self.minimum_version}")
        return "TLS (" + ", ".join(parts) + ")"
