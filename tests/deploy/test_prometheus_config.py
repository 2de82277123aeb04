"""deploy/prometheus/: promtool accepts the configs and rules, the rule unit tests pass, and
every alert names real metrics and documents itself (annotations, runbook section)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.common import (
    INGEST_JOB,
    OPERATIONS_DOC,
    PROMETHEUS_DIR,
    WORKER_JOB,
    load_yaml,
    markdown_anchors,
    referenced_series,
    run_promtool,
    unknown_series,
)

CONFIGS = sorted(PROMETHEUS_DIR.glob("prometheus*.yml"))
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"

# The alerts the operations guide promises; more may be added, none of these removed.
REQUIRED_ALERTS = {
    "SegmenterWorkerDown",
    "SegmenterConsumerLagGrowing",
    "SegmenterTimerLagHigh",
    "SegmenterDeadLetterRate",
    "SegmenterWebhookFailures",
    "SegmenterTableRecoveryStuck",
    "SegmenterRulesRefused",
}


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_expected_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert {"prometheus.yml", "prometheus-compose.yml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config: Path) -> None:
    output = run_promtool("check", "config", config)
    assert "SUCCESS" in output


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_scrapes_the_jobs_the_alerts_select_and_loads_the_rules(config: Path) -> None:
    data = load_yaml(config)
    assert data["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in data["scrape_configs"]}
    assert {WORKER_JOB, INGEST_JOB} <= set(jobs)
    for name in (WORKER_JOB, INGEST_JOB):
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"


def test_local_config_scrapes_the_default_ports() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    worker_targets = [t for sc in jobs[WORKER_JOB]["static_configs"] for t in sc["targets"]]
    ingest_targets = [t for sc in jobs[INGEST_JOB]["static_configs"] for t in sc["targets"]]
    assert "127.0.0.1:6066" in worker_targets  # SEGMENTER_WEB_PORT's default
    assert "127.0.0.1:8080" in ingest_targets  # `segmenter ingest run`'s default


def test_promtool_check_rules() -> None:
    output = run_promtool("check", "rules", ALERTS)
    assert "SUCCESS" in output


def test_promtool_rule_unit_tests_pass() -> None:
    output = run_promtool("test", "rules", ALERTS_TEST.name, cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output


def test_the_required_alerts_exist_once() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), names
    assert set(names) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(names)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_documented(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    runbook = annotations["runbook"]
    doc, _, anchor = runbook.partition("#")
    assert doc == "docs/operations.md", runbook
    assert anchor == name.lower(), f"{name}: runbook anchor should be #{name.lower()}"
    assert anchor in markdown_anchors(OPERATIONS_DOC), (
        f"docs/operations.md has no heading for {name} (anchor #{anchor})"
    )


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_uses_real_metric_names(rule: dict[str, Any]) -> None:
    expr = rule["expr"]
    assert referenced_series(expr), f"{rule['alert']}: no metric found in {expr!r}"
    unknown = unknown_series(expr)
    assert not unknown, (
        f"{rule['alert']} refers to {sorted(unknown)}, which Metrics does not "
        "export (renamed? counters carry _total, histograms _bucket/_sum/_count)"
    )


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_a_unit_test_where_it_fires(rule: dict[str, Any]) -> None:
    cases = [
        case
        for test in load_yaml(ALERTS_TEST)["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == rule["alert"]
    ]
    assert any(case.get("exp_alerts") for case in cases), (
        f"alerts_test.yml never checks that {rule['alert']} fires"
    )


def test_alerts_on_up_select_segmenter_jobs() -> None:
    """`up` covers every target Prometheus scrapes: Segmenter's alerts must pick their jobs."""
    compose_jobs = {
        job["job_name"]
        for job in load_yaml(PROMETHEUS_DIR / "prometheus-compose.yml")["scrape_configs"]
    }
    for rule in alert_rules():
        if "up" not in referenced_series(rule["expr"]):
            continue
        selectors = re.findall(r"\bup\{([^}]*)\}", rule["expr"])
        assert selectors, rule["alert"]
        for selector in selectors:
            match = re.search(r'job(=~?)"([^"]+)"', selector)
            assert match, f"{rule['alert']}: up without a job selector"
            op, value = match.groups()
            jobs = value.split("|") if op == "=~" else [value]
            assert all(job.startswith("segmenter-") for job in jobs), rule["alert"]
    assert {WORKER_JOB, INGEST_JOB} <= compose_jobs
