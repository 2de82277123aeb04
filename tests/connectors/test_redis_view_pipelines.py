"""The Redis view and issue 14's pipelines: the customer's current pipeline in their hash and a
per-pipeline size, kept from the changes' pipeline moves, against the real Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from connectors.changes import change_from_wire
from connectors.redis_view import RedisView
from tests.connectors.factories import BASE_AT, erasure, wire_change

pytestmark = pytest.mark.integration


def moved(cid: str, seq: int, segments: list[str], previous: list[str],
          move: tuple[str | None, str | None] | None) -> Any:
    obj = wire_change(cid, seq, segments=segments, previous=previous)
    if move is not None:
        obj["pipeline"] = {"from": move[0], "to": move[1]}
    return change_from_wire(obj)


async def test_pipeline_field_and_sizes_follow_the_moves(redis_client: aioredis.Redis,
                                                         unique: str) -> None:
    view = RedisView(redis_client, prefix=f"{unique}:", clock=lambda: BASE_AT / 1000 + 60)
    view.default_pipeline = "prospect"
    await view.apply(moved("c-1", 1, ["buyer"], [], ("prospect", "occasional")))
    await view.apply(moved("c-2", 1, ["reader"], [], None))  # stays in the default
    await view.apply(moved("c-3", 1, ["vip"], [], ("prospect", "premium")))
    assert await view.pipeline_sizes() == {"occasional": 1, "prospect": 1, "premium": 1}
    c1 = await view.customer("c-1")
    assert c1 is not None and c1.pipeline == "occasional"
    await view.apply(moved("c-1", 2, ["vip"], ["buyer"], ("occasional", "premium")))
    await view.apply(moved("c-1", 2, ["vip"], ["buyer"], ("occasional", "premium")))  # stale
    await view.apply(moved("c-2", 2, ["reader", "buyer"], ["reader"], None))  # no move
    assert await view.pipeline_sizes() == {"occasional": 0, "prospect": 1, "premium": 2}
    assert await view.apply(change_from_wire(erasure("c-3", 2, previous=["vip"]))) == "erased"
    assert await view.pipeline_sizes() == {"occasional": 0, "prospect": 1, "premium": 1}
    # a roll-out to rules without pipelines: the customer leaves every pipeline
    await view.apply(moved("c-1", 3, ["vip"], ["vip"], ("premium", None)))
    assert await view.pipeline_sizes() == {"occasional": 0, "prospect": 1, "premium": 0}
    c1 = await view.customer("c-1")
    raw = await redis_client.hget(f"{unique}:customer:c-1", "pipeline")
    assert raw is None and c1 is not None and c1.pipeline == "prospect"  # reads the default


async def test_without_a_default_only_moves_set_the_pipeline(redis_client: aioredis.Redis,
                                                               unique: str) -> None:
    view = RedisView(redis_client, prefix=f"{unique}:", clock=lambda: BASE_AT / 1000 + 60)
    await view.apply(moved("c-1", 1, ["reader"], [], None))
    assert await view.pipeline_sizes() == {}
    c1 = await view.customer("c-1")
    assert c1 is not None and c1.pipeline is None
