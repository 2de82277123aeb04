"""The test harness itself: topic factory, JSON round trip through the real broker, Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import TopicFactory
from tests.kafka_helpers import consume_json, produce_json

pytestmark = pytest.mark.integration


async def test_topic_factory_makes_distinct_topics_with_partitions(
    topic_factory: TopicFactory, kafka_admin: AIOKafkaAdminClient
) -> None:
    first = await topic_factory("a", partitions=3)
    second = await topic_factory("a", partitions=3)
    assert first != second
    [described] = await kafka_admin.describe_topics([first])
    assert len(described["partitions"]) == 3


async def test_json_round_trip_keeps_keys_values_and_per_key_order(
    topic_factory: TopicFactory, kafka_bootstrap: str
) -> None:
    topic = await topic_factory("json", partitions=2)
    sent = [("k1", {"n": 1}), ("k2", {"n": 2, "nested": [1, "x"]}), ("k1", {"n": 3}), (None, [])]
    await produce_json(kafka_bootstrap, topic, sent)
    received = await consume_json(kafka_bootstrap, topic, count=len(sent))
    assert sorted((r.key or "", repr(r.value)) for r in received) == sorted(
        (k or "", repr(v)) for k, v in sent
    )
    assert [r.value["n"] for r in received if r.key == "k1"] == [1, 3]


async def test_redis_client_reaches_the_server(redis_client: aioredis.Redis, unique: str) -> None:
    await redis_client.set(f"{unique}:greeting", "hello")
    assert await redis_client.get(f"{unique}:greeting") == b"hello"
