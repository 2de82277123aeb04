"""Topics holding personal data are created with a finite retention (the SEGMENTER_*_RETENTION_MS
settings), by the worker's and the connectors' ensure_topics; segment-changes is compacted after
SEGMENTER_CHANGES_RETENTION_MS instead; existing topics are left alone (with a log line). On the
real broker, read back with describe_configs."""

from __future__ import annotations

import logging

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from connectors.common import WEBHOOK_DEAD_LETTERS
from connectors.common import ensure_topics as connector_topics
from streams.runtime.app import (
    DEAD_LETTERS,
    INPUTS,
    MEMBERS,
    REKEY,
    RULES,
    SEGMENT_CHANGES,
    changelog_topic,
)
from streams.runtime.app import ensure_topics as worker_topics
from streams.runtime.kafka_admin import LONG_MAX, compaction_lag_ms, retention_ms, topic_configs
from streams.runtime.settings import Settings
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
    assert retention_ms(s, "p.segment-changes") is None  # compacted, after a lag
    assert compaction_lag_ms(s, "p.segment-changes") == 30 * DAY
    assert compaction_lag_ms(s, "p.purchases") is None
    assert retention_ms(s, "p.segmenter-dead-letters") == 14 * DAY
    assert retention_ms(s, "p.segmenter-webhook-dead-letters") == 14 * DAY
    for compacted in ("p.segmenter-rules", "p.segmenter-members", changelog_topic(s)):
        assert retention_ms(s, compacted) is None
        assert compaction_lag_ms(s, compacted) is None


def test_segment_changes_configs() -> None:
    s = Settings.from_env(env={"SEGMENTER_CHANGES_RETENTION_MS": str(3 * DAY),
                               "SEGMENTER_CHANGELOG_COMPACTION_LAG_MS": str(2 * DAY)})
    assert topic_configs(s, "segment-changes") == {
        "cleanup.policy": "compact", "min.compaction.lag.ms": str(3 * DAY),
        "delete.retention.ms": str(3 * DAY), "max.compaction.lag.ms": str(5 * DAY)}
    forever = Settings.from_env(env={"SEGMENTER_CHANGES_RETENTION_MS": "-1"})
    assert topic_configs(forever, "segment-changes") == {
        "cleanup.policy": "compact", "min.compaction.lag.ms": str(LONG_MAX)}


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
        assert found[s.topic(DEAD_LETTERS)]["retention.ms"] == str(DAY)
        for topic in [*inputs, s.topic(DEAD_LETTERS)]:
            assert found[topic]["cleanup.policy"] == "delete", topic
        # segment-changes: every change for 3 days, then the latest per customer (an erased
        # one's tombstone kept 3 days more); superseded records gone within 3 + 2 days
        changes = found[s.topic(SEGMENT_CHANGES)]
        assert {k: changes[k] for k in ("cleanup.policy", "min.compaction.lag.ms",
                                        "delete.retention.ms", "max.compaction.lag.ms")} == {
            "cleanup.policy": "compact", "min.compaction.lag.ms": str(3 * DAY),
            "delete.retention.ms": str(3 * DAY), "max.compaction.lag.ms": str(5 * DAY)}
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
        with caplog.at_level(logging.INFO, logger="streams.runtime.kafka_admin"):
            created = await connector_topics(s, [changes, dead, purchases])
        assert created == [changes, dead]
        found = await configs(kafka_admin, [changes, dead, purchases])
        assert found[changes]["cleanup.policy"] == "compact"
        assert found[changes]["min.compaction.lag.ms"] == str(30 * DAY)
        assert found[dead]["retention.ms"] == str(14 * DAY)
        assert found[purchases]["retention.ms"] == before  # left alone...
        assert f"topic {purchases} exists with retention.ms={before}" in caplog.text  # ...said
    finally:
        await kafka_admin.delete_topics([changes, dead, purchases])


async def test_an_existing_segment_changes_with_delete_is_left_alone_with_a_warning(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A segment-changes created before (cleanup.policy=delete) is not altered: the worker and
    the connectors warn that a rebuilt view would miss customers, and say how to compact it."""
    s = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{unique}.",
                          partitions=1)
    changes = s.topic(SEGMENT_CHANGES)
    await create_topics(kafka_admin, [changes])  # the broker's default: delete
    try:
        for ensure in (lambda: connector_topics(s, [changes]),
                       lambda: worker_topics(s, (SEGMENT_CHANGES,))):
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="streams.runtime.kafka_admin"):
                await ensure()
            [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert f"topic {changes} exists with cleanup.policy=delete" in warning.getMessage()
            assert "cleanup.policy=compact,min.compaction.lag.ms=2592000000" in \
                warning.getMessage()
        found = (await configs(kafka_admin, [changes]))[changes]
        assert found["cleanup.policy"] == "delete"  # left alone
    finally:
        await kafka_admin.delete_topics([changes, changelog_topic(s), s.topic(RULES),
                                         s.topic(MEMBERS)])
