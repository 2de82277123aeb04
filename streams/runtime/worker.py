"""The worker process: one aiokafka consumer in the app's group, one task per assigned partition
number, and the loop that feeds them.

    loop:  fetch (getmany) -> each task handles its records (event clock: merged in event-time
           order) -> timers fire -> a slice of any rule roll-out -> commit (streams/runtime/
           commit.py) every `commit_interval_ms`, or at once when the fetch came back short
    assignment:  pause the new partitions; per task, in the background: a transactional
           producer (fences the previous owner and ends its transaction), the state restored
           from the changelog, the input positions from the committed offsets; then resume
    revocation:  commit, then close the tasks (an in-memory store is kept aside and reused if
           its partition comes back before anybody else wrote its changelog)

I/O only: the tasks call the engine; this module never looks inside a customer's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition

from model.native import native_status
from rules.ruleset import RuleSet
from streams.runtime.app import (
    DEAD_LETTERS,
    INPUTS,
    REKEY,
    SEGMENT_CHANGES,
    changelog_topic,
    worker_datadir,
)
from streams.runtime.commit import (
    OFFSETS_KEY,
    Topics,
    commit_at_least_once,
    commit_exactly_once,
)
from streams.runtime.gc_tuning import CollectorHold
from streams.runtime.members import Members, cancel
from streams.runtime.metrics import Metrics
from streams.runtime.rulebook import Rulebook
from streams.runtime.rules_topic import Seed, follow_rules
from streams.runtime.settings import Settings
from streams.runtime.store import MemoryStore, RocksStore, Store
from streams.runtime.task import Task

log = logging.getLogger(__name__)
MAX_RECORDS = 10_000  # per fetch
CAUGHT_UP = 1_000  # a fetch with fewer records: the worker keeps up, commit without waiting
RESTART_DELAY = 1.0  # seconds before a failed task is started again


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.revoke()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.assign(frozenset(assigned))


class Worker:
    def __init__(self, settings: Settings, metrics: Metrics, seed: Seed | None) -> None:
        """`seed`: the --rules file, used when the rules topic has no version yet."""
        self.settings = settings
        self.metrics = metrics
        self.rulebook: Rulebook | None = None
        self.rules_ready = asyncio.Event()
        self.seed = seed
        self.event_clock = settings.clock == "event"
        self.eos = settings.processing_guarantee == "exactly_once"
        self.inputs = tuple(settings.topic(t) for t in (*INPUTS, REKEY))
        self.topics = Topics(settings.topic(SEGMENT_CHANGES), settings.topic(DEAD_LETTERS),
                             settings.topic(REKEY), changelog_topic(settings),
                             settings.partitions)
        self.members = Members(settings)
        self.url = ""  # this worker's Query API, once the web server listens
        self.tasks: dict[int, Task] = {}
        self.producers: dict[int, AIOKafkaProducer] = {}  # exactly-once: one per task
        self.starting: dict[int, asyncio.Task[None]] = {}
        self.progress: dict[int, tuple[int, int]] = {}  # restore: records read, to read
        self.parked: dict[int, tuple[Task, int]] = {}  # revoked task, its changelog end
        self.assigned: frozenset[int] | None = None  # None before the first assignment
        self.consumer: Any = None
        self.producer: Any = None  # plain: at-least-once outputs and announcements
        self._lock = asyncio.Lock()  # commits, revocation and shutdown take turns
        self._stop = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._last_lag = 0.0
        self._last_metrics = 0.0
        self._sized: set[str] = set()  # segments whose size gauge was set
        self.collector = CollectorHold()  # the cyclic collector held off: fetches, restores

    # ------------------------------------------------------------------ rules
    def use_rules(self, rules: RuleSet, quiet: bool = False) -> None:
        if self.rulebook is None:
            self.rulebook = Rulebook(rules)
        elif not self.rulebook.switch(rules, quiet):
            return
        self.metrics.rules_info.clear()
        self.metrics.rules_info.labels(rules.file.name, rules.version).set(1)
        log.info("rules %s (%s) in force%s", rules.file.name, rules.version,
                 " (quiet roll-out)" if quiet else "")
        self.rules_ready.set()

    @property
    def ready(self) -> bool:
        return (self.rulebook is not None and self.assigned is not None and not self.starting)

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        s = self.settings
        self._background.append(asyncio.create_task(
            follow_rules(s, self.metrics, self.use_rules, self.seed)))
        self._background.append(asyncio.create_task(self.members.follow()))
        rules = asyncio.create_task(self.rules_ready.wait())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({rules, stop}, return_when=asyncio.FIRST_COMPLETED)
        rules.cancel()
        stop.cancel()
        if self._stop.is_set():
            await self._close_background()
            return
        self.producer = AIOKafkaProducer(**self._producer_config())
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap, group_id=s.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(100, s.session_timeout_ms // 3),
            metadata_max_age_ms=30_000)
        self.consumer.subscribe(list(self.inputs), listener=_Listener(self))
        await self.producer.start()
        await self.consumer.start()
        log.info("worker %s joined group %s (%s, %s clock, %s store; engine %s)", s.worker_id,
                 s.group_id, s.processing_guarantee, s.clock, s.store, native_status())
        try:
            await self._loop()
        finally:
            await self._shutdown()

    def _producer_config(self, **extra: Any) -> dict[str, Any]:
        # commits hand over whole batches (create_batch/send_batch): a linger would only delay
        # every commit, hence the latency of every change
        return {"bootstrap_servers": self.settings.kafka_bootstrap, "acks": "all",
                "enable_idempotence": True, "linger_ms": 0,
                "max_batch_size": 512 * 1024, **extra}

    async def _loop(self) -> None:
        consumer, metrics = self.consumer, self.metrics
        interval = self.settings.commit_interval_ms / 1000
        next_commit = time.monotonic() + interval
        while not self._stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=MAX_RECORDS)
            wall = int(time.time() * 1000)
            started = time.perf_counter()
            tasks = self.tasks
            before = sum(t.stats.handled for t in tasks.values())
            fetched = sum(len(records) for records in batch.values())
            with self.collector.hold():  # no collection while the fetch's records live
                await self._handle(batch, wall)
                del batch  # let go of the records before the collector may run again
            for task in tasks.values():
                task.rollout_step(wall)
            handled = sum(t.stats.handled for t in tasks.values()) - before
            if handled > 0:
                metrics.evaluation.observe((time.perf_counter() - started) / handled)
            # a full interval under a backlog (bigger transactions, more throughput); as soon
            # as the fetch came back short, i.e. the worker is keeping up (latency)
            if time.monotonic() >= next_commit or (fetched < CAUGHT_UP and any(
                    t.pending for t in tasks.values())):
                await self.commit()
                next_commit = time.monotonic() + interval

    async def _handle(self, batch: dict[TopicPartition, list[Any]], wall: int) -> None:
        """One fetch: each task takes its records; with the event clock each then handles
        those whose turn has come and fires what its clock passed, with the wall clock each
        fires what is due now."""
        tasks = self.tasks
        for tp, records in batch.items():
            task = tasks.get(tp.partition)
            if task is not None:  # else not ours any more: the owner reads them again
                task.add(tp.topic, records, wall)
        if self.event_clock:
            mono = time.monotonic() * 1000
            for task in list(tasks.values()):
                if task.buffered():
                    drained = await self._drained(task)
                    if self.tasks.get(task.partition) is task:  # not revoked meanwhile
                        task.drain(drained.get, mono, wall)
        else:
            for task in tasks.values():
                task.fire_due(wall)

    async def _drained(self, task: Task) -> dict[str, bool | None]:
        """Per input topic of the task: True when everything up to its last stable offset was
        fetched, False when more is known to be there, None when its end is not known yet."""
        out: dict[str, bool | None] = {}
        consumer = self.consumer
        for topic in self.inputs:
            tp = TopicPartition(topic, task.partition)
            try:
                end = consumer.last_stable_offset(tp)
                if end is None:
                    end = consumer.highwater(tp)
                out[topic] = None if end is None else (await consumer.position(tp)) >= end
            except Exception:  # no longer assigned: a rebalance is under way
                out[topic] = None
        return out

    # ------------------------------------------------------------------ commit
    async def commit(self) -> None:
        async with self._lock:
            await self._commit_locked()

    async def _commit_locked(self) -> None:
        work = [(t, t.take()) for t in list(self.tasks.values())]
        work = [(t, p) for t, p in work if p]
        if work:
            if self.eos:
                await asyncio.gather(*(self._commit_task(t, p) for t, p in work))
            else:
                try:
                    await commit_at_least_once(self.producer, self.consumer, work, self.topics)
                except Exception as exc:
                    for task, _ in work:
                        await self._fail(task, exc)
                    work = []
        now = time.time() * 1000
        for task, pending in work:
            if self.tasks.get(task.partition) is task:
                self.metrics.event_to_change.observe_many(
                    [max(0.0, now - ts) / 1000 for ts in pending.latencies_ms])
        if time.monotonic() - self._last_metrics >= 0.1:
            self._last_metrics = time.monotonic()
            await self._flush_metrics()

    async def _commit_task(self, task: Task, pending: Any) -> None:
        producer = self.producers.get(task.partition)
        try:
            if producer is None:
                raise KafkaError("no producer")
            await commit_exactly_once(producer, task, pending, self.topics,
                                      self.settings.group_id)
        except Exception as exc:
            await self._fail(task, exc)

    async def _fail(self, task: Task, exc: BaseException) -> None:
        """A commit failed: drop the task's uncommitted state; restart it from the changelog and
        the committed offsets, unless another worker owns it now (fenced)."""
        p = task.partition
        if self.tasks.get(p) is task:
            del self.tasks[p]
        tps = [TopicPartition(t, p) for t in self.inputs]
        with contextlib.suppress(Exception):
            self.consumer.pause(*tps)
        producer = self.producers.pop(p, None)
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            await _stop(producer)
        task.store.close()
        fenced = isinstance(exc, ProducerFenced) or "fenced" in type(exc).__name__.lower()
        log.error("partition %d: commit failed (%s: %s); %s", p, type(exc).__name__, exc,
                  "another worker owns it now" if fenced else
                  "its uncommitted work is dropped and it starts again from the last commit")
        if not fenced and self.assigned is not None and p in self.assigned:
            self.starting[p] = asyncio.create_task(self._start_task(p, RESTART_DELAY))

    # ------------------------------------------------------------------ rebalance
    async def revoke(self) -> None:
        async with self._lock:
            for p in list(self.starting):
                await cancel(self.starting.pop(p))
            await self._commit_locked()
            ends = await self._changelog_ends(list(self.tasks)) if self.tasks else {}
            for p, task in self.tasks.items():
                if isinstance(task.store, MemoryStore) and p in ends:
                    task.merger.drop(p)  # not handled, not committed: read again
                    self.parked[p] = (task, ends[p])
                else:
                    task.store.close()
            self.tasks.clear()
            for p in list(self.producers):
                await _stop(self.producers.pop(p))
            self.progress.clear()
            log.info("partitions revoked (%d tasks committed and closed)", len(ends))

    async def assign(self, assigned: frozenset[TopicPartition]) -> None:
        parts = frozenset(tp.partition for tp in assigned)
        self.assigned = parts
        log.info("tasks now: %s", sorted(parts))
        if assigned:
            self.consumer.pause(*assigned)
        for p in list(self.parked):
            if p not in parts:
                self.parked.pop(p)[0].store.close()
        for p in sorted(parts):
            self.starting[p] = asyncio.create_task(self._start_task(p))
        self._background.append(asyncio.create_task(self._announce(parts)))

    async def _announce(self, parts: frozenset[int]) -> None:
        try:
            await self.members.announce(self.producer, parts, self.url)
        except Exception as exc:
            log.warning("could not announce this worker's partitions: %s", exc)

    async def _start_task(self, p: int, delay: float = 0.0) -> None:
        """Make partition `p` a running task (retrying until it works or is revoked)."""
        try:
            while True:
                await asyncio.sleep(delay)
                producer = None
                try:
                    if self.eos:
                        producer = AIOKafkaProducer(**self._producer_config(
                            transactional_id=f"{self.settings.group_id}-{p}"))
                        await producer.start()
                        # fences a previous owner of the task and ends its open transaction
                        # before anything is read: what it committed is all there is
                        await producer.begin_transaction()
                    task = await self._restore(p)
                    await self._seek(task)
                except asyncio.CancelledError:
                    if producer is not None:
                        await _stop(producer)
                    raise
                except Exception as exc:
                    if producer is not None:
                        await _stop(producer)
                    log.error("partition %d: could not start (%s: %s); trying again", p,
                              type(exc).__name__, exc)
                    delay = RESTART_DELAY
                    continue
                self.tasks[p] = task
                if producer is not None:
                    self.producers[p] = producer
                self.consumer.resume(*(TopicPartition(t, p) for t in self.inputs))
                return
        finally:
            if self.starting.get(p) is asyncio.current_task():
                del self.starting[p]
            self.progress.pop(p, None)

    def _new_task(self, p: int, store: Store) -> Task:
        assert self.rulebook is not None
        return Task(p, self.rulebook, store, partitions=self.settings.partitions,
                    event_clock=self.event_clock, worker_id=self.settings.worker_id,
                    sources=self.inputs)

    def _new_store(self, p: int) -> Store:
        if self.settings.store == "rocksdb://":
            return RocksStore(worker_datadir(self.settings) / f"customers-{p}.db",
                              cache=self.settings.state_cache)
        return MemoryStore()

    async def _restore(self, p: int) -> Task:
        """The task's state from the changelog (from the local store's checkpoint, if any)."""
        s = self.settings
        tp = TopicPartition(self.topics.changelog, p)
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, isolation_level="read_committed")
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            parked = self.parked.pop(p, None)
            if parked is not None and parked[1] == end:
                task = parked[0]
                log.info("partition %d: state kept from before the rebalance (%d customers)",
                         p, task.customers)
                return task
            if parked is not None:
                parked[0].store.close()
            begin = (await consumer.beginning_offsets([tp]))[tp]
            store = self._new_store(p)
            try:
                with self.collector.hold(freeze=True):  # see CollectorHold
                    return await self._read_changelog(p, consumer, tp, store, begin, end)
            except BaseException:
                store.close()
                raise
        finally:
            await consumer.stop()

    async def _read_changelog(self, p: int, consumer: Any, tp: TopicPartition, store: Store,
                              begin: int, end: int) -> Task:
        """Read the changelog partition into `store` (from its checkpoint), then load."""
        start = store.checkpoint()
        if start is None or start < begin or start > end:
            if start is not None and isinstance(store, RocksStore):
                log.warning("partition %d: local store checkpoint %d outside the "
                            "changelog (%d..%d): restoring it from scratch", p, start,
                            begin, end)
                store.forget_checkpoint()
            start = begin
        consumer.seek(tp, start)
        marker: dict[str, int] = {}
        read, started, logged = 0, time.monotonic(), time.monotonic()
        self.progress[p] = (0, end - start)
        while (await consumer.position(tp)) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=2_000)
            for msg in batch.get(tp, []):
                if msg.key == OFFSETS_KEY:
                    marker = orjson.loads(msg.value)
                elif msg.key is not None and not msg.key.startswith(b"\x00"):
                    store.restore(msg.key, msg.value)
                read += 1
            self.progress[p] = (read, end - start)
            if time.monotonic() - logged > 5:
                logged = time.monotonic()
                log.info("partition %d: restoring, %d of %d changelog records", p, read,
                         end - start)
        store.committed([], end)
        task = self._new_task(p, store)
        for _ in task.loading():
            await asyncio.sleep(0)  # heartbeats, web requests, other tasks go on
        task.offsets_reached = marker
        log.info("partition %d: restored %d customers from %d changelog records in "
                 "%.1f s", p, task.customers, read, time.monotonic() - started)
        return task

    async def _seek(self, task: Task) -> None:
        """Position the task's inputs at the committed offsets (at-least-once: or further, at
        what the restored state already includes)."""
        consumer = self.consumer
        for topic in self.inputs:
            tp = TopicPartition(topic, task.partition)
            committed = await consumer.committed(tp)
            offset = max(committed or 0, task.offsets_reached.get(topic, 0))
            if committed is None and offset == 0:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
                task.offsets_reached[topic] = offset

    async def _changelog_ends(self, partitions: list[int]) -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                    group_id=None, enable_auto_commit=False,
                                    isolation_level="read_committed")
        try:
            await consumer.start()
            tps = [TopicPartition(self.topics.changelog, p) for p in partitions]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: off for tp, off in ends.items()}
        except Exception as exc:
            log.warning("could not read the changelog's ends: %s", exc)
            return {}
        finally:
            await consumer.stop()

    # ------------------------------------------------------------------ metrics
    async def _flush_metrics(self) -> None:
        m = self.metrics
        sizes: Counter[str] = Counter()
        customers = 0
        for task in self.tasks.values():
            st = task.take_stats()
            for topic, by_type in st.consumed.items():
                for etype, n in by_type.items():
                    m.consumed(topic, etype).inc(n)
            for reason, n in st.rejected.items():
                m.events_rejected.labels(reason).inc(n)
            for topic, n in st.dead_letters.items():
                m.dead_letters.labels(topic).inc(n)
            for topic, n in st.rekeyed.items():
                m.rekeyed.labels(topic).inc(n)
            for cause, n in st.causes.items():
                m.change_records.labels(cause).inc(n)
            for (sid, direction), n in st.moves.items():
                m.segment_changes.labels(sid, direction).inc(n)
            if st.timer_fires:
                m.timer_ticks.inc(st.timer_fires)
            sizes.update(task.sizes)
            customers += task.customers
            m.due_index_size.labels(str(task.partition)).set(len(task.due))
        for sid in self._sized - sizes.keys():  # no longer on this worker's partitions
            m.segment_size.labels(sid).set(0)
        for sid, n in sizes.items():
            m.segment_size.labels(sid).set(n)
        self._sized = set(sizes)
        m.customers.set(customers)
        m.recovering.set(1 if self.starting else 0)
        if time.monotonic() - self._last_lag > 1.0:
            self._last_lag = time.monotonic()
            await self._lag_metrics()

    async def _lag_metrics(self) -> None:
        wall = int(time.time() * 1000)
        oldest: int | None = None
        for task in list(self.tasks.values()):
            first = task.due.oldest()
            if first is not None:
                lag = max(0, task.now(wall) - first)
                oldest = lag if oldest is None else max(oldest, lag)
            for topic in self.inputs:
                tp = TopicPartition(topic, task.partition)
                try:
                    hw = self.consumer.highwater(tp)
                    if hw is not None:
                        behind = max(0, hw - await self.consumer.position(tp))
                        self.metrics.consumer_lag.labels(topic, str(task.partition)).set(behind)
                except Exception:
                    pass
        self.metrics.timer_lag.set((oldest or 0) / 1000)

    # ------------------------------------------------------------------ stop
    async def _shutdown(self) -> None:
        try:
            async with self._lock:
                for p in list(self.starting):
                    await cancel(self.starting.pop(p))
                await self._commit_locked()
                for task in self.tasks.values():
                    task.store.close()
                for _, (task, _end) in self.parked.items():
                    task.store.close()
                self.tasks.clear()
                self.parked.clear()
                for p in list(self.producers):
                    await _stop(self.producers.pop(p))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.members.leave(self.producer), 5)
        finally:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            await _stop(self.producer)
            await self._close_background()
            log.info("worker %s stopped", self.settings.worker_id)

    async def _close_background(self) -> None:
        for t in self._background:
            await cancel(t)
        self._background.clear()


async def _stop(producer: AIOKafkaProducer | None) -> None:
    if producer is None:
        return
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception as exc:
        log.debug("producer stop: %s", exc)
