"""One truth everywhere: after each step of a live system's life (events, a quiet rule roll-out,
a worker restart, more events), the segment sizes the worker holds (its states in the changelog)
equal the Redis view's, `/v1/segments`', the worker's `segmenter_segment_size` gauge and the
dashboard's overview. Real worker, real Kafka, real Redis, the real dashboard app."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from connectors.dashboard.app import create_dashboard_app, serve
from connectors.dashboard.data import DashboardOptions
from connectors.redis_view import RedisView, ViewConsumer
from rules.loader import load_rules_text
from rules.ruleset import RuleSet
from segmenter.commands.rules import publish_rules
from streams.runtime.app import SEGMENT_CHANGES, changelog_topic
from tests.streams.workers import (
    MINUTE,
    ROLL_V1,
    ROLL_V2,
    SECOND,
    T0,
    Cluster,
    Collector,
    cluster,
    ev,
    free_port,
    http_get,
    produce,
    read_states,
    wait_rules_version,
    wire,
)

pytestmark = pytest.mark.integration

V1, V2 = ROLL_V1, ROLL_V2


async def sizes_everywhere(c: Cluster, port: int, view: RedisView,
                           dashboard: str) -> dict[str, dict[str, int]]:
    states = await read_states(c.bootstrap, changelog_topic(c.settings))
    worker = Counter(sid for st in states.values() for sid in st.members)
    _, raw = await http_get(port, "/v1/segments")
    api = {s["id"]: s["size"] for s in orjson.loads(raw)["segments"]}
    _, metrics = await http_get(port, "/metrics")
    gauge = {}
    for line in metrics.decode().splitlines():
        if line.startswith("segmenter_segment_size{"):
            gauge[line.split('segment="')[1].split('"')[0]] = int(float(line.split()[-1]))
    async with aiohttp.ClientSession() as s, s.get(f"{dashboard}/api/overview") as r:
        overview: Any = await r.json()
    board = {seg["id"]: seg["size"] for seg in overview["segments"]}

    def nonzero(d: dict[str, int]) -> dict[str, int]:
        return {k: v for k, v in d.items() if v}

    return {"worker": nonzero(dict(worker)), "redis view": nonzero(await view.sizes()),
            "/v1/segments": nonzero(api), "gauge": nonzero(gauge),
            "dashboard": nonzero(board)}


async def agree(c: Cluster, port: int, view: RedisView, dashboard: str, step: str) -> None:
    """Poll until every place says the same (the view and the gauge follow within moments)."""
    seen: dict[str, dict[str, int]] = {}
    for _ in range(100):
        seen = await sizes_everywhere(c, port, view, dashboard)
        if len({orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in seen.values()}) == 1 \
                and seen["worker"]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"after {step}, the places disagree: {seen}")


async def test_every_view_agrees_with_the_worker_after_each_step(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, redis_url: str, unique: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    prefix = f"{unique}:"
    customers = [f"agree-{i}" for i in range(24)]
    client = aioredis.Redis.from_url(redis_url)
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_WEB_PORT=str(port), SEGMENTER_REDIS_URL=redis_url,
                       SEGMENTER_REDIS_PREFIX=prefix) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
        view = RedisView(client, prefix=prefix)
        consumer = ViewConsumer(c.settings, view, c.topic(SEGMENT_CHANGES), f"{unique}-view")
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        app = create_dashboard_app(DashboardOptions(prefix=prefix,
                                                    api_url=f"http://127.0.0.1:{port}"),
                                   client)
        runner, board_port = await serve(app, "127.0.0.1", 0)
        dashboard = f"http://127.0.0.1:{board_port}"
        try:
            await publish_rules(c.settings, V1, "v1.yaml")
            w = c.start(name="agree")
            await wait_rules_version(port, RuleSet(load_rules_text(V1)).version, w)

            async def send(*events: Any) -> None:
                await produce(kafka_bootstrap, [(c.topic(t), k, v)
                                                for t, k, v in map(wire, events)])

            await send(*(ev("purchase", cid, T0 + i * SECOND, amount=100.0 + 10 * i)
                         for i, cid in enumerate(customers)),
                       *(ev("email_open", cid, T0 + MINUTE + i)
                         for i, cid in enumerate(customers[::3])))
            await col.wait("the first changes", lambda: len(col.records) >= len(customers),
                           workers=[w])
            await agree(c, port, view, dashboard, "the first events")

            await publish_rules(c.settings, V2, "v2.yaml", quiet=True)
            await wait_rules_version(port, RuleSet(load_rules_text(V2)).version, w)
            await agree(c, port, view, dashboard, "a quiet roll-out")

            assert await w.stop() == 0, w.tail()
            w2 = c.start(name="agree")
            await wait_rules_version(port, RuleSet(load_rules_text(V2)).version, w2)
            await agree(c, port, view, dashboard, "a worker restart")

            await send(*(ev("purchase", cid, T0 + 2 * MINUTE + i, amount=500.0)
                         for i, cid in enumerate(customers[:5])))
            await agree(c, port, view, dashboard, "more events")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await runner.cleanup()
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
