"""Shared by the tests of deploy/: paths, promtool, and the metric names PromQL refers to."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "k8s"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

# The job names of the scrape configs; alerts.yml and the dashboard select on them.
WORKER_JOB = "segmenter-worker"
INGEST_JOB = "segmenter-ingest"

# Series that Prometheus itself makes and that PromQL here may use besides Segmenter's own.
PROMETHEUS_SERIES = frozenset({"up"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SEGMENTER_NAME = re.compile(r"(?<![A-Za-z0-9_:])segmenter_[A-Za-z0-9_:]*")
_PROMETHEUS_NAME = re.compile(r"(?<![A-Za-z0-9_:])(up)\s*(?=\{|\[|\)|$)")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def promtool() -> str:
    """The promtool binary. Missing: skipped with the reason, but under CI=true a failure (the
    test command installs it: Debian's `prometheus` package)."""
    path = shutil.which("promtool")
    if path is None:
        message = (
            "promtool is not installed: install Debian's prometheus package "
            "(apt-get install -y prometheus), which provides it."
        )
        if in_ci():
            pytest.fail(message + " CI=true: this must not be skipped.", pytrace=False)
        pytest.skip(message)
    return path


def run_promtool(*args: str | Path, cwd: Path | None = None) -> str:
    """Run promtool; on a non-zero exit, fail with its output. Returns stdout + stderr."""
    result = subprocess.run(
        [promtool(), *(str(a) for a in args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"promtool {' '.join(map(str, args))} failed:\n{output}", pytrace=False)
    return output


@cache
def exported_metric_names() -> frozenset[str]:
    """Every series name Segmenter's metrics appear under in the exposition format: counters
    as <name>_total (and _created), histograms as _bucket/_sum/_count, gauges as they are."""
    registry = CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        elif family.type == "summary":
            names |= {family.name, f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return frozenset(names)


def referenced_series(expr: str) -> set[str]:
    """The series names a PromQL expression selects: every segmenter_* name (outside string
    literals) and the Prometheus-made series it uses (`up`)."""
    bare = _STRING.sub('""', expr)
    return set(_SEGMENTER_NAME.findall(bare)) | set(_PROMETHEUS_NAME.findall(bare))


def unknown_series(expr: str) -> set[str]:
    """Names `expr` refers to that neither Segmenter nor Prometheus exports."""
    return referenced_series(expr) - exported_metric_names() - PROMETHEUS_SERIES


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def markdown_anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file."""
    anchors: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[`*]", "", match.group(1).strip()).lower()
            text = re.sub(r"[^\w\- ]", "", text)
            anchors.add(text.replace(" ", "-"))
    return anchors
