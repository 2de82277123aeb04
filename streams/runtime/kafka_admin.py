"""Topic administration shared by the worker and the connectors (aiokafka's admin client)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from model.errors import TopologyError
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka error code

# Topics (without the prefix) whose records carry personal data for a while, by the Settings
# field holding their retention.ms (cleanup.policy=delete). The compacted topics (rules,
# members, the customers changelog) are not here: they keep the latest record per key, and
# erasure tombstones it.
RETENTION_FIELDS: dict[str, str] = {
    "purchases": "input_retention_ms",
    "email-events": "input_retention_ms",
    "web-activity": "input_retention_ms",
    "customer-profiles": "input_retention_ms",
    "segmenter-rekey": "input_retention_ms",
    "segmenter-dead-letters": "dead_letter_retention_ms",
    "segmenter-webhook-dead-letters": "dead_letter_retention_ms",
}

# Topics compacted after a lag (cleanup.policy=compact), by the Settings field holding their
# min.compaction.lag.ms: every record is kept that long, then only the latest per key. Each
# segment-changes record carries the customer's whole membership, so the latest per customer
# is enough to rebuild a view; an erasure's change record is followed by a tombstone.
COMPACTION_LAG_FIELDS: dict[str, str] = {
    "segment-changes": "changes_retention_ms",
}

KEEP_FOREVER = -1  # a retention setting of -1: nothing is deleted (nor compacted)
LONG_MAX = (1 << 63) - 1  # Kafka's "never" for a duration config


def _field(settings: Settings, topic: str, fields: dict[str, str]) -> int | None:
    prefix = settings.topic_prefix
    name = topic[len(prefix):] if prefix and topic.startswith(prefix) else topic
    field = fields.get(name)
    return None if field is None else int(getattr(settings, field))


def retention_ms(settings: Settings, topic: str) -> int | None:
    """The retention.ms Segmenter gives `topic` (full name, prefix included) when it creates
    it, or None for a topic it leaves at the broker's default (the compacted ones)."""
    return _field(settings, topic, RETENTION_FIELDS)


def compaction_lag_ms(settings: Settings, topic: str) -> int | None:
    """The min.compaction.lag.ms setting (-1: forever) of a topic Segmenter creates compacted
    after a lag (segment-changes), or None for any other topic."""
    return _field(settings, topic, COMPACTION_LAG_FIELDS)


def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    """The topic configs Segmenter creates `topic` with (retention or compaction; empty if
    none)."""
    ms = retention_ms(settings, topic)
    if ms is not None:
        return {"retention.ms": str(ms)}
    lag = compaction_lag_ms(settings, topic)
    if lag is None:
        return {}
    if lag == KEEP_FOREVER:  # compacted, but no record is ever old enough for the cleaner
        return {"cleanup.policy": "compact", "min.compaction.lag.ms": str(LONG_MAX)}
    return {
        "cleanup.policy": "compact",
        # every record for `lag`, then the latest per customer
        "min.compaction.lag.ms": str(lag),
        # a tombstone stays `lag` after the cleaner reached it: a reader that is behind by
        # less than twice the setting still sees an erased customer go (the default, 1 day,
        # would let a view stopped for longer miss the erasure altogether)
        "delete.retention.ms": str(lag),
        # superseded records (an erased customer's history) are compacted away within this,
        # whatever the cleaner's dirty ratio
        "max.compaction.lag.ms": str(lag + settings.changelog_compaction_lag_ms),
    }


async def log_retention(admin: AIOKafkaAdminClient, settings: Settings,
                        existing: Sequence[str]) -> None:
    """Log the retention of existing topics whose retention.ms differs from the setting, and
    warn about a segment-changes that is not compacted as Segmenter would create it (they are
    left alone: change them with kafka-configs --alter). Never raises."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    checked = [t for t in existing if retention_ms(settings, t) is not None
               or compaction_lag_ms(settings, t) is not None]
    if not checked:
        return
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in checked])
        for response in responses:
            for error_code, _message, _kind, topic, entries in response.resources:
                if error_code:
                    continue
                configs = {entry[0]: entry[1] for entry in entries}
                found = configs.get("retention.ms")
                wanted = retention_ms(settings, topic)
                if found is not None and wanted is not None and int(found) != wanted:
                    log.info("topic %s exists with retention.ms=%s (left alone; the setting "
                             "says %d for new topics)", topic, found, wanted)
                _check_compaction(settings, topic, configs)
    except Exception as exc:  # only a log line: never stop a start-up for it
        log.debug("could not read the retention of %s: %s", checked, exc)


def _check_compaction(settings: Settings, topic: str, configs: dict[str, str | None]) -> None:
    """Warn when an existing compacted-after-a-lag topic (segment-changes) is configured
    otherwise than Segmenter creates it."""
    if compaction_lag_ms(settings, topic) is None:
        return
    wanted = topic_configs(settings, topic)
    policy = configs.get("cleanup.policy")
    if policy != "compact":
        log.warning(
            "topic %s exists with cleanup.policy=%s (left alone; new topics get %s): records "
            "older than its retention.ms=%s are deleted, so a rebuilt Redis view misses every "
            "customer whose last change is older. To compact it: kafka-configs.sh --alter "
            "--entity-type topics --entity-name %s --add-config %s", topic, policy, wanted,
            configs.get("retention.ms"), topic,
            ",".join(f"{k}={v}" for k, v in wanted.items()))
        return
    found = configs.get("min.compaction.lag.ms")
    if found is not None and found != wanted["min.compaction.lag.ms"]:
        log.info("topic %s exists with min.compaction.lag.ms=%s (left alone; the setting "
                 "says %s for new topics)", topic, found, wanted["min.compaction.lag.ms"])


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
