"""The Redis read model's core (change -> Redis writes) against the real Redis."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from connectors.changes import ChangeRecord, Tombstone
from connectors.redis_view import KeyLayout, RedisView, minute_of
from streams.runtime.metrics import Metrics
from tests.connectors.factories import BASE_AT, GROUP_OF, META, erasure, record, wire_change

pytestmark = pytest.mark.integration

NOW = BASE_AT / 1000 + 60  # the view's clock: one minute after the test changes


def make_view(client: aioredis.Redis, prefix: str, **kw: Any) -> RedisView:
    return RedisView(client, prefix=prefix, clock=lambda: NOW, **kw)


@pytest.fixture
def view(redis_client: aioredis.Redis, unique: str) -> RedisView:
    return make_view(redis_client, f"{unique}:")


def meta(segment: str) -> dict[str, Any]:
    return META[segment]


async def test_a_change_writes_customer_sets_groups_feed_history_and_stats(
        view: RedisView, redis_client: aioredis.Redis, unique: str) -> None:
    change = record(wire_change("c-1", 1, segments=["vip", "reader"]))
    assert await view.apply(change) == "applied"

    customer = await view.customer("c-1")
    assert customer is not None
    assert customer.seq == 1
    assert customer.rules_version == "sha256:test"
    assert customer.updated_at == change.at
    assert customer.segments == {"reader": meta("reader"), "vip": meta("vip")}
    assert customer.segments["vip"]["actions"] == {"pipeline": "premium", "followups": []}
    assert customer.groups == {"tier": "vip"}
    assert await view.members("vip") == {"c-1"}
    assert await view.sizes() == {"vip": 1, "reader": 1}
    assert await view.group_members("tier") == {"c-1": "vip"}
    [entry] = await view.feed()
    assert entry["customer_id"] == "c-1" and entry["entered"] == ["reader", "vip"]
    [hist] = await view.history("c-1")
    assert hist["seq"] == 1 and hist["segments"] == ["reader", "vip"]
    stats = await view.stats(minute_of(BASE_AT + 1000))
    assert stats == {"reader:entered": 1, "vip:entered": 1}
    ttl = await redis_client.ttl(view.keys.stats(minute_of(BASE_AT + 1000)))
    assert 0 < ttl <= view.stats_ttl
    # the raw layout other languages read (docs/redis.md)
    raw = await redis_client.hgetall(f"{unique}:customer:c-1")
    assert raw[b"segments"] == b'["reader","vip"]'
    assert raw[b"group:tier"] == b"vip"
    assert set(raw) == {b"seq", b"rules_version", b"updated_at", b"segments", b"seg:vip",
                        b"seg:reader", b"group:tier", b"entered:vip", b"entered:reader",
                        b"why:vip", b"why:reader"}
    assert raw[b"entered:vip"] == change.at.encode() and raw[b"why:vip"] == b'"because vip"'


async def test_older_or_repeated_changes_never_overwrite_newer_ones(view: RedisView) -> None:
    first = record(wire_change("c-1", 1, segments=["buyer"]))
    second = record(wire_change("c-1", 2, segments=["vip"], previous=["buyer"]))
    assert await view.apply_many([second, first, second]) == ["applied", "stale", "stale"]
    customer = await view.customer("c-1")
    assert customer is not None and customer.seq == 2
    assert set(customer.segments) == {"vip"}
    assert await view.sizes() == {"vip": 1}
    assert await view.members("buyer") == set()
    assert len(await view.feed()) == 1  # a stale change writes nothing at all
    stats = await view.stats(minute_of(BASE_AT + 2000))
    assert stats == {"vip:entered": 1, "buyer:exited": 1}


async def test_metadata_of_held_segments_is_carried_over(view: RedisView) -> None:
    await view.apply(record(wire_change("c-1", 1, segments=["vip"])))
    await view.apply(record(wire_change("c-1", 2, segments=["vip", "reader"], previous=["vip"])))
    customer = await view.customer("c-1")
    assert customer is not None
    assert customer.segments == {"vip": meta("vip"), "reader": meta("reader")}
    await view.apply(record(wire_change("c-1", 3, segments=["reader"],
                                        previous=["vip", "reader"])))
    customer = await view.customer("c-1")
    assert customer is not None
    assert customer.segments == {"reader": meta("reader")}
    assert customer.groups == {}
    assert await view.group_members("tier") == {}


async def test_group_moves_replace_the_current_member(view: RedisView) -> None:
    await view.apply(record(wire_change("c-1", 1, segments=["buyer"])))
    await view.apply(record(wire_change("c-1", 2, segments=["vip"], previous=["buyer"])))
    assert await view.group_members("tier") == {"c-1": "vip"}
    customer = await view.customer("c-1")
    assert customer is not None and customer.groups == {"tier": "vip"}


async def test_a_customer_seen_mid_stream_gets_fallback_or_empty_metadata(
        redis_client: aioredis.Redis, unique: str) -> None:
    fallback = make_view(redis_client, f"{unique}:a:", fallback_metadata={"vip": meta("vip")})
    plain = make_view(redis_client, f"{unique}:b:")
    # seq 7 holds vip and buyer, but only reader entered now: no details for the others
    change = record(wire_change("c-1", 7, segments=["vip", "reader"], previous=["vip"]))
    for v in (fallback, plain):
        assert await v.apply(change) == "applied"
    a, b = await fallback.customer("c-1"), await plain.customer("c-1")
    assert a is not None and b is not None
    assert a.segments == {"vip": meta("vip"), "reader": meta("reader")}
    assert b.segments == {"vip": {}, "reader": meta("reader")}
    assert await plain.sizes() == {"vip": 1, "reader": 1}


async def test_erasure_forgets_the_customer_everywhere_and_seq_starts_again(
        view: RedisView, redis_client: aioredis.Redis, unique: str) -> None:
    await view.apply(record(wire_change("c-1", 1, segments=["buyer"])))
    await view.apply(record(wire_change("c-2", 1, segments=["buyer"])))
    await view.apply(record(wire_change("c-1", 2, segments=["vip", "reader"],
                                        previous=["buyer"])))
    assert await view.apply(record(erasure("c-1", 3, previous=["vip", "reader"]))) == "erased"

    assert await view.customer("c-1") is None
    assert await redis_client.exists(f"{unique}:history:c-1") == 0
    assert await view.members("vip") == set()
    assert await view.members("buyer") == {"c-2"}
    assert await view.sizes() == {"vip": 0, "reader": 0, "buyer": 1}
    assert await view.group_members("tier") == {"c-2": "buyer"}
    assert [e["customer_id"] for e in await view.feed()] == ["c-2"]
    stats = await view.stats(minute_of(BASE_AT + 3000))  # the minute of all four changes
    assert stats == {"buyer:entered": 2, "buyer:exited": 1, "vip:entered": 1,
                     "reader:entered": 1, "vip:exited": 1, "reader:exited": 1}
    keys = {k async for k in redis_client.scan_iter(match=f"{unique}:*")}
    assert not any(b"c-1" in k for k in keys)

    # a repeated erasure is harmless; the customer's next life starts at seq 1
    assert await view.apply(record(erasure("c-1", 3, previous=["vip", "reader"]))) == "erased"
    assert await view.apply(record(wire_change("c-1", 1, segments=["reader"]))) == "applied"
    customer = await view.customer("c-1")
    assert customer is not None and customer.seq == 1 and set(customer.segments) == {"reader"}
    assert await view.sizes() == {"vip": 0, "reader": 1, "buyer": 1}


async def test_feed_and_history_are_capped(redis_client: aioredis.Redis, unique: str) -> None:
    view = make_view(redis_client, f"{unique}:", feed_max=5, history_max=3)
    previous: list[str] = []
    changes = []
    for seq in range(1, 9):
        now = ["reader"] if seq % 2 else ["buyer"]
        changes.append(record(wire_change("c-1", seq, segments=now, previous=previous)))
        previous = now
    await view.apply_many(changes)
    assert [e["seq"] for e in await view.feed()] == [8, 7, 6, 5, 4]
    assert [e["seq"] for e in await view.history("c-1")] == [8, 7, 6]


async def test_old_changes_are_not_counted_in_the_per_minute_stats(
        redis_client: aioredis.Redis, unique: str) -> None:
    view = RedisView(redis_client, prefix=f"{unique}:", stats_ttl=3600,
                     clock=lambda: BASE_AT / 1000 + 7200)
    await view.apply(record(wire_change("c-1", 1, segments=["vip"])))
    assert [k async for k in redis_client.scan_iter(match=f"{unique}:stats:*")] == []
    assert await view.members("vip") == {"c-1"}


async def test_metrics_count_outcomes(redis_client: aioredis.Redis, unique: str) -> None:
    metrics = Metrics(CollectorRegistry())
    view = make_view(redis_client, f"{unique}:", metrics=metrics)
    change = record(wire_change("c-1", 1, segments=["vip"]))
    await view.apply_many([change, change])
    assert metrics.redis_writes.labels("applied")._value.get() == 1
    assert metrics.redis_writes.labels("stale")._value.get() == 1


async def test_wipe_deletes_only_the_prefix(redis_client: aioredis.Redis, unique: str) -> None:
    view = make_view(redis_client, f"{unique}:v[1]*:")
    other = make_view(redis_client, f"{unique}:v1x:")
    change = record(wire_change("c-1", 1, segments=["vip"]))
    await view.apply(change)
    await other.apply(change)
    assert await view.wipe() > 0
    assert await view.customer("c-1") is None
    assert await other.customer("c-1") is not None
    assert KeyLayout("a*b:").pattern == "a\\*b:*"


# --------------------------------------------------------------------- property: any order


def _histories(rng: random.Random, customers: int, length: int) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for c in range(customers):
        states: list[list[str]] = []
        for _ in range(length):
            tier = rng.choice([None, "vip", "buyer"])
            others = [s for s in ("reader", "lapsing") if rng.random() < 0.5]
            state = sorted([*([tier] if tier else []), *others])
            if not states or states[-1] != state:
                states.append(state)
        out[f"c-{c}"] = states
    return out


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), customers=st.integers(1, 4), length=st.integers(1, 6))
async def test_any_delivery_order_with_duplicates_ends_at_the_newest_state(
        redis_client: aioredis.Redis, unique: str, seed: int, customers: int, length: int) -> None:
    rng = random.Random(seed)
    prefix = f"{unique}:{seed}:{time.monotonic_ns()}:"
    view = make_view(redis_client, prefix, segment_groups=GROUP_OF)
    histories = _histories(rng, customers, length)
    changes: list[ChangeRecord] = []
    for cid, states in histories.items():
        previous: list[str] = []
        for seq, state in enumerate(states, start=1):
            changes.append(record(wire_change(cid, seq, segments=state, previous=previous)))
            previous = state
    deliveries = changes + rng.choices(changes, k=len(changes))
    rng.shuffle(deliveries)
    await view.apply_many(deliveries)

    expected_sizes: dict[str, int] = {}
    for cid, states in histories.items():
        customer = await view.customer(cid)
        assert customer is not None
        assert customer.seq == len(states)
        assert sorted(customer.segments) == states[-1]
        tier = [s for s in states[-1] if s in ("vip", "buyer")]
        assert customer.groups == ({"tier": tier[0]} if tier else {})
        for s in states[-1]:
            expected_sizes[s] = expected_sizes.get(s, 0) + 1
    sizes = {s: n for s, n in (await view.sizes()).items() if n}
    assert sizes == expected_sizes
    for segment, size in expected_sizes.items():
        assert len(await view.members(segment)) == size
    await view.wipe()


async def test_a_tombstone_is_an_erasure_of_its_key(
        view: RedisView, redis_client: aioredis.Redis, unique: str) -> None:
    """After compaction, a customer's erasure change may be gone and only the tombstone left:
    it forgets the customer like the erasure does, whatever the seq; it is idempotent, and a
    tombstone of a customer the view does not have writes nothing."""
    await view.apply(record(wire_change("c-1", 1, segments=["buyer"])))
    await view.apply(record(wire_change("c-2", 1, segments=["buyer"])))
    await view.apply(record(wire_change("c-1", 2, segments=["vip", "reader"],
                                        previous=["buyer"])))
    stats_before = await view.stats(minute_of(BASE_AT + 2000))
    assert await view.apply(Tombstone("c-1")) == "erased"

    assert await view.customer("c-1") is None
    assert await redis_client.exists(f"{unique}:history:c-1") == 0
    assert await view.members("vip") == set() and await view.members("reader") == set()
    assert await view.members("buyer") == {"c-2"}
    assert await view.sizes() == {"vip": 0, "reader": 0, "buyer": 1}
    assert await view.group_members("tier") == {"c-2": "buyer"}
    assert [e["customer_id"] for e in await view.feed()] == ["c-2"]
    keys = {k async for k in redis_client.scan_iter(match=f"{unique}:*")}
    assert not any(b"c-1" in k for k in keys)
    assert await view.stats(minute_of(BASE_AT + 2000)) == stats_before  # no time, no counts

    # again, and for a customer never seen: nothing to do
    before = {k: await redis_client.type(k) for k in keys}
    assert await view.apply_many([Tombstone("c-1"), Tombstone("c-9")]) == ["stale", "stale"]
    assert {k: await redis_client.type(k)
            for k in [k async for k in redis_client.scan_iter(match=f"{unique}:*")]} == before
    # the erasure change then its tombstone (as the worker writes them); then a new life
    await view.apply(record(wire_change("c-2", 2, segments=["vip"], previous=["buyer"])))
    assert await view.apply_many([record(erasure("c-2", 3, previous=["vip"])),
                                  Tombstone("c-2")]) == ["erased", "stale"]
    assert await view.apply(record(wire_change("c-2", 1, segments=["reader"]))) == "applied"
    customer = await view.customer("c-2")
    assert customer is not None and customer.seq == 1 and set(customer.segments) == {"reader"}
    assert {s: n for s, n in (await view.sizes()).items() if n} == {"reader": 1}
