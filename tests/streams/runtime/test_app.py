"""The topology (topics, changelog) and the walking skeleton: pure checks, then the real worker
end to end."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from model.errors import TopologyError
from streams.runtime.app import (
    MEMBERS,
    PARTITIONED,
    PURCHASES,
    RULES,
    SEGMENT_CHANGES,
    changelog_topic,
    ensure_topics,
    worker_datadir,
)
from streams.runtime.settings import Settings
from tests.kafka_helpers import Received, consume_json, create_topics, produce_json, worker_process


def test_topic_names_and_folders_carry_the_prefix_and_group(tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, topic_prefix="x.", state_dir=tmp_path, worker_id="w1")
    assert settings.group_id == "x.segmenter"
    assert changelog_topic(settings) == "x.segmenter-customers-changelog"
    assert worker_datadir(settings) == tmp_path / "worker" / "x.segmenter" / "w1"
    assert settings.processing_guarantee == "exactly_once"  # the default


@pytest.mark.integration
async def test_ensure_topics_creates_prefixed_topics_once(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str
) -> None:
    settings = Settings.from_env(
        env={}, kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{unique}.", partitions=3
    )
    wanted = [f"{unique}.{name}" for name in PARTITIONED]
    try:
        assert sorted(await ensure_topics(settings)) == sorted(wanted)
        assert await ensure_topics(settings) == []
        described = await kafka_admin.describe_topics(wanted)
        assert {len(t["partitions"]) for t in described} == {3}
        compacted = [f"{unique}.{RULES}", f"{unique}.{MEMBERS}", changelog_topic(settings)]
        described = await kafka_admin.describe_topics(compacted)
        assert [len(t["partitions"]) for t in described] == [1, 1, 3]
        configs = await kafka_admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in compacted])
        for response in configs:
            for resource in response.resources:
                policy = {c[0]: c[1] for c in resource[4]}["cleanup.policy"]
                assert policy == "compact", resource[3]
        with pytest.raises(TopologyError, match="partitions"):
            await ensure_topics(settings.with_overrides(partitions=5))
    finally:
        await kafka_admin.delete_topics([*wanted, f"{unique}.{RULES}", f"{unique}.{MEMBERS}",
                                         changelog_topic(settings)])


@pytest.mark.integration
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_worker_turns_purchases_into_segment_changes(
    kafka_bootstrap: str,
    kafka_admin: AIOKafkaAdminClient,
    unique: str,
    tmp_path: Path,
    guarantee: str,
) -> None:
    prefix = f"{unique}."
    topics = [prefix + PURCHASES, prefix + SEGMENT_CHANGES]
    await create_topics(kafka_admin, topics, partitions=2)
    purchases = {
        customer: {
            "event_id": str(uuid.uuid4()),
            "type": "purchase",
            "customer_id": customer,
            "amount": 19.99,
            "currency": "PLN",
            "ts": "2026-11-20T10:00:00Z",
        }
        for customer in ("c-7", "c-8")
    }
    env = {
        "SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SEGMENTER_TOPIC_PREFIX": prefix,
        "SEGMENTER_STATE_DIR": str(tmp_path / "state"),
        "SEGMENTER_WEB_PORT": "0",
        "SEGMENTER_PARTITIONS": "2",
        "SEGMENTER_PROCESSING_GUARANTEE": guarantee,
        "SEGMENTER_CLOCK": "event",
        "SEGMENTER_RULES": str(RETAIL),
    }
    log = tmp_path / "worker.log"
    try:
        await produce_json(kafka_bootstrap, topics[0], purchases.items())
        async with worker_process(env, log) as worker:
            try:
                received = await consume_json(kafka_bootstrap, topics[1], count=2)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\n--- worker log ---\n{_tail(log)}") from exc
            assert worker.poll() is None, _tail(log)
    finally:
        await kafka_admin.delete_topics(topics)

    by_key: dict[str | None, Received] = {r.key: r for r in received}
    assert set(by_key) == {"c-7", "c-8"}
    for customer, purchase in purchases.items():
        record = by_key[customer].value
        assert record["customer_id"] == customer
        assert record["seq"] == 1
        assert record["cause"]["event_id"] == purchase["event_id"]
        assert "low_value" in record["entered"]
        assert record["groups"]["tier"] == {"from": None, "to": "low_value"}


RETAIL = Path(__file__).resolve().parents[3] / "rules" / "examples" / "retail.yaml"


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no worker log)"
