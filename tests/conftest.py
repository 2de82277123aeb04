"""Shared fixtures: the real Kafka broker and Redis that the test command started.

`make test` (scripts/test.sh) starts them and exports SEGMENTER_KAFKA_BOOTSTRAP and
SEGMENTER_REDIS_URL; by hand, `segmenter local up` then `pytest` works too (the defaults point
at the local services). When a service does not answer, its tests are skipped with a message,
except under CI=true, where they fail: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from tests.kafka_helpers import broker_answers, create_topics

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

TopicFactory = Callable[..., Awaitable[str]]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(message: str) -> NoReturn:
    hint = " Start the services with `make test`, or `segmenter local up` before pytest."
    if _in_ci():
        pytest.fail(message + hint, pytrace=False)
    pytest.skip(message + hint)


def unique_name(label: str = "t") -> str:
    """A name no other test (or earlier run) uses: label + 8 random hex digits."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")[:60] or "t"
    return f"{clean}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A unique name derived from the test's name, for topics, prefixes and Redis keys."""
    return unique_name(request.node.name)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kafka_bootstrap() -> str:
    bootstrap = os.environ.get("SEGMENTER_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    if not await broker_answers(bootstrap):
        _unavailable(f"no Kafka broker answers at {bootstrap} (SEGMENTER_KAFKA_BOOTSTRAP).")
    return bootstrap


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kafka_admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    yield admin
    await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def topic_factory(
    kafka_admin: AIOKafkaAdminClient, request: pytest.FixtureRequest
) -> AsyncIterator[TopicFactory]:
    """`await topic_factory("orders", partitions=3)` -> a new, uniquely named topic (with
    leaders elected). The topics are deleted after the test."""
    created: list[str] = []

    async def make(label: str = "topic", partitions: int = 1) -> str:
        name = unique_name(f"{request.node.name}-{label}")
        await create_topics(kafka_admin, [name], partitions)
        created.append(name)
        return name

    yield make
    if created:
        await kafka_admin.delete_topics(created)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_url() -> str:
    url = os.environ.get("SEGMENTER_REDIS_URL", DEFAULT_REDIS_URL)
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        await client.ping()
    except (aioredis.RedisError, OSError):
        _unavailable(f"no Redis answers at {url} (SEGMENTER_REDIS_URL).")
    finally:
        await client.aclose()
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def redis_client(redis_url: str, unique: str) -> AsyncIterator[aioredis.Redis]:
    """A Redis client; keys the test writes under `<unique>:` are removed afterwards."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{unique}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
