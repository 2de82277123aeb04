"""Commits: what a task wrote since the last commit becomes durable together with its input
offsets. Read top to bottom, the order is the guarantee.

Exactly-once (the default), per task, inside the task's open transaction:
  1. produce the change records, dead letters and re-keyed inputs;
  2. produce one changelog record per customer changed since the last commit (a tombstone for
     an erased one), encoded here, once;
  3. add the input offsets reached (`send_offsets_to_transaction`);
  4. commit the transaction: all of it is visible to `read_committed` readers, or none;
  5. tell the store (RocksDB writes the states and its checkpoint), begin the next transaction.
A failure anywhere leaves the transaction to be aborted: the worker drops the task's
uncommitted state and restores it (changelog, committed offsets) before going on.

At-least-once, for all tasks at once, with one idempotent producer:
  1. produce change records, dead letters and re-keyed inputs, and wait for every ack;
  2. produce the changelog records and, last in each changelog partition, a marker with the
     input offsets that the state now includes; wait for every ack;
  3. commit the input offsets to the group;
  4. tell the stores.
A crash before 3 re-reads records whose effects may be durable: the task restored from the
changelog starts after the marker's offsets, and the rare customer whose record landed after
the last marker is protected by the engine's event-id dedup (the repeat is a `duplicate`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from streams.runtime.records import partition_for
from streams.runtime.store import ChangelogRecord
from streams.runtime.task import Pending, Task

OFFSETS_KEY = b"\x00offsets"  # at-least-once marker in a changelog partition


async def send_records(producer: AIOKafkaProducer, topic: str, partition: int,
                       records: Iterable[tuple[bytes | None, bytes | None]],
                       ) -> list[tuple[asyncio.Future[Any], int]]:
    """Produce records to one partition in as few batches as they fit in; returns each batch's
    delivery future with its record count."""
    out: list[tuple[asyncio.Future[Any], int]] = []
    batch = producer.create_batch()
    n = 0
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            out.append((await producer.send_batch(batch, topic, partition=partition), n))
            batch, n = producer.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes for {topic} does "
                                 "not fit in a producer batch")
        n += 1
    if n:
        out.append((await producer.send_batch(batch, topic, partition=partition), n))
    return out


class Topics:
    """Full names of the topics a commit writes."""

    def __init__(self, changes: str, dead_letters: str, rekey: str, changelog: str,
                 partitions: int) -> None:
        self.changes = changes
        self.dead_letters = dead_letters
        self.rekey = rekey
        self.changelog = changelog
        self.partitions = partitions


async def send_outputs(producer: AIOKafkaProducer, topics: Topics, partition: int,
                       pending: Pending) -> list[tuple[asyncio.Future[Any], int]]:
    """Step 1 of either guarantee: change records, dead letters, re-keyed inputs."""
    futures = await send_records(producer, topics.changes, partition, pending.changes)
    if pending.dead_letters:
        by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
        for key, value in pending.dead_letters:
            p = partition if key is None else partition_for(key, topics.partitions)
            by_partition[p].append((key, value))
        for p, records in by_partition.items():
            futures += await send_records(producer, topics.dead_letters, p, records)
    if pending.rekey:
        rekeyed: dict[int, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
        for p, key, value in pending.rekey:
            rekeyed[p].append((key, value))
        for p, records in rekeyed.items():
            futures += await send_records(producer, topics.rekey, p, records)
    return futures


async def next_offset(futures: list[tuple[asyncio.Future[Any], int]]) -> int | None:
    """The offset after the last record of the batches delivered (their futures awaited)."""
    end: int | None = None
    for fut, count in futures:
        md = await fut
        end = max(end or 0, md.offset + count)
    return end


async def commit_exactly_once(producer: AIOKafkaProducer, task: Task, pending: Pending,
                              topics: Topics, group_id: str) -> None:
    p = task.partition
    outputs = await send_outputs(producer, topics, p, pending)                     # 1
    records: list[ChangelogRecord] = task.store.changelog_records(pending.dirty)
    changelog = await send_records(producer, topics.changelog, p, records)          # 2
    if pending.offsets:                                                             # 3
        await producer.send_offsets_to_transaction(
            {TopicPartition(t, p): OffsetAndMetadata(o, "") for t, o in pending.offsets.items()},
            group_id)
    await producer.commit_transaction()                                             # 4
    for fut, _ in outputs:
        await fut  # delivered with the commit; a failed one raises here
    task.store.committed(records, await next_offset(changelog))                     # 5
    await producer.begin_transaction()


async def commit_at_least_once(producer: AIOKafkaProducer, consumer: Any,
                               work: list[tuple[Task, Pending]], topics: Topics) -> None:
    outputs: list[tuple[asyncio.Future[Any], int]] = []
    for task, pending in work:                                                       # 1
        outputs += await send_outputs(producer, topics, task.partition, pending)
    await asyncio.gather(*(f for f, _ in outputs))
    changelogs = []
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for task, pending in work:                                                       # 2
        p = task.partition
        records = task.store.changelog_records(pending.dirty)
        task.offsets_reached.update(pending.offsets)
        marker = (OFFSETS_KEY, orjson.dumps(task.offsets_reached))
        futures = await send_records(producer, topics.changelog, p, [*records, marker])
        changelogs.append((task, records, futures))
        for t, o in pending.offsets.items():
            offsets[TopicPartition(t, p)] = OffsetAndMetadata(o, "")
    ends = [await next_offset(futures) for _, _, futures in changelogs]
    if offsets:                                                                      # 3
        await consumer.commit(offsets)
    for (task, records, _), end in zip(changelogs, ends, strict=True):               # 4
        task.store.committed(records, end)
