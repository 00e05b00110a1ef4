"""The Grafana dashboard and the Prometheus alert rules in ``deploy/`` (issue 16): every query
names a metric the proxy exports, and the files are well formed. (``promtool`` does not
install from a package registry, so the rules are parsed here: YAML, required fields,
durations, balanced expressions.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from imgcache.proxy.metrics import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "imgcache-proxy.json"
RULES = DEPLOY / "prometheus" / "imgcache-alerts.yml"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
_METRIC = re.compile(r"\b(imgcache_[a-z0-9_]+)\b")
_DURATION = re.compile(r"[0-9]+(ms|s|m|h|d|w|y)")
_PROMQL_WORDS = {"sum", "by", "rate", "increase", "max", "min", "histogram_quantile", "clamp_min", "and", "le",
                 "without", "on", "or", "unless", "avg", "count"}


def exported() -> set[str]:
    """The series names the proxy's /metrics can show."""
    names = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            if depth[closing[ch]] < 0:
                return False
    return not any(depth.values())


def test_the_proxy_exports_the_issue_metrics() -> None:
    names = exported()
    for wanted in ("imgcache_proxy_requests_total", "imgcache_proxy_hits_total", "imgcache_proxy_upstream_seconds_bucket",
                   "imgcache_saved_usd_total", "imgcache_spent_usd_total", "imgcache_budget_used_usd",
                   "imgcache_budget_limit_usd", "imgcache_upstream_429_total", "imgcache_rate_queued_total",
                   "imgcache_tier_errors_total", "imgcache_tier_up"):
        assert wanted in names


@pytest.mark.parametrize(("title", "expr"), dashboard_queries())
def test_every_dashboard_query_names_exported_metrics(title: str, expr: str) -> None:
    named = set(_METRIC.findall(expr))
    assert named, f"{title}: no imgcache metric in {expr!r}"
    assert named <= exported(), f"{title}: {sorted(named - exported())} are not exported"
    assert balanced(expr), f"{title}: unbalanced {expr!r}"


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "job"}
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_rule_is_well_formed_and_names_exported_metrics(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Imgcache[A-Za-z0-9]+", rule["alert"])
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert rule["annotations"]["summary"]
    if "for" in rule:
        assert _DURATION.fullmatch(rule["for"]), rule["for"]
    expr = rule["expr"]
    named = set(_METRIC.findall(expr))
    assert named and named <= exported(), sorted(named - exported())
    assert balanced(expr)
    for duration in re.findall(r"\[([^\]]+)\]", expr):
        assert _DURATION.fullmatch(duration), duration
    words = set(re.findall(r"\b([a-z_]+)\s*\(", expr))
    assert words <= _PROMQL_WORDS, words - _PROMQL_WORDS


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
