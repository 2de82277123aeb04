"""deploy/grafana/: the dashboard is valid, well-formed JSON for Grafana's importer, every query
parses as PromQL (promtool) and names real metrics; the provisioning files are consistent."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.common import (
    GRAFANA_DIR,
    exported_metric_names,
    load_yaml,
    referenced_series,
    run_promtool,
    unknown_series,
)

DASHBOARD = GRAFANA_DIR / "segmenter-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_COLUMNS = 24
# Grafana's interval variables, replaced by a duration before promtool parses a query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

# What the dashboard must show: series (or name fragments) that some query must use.
REQUIRED_SERIES = {
    "segmenter_segment_size",  # segment sizes over time
    "segmenter_segment_changes_total",  # transitions
    "segmenter_events_consumed_total",  # throughput
    "segmenter_events_rejected_total",  # rejects
    "segmenter_event_to_change_seconds_bucket",  # latency
    "segmenter_engine_evaluation_seconds_bucket",
    "segmenter_consumer_lag",  # lag
    "segmenter_timer_lag_seconds",
    "segmenter_due_index_size",
    "segmenter_webhook_deliveries_total",
    "segmenter_ingest_requests_total",
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels, with those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels", [])))
    return out


def query_panels() -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard()["panels"]) if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel id + refId, expr) of every query."""
    return [
        (f"panel_{p['id']}_{t['refId']}", t["expr"]) for p in query_panels() for t in p["targets"]
    ]


def to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_dashboard_is_importable_json() -> None:
    data = dashboard()
    assert data["title"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", data["uid"])
    assert 36 <= data["schemaVersion"] <= 41
    assert isinstance(data["panels"], list) and data["panels"]
    # Importable anywhere: no instance-specific id, no version lock.
    assert data.get("id") is None


def test_datasource_is_a_template_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    ds = variables["DS_PROMETHEUS"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in all_panels(dashboard()["panels"])]
    assert len(ids) == len(set(ids)), sorted(ids)
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_every_panel_has_the_datasource_and_queries() -> None:
    panels = query_panels()
    assert len(panels) >= 11
    for panel in panels:
        title = panel.get("title")
        assert title, f"panel {panel['id']} has no title"
        assert panel.get("datasource") == DATASOURCE, title
        targets = panel.get("targets")
        assert targets, f"{title}: no targets"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in targets:
            assert target.get("expr", "").strip(), f"{title}: target {target['refId']} has no expr"
            assert target.get("datasource", DATASOURCE) == DATASOURCE, title


def test_panels_fit_the_grid_without_overlapping() -> None:
    boxes: list[tuple[str, int, int, int, int]] = []
    for panel in dashboard()["panels"]:  # the top level: nested row panels have their own grid
        g = panel["gridPos"]
        x, y, w, h = g["x"], g["y"], g["w"], g["h"]
        name = panel.get("title", str(panel["id"]))
        assert w > 0 and h > 0, name
        assert x >= 0 and x + w <= GRID_COLUMNS, f"{name} leaves the {GRID_COLUMNS}-column grid"
        assert y >= 0, name
        boxes.append((name, x, y, w, h))
    for (a, ax, ay, aw, ah), (b, bx, by, bw, bh) in itertools.combinations(boxes, 2):
        apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
        assert apart, f"panels {a!r} and {b!r} overlap"


def test_queries_use_only_known_grafana_variables() -> None:
    for ref, expr in queries():
        leftover = re.findall(r"\$\{?\w+", to_promql(expr))
        assert not leftover, f"{ref}: unknown variable(s) {leftover} in {expr!r}"


def test_queries_parse_as_promql(tmp_path: Path) -> None:
    """Each query becomes a recording rule; `promtool check rules` parses them all."""
    rules = [{"record": f"dashboard:{ref}", "expr": to_promql(expr)} for ref, expr in queries()]
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool("check", "rules", rule_file)
    assert f"SUCCESS: {len(rules)} rules found" in output


def test_queries_use_real_metric_names() -> None:
    for ref, expr in queries():
        assert referenced_series(expr), f"{ref}: no metric found in {expr!r}"
        unknown = unknown_series(expr)
        assert not unknown, (
            f"{ref} refers to {sorted(unknown)}, which Metrics does not export"
        )


def test_the_required_panels_are_there() -> None:
    used = set().union(*(referenced_series(expr) for _, expr in queries()))
    missing = REQUIRED_SERIES - used
    assert not missing, f"no panel shows {sorted(missing)}"
    assert exported_metric_names() >= REQUIRED_SERIES


def test_provisioning_files() -> None:
    datasources = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    assert datasources["apiVersion"] == 1
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["isDefault"] is True  # DS_PROMETHEUS defaults to it
    assert re.fullmatch(r"https?://[\w.-]+:\d+", prometheus["url"])

    providers = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "segmenter.yml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


@pytest.mark.parametrize(
    "path", sorted((GRAFANA_DIR / "provisioning").rglob("*.yml")), ids=lambda p: p.name
)
def test_provisioning_yaml_parses(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)
