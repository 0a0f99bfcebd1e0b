"""Heartbeats from hosts the API does not list: they bring a reconcile forward, but rate-limited.

Anyone who can publish on the bus can invent host names; a flood of them must not drive Neutron API
load. Stepped on tests/unit/plugin_rig.py: fake clock, FakeNeutron, real registry and plugin.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from tests.unit.plugin_rig import TICK, Rig

from rpcdaemon.model import L3_AGENT, Heartbeat
from rpcdaemon.plugins.base import Timing

GAP = 30.0
TIMING = Timing(reconcile_interval=600.0, retry_reconcile_after=10.0, target_fresh=75.0, opinion_interval=2.0,
                unknown_reconcile_every=GAP)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig(L3_AGENT, timing=TIMING)
    r.agents("a", "b")
    yield r
    r.close()


def flood(rig: Rig, n: int, prefix: str) -> None:
    for i in range(n):
        rig.registry.record(Heartbeat(L3_AGENT, f"{prefix}-{i}", rig.clock()))


def test_a_flood_of_unknown_hosts_costs_one_reconcile_per_gap(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    rig.tick()  # the first pass reconciles
    assert rig.api.calls["list_agents"] == 1
    minutes = 5
    for t in range(int(minutes * 60 // TICK)):
        flood(rig, 50, f"junk{t}")  # 50 new invented hosts before every check
        rig.tick()
    reconciles = rig.api.calls["list_agents"] - 1
    # one per GAP at most (plus the scheduled one after 600 s, not reached); without the limit: 30
    assert reconciles <= minutes * 60 / GAP + 1
    assert reconciles >= minutes * 60 / GAP - 1  # and the trigger still works
    named = [r.getMessage() for r in caplog.records if "which Neutron does not list" in r.getMessage()]
    counted = [r.getMessage() for r in caplog.records if "more hosts that Neutron does not list" in r.getMessage()]
    # A few hosts named per gap, the rest counted once per gap: the log grows per gap, not per invented host.
    assert len(named) == len(set(named)) <= (minutes * 60 / GAP + 1) * 5
    assert len(counted) <= minutes * 60 / GAP + 1
    total = len(named) + sum(int(m.split("heard ")[1].split()[0]) for m in counted)
    assert total >= (minutes * 60 // TICK - 1 - 30) * 50  # every host but the last gap's is named or counted


def test_the_same_unknown_host_is_said_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpcdaemon")
    rig.tick()
    for _ in range(20):
        rig.registry.record(Heartbeat(L3_AGENT, "stranger", rig.clock()))
        rig.tick()
    said = [r for r in caplog.records if "stranger" in r.getMessage()]
    assert len(said) == 1


def test_a_new_agent_is_picked_up_by_the_next_allowed_reconcile(rig: Rig) -> None:
    rig.run(100)
    rig.api.add_agent(L3_AGENT, "host-new", agent_id="new")
    rig.registry.record(Heartbeat(L3_AGENT, "host-new", rig.clock()))
    before = rig.api.calls["list_agents"]
    rig.tick()
    rig.tick()
    rig.tick()
    rig.tick()  # within GAP + one tick of the last reconcile
    assert rig.api.calls["list_agents"] == before + 1
    assert rig.registry.agent("new") is not None
