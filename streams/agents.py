"""Faust agents, timers, tasks and pages. Each is thin: decode, call the Processor, send.

- `segmenter` agent: every input topic, re-keyed inputs and ticks (one co-partitioned stream,
  concurrency 1: a customer's records are handled strictly in order);
- `fire_due` timer: per assigned partition, ticks for the customers whose due instant passed;
- `watch_rules` task: follows the compacted rules topic and switches rule versions live;
- pages: /metrics (Prometheus), /healthz, /readyz.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import faust
import orjson
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rules.loader import load_rules, load_rules_text
from rules.ruleset import RuleSet
from segmenter.errors import RuleFileError
from segmenter.metrics import Metrics
from segmenter.settings import Settings
from streams.app import INPUTS, REKEY, RULES, TICKS
from streams.contiguity import Contiguity, Verdict
from streams.events import Event, Rejection, parse_event
from streams.merge import TimestampMerger
from streams.processor import Output, Processor, Send, partition_for

if TYPE_CHECKING:
    from streams.app import Topics

log = logging.getLogger(__name__)
FLUSH = b"f"


class Runtime:
    """What the agents share inside one worker process."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.processor: Processor | None = None
        self.ready = asyncio.Event()
        self.assigned: frozenset[int] = frozenset()
        self.ready_partitions: set[int] = set()  # assigned and derived from the table
        self.rules_ticks_pending = False
        self.epoch = 0  # rebalances seen (partitions revoked)
        self._redis: Any = None

    def redis_client(self) -> Any:
        """One pooled Redis client for the pages (created on first use; a connection is made
        per request only when the pool has none free)."""
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(self.settings.redis_url, socket_timeout=0.5,
                                            socket_connect_timeout=0.5)
        return self._redis

    def use_rules(self, rules: RuleSet, quiet: bool = False) -> None:
        if self.processor is None:
            self.processor = Processor(rules, partitions=self.settings.partitions,
                                       worker_id=self.settings.worker_id,
                                       clock=self.settings.clock,
                                       sources=tuple(self.settings.topic(t)
                                                     for t in (*INPUTS, REKEY, TICKS)),
                                       state_cache=(self.settings.state_cache
                                                    if self.settings.store == "memory://"
                                                    else 0))
        else:
            if rules.version == self.processor.rules.version:
                return
            self.processor.switch_rules(rules, quiet)
            self.rules_ticks_pending = True
        self.metrics.rules_info.clear()
        self.metrics.rules_info.labels(rules.file.name, rules.version).set(1)
        log.info("rules %s (%s) in force", rules.file.name, rules.version)
        self.ready.set()


def register_agents(app: faust.App, topics: Topics, settings: Settings, metrics: Metrics,
                    rules_path: Path | None = None) -> Runtime:
    rt = Runtime(settings, metrics)
    table = app.Table("customers", key_type=bytes, value_type=bytes,
                      partitions=settings.partitions)
    cast(Any, table).key_serializer = "raw"  # the codec's bytes as they are
    cast(Any, table).value_serializer = "raw"
    sinks = {"changes": topics.segment_changes, "dead_letters": topics.dead_letters,
             "rekey": topics.rekey, "ticks": topics.ticks}
    ticks_topic = settings.topic(TICKS)
    path = rules_path or settings.rules_path
    if path is not None:
        rt.use_rules(RuleSet(load_rules(path)))

    def get(cid: str) -> bytes | None:
        value: bytes | None = table.get(cid.encode())
        return value

    async def send(s: Send) -> None:
        await sinks[s.topic].send(key=s.key, value=s.value, partition=s.partition)

    async def handle(m: Any, parsed: Event | Rejection | None = None) -> None:
        proc = rt.processor
        assert proc is not None
        started = time.perf_counter()
        if m.topic == ticks_topic:
            out = proc.on_tick(m.key, m.value, partition=m.partition, get=get,
                               topic=m.topic, offset=m.offset)
        else:
            out = proc.on_input(m.key, m.value, topic=m.topic, partition=m.partition,
                                offset=m.offset, get=get, parsed=parsed)
        metrics.evaluation.observe(time.perf_counter() - started)
        if out.write and out.customer_id is not None:
            key = out.customer_id.encode()
            if out.state is None:
                table.pop(key, None)
            else:
                table[key] = out.state
        for s in out.sends:
            await send(s)
        done[(m.topic, m.partition)] = m.offset
        _count(metrics, m, out, m.topic == ticks_topic)

    done: dict[tuple[str, int], int] = {}  # last offset handled per input partition
    merger = TimestampMerger(idle_ms=5000)  # a source's first fetch after an assignment can
    # take seconds; proceeding without it would apply its records late
    sources = tuple(settings.topic(t) for t in (*INPUTS, REKEY))
    seen: dict[tuple[str, int], int] = {}

    def drained(partition: int) -> Any:
        def check(topic: str) -> bool | None:
            hw = _highwater(app, topic, partition)
            if hw is None:
                return None  # not fetched yet: its end is unknown
            return seen.get((topic, partition), -1) + 1 >= hw
        return check

    def prepare(partition: int) -> None:
        if partition not in rt.ready_partitions and rt.processor is not None:
            # first record of a partition since it was assigned: derive its due index and
            # event clock from the (recovered) table before anything is applied
            _rebuild(rt.processor, table, frozenset({partition}), settings.partitions, metrics)
            rt.ready_partitions.add(partition)

    contiguity = Contiguity()

    def admitted(m: Any) -> bool:
        """Whether the agent takes this record now (see streams/contiguity.py); a record read
        again is acked, one after a hole is left unacked while the hole is read again."""
        key = (m.topic, m.partition)
        if contiguity.next_offset(key) == m.offset:
            return True
        tp = TP(m.topic, m.partition)
        adm = contiguity.admit(key, m.offset, time.monotonic() * 1000, _committed(app, tp))
        v = adm.verdict
        if v is Verdict.HANDLE:
            return True
        if v is Verdict.OLD:
            cast(Any, app.consumer).ack(m)
            return False
        if v is Verdict.PAUSE and _known_gap(app, tp, cast(int, adm.expected)):
            contiguity.accept_gap(key)  # a transaction marker: normal with such producers
            v = Verdict.ACCEPT_GAP
        elif v is Verdict.ACCEPT_GAP:
            log.warning("%s[%d]: no record at offset %s (retention?) after %d seeks; going on "
                        "from %d", m.topic, m.partition, adm.expected, contiguity.max_seeks,
                        m.offset)
        if v is Verdict.ACCEPT_GAP:
            metrics.input_gaps.labels(m.topic, "accepted").inc()
            return True
        if v is Verdict.PAUSE:
            log.warning("%s[%d]: offset %s was not delivered (got %d); pausing the partition "
                        "to read it again", m.topic, m.partition, adm.expected, m.offset)
            metrics.input_gaps.labels(m.topic, "seek").inc()
            app.consumer.pause_partitions([tp])
        return False

    async def reread_holes() -> None:
        for (topic, partition), offset in contiguity.due_seeks(time.monotonic() * 1000):
            tp = TP(topic, partition)
            if tp in app.consumer.assignment():
                await app.consumer.seek(tp, offset)
                app.consumer.resume_partitions([tp])
        metrics.input_holes.set(contiguity.waiting())

    @app.agent(topics.inputs, name="segmenter", concurrency=1)
    async def segmenter(stream: faust.StreamT[bytes]) -> None:
        await rt.ready.wait()
        if settings.clock != "event":  # wall clock: records are handled as they come
            async for event in cast(Any, stream).noack().events():
                m = event.message
                if not admitted(m):
                    continue
                prepare(m.partition)
                if not (m.topic == ticks_topic and m.value == FLUSH):
                    await handle(m)
                contiguity.handled((m.topic, m.partition), m.offset)
                event.ack()
            return
        # event clock: inputs are buffered and merged in event-time order, acked by hand
        async for event in cast(Any, stream).noack().events():
            m = event.message
            if not admitted(m):
                continue
            contiguity.handled((m.topic, m.partition), m.offset)  # pushed or handled below
            prepare(m.partition)
            is_tick = m.topic == ticks_topic
            parsed: Event | Rejection | None = None
            if not is_tick and rt.processor is not None:
                # ordered by event time; undecodable records go straight to the processor
                seen[(m.topic, m.partition)] = m.offset
                parsed = parse_event(m.value or b"",
                                     currency=rt.processor.rules.settings.currency)
            if isinstance(parsed, Event):
                merger.push(m.partition, m.topic, parsed.ts, (event, parsed))
            else:
                if not (is_tick and m.value == FLUSH):
                    await handle(m, parsed)
                event.ack()
            if merger.buffered(m.partition):
                ready = merger.pop_ready(m.partition, sources, drained(m.partition),
                                         time.monotonic() * 1000)
                epoch = rt.epoch
                for ev, ready_parsed in ready:
                    if rt.epoch != epoch or not app.flow_control.is_active():
                        # a rebalance began while this batch was handled (Faust suspends the
                        # flow, flushes the producer, then revokes): what is handled from here
                        # on would reach the changelog after the flush, maybe after the new
                        # owner read it. Not acked: the owner reads these records again.
                        break
                    await handle(ev.message, ready_parsed)
                    ev.ack()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        rt.epoch += 1
        for p in {tp.partition for tp in revoked}:
            rt.ready_partitions.discard(p)
            contiguity.forget(p)
            dropped = merger.drop(p)
            if rt.processor is not None:
                rt.processor.forget(p)
            for key in [k for k in seen if k[1] == p]:
                del seen[key]
            if dropped:
                log.info("partition %d revoked: %d buffered records left to its new owner",
                         p, dropped)

    @app.timer(interval=0.2)
    async def fire_due() -> None:
        proc = rt.processor
        if proc is None or app.rebalancing or not _recovered(app):
            metrics.recovering.set(1)
            return
        metrics.recovering.set(0)
        await reread_holes()
        input_topic = settings.topic("purchases")
        assigned = frozenset(tp.partition for tp in app.consumer.assignment()
                             if tp.topic == input_topic)
        new = assigned - rt.ready_partitions
        if new:
            _rebuild(proc, table, new, settings.partitions, metrics)
            rt.ready_partitions |= new
        rt.assigned = assigned
        for p in merger.partitions():
            if p in assigned:  # let buffered records through once their wait is over
                await send(Send("ticks", b"", FLUSH, p))
        if rt.rules_ticks_pending:
            rt.rules_ticks_pending = False
            await _rules_ticks(table, assigned, settings.partitions, proc, send)
        oldest: int | None = None
        for p in assigned:
            for s in proc.due_ticks(p):
                await send(s)
                metrics.timer_ticks.inc()
            idx = proc.index(p)
            metrics.due_index_size.labels(str(p)).set(len(idx))
            first = idx.oldest()
            if first is not None and (oldest is None or first < oldest):
                oldest = first
        lag = 0.0 if oldest is None else max(0.0, (proc.now(min(assigned)) - oldest) / 1000)
        metrics.timer_lag.set(lag if assigned else 0.0)
        for (topic, p), offset in list(done.items()):
            if p in assigned:
                hw = _highwater(app, topic, p)
                if hw is not None:
                    metrics.consumer_lag.labels(topic, str(p)).set(max(0, hw - offset - 1))
        metrics.customers.set(len(table))

    @app.task
    async def watch_rules() -> None:
        await _follow_rules(settings, rt, initial_from_file=path is not None)

    def authorized(request: Any) -> bool:
        if not settings.api_token:
            return True
        return bool(request.headers.get("Authorization", "") == f"Bearer {settings.api_token}")

    def unauthorized(web: Any) -> Any:
        return web.json({"error": "missing or wrong bearer token"}, status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="segmenter"'})

    @app.page("/v1/customers/{customer_id}")
    @app.table_route(table=table, match_info="customer_id")
    async def customer(web: Any, request: Any, customer_id: str) -> Any:
        if not authorized(request):
            return unauthorized(web)
        proc = rt.processor
        data = table.get(customer_id.encode())
        if proc is None or data is None:
            return web.json({"error": f"no customer {customer_id!r}"}, status=404)
        from streams.codec import decode_state
        from streams.query import customer_view

        st = decode_state(data)
        now = proc.now(partition_for(customer_id.encode(), settings.partitions))
        return web.json(customer_view(proc.rules, st, max(now, st.last_eval or 0)))

    @app.page("/v1/segments")
    async def segments(web: Any, request: Any) -> Any:
        if not authorized(request):
            return unauthorized(web)
        proc = rt.processor
        if proc is None:
            return web.json({"error": "no rules loaded yet"}, status=503)
        from streams.query import segments_view

        sizes, scope = await _global_sizes(
            rt.redis_client(), os.environ.get("SEGMENTER_REDIS_PREFIX", "segmenter:"))
        if sizes is None:
            sizes, scope = _local_sizes(metrics), "worker"
        return web.json(segments_view(proc.rules, sizes, scope))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry),
                         headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "worker_id": settings.worker_id})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = (rt.processor is not None and not app.rebalancing
                 and _recovered(app))
        body = {"ready": ready,
                "rules_version": rt.processor.rules.version if rt.processor else None}
        return web.json(body, status=200 if ready else 503)

    return rt


async def _global_sizes(client: Any, prefix: str) -> tuple[dict[str, int] | None, str]:
    """Segment sizes from the Redis view (all workers), if it is there."""
    try:
        raw = await client.hgetall(f"{prefix}segments:sizes")
    except Exception:
        return None, "worker"
    if not raw:
        return None, "worker"
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}, "all"


def _local_sizes(metrics: Metrics) -> dict[str, int]:
    out: dict[str, int] = {}
    for metric in metrics.segment_size.collect():
        for sample in metric.samples:
            out[sample.labels["segment"]] = int(sample.value)
    return out


def _highwater(app: faust.App, topic: str, partition: int) -> int | None:
    """The consumer's high watermark of a partition; None when unknown or no longer assigned
    (a rebalance may have happened since the caller looked)."""
    try:
        hw: int | None = app.consumer.highwater(TP(topic, partition))
    except AssertionError:  # aiokafka: "Partition is not assigned"
        return None
    return hw


def _committed(app: faust.App, tp: TP) -> int | None:
    """The committed offset Faust's consumer knows for `tp` (None before its first seek)."""
    offsets: Any = getattr(app.consumer, "_committed_offset", None)
    value = offsets.get(tp) if offsets is not None else None
    return value if isinstance(value, int) else None


def _known_gap(app: faust.App, tp: TP, offset: int) -> bool:
    """Whether Faust's consumer saw that Kafka has no record at `offset` (it read across it:
    a transaction marker)."""
    gaps: Any = getattr(app.consumer, "_gap", None)
    tree = gaps.get(tp) if gaps is not None else None
    return bool(tree is not None and tree.overlaps(offset))


def _recovered(app: faust.App) -> bool:
    recovery: Any = getattr(app.tables, "recovery", None)
    return recovery is not None and bool(recovery.completed.is_set())


def _count(metrics: Metrics, m: Any, out: Output, is_tick: bool) -> None:
    ev = out.event
    if not is_tick:
        metrics.consumed(m.topic, ev.type if ev is not None else "invalid").inc()
    if out.replayed:
        metrics.replayed.labels(m.topic).inc()
    if out.rejection is not None:
        metrics.events_rejected.labels(str(out.rejection.reason)).inc()
    for s in out.sends:
        if s.topic == "dead_letters":
            metrics.dead_letters.labels(m.topic).inc()
        elif s.topic == "rekey":
            metrics.rekeyed.labels(m.topic).inc()
    if out.changes:
        lag = max(0.0, time.time() - m.timestamp) if m.timestamp else 0.0
        for ch in out.changes:
            metrics.change_records.labels(ch.cause.kind).inc()
            metrics.event_to_change.observe(lag)
            for sid in ch.entered:
                metrics.segment_changes.labels(sid, "entered").inc()
                metrics.segment_size.labels(sid).inc()
            for sid in ch.exited:
                metrics.segment_changes.labels(sid, "exited").inc()
                metrics.segment_size.labels(sid).dec()


def _rebuild(proc: Processor, table: Any, partitions: frozenset[int], count: int,
             metrics: Metrics) -> None:
    """Derive the due index and event clock of newly assigned partitions from the table."""
    if not partitions:
        return
    from streams.codec import decode_state

    items: dict[int, list[tuple[str, bytes]]] = {p: [] for p in partitions}
    for key, value in table.items():
        p = partition_for(key, count)
        if p in items:
            items[p].append((key.decode(), value))
    for p, rows in items.items():
        proc.rebuild(p, rows)
    sizes: dict[str, int] = {}
    for _key, value in table.items():
        for sid in decode_state(value).members:
            sizes[sid] = sizes.get(sid, 0) + 1
    metrics.segment_size.clear()
    for sid, n in sizes.items():
        metrics.segment_size.labels(sid).set(n)
    log.info("due index rebuilt for partitions %s", sorted(partitions))


async def _rules_ticks(table: Any, assigned: frozenset[int], count: int, proc: Processor,
                       send: Any) -> None:
    """After a rule roll-out: a rule tick for every customer on this worker's partitions."""
    n = 0
    for key in list(table.keys()):
        p = partition_for(key, count)
        if p in assigned:
            await send(Send("ticks", key, proc.tick(b"r", 0), p))
            n += 1
    log.info("rules roll-out: %d customers scheduled for re-evaluation", n)


async def _follow_rules(settings: Settings, rt: Runtime, initial_from_file: bool) -> None:
    """Read the compacted rules topic (no consumer group: every worker reads all of it).

    At start-up the last valid record wins unless the worker was started with --rules; records
    published later switch every worker to the new version."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(settings.topic(RULES), 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        while True:
            try:
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                end = (await consumer.end_offsets([tp]))[tp]
                break
            except Exception as exc:  # the topic may not exist yet
                log.warning("rules topic not readable yet: %s", exc)
                await asyncio.sleep(1.0)
        latest: tuple[RuleSet, bool] | None = None
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for msg in batch.get(tp, []):
                parsed = _parse_rules_record(msg.value, rt.metrics)
                if parsed is None:
                    continue
                if msg.offset < end:  # history
                    if not initial_from_file:  # --rules wins at start-up
                        latest = parsed
                    continue
                rt.use_rules(*parsed)
            if latest is not None and (await consumer.position(tp)) >= end:
                rt.use_rules(*latest)
                latest = None
    finally:
        await consumer.stop()


def _parse_rules_record(value: bytes | None, metrics: Metrics) -> tuple[RuleSet, bool] | None:
    try:
        record = orjson.loads(value or b"")
        rule_file = load_rules_text(record["yaml"], source=record.get("source", "<published>"))
        return RuleSet(rule_file), bool(record.get("quiet", False))
    except RuleFileError as exc:
        metrics.rules_refused.inc()
        log.error("refused a published rule file, keeping the version in force:\n%s", exc)
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        metrics.rules_refused.inc()
        log.error("refused an unreadable record on the rules topic: %s", exc)
    return None
