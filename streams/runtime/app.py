"""The worker's topology: topic names, the changelog, and creating the topics.

Topics (names carry the settings' prefix; every partitioned topic has `settings.partitions`
partitions so that all of them are co-partitioned by customer id):
- inputs: purchases, email-events, web-activity, customer-profiles;
- internal: segmenter-rekey (inputs that landed on the wrong partition), the compacted
  `<group>-customers-changelog` (each customer's state; one partition per task) and
  segmenter-members (compacted: which worker owns which partitions, and its URL);
- outputs: segment-changes, segmenter-dead-letters;
- segmenter-rules: compacted, one partition, the published rule files.
"""

from __future__ import annotations

from pathlib import Path

from model.errors import TopologyError
from streams.runtime.kafka_admin import create_and_wait, log_retention, topic_configs
from streams.runtime.settings import Settings

PURCHASES = "purchases"
EMAIL_EVENTS = "email-events"
WEB_ACTIVITY = "web-activity"
CUSTOMER_PROFILES = "customer-profiles"
INPUTS = (PURCHASES, EMAIL_EVENTS, WEB_ACTIVITY, CUSTOMER_PROFILES)
REKEY = "segmenter-rekey"
MEMBERS = "segmenter-members"
SEGMENT_CHANGES = "segment-changes"
DEAD_LETTERS = "segmenter-dead-letters"
RULES = "segmenter-rules"
PARTITIONED = (*INPUTS, REKEY, SEGMENT_CHANGES, DEAD_LETTERS)


def changelog_topic(settings: Settings) -> str:
    """The compacted changelog of the customers table (one partition per task)."""
    return f"{settings.group_id}-customers-changelog"


def worker_datadir(settings: Settings) -> Path:
    """Where this worker keeps its local stores (RocksDB and their checkpoint files)."""
    return settings.state_dir / "worker" / settings.group_id / settings.worker_id


async def ensure_topics(
    settings: Settings,
    names: tuple[str, ...] = PARTITIONED,
    timeout: float = 60.0,
) -> list[str]:
    """Create the topics (prefix applied) that do not exist yet, the compacted internal topics
    too (rules and members: one partition; the customers changelog: one per task), and wait
    until every partition has a leader; returns the names of the partitioned ones created.

    Raises TopologyError when existing topics disagree on their partition count: records of
    one customer would then land on different partitions and its state would split."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        wanted = [settings.topic(n) for n in names]
        changelog = changelog_topic(settings)
        checked = [*wanted, changelog]
        existing = set(await admin.list_topics())
        present = [t for t in checked if t in existing]
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
        # finite retention (SEGMENTER_*_RETENTION_MS) for the topics holding raw events and
        # changes; existing topics are left alone (a log line says when theirs differs)
        new = [NewTopic(t, settings.partitions, settings.replication_factor,
                        topic_configs=topic_configs(settings, t)) for t in missing]
        await log_retention(admin, settings, [t for t in wanted if t in existing])
        compact = {"cleanup.policy": "compact"}
        for topic, count in ((settings.topic(RULES), 1), (settings.topic(MEMBERS), 1),
                             (changelog, settings.partitions)):
            if topic not in existing:
                configs = dict(compact)
                if topic == changelog:  # erased customers' old states compacted away in time
                    configs["max.compaction.lag.ms"] = str(settings.changelog_compaction_lag_ms)
                new.append(NewTopic(topic, count, settings.replication_factor,
                                    topic_configs=configs))
        await create_and_wait(admin, new, checked, timeout)
        return missing
    finally:
        await admin.close()
