"""segment-changes is compacted (the latest record per customer stays, an erased customer's
tombstone too): a Redis view rebuilt from the compacted topic equals the view built from the
full history. On the real broker, whose log cleaner really compacts the topic."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connectors.changes import decode_record
from connectors.redis_view import RedisView, rebuild_view
from streams.runtime.settings import Settings
from tests.connectors.factories import GROUP_OF, META, erasure, wire_change

pytestmark = pytest.mark.integration

# compacted as Segmenter creates segment-changes, but eligible at once and rolled quickly
COMPACT_NOW = {"cleanup.policy": "compact", "segment.ms": "100",
               "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0"}
COMPACTION_WAIT = 90.0  # seconds; the broker's cleaner looks every 15 s (log.cleaner.backoff.ms)


def history() -> list[tuple[str, dict[str, Any] | None]]:
    """Several changes per customer, erasures followed by their tombstone (None), as the
    worker writes them: c-1 ends in reader, c-2 in vip, c-3 erased, c-4 erased and back."""
    return [
        ("c-1", wire_change("c-1", 1, segments=["buyer"])),
        ("c-2", wire_change("c-2", 1, segments=["buyer"])),
        ("c-3", wire_change("c-3", 1, segments=["reader"])),
        ("c-1", wire_change("c-1", 2, segments=["vip", "reader"], previous=["buyer"])),
        ("c-4", wire_change("c-4", 1, segments=["buyer", "reader"])),
        ("c-2", wire_change("c-2", 2, segments=["vip"], previous=["buyer"])),
        ("c-3", wire_change("c-3", 2, segments=["reader", "vip"], previous=["reader"])),
        ("c-3", erasure("c-3", 3, previous=["reader", "vip"])),
        ("c-3", None),
        ("c-1", wire_change("c-1", 3, segments=["reader"], previous=["vip", "reader"])),
        ("c-4", erasure("c-4", 2, previous=["buyer", "reader"])),
        ("c-4", None),
        ("c-4", wire_change("c-4", 1, segments=["vip"])),
        ("c-5", wire_change("c-5", 1, segments=["buyer"])),
    ]


async def produce(bootstrap: str, topic: str,
                  records: list[tuple[str, dict[str, Any] | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, None if value is None else orjson.dumps(value),
                                         key=key.encode())
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str) -> list[tuple[str, bytes | None]]:
    """Every record of the (one-partition) topic now, as (key, value)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[tuple[str, bytes | None]] = []
        while await consumer.position(tp) < end:
            for msgs in (await consumer.getmany(tp, timeout_ms=500)).values():
                out += [(m.key.decode(), m.value) for m in msgs if m.offset < end]
        return out
    finally:
        await consumer.stop()


async def snapshot(view: RedisView, customers: list[str]) -> dict[str, Any]:
    """What the view says about customers, segments and groups (not the feed, histories and
    per-minute counts: those hold what was applied, which compaction thins out)."""
    out: dict[str, Any] = {}
    for cid in customers:
        c = await view.customer(cid)
        out[cid] = None if c is None else (c.seq, c.rules_version, c.updated_at, c.segments,
                                           c.groups)
    out["sizes"] = {s: n for s, n in (await view.sizes()).items() if n}
    out["members"] = {s: await view.members(s) for s in META}
    out["tier"] = await view.group_members("tier")
    return out


async def test_a_view_rebuilt_from_the_compacted_topic_equals_the_full_history(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, redis_client: aioredis.Redis,
        unique: str) -> None:
    topic = f"{unique}.segment-changes"
    response = await kafka_admin.create_topics([NewTopic(topic, 1, 1,
                                                         topic_configs=COMPACT_NOW)])
    assert [code for _, code, *_ in response.topic_errors] == [0]
    records = history()
    customers = sorted({k for k, _ in records})

    def view(name: str) -> RedisView:
        # the rule file's metadata and groups fill in held segments the kept change did not
        # describe (a view started with --rules)
        return RedisView(redis_client, prefix=f"{unique}:{name}:", fallback_metadata=META,
                         segment_groups=GROUP_OF)

    try:
        await produce(kafka_bootstrap, topic, records)
        # the full history, applied record by record
        full = view("full")
        await full.apply_many([decode_record(None if v is None else orjson.dumps(v),
                                             k.encode()) for k, v in records])

        # the cleaner compacts closed segments only: roll the active one by writing one more
        # record (a change of c-5 that only repeats its state) once segment.ms has passed
        await asyncio.sleep(0.5)
        again = ("c-5", wire_change("c-5", 2, segments=["buyer"], previous=["buyer"]))
        await produce(kafka_bootstrap, topic, [again])
        await full.apply_many([decode_record(orjson.dumps(again[1]), b"c-5")])
        expected = await snapshot(full, customers)
        assert expected["c-3"] is None and expected["c-4"] is not None
        assert expected["sizes"] == {"reader": 1, "vip": 2, "buyer": 1}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMPACTION_WAIT
        while len(kept := await read_all(kafka_bootstrap, topic)) > len(customers) + 1:
            if loop.time() > deadline:
                pytest.fail(f"the broker did not compact {topic} within {COMPACTION_WAIT} s: "
                            f"{len(kept)} records")
            await asyncio.sleep(2)
        # the latest per customer: c-3 only as its tombstone, c-4 in its new life; c-5's
        # latest is in the active segment, its earlier record in the compacted one
        latest = {k: v for k, v in kept}
        assert latest["c-3"] is None
        assert [k for k, v in kept if k != "c-5"] == ["c-2", "c-3", "c-1", "c-4"]
        assert orjson.loads(latest["c-4"] or b"")["seq"] == 1

        rebuilt = view("rebuilt")
        summary = await rebuild_view(Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap),
                                     rebuilt, topic)
        assert summary.records == len(kept)
        assert await snapshot(rebuilt, customers) == expected
        assert await snapshot(full, customers) == expected
    finally:
        await kafka_admin.delete_topics([topic])
