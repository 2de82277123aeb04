"""`segmenter export-events`: the input topics read back into the JSONL event log that
`segmenter simulate` and `segmenter rules diff` replay, so that a dry run can use real data.

Every partition of the four input topics is read (no consumer group, `read_committed`) from the
first record produced at or after `since` minus a margin (Kafka's record timestamps: an event is
produced after it happens, give or take the future tolerance) up to its end offset *at the
start*: records produced while the export runs are left out, so it always ends. An event is
kept when its own `ts` lies in [since, until]; the kept events are written one JSON object per
line, sorted by `ts` (stable), as the log format wants. Values that are not JSON objects with a
valid `ts` are counted and skipped (the worker would have dead-lettered them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from connectors.common import INPUT_TOPICS
from model.events import parse_rfc3339
from streams.runtime.settings import Settings

SEEK_MARGIN_MS = 3_600_000  # records produced up to an hour before `since` are read too


@dataclass(slots=True)
class ExportStats:
    records: int = 0  # read from Kafka
    total: int = 0  # to read (end offsets at the start minus the start offsets)
    written: int = 0
    outside: int = 0  # events whose ts is outside [since, until]
    invalid: int = 0


def event_ts(obj: Any) -> int | None:
    ts = obj.get("ts") if isinstance(obj, dict) else None
    if isinstance(ts, bool):
        return None
    if isinstance(ts, int):
        return ts
    return parse_rfc3339(ts) if isinstance(ts, str) else None


async def export_events(settings: Settings, out: IO[bytes], since_ms: int,
                        until_ms: int | None = None,
                        progress: Callable[[ExportStats], None] | None = None) -> ExportStats:
    stats = ExportStats()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    kept: list[tuple[int, bytes]] = []
    try:
        partitions = await _input_partitions(settings)
        if not partitions:
            return stats
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times(
            dict.fromkeys(partitions, max(0, since_ms - SEEK_MARGIN_MS)))
        begin = await consumer.beginning_offsets(partitions)
        todo: dict[TopicPartition, int] = {}
        for tp in partitions:
            found = starts.get(tp)
            start = found.offset if found is not None else ends[tp]
            start = max(start, begin[tp])
            if start < ends[tp]:
                consumer.seek(tp, start)
                todo[tp] = ends[tp]
                stats.total += ends[tp] - start
        for tp in partitions:
            if tp not in todo:
                consumer.pause(tp)
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
            for tp, msgs in batch.items():
                end = todo.get(tp)
                if end is None:
                    continue
                for msg in msgs:
                    if msg.offset >= end:
                        break
                    stats.records += 1
                    _keep(msg.value, since_ms, until_ms, kept, stats)
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
                    consumer.pause(tp)
            if progress is not None:
                progress(stats)
    finally:
        await consumer.stop()
    kept.sort(key=lambda pair: pair[0])
    for _, line in kept:
        out.write(line)
    stats.written = len(kept)
    if progress is not None:
        progress(stats)
    return stats


async def _input_partitions(settings: Settings) -> list[TopicPartition]:
    """Every partition of the input topics that exist (a missing one is skipped)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [settings.topic(n) for n in INPUT_TOPICS if settings.topic(n) in existing]
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    out: list[TopicPartition] = []
    for topic in described:
        out.extend(TopicPartition(topic["topic"], p["partition"])
                   for p in sorted(topic["partitions"], key=lambda p: p["partition"]))
    return out


def _keep(value: bytes | None, since_ms: int, until_ms: int | None,
          kept: list[tuple[int, bytes]], stats: ExportStats) -> None:
    if value is None:
        stats.invalid += 1
        return
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        stats.invalid += 1
        return
    ts = event_ts(obj)
    if ts is None:
        stats.invalid += 1
    elif ts < since_ms or (until_ms is not None and ts > until_ms):
        stats.outside += 1
    else:
        kept.append((ts, orjson.dumps(obj) + b"\n"))
