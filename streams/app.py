"""The Faust application: `create_app(settings)` builds it; there is no module-level app.

The topics and agents are declared here and in `streams.agents`; `segmenter worker` runs the
app. Keys and values travel as raw bytes (UTF-8 customer id, JSON object) and are decoded by
the agents, so the wire format stays in one place.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import faust

from segmenter.errors import TopologyError
from segmenter.settings import Settings
from streams.agents import register_agents

PURCHASES = "purchases"
SEGMENT_CHANGES = "segment-changes"


@dataclass(frozen=True, slots=True)
class Topics:
    """The Faust topics of one app (names carry the settings' topic prefix)."""

    purchases: faust.TopicT
    segment_changes: faust.TopicT


def broker_url(bootstrap: str) -> str:
    """'h1:9092,h2:9092' -> 'kafka://h1:9092;kafka://h2:9092' (Faust's broker syntax)."""
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def worker_datadir(settings: Settings) -> Path:
    """Where this worker keeps its table stores (its parent must exist before it starts)."""
    return settings.state_dir / "worker" / settings.group_id / settings.worker_id


def create_app(settings: Settings) -> faust.App:
    """A Faust app wired to `settings`: topics declared, agents registered."""
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
        web_enabled=settings.web_enabled,
        web_port=settings.web_port or 6066,
        autodiscover=False,
        loghandlers=[],
    )
    topics = declare_topics(app, settings)
    register_agents(app, topics)
    return app


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(name: str) -> faust.TopicT:
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )

    return Topics(purchases=topic(PURCHASES), segment_changes=topic(SEGMENT_CHANGES))


TOPIC_ALREADY_EXISTS = 36  # Kafka error code


async def ensure_topics(
    settings: Settings,
    names: tuple[str, ...] = (PURCHASES, SEGMENT_CHANGES),
    timeout: float = 60.0,
) -> list[str]:
    """Create the app's topics (prefix applied) that do not exist yet and wait until every
    partition has a leader; returns the names of those created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        wanted = [settings.topic(n) for n in names]
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(t, settings.partitions, settings.replication_factor) for t in missing]
            )
            failed = [
                (topic, code)
                for topic, code, *_ in response.topic_errors
                if code not in (0, TOPIC_ALREADY_EXISTS)
            ]
            if failed:
                raise TopologyError(f"could not create topics: {failed}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            described = await admin.describe_topics(wanted)
            if all(
                t["error_code"] == 0
                and t["partitions"]
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return missing
            if loop.time() > deadline:
                raise TopologyError(f"topics {wanted} have no leaders after {timeout:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
