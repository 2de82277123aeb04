"""The Redis view's Kafka side: the consumer-group loop (commit after Redis), Redis outages,
`rebuild_view` and the `segmenter redis` commands, against the real broker and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from connectors.common import Backoff
from connectors.redis_view import RedisView, ViewConsumer, rebuild_view
from segmenter.cli import main
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings
from tests.conftest import TopicFactory
from tests.connectors.factories import BASE_AT, erasure, wire_change
from tests.connectors.tcp_proxy import TcpProxy
from tests.kafka_helpers import create_topics, produce_json

pytestmark = pytest.mark.integration

NOW = BASE_AT / 1000 + 60


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def committed(admin: AIOKafkaAdminClient, group: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(max(0, meta.offset) for meta in offsets.values())


def story() -> list[tuple[str, dict[str, Any]]]:
    """Changes of three customers: c-1 ends erased, c-2 in vip, c-3 in reader."""
    changes = [
        wire_change("c-1", 1, segments=["buyer"]),
        wire_change("c-2", 1, segments=["buyer"]),
        wire_change("c-1", 2, segments=["vip", "reader"], previous=["buyer"]),
        wire_change("c-3", 1, segments=["reader"]),
        wire_change("c-2", 2, segments=["vip"], previous=["buyer"]),
        erasure("c-1", 3, previous=["vip", "reader"]),
    ]
    return [(c["customer_id"], c) for c in changes]


async def check_story(view: RedisView) -> None:
    assert await view.customer("c-1") is None
    c2, c3 = await view.customer("c-2"), await view.customer("c-3")
    assert c2 is not None and c2.seq == 2 and set(c2.segments) == {"vip"}
    assert c3 is not None and set(c3.segments) == {"reader"}
    assert {s: n for s, n in (await view.sizes()).items() if n} == {"vip": 1, "reader": 1}
    assert await view.group_members("tier") == {"c-2": "vip"}


async def test_consumer_applies_changes_and_commits_after_redis(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, topic_factory: TopicFactory,
        redis_client: aioredis.Redis, unique: str) -> None:
    topic = await topic_factory("changes", partitions=2)
    await produce_json(kafka_bootstrap, topic, [*story(), ("bad", {"not": "a change"})])
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap)
    view = RedisView(redis_client, prefix=f"{unique}:", clock=lambda: NOW)
    consumer = ViewConsumer(settings, view, topic, f"{unique}-group")
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await eventually(lambda: committed_is(kafka_admin, f"{unique}-group", 7))
        await check_story(view)
        assert consumer.counts == {"applied": 5, "erased": 1, "invalid": 1}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def committed_is(admin: AIOKafkaAdminClient, group: str, expected: int) -> bool:
    return await committed(admin, group) == expected


async def test_redis_down_means_retry_and_no_commit_then_nothing_lost(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, topic_factory: TopicFactory,
        redis_url: str, redis_client: aioredis.Redis, unique: str) -> None:
    target = urlparse(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    port = await proxy.start()
    client = aioredis.Redis(host="127.0.0.1", port=port, db=int(target.path.strip("/") or 0),
                            socket_connect_timeout=1, socket_timeout=2,
                            retry=Retry(NoBackoff(), 0))
    topic = await topic_factory("changes")
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap)
    metrics = Metrics(CollectorRegistry())
    view = RedisView(client, prefix=f"{unique}:", clock=lambda: NOW, metrics=metrics)
    group = f"{unique}-group"
    consumer = ViewConsumer(settings, view, topic, group, metrics,
                            backoff=Backoff(0.05, 0.3))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        first = wire_change("c-1", 1, segments=["buyer"])
        await produce_json(kafka_bootstrap, topic, [("c-1", first)])
        await eventually(lambda: committed_is(kafka_admin, group, 1))

        await proxy.stop()  # Redis "restarts": unreachable for a while
        rest = story()[1:]
        await produce_json(kafka_bootstrap, topic, rest)
        await eventually(lambda: _errors_at_least(metrics, 3))
        assert await committed(kafka_admin, group) == 1  # nothing committed without Redis
        assert metrics.redis_writes.labels("applied")._value.get() == 1

        await proxy.start()
        await eventually(lambda: committed_is(kafka_admin, group, 6))
        await check_story(RedisView(redis_client, prefix=f"{unique}:"))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await proxy.stop()
        await client.aclose()


async def _errors_at_least(metrics: Metrics, n: int) -> bool:
    return bool(metrics.redis_write_errors._value.get() >= n)


async def test_rebuild_replays_the_topic_into_a_wiped_prefix(
        kafka_bootstrap: str, topic_factory: TopicFactory, redis_client: aioredis.Redis,
        unique: str) -> None:
    topic = await topic_factory("changes", partitions=3)
    await produce_json(kafka_bootstrap, topic, story())
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap)
    view = RedisView(redis_client, prefix=f"{unique}:", clock=lambda: NOW)
    await redis_client.sadd(f"{unique}:segment:ghost:members", "c-9")  # left over from before
    seen: list[tuple[int, int]] = []
    summary = await rebuild_view(settings, view, topic,
                                 progress=lambda done, total: seen.append((done, total)))
    assert summary.records == 6
    assert summary.outcomes == {"applied": 5, "erased": 1}
    assert summary.deleted_keys == 1
    assert seen[-1] == (6, 6)
    assert await view.members("ghost") == set()
    await check_story(view)
    # a second rebuild gives the same view (it starts from scratch again)
    again = await rebuild_view(settings, view, topic)
    assert again.outcomes == summary.outcomes
    await check_story(view)


async def test_redis_rebuild_command(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, redis_url: str,
        redis_client: aioredis.Redis, unique: str) -> None:
    topic = f"{unique}.segment-changes"
    await create_topics(kafka_admin, [topic], 2)
    try:
        await produce_json(kafka_bootstrap, topic, story())
        env = {"SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap, "SEGMENTER_REDIS_URL": redis_url,
               "SEGMENTER_TOPIC_PREFIX": f"{unique}."}
        runner = CliRunner()
        result = await asyncio.to_thread(
            runner.invoke, main, ["redis", "rebuild", "--prefix", f"{unique}:"], env=env)
        assert result.exit_code == 0, result.output
        assert "from 6 change records" in result.output
        assert "5 applied, 0 stale, 1 erasures, 0 invalid" in result.output
        await check_story(RedisView(redis_client, prefix=f"{unique}:"))

        shown = await asyncio.to_thread(
            runner.invoke, main, ["redis", "show", "c-2", "--prefix", f"{unique}:"], env=env)
        assert shown.exit_code == 0 and '"vip"' in shown.output
        missing = await asyncio.to_thread(
            runner.invoke, main, ["redis", "show", "c-1", "--prefix", f"{unique}:"], env=env)
        assert missing.exit_code == 1
    finally:
        await kafka_admin.delete_topics([topic])


async def test_redis_run_command_keeps_the_view_and_stops_on_sigterm(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, redis_url: str,
        redis_client: aioredis.Redis, unique: str, tmp_path: Path) -> None:
    topic = f"{unique}.segment-changes"
    await create_topics(kafka_admin, [topic], 2)
    log_path = tmp_path / "redis-run.log"
    env = {**os.environ, "SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SEGMENTER_REDIS_URL": redis_url, "SEGMENTER_TOPIC_PREFIX": f"{unique}.",
           "SEGMENTER_REDIS_PREFIX": f"{unique}:"}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from segmenter.cli import main; main()", "redis", "run"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        await produce_json(kafka_bootstrap, topic, story())
        view = RedisView(redis_client, prefix=f"{unique}:")

        async def done() -> bool:
            assert process.poll() is None, log_path.read_text()
            return await story_applied(view)  # c-1 not there yet would pass a weaker check
        await eventually(done, 60)
        await check_story(view)
        await eventually(lambda: committed_is(kafka_admin, f"{unique}.segmenter-redis-view", 6))
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
        await kafka_admin.delete_topics([topic])
    assert code == 0, log_path.read_text()


@pytest.fixture
async def private_redis(tmp_path: Path) -> Any:
    """A redis-server of our own (the project's local configuration: append-only file fsynced
    every second), and its settings for `segmenter.local.redis` start/stop."""
    import socket

    from segmenter.local import redis as local_redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = Settings.from_env(env={}, redis_port=port, state_dir=tmp_path / "redis-state")
    await asyncio.to_thread(local_redis.start, settings)
    try:
        yield settings
    finally:
        await asyncio.to_thread(local_redis.stop, settings)


@pytest.mark.parametrize("loss", ["everything", "restart"])
async def test_the_view_heals_itself_after_redis_loses_its_data_or_restarts(
        kafka_bootstrap: str, topic_factory: TopicFactory, private_redis: Settings,
        unique: str, loss: str) -> None:
    """kill -9 of redis-server, then a start without its files ("everything": the view's data
    is gone) or with them ("restart"): the running view consumer notices by itself and reads
    the changes again; the view ends equal to the changes' final state."""
    from segmenter.local import redis as local_redis
    from segmenter.local.common import read_pid

    topic = await topic_factory("changes", partitions=2)
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap)
    client = aioredis.Redis.from_url(private_redis.redis_url, socket_connect_timeout=1,
                                     socket_timeout=2)
    view = RedisView(client, prefix=f"{unique}:", clock=lambda: NOW)
    consumer = ViewConsumer(settings, view, topic, f"{unique}-group",
                            backoff=Backoff(0.05, 0.3), check_every=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await produce_json(kafka_bootstrap, topic, story())
        await eventually(lambda: story_applied(view))  # both partitions: not c-2's alone
        await check_story(view)
        layout = local_redis.RedisLayout.for_settings(private_redis)
        pid = read_pid(layout.pid_file)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        if loss == "everything":
            for f in layout.root.rglob("*.aof*"):
                if f.is_file():
                    f.unlink()
            for d in layout.root.glob("appendonlydir"):
                for f in d.iterdir():
                    f.unlink()
        await asyncio.to_thread(local_redis.start, private_redis)
        if loss == "everything":
            assert await view.customer("c-2") is None  # really gone
        await eventually(lambda: story_applied(view))
        await check_story(view)
        noticed = {"everything": "rebuilt", "restart": "replayed"}[loss]

        async def seen() -> bool:
            return consumer.counts[noticed] == 1

        await eventually(seen)
        await check_story(view)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await client.aclose()


async def story_applied(view: RedisView) -> bool:
    """The whole story is in the view: the last change of each customer, on either partition
    (c-2 at seq 2 says nothing of c-1's erasure on the other partition)."""
    try:
        await check_story(view)
    except (AssertionError, aioredis.RedisError, OSError):
        return False
    return True
