"""Plumbing shared by the connectors: topic names, Kafka helpers, backoff, signals, logging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from model.errors import SegmenterError, TopologyError
from model.events import TOPIC_FOR_TYPE
from streams.runtime.kafka_admin import create_and_wait, log_retention, topic_configs
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)

SEGMENT_CHANGES = "segment-changes"
WEBHOOK_DEAD_LETTERS = "segmenter-webhook-dead-letters"
INPUT_TOPICS: tuple[str, ...] = tuple(sorted(set(TOPIC_FOR_TYPE.values())))


class Backoff:
    """Capped exponential backoff with jitter: attempt n waits a random time in
    [d/2, d] where d = min(cap, base * 2**(n-1)) ("equal jitter"). `reset()` after a success."""

    def __init__(self, base: float = 0.1, cap: float = 10.0,
                 rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        self.attempt += 1
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt - 1, 62))
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """The wait after failed attempt number `attempt` (1-based), as in `Backoff`."""
    ceiling = min(cap, base * 2 ** min(max(attempt, 1) - 1, 62))
    return rng.uniform(ceiling / 2, ceiling)


def make_producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica (acks=all)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "request_timeout_ms": 30_000,
    }
    options.update(extra)
    return AIOKafkaProducer(**options)


async def ensure_topics(settings: Settings, names: Iterable[str], *, partitions: int | None = None,
                        timeout: float = 60.0) -> list[str]:
    """Create the topics (names as given, no prefix added) that do not exist yet with the
    settings' partition count, replication factor and retention (inputs, segment-changes and
    dead letters: `SEGMENTER_*_RETENTION_MS`), and wait until every partition has a leader.
    Existing topics are left alone. Returns the names created."""
    wanted = list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        count = partitions or settings.partitions
        await log_retention(admin, settings, [t for t in wanted if t in existing])
        await create_and_wait(admin, [NewTopic(t, count, settings.replication_factor,
                                               topic_configs=topic_configs(settings, t))
                                      for t in missing], wanted, timeout)
        return missing
    finally:
        await admin.close()


async def topic_partitions(settings: Settings, topic: str) -> list[int]:
    """The partition ids of an existing topic; TopologyError if it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0 or not described["partitions"]:
        raise TopologyError(f"topic {topic!r} does not exist (error {described['error_code']})")
    return sorted(p["partition"] for p in described["partitions"])


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop` (the first time; a second Ctrl-C still interrupts)."""
    loop = asyncio.get_running_loop()

    def handler(sig: signal.Signals) -> None:
        if stop.is_set():
            loop.remove_signal_handler(sig)
            signal.raise_signal(sig)
            return
        log.info("received %s, stopping", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        # not possible outside the main thread (tests): the caller sets `stop` itself then
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler, sig)


def setup_logging(level: str) -> None:
    """Log lines `time level logger: message` on standard error at `level`."""
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiokafka reports transient states (leaders settling, coordinator moves) loudly; it retries.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL if level != "debug" else logging.DEBUG)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


async def sleep_or_stop(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep `seconds`, waking early when `stop` is set; True if stopping."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


# --------------------------------------------------------------------- command-line plumbing

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(func: F) -> F:
    """The Settings flags every connector command takes (a flag wins over its variable)."""
    options = [
        click.option("--kafka-bootstrap",
                     help="Kafka bootstrap servers [SEGMENTER_KAFKA_BOOTSTRAP]."),
        click.option("--redis-url", help="Redis URL [SEGMENTER_REDIS_URL]."),
        click.option("--topic-prefix", help="Prefix of every topic [SEGMENTER_TOPIC_PREFIX]."),
        click.option("--partitions", type=int,
                     help="Partitions of topics created here [SEGMENTER_PARTITIONS]."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                     help="Log level [SEGMENTER_LOG_LEVEL]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


SETTINGS_FLAGS = ("kafka_bootstrap", "redis_url", "topic_prefix", "partitions", "log_level")


def settings_from_flags(flags: dict[str, Any]) -> Settings:
    """Settings from the environment and the `settings_options` flags (removed from `flags`)."""
    overrides = {name: flags.pop(name, None) for name in SETTINGS_FLAGS}
    try:
        return Settings.from_env(**overrides)
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc


# What a connector command reports as a one-line error instead of a traceback.
def service_errors() -> tuple[type[BaseException], ...]:
    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisError

    return (SegmenterError, KafkaError, RedisError, OSError)


def run_command(main: Callable[[], Any]) -> Any:
    """asyncio.run(main()), turning service failures into a click error (exit 1)."""
    try:
        return asyncio.run(main())
    except service_errors() as exc:
        text = str(exc) or type(exc).__name__
        raise click.ClickException(text) from exc


def start_metrics_server(port: int, registry: CollectorRegistry, host: str) -> None:
    """Serve /metrics of `registry` on host:port (0: do nothing); `host` is
    `settings.web_bind` (SEGMENTER_WEB_BIND, loopback by default)."""
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=registry)
        log.info("metrics on http://%s:%d/metrics", host, port)
