"""The ceiling: a bare aiokafka consumer (project venv) that only decodes each record with
orjson.loads: no state, no output. Commits once at the end."""

from __future__ import annotations

import asyncio
import importlib.metadata

import orjson
from aiokafka import AIOKafkaConsumer

from bench.peers.peer import Stopwatch, parse_args, report


async def drain() -> None:
    args = parse_args()
    watch = Stopwatch()
    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap,
                                group_id=args.group, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        loads = orjson.loads
        while watch.handled < args.events:
            batch = await consumer.getmany(timeout_ms=500)
            if batch and not watch.wall0:
                watch.first()
            for messages in batch.values():
                for message in messages:
                    loads(message.value)
                watch.handled += len(messages)
        await consumer.commit()
    finally:
        await consumer.stop()
    report(watch.result(version=f"aiokafka {importlib.metadata.version('aiokafka')}"))


if __name__ == "__main__":
    asyncio.run(drain())
