"""The Faust application: `create_app(settings, rules, metrics)` builds it; no module-level app.

Topics (names carry the settings' prefix; every partitioned topic has `settings.partitions`
partitions so that all of them are co-partitioned by customer id):
- inputs: purchases, email-events, web-activity, customer-profiles;
- internal: segmenter-rekey (inputs that landed on the wrong partition), segmenter-ticks
  (time-driven and rule re-evaluations, keyed by customer id);
- outputs: segment-changes, segmenter-dead-letters;
- segmenter-rules: compacted, one partition, the published rule files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust

from segmenter.errors import TopologyError
from segmenter.kafka_admin import create_and_wait
from segmenter.metrics import Metrics
from segmenter.settings import Settings

PURCHASES = "purchases"
EMAIL_EVENTS = "email-events"
WEB_ACTIVITY = "web-activity"
CUSTOMER_PROFILES = "customer-profiles"
INPUTS = (PURCHASES, EMAIL_EVENTS, WEB_ACTIVITY, CUSTOMER_PROFILES)
REKEY = "segmenter-rekey"
TICKS = "segmenter-ticks"
SEGMENT_CHANGES = "segment-changes"
DEAD_LETTERS = "segmenter-dead-letters"
RULES = "segmenter-rules"
PARTITIONED = (*INPUTS, REKEY, TICKS, SEGMENT_CHANGES, DEAD_LETTERS)


@dataclass(frozen=True, slots=True)
class Topics:
    """The Faust topics of one app."""

    inputs: faust.TopicT  # every input topic plus rekey and ticks: what the engine agent reads
    rekey: faust.TopicT
    ticks: faust.TopicT
    segment_changes: faust.TopicT
    dead_letters: faust.TopicT


def broker_url(bootstrap: str) -> str:
    """'h1:9092,h2:9092' -> 'kafka://h1:9092;kafka://h2:9092' (Faust's broker syntax)."""
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def worker_datadir(settings: Settings) -> Path:
    """Where this worker keeps its table stores (its parent must exist before it starts)."""
    return settings.state_dir / "worker" / settings.group_id / settings.worker_id


def create_app(settings: Settings, metrics: Metrics | None = None,
               rules_path: Path | None = None) -> faust.App:
    """A Faust app wired to `settings`: topics declared, table and agents registered."""
    from prometheus_client import CollectorRegistry

    from streams.agents import register_agents

    app = faust.App(
        settings.group_id,
        broker=broker_url(settings.kafka_bootstrap),
        store=settings.store,
        processing_guarantee=settings.processing_guarantee,
        datadir=str(worker_datadir(settings)),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_bind,
        autodiscover=False,
        loghandlers=[],
        stream_wait_empty=False,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        table_standby_replicas=0,
    )
    from streams.commit import SafeCommitConsumer, TransactionalConsumer

    cast(Any, app.transport).Consumer = (SafeCommitConsumer
                                         if settings.processing_guarantee == "at_least_once"
                                         else TransactionalConsumer)
    topics = declare_topics(app, settings)
    register_agents(app, topics, settings, metrics or Metrics(CollectorRegistry()), rules_path)
    return app


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(*names: str) -> faust.TopicT:
        return app.topic(
            *(settings.topic(n) for n in names),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )

    return Topics(
        inputs=topic(*INPUTS, REKEY, TICKS),
        rekey=topic(REKEY),
        ticks=topic(TICKS),
        segment_changes=topic(SEGMENT_CHANGES),
        dead_letters=topic(DEAD_LETTERS),
    )


async def ensure_topics(
    settings: Settings,
    names: tuple[str, ...] = PARTITIONED,
    timeout: float = 60.0,
) -> list[str]:
    """Create the topics (prefix applied) that do not exist yet, the compacted rules topic too,
    and wait until every partition has a leader; returns the names of those created.

    Raises TopologyError when existing topics disagree on their partition count: records of
    one customer would then land on different partitions and its state would split."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        wanted = [settings.topic(n) for n in names]
        existing = set(await admin.list_topics())
        present = [t for t in wanted if t in existing]
        if present:
            counts = {t["topic"]: len(t["partitions"])
                      for t in await admin.describe_topics(present)}
            if len(set(counts.values()) | {settings.partitions}) > 1:
                listing = ", ".join(f"{t}={n}" for t, n in sorted(counts.items()))
                raise TopologyError(
                    f"topics must all have {settings.partitions} partitions "
                    f"(SEGMENTER_PARTITIONS), found {listing}. Co-partitioning by customer id "
                    "needs one count: set SEGMENTER_PARTITIONS to the existing count, or add "
                    "partitions with kafka-topics --alter (then rebuild state), or recreate "
                    "the topics.")
        missing = [t for t in wanted if t not in existing]
        new = [NewTopic(t, settings.partitions, settings.replication_factor) for t in missing]
        rules_topic = settings.topic(RULES)
        if rules_topic not in existing:
            new.append(NewTopic(rules_topic, 1, settings.replication_factor,
                                topic_configs={"cleanup.policy": "compact"}))
        await create_and_wait(admin, new, wanted, timeout)
        return missing
    finally:
        await admin.close()
