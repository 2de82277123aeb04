"""One frozen settings object, read from `SEGMENTER_*` environment variables and CLI flags.

`Settings.from_env(**overrides)` reads the environment; keyword overrides (CLI flags) win over
the environment, and an override of `None` means "flag not given". Every variable is listed in
`ENV_VARS` and documented in the README.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

from model.errors import ConfigError

Clock = Literal["wall", "event"]
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
LogLevel = Literal["debug", "info", "warning", "error"]

STORES = ("memory://", "rocksdb://")
DEFAULT_KAFKA_PORT = 9092
DEFAULT_REDIS_PORT = 6379

# field name -> environment variable
ENV_VARS: dict[str, str] = {
    "kafka_bootstrap": "SEGMENTER_KAFKA_BOOTSTRAP",
    "kafka_port": "SEGMENTER_KAFKA_PORT",
    "kafka_controller_port": "SEGMENTER_KAFKA_CONTROLLER_PORT",
    "redis_url": "SEGMENTER_REDIS_URL",
    "redis_port": "SEGMENTER_REDIS_PORT",
    "redis_prefix": "SEGMENTER_REDIS_PREFIX",
    "topic_prefix": "SEGMENTER_TOPIC_PREFIX",
    "app_id": "SEGMENTER_APP_ID",
    "worker_id": "SEGMENTER_WORKER_ID",
    "web_port": "SEGMENTER_WEB_PORT",
    "web_bind": "SEGMENTER_WEB_BIND",
    "api_token": "SEGMENTER_API_TOKEN",
    "state_dir": "SEGMENTER_STATE_DIR",
    "clock": "SEGMENTER_CLOCK",
    "rules_path": "SEGMENTER_RULES",
    "processing_guarantee": "SEGMENTER_PROCESSING_GUARANTEE",
    "store": "SEGMENTER_STORE",
    "state_cache": "SEGMENTER_STATE_CACHE",
    "producer_linger_ms": "SEGMENTER_PRODUCER_LINGER_MS",
    "commit_interval_ms": "SEGMENTER_COMMIT_INTERVAL_MS",
    "gc_threshold": "SEGMENTER_GC_THRESHOLD",
    "session_timeout_ms": "SEGMENTER_SESSION_TIMEOUT_MS",
    "partitions": "SEGMENTER_PARTITIONS",
    "replication_factor": "SEGMENTER_REPLICATION_FACTOR",
    "log_level": "SEGMENTER_LOG_LEVEL",
    "startup_timeout": "SEGMENTER_STARTUP_TIMEOUT",
    "input_retention_ms": "SEGMENTER_INPUT_RETENTION_MS",
    "changes_retention_ms": "SEGMENTER_CHANGES_RETENTION_MS",
    "dead_letter_retention_ms": "SEGMENTER_DEAD_LETTER_RETENTION_MS",
    "changelog_compaction_lag_ms": "SEGMENTER_CHANGELOG_COMPACTION_LAG_MS",
    "web_header_timeout": "SEGMENTER_WEB_HEADER_TIMEOUT",
    "ingest_body_timeout": "SEGMENTER_INGEST_BODY_TIMEOUT",
    "ingest_ack_timeout": "SEGMENTER_INGEST_ACK_TIMEOUT",
}

DAY_MS = 86_400_000
# retention.ms is Kafka's: -1 keeps records forever; anything else must be at least a minute
MIN_RETENTION_MS = 60_000


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Segmenter process needs to know about its surroundings."""

    # Kafka: bootstrap servers ("host:port[,host:port...]"). When not given explicitly it is the
    # local broker on 127.0.0.1:kafka_port, which `segmenter local up` starts.
    kafka_bootstrap: str = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
    kafka_external: bool = False
    kafka_port: int = DEFAULT_KAFKA_PORT
    kafka_controller_port: int = DEFAULT_KAFKA_PORT + 1
    # Redis: same idea, redis://127.0.0.1:redis_port/0 unless given explicitly.
    redis_url: str = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"
    redis_external: bool = False
    redis_port: int = DEFAULT_REDIS_PORT
    redis_prefix: str = "segmenter:"  # key prefix of the Redis view
    # Streams.
    topic_prefix: str = ""
    app_id: str = "segmenter"
    worker_id: str = "worker"
    web_port: int = 6066
    web_bind: str = "127.0.0.1"  # address the web server listens on (0.0.0.0 in containers)
    api_token: str = ""  # bearer token required by the HTTP APIs when set
    state_dir: Path = Path(".state")
    clock: Clock = "wall"
    rules_path: Path | None = None
    processing_guarantee: ProcessingGuarantee = "exactly_once"
    store: str = "memory://"
    # RocksDB store: decoded customer states kept in memory besides those changed since the
    # last commit (the most recently written ones); 0 turns it off
    state_cache: int = 20_000
    # how long the worker's producers wait to fill a batch (outside transactions)
    producer_linger_ms: float = 10.0
    # how often each task commits (a transaction with exactly-once): the bound on how long a
    # change waits before consumers see it, and on the work redone after a crash
    commit_interval_ms: int = 100
    # the garbage collector's young-generation threshold (CPython's default is 700; 0 keeps
    # CPython's settings): see streams/runtime/gc_tuning.py
    gc_threshold: int = 50_000
    # a worker that sends no heartbeat for this long is dropped from the group and its
    # partitions move to the others (the broker allows 6,000 to 300,000 by default)
    session_timeout_ms: int = 10_000
    partitions: int = 4
    replication_factor: int = 1
    log_level: LogLevel = "info"
    # Seconds to wait for a local service to come up.
    startup_timeout: float = 90.0
    # retention.ms of the topics Segmenter creates (existing topics are left alone): the input
    # topics and segmenter-rekey (raw events), and the two dead-letter topics; segment-changes
    # is compacted instead, keeping every record this long (min.compaction.lag.ms, see
    # streams.runtime.kafka_admin.topic_configs)
    input_retention_ms: int = 30 * DAY_MS
    changes_retention_ms: int = 30 * DAY_MS
    dead_letter_retention_ms: int = 14 * DAY_MS
    # max.compaction.lag.ms of the customers changelog when created: an erased customer's
    # earlier states are compacted away (behind the erasure's tombstone) within this long
    # (added to changes_retention_ms for segment-changes)
    changelog_compaction_lag_ms: int = 7 * DAY_MS
    # HTTP servers (ingest, dashboard): seconds a client has to send a request's headers after
    # connecting, and that an idle kept-alive connection stays open
    web_header_timeout: float = 10.0
    # HTTP ingest: seconds to receive a whole request body (408 after), and to wait for Kafka to
    # acknowledge a batch (503 after)
    ingest_body_timeout: float = 30.0
    ingest_ack_timeout: float = 10.0

    def __post_init__(self) -> None:
        _check_port("kafka_port", self.kafka_port)
        _check_port("kafka_controller_port", self.kafka_controller_port)
        _check_port("redis_port", self.redis_port)
        if self.web_port != 0:
            _check_port("web_port", self.web_port)
        if self.kafka_port == self.kafka_controller_port:
            raise ConfigError("kafka_port and kafka_controller_port must differ")
        _check_choice("clock", self.clock, get_args(Clock))
        _check_choice(
            "processing_guarantee", self.processing_guarantee, get_args(ProcessingGuarantee)
        )
        _check_choice("log_level", self.log_level, get_args(LogLevel))
        _check_choice("store", self.store, STORES)
        if not 0 <= self.producer_linger_ms <= 1000:
            raise ConfigError(
                f"producer_linger_ms must be 0-1000, got {self.producer_linger_ms}")
        if not 10 <= self.commit_interval_ms <= 60_000:
            raise ConfigError(
                f"commit_interval_ms must be 10-60000, got {self.commit_interval_ms}")
        if not 1000 <= self.session_timeout_ms <= 3_600_000:
            raise ConfigError(
                f"session_timeout_ms must be 1000-3600000, got {self.session_timeout_ms}")
        if self.gc_threshold < 0:
            raise ConfigError(f"gc_threshold must be >= 0, got {self.gc_threshold}")
        if self.state_cache < 0:
            raise ConfigError(f"state_cache must be >= 0, got {self.state_cache}")
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")
        if self.replication_factor < 1:
            raise ConfigError(f"replication_factor must be >= 1, got {self.replication_factor}")
        if self.startup_timeout <= 0:
            raise ConfigError(f"startup_timeout must be > 0, got {self.startup_timeout}")
        for name in ("input_retention_ms", "changes_retention_ms", "dead_letter_retention_ms"):
            value = getattr(self, name)
            if value != -1 and value < MIN_RETENTION_MS:
                raise ConfigError(f"{name} must be -1 (forever) or at least {MIN_RETENTION_MS} "
                                  f"(a minute), got {value}")
        if self.changelog_compaction_lag_ms < MIN_RETENTION_MS:
            raise ConfigError(f"changelog_compaction_lag_ms must be at least {MIN_RETENTION_MS}"
                              f" (a minute), got {self.changelog_compaction_lag_ms}")
        for name in ("web_header_timeout", "ingest_body_timeout", "ingest_ack_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise ConfigError(f"{name} must be > 0 and <= 3600 seconds, "
                                  f"got {getattr(self, name)}")
        if not self.app_id or not self.worker_id:
            raise ConfigError("app_id and worker_id must not be empty")
        if not self.kafka_bootstrap.strip():
            raise ConfigError("kafka_bootstrap must not be empty")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"redis_url must start with redis://, got {self.redis_url!r}")

    @property
    def web_enabled(self) -> bool:
        return self.web_port != 0

    @property
    def group_id(self) -> str:
        """The application id with the prefix: the Kafka consumer group of the workers."""
        return f"{self.topic_prefix}{self.app_id}"

    def topic(self, name: str) -> str:
        """The full name of one of Segmenter's topics (prefix applied)."""
        return f"{self.topic_prefix}{name}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `env` (default: os.environ), then apply non-None overrides."""
        source = os.environ if env is None else env
        unknown = set(overrides) - set(ENV_VARS)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        raw: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            value = source.get(var, "")
            if value != "":
                raw[name] = _parse(name, var, value)
        for name, value in overrides.items():
            if value is not None:
                raw[name] = _coerce(name, f"--{name.replace('_', '-')}", value)

        kafka_port = cast(int, raw.get("kafka_port", DEFAULT_KAFKA_PORT))
        redis_port = cast(int, raw.get("redis_port", DEFAULT_REDIS_PORT))
        raw.setdefault("kafka_controller_port", kafka_port + 1)
        raw["kafka_external"] = "kafka_bootstrap" in raw
        raw.setdefault("kafka_bootstrap", f"127.0.0.1:{kafka_port}")
        raw["redis_external"] = "redis_url" in raw
        raw.setdefault("redis_url", f"redis://127.0.0.1:{redis_port}/0")
        raw.setdefault("worker_id", f"{socket.gethostname()}-{os.getpid()}")
        raw["state_dir"] = Path(raw.get("state_dir", Path(".state"))).absolute()
        return cls(**raw)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(Settings)}


def _parse(name: str, source: str, text: str) -> Any:
    return _coerce(name, source, text.strip())


def _coerce(name: str, source: str, value: Any) -> Any:
    kind = _FIELD_TYPES[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind in ("Path", "Path | None"):
            return Path(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: expected {kind}, got {value!r}") from exc
    if kind in ("LogLevel",) and isinstance(value, str):
        return value.lower()
    return value


def _check_port(name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {port}")


def _check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
