"""An erasure reaches the read side: once the Redis view applied the erasure change, the
dashboard (a real server over the real Redis) shows nothing of the customer any more."""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from connectors.dashboard import DashboardOptions, create_dashboard_app
from connectors.redis_view import RedisView
from tests.connectors.factories import erasure, record, wire_change

TOKEN = "erasure-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_dashboard_forgets_an_erased_customer(redis_client: aioredis.Redis,
                                                    unique: str) -> None:
    prefix = f"{unique}:"
    view = RedisView(redis_client, prefix=prefix)
    await view.apply(record(wire_change("c-1", 1, segments=["buyer"])))
    await view.apply(record(wire_change("c-2", 1, segments=["buyer"])))
    await view.apply(record(wire_change("c-1", 2, segments=["vip", "reader"],
                                        previous=["buyer"])))
    app = create_dashboard_app(DashboardOptions(prefix=prefix, token=TOKEN,
                                                api_url="http://127.0.0.1:9"), redis_client)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        async def feed_customers() -> set[str]:
            r = await client.get("/api/feed", headers=AUTH)
            assert r.status == 200
            return {c["customer_id"] for c in (await r.json())["changes"]}

        r = await client.get("/api/customers/c-1", headers=AUTH)
        assert r.status == 200
        assert {s["id"] for s in (await r.json())["segments"]} == {"vip", "reader"}
        assert await feed_customers() == {"c-1", "c-2"}

        assert await view.apply(record(erasure("c-1", 3, previous=["vip", "reader"]))) == \
            "erased"

        r = await client.get("/api/customers/c-1", headers=AUTH)
        assert r.status == 404
        assert await feed_customers() == {"c-2"}
        r = await client.get("/api/overview", headers=AUTH)
        assert r.status == 200
        assert b"c-1" not in orjson.dumps(await r.json())
    finally:
        await client.close()
