"""How to reach the Neutron API: the one value the config layer hands to the Neutron adapter.

Built by ``neutronconf`` (from neutron.conf ``[keystone_authtoken]``, a clouds.yaml cloud name, or a
plain no-auth endpoint) and consumed by ``acting.openstack_neutron``. ``password`` never reaches a log:
``__repr__`` hides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NeutronAccess:
    # Exactly one way is used, in this order: endpoint (no auth), cloud (clouds.yaml), password (Keystone v3).
    endpoint: str | None = None
    cloud: str | None = None
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
    cafile: str | None = None
    insecure: bool = False
    # Max seconds for one API call ([L3Agent]/[DHCPAgent] timeout).
    timeout: float = 30.0

    def describe(self) -> str:
        if self.endpoint:
            return f"no-auth endpoint {self.endpoint}"
        if self.cloud:
            return f"clouds.yaml cloud {self.cloud!r}"
        return f"Keystone {self.auth_url} as {self.username}@{self.project_name}"
