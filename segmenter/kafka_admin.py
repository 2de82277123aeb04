"""Topic administration shared by the worker and the connectors (aiokafka's admin client)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from segmenter.errors import TopologyError
from segmenter.settings import Settings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka error code

# Topics (without the prefix) whose records carry personal data for a while, by the Settings
# field holding their retention.ms. The compacted topics (rules, members, the customers
# changelog) are not here: they keep the latest record per key, and erasure tombstones it.
RETENTION_FIELDS: dict[str, str] = {
    "purchases": "input_retention_ms",
    "email-events": "input_retention_ms",
    "web-activity": "input_retention_ms",
    "customer-profiles": "input_retention_ms",
    "segmenter-rekey": "input_retention_ms",
    "segment-changes": "changes_retention_ms",
    "segmenter-dead-letters": "dead_letter_retention_ms",
    "segmenter-webhook-dead-letters": "dead_letter_retention_ms",
}


def retention_ms(settings: Settings, topic: str) -> int | None:
    """The retention.ms Segmenter gives `topic` (full name, prefix included) when it creates
    it, or None for a topic it leaves at the broker's default (the compacted ones)."""
    prefix = settings.topic_prefix
    name = topic[len(prefix):] if prefix and topic.startswith(prefix) else topic
    field = RETENTION_FIELDS.get(name)
    return None if field is None else int(getattr(settings, field))


def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    """The topic configs Segmenter creates `topic` with (retention only; empty if none)."""
    ms = retention_ms(settings, topic)
    return {} if ms is None else {"retention.ms": str(ms)}


async def log_retention(admin: AIOKafkaAdminClient, settings: Settings,
                        existing: Sequence[str]) -> None:
    """Log the retention of existing topics whose retention.ms differs from the setting (they
    are left alone: change them with kafka-configs --alter). Never raises."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    checked = [t for t in existing if retention_ms(settings, t) is not None]
    if not checked:
        return
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in checked])
        for response in responses:
            for error_code, _message, _kind, topic, entries in response.resources:
                if error_code:
                    continue
                found = {entry[0]: entry[1] for entry in entries}.get("retention.ms")
                wanted = retention_ms(settings, topic)
                if found is not None and wanted is not None and int(found) != wanted:
                    log.info("topic %s exists with retention.ms=%s (left alone; the setting "
                             "says %d for new topics)", topic, found, wanted)
    except Exception as exc:  # only a log line: never stop a start-up for it
        log.debug("could not read the retention of %s: %s", checked, exc)


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
