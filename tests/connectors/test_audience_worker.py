"""Members and export against a real worker (issue 14): `segmenter worker` (a subprocess, the
retail rules, real Kafka) serves `/v1/segments/{id}/members` from the Redis view kept by a
ViewConsumer; every segment's members, with their entry times, and `segmenter segments export`
must equal the customers' states the worker committed to its changelog."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner

from connectors.redis_view import RedisView, ViewConsumer
from model.changes import format_ts
from model.events import encode_event
from model.state import CustomerState
from segmenter.commands.rules import publish_rules
from segmenter.commands.segments import segments as segments_cli
from streams.generator import generate
from streams.runtime.app import SEGMENT_CHANGES, changelog_topic
from tests.connectors.factories import RETAIL_RULES
from tests.streams.workers import TOPIC_FOR_TYPE, cluster, free_port, produce, read_states

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RETAIL_TEXT = (ROOT / "rules" / "examples" / "retail.yaml").read_text()
TOKEN = "worker-audience-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def wait_ready(http: aiohttp.ClientSession, base: str, version: str,
                     timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        try:
            async with http.get(base + "/readyz", headers=BEARER) as r:
                body = await r.json()
                if r.status == 200 and body.get("rules_version") == version:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"the worker is not ready with {version}: {body}")


async def settled_states(bootstrap: str, topic: str, view: RedisView,
                         timeout: float = 60.0) -> dict[str, CustomerState]:
    """The changelog's states once the view's sizes equal theirs (the view follows)."""
    deadline = time.monotonic() + timeout
    seen: tuple[Any, Any] = ({}, {})
    while time.monotonic() < deadline:
        states = await read_states(bootstrap, topic)
        worker = Counter(s for st in states.values() for s in st.members)
        view_sizes = {k: v for k, v in (await view.sizes()).items() if v}
        seen = (dict(worker), view_sizes)
        if worker and dict(worker) == view_sizes:
            return states
        await asyncio.sleep(0.5)
    raise AssertionError(f"the view never caught up with the worker: {seen}")


async def test_members_and_export_equal_the_workers_states(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, redis_url: str, unique: str,
        tmp_path: Path) -> None:
    port = free_port()
    prefix = f"{unique}:"
    client = aioredis.Redis.from_url(redis_url)
    base = f"http://127.0.0.1:{port}"
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_WEB_PORT=str(port), SEGMENTER_REDIS_URL=redis_url,
                       SEGMENTER_REDIS_PREFIX=prefix, SEGMENTER_API_TOKEN=TOKEN) as c, \
            aiohttp.ClientSession() as http:
        view = RedisView(client, prefix=prefix)
        consumer = ViewConsumer(c.settings, view, c.topic(SEGMENT_CHANGES), f"{unique}-view")
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        try:
            await publish_rules(c.settings, RETAIL_TEXT, "retail.yaml")
            w = c.start(name="audience")
            await wait_ready(http, base, RETAIL_RULES.version)
            start = int(time.time() * 1000) - 30 * 86_400_000
            events = list(generate(customers=400, events=5000, seed=21, start_ms=start,
                                   days=30))
            await produce(kafka_bootstrap, [(c.topic(TOPIC_FOR_TYPE[e.type]),
                                             e.customer_id.encode(), encode_event(e))
                                            for e in events])
            states = await settled_states(kafka_bootstrap, changelog_topic(c.settings), view)
            assert w.alive(), w.tail()

            paged = 0
            for seg in RETAIL_RULES.segments:
                want = {cid: format_ts(st.members[seg.id]) for cid, st in states.items()
                        if seg.id in st.members}
                got: dict[str, Any] = {}
                cursor: str | None = "0"
                pages = 0
                while cursor is not None:
                    async with http.get(f"{base}/v1/segments/{seg.id}/members",
                                        params={"cursor": cursor, "limit": "40"},
                                        headers=BEARER) as r:
                        body = await r.json()
                    assert r.status == 200, body
                    got.update({m["customer_id"]: m for m in body["members"]})
                    cursor = body["next_cursor"]
                    pages += 1
                assert {cid: m["entered_at"] for cid, m in got.items()} == want, seg.id
                assert all(m["label"] == seg.defn.label for m in got.values())
                paged += pages > 1
            assert paged >= 1

            async with http.get(f"{base}/v1/segments/nope/members", headers=BEARER) as r:
                assert r.status == 404 and "nope" in (await r.json())["error"]
            async with http.get(f"{base}/v1/segments/vip/members") as r:
                assert r.status == 401
            async with http.get(f"{base}/v1/segments/vip/members?cursor=x",
                                headers=BEARER) as r:
                assert r.status == 400

            sizes = Counter(s for st in states.values() for s in st.members)
            seg_id = max(sizes, key=lambda s: sizes[s])
            result = await asyncio.to_thread(
                CliRunner().invoke, segments_cli, ["export", seg_id, "--format", "csv",
                                                   "--redis-url", redis_url, "--prefix",
                                                   prefix], catch_exceptions=False)
            assert result.exit_code == 0, result.stderr
            table = list(csv.reader(io.StringIO(result.stdout)))
            assert {r[0]: r[2] for r in table[1:]} == {
                cid: format_ts(st.members[seg_id]) for cid, st in states.items()
                if seg_id in st.members}
            async with http.get(f"{base}/v1/overlap", headers=BEARER) as r:
                matrix = orjson.loads(await r.read())
            i = matrix["segments"].index(seg_id)
            assert matrix["both"][i][i] == sizes[seg_id]
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
