"""HTTP ingest: `POST /v1/events` with one JSON event or an NDJSON batch.

Every event is checked with the engine's validator; a batch is all-or-nothing: if any line is
rejected, nothing is produced and the answer is 400 with every rejected line. Otherwise each
event goes to its topic (`TOPIC_FOR_TYPE`, prefix applied) keyed by customer id, and the answer,
202, is sent only after Kafka acknowledged all of them (acks=all, idempotent producer).
See docs/connectors.md.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.events import EventRules, EventValidator, produce_events
from segmenter.metrics import Metrics
from segmenter.settings import Settings
from streams.events import Event

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1024 * 1024
JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines", "application/jsonlines"})
EVENTS_PATH = "/v1/events"
_READ_CHUNK = 64 * 1024

SETTINGS_KEY = web.AppKey("settings", Settings)
PRODUCER_KEY = web.AppKey("producer", AIOKafkaProducer)
METRICS_KEY = web.AppKey("metrics", Metrics)


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body),
                        content_type="application/json", headers=headers or None)


def create_ingest_app(
    settings: Settings,
    producer: AIOKafkaProducer,
    metrics: Metrics,
    token: str | None,
    max_bytes: int,
    currency: str,
    *,
    check_clock: bool | None = None,
    retention_ms: int | None = None,
    future_tolerance_ms: int | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The ingest web app. `producer` must be started (and stopped) by the caller.

    `token`: the bearer token clients must send (None: no authentication). `check_clock`:
    also reject too_late / too_far_in_future events (default: when the workers use the wall
    clock, `settings.clock == "wall"`, since they would reject those events too)."""
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")
    rules = EventRules(currency)
    if retention_ms is not None:
        rules = EventRules(currency, retention_ms, rules.future_tolerance_ms)
    if future_tolerance_ms is not None:
        rules = EventRules(currency, rules.retention_ms, future_tolerance_ms)
    if check_clock is None:
        check_clock = settings.clock == "wall"
    validator = EventValidator(rules, check_clock=check_clock, clock=clock)
    expected = f"Bearer {token}".encode() if token else None

    def answer(status: int, body: dict[str, Any], **headers: str) -> web.Response:
        metrics.ingest_requests.labels(str(status)).inc()
        return _json(status, body, **headers)

    async def post_events(request: web.Request) -> web.Response:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                challenge = 'Bearer realm="segmenter"'
                if given:
                    challenge += ', error="invalid_token"'
                return answer(401, {"error": "missing or wrong bearer token"},
                              **{"WWW-Authenticate": challenge})
        ctype = request.content_type
        if ctype not in JSON_TYPES and ctype not in NDJSON_TYPES:
            return answer(415, {"error": f"content type {ctype!r} is not accepted: send "
                                         "application/json (one event) or "
                                         "application/x-ndjson (one event a line)"})
        too_big = {"error": f"the body is larger than the limit of {max_bytes} bytes"}
        if request.content_length is not None and request.content_length > max_bytes:
            return answer(413, too_big)
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.read(_READ_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                return answer(413, too_big)
            chunks.append(chunk)
        body = b"".join(chunks)
        lines = [body] if ctype in JSON_TYPES else body.split(b"\n")
        items = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
        if not items:
            return answer(400, {"accepted": 0, "rejected": [], "error": "no events in the body"})
        events: list[tuple[Event, bytes]] = []
        rejected: list[dict[str, Any]] = []
        for number, raw in items:
            result = validator.check_bytes(raw)
            if isinstance(result, Event):
                events.append((result, raw))
            else:
                entry: dict[str, Any] = {"line": number, "reason": str(result.reason),
                                         "message": result.message}
                if result.field is not None:
                    entry["field"] = result.field
                if result.event_id is not None:
                    entry["event_id"] = result.event_id
                rejected.append(entry)
        if rejected:
            metrics.ingest_events.labels("rejected").inc(len(rejected))
            for reason, count in Counter(r["reason"] for r in rejected).items():
                metrics.ingest_rejections.labels(reason).inc(count)
            return answer(400, {"accepted": 0, "rejected": rejected})
        try:
            await produce_events(producer, settings, events)
        except KafkaError as exc:
            log.warning("ingest: Kafka did not acknowledge %d events: %s", len(events), exc)
            return answer(503, {"error": f"Kafka did not acknowledge the events ({exc}); "
                                         "send the batch again"}, **{"Retry-After": "5"})
        metrics.ingest_events.labels("accepted").inc(len(events))
        return answer(202, {"accepted": len(events), "rejected": 0})

    async def health(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=max_bytes + 1)
    app[SETTINGS_KEY] = settings
    app[PRODUCER_KEY] = producer
    app[METRICS_KEY] = metrics
    app.router.add_post(EVENTS_PATH, post_events)
    app.router.add_get("/healthz", health)
    app.router.add_get("/metrics", prometheus)
    return app
