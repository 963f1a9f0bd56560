"""The examples in docs/monitoring.md an SRE drops in: the alert rules pass ``promtool check
rules`` and fire as intended (``promtool test rules``), the Grafana dashboard's queries are
PromQL promtool accepts, and both name only metrics the daemon exposes (and the page lists
every one of them)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator.metrics import Metrics
from tests.promstack import PROMTOOL, missing

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "monitoring" / "alerts.yml"
RULES_TEST = ROOT / "tests" / "monitoring" / "alerts_test.yml"
DASHBOARD = ROOT / "docs" / "monitoring" / "dashboard.json"
PAGE = ROOT / "docs" / "monitoring.md"
# the daemon's own names (Prometheus's `up` is added to every scrape by Prometheus itself)
_NAME = re.compile(r"\b((?:remediator|process)_[a-z0-9_]+)\b")
# Grafana's variables, replaced by what they stand for, so that promtool can parse the query
_GRAFANA = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$instance": ".*"}


@pytest.fixture(scope="module")
def promtool() -> str:
    why = missing()
    if why is not None:
        pytest.fail(why)
    return PROMTOOL


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exposed() -> set[str]:
    """Every series name the daemon's registry exposes, by each family's type (a labelled
    family has no sample before its first label set is used)."""
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in _SUFFIXES[family.type]
    }


def _dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    out += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return out


def _rule_queries() -> list[str]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def _grafana_free(expr: str) -> str:
    for var, value in _GRAFANA.items():
        expr = expr.replace(var, value)
    return expr


def test_the_alert_rules_pass_promtool_check(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_each_alert_fires_on_its_series_and_not_before(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES_TEST.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_named_in_the_rules_is_tested() -> None:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in doc["groups"] for r in g["rules"]}
    tests: dict[str, Any] = yaml.safe_load(RULES_TEST.read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t["alert_rule_test"]}
    # absent() and a 4-hour pause are plain enough; the rest must be shown to fire
    assert alerts - tested == {"RemediatorMetricsAbsent", "RemediatorPausedLong"}


def test_the_dashboards_queries_are_promql(promtool: str, tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": _grafana_free(e)}
                    for i, e in enumerate(_dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("where", ["rules", "dashboard"])
def test_the_examples_name_only_metrics_that_exist(where: str) -> None:
    queries = _rule_queries() if where == "rules" else _dashboard_queries()
    named = {n for q in queries for n in _NAME.findall(q)}
    assert named, "no metric found in the queries"
    assert named - _exposed() == set()
    if where == "dashboard":
        variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
        for v in variables:
            query = v.get("definition", "")
            assert set(_NAME.findall(query)) <= _exposed()


def test_the_page_lists_every_metric_and_links_the_files() -> None:
    page = PAGE.read_text()
    m = Metrics()
    families = {f.name for f in m.registry.collect() if f.name.startswith("remediator_")}
    for family in families:
        kinds = {f.type for f in m.registry.collect() if f.name == family}
        shown = f"{family}_total" if "counter" in kinds else family
        assert f"`{shown}`" in page, f"docs/monitoring.md does not list {shown}"
    assert "monitoring/alerts.yml" in page and "monitoring/dashboard.json" in page
