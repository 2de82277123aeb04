"""Settings: environment parsing, flag overrides, derived local addresses, validation."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from model.errors import ConfigError
from streams.runtime.settings import ENV_VARS, Settings


def test_defaults_point_at_the_local_services(tmp_path: Path) -> None:
    settings = Settings.from_env(env={})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.kafka_controller_port == 9093
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert not settings.kafka_external and not settings.redis_external
    assert settings.state_dir.is_absolute() and settings.state_dir.name == ".state"


def test_ports_move_the_local_addresses() -> None:
    env = {"SEGMENTER_KAFKA_PORT": "19092", "SEGMENTER_REDIS_PORT": "16379"}
    settings = Settings.from_env(env=env)
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.kafka_controller_port == 19093
    assert settings.redis_url == "redis://127.0.0.1:16379/0"


def test_explicit_addresses_mark_the_services_external() -> None:
    env = {"SEGMENTER_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "SEGMENTER_REDIS_URL": "redis://r:1/2"}
    settings = Settings.from_env(env=env)
    assert settings.kafka_bootstrap == "k1:9092,k2:9092" and settings.kafka_external
    assert settings.redis_url == "redis://r:1/2" and settings.redis_external


def test_flags_override_the_environment_and_none_means_not_given() -> None:
    env = {"SEGMENTER_TOPIC_PREFIX": "env.", "SEGMENTER_PARTITIONS": "8"}
    settings = Settings.from_env(env=env, topic_prefix="flag.", partitions=None)
    assert settings.topic_prefix == "flag."
    assert settings.partitions == 8
    assert settings.topic("purchases") == "flag.purchases"
    assert settings.group_id == "flag.segmenter"


def test_every_variable_is_read() -> None:
    env = {
        "SEGMENTER_KAFKA_BOOTSTRAP": "k:1",
        "SEGMENTER_KAFKA_PORT": "2000",
        "SEGMENTER_KAFKA_CONTROLLER_PORT": "2002",
        "SEGMENTER_REDIS_URL": "redis://r:3/0",
        "SEGMENTER_REDIS_PORT": "3000",
        "SEGMENTER_TOPIC_PREFIX": "p.",
        "SEGMENTER_APP_ID": "app",
        "SEGMENTER_WORKER_ID": "w1",
        "SEGMENTER_WEB_PORT": "0",
        "SEGMENTER_WEB_BIND": "0.0.0.0",
        "SEGMENTER_API_TOKEN": "secret",
        "SEGMENTER_STATE_DIR": "/tmp/somewhere",
        "SEGMENTER_CLOCK": "event",
        "SEGMENTER_RULES": "rules.yaml",
        "SEGMENTER_PROCESSING_GUARANTEE": "at_least_once",
        "SEGMENTER_COMMIT_INTERVAL_MS": "250",
        "SEGMENTER_SESSION_TIMEOUT_MS": "6000",
        "SEGMENTER_REDIS_PREFIX": "view:",
        "SEGMENTER_STORE": "rocksdb://",
        "SEGMENTER_STATE_CACHE": "500",
        "SEGMENTER_PRODUCER_LINGER_MS": "2.5",
        "SEGMENTER_PARTITIONS": "6",
        "SEGMENTER_REPLICATION_FACTOR": "3",
        "SEGMENTER_LOG_LEVEL": "WARNING",
        "SEGMENTER_STARTUP_TIMEOUT": "12.5",
        "SEGMENTER_INPUT_RETENTION_MS": "86400000",
        "SEGMENTER_CHANGES_RETENTION_MS": "-1",
        "SEGMENTER_DEAD_LETTER_RETENTION_MS": "3600000",
        "SEGMENTER_CHANGELOG_COMPACTION_LAG_MS": "600000",
        "SEGMENTER_WEB_HEADER_TIMEOUT": "5",
        "SEGMENTER_INGEST_BODY_TIMEOUT": "7.5",
        "SEGMENTER_INGEST_ACK_TIMEOUT": "3",
        "SEGMENTER_GC_THRESHOLD": "20000",
    }
    assert set(env) == set(ENV_VARS.values())
    s = Settings.from_env(env=env)
    assert (s.kafka_bootstrap, s.kafka_port, s.kafka_controller_port) == ("k:1", 2000, 2002)
    assert (s.redis_url, s.redis_port) == ("redis://r:3/0", 3000)
    assert (s.topic_prefix, s.app_id, s.worker_id) == ("p.", "app", "w1")
    assert s.web_port == 0 and not s.web_enabled
    assert (s.web_bind, s.api_token) == ("0.0.0.0", "secret")
    assert s.state_dir == Path("/tmp/somewhere")
    assert s.clock == "event" and s.rules_path == Path("rules.yaml")
    assert s.processing_guarantee == "at_least_once" and s.store == "rocksdb://"
    assert (s.commit_interval_ms, s.session_timeout_ms, s.redis_prefix) == (250, 6000, "view:")
    assert s.state_cache == 500 and s.producer_linger_ms == 2.5 and s.gc_threshold == 20_000
    assert (s.partitions, s.replication_factor) == (6, 3)
    assert s.log_level == "warning" and s.startup_timeout == 12.5
    assert (s.input_retention_ms, s.changes_retention_ms, s.dead_letter_retention_ms) == (
        86_400_000, -1, 3_600_000)
    assert s.changelog_compaction_lag_ms == 600_000
    assert (s.web_header_timeout, s.ingest_body_timeout, s.ingest_ack_timeout) == (5, 7.5, 3)


def test_retention_is_finite_and_web_servers_loopback_by_default() -> None:
    s = Settings.from_env(env={})
    day = 86_400_000
    assert (s.input_retention_ms, s.changes_retention_ms, s.dead_letter_retention_ms) == (
        30 * day, 30 * day, 14 * day)
    assert s.changelog_compaction_lag_ms == 7 * day
    assert s.web_bind == "127.0.0.1"
    assert (s.web_header_timeout, s.ingest_body_timeout, s.ingest_ack_timeout) == (10, 30, 10)


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("SEGMENTER_KAFKA_PORT", "abc", "SEGMENTER_KAFKA_PORT"),
        ("SEGMENTER_KAFKA_PORT", "70000", "kafka_port"),
        ("SEGMENTER_CLOCK", "sundial", "clock"),
        ("SEGMENTER_STORE", "redis://", "store"),
        ("SEGMENTER_PROCESSING_GUARANTEE", "maybe", "processing_guarantee"),
        ("SEGMENTER_PARTITIONS", "0", "partitions"),
        ("SEGMENTER_STATE_CACHE", "-1", "state_cache"),
        ("SEGMENTER_PRODUCER_LINGER_MS", "5000", "producer_linger_ms"),
        ("SEGMENTER_REDIS_URL", "http://x", "redis_url"),
        ("SEGMENTER_COMMIT_INTERVAL_MS", "5", "commit_interval_ms"),
        ("SEGMENTER_GC_THRESHOLD", "-1", "gc_threshold"),
        ("SEGMENTER_GC_THRESHOLD", "lots", "SEGMENTER_GC_THRESHOLD"),
        ("SEGMENTER_SESSION_TIMEOUT_MS", "100", "session_timeout_ms"),
        ("SEGMENTER_INPUT_RETENTION_MS", "0", "input_retention_ms"),
        ("SEGMENTER_CHANGES_RETENTION_MS", "-2", "changes_retention_ms"),
        ("SEGMENTER_DEAD_LETTER_RETENTION_MS", "1000", "dead_letter_retention_ms"),
        ("SEGMENTER_INGEST_ACK_TIMEOUT", "0", "ingest_ack_timeout"),
        ("SEGMENTER_WEB_HEADER_TIMEOUT", "-1", "web_header_timeout"),
    ],
)
def test_bad_values_raise_config_error(var: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(env={var: value})


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="colour"):
        Settings.from_env(env={}, colour="blue")


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(env={})
    with pytest.raises(FrozenInstanceError):
        settings.partitions = 9  # type: ignore[misc]
    assert settings.with_overrides(partitions=9).partitions == 9
