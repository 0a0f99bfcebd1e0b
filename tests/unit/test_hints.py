"""Bus hints: the pure ``deciding.hints`` planner, the registry's load counts, and what a hint costs a plugin.

The plugin tests drive the real plugins check by check on the rig of ``plugin_rig.py`` (fake clock,
FakeNeutron, real registry and executor): a hint must cost only its targeted reads, a hint the cache
explains none, and an idle check still none.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.plugin_rig import TICK, TIMING, Rig

from rpcdaemon.deciding.dhcp import DhcpPolicy
from rpcdaemon.deciding.hints import Hint, explained, plan_refresh
from rpcdaemon.deciding.liveness import LivenessPolicy
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, ActionKind, BusHints, Heartbeat, HintKind, NetworkHint, RouterHint
from rpcdaemon.observing.registry import AgentRegistry
from rpcdaemon.plugins.bus_news import HINTS_KEPT, REFRESH_PER_PASS, REFRESH_PER_WINDOW

# -- the pure planner ---------------------------------------------------------------------------------

RESOURCES = [f"r{i}" for i in range(8)]
HOSTS = {f"h{i}": f"a{i}" for i in range(4)}


@st.composite
def caches(draw: st.DrawFn) -> tuple[set[str], set[str], dict[str, frozenset[str]]]:
    known = set(draw(st.lists(st.sampled_from(RESOURCES), unique=True)))
    settled = set(draw(st.lists(st.sampled_from(sorted(known)), unique=True))) if known else set()
    bindings = {rid: frozenset(draw(st.lists(st.sampled_from(sorted(HOSTS.values())), min_size=1, unique=True)))
                for rid in draw(st.lists(st.sampled_from(RESOURCES), unique=True))}
    return known, settled, bindings


hints_st = st.lists(st.builds(Hint, st.sampled_from(RESOURCES), st.sampled_from([None, *HOSTS, "elsewhere"]),
                              st.sampled_from(list(HintKind))), max_size=40)


def agree(known: set[str], settled: set[str], bindings: dict[str, frozenset[str]]) -> list[Hint]:
    """Every hint the cache already says: what Neutron casts after the daemon's own binds and unbinds."""
    by_agent = {aid: host for host, aid in HOSTS.items()}
    out = []
    for rid, agents in bindings.items():
        for aid in agents:
            if rid in known:
                out.append(Hint(rid, by_agent[aid], HintKind.PLACED))
            if rid in settled:
                out.append(Hint(rid, by_agent[aid], HintKind.CHANGED))
    for rid in RESOURCES:
        for host, aid in HOSTS.items():
            if aid not in bindings.get(rid, frozenset()):
                out.append(Hint(rid, host, HintKind.REMOVED))
        if rid not in known and rid not in bindings:
            out.append(Hint(rid, None, HintKind.DELETED))
    return out


@given(caches(), st.randoms())
def test_hints_the_cache_explains_cost_nothing(cache: tuple[set[str], set[str], dict[str, frozenset[str]]],
                                               rng: object) -> None:
    known, settled, bindings = cache
    hints = agree(known, settled, bindings)
    rng.shuffle(hints)  # type: ignore[attr-defined]
    plan = plan_refresh(hints, known=known, settled=settled, bindings=bindings, agents_by_host=HOSTS, limit=0)
    assert plan.refresh == ()
    assert not plan.full
    assert plan.explained == len(hints)


@given(caches(), hints_st, st.integers(0, 10))
def test_refresh_is_the_unexplained_ids_once_each_or_a_full_reconcile(
    cache: tuple[set[str], set[str], dict[str, frozenset[str]]], hints: list[Hint], limit: int
) -> None:
    known, settled, bindings = cache
    plan = plan_refresh(hints, known=known, settled=settled, bindings=bindings, agents_by_host=HOSTS, limit=limit)
    wanted = list(dict.fromkeys(
        h.resource_id for h in hints
        if not explained(h, known=known, settled=settled, bindings=bindings, agents_by_host=HOSTS)
    ))
    if len(wanted) > limit:
        assert plan.full
        assert plan.refresh == ()
    else:
        assert not plan.full
        assert list(plan.refresh) == wanted
        assert set(plan.why) == set(wanted)


@given(caches(), st.sampled_from(RESOURCES), st.sampled_from(sorted(HOSTS)))
def test_a_placement_the_cache_does_not_have_is_always_re_read(
    cache: tuple[set[str], set[str], dict[str, frozenset[str]]], rid: str, host: str
) -> None:
    known, settled, bindings = cache
    placed = Hint(rid, host, HintKind.PLACED)
    missing = rid not in known or HOSTS[host] not in bindings.get(rid, frozenset())
    plan = plan_refresh([placed], known=known, settled=settled, bindings=bindings, agents_by_host=HOSTS, limit=1)
    assert plan.refresh == ((rid,) if missing else ())


def test_a_change_cast_to_a_host_the_plugin_does_not_place_onto_is_explained() -> None:
    # routers_updated to a DVR compute node: its local part of the router, nothing the daemon places.
    view = {"known": {"r"}, "settled": {"r"}, "bindings": {"r": frozenset({"a0"})}, "agents_by_host": HOSTS}
    assert explained(Hint("r", "compute-7", HintKind.CHANGED), **view)  # type: ignore[arg-type]
    assert not explained(Hint("r", "compute-7", HintKind.PLACED), **view)  # type: ignore[arg-type]
    assert not explained(Hint("r", "h1", HintKind.CHANGED), **view)  # type: ignore[arg-type]


# -- load counts in the registry ----------------------------------------------------------------------


def test_registry_notes_load_count_changes_of_listed_agents_only() -> None:
    from rpcdaemon.model import Agent

    reg = AgentRegistry(75.0)
    reg.replace_agents([Agent("a", DHCP_AGENT, "h1"), Agent("b", L3_AGENT, "h2")], now=0.0)

    def beat(agent_type: str, host: str, at: float, **conf: object) -> None:
        reg.record(Heartbeat(agent_type, host, at, configurations=conf))

    beat(DHCP_AGENT, "h1", 1.0, networks=3)
    assert reg.take_load_changes(DHCP_AGENT) == {}  # a first count is no change
    beat(DHCP_AGENT, "h1", 2.0, networks=3)
    beat(L3_AGENT, "h2", 2.0, routers=1)
    beat(DHCP_AGENT, "unlisted", 2.0, networks=1)
    beat(DHCP_AGENT, "unlisted", 3.0, networks=9)
    assert reg.take_load_changes(DHCP_AGENT) == {}
    beat(DHCP_AGENT, "h1", 3.0, networks=4)
    beat(DHCP_AGENT, "h1", 4.0, networks=True)  # not a count: ignored
    beat(DHCP_AGENT, "h1", 5.0, networks="7")
    beat(L3_AGENT, "h2", 3.0, routers=2)
    assert reg.take_load_changes(DHCP_AGENT) == {"h1": 4}
    assert reg.take_load_changes(DHCP_AGENT) == {}
    assert reg.take_load_changes(L3_AGENT) == {"h2": 2}


# -- what hints cost the plugins -----------------------------------------------------------------------


def dhcp_all(make_rig: Callable[..., Rig]) -> Rig:
    rig = make_rig(DHCP_AGENT, dhcp=DhcpPolicy(agents_per_network=None))
    rig.agents("a", "b", "c")
    rig.run(3 * TICK)  # the first reconcile, then idle
    return rig


def net_hint(rig: Rig, nid: str, host: str, kind: HintKind = HintKind.PLACED) -> None:
    rig.plugin.on_bus_hints(BusHints(networks=(NetworkHint(nid, host, kind, rig.clock(), "network_create_end"),)))  # type: ignore[attr-defined]


def calls_during(rig: Rig, step: Callable[[], object]) -> dict[str, int]:
    before = dict(rig.api.calls)
    step()
    return {k: v - before.get(k, 0) for k, v in rig.api.calls.items() if v != before.get(k, 0)}


def test_a_network_neutron_placed_on_one_agent_reaches_every_agent_on_the_next_check(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = dhcp_all(make_rig)
    rig.api.add_network(network_id="new")
    rig.api.place_network("new", "a")  # Neutron's own scheduler, between two reconciles
    assert calls_during(rig, rig.tick) == {}  # no hint: the cache cannot know yet
    net_hint(rig, "new", "host-a")
    with caplog.at_level("INFO"):
        spent = calls_during(rig, rig.tick)
    assert rig.api.network_bindings()["new"] == {"a", "b", "c"}
    # The targeted reads, the binds, and the executor's read-back of the two targets; no reconcile.
    assert spent == {"get_network": 1, "agents_for_network": 1, "bind_network": 2, "networks_on_agent": 2}
    assert "bus says network new was placed on host 'host-a'; re-read 1 network" in caplog.text
    # Neutron casts network_create_end to the agents the daemon bound: the cache explains those.
    for host in ("host-b", "host-c"):
        net_hint(rig, "new", host)
    assert calls_during(rig, rig.tick) == {}


def test_a_network_whose_dhcp_is_enabled_later_is_hosted_on_the_change_cast(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_all(make_rig)
    rig.api.add_network(network_id="late", dhcp=False)
    rig.api.place_network("late", "a")
    net_hint(rig, "late", "host-a")
    rig.tick()
    assert rig.api.network_bindings()["late"] == {"a"}  # no DHCP: nothing to serve elsewhere
    rig.api.set_network_dhcp("late", True)
    net_hint(rig, "late", "host-a", HintKind.CHANGED)  # subnet_update_end to the agent hosting it
    spent = calls_during(rig, rig.tick)
    assert rig.api.network_bindings()["late"] == {"a", "b", "c"}
    assert spent == {"get_network": 1, "agents_for_network": 1, "bind_network": 2, "networks_on_agent": 2}


def test_a_hint_about_a_deleted_network_cleans_it_up(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_all(make_rig)
    rig.api.add_network(network_id="gone")
    rig.api.place_network("gone", "a")
    net_hint(rig, "gone", "host-a")
    rig.tick()
    rig.api.delete_network("gone")
    net_hint(rig, "gone", "host-b", HintKind.REMOVED)
    rig.tick()
    assert "gone" not in rig.plugin.networks  # type: ignore[attr-defined]
    assert "gone" not in rig.plugin.bindings


def test_the_daemons_own_moves_cost_no_reads_when_neutron_casts_them(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(L3_AGENT)
    rig.agents("a", "b", "c")
    for i in range(40):
        rig.api.add_router(router_id=f"r{i}")
        rig.api.place_router(f"r{i}", "a")
    rig.run(100)
    rig.silent.add("a")
    rig.run(LivenessPolicy(75.0, 75.0, 120.0).down_time + 2 * TICK)
    moved = rig.done(ActionKind.MOVE_ROUTER)
    assert len(moved) == 40
    bound = rig.api.router_bindings()
    casts = [RouterHint(rid, f"host-{next(iter(bound[rid]))}", HintKind.PLACED, rig.clock(), "router_added_to_agent")
             for rid in moved]
    casts += [RouterHint(rid, "host-a", HintKind.REMOVED, rig.clock(), "router_removed_from_agent") for rid in moved]
    rig.plugin.on_bus_hints(BusHints(routers=tuple(casts)))  # type: ignore[attr-defined]
    assert calls_during(rig, rig.tick) == {}
    assert rig.plugin.news.refreshed == 0


def test_many_hints_are_one_full_reconcile_and_forged_floods_buy_bounded_reads(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_all(make_rig)
    many = tuple(NetworkHint(f"forged-{i}", "host-a", HintKind.PLACED, rig.clock())
                 for i in range(REFRESH_PER_PASS + 1))
    rig.plugin.on_bus_hints(BusHints(networks=many[:1]))  # type: ignore[attr-defined]
    for hint in many[1:]:
        rig.plugin.on_bus_hints(BusHints(networks=(hint,)))  # type: ignore[attr-defined]
    spent = calls_during(rig, rig.tick)
    assert "get_network" not in spent
    assert spent.get("list_agents") == 1  # the reconcile (its rate limit was open)
    # Then a steady flood just under the per-pass limit, every check, for a whole window.
    total: dict[str, int] = {}
    checks = int(TIMING.unknown_reconcile_every // TICK) * 3
    for n in range(checks):
        for i in range(REFRESH_PER_PASS):
            rig.plugin.on_bus_hints(BusHints(networks=(  # type: ignore[attr-defined]
                NetworkHint(f"flood-{n}-{i}", "host-a", HintKind.PLACED, rig.clock()),)))
        for k, v in calls_during(rig, rig.tick).items():
            total[k] = total.get(k, 0) + v
    windows = checks * TICK / TIMING.unknown_reconcile_every + 1
    assert total.get("get_network", 0) <= REFRESH_PER_WINDOW * windows
    assert total.get("list_agents", 0) <= windows + 1


def test_the_hint_buffer_is_bounded_and_an_overflow_is_a_reconcile(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_all(make_rig)
    rig.clock.now += TIMING.unknown_reconcile_every  # the rate limit is open
    for i in range(HINTS_KEPT + 5):
        rig.plugin.on_bus_hints(BusHints(networks=(NetworkHint(f"n{i}", "host-a", HintKind.PLACED, 0.0),)))  # type: ignore[attr-defined]
    assert rig.plugin.news.dropped == 5
    spent = calls_during(rig, rig.tick)
    assert spent.get("list_agents") == 1
    assert "get_network" not in spent


def test_a_load_count_that_disagrees_reconciles_at_most_once_per_window(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_all(make_rig)
    rig.clock.now += TIMING.unknown_reconcile_every
    counts = iter(range(1, 1000))

    def speak_with_load() -> None:
        rig.registry.record(Heartbeat(DHCP_AGENT, "host-a", rig.clock(), configurations={"networks": next(counts)}))

    speak_with_load()
    speak_with_load()  # changed, and the cache has 0 networks on a
    assert calls_during(rig, rig.tick).get("list_agents") == 1
    reconciles = 0
    for _ in range(int(TIMING.unknown_reconcile_every // TICK)):
        speak_with_load()  # a forged heartbeat every check
        reconciles += calls_during(rig, rig.tick).get("list_agents", 0)
    assert reconciles <= 1


def test_a_load_count_the_cache_explains_costs_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = dhcp_all(make_rig)
    rig.api.add_network(network_id="n")
    rig.api.place_network("n", "a")
    net_hint(rig, "n", "host-a")
    rig.run(TICK)  # n is now on a, b and c, in the cache too; the next periodic reconcile is still ahead
    for count in (0, 1):
        rig.registry.record(Heartbeat(DHCP_AGENT, "host-b", rig.clock(), configurations={"networks": count}))
    assert calls_during(rig, rig.tick) == {}


def test_a_router_created_while_no_agent_was_a_target_is_scheduled_when_one_comes_back(
    make_rig: Callable[..., Rig]
) -> None:
    liveness = LivenessPolicy(down_time=30.0, startup_grace=30.0, revive_hold=20.0)
    rig = make_rig(L3_AGENT, liveness=liveness, neutron_down=30.0)
    rig.agents("a")
    rig.run(60)
    rig.silent.add("a")
    rig.run(50)  # a is dead; nothing to move
    rig.api.add_router(router_id="orphan")  # nothing is cast for it: no agent to take it
    rig.run(20)
    assert rig.done() == []
    rig.silent.discard("a")  # a comes back: warming for revive_hold, then a target
    back = rig.clock()
    while not rig.done(ActionKind.BIND_ROUTER) and rig.clock() - back < TIMING.reconcile_interval:
        rig.tick()
    assert rig.done(ActionKind.BIND_ROUTER) == ["orphan"]
    assert rig.clock() - back <= liveness.revive_hold + 2 * TICK  # not the next periodic reconcile
