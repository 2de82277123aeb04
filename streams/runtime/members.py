"""Who owns which partition: every worker announces its tasks and its URL on the compacted
members topic (key: worker id) after each assignment and removes its record when it stops;
every worker follows the topic, so that the Query API can send a request to the owner.

A worker killed without a goodbye leaves a stale record, but the worker that takes its
partitions over announces them later: the latest announcement of a partition wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.runtime.app import MEMBERS
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Member:
    worker_id: str
    url: str
    partitions: frozenset[int]
    at: int  # wall ms of the announcement


class Members:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(MEMBERS)
        self.members: dict[str, Member] = {}

    def owner(self, partition: int) -> Member | None:
        best: Member | None = None
        for m in self.members.values():
            if partition in m.partitions and (best is None or m.at > best.at):
                best = m
        return best

    async def announce(self, producer: AIOKafkaProducer, partitions: frozenset[int],
                       url: str) -> None:
        me = Member(self.settings.worker_id, url, partitions, int(time.time() * 1000))
        self.members[me.worker_id] = me
        value = orjson.dumps({"worker_id": me.worker_id, "url": url,
                              "partitions": sorted(partitions), "at": me.at})
        await producer.send_and_wait(self.topic, value, key=me.worker_id.encode(),
                                     partition=0)

    async def leave(self, producer: AIOKafkaProducer) -> None:
        await producer.send_and_wait(self.topic, None, key=self.settings.worker_id.encode(),
                                     partition=0)

    async def follow(self) -> None:
        """Read the members topic until cancelled."""
        tp = TopicPartition(self.topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for msg in batch.get(tp, []):
                    self._apply(msg.key, msg.value)
        finally:
            await consumer.stop()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        worker_id = key.decode(errors="replace")
        if value is None:
            self.members.pop(worker_id, None)
            return
        try:
            raw = orjson.loads(value)
            member = Member(str(raw["worker_id"]), str(raw["url"]),
                            frozenset(int(p) for p in raw["partitions"]), int(raw["at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignored an unreadable record on %s: %s", self.topic, exc)
            return
        old = self.members.get(worker_id)
        if old is None or member.at >= old.at:
            self.members[worker_id] = member


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait for it."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
