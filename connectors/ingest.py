"""HTTP ingest: `POST /v1/events` with one JSON event or an NDJSON batch.

Every event is checked with the engine's validator; a batch is all-or-nothing: if any line is
rejected, nothing is produced and the answer is 400 with the first `MAX_LISTED` rejected lines
and the count of all of them by reason. Otherwise each event goes to its topic
(`TOPIC_FOR_TYPE`, prefix applied) keyed by customer id, and the answer, 202, is sent only after
Kafka acknowledged all of them (acks=all, idempotent producer), or 503 when it did not within
`ack_timeout` seconds.

Bounds: the body is read in chunks and refused (413) as soon as it passes `max_bytes`; it must
arrive within `body_timeout` seconds (408); the request line and headers within
`header_timeout` (the server cuts the connection; `serve_ingest`). Validation yields to the
event loop every `_YIELD_EVERY` lines, so a big bad batch never stalls the other requests.
See docs/connectors.md.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.events import EventRules, EventValidator, topic_of
from model.events import Event
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1024 * 1024
JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines", "application/jsonlines"})
EVENTS_PATH = "/v1/events"
MAX_LISTED = 100  # rejected lines listed in a 400 answer (all are counted by reason)
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_ACK_TIMEOUT = 10.0
_READ_CHUNK = 64 * 1024
_YIELD_EVERY = 256  # lines validated between two yields to the event loop

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
    body_timeout: float | None = None,
    ack_timeout: float | None = None,
) -> web.Application:
    """The ingest web app. `producer` must be started (and stopped) by the caller.

    `token`: the bearer token clients must send (None: no authentication). `check_clock`:
    also reject too_late / too_far_in_future events (default: when the workers use the wall
    clock, `settings.clock == "wall"`, since they would reject those events too).
    `body_timeout` / `ack_timeout`: seconds to receive the body (else 408) and for Kafka to
    acknowledge the batch (else 503); default: `settings.ingest_body_timeout` /
    `settings.ingest_ack_timeout`."""
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")
    body_limit = settings.ingest_body_timeout if body_timeout is None else body_timeout
    ack_limit = settings.ingest_ack_timeout if ack_timeout is None else ack_timeout
    if body_limit <= 0 or ack_limit <= 0:
        raise ValueError("body_timeout and ack_timeout must be > 0")
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
        body = await _read_body(request, max_bytes, body_limit)
        if body is None:
            return answer(413, too_big)
        if isinstance(body, float):
            log.info("ingest: a body did not arrive within %.0f s", body)
            response = answer(408, {"error": f"the body did not arrive within {body:g} s"})
            response.force_close()
            return response
        lines = _single(body) if ctype in JSON_TYPES else _lines(body)
        events: list[tuple[Event, bytes]] = []
        listed: list[dict[str, Any]] = []
        reasons: Counter[str] = Counter()
        seen = 0
        for number, raw in lines:
            seen += 1
            if seen % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let the other requests (and /healthz) run
            result = validator.check_bytes(raw)
            if isinstance(result, Event):
                if not reasons:  # once a line is refused nothing is produced: keep no events
                    events.append((result, raw))
                continue
            reasons[str(result.reason)] += 1
            events.clear()
            if len(listed) < MAX_LISTED:
                listed.append(_rejection(number, result))
        if not seen:
            return answer(400, {"accepted": 0, "rejected": [], "rejected_total": 0,
                                "rejected_by_reason": {}, "error": "no events in the body"})
        if reasons:
            total = sum(reasons.values())
            metrics.ingest_events.labels("rejected").inc(total)
            for reason, count in reasons.items():
                metrics.ingest_rejections.labels(reason).inc(count)
            return answer(400, {"accepted": 0, "rejected": listed, "rejected_total": total,
                                "rejected_by_reason": dict(sorted(reasons.items()))})
        try:
            await _produce(producer, settings, events, ack_limit)
        except KafkaError as exc:
            log.warning("ingest: Kafka did not acknowledge %d events: %s", len(events), exc)
            return answer(503, {"error": f"Kafka did not acknowledge the events ({exc}); "
                                         "send the batch again"}, **{"Retry-After": "5"})
        except TimeoutError:
            log.warning("ingest: Kafka did not acknowledge %d events within %g s", len(events),
                        ack_limit)
            return answer(503, {"error": f"Kafka did not acknowledge the events within "
                                         f"{ack_limit:g} s; send the batch again"},
                          **{"Retry-After": "5"})
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


async def serve_ingest(app: web.Application, host: str, port: int, *,
                       header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> web.AppRunner:
    """Start `app` on host:port. A connection that has not sent a complete request line and
    headers within `header_timeout` seconds of connecting (or of its previous response, on a
    kept-alive connection) is closed; an unread rest of a refused body is drained for at most
    a second."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout,
                           lingering_time=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def _read_body(request: web.Request, max_bytes: int,
                     timeout: float) -> bytes | float | None:
    """The body, or None when it passes `max_bytes` (the rest is not read), or `timeout`
    (a float) when it did not arrive in time."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(_READ_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    return None
                chunks.append(chunk)
    except TimeoutError:
        return timeout
    return b"".join(chunks)


def _single(body: bytes) -> Iterator[tuple[int, bytes]]:
    stripped = body.strip()
    if stripped:
        yield 1, stripped


def _lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, stripped line) of each non-blank line, without splitting the whole
    body at once (a body of short lines would be many objects)."""
    start, number, end = 0, 0, len(body)
    while start <= end:
        stop = body.find(b"\n", start)
        if stop < 0:
            stop = end
        number += 1
        line = body[start:stop].strip()
        if line:
            yield number, line
        start = stop + 1


def _rejection(number: int, result: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"line": number, "reason": str(result.reason),
                             "message": result.message}
    if result.field is not None:
        entry["field"] = result.field
    if result.event_id is not None:
        entry["event_id"] = result.event_id
    return entry


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a late failure of an abandoned send: nobody waits for it


async def _produce(producer: AIOKafkaProducer, settings: Settings,
                   events: Sequence[tuple[Event, bytes]], timeout: float) -> None:
    """Send the events keyed by customer id to their topics; return when Kafka acknowledged
    every one. KafkaError when it refused one; TimeoutError when `timeout` seconds passed (the
    sends are not cancelled: the producer may still deliver them later, which is why a client
    sends the batch again and the engine drops repeated event ids)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    futures: list[asyncio.Future[Any]] = []
    timed_out = False
    try:
        async with asyncio.timeout_at(deadline):  # send() waits while it has no metadata
            for event, value in events:
                futures.append(await producer.send(topic_of(settings, event), value,
                                                   key=event.customer_id.encode("utf-8")))
    except TimeoutError:
        timed_out = True
    if not timed_out:
        _, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        timed_out = bool(pending)
    if timed_out:
        for future in futures:
            future.add_done_callback(_retrieve)
        raise TimeoutError
    for future in futures:
        future.result()  # KafkaError when Kafka refused it
