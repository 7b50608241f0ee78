"""dashboards/raygrid.json: valid Grafana JSON whose every query names a metric raygrid exports.

raygrid's gauges (raygrid.run.telemetry.EXPORTED) reach Prometheus with Ray's `ray_` prefix; a
counter would add `_total`. The PromQL here is parsed just enough to pull out metric names: string
literals, label matchers, range selectors and grouping clauses are removed, then every remaining
identifier that is not a function, keyword or Grafana variable is a metric name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from raygrid.run.telemetry import EXPORTED

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "raygrid.json"
README = ROOT / "dashboards" / "README.md"

ALLOWED = {f"ray_{name}" for name in EXPORTED} | {f"ray_{name}_total" for name, (kind, *_rest) in EXPORTED.items()
                                                   if kind == "counter"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                   "unless", "inf", "nan"}
_IDENT = re.compile(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (or a Grafana label_values() query)."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    e = re.sub(r"'(?:\\.|[^'\\])*'", "''", e)
    e = re.sub(r"\{[^{}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range / subquery selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"label_values\(([^,()]*),[^)]*\)", r"(\1)", e)  # label_values(metric, label)
    names = set()
    for m in _IDENT.finditer(e):
        name, call = m.group(1), m.group(2)
        if call or name in PROMQL_KEYWORDS:
            continue  # a function (sum, rate, topk, label_values...) or a keyword
        names.add(name)
    return names


def _panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])  # panels inside collapsed rows
    return out


@pytest.fixture(scope="module")
def dash() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_metric_name_extraction_sees_unknown_and_known_names():
    # the check below can fail: a wrong name is found wherever it hides
    assert metric_names('sum by (stage) (rate(ray_foo_total{a="x{y}"}[5m]))') == {"ray_foo_total"}
    assert metric_names('topk(10, max by (stage, trial_id) (ray_raygrid_step_seconds{SessionName=~"$SessionName"}))') \
        == {"ray_raygrid_step_seconds"}
    assert metric_names("ray_a / on(trial_id) group_left ray_b > bool 0.5") == {"ray_a", "ray_b"}
    assert metric_names('label_values(ray_raygrid_trials{SessionName=~"$SessionName"}, sweep)') == {"ray_raygrid_trials"}
    assert metric_names("raygrid_trial_step") == {"raygrid_trial_step"}  # missing ray_ prefix → not allowed


def test_dashboard_is_valid_grafana_json(dash):
    assert dash["uid"] == "raygridSweep" and dash["title"] and isinstance(dash["panels"], list)
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    # the data source variable, as in Ray's generated dashboards
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"SessionName", "sweep", "stage", "trial_id"} <= set(variables)
    for p in _panels(dash):
        assert {"type", "title", "gridPos"} <= set(p)
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0


def test_every_query_uses_exported_metrics(dash):
    queried = set()
    n_targets = 0
    for p in _panels(dash):
        if p["type"] == "row":
            continue
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        assert p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            n_targets += 1
            names = metric_names(t["expr"])
            assert names, f"panel {p['title']!r}: no metric in {t['expr']!r}"
            assert names <= ALLOWED, f"panel {p['title']!r} queries {sorted(names - ALLOWED)}, not exported by raygrid"
            assert 'SessionName=~"$SessionName"' in t["expr"], f"panel {p['title']!r} ignores the session filter"
            queried |= names
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            names = metric_names(v["query"]["query"] if isinstance(v["query"], dict) else v["query"])
            assert names and names <= ALLOWED, f"variable {v['name']}: {names}"
    assert n_targets >= 10
    # and every exported metric is on the dashboard
    assert {f"ray_{n}" for n in EXPORTED} <= queried


def test_readme_explains_loading_next_to_rays_dashboards():
    text = README.read_text()
    for needle in ("session_latest/metrics/grafana", "provisioning/dashboards", "raygrid.json", "ray_raygrid_",
                   "type: file", "grafana.ini", "datasource"):
        assert needle in text, needle
