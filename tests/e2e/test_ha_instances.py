"""Three real rpcdaemon processes with one config, as operators run them on three controllers.

Exactly one is active (holds the leadership lock and makes Neutron API writes); the others listen and
stand by. Each scenario kills, freezes or cuts off the active instance at the worst moment and checks
Neutron's side (every router on exactly one live agent) and the logs (a fenced instance logs no "API
write"). The RabbitMQ restart with three instances running is in test_safety.py (it restarts the
shared broker, so it runs with the other disruptive test).
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from tests.e2e.rpcd import ActionLine, Daemons, RpcDaemon, add_hosts, routers_by_agent, seed_routers
from tests.harness.fleet import Fleet
from tests.harness.neutron_server import NeutronServer
from tests.harness.seed import SeedClient
from tests.harness.tcp_proxy import TcpProxy
from tests.kit.metrics import leader_gauge
from tests.kit.poll import wait_until

API_WRITE = re.compile(r"API write: ")
REDIS_URL = "redis://127.0.0.1:6379"


def wait_one_active(daemons: Sequence[RpcDaemon], timeout: float) -> RpcDaemon:
    """Until exactly one of ``daemons`` says it is active; returns it."""

    def one() -> RpcDaemon | None:
        active = [d for d in daemons if leader_gauge(d.metrics_if_answering()) == 1.0]
        return active[0] if len(active) == 1 else None

    return wait_until(one, timeout, "exactly one active instance",
                      lambda: "".join(d.hint() for d in daemons))


def start_group(rpcdaemon: Daemons, names: Iterable[str], *, daemon: dict[str, object] | None = None,
                coordination: dict[str, object] | None = None) -> list[RpcDaemon]:
    """Instances of one deployment: one lock group (the test's), each with its own metrics port and log."""
    together = {"group": rpcdaemon.group, **(coordination or {})}
    started = [rpcdaemon.start(rpcdaemon.config(name, daemon=daemon, coordination=together), name=name)
               for name in names]
    for instance in started:
        instance.wait_ready(timeout=40)
    return started


def writes_after(daemon: RpcDaemon, offset: int) -> list[str]:
    return [line for line in daemon.log()[offset:].splitlines() if API_WRITE.search(line)]


def done_moves(daemons: Iterable[RpcDaemon]) -> Counter[str]:
    """Router id -> how many "move router ... done" lines all the instances logged for it."""
    lines: list[ActionLine] = [a for d in daemons for a in d.actions(statuses={"done"})]
    return Counter(a.resource_id for a in lines if a.kind == "move-router")


def assert_each_on_one_live_agent(rest: SeedClient, live: Iterable[str], everyone: Iterable[str],
                                  routers: Iterable[str]) -> None:
    placement = routers_by_agent(rest, everyone)
    hosts: dict[str, set[str]] = {}
    for aid, rids in placement.items():
        for rid in rids:
            hosts.setdefault(rid, set()).add(aid)
    live_ids = set(live)
    wrong = {rid: hosts.get(rid, set()) for rid in routers if len(hosts.get(rid, set())) != 1
             or not hosts[rid] <= live_ids}
    assert wrong == {}, f"routers not on exactly one live agent: {wrong}"


def wait_all_on_live(rest: SeedClient, live: Iterable[str], everyone: Iterable[str], routers: Sequence[str],
                     timeout: float, daemons: Sequence[RpcDaemon]) -> float:
    live_ids, all_ids, began = set(live), list(everyone), time.monotonic()

    def settled() -> bool:
        placement = routers_by_agent(rest, all_ids)
        on_live = Counter(rid for aid, rids in placement.items() if aid in live_ids for rid in rids)
        anywhere = Counter(rid for rids in placement.values() for rid in rids)
        return all(on_live[r] == 1 and anywhere[r] == 1 for r in routers)

    wait_until(settled, timeout, f"{len(routers)} routers each on one live agent",
               lambda: "".join(d.hint() for d in daemons))
    return time.monotonic() - began


def test_the_active_instance_killed_in_the_middle_of_moves_another_finishes(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c"])
    routers = seed_routers(rest, l3["dying"], 100, prefix="ha-kill")
    trio = start_group(rpcdaemon, ["ha-1", "ha-2", "ha-3"])
    active = wait_one_active(trio, timeout=20)

    fleet.crash("dying")
    active.wait_log(r"move router \S+ from .*: done", timeout=neutron.agent_down_time + 15)
    active.kill()
    killed = time.monotonic()
    rest_of = [d for d in trio if d is not active]
    successor = wait_one_active(rest_of, timeout=20)
    took_over = time.monotonic() - killed
    moved = wait_all_on_live(rest, [l3["b"], l3["c"]], l3.values(), routers, neutron.agent_down_time + 30, trio)
    print(f"\nactive killed mid-move: {successor.name} active after {took_over:.1f} s; "
          f"all 100 routers on live agents {moved:.1f} s after the kill")

    assert_each_on_one_live_agent(rest, [l3["b"], l3["c"]], l3.values(), routers)
    twice = {rid: n for rid, n in done_moves(trio).items() if n > 1}
    assert twice == {}, "routers moved twice"
    standby = next(d for d in rest_of if d is not successor)
    assert writes_after(standby, 0) == [], standby.hint()
    assert successor.tracebacks() == []
    assert standby.tracebacks() == []


def test_a_frozen_active_instance_makes_no_write_when_it_wakes(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c"])
    routers = seed_routers(rest, l3["dying"], 10, prefix="ha-freeze")
    trio = start_group(rpcdaemon, ["fz-1", "fz-2", "fz-3"])
    frozen = wait_one_active(trio, timeout=20)
    rest_of = [d for d in trio if d is not frozen]

    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        successor = wait_one_active(rest_of, timeout=20)
        fleet.crash("dying")  # the frozen one heard it alive; on waking, its silence looks like a death
        wait_all_on_live(rest, [l3["b"], l3["c"]], l3.values(), routers, neutron.agent_down_time + 20, trio)
        placed = routers_by_agent(rest, l3.values())
        mark = len(frozen.log())
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    frozen.wait_log(r"now STANDBY", timeout=15)
    # Several of its checks after waking: a standby makes no pass of its own, so count the successor's, which
    # run on the same interval; and the frozen one's log must have moved on past its "now STANDBY" line.
    successor.wait_passes(3)

    assert writes_after(frozen, mark) == [], frozen.hint()
    assert routers_by_agent(rest, l3.values()) == placed
    assert leader_gauge(successor.metrics_if_answering()) == 1.0
    assert leader_gauge(frozen.metrics_if_answering()) == 0.0
    assert_each_on_one_live_agent(rest, [l3["b"], l3["c"]], l3.values(), routers)


def test_an_active_instance_cut_off_the_broker_without_a_fin_is_replaced_and_stops_acting(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c"])
    routers = seed_routers(rest, l3["dying"], 10, prefix="ha-cut")
    rabbit = neutron.rabbit
    with TcpProxy(rabbit.host, rabbit.port) as proxy:
        url = re.sub(r"@[^/]+/", f"@127.0.0.1:{proxy.port}/", _rpchost(rpcdaemon))
        cut = start_group(rpcdaemon, ["cut-1"], daemon={"rpchost": url})[0]
        wait_one_active([cut], timeout=20)
        others = start_group(rpcdaemon, ["cut-2", "cut-3"])
        assert wait_one_active([cut, *others], timeout=10) is cut

        proxy.blackhole()
        blackholed = time.monotonic()
        successor = wait_one_active(others, timeout=20)
        took_over = time.monotonic() - blackholed
        mark = len(cut.log())
        fleet.crash("dying")
        wait_all_on_live(rest, [l3["b"], l3["c"]], l3.values(), routers, neutron.agent_down_time + 20,
                         [cut, *others])
        print(f"\nbroker connection blackholed: {successor.name} active after {took_over:.1f} s")
        assert writes_after(cut, mark) == [], cut.hint()
        assert leader_gauge(cut.metrics_if_answering()) == 0.0
    assert_each_on_one_live_agent(rest, [l3["b"], l3["c"]], l3.values(), routers)


def test_the_tooz_backend_on_redis_hands_over_when_the_active_instance_dies(
    neutron: NeutronServer, fleet: Fleet, rest: SeedClient, rpcdaemon: Daemons
) -> None:
    pytest.importorskip("tooz")
    l3 = add_hosts(fleet, neutron, ["dying", "b", "c"])
    routers = seed_routers(rest, l3["dying"], 10, prefix="ha-tooz")
    trio = start_group(rpcdaemon, ["tz-1", "tz-2", "tz-3"], coordination={"backend_url": REDIS_URL})
    active = wait_one_active(trio, timeout=20)
    assert re.search(r"now ACTIVE .*redis", active.log()), active.hint()

    active.kill()
    killed = time.monotonic()
    rest_of = [d for d in trio if d is not active]
    successor = wait_one_active(rest_of, timeout=30)
    took_over = time.monotonic() - killed
    fleet.crash("dying")
    wait_all_on_live(rest, [l3["b"], l3["c"]], l3.values(), routers, neutron.agent_down_time + 20, trio)
    print(f"\ntooz/redis: {successor.name} active {took_over:.1f} s after the kill")
    standby = next(d for d in rest_of if d is not successor)
    assert writes_after(standby, 0) == [], standby.hint()
    assert_each_on_one_live_agent(rest, [l3["b"], l3["c"]], l3.values(), routers)


def _rpchost(rpcdaemon: Daemons) -> str:
    text = Path(rpcdaemon.config("probe")).read_text()
    m = re.search(r"^rpchost\s*=\s*(\S+)", text, re.MULTILINE)
    assert m is not None
    return m.group(1)
