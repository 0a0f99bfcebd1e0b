"""Smoke runs of the benchmarks' pure-python parts on tiny sizes, so they cannot rot unnoticed.

The benchmarks themselves (``bench/``, ``python -m bench.run``) take minutes on the real RabbitMQ and
neutron-server and are not part of the test run. Here: the simulated hour of API calls (exact counts:
an idle check must cost nothing), the original design's call formula against a literal enumeration of
its loops, the move benchmark on ``FakeNeutron``, the failover timeline, and the runner's parsing and
table. No timing is asserted.
"""

from __future__ import annotations

import pytest
from bench import Figure
from bench.bench_api_calls import (
    Size,
    original_calls_per_pass,
    pages,
    request_kinds,
    requests_per_reconcile,
    simulate,
)
from bench.bench_failover import OUTAGE_LINE, timeline
from bench.bench_moves import measure_moves, plan_moves
from bench.run import (
    build_parser,
    decode_figures,
    emit_figures,
    read_figures,
    render_markdown,
    render_table,
    selected,
)

from rpcdaemon.demo.fake_neutron import FakeNeutron
from rpcdaemon.model import L3_AGENT, ActionKind

# -- (c) API calls ---------------------------------------------------------------------------------


def test_a_simulated_quarter_hour_calls_the_api_only_to_reconcile() -> None:
    size = Size(l3_agents=3, dhcp_agents=2, routers=30, networks=4)
    result = simulate(size, hours=0.25, reconcile_interval=60.0, check_interval=2.0)
    reconciles = 15  # 900 s / 60 s, per plugin
    assert result.checks == 450
    assert result.actions == 0
    assert result.passes_with_calls == 2 * reconciles == result.reconciles_expected
    assert dict(result.calls) == {
        "list_agents": 2 * reconciles,
        "list_routers": reconciles,
        "routers_on_agent": 3 * reconciles,
        "list_networks": reconciles,
        "networks_on_agent": 2 * reconciles,
    }
    methods, http = requests_per_reconcile(size)
    assert result.method_calls == methods * reconciles
    assert result.http_requests() == http * reconciles
    assert result.per_hour(result.method_calls) == methods * 60


def test_the_real_adapter_pages_every_full_page() -> None:
    assert [pages(n) for n in (0, 1, 499, 500, 501, 2000)] == [1, 1, 1, 2, 2, 5]
    # 20+20 agents (1 page each), 2000 routers (5), 200 networks and subnets (1 each), 20+20 agent reads.
    assert requests_per_reconcile(Size()) == (44, 1 + 5 + 20 + 1 + 1 + 1 + 20)


@pytest.mark.parametrize(("l3", "dhcp", "networks"), [(1, 1, 1), (2, 3, 4), (5, 4, 7), (20, 20, 200)])
def test_the_original_formula_matches_its_loops(l3: int, dhcp: int, networks: int) -> None:
    """The original's passes, enumerated literally: every agent is handled, none is dead, every
    network is on every DHCP agent."""
    calls = 0
    for _agent in range(dhcp):
        calls += 1  # list_networks_on_dhcp_agent(agent)
        for _target in range(dhcp):
            for _network in range(networks):
                calls += 1  # list_networks_on_dhcp_agent(target), once per network of the agent
    for _agent in range(l3):
        calls += 1  # list_routers()
        calls += l3  # list_routers_on_l3_agent(target) for every live target
    assert original_calls_per_pass(Size(l3, dhcp, 0, networks)) == calls


def test_uwsgi_request_lines_are_counted_by_kind() -> None:
    lines = [
        "[pid: 11449|app: 0|req: 2/2] 127.0.0.1 () {28 vars in 345 bytes} [Wed Nov 25 10:26:38 2026] "
        "GET /v2.0/agents?limit=500 => generated 14 bytes in 3 msecs (HTTP/1.1 200) 4 headers in 156 bytes",
        "[pid: 11449|app: 0|req: 3/3] 127.0.0.1 () {28 vars in 345 bytes} [Wed Nov 25 10:26:38 2026] GET "
        "/v2.0/agents/0b4c1f3e-2d5a-4e8f-9a7b-1c2d3e4f5a6b/l3-routers => generated 14 bytes in 3 msecs",
        "SIGINT/SIGTERM received...killing workers...",
    ]
    assert request_kinds(lines) == {"GET /v2.0/agents": 1, "GET /v2.0/agents/{id}/l3-routers": 1}


# -- (b) moves ---------------------------------------------------------------------------------------


def _fake_with_routers(n: int) -> tuple[FakeNeutron, list[str]]:
    fake = FakeNeutron(latency=0.001)
    fake.add_agent(L3_AGENT, "dying", agent_id="dying")
    fake.add_agent(L3_AGENT, "live0", agent_id="live0")
    fake.add_agent(L3_AGENT, "live1", agent_id="live1")
    routers = [fake.add_router(f"r{i}").id for i in range(n)]
    for rid in routers:
        fake.place_router(rid, "dying")
    return fake, routers


def test_the_planned_moves_spread_the_routers_over_the_live_agents() -> None:
    fake, routers = _fake_with_routers(10)
    actions = plan_moves(fake.agent("dying"), [fake.agent("live0"), fake.agent("live1")], routers, 10.0)
    assert {(a.kind, a.source.id if a.source else None) for a in actions} == {(ActionKind.MOVE_ROUTER, "dying")}
    assert sorted(a.resource_id for a in actions) == sorted(routers)
    targets = [a.target.id for a in actions if a.target]
    assert sorted(targets.count(t) for t in ("live0", "live1")) == [5, 5]


def test_the_move_benchmark_runs_both_sides_on_the_fake() -> None:
    fake, routers = _fake_with_routers(24)
    result = measure_moves(fake, fake.agent("dying"), [fake.agent("live0"), fake.agent("live1")], routers,
                           workers=4)
    assert result.routers == 24
    assert result.statuses == {"done": 24}
    assert result.direct > 0
    assert result.executor > 0
    assert result.executor_calls > 0
    assert 0 <= result.overhead < result.executor
    assert len(result.direct_runs) == 2
    # Direct, restore, executor, restore, direct: every router ends on exactly one live agent.
    bindings = fake.router_bindings()
    assert {rid: len(hosts) for rid, hosts in bindings.items()} == dict.fromkeys(routers, 1)
    assert set().union(*bindings.values()) == {"live0", "live1"}
    # 24 unbind+bind in each of the five phases, plus the executor's read-back (one per target agent).
    assert fake.calls["bind_router"] == 5 * 24
    assert fake.calls["unbind_router"] == 5 * 24
    assert fake.calls["routers_on_agent"] == 2


# -- (a) failover ------------------------------------------------------------------------------------


def test_the_failover_timeline_reads_first_half_and_all() -> None:
    samples = [(1.0, 0), (2.0, 0), (3.1, 10), (4.0, 60), (5.2, 99), (6.0, 100)]
    line = timeline(samples, 100, neutron_dead=2.5)
    assert (line.first, line.half, line.all, line.neutron_dead) == (3.1, 4.0, 6.0, 2.5)
    unfinished = timeline(samples[:4], 100)
    assert (unfinished.first, unfinished.half, unfinished.all) == (3.1, 4.0, None)


def test_a_failover_run_disturbed_by_an_outage_is_recognised_from_the_daemon_log() -> None:
    log = (
        "2026-11-25 12:00:51,292 WARNING rpcdaemon.observing.bus: bus agents: lost the link to "
        "amqp://guest:***@127.0.0.1:5672/vh: ConnectionResetError: [Errno 104] Connection reset by peer\n"
        "2026-11-25 12:01:06,309 WARNING rpcdaemon.l3agent: Neutron API call failed (temporary: GET /agents:"
        " refused); no agent is judged dead until it is back\n"
        "2026-11-25 12:02:23,114 INFO    rpcdaemon.l3agent: L3Agent pass: 10 actions in 0.99s: 10 done\n"
    )
    assert [m.group(0) for m in OUTAGE_LINE.finditer(log)] == [
        "lost the link to amqp://guest:***@127.0.0.1:5672/vh: ConnectionResetError",
        "Neutron API call failed (temporary: GET /agents: refused)",
    ]


# -- the runner --------------------------------------------------------------------------------------

DECODE_OUTPUT = """\
20000 heartbeats, 200 hosts, 1612 bytes each
decode only:                    41,234 msg/s
publish (kombu, one conn):      11,000 msg/s
consume+decode+record (bus):     7,890 msg/s  (goal >= 5,000)
"""


def test_the_runner_reads_the_decode_benchmark() -> None:
    (row,) = decode_figures(DECODE_OUTPUT)
    assert row.value == "7,890 msg/s"
    assert row.reference == "decode alone 41,234 msg/s"
    assert row.met is True
    (slow,) = decode_figures(DECODE_OUTPUT.replace("7,890", "4,999"))
    assert slow.met is False
    with pytest.raises(RuntimeError, match="consume"):
        decode_figures("nothing useful")


def test_a_child_benchmark_hands_its_figures_back_in_one_line() -> None:
    rows = [Figure("(e) plan", "one full plan", "42 ms", "", "<= 100 ms", True),
            Figure("(e) plan", "idle check", "3 ms, 0 API calls", "", "0 API calls", None)]
    output = "world: ...\none full plan     42.0   goal <= 100\n" + emit_figures(rows) + "\n"
    assert read_figures(output) == rows
    with pytest.raises(RuntimeError, match="no figures"):
        read_figures("world: ...\n")


def test_the_runner_prints_one_table_and_checks_names() -> None:
    rows = [Figure("(d) decode", "heartbeats", "7,890 msg/s", "", ">= 5,000 msg/s", True),
            Figure("(b) moves", "1000 moves", "Executor.run 61.0 s", "direct pool 58.0 s", "ratio <= 1.2", None)]
    text = render_table(rows)
    assert text.splitlines()[0].split() == ["benchmark", "measure", "rpcdaemon", "compared", "with", "goal", "met"]
    assert "7,890 msg/s" in text
    assert "direct pool 58.0 s" in text
    assert render_markdown(rows).count("\n") == 3
    assert selected(build_parser().parse_args(["--only", "plan,calls", "--skip", "plan"])) == ["calls"]
    with pytest.raises(SystemExit, match="unknown benchmark"):
        selected(build_parser().parse_args(["--only", "nope"]))


def test_the_commands_benchmark_measures_check_and_both_plans() -> None:
    from bench import bench_commands

    rows = bench_commands.figures(bench_commands.Size(l3_agents=6, routers=60, latency=0.0), runs=1, verbose=False)
    assert [r.bench for r in rows] == ["(h) commands"] * 3
    assert all(r.met for r in rows), rows
    assert "API calls" in rows[0].value
