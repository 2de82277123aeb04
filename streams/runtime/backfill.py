"""Loading history before going live: the states an event log leads to, built offline with the
engine and written through the changelog, so that the workers start from them and fire nothing.

    refuse unless the app is new: no worker in the group, an empty changelog, and the rules
        topic empty or holding the same version as the rule file (which then seeds it);
    simulate the log with the event clock up to `until` (default: now), so every timer due by
        then has fired inside the simulation, at its own instant;
    per partition, one transaction: every change record of the simulation marked quiet (the
        views fill in, with memberships dated by event time; no follow-up fires), then each
        customer's final state to the changelog;
    last, the group's offsets at the end of the input topics: the workers start with the
        events that come after.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from model.changes import CAUSE_ERASURE, SegmentChange
from model.codec import encode_state
from model.errors import SegmenterError
from streams.runtime.app import (
    INPUTS,
    REKEY,
    RULES,
    SEGMENT_CHANGES,
    changelog_topic,
    ensure_topics,
)
from streams.runtime.commit import next_offset, send_records
from streams.runtime.records import partition_for
from streams.runtime.rules_topic import Seed, latest_rules, publish
from streams.runtime.settings import Settings
from streams.simulate import SimulationStats, Simulator

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


class BackfillError(SegmenterError):
    """The backfill was refused: the app is not new, or the rules disagree."""


@dataclass(frozen=True, slots=True)
class BackfillResult:
    customers: int
    changes: int
    stats: SimulationStats
    until: int


async def backfill(settings: Settings, seed: Seed, lines: Iterable[bytes], *, until: int,
                   wall_now: int, progress: Progress = log.info) -> BackfillResult:
    await ensure_topics(settings)
    await _refuse_unless_new(settings, seed)
    progress(f"simulating the log up to {until} (rules {seed.rules.version})")
    changes: list[bytes] = []
    by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
    p_count = settings.partitions

    def keep(ch: SegmentChange) -> None:
        change = replace(ch, quiet=True)
        key = change.customer_id.encode()
        records = by_partition[partition_for(key, p_count)]
        records.append((key, change.to_json()))
        if change.cause.kind == CAUSE_ERASURE:  # then a tombstone, as the worker writes
            records.append((key, None))
        changes.append(key)

    sim = Simulator(seed.rules, until=until, wall_now=wall_now, on_change=keep)
    sim.feed_lines(lines)
    sim.finish()
    states: dict[int, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
    for cid, st in sim.states.items():
        key = cid.encode()
        states[partition_for(key, p_count)].append((key, encode_state(st)))
    progress(f"{len(sim.states)} customers, {len(changes)} changes: writing them")
    written: dict[TopicPartition, int] = {}  # the offset after each partition's last record
    for p in range(p_count):
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all",
            transactional_id=f"{settings.group_id}-{p}", transaction_timeout_ms=900_000,
            max_batch_size=512 * 1024)
        await producer.start()
        try:
            await producer.begin_transaction()
            changes_sent = await send_records(producer, settings.topic(SEGMENT_CHANGES), p,
                                              by_partition.get(p, []))
            states_sent = await send_records(producer, changelog_topic(settings), p,
                                             states.get(p, []))
            await producer.commit_transaction()
            for topic, sent in ((settings.topic(SEGMENT_CHANGES), changes_sent),
                                (changelog_topic(settings), states_sent)):
                end = await next_offset(sent)  # a failed batch raises here
                if end is not None:
                    written[TopicPartition(topic, p)] = end
        finally:
            await producer.stop()
        progress(f"partition {p}: {len(states.get(p, []))} states, "
                 f"{len(by_partition.get(p, []))} changes")
    await _visible(settings, written)
    await _start_inputs_at_their_end(settings)
    return BackfillResult(len(sim.states), len(changes), sim.stats, until)


async def _refuse_unless_new(settings: Settings, seed: Seed) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        members = await _group_members(admin, settings.group_id)
        if members:
            raise BackfillError(
                f"{len(members)} worker(s) of group {settings.group_id} are running: stop "
                "them first (backfill loads history before the workers go live)")
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(changelog_topic(settings), p) for p in range(settings.partitions)]
        ends, begins = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
        if any(ends[tp] > begins[tp] for tp in tps):
            raise BackfillError(
                f"{changelog_topic(settings)} already holds customer states: a backfill "
                "would overwrite what the workers built. Backfill into a new app "
                "(SEGMENTER_APP_ID or SEGMENTER_TOPIC_PREFIX), or replay the history through "
                "the input topics instead")
    finally:
        await consumer.stop()
    latest = await latest_rules(settings)
    if latest is None:
        await publish(settings, seed.text, seed.source, models=seed.rules.file.model_files)
    elif latest.version != seed.rules.version:
        raise BackfillError(
            f"the rules topic {settings.topic(RULES)} holds version {latest.version}, the "
            f"file {seed.source} is {seed.rules.version}: backfill with the version in force "
            "(or publish the file first)")


async def _group_members(admin: AIOKafkaAdminClient, group_id: str,
                         timeout: float = 60.0) -> list[Any]:
    """The group's members. The response carries the group's error rather than raising it: a
    retriable one (the coordinator loading, moved, not available yet) says nothing about the
    members, so it is asked again (the coordinator looked up anew); any other is refused."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        [response] = await admin.describe_consumer_groups([group_id])
        # (error, id, state, protocol type, protocol, members)
        error, members = response.groups[0][0], response.groups[0][5]
        if error == 0:
            return list(members)
        err = for_code(error)
        if not err.retriable or loop.time() > deadline:
            raise BackfillError(f"could not tell whether workers of group {group_id} are "
                                f"running: {err.__name__}")
        log.info("describing group %s: %s, asking again", group_id, err.__name__)
        await asyncio.sleep(0.5)


async def _visible(settings: Settings, written: dict[TopicPartition, int],
                   timeout: float = 60.0) -> None:
    """Wait until read_committed readers see every record written. A transaction's commit
    returns once the coordinator has decided it; the markers that make its records readable
    reach the partitions a moment later, and until then a reader's end offset (the last
    stable offset) stops before them: a view or a check reading right after the backfill
    would see part of the history."""
    if not written:
        return
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ends = await consumer.end_offsets(list(written))
            behind = {tp: end for tp, end in written.items() if ends[tp] < end}
            if not behind:
                return
            if loop.time() > deadline:
                raise BackfillError(f"the backfill's transactions committed but are not "
                                    f"readable after {timeout:.0f} s: {sorted(behind)}")
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


async def _start_inputs_at_their_end(settings: Settings) -> None:
    """Commit the group's offsets at the current end of every input partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                group_id=settings.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(t), p) for t in (*INPUTS, REKEY)
               for p in range(settings.partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(end, "") for tp, end in ends.items()})
    finally:
        await consumer.stop()
