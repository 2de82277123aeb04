"""The Faust app and its walking-skeleton agent: pure checks, then the real worker end to end."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from segmenter.settings import Settings
from streams.agents import placeholder_change
from streams.app import PURCHASES, SEGMENT_CHANGES, broker_url, create_app, ensure_topics
from tests.kafka_helpers import Received, consume_json, create_topics, produce_json, worker_process


def test_broker_url_turns_bootstrap_servers_into_faust_urls() -> None:
    assert broker_url("h1:9092, h2:9093") == "kafka://h1:9092;kafka://h2:9093"


def test_create_app_uses_the_prefix_for_topics_and_group(tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, topic_prefix="x.", state_dir=tmp_path, partitions=3)
    app = create_app(settings)
    assert app.conf.id == "x.segmenter"
    [agent] = app.agents.values()
    assert agent.channel.get_topic_name() == "x.purchases"
    assert app.conf.topic_partitions == 3
    assert create_app(settings) is not app  # no singleton: each call builds a new app


def test_placeholder_change_is_keyed_by_the_message_key() -> None:
    change = placeholder_change(b"c-1", orjson.dumps({"event_id": "e-1", "customer_id": "other"}))
    assert change is not None
    key, value = change
    assert key == b"c-1"
    record = orjson.loads(value)
    assert record["customer_id"] == "c-1"
    assert record["cause"] == {"kind": "event", "event_id": "e-1", "topic": "purchases"}


def test_placeholder_change_falls_back_to_the_customer_id_field() -> None:
    change = placeholder_change(None, orjson.dumps({"customer_id": "c-2"}))
    assert change is not None and change[0] == b"c-2"


@pytest.mark.parametrize(
    "value",
    [b"", b"not json", b"[1, 2]", orjson.dumps({"amount": 3}), orjson.dumps({"customer_id": 7})],
)
def test_placeholder_change_skips_records_without_a_customer(value: bytes) -> None:
    assert placeholder_change(None, value) is None


@pytest.mark.integration
async def test_ensure_topics_creates_prefixed_topics_once(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str
) -> None:
    settings = Settings.from_env(
        env={}, kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{unique}.", partitions=3
    )
    wanted = [f"{unique}.{PURCHASES}", f"{unique}.{SEGMENT_CHANGES}"]
    try:
        assert sorted(await ensure_topics(settings)) == sorted(wanted)
        assert await ensure_topics(settings) == []
        described = await kafka_admin.describe_topics(wanted)
        assert [len(t["partitions"]) for t in described] == [3, 3]
    finally:
        await kafka_admin.delete_topics(wanted)


@pytest.mark.integration
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_worker_turns_purchases_into_segment_changes(
    kafka_bootstrap: str,
    kafka_admin: AIOKafkaAdminClient,
    unique: str,
    tmp_path: Path,
    guarantee: str,
) -> None:
    prefix = f"{unique}."
    topics = [prefix + PURCHASES, prefix + SEGMENT_CHANGES]
    await create_topics(kafka_admin, topics, partitions=2)
    purchases = {
        customer: {
            "event_id": str(uuid.uuid4()),
            "type": "purchase",
            "customer_id": customer,
            "amount": 19.99,
            "currency": "EUR",
        }
        for customer in ("c-7", "c-8")
    }
    env = {
        "SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SEGMENTER_TOPIC_PREFIX": prefix,
        "SEGMENTER_STATE_DIR": str(tmp_path / "state"),
        "SEGMENTER_WEB_PORT": "0",
        "SEGMENTER_PARTITIONS": "2",
        "SEGMENTER_PROCESSING_GUARANTEE": guarantee,
    }
    log = tmp_path / "worker.log"
    try:
        await produce_json(kafka_bootstrap, topics[0], purchases.items())
        async with worker_process(env, log) as worker:
            try:
                received = await consume_json(kafka_bootstrap, topics[1], count=2)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\n--- worker log ---\n{_tail(log)}") from exc
            assert worker.poll() is None, _tail(log)
    finally:
        await kafka_admin.delete_topics(topics)

    by_key: dict[str | None, Received] = {r.key: r for r in received}
    assert set(by_key) == {"c-7", "c-8"}
    for customer, purchase in purchases.items():
        record = by_key[customer].value
        assert record["customer_id"] == customer
        assert record["placeholder"] is True
        assert record["cause"]["event_id"] == purchase["event_id"]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no worker log)"
