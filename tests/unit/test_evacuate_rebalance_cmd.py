"""``rpcdaemon evacuate`` and ``rebalance`` at command level, against ``FakeNeutron`` (no services).

The commands' work functions take the adapters (``Side``) and the daemon's live view as arguments, so
these tests hand them a fake Neutron and a made-up view; the real server and a real daemon are in
tests/e2e/test_evacuate_rebalance_e2e.py.
"""

from __future__ import annotations

import io

import pytest

from rpcdaemon.acting.executor import ExecutorPolicy
from rpcdaemon.commands.context import CommandError
from rpcdaemon.commands.evacuate import evacuate
from rpcdaemon.commands.progress import Progress, Side, TargetCheck
from rpcdaemon.commands.rebalance import rebalance
from rpcdaemon.control.state import AgentView, DaemonView, Hold, PluginView
from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import DHCP_AGENT, L3_AGENT, MODE_DVR_SNAT, Action, ActionKind

POLICY = ExecutorPolicy(workers=4, attempts=2, backoff_min=0.0, backoff_max=0.0)


def l3_side(api: FakeNeutron, **kw: object) -> Side:
    return Side("L3Agent", api, POLICY, **kw)  # type: ignore[arg-type]


def dhcp_side(api: FakeNeutron, per: int | None = None) -> Side:
    return Side("DHCPAgent", api, POLICY, agents_per_network=per)


def test_evacuate_moves_everything_marks_admin_down_and_lists_what_cannot_move() -> None:
    api = FakeNeutron()
    src, a, b = (api.add_agent(L3_AGENT, h) for h in ("net-1", "net-2", "net-3"))
    dsrc, da = api.add_agent(DHCP_AGENT, "net-1"), api.add_agent(DHCP_AGENT, "net-2")
    for i in range(10):
        api.add_router(f"r{i}", router_id=f"r{i}")
        api.place_router(f"r{i}", src.id)
    api.add_router("ha", router_id="ha", ha=True)
    api.place_router("ha", src.id)
    for i in range(3):
        api.add_network(f"n{i}", network_id=f"n{i}", dhcp=True)
        api.place_network(f"n{i}", dsrc.id)
    out = io.StringIO()
    code = evacuate("net-1", [l3_side(api), dhcp_side(api)], out, terminal=False)
    text = out.getvalue()
    assert code == 0, text
    assert api.agent(src.id).admin_state_up is False
    assert api.agent(dsrc.id).admin_state_up is False
    assert "net-1 is admin-down: nothing will be moved back to it; `openstack network agent set --enable" in text
    bindings = api.router_bindings()
    assert {rid for rid, hosts in bindings.items() if src.id in hosts} == {"ha"}  # HA kept, on purpose
    assert sorted(len([r for r, h in bindings.items() if x.id in h]) for x in (a, b)) == [5, 5]
    assert all(api.network_bindings()[f"n{i}"] == frozenset({da.id}) for i in range(3))
    assert "kept on net-1: ha: HA router" in text
    assert "[10/10] move router" in text  # plain lines, one per move
    assert "evacuate net-1: 10 routers moved in" in text


def test_evacuate_exit_1_lists_what_has_no_target_and_unknown_host_names_similar_ones() -> None:
    api = FakeNeutron()
    src = api.add_agent(L3_AGENT, "net-1", agent_mode=MODE_DVR_SNAT)
    api.add_agent(L3_AGENT, "net-2")
    api.add_router("dist", router_id="dist", distributed=True)
    api.place_router("dist", src.id)
    api.add_router("plain", router_id="plain")
    api.place_router("plain", src.id)
    out = io.StringIO()
    assert evacuate("net-1", [l3_side(api)], out, terminal=False) == 1
    text = out.getvalue()
    assert "could not move (1):\n  router dist: distributed router: no live dvr_snat L3 agent" in text
    assert api.router_bindings()["plain"] != frozenset({src.id})
    with pytest.raises(CommandError, match=r"no agent on host 'net1' \(similar: net-1, net-2\)") as caught:
        evacuate("net1", [l3_side(api)], io.StringIO())
    assert caught.value.code == 2
    with pytest.raises(CommandError, match="--target-host: no agent on host 'nowhere'"):
        evacuate("net-2", [l3_side(api)], io.StringIO(), target_host="nowhere")


def test_evacuate_dry_run_changes_nothing_and_no_admin_down_says_so() -> None:
    api = FakeNeutron()
    src, other = api.add_agent(L3_AGENT, "net-1"), api.add_agent(L3_AGENT, "net-2")
    api.add_router("r", router_id="r")
    api.place_router("r", src.id)
    out = io.StringIO()
    assert evacuate("net-1", [l3_side(api)], out, dry_run=True, terminal=False) == 0
    assert api.agent(src.id).admin_state_up is True
    assert api.router_bindings() == {"r": frozenset({src.id})}
    assert f"would move router r from net-1 ({src.id}) to net-2 ({other.id})" in out.getvalue()
    out = io.StringIO()
    assert evacuate("net-1", [l3_side(api)], out, admin_down=False, terminal=False) == 0
    assert api.agent(src.id).admin_state_up is True
    assert "--no-admin-down: it stays admin-up" in out.getvalue()
    assert api.router_bindings() == {"r": frozenset({other.id})}


def test_target_check_refuses_a_target_neutron_no_longer_calls_alive_reading_at_most_every_5s() -> None:
    api = FakeNeutron()
    target = api.add_agent(L3_AGENT, "net-2")
    now = [0.0]
    check = TargetCheck(api, clock=lambda: now[0])
    check.prime(api.list_agents())
    move = Action(ActionKind.MOVE_ROUTER, "r", None, target)
    api.set_alive(target.id, False)
    calls = api.calls["list_agents"]
    assert check(move) is None  # the listing is 0 s old: no new read
    now[0] = 5.0
    assert check(move) == f"Neutron no longer says target {target.describe()} is alive"
    assert api.calls["list_agents"] == calls + 1


def test_progress_on_a_terminal_draws_a_bar_and_prints_failures_above_it() -> None:
    api = FakeNeutron()
    src, dst = api.add_agent(L3_AGENT, "net-1"), api.add_agent(L3_AGENT, "net-2")
    for i in range(3):
        api.add_router(f"r{i}", router_id=f"r{i}")
        api.place_router(f"r{i}", src.id)
    api.refuse_binds(dst.id)
    out = io.StringIO()
    assert evacuate("net-1", [l3_side(api)], out, terminal=True) == 1
    text = out.getvalue()
    assert "evacuate net-1 (routers)" in text
    assert "3/3" in text
    assert "failed" in text
    assert "\x1b[" in text  # drawn with terminal control sequences
    with Progress(io.StringIO(), 0, "nothing", terminal=True) as empty:
        empty.say("no bar for nothing")


def _balanced_world(api: FakeNeutron) -> tuple[list[str], str]:
    ids = [api.add_agent(L3_AGENT, f"net-{i}").id for i in range(3)]
    for i in range(9):
        api.add_router(f"r{i}", router_id=f"r{i}")
        api.place_router(f"r{i}", ids[0] if i < 6 else ids[1])
    return ids, ids[2]


def test_rebalance_evens_out_at_the_rate_and_within_max_moves() -> None:
    api = FakeNeutron()
    ids, _empty = _balanced_world(api)
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    out = io.StringIO()
    code = rebalance([l3_side(api)], out, view=None, rate=1.0, terminal=False, clock=lambda: now[0], sleep=sleep)
    assert code == 0, out.getvalue()
    counts = sorted(sum(1 for h in api.router_bindings().values() if aid in h) for aid in ids)
    assert counts == [3, 3, 3]
    assert slept == [1.0, 1.0]  # three moves at 1/s: batches at 0, 1 and 2 s
    assert "no daemon publishes a live view" in out.getvalue()
    api2 = FakeNeutron()
    ids2, _ = _balanced_world(api2)
    assert rebalance([l3_side(api2)], io.StringIO(), view=None, max_moves=2, terminal=False) == 0
    assert sum(1 for h in api2.router_bindings().values() if ids2[2] in h) == 2


def test_rebalance_refuses_while_braked_pending_a_dead_agent_with_work_or_no_view_without_force() -> None:
    api = FakeNeutron()
    ids, _ = _balanced_world(api)
    braked = DaemonView("i", 0.0, "0", "active", plugins=(PluginView("L3Agent", L3_AGENT, 10.0, brake="2 of 3"),))
    with pytest.raises(CommandError, match="brake holds for L3Agent"):
        rebalance([l3_side(api)], io.StringIO(), view=braked)
    busy = DaemonView("i", 0.0, "0", "active", plugins=(PluginView("L3Agent", L3_AGENT, 10.0, pending=4),))
    with pytest.raises(CommandError, match="4 moves pending"):
        rebalance([l3_side(api)], io.StringIO(), view=busy)
    with pytest.raises(CommandError, match=r"cannot reach the daemon's live view \(refused\); --force"):
        rebalance([l3_side(api)], io.StringIO(), view=None, view_problem="cannot reach the daemon's live view "
                  "(refused)")
    api.set_alive(ids[1], False)
    with pytest.raises(CommandError, match="is dead and hosts 3 routers: a failover is due"):
        rebalance([l3_side(api)], io.StringIO(), view=None, view_problem="x", force=True)
    assert api.calls["bind_router"] == 0


def test_rebalance_networks_bind_first_then_unbind_only_with_n_per_network() -> None:
    api = FakeNeutron()
    ids = [api.add_agent(DHCP_AGENT, f"net-{i}").id for i in range(2)]
    for i in range(4):
        api.add_network(f"n{i}", network_id=f"n{i}", dhcp=True)
        api.place_network(f"n{i}", ids[0])
    out = io.StringIO()
    assert rebalance([dhcp_side(api, per=None)], out, view=None, terminal=False) == 0
    assert "nothing to balance" in out.getvalue()
    assert rebalance([dhcp_side(api, per=1)], io.StringIO(), view=None, rate=100.0, terminal=False) == 0
    counts = sorted(sum(1 for h in api.network_bindings().values() if aid in h) for aid in ids)
    assert counts == [2, 2]
    assert all(len(h) == 1 for h in api.network_bindings().values())


def test_rebalance_during_a_pause_goes_ahead_and_says_the_pause() -> None:
    api = FakeNeutron()
    ids, _ = _balanced_world(api)
    pause = Hold("kernel upgrades", "alice@ctl-1", 0.0, until=3600.0)
    view = DaemonView("ctl-1:42", 60.0, "0", "active", paused=pause, plugins=(PluginView("L3Agent", L3_AGENT, 10.0),))
    out = io.StringIO()
    assert rebalance([l3_side(api)], out, view=view, rate=100.0, terminal=False) == 0
    assert "note: the daemon is paused by alice@ctl-1, for 59m more: kernel upgrades; a rebalance is a manual" \
        in out.getvalue()
    assert sorted(sum(1 for h in api.router_bindings().values() if aid in h) for aid in ids) == [3, 3, 3]


def test_rebalance_leaves_an_agent_the_daemon_holds_back_alone() -> None:
    api = FakeNeutron()
    ids, empty = _balanced_world(api)
    agents = tuple(AgentView(aid, f"net-{i}", "alive", "heard 1.0s ago", 1.0) for i, aid in enumerate(ids[:2]))
    warming = AgentView(empty, "net-2", "warming", "back 2s ago, target after 60s", 0.5)
    view = DaemonView("ctl-1:42", 0.0, "0", "active", plugins=(PluginView("L3Agent", L3_AGENT, 10.0,
                                                                           agents=(*agents, warming)),))
    out = io.StringIO()
    assert rebalance([l3_side(api)], out, view=view, terminal=False) == 0
    assert f"not a target yet: net-2 ({empty}) (warming: back 2s ago, target after 60s)" in out.getvalue()
    assert not any(empty in hosts for hosts in api.router_bindings().values())
    counts = sorted(sum(1 for h in api.router_bindings().values() if aid in h) for aid in ids[:2])
    assert counts == [4, 5]  # evened out between the two the daemon judges alive
