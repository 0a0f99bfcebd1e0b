"""etc/prometheus/rpcdaemon-alerts.yml: a valid Prometheus rule file whose expressions name only what the daemon
really exports.

The names, labels and label values are taken from a real ``Metrics`` registry after the in-memory service
(``metrics_world.World``) went through a failover, so a metric renamed in ``metrics.py`` (or one that never gets a
sample) breaks this test. A small PromQL scanner finds the selectors, their label matchers, the grouping labels and
the ``$labels`` of the annotations. With ``promtool`` on PATH (Debian's ``prometheus`` package; not installed by
scripts/test) the file is also checked by it and unit-tested on series in ``alert_rules_promtool.yml``; else that
test is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.metrics_world import TICK, World

from rpcdaemon.acting.api import ErrorKind

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "etc/prometheus/rpcdaemon-alerts.yml"
PROMTOOL_TESTS = Path(__file__).with_name("alert_rules_promtool.yml")

# What Prometheus adds to every scraped series, and its own metric for a target.
TARGET_LABELS = frozenset({"job", "instance"})
PROMETHEUS_OWN = {"up": TARGET_LABELS}
FUNCTIONS = frozenset({
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "count_values", "group",
    "rate", "irate", "increase", "delta", "idelta", "absent", "absent_over_time", "time", "timestamp", "vector",
    "scalar", "abs", "clamp_min", "clamp_max", "changes", "resets", "histogram_quantile", "label_replace",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "last_over_time",
})
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                      "offset"})
AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "group"})

_TOKEN = re.compile(r"""
    (?P<grouping>\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?P<glabels>[^)]*)\))
  | (?P<range>\[[^\]]*\])
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b)
  | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?P<matchers>\{[^}]*\})?
""", re.VERBOSE)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]  # label, operator, value


@dataclass
class Scanned:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    top_by: set[str] | None = None  # the labels of a top-level "sum by (...)": all the alert keeps


def scan(expr: str) -> Scanned:
    """The parts of a PromQL expression this test checks (the subset the rule file uses)."""
    out = Scanned()
    top = re.match(r"\s*(\w+)\s+by\s*\(([^)]*)\)", expr)
    if top and top.group(1) in AGGREGATIONS and " or " not in expr and " and " not in expr:
        out.top_by = {x.strip() for x in top.group(2).split(",") if x.strip()}
    for m in _TOKEN.finditer(expr):
        if m.group("grouping") is not None:
            out.grouping |= {x.strip() for x in m.group("glabels").split(",") if x.strip()}
        elif m.group("name") is not None:
            name = m.group("name")
            if name in KEYWORDS:
                continue
            if name in FUNCTIONS:
                out.functions.add(name)
                continue
            if m.group("matchers") is None and expr[m.end():].lstrip().startswith("("):
                raise AssertionError(f"unknown function {name}() in {expr!r}")
            body = (m.group("matchers") or "{}")[1:-1]
            matchers = [(x.group(1), x.group(2), x.group(3)) for x in _MATCHER.finditer(body)]
            assert _MATCHER.sub("", body).strip() == "", f"cannot read the matchers {body!r}"
            out.selectors.append(Selector(name, matchers))
    return out


@dataclass
class Exported:
    """Sample name -> label name -> the values seen."""

    labels: dict[str, dict[str, set[str]]]

    def problems(self, expr: str, annotations: dict[str, str]) -> list[str]:
        found = scan(expr)
        said: list[str] = []
        known: set[str] = set(TARGET_LABELS)
        for sel in found.selectors:
            if sel.name in PROMETHEUS_OWN:
                have: dict[str, set[str]] = {label: set() for label in PROMETHEUS_OWN[sel.name]}
            elif sel.name in self.labels:
                have = self.labels[sel.name]
            else:
                said.append(f"{sel.name}: not exported by the daemon")
                continue
            known |= have.keys()
            for label, op, value in sel.matchers:
                if label in TARGET_LABELS:
                    continue
                if label not in have:
                    said.append(f"{sel.name}: no label {label!r} (it has {sorted(have)})")
                elif op == "=" and value not in have[label]:
                    said.append(f"{sel.name}{{{label}}}: no sample has {value!r} (seen {sorted(have[label])})")
                elif op == "=~":
                    for alternative in value.split("|"):
                        if re.fullmatch(r"[\w-]+", alternative) and alternative not in have[label]:
                            said.append(f"{sel.name}{{{label}}}: no sample has {alternative!r}")
        for label in found.grouping - known:
            said.append(f"grouping by {label!r}, which none of its metrics has")
        for text in annotations.values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                if label not in known:
                    said.append(f"annotation uses $labels.{label}, which none of its metrics has")
                elif found.top_by is not None and label not in found.top_by:
                    said.append(f"annotation uses $labels.{label}, but the expression keeps {sorted(found.top_by)}")
        return said


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def exported() -> Iterator[Exported]:
    """A failover on the in-memory service: an agent dead with its routers moved off, an API error, the brake
    state, the leader gauge, heartbeat ages; then every sample of the registry."""
    w = World("L3Agent")
    try:
        for i in range(4):
            w.api.add_router(router_id=f"r{i}")
            w.api.place_router(f"r{i}", "a")
        w.run(2 * TICK)
        w.api.fail_next(1, ErrorKind.TEMPORARY, method="list_agents")
        w.plugin.request_reconcile()
        w.silent.add("a")
        w.run(60)
        assert w.api.router_bindings()["r0"] != frozenset({"a"}), "the failover did not happen"
        labels: dict[str, dict[str, set[str]]] = {}
        for metric in w.metrics.registry.collect():
            for sample in metric.samples:
                per = labels.setdefault(sample.name, {})
                for k, v in sample.labels.items():
                    per.setdefault(k, set()).add(v)
        yield Exported(labels)
    finally:
        w.close()


def test_the_rule_file_has_groups_of_alerts_with_expr_for_labels_and_annotations() -> None:
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}
    names = []
    for group in doc["groups"]:
        assert set(group) == {"name", "rules"}
        assert group["rules"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Rpcdaemon[A-Z]\w+", rule["alert"])
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert set(rule["annotations"]) == {"summary", "description"}
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            names.append(rule["alert"])
    assert len(names) == len(set(names))
    # What the issue asks for, each once: brake, not ready (target down, bus, API), no active and two active,
    # an agent dead with work on it, no successful pass.
    assert set(names) == {
        "RpcdaemonBrakeEngaged", "RpcdaemonInstanceDown", "RpcdaemonBusDisconnected", "RpcdaemonNeutronApiFailing",
        "RpcdaemonNoActiveInstance", "RpcdaemonSeveralActiveInstances", "RpcdaemonAgentDeadWithWork",
        "RpcdaemonNoSuccessfulPass",
        "RpcdaemonPausedForLong",
    }


@pytest.mark.parametrize("rule", load_rules(), ids=lambda r: r["alert"])
def test_every_expression_names_only_what_the_daemon_exports(rule: dict[str, Any], exported: Exported) -> None:
    assert scan(rule["expr"]).selectors, "no metric in the expression"
    assert exported.problems(rule["expr"], rule["annotations"]) == []


def test_the_checker_catches_a_misspelt_metric_a_wrong_label_and_a_wrong_value(exported: Exported) -> None:
    """The check above is not vacuous: the mistakes it is there for are found."""
    assert exported.problems("rpcdaemon_brake_engagd == 1", {}) == [
        "rpcdaemon_brake_engagd: not exported by the daemon"]
    assert exported.problems('rpcdaemon_agent_verdict{state="dead"} == 1', {})
    assert exported.problems('rpcdaemon_agent_verdict{verdict="Dead"} == 1', {})
    assert exported.problems('rate(rpcdaemon_api_errors_total{kind=~"temporary|transient"}[5m]) > 0', {})
    assert exported.problems("sum by (cluster) (rpcdaemon_leader) > 1", {})
    assert exported.problems("sum by (job) (rpcdaemon_leader) > 1", {"summary": "{{ $labels.instance }}"})
    with pytest.raises(AssertionError, match="unknown function"):
        scan("sumof(rpcdaemon_leader) > 1")
    assert exported.problems('rpcdaemon_agent_verdict{verdict="dead"} == 1', {"summary": "{{ $labels.host }}"}) == []


def test_promtool_accepts_the_file_and_its_alerts_fire_on_the_series_they_are_for() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", PROMTOOL_TESTS.name], capture_output=True, text=True,
                            timeout=60, cwd=PROMTOOL_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
