"""Webhooks: POST matching segment changes to HTTP endpoints, signed, in order per customer.

The connectors file (YAML, `SEGMENTER_CONNECTORS`) lists the endpoints, each with a filter, a
secret and delivery options. Each endpoint has its own Kafka consumer group and its own lanes
(`lanes` queues keyed by a hash of the customer id): a slow or failing endpoint holds back only
itself, and a customer's changes reach an endpoint in `seq` order. A failed attempt is retried
with capped exponential backoff and jitter; after `max_attempts` the change goes to the
dead-letter topic with the last status. Offsets are committed only for changes whose delivery
(or dead letter) is finished, so a restart re-delivers what was in flight: receivers
de-duplicate with the `X-Segmenter-Delivery` header. See docs/connectors.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib.metadata
import logging
import os
import random
import re
import ssl
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from connectors.changes import ChangeRecord, decode_change
from connectors.common import Backoff, backoff_delay
from model.changes import format_ts
from model.errors import ChangeRecordError, ConnectorConfigError
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)


def _version() -> str:
    """The installed package's version, for the User-Agent header."""
    try:
        return importlib.metadata.version("segmenter")
    except importlib.metadata.PackageNotFoundError:
        return "dev"

SIGNATURE_HEADER = "X-Segmenter-Signature"
DELIVERY_HEADER = "X-Segmenter-Delivery"
TIMESTAMP_HEADER = "X-Segmenter-Timestamp"
ATTEMPT_HEADER = "X-Segmenter-Attempt"
EVENT_HEADER = "X-Segmenter-Event"
DELIVERY_NAMESPACE = uuid.UUID("6f6b1d52-8a51-4c36-9a0e-3f1d2b1c5e77")
DIRECTIONS = ("entered", "exited")
PIPELINE_MOVE = "pipeline_move"  # `on: [pipeline_move]`: changes that move a customer's pipeline
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_RESPONSE_BYTES = 64 * 1024


# ---------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """One endpoint of the connectors file."""

    name: str
    url: str
    secret: bytes = field(repr=False)
    segments: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    on: frozenset[str] = frozenset(DIRECTIONS)
    timeout: float = 5.0  # seconds per attempt
    max_attempts: int = 8
    verify_tls: bool = True
    ca_file: str | None = None
    backoff: float = 1.0  # seconds before the 2nd attempt (then doubling, with jitter)
    max_backoff: float = 300.0
    lanes: int = 8  # concurrent deliveries; a customer always uses the same lane
    start: str = "latest"  # where a new consumer group starts: latest | earliest
    headers: Mapping[str, str] = field(default_factory=dict)
    quiet: bool = False  # also deliver the changes of quiet rule roll-outs
    pipelines: frozenset[str] = frozenset()  # pipeline moves from or to these pipelines
    include_control: bool = False  # also deliver held-out (control group) customers' entries

    def wants(self, change: ChangeRecord, segment: str) -> bool:
        if not self.segments and not self.groups:
            return not self.pipelines  # `pipelines:` alone: pipeline moves only
        if segment in self.segments:
            return True
        return bool(self.groups) and change.group_of(segment) in self.groups

    def matches(self, change: ChangeRecord) -> bool:
        """True if the change has an entry or exit this endpoint subscribes to (a quiet rule
        roll-out's change only if the endpoint asks for those)."""
        if change.quiet and not self.quiet:
            return False
        held = change.control if not self.include_control else frozenset()
        if "entered" in self.on and any(self.wants(change, s) for s in change.entered
                                        if s not in held):
            return True
        if "exited" in self.on and any(self.wants(change, s) for s in change.exited
                                       if s not in held):
            return True
        return self._pipeline_move(change, held)

    def _pipeline_move(self, change: ChangeRecord, held: frozenset[str]) -> bool:
        """A pipeline move this endpoint asked for (`on: [pipeline_move]` or `pipelines:`),
        unless only held-out segments caused it."""
        move = change.pipeline
        if move is None or (PIPELINE_MOVE not in self.on and not self.pipelines):
            return False
        if self.pipelines and move.get("from") not in self.pipelines \
                and move.get("to") not in self.pipelines:
            return False
        caused_by = {*change.entered, *change.exited}
        return not caused_by or not caused_by <= held

    @property
    def safe_url(self) -> str:
        """The URL without user info or query (for logs and dead letters)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class ConnectorsConfig:
    webhooks: tuple[WebhookEndpoint, ...] = ()


ENDPOINT_KEYS = ("name", "url", "secret", "secret_env", "segments", "groups", "on", "timeout",
                 "max_attempts", "verify_tls", "ca_file", "backoff", "max_backoff", "lanes",
                 "start", "headers", "quiet", "pipelines", "include_control")


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or text such as 500ms, 5s, 2m, 1h."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"not a duration (e.g. 5s, 500ms, 2m): {value!r}")
    if seconds <= 0:
        raise ValueError(f"a duration must be > 0, got {value!r}")
    return seconds


def _string_list(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of names")
    return frozenset(value)


def parse_connectors_config(data: object, source: str = "<connectors>",
                            env: Mapping[str, str] | None = None) -> ConnectorsConfig:
    """Check a decoded connectors file; ConnectorConfigError lists every problem."""
    env = os.environ if env is None else env
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConnectorConfigError(source, ["the file must be a mapping with a 'webhooks' list"])
    for key in data:
        if key not in ("webhooks",):
            problems.append(f"unknown key {key!r} (known: webhooks)")
    raw = data.get("webhooks") or []
    if not isinstance(raw, list):
        raise ConnectorConfigError(source, ["'webhooks' must be a list of endpoints"])
    endpoints: list[WebhookEndpoint] = []
    names: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"webhooks[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        if True in entry and "on" not in entry:  # YAML 1.1 reads a bare `on:` key as true
            entry = {("on" if k is True else k): v for k, v in entry.items()}
        before = len(problems)

        def problem(text: str, where: str = where) -> None:
            problems.append(f"{where}: {text}")

        for key in entry:
            if key not in ENDPOINT_KEYS:
                problem(f"unknown key {key!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            problem("'name' is required: letters, digits, '_', '.', '-' (up to 64)")
            name = f"#{index}"
        elif name in names:
            problem(f"endpoint name {name!r} is used twice")
        names.add(name)
        url = entry.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            problem("'url' must be an http:// or https:// URL")
        secret = entry.get("secret")
        secret_env = entry.get("secret_env")
        if secret is not None and secret_env is not None:
            problem("give either 'secret' or 'secret_env', not both")
        if secret_env is not None:
            secret = env.get(str(secret_env)) or None
            if secret is None:
                problem(f"environment variable {secret_env!r} (secret_env) is not set")
        elif not isinstance(secret, str) or not secret:
            problem("'secret' (or 'secret_env') is required: the key of the HMAC signature")
        options: dict[str, Any] = {}
        for key, parse in (("segments", _string_list), ("groups", _string_list),
                           ("on", _string_list), ("pipelines", _string_list)):
            if key in entry:
                try:
                    options[key] = parse(entry[key])
                except ValueError as exc:
                    problem(f"'{key}' {exc}")
        if "on" in options and (not options["on"]
                                or not options["on"] <= {*DIRECTIONS, PIPELINE_MOVE}):
            problem(f"'on' must list entered, exited and/or {PIPELINE_MOVE}")
        for key in ("timeout", "backoff", "max_backoff"):
            if key in entry:
                try:
                    options[key] = parse_duration(entry[key])
                except ValueError as exc:
                    problem(f"'{key}': {exc}")
        for key, low, high in (("max_attempts", 1, 100), ("lanes", 1, 1024)):
            if key in entry:
                value = entry[key]
                if type(value) is not int or not low <= value <= high:
                    problem(f"'{key}' must be an integer between {low} and {high}")
                else:
                    options[key] = value
        for key in ("quiet", "include_control"):
            if key in entry:
                if not isinstance(entry[key], bool):
                    problem(f"'{key}' must be true or false")
                else:
                    options[key] = entry[key]
        if "verify_tls" in entry:
            if not isinstance(entry["verify_tls"], bool):
                problem("'verify_tls' must be true or false")
            else:
                options["verify_tls"] = entry["verify_tls"]
        if "ca_file" in entry:
            if not isinstance(entry["ca_file"], str):
                problem("'ca_file' must be a path")
            else:
                options["ca_file"] = entry["ca_file"]
        if "start" in entry:
            if entry["start"] not in ("latest", "earliest"):
                problem("'start' must be latest or earliest")
            else:
                options["start"] = entry["start"]
        if "headers" in entry:
            headers = entry["headers"]
            if not isinstance(headers, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
                problem("'headers' must map header names to text")
            else:
                options["headers"] = dict(headers)
        if len(problems) > before:
            continue
        endpoint = WebhookEndpoint(name=str(name), url=str(url),
                                   secret=str(secret).encode("utf-8"), **options)
        if endpoint.max_backoff < endpoint.backoff:
            problem("'max_backoff' must be at least 'backoff'")
            continue
        endpoints.append(endpoint)
    if problems:
        raise ConnectorConfigError(source, problems)
    return ConnectorsConfig(webhooks=tuple(endpoints))


def load_connectors_config(path: str | Path,
                           env: Mapping[str, str] | None = None) -> ConnectorsConfig:
    """Read and check a connectors file (YAML)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConnectorConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConnectorConfigError(str(path), [f"invalid YAML: {exc}"]) from exc
    return parse_connectors_config(data, str(path), env)


# ---------------------------------------------------------------------- signing


def sign(secret: bytes, body: bytes) -> str:
    """The X-Segmenter-Signature value: 'sha256=' + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def delivery_id(endpoint: str, change: ChangeRecord) -> str:
    """Stable per (endpoint, change): the same on every retry and re-delivery."""
    text = f"{endpoint}\x00{change.customer_id}\x00{change.seq}\x00{change.at}"
    return str(uuid.uuid5(DELIVERY_NAMESPACE, text))


# ---------------------------------------------------------------------- dead letters


class DeadLetterSink(Protocol):
    async def send(self, key: bytes, value: bytes) -> None: ...


class KafkaDeadLetters:
    """Writes dead letters to a topic; retries (with backoff) until Kafka acknowledged."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, key: bytes, value: bytes) -> None:
        backoff = Backoff(0.2, 10.0)
        while True:
            try:
                await self.producer.send_and_wait(self.topic, value, key=key)
                return
            except KafkaError as exc:
                delay = backoff.next_delay()
                log.warning("dead letter to %s failed (%s); retry in %.1f s", self.topic, exc,
                            delay)
                await asyncio.sleep(delay)


def dead_letter_record(endpoint: WebhookEndpoint, change: ChangeRecord, result: DeliveryResult,
                       at_ms: int) -> bytes:
    return orjson.dumps({
        "endpoint": endpoint.name,
        "url": endpoint.safe_url,
        "delivery_id": delivery_id(endpoint.name, change),
        "attempts": result.attempts,
        "last_status": result.status,
        "last_error": result.error,
        "failed_at": format_ts(at_ms),
        "change": change.wire,
    })


# ---------------------------------------------------------------------- delivery


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    attempts: int
    status: int | None  # HTTP status of the last attempt (None: no answer)
    error: str | None  # what went wrong in the last attempt


@dataclass(slots=True)
class _Job:
    change: ChangeRecord
    body: bytes
    done: Callable[[], None] | None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class EndpointDispatcher:
    """Delivers changes to one endpoint: `lanes` ordered queues keyed by customer, retries with
    backoff and jitter, dead letters after `max_attempts`."""

    def __init__(
        self,
        endpoint: WebhookEndpoint,
        dead_letters: DeadLetterSink,
        *,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.dead_letters = dead_letters
        self.metrics = metrics
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._queues: list[asyncio.Queue[_Job]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True
        self.in_flight = 0

    async def start(self) -> None:
        ep = self.endpoint
        if not ep.verify_tls:
            self._ssl = False
        elif ep.ca_file:
            self._ssl = await asyncio.to_thread(ssl.create_default_context, cafile=ep.ca_file)
        connector = aiohttp.TCPConnector(limit=ep.lanes, limit_per_host=ep.lanes)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": f"segmenter-webhooks/{_version()}"})
        self._queues = [asyncio.Queue() for _ in range(ep.lanes)]
        self._tasks = [asyncio.create_task(self._lane(q), name=f"webhook-{ep.name}-{i}")
                       for i, q in enumerate(self._queues)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> EndpointDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def lane_of(self, customer_id: str) -> int:
        return zlib.crc32(customer_id.encode("utf-8")) % self.endpoint.lanes

    def submit(self, change: ChangeRecord, body: bytes,
               done: Callable[[], None] | None = None) -> None:
        """Queue a change (never blocks); `done()` runs once it is delivered or dead-lettered."""
        if not self._queues:
            raise RuntimeError("dispatcher not started")
        self.in_flight += 1
        self._gauge()
        self._queues[self.lane_of(change.customer_id)].put_nowait(_Job(change, body, done))

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued change is finished; False if `timeout` ran out first."""
        try:
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), timeout)
        except TimeoutError:
            return False
        return True

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.webhook_in_flight.labels(self.endpoint.name).set(self.in_flight)

    async def _lane(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            job = await queue.get()
            try:
                await self.deliver(job.change, job.body)
                self.in_flight -= 1
                self._gauge()
                if job.done is not None:
                    job.done()
            except Exception:  # a bug: keep the lane alive, the change stays uncommitted
                log.exception("webhook %s: unexpected error", self.endpoint.name)
            finally:
                queue.task_done()

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(self.endpoint.name, outcome).inc()

    async def deliver(self, change: ChangeRecord, body: bytes) -> DeliveryResult:
        """POST one change until it succeeds or `max_attempts` failed (then dead-letter it)."""
        ep = self.endpoint
        did = delivery_id(ep.name, change)
        result = DeliveryResult(False, 0, None, None)
        for attempt in range(1, ep.max_attempts + 1):
            status, error, retry_after = await self._attempt(body, did, attempt)
            result = DeliveryResult(status is not None and 200 <= status < 300, attempt, status,
                                    error)
            if result.ok:
                self._count("ok")
                return result
            if attempt == ep.max_attempts:
                break
            self._count("retry")
            delay = backoff_delay(attempt, ep.backoff, ep.max_backoff, self._rng)
            if retry_after is not None:
                delay = max(delay, min(retry_after, ep.max_backoff))
            log.info("webhook %s: attempt %d of delivery %s failed (%s); retry in %.2f s",
                     ep.name, attempt, did, error or status, delay)
            await self._sleep(delay)
        self._count("failed")
        log.warning("webhook %s: delivery %s failed %d times (last: %s); dead-lettering",
                    ep.name, did, result.attempts, result.error or result.status)
        record = dead_letter_record(ep, change, result, int(self._clock() * 1000))
        await self.dead_letters.send(change.customer_id.encode("utf-8"), record)
        self._count("dead_lettered")
        return result

    async def _attempt(self, body: bytes, did: str, attempt: int
                       ) -> tuple[int | None, str | None, float | None]:
        ep = self.endpoint
        assert self._session is not None, "dispatcher not started"
        headers = {
            **ep.headers,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(ep.secret, body),
            DELIVERY_HEADER: did,
            TIMESTAMP_HEADER: str(int(self._clock())),
            ATTEMPT_HEADER: str(attempt),
            EVENT_HEADER: "segment-change",
        }
        began = time.perf_counter()
        try:
            async with self._session.post(
                    ep.url, data=body, headers=headers, ssl=self._ssl, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=ep.timeout)) as response:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    await response.content.read(MAX_RESPONSE_BYTES)
                status = response.status
                error = None if 200 <= status < 300 else f"HTTP {status}"
                return status, error, _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            return None, f"timeout after {ep.timeout:g} s", None
        except aiohttp.ClientSSLError as exc:
            return None, f"TLS error: {exc}", None
        except (aiohttp.ClientError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        finally:
            if self.metrics is not None:
                self.metrics.webhook_latency.labels(ep.name).observe(time.perf_counter() - began)


# ---------------------------------------------------------------------- the Kafka side


class PartitionProgress:
    """Offsets of one partition handed out and finished; the committable offset is the first
    unfinished one (or the one after the last, when all are finished)."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._finished: set[int] = set()
        self._next: int | None = None

    def add(self, offset: int) -> None:
        self._pending.append(offset)
        self._next = offset + 1

    def finish(self, offset: int) -> None:
        self._finished.add(offset)
        while self._pending and self._pending[0] in self._finished:
            self._finished.discard(self._pending.popleft())

    def committable(self) -> int | None:
        if self._pending:
            return self._pending[0]
        return self._next


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: EndpointConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner.commit()
        for tp in revoked:
            self.owner.progress.pop(tp, None)
            self.owner.committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class EndpointConsumer:
    """Reads the changes topic for one endpoint (its own consumer group) and feeds its
    dispatcher; pauses reading while `max_in_flight` changes are queued."""

    def __init__(self, settings: Settings, dispatcher: EndpointDispatcher, topic: str,
                 group_id: str, *, max_in_flight: int = 1000, drain_timeout: float = 10.0
                 ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.endpoint = dispatcher.endpoint
        self.topic = topic
        self.group_id = group_id
        self.max_in_flight = max_in_flight
        self.drain_timeout = drain_timeout
        self.progress: dict[TopicPartition, PartitionProgress] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.matched = 0
        self.skipped = 0
        self._consumer: AIOKafkaConsumer | None = None

    async def commit(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets = {}
        for tp, progress in self.progress.items():
            offset = progress.committable()
            if offset is not None and self.committed.get(tp) != offset:
                offsets[tp] = offset
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("webhook %s: offset commit failed (%s); changes may be delivered "
                        "again", self.endpoint.name, exc)
            return
        self.committed.update(offsets)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.endpoint.start,
            isolation_level="read_committed",
        )
        consumer.subscribe([self.topic], listener=_Listener(self))
        await consumer.start()
        self._consumer = consumer
        paused = False
        try:
            if ready is not None:
                ready.set()
            while not stop.is_set():
                if self.dispatcher.in_flight >= self.max_in_flight:
                    consumer.pause(*consumer.assignment())  # keep polling: stay in the group
                    paused = True
                elif paused:
                    consumer.resume(*consumer.assignment())
                    paused = False
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                for tp, messages in batch.items():
                    progress = self.progress.setdefault(tp, PartitionProgress())
                    for msg in messages:
                        progress.add(msg.offset)
                        self._handle(progress, msg)
                await self.commit()
            if not await self.dispatcher.drain(self.drain_timeout):
                log.warning("webhook %s: stopping with deliveries in flight; they will be "
                            "delivered again on the next start", self.endpoint.name)
            await self.commit()
        finally:
            self._consumer = None
            await consumer.stop()

    def _handle(self, progress: PartitionProgress, msg: Any) -> None:
        if msg.value is None:  # the tombstone after an erasure's change: nothing to deliver
            progress.finish(msg.offset)
            return
        try:
            change = decode_change(msg.value, msg.key)
        except ChangeRecordError as exc:
            log.error("webhook %s: skipping invalid segment change at %s[%d]@%d: %s",
                      self.endpoint.name, msg.topic, msg.partition, msg.offset, exc)
            progress.finish(msg.offset)
            return
        if not self.endpoint.matches(change):
            self.skipped += 1
            progress.finish(msg.offset)
            return
        self.matched += 1
        offset = msg.offset
        self.dispatcher.submit(change, msg.value, lambda: progress.finish(offset))


async def run_webhooks(settings: Settings, config: ConnectorsConfig, *, topic: str,
                       dead_letter_topic: str, stop: asyncio.Event,
                       metrics: Metrics | None = None, group_prefix: str | None = None,
                       ready: asyncio.Event | None = None) -> None:
    """Run one consumer + dispatcher per endpoint until `stop` is set."""
    from connectors.common import make_producer

    group_prefix = settings.topic("segmenter-webhooks.") if group_prefix is None else group_prefix
    producer = make_producer(settings)
    await producer.start()
    dispatchers: list[EndpointDispatcher] = []
    try:
        sink = KafkaDeadLetters(producer, dead_letter_topic)
        consumers = []
        for endpoint in config.webhooks:
            dispatcher = EndpointDispatcher(endpoint, sink, metrics=metrics)
            await dispatcher.start()
            dispatchers.append(dispatcher)
            consumers.append(EndpointConsumer(settings, dispatcher, topic,
                                              f"{group_prefix}{endpoint.name}"))
        readies = [asyncio.Event() for _ in consumers]
        tasks = [asyncio.create_task(c.run(stop, r)) for c, r in zip(consumers, readies,
                                                                     strict=True)]

        async def all_ready() -> None:
            await asyncio.gather(*(r.wait() for r in readies))
            if ready is not None:
                ready.set()

        waiter = asyncio.create_task(all_ready())
        try:
            await asyncio.gather(*tasks)
        finally:
            waiter.cancel()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for dispatcher in dispatchers:
            await dispatcher.close()
        await producer.stop()


__all__ = [
    "ConnectorsConfig", "DeliveryResult", "EndpointConsumer", "EndpointDispatcher",
    "KafkaDeadLetters", "WebhookEndpoint", "delivery_id", "load_connectors_config",
    "parse_connectors_config", "parse_duration", "run_webhooks", "sign",
    "verify_signature",
]
