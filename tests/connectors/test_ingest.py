"""HTTP ingest against the real broker: what is answered and what lands in which topic."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from connectors.events import input_topics
from connectors.ingest import create_ingest_app
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings
from tests.kafka_helpers import consume_json, create_topics

pytestmark = pytest.mark.integration

TOKEN = "t0ken"
NDJSON = {"Content-Type": "application/x-ndjson"}


def now_ms() -> int:
    return int(time.time() * 1000)


def purchase(n: int, customer: str = "c-1", **extra: Any) -> dict[str, Any]:
    return {"event_id": f"ev-{n}", "customer_id": customer, "type": "purchase", "ts": now_ms(),
            "amount": 10.5 + n, "currency": "PLN", **extra}


def ndjson(*objects: Any) -> bytes:
    return b"\n".join(orjson.dumps(o) for o in objects) + b"\n"


@pytest_asyncio.fixture(loop_scope="session")
async def topics(kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str
                 ) -> AsyncIterator[Settings]:
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap,
                                 topic_prefix=f"{unique}.")
    names = input_topics(settings)
    await create_topics(kafka_admin, names, 1)
    yield settings
    await kafka_admin.delete_topics(names)


@pytest_asyncio.fixture(loop_scope="session")
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await p.start()
    yield p
    await p.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


async def client_for(settings: Settings, producer: AIOKafkaProducer, metrics: Metrics,
                     **kw: Any) -> TestClient[Any, Any]:
    options: dict[str, Any] = {"token": TOKEN, "max_bytes": 4096, "currency": "PLN"}
    options.update(kw)
    app = create_ingest_app(settings, producer, metrics, options.pop("token"),
                            options.pop("max_bytes"), options.pop("currency"), **options)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest_asyncio.fixture(loop_scope="session")
async def client(topics: Settings, producer: AIOKafkaProducer, metrics: Metrics
                 ) -> AsyncIterator[TestClient[Any, Any]]:
    c = await client_for(topics, producer, metrics)
    yield c
    await c.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_one_json_event_is_produced_keyed_by_customer(
        client: TestClient[Any, Any], topics: Settings, kafka_bootstrap: str,
        metrics: Metrics) -> None:
    event = purchase(1, "cust-ü", order_id="o-1")
    raw = orjson.dumps(event)
    response = await client.post("/v1/events", data=raw,
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert response.status == 202
    assert await response.json() == {"accepted": 1, "rejected": 0}
    [got] = await consume_json(kafka_bootstrap, topics.topic("purchases"), 1)
    assert got.key == "cust-ü" and got.value == event
    assert metrics.ingest_requests.labels("202")._value.get() >= 1


async def test_an_ndjson_batch_goes_to_each_type_s_topic(
        client: TestClient[Any, Any], topics: Settings, kafka_bootstrap: str) -> None:
    ts = now_ms()
    batch = [
        purchase(1),
        {"event_id": "w-1", "customer_id": "c-2", "type": "page_view", "ts": ts, "url": "/x"},
        {"event_id": "m-1", "customer_id": "c-1", "type": "email_open", "ts": ts},
        {"event_id": "p-1", "customer_id": "c-3", "type": "profile_update", "ts": ts,
         "attributes": {"city": "Kraków"}},
        purchase(2, "c-2", currency="PLN", type="refund"),
    ]
    body = b"\r\n\n".join(orjson.dumps(e) for e in batch)  # blank lines and CRLF are fine
    response = await client.post("/v1/events", data=body, headers={**AUTH, **NDJSON})
    assert response.status == 202, await response.text()
    assert await response.json() == {"accepted": 5, "rejected": 0}
    purchases = await consume_json(kafka_bootstrap, topics.topic("purchases"), 2)
    assert [(r.key, r.value["type"]) for r in purchases] == [("c-1", "purchase"),
                                                             ("c-2", "refund")]
    [web] = await consume_json(kafka_bootstrap, topics.topic("web-activity"), 1)
    [mail] = await consume_json(kafka_bootstrap, topics.topic("email-events"), 1)
    [profile] = await consume_json(kafka_bootstrap, topics.topic("customer-profiles"), 1)
    assert (web.key, mail.key, profile.key) == ("c-2", "c-1", "c-3")
    assert profile.value["attributes"] == {"city": "Kraków"}


async def test_a_batch_with_bad_lines_is_refused_whole(
        client: TestClient[Any, Any], topics: Settings, kafka_bootstrap: str) -> None:
    lines = [
        orjson.dumps(purchase(1)),
        orjson.dumps(purchase(2, currency="EUR")),
        b"",
        b"{not json",
        orjson.dumps({**purchase(3), "amount": -1}),
        orjson.dumps(purchase(4)),
        orjson.dumps({**purchase(5), "ts": now_ms() + 3_600_000}),
    ]
    response = await client.post("/v1/events", data=b"\n".join(lines),
                                 headers={**AUTH, **NDJSON})
    assert response.status == 400
    answer = await response.json()
    assert answer["accepted"] == 0
    assert [(r["line"], r["reason"]) for r in answer["rejected"]] == [
        (2, "currency_mismatch"), (4, "malformed_json"), (5, "negative_amount"),
        (7, "too_far_in_future")]
    assert answer["rejected"][0]["field"] == "currency"
    assert answer["rejected"][0]["event_id"] == "ev-2"
    # nothing was produced: the next accepted event is the first record of the topic
    marker = purchase(99)
    response = await client.post("/v1/events", json=marker, headers=AUTH)
    assert response.status == 202
    [first] = await consume_json(kafka_bootstrap, topics.topic("purchases"), 1)
    assert first.value["event_id"] == "ev-99"


async def test_authentication(client: TestClient[Any, Any]) -> None:
    event = orjson.dumps(purchase(1))
    headers = {"Content-Type": "application/json"}
    missing = await client.post("/v1/events", data=event, headers=headers)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="segmenter"'
    wrong = await client.post("/v1/events", data=event,
                              headers={**headers, "Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]


async def test_size_limit_and_content_type(client: TestClient[Any, Any]) -> None:
    big = ndjson(*(purchase(i, order_id="o" * 100) for i in range(40)))
    assert len(big) > 4096
    over = await client.post("/v1/events", data=big, headers={**AUTH, **NDJSON})
    assert over.status == 413 and "4096" in (await over.json())["error"]

    async def stream() -> AsyncIterator[bytes]:  # chunked: no Content-Length to trust
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]
    chunked = await client.post("/v1/events", data=stream(), headers={**AUTH, **NDJSON})
    assert chunked.status == 413

    text = await client.post("/v1/events", data=b"{}", headers={**AUTH,
                                                               "Content-Type": "text/plain"})
    assert text.status == 415
    empty = await client.post("/v1/events", data=b"\n \n", headers={**AUTH, **NDJSON})
    assert empty.status == 400 and (await empty.json())["rejected"] == []


async def test_without_a_token_anyone_may_post_and_event_clock_skips_time_checks(
        topics: Settings, producer: AIOKafkaProducer, metrics: Metrics) -> None:
    client = await client_for(topics, producer, metrics, token=None, check_clock=False)
    try:
        old = {**purchase(1), "ts": "2001-01-01T00:00:00Z"}
        response = await client.post("/v1/events", json=old)
        assert response.status == 202
        health = await client.get("/healthz")
        assert health.status == 200
        scraped = await (await client.get("/metrics")).text()
        assert "segmenter_ingest_requests_total" in scraped
    finally:
        await client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_ingest_run_command(
        topics: Settings, kafka_bootstrap: str, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "ingest.log"
    env = {**os.environ, "SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SEGMENTER_TOPIC_PREFIX": topics.topic_prefix, "SEGMENTER_INGEST_TOKEN": TOKEN}
    rules = Path(__file__).parents[2] / "rules" / "examples" / "minimal.yaml"  # currency EUR
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from segmenter.cli import main; main()", "ingest", "run",
             "--host", "127.0.0.1", "--port", str(port), "--rules", str(rules)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/events"
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.1)
            async with session.post(url, json=purchase(1, currency="EUR"),
                                    headers=AUTH) as response:
                assert response.status == 202
            async with session.post(url, json=purchase(2), headers=AUTH) as response:
                assert response.status == 400
                assert (await response.json())["rejected"][0]["reason"] == "currency_mismatch"
        [got] = await consume_json(kafka_bootstrap, topics.topic("purchases"), 1)
        assert got.value["event_id"] == "ev-1"
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
    assert code == 0, log_path.read_text()
