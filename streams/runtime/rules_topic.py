"""Following the compacted rules topic: every worker reads all of it (no consumer group)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from rules.loader import load_rules_text
from rules.ruleset import RuleSet
from segmenter.errors import RuleFileError
from segmenter.metrics import Metrics
from segmenter.settings import Settings
from streams.app import RULES

log = logging.getLogger(__name__)
OnRules = Callable[[RuleSet, bool], None]  # (rules, quiet)


async def follow_rules(settings: Settings, metrics: Metrics, on_rules: OnRules,
                       initial_from_file: bool) -> None:
    """Read the rules topic until cancelled, calling `on_rules` for each version to use.

    At start-up the last valid record wins unless the worker was started with --rules; records
    published later switch every worker to the new version."""
    tp = TopicPartition(settings.topic(RULES), 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        while True:
            try:
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                end = (await consumer.end_offsets([tp]))[tp]
                break
            except Exception as exc:  # the topic may not exist yet
                log.warning("rules topic not readable yet: %s", exc)
                await asyncio.sleep(1.0)
        latest: tuple[RuleSet, bool] | None = None
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for msg in batch.get(tp, []):
                parsed = parse_rules_record(msg.value, metrics)
                if parsed is None:
                    continue
                if msg.offset < end:  # history
                    if not initial_from_file:  # --rules wins at start-up
                        latest = parsed
                    continue
                on_rules(*parsed)
            if latest is not None and (await consumer.position(tp)) >= end:
                on_rules(*latest)
                latest = None
    finally:
        await consumer.stop()


def parse_rules_record(value: bytes | None, metrics: Metrics) -> tuple[RuleSet, bool] | None:
    try:
        record = orjson.loads(value or b"")
        rule_file = load_rules_text(record["yaml"], source=record.get("source", "<published>"))
        return RuleSet(rule_file), bool(record.get("quiet", False))
    except RuleFileError as exc:
        metrics.rules_refused.inc()
        log.error("refused a published rule file, keeping the version in force:\n%s", exc)
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        metrics.rules_refused.inc()
        log.error("refused an unreadable record on the rules topic: %s", exc)
    return None
