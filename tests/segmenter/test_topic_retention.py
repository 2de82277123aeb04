"""Topics holding personal data are created with a finite retention (the SEGMENTER_*_RETENTION_MS
settings), by the worker's and the connectors' ensure_topics; existing topics are left alone.
On the real broker, read back with describe_configs."""

from __future__ import annotations

import logging

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from connectors.common import WEBHOOK_DEAD_LETTERS
from connectors.common import ensure_topics as connector_topics
from segmenter.kafka_admin import retention_ms
from segmenter.settings import Settings
from streams.app import (
    DEAD_LETTERS,
    INPUTS,
    MEMBERS,
    REKEY,
    RULES,
    SEGMENT_CHANGES,
    changelog_topic,
)
from streams.app import ensure_topics as worker_topics
from tests.kafka_helpers import create_topics

pytestmark = pytest.mark.integration

DAY = 86_400_000


async def configs(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str]]:
    """topic -> {config name: value}."""
    out: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]):
        for error_code, _message, _kind, name, entries in response.resources:
            assert error_code == 0, (name, error_code)
            out[name] = {entry[0]: entry[1] for entry in entries}
    return out


def test_which_topics_get_which_retention() -> None:
    s = Settings.from_env(env={}, topic_prefix="p.")
    assert [retention_ms(s, s.topic(t)) for t in (*INPUTS, REKEY)] == [30 * DAY] * 5
    assert retention_ms(s, "p.segment-changes") == 30 * DAY
    assert retention_ms(s, "p.segmenter-dead-letters") == 14 * DAY
    assert retention_ms(s, "p.segmenter-webhook-dead-letters") == 14 * DAY
    for compacted in ("p.segmenter-rules", "p.segmenter-members", changelog_topic(s)):
        assert retention_ms(s, compacted) is None


async def test_worker_topics_are_created_with_the_configured_retention(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str) -> None:
    s = Settings.from_env(env={"SEGMENTER_INPUT_RETENTION_MS": str(2 * DAY),
                               "SEGMENTER_CHANGES_RETENTION_MS": str(3 * DAY),
                               "SEGMENTER_DEAD_LETTER_RETENTION_MS": str(DAY),
                               "SEGMENTER_CHANGELOG_COMPACTION_LAG_MS": str(2 * DAY)},
                          kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{unique}.",
                          partitions=1)
    compacted = [s.topic(RULES), s.topic(MEMBERS), changelog_topic(s)]
    inputs = [s.topic(t) for t in (*INPUTS, REKEY)]
    everything = [*inputs, s.topic(SEGMENT_CHANGES), s.topic(DEAD_LETTERS), *compacted]
    try:
        await worker_topics(s)
        found = await configs(kafka_admin, everything)
        assert {t: found[t]["retention.ms"] for t in inputs} == {t: str(2 * DAY) for t in inputs}
        assert found[s.topic(SEGMENT_CHANGES)]["retention.ms"] == str(3 * DAY)
        assert found[s.topic(DEAD_LETTERS)]["retention.ms"] == str(DAY)
        for topic in [*inputs, s.topic(SEGMENT_CHANGES), s.topic(DEAD_LETTERS)]:
            assert found[topic]["cleanup.policy"] == "delete", topic
        for topic in compacted:  # compacted: the latest record per key stays (tombstones go)
            assert found[topic]["cleanup.policy"] == "compact", topic
        # an erased customer's earlier states do not wait for the cleaner's dirty ratio
        assert found[changelog_topic(s)]["max.compaction.lag.ms"] == str(2 * DAY)
    finally:
        await kafka_admin.delete_topics(everything)


async def test_connector_topics_get_retention_and_existing_ones_are_left_alone(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str,
        caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{unique}.",
                          partitions=1)
    changes, dead, purchases = (s.topic(SEGMENT_CHANGES), s.topic(WEBHOOK_DEAD_LETTERS),
                                s.topic("purchases"))
    await create_topics(kafka_admin, [purchases])  # exists already, broker default retention
    before = (await configs(kafka_admin, [purchases]))[purchases]["retention.ms"]
    assert before != str(30 * DAY)
    try:
        with caplog.at_level(logging.INFO, logger="segmenter.kafka_admin"):
            created = await connector_topics(s, [changes, dead, purchases])
        assert created == [changes, dead]
        found = await configs(kafka_admin, [changes, dead, purchases])
        assert found[changes]["retention.ms"] == str(30 * DAY)
        assert found[dead]["retention.ms"] == str(14 * DAY)
        assert found[purchases]["retention.ms"] == before  # left alone...
        assert f"topic {purchases} exists with retention.ms={before}" in caplog.text  # ...said
    finally:
        await kafka_admin.delete_topics([changes, dead, purchases])
