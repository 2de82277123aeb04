"""Topic administration shared by the worker and the connectors (aiokafka's admin client)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from segmenter.errors import TopologyError

TOPIC_ALREADY_EXISTS = 36  # Kafka error code


async def create_and_wait(admin: AIOKafkaAdminClient, new: Sequence[NewTopic],
                          wanted: Sequence[str], timeout: float = 60.0) -> None:
    """Create `new` (an existing one is fine) and wait until every partition of `wanted` has a
    leader; TopologyError when creation fails or leaders do not appear within `timeout`."""
    if new:
        response = await admin.create_topics(list(new))
        failed = [(topic, code) for topic, code, *_ in response.topic_errors
                  if code not in (0, TOPIC_ALREADY_EXISTS)]
        if failed:
            raise TopologyError(f"could not create topics: {failed}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = await admin.describe_topics(list(wanted))
        if all(t["error_code"] == 0 and t["partitions"]
               and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
            return
        if loop.time() > deadline:
            raise TopologyError(f"topics {list(wanted)} have no leaders after {timeout:.0f} s")
        await asyncio.sleep(0.1)
