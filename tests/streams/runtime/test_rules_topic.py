"""The rules topic's records carry the model files the rules use (settings.models), so every
worker evaluates the same models wherever it runs: a record is read without the files on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from rules.loader import load_rules
from streams.runtime.app import ensure_topics
from streams.runtime.metrics import Metrics
from streams.runtime.rules_topic import latest_rules, parse_rules_record, publish
from streams.runtime.settings import Settings

PREDICTIVE = Path(__file__).resolve().parents[3] / "rules" / "examples" / "predictive.yaml"


def _record(models: dict[str, str] | None, source: str = "predictive.yaml") -> bytes:
    record: dict[str, object] = {"yaml": PREDICTIVE.read_text(), "source": source,
                                 "quiet": False, "published_at": "2026-12-01T00:00:00+00:00"}
    if models is not None:
        record["models"] = models
    return orjson.dumps(record)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """Run from a folder where the rule file's relative model paths do not exist."""
    before = Path.cwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(before)


def test_a_record_with_its_models_loads_without_the_files(elsewhere: Path) -> None:
    on_disk = load_rules(PREDICTIVE)
    assert set(on_disk.model_files) == {"churn", "clusters"}
    models = {name: raw.decode() for name, raw in on_disk.model_files.items()}
    parsed = parse_rules_record(_record(models), None)
    assert parsed is not None
    rules, quiet = parsed
    assert rules.version == on_disk.content_hash and not quiet
    assert rules.file.settings.models == on_disk.settings.models


def test_a_record_without_models_reads_them_from_disk_and_is_refused_if_absent(
        elsewhere: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    assert parse_rules_record(_record(None), metrics) is None
    assert metrics.rules_refused._value.get() == 1
    parsed = parse_rules_record(_record(None, source=str(PREDICTIVE)), metrics)
    assert parsed is not None and parsed[0].version == load_rules(PREDICTIVE).content_hash


def test_a_record_missing_one_model_is_refused_with_the_reason(
        elsewhere: Path, caplog: pytest.LogCaptureFixture) -> None:
    churn = load_rules(PREDICTIVE).model_files["churn"].decode()
    assert parse_rules_record(_record({"churn": churn}), None) is None
    assert "'clusters'" in caplog.text and "carries no model file" in caplog.text


def test_a_changed_model_is_a_new_rules_version(elsewhere: Path) -> None:
    files = {name: raw.decode() for name, raw in load_rules(PREDICTIVE).model_files.items()}
    first = parse_rules_record(_record(files), None)
    refit = dict(files, churn=files["churn"].replace("\n", " \n", 1))
    second = parse_rules_record(_record(refit), None)
    assert first is not None and second is not None
    assert first[0].version != second[0].version


@pytest.mark.integration
async def test_published_models_reach_a_reader_in_another_folder(
        kafka_bootstrap: str, unique: str, elsewhere: Path) -> None:
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap,
                                 topic_prefix=unique + ".", partitions=1)
    await ensure_topics(settings)
    rule_file = load_rules(PREDICTIVE)
    await publish(settings, PREDICTIVE.read_text(), PREDICTIVE.name,
                  models=rule_file.model_files)
    rules = await latest_rules(settings)
    assert rules is not None
    assert rules.version == rule_file.content_hash
    assert rules.file.model_files == rule_file.model_files
