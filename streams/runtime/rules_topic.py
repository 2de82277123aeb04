"""Following the compacted rules topic: every worker reads all of it (no consumer group)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from model.errors import RuleFileError
from rules.loader import load_rules_text
from rules.ruleset import RuleSet
from streams.runtime.app import RULES
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)
OnRules = Callable[[RuleSet, bool], None]  # (rules, quiet)


@dataclass(frozen=True, slots=True)
class Seed:
    """The worker's --rules file: what seeds an empty rules topic."""

    rules: RuleSet
    text: str
    source: str


async def follow_rules(settings: Settings, metrics: Metrics, on_rules: OnRules,
                       seed: Seed | None = None) -> None:
    """Read the rules topic until cancelled, calling `on_rules` for each version to use.

    At start-up the latest valid version published wins. `seed` (the worker's --rules file)
    only seeds a rules topic that has none: it is published, so that every worker agrees; when
    the topic has a version and the file differs, a warning says so. Versions published later
    switch every worker to them."""
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
        latest = await _history(consumer, tp, end, metrics)
        await _start_with(settings, on_rules, latest, seed)
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for msg in batch.get(tp, []):
                parsed = parse_rules_record(msg.value, metrics)
                if parsed is not None:
                    on_rules(*parsed)
    finally:
        await consumer.stop()


async def _history(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int,
                   metrics: Metrics | None) -> tuple[RuleSet, dict[str, Any]] | None:
    """The last valid version published before `end`, with its record."""
    latest: tuple[RuleSet, dict[str, Any]] | None = None
    while (await consumer.position(tp)) < end:
        batch = await consumer.getmany(tp, timeout_ms=500)
        for msg in batch.get(tp, []):
            parsed = parse_rules_record(msg.value, metrics)
            if parsed is not None and msg.offset < end:
                latest = parsed[0], orjson.loads(msg.value or b"{}")
    return latest


async def latest_rules(settings: Settings) -> RuleSet | None:
    """The version in force: the last valid one on the rules topic (None: nothing yet)."""
    tp = TopicPartition(settings.topic(RULES), 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        latest = await _history(consumer, tp, end, None)
        return None if latest is None else latest[0]
    finally:
        await consumer.stop()


async def _start_with(settings: Settings, on_rules: OnRules,
                      latest: tuple[RuleSet, dict[str, Any]] | None, seed: Seed | None) -> None:
    if latest is not None:
        rules, record = latest
        where = (f"published {record.get('published_at', '?')} from "
                 f"{record.get('source', '?')}")
        if seed is not None and seed.rules.version != rules.version:
            log.warning("--rules %s (%s) differs from the version on the rules topic, %s (%s), "
                        "which is in force: publish the file (`segmenter rules publish`) to "
                        "roll it out", seed.source, seed.rules.version, rules.version, where)
        else:
            log.info("rules: the latest published version is in force (%s)", where)
        on_rules(rules, False)
    elif seed is not None:
        log.info("rules topic is empty: seeding it with --rules %s (%s)", seed.source,
                 seed.rules.version)
        await publish(settings, seed.text, seed.source, models=seed.rules.file.model_files)
        on_rules(seed.rules, False)
    else:
        log.warning("no rules yet: nothing on %s and no --rules file; waiting for "
                    "`segmenter rules publish`", settings.topic(RULES))


async def publish(settings: Settings, text: str, source: str, quiet: bool = False,
                  models: Mapping[str, bytes] | None = None) -> None:
    """Produce one rules record (acks=all) to the rules topic. `models`: the model files the
    rules use (RuleFile.model_files), carried in the record as text so that every worker
    evaluates the same models, wherever it runs and whatever its working directory."""
    from datetime import UTC, datetime

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        record: dict[str, Any] = {"yaml": text, "source": source, "quiet": quiet,
                                  "published_at": datetime.now(UTC).isoformat()}
        if models:
            record["models"] = {name: raw.decode("utf-8") for name, raw in models.items()}
        await producer.send_and_wait(settings.topic(RULES), orjson.dumps(record), key=b"rules")
    finally:
        await producer.stop()


def parse_rules_record(value: bytes | None,
                       metrics: Metrics | None) -> tuple[RuleSet, bool] | None:
    try:
        record = orjson.loads(value or b"")
        models = record.get("models")  # records published before models were carried: none
        rule_file = load_rules_text(
            record["yaml"], source=record.get("source", "<published>"),
            models=None if models is None else {
                name: text.encode("utf-8") for name, text in models.items()})
        return RuleSet(rule_file), bool(record.get("quiet", False))
    except RuleFileError as exc:
        if metrics is not None:
            metrics.rules_refused.inc()
        log.error("refused a published rule file, keeping the version in force:\n%s", exc)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        if metrics is not None:
            metrics.rules_refused.inc()
        log.error("refused an unreadable record on the rules topic: %s", exc)
    return None
