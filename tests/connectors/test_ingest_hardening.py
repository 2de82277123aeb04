"""HTTP ingest under hostile or broken conditions, on a real server and the real broker: huge
error answers, slow clients, Kafka gone."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from connectors.common import ensure_topics, make_producer
from connectors.events import input_topics
from connectors.ingest import MAX_LISTED, create_ingest_app, serve_ingest
from segmenter.local import kafka as local_kafka
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings
from tests.kafka_helpers import create_topics

pytestmark = pytest.mark.integration

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NDJSON = {**AUTH, "Content-Type": "application/x-ndjson"}
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def purchase(n: int, customer: str = "c-1", **extra: Any) -> dict[str, Any]:
    return {"event_id": f"ev-{n}", "customer_id": customer, "type": "purchase",
            "ts": int(time.time() * 1000), "amount": 10.5, "currency": "PLN", **extra}


def bad_body(size: int = MIB) -> bytes:
    """Just under `size` bytes of short refused lines: most miss `type`, every 10th has a
    negative amount."""
    lines: list[bytes] = []
    total = 0
    n = 0
    while True:
        n += 1
        line = (orjson.dumps({**purchase(n), "amount": -1}) if n % 10 == 0
                else b'{"event_id":"e%d","customer_id":"c"}' % n)
        if total + len(line) + 1 > size:
            return b"\n".join(lines)
        lines.append(line)
        total += len(line) + 1


@pytest_asyncio.fixture(loop_scope="session")
async def topics(kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str
                 ) -> AsyncIterator[Settings]:
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap,
                                 topic_prefix=f"{unique}.")
    names = input_topics(settings)
    await create_topics(kafka_admin, names, 1)
    yield settings
    await kafka_admin.delete_topics(names)


async def start(app: web.Application, header_timeout: float = 10.0
                ) -> tuple[web.AppRunner, str]:
    port = free_port()
    runner = await serve_ingest(app, "127.0.0.1", port, header_timeout=header_timeout)
    return runner, f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture(loop_scope="session")
async def ingest(topics: Settings, kafka_bootstrap: str) -> AsyncIterator[str]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    app = create_ingest_app(topics, producer, Metrics(CollectorRegistry()), TOKEN, MIB, "PLN",
                            body_timeout=1.0, ack_timeout=5.0)
    runner, url = await start(app, header_timeout=1.0)
    yield url
    await runner.cleanup()
    await producer.stop()


async def test_eight_parallel_bad_megabyte_bodies_get_small_answers_and_health_stays_quick(
        ingest: str) -> None:
    body = bad_body()
    lines = body.count(b"\n") + 1
    assert MIB - 200 < len(body) <= MIB and lines > 20_000
    latencies: list[float] = []
    done = asyncio.Event()

    async with aiohttp.ClientSession() as session:
        async def post() -> tuple[int, bytes]:
            async with session.post(f"{ingest}/v1/events", data=body, headers=NDJSON) as r:
                return r.status, await r.read()

        async def probe() -> None:
            while not done.is_set():
                began = time.monotonic()
                async with session.get(f"{ingest}/healthz") as r:
                    assert r.status == 200
                latencies.append(time.monotonic() - began)
                await asyncio.sleep(0.02)

        prober = asyncio.create_task(probe())
        began = time.monotonic()
        answers = await asyncio.gather(*(post() for _ in range(8)))
        took = time.monotonic() - began
        done.set()
        await prober

    for status, raw in answers:
        assert status == 400
        assert len(raw) < 32 * 1024, len(raw)  # the whole list would be ~2.5 MB
        answer = orjson.loads(raw)
        assert answer["rejected_total"] == lines
        assert answer["rejected_by_reason"] == {"missing_field": lines - lines // 10,
                                                "negative_amount": lines // 10}
        assert len(answer["rejected"]) == MAX_LISTED
        assert [r["line"] for r in answer["rejected"]] == list(range(1, MAX_LISTED + 1))
    # validation yields to the event loop: /healthz answered quickly all along
    assert len(latencies) >= 5, (latencies, took)
    assert max(latencies) < 0.2, (max(latencies), took)


async def test_a_huge_declared_body_is_refused_before_it_is_read(ingest: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(ingest.rsplit(":", 1)[1]))
    try:
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\n"
                     b"Content-Type: application/x-ndjson\r\nContent-Length: 10737418240\r\n\r\n"
                     + b"x" * 1000)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 413"), head
    finally:
        writer.close()


async def test_a_slow_body_gets_408_and_slow_headers_are_cut(ingest: str) -> None:
    port = int(ingest.rsplit(":", 1)[1])
    # body: 10 of the 100 announced bytes, then nothing
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    try:
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\": 1, ")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - began < 4
    finally:
        writer.close()
    # headers: one header line every 0.3 s, never finished
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    try:
        writer.write(b"POST /v1/events HTTP/1.1\r\n")
        for n in range(30):
            await asyncio.sleep(0.3)
            if reader.at_eof() or writer.is_closing():
                break
            writer.write(b"X-Slow-%d: 1\r\n" % n)
            try:
                await writer.drain()
            except ConnectionError:
                break
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert time.monotonic() - began < 4
    finally:
        writer.close()


@pytest_asyncio.fixture(loop_scope="session")
async def private_broker(tmp_path: Path, kafka_bootstrap: str) -> AsyncIterator[Settings]:
    """A broker of this test's own (in tmp_path), which the test may stop."""
    settings = Settings.from_env(env={}, state_dir=tmp_path, kafka_port=free_port(),
                                 kafka_controller_port=free_port(), partitions=1)
    await asyncio.to_thread(local_kafka.start, settings)
    try:
        yield settings
    finally:
        await asyncio.to_thread(local_kafka.stop, settings)


async def test_kafka_down_gets_503_within_the_acknowledgment_timeout(
        private_broker: Settings) -> None:
    settings = private_broker.with_overrides(ingest_ack_timeout=2.0)
    await ensure_topics(settings, input_topics(settings))
    # the producer's own timeout is longer than the ingest's bound: the bound answers first
    producer = make_producer(settings, request_timeout_ms=6_000)
    await producer.start()
    runner, url = await start(create_ingest_app(settings, producer, Metrics(CollectorRegistry()),
                                                TOKEN, MIB, "PLN"))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/events", json=purchase(1), headers=AUTH) as r:
                assert r.status == 202, await r.text()
            assert await asyncio.to_thread(local_kafka.stop, settings)
            batch = b"\n".join(orjson.dumps(e) for e in (
                purchase(2), {"event_id": "w-1", "customer_id": "c-2", "type": "page_view",
                              "ts": int(time.time() * 1000), "url": "/"}))
            began = time.monotonic()
            async with session.post(f"{url}/v1/events", data=batch, headers=NDJSON) as r:
                took = time.monotonic() - began
                assert r.status == 503, await r.text()
                assert r.headers["Retry-After"] == "5"
                assert "within 2 s" in (await r.json())["error"]
            assert 1.9 <= took < 4, took
            async with session.get(f"{url}/healthz") as r:
                assert r.status == 200
            # Kafka back: the same ingest accepts again (no restart needed)
            await asyncio.to_thread(local_kafka.start, settings)
            deadline = time.monotonic() + 60
            while True:
                async with session.post(f"{url}/v1/events", json=purchase(3),
                                        headers=AUTH) as r:
                    if r.status == 202:
                        break
                    assert r.status == 503 and time.monotonic() < deadline
    finally:
        await runner.cleanup()
        await asyncio.wait_for(producer.stop(), 60)
