"""The Neutron contract cases (``tests/contract_cases.py``) run on ``FakeNeutron``.

The same cases run on the real neutron-server in ``tests/e2e/test_contract.py``; passing both is what
lets the executor, plugin and benchmark tests trust the fake.
"""

from __future__ import annotations

import itertools

import pytest
from tests.contract_cases import CASES, Case, World, case_id

from rpcdaemon.acting.api import NeutronAPI
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, MODE_LEGACY, Agent, Network, Router


class FakeWorld(World):
    def __init__(self) -> None:
        self.fake = FakeNeutron()
        self._names = itertools.count(1)

    @property
    def api(self) -> NeutronAPI:
        return self.fake

    def _name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._names)}"

    def l3_agent(
        self,
        *,
        agent_mode: str = MODE_LEGACY,
        admin_state_up: bool = True,
        az: str = "nova",
        router_id: str | None = None,
        handle_internal_only_routers: bool = True,
    ) -> Agent:
        return self.fake.add_agent(
            L3_AGENT, self._name("host"), agent_mode=agent_mode, admin_state_up=admin_state_up, az=az,
            router_id=router_id, handle_internal_only_routers=handle_internal_only_routers,
        )

    def dhcp_agent(self, *, admin_state_up: bool = True, az: str = "nova") -> Agent:
        return self.fake.add_agent(DHCP_AGENT, self._name("host"), admin_state_up=admin_state_up, az=az)

    def dead_agents(self) -> tuple[Agent, Agent]:
        host = self._name("host")
        return (
            self.fake.add_agent(L3_AGENT, host, alive=False),
            self.fake.add_agent(DHCP_AGENT, host, alive=False),
        )

    def router(self, *, distributed: bool = False, ha: bool = False, az_hints: tuple[str, ...] = ()) -> Router:
        return self.fake.add_router(self._name("router"), distributed=distributed, ha=ha, az_hints=az_hints)

    def network(self, *, dhcp: bool = True, az_hints: tuple[str, ...] = ()) -> Network:
        return self.fake.add_network(self._name("network"), dhcp=dhcp, az_hints=az_hints)

    def zone(self) -> str:
        return self._name("zone")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_contract(case: Case) -> None:
    case(FakeWorld())
