"""Test helpers that talk to the real broker: topics, JSON in and out, a worker subprocess.

Every wait is bounded (a generous safety limit, never an assertion about speed): a helper that
runs out of time raises with what it saw so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TOPIC_ALREADY_EXISTS = 36
WAIT_LIMIT = 90.0  # seconds; a safety net against hanging, not a performance bound


@dataclass(frozen=True, slots=True)
class Received:
    """One consumed record, JSON-decoded."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any


async def broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.describe_cluster(), timeout)
        return True
    except Exception:
        return False
    finally:
        await admin.close()


async def create_topics(
    admin: AIOKafkaAdminClient, names: Iterable[str], partitions: int = 1
) -> None:
    """Create topics (an existing one is fine) and wait until each has a leader."""
    names = list(names)
    response = await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    failed = [(t, c) for t, c, *_ in response.topic_errors if c not in (0, TOPIC_ALREADY_EXISTS)]
    if failed:
        raise RuntimeError(f"could not create topics: {failed}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while True:
        described = await admin.describe_topics(names)
        ready = all(
            t["error_code"] == 0
            and len(t["partitions"]) == partitions
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        )
        if ready:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"topics {names} have no leaders after {WAIT_LIMIT} s: {described}")
        await asyncio.sleep(0.1)


async def produce_json(
    bootstrap: str, topic: str, records: Iterable[tuple[str | None, Any]]
) -> None:
    """Send (key, JSON value) pairs and wait until the broker acknowledged all of them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(
                topic, orjson.dumps(value), key=None if key is None else key.encode()
            )
    finally:
        await producer.stop()


async def consume_json(
    bootstrap: str, topic: str, count: int, *, timeout: float = WAIT_LIMIT
) -> list[Received]:
    """Read the first `count` records of `topic` (all partitions, from the beginning, committed
    transactions only). Raises TimeoutError, listing what arrived, if fewer come in time."""
    consumer = AIOKafkaConsumer(
        topic,  # no group: every partition is assigned, and the topic may appear later
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    received: list[Received] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(received) < count:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{len(received)} of {count} records on {topic} after {timeout} s: {received}"
                )
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for msg in messages:
                    received.append(
                        Received(
                            topic=msg.topic,
                            partition=msg.partition,
                            offset=msg.offset,
                            key=None if msg.key is None else msg.key.decode(),
                            value=orjson.loads(msg.value) if msg.value is not None else None,
                        )
                    )
    finally:
        await consumer.stop()
    return received[:count]


@contextlib.asynccontextmanager
async def worker_process(
    env: Mapping[str, str], log_file: Path, *args: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`segmenter worker ARGS` as a subprocess with `env` added; SIGTERM (then SIGKILL) on exit.

    Its output goes to `log_file`; read it when a test fails.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "segmenter.commands.worker", *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
