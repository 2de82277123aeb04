"""A task: one partition number across every co-partitioned input (Kafka Streams' partition
group), with its customers' states, due index and event clock.

Pure: no Kafka, no clock, no await. The worker hands it each fetch's records (`add`), lets it
fire timers (`fire_due`) and roll a new rule version out (`rollout_step`), and at each commit
takes what it has to write (`pending`: change records, dead letters, re-keyed inputs, the
customers whose state changed, the input offsets reached) and calls `committed()`.

With the event clock the records of a task are merged across its topics in event-time order
(`TimestampMerger`: a topic known to have records not yet fetched is waited for, bounded); with
the wall clock they are handled in arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from model.changes import SegmentChange, change_json
from model.events import Event, Rejection, check_time, parse_event
from model.state import CustomerState
from streams.due_index import DueIndex
from streams.engine import Outcome
from streams.merge import TimestampMerger
from streams.runtime.records import dead_letter, partition_for
from streams.runtime.rulebook import Rulebook
from streams.runtime.store import Store

Drained = Callable[[str], "bool | None"]
K = TypeVar("K")


class Rec(Protocol):
    """The fields of an aiokafka ConsumerRecord a task reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...


@dataclass(slots=True)
class Pending:
    """What the task's next commit writes."""

    # key, change record; value None: the tombstone that follows an erasure's change record
    changes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    latencies_ms: list[int] = field(default_factory=list)  # Kafka timestamp of each cause
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    rekey: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # partition, key, value
    dirty: set[str] = field(default_factory=set)  # customers whose state changed
    offsets: dict[str, int] = field(default_factory=dict)  # input topic -> next offset

    def __bool__(self) -> bool:
        return bool(self.offsets or self.dirty or self.changes or self.dead_letters
                    or self.rekey)


def _bump(counts: dict[K, int], key: K) -> None:
    counts[key] = counts.get(key, 0) + 1


@dataclass(slots=True)
class Stats:
    """Counts for the metrics, taken and reset by the worker at each commit."""

    # plain dicts counted by _bump: a Counter's subscripts go through Python-level slots,
    # ~4x slower from compiled code (one per record); by topic, then event type (no key tuple
    # made and hashed per record)
    consumed: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # reason
    dead_letters: dict[str, int] = field(default_factory=dict)  # source topic
    rekeyed: dict[str, int] = field(default_factory=dict)  # source topic
    causes: dict[str, int] = field(default_factory=dict)  # change records by cause kind
    moves: dict[tuple[str, str], int] = field(default_factory=dict)  # segment, direction
    timer_fires: int = 0
    handled: int = 0  # records and timers the engine handled
    engine_seconds: float = 0.0


class Task:
    def __init__(self, partition: int, rulebook: Rulebook, store: Store, *, partitions: int,
                 event_clock: bool, worker_id: str, sources: Sequence[str],
                 idle_ms: int = 5000) -> None:
        self.partition = partition
        self.rulebook = rulebook
        self.store = store
        self.partitions = partitions
        self.event_clock = event_clock
        self.worker_id = worker_id
        self.sources = tuple(sources)
        self.due = DueIndex()
        self.clock = 0  # event clock: the largest event time handled
        self.merger = TimestampMerger(idle_ms=idle_ms)
        self.pending = Pending()
        self.stats = Stats()
        # members per segment on this partition (a plain dict: see Stats)
        self.sizes: dict[str, int] = {}
        self.customers = 0  # customers with state on this partition
        self._generation = rulebook.generation
        self._rollout: list[str] = []
        # input topic -> next offset of every input whose records the state includes (the
        # at-least-once changelog marker)
        self.offsets_reached: dict[str, int] = {}

    # ------------------------------------------------------------------ start
    def load(self) -> None:
        """Derive the due index, the event clock and the segment sizes from the store (after a
        restore); customers evaluated under another rule version are rolled out."""
        for _ in self.loading():
            pass

    def loading(self, step: int = 2000) -> Iterator[int]:
        """`load` in slices: yields the count of customers seen every `step` of them, so that
        the caller can let other work run (a big store takes seconds)."""
        due, clock, customers = DueIndex(), 0, 0
        sizes: dict[str, int] = {}
        version = self.rulebook.rules.version
        stale: list[str] = []
        for cid, st in self.store.items():
            customers += 1
            if customers % step == 0:
                yield customers
            due.set(cid, st.next_due)
            for sid in st.members:
                _bump(sizes, sid)
            if st.last_eval is not None and st.last_eval > clock:
                clock = st.last_eval
            if st.rules_version != version:
                stale.append(cid)
        self.due, self.sizes, self.customers = due, sizes, customers
        if self.event_clock:
            self.clock = max(self.clock, clock)
        self._rollout = stale
        self._generation = self.rulebook.generation

    # ------------------------------------------------------------------ records
    def add(self, topic: str, records: Iterable[Rec], wall_ms: int) -> None:
        """The records of one fetch of one of this task's partitions, in offset order."""
        currency = self.rulebook.rules.settings.currency
        if not self.event_clock:
            for rec in records:
                self._handle(rec, parse_event(rec.value or b"", currency=currency), wall_ms,
                             wall_ms)
            return
        merger, p = self.merger, self.partition
        future = wall_ms + self.rulebook.rules.settings.future_tolerance_ms
        for rec in records:
            parsed = parse_event(rec.value or b"", currency=currency)
            # records that will not be applied (undecodable, or refused for being too far in
            # the future) keep their place in their topic's order, so that no offset is
            # committed past a record not handled yet, but hold nothing up
            ts = parsed.ts if isinstance(parsed, Event) and parsed.ts <= future else -1
            merger.push(p, topic, ts, (rec, parsed))

    def drain(self, drained: Drained, mono_ms: float, wall_ms: int) -> None:
        """Event clock: handle the buffered records whose turn has come, then fire what the
        clock passed."""
        if not self.merger.buffered(self.partition):
            return
        for rec, parsed in self.merger.pop_ready(self.partition, self.sources, drained,
                                                 mono_ms):
            self._handle(rec, parsed, 0, wall_ms)
        self.fire_due(self.clock)

    def buffered(self) -> int:
        return self.merger.buffered(self.partition)

    def _handle(self, rec: Rec, ev: Event | Rejection, now: int, wall_ms: int) -> None:
        """One input record. `now`: the wall clock (ignored with the event clock)."""
        topic = rec.topic
        pending, stats = self.pending, self.stats
        pending.offsets[topic] = rec.offset + 1
        by_type = stats.consumed.get(topic)
        if by_type is None:
            by_type = stats.consumed[topic] = {}
        if isinstance(ev, Rejection):
            _bump(by_type, "invalid")
            self._dead(rec, ev, wall_ms)
            return
        _bump(by_type, ev.type)
        cid = ev.customer_id
        cid_bytes = cid.encode()
        st = self.store.get(cid)
        # a customer with state here was checked on its first record: skip the hash then
        if rec.key != cid_bytes or (st is None and partition_for(
                cid_bytes, self.partitions) != self.partition):
            # not on the partition that owns this customer: send it there
            owner = partition_for(cid_bytes, self.partitions)
            pending.rekey.append((owner, cid_bytes, rec.value or b""))
            _bump(stats.rekeyed, topic)
            return
        if self.event_clock:
            ts = ev.ts
            if ts > self.clock:
                # one event far in the future must not move the partition's clock there (and
                # time every customer of the partition out): measured against the wall clock
                tolerance = self.rulebook.rules.settings.future_tolerance_ms
                if ts > wall_ms + tolerance:
                    rej = check_time(ev, now_ms=wall_ms, retention_ms=1 << 62,
                                     future_tolerance_ms=tolerance)
                    if rej is not None:
                        self._dead(rec, rej, wall_ms)
                        return
                self.clock = ts
            now = self.clock
        if st is not None and st.rules_version != self.rulebook.rules.version:
            self._maybe_rollout_one(cid, now, st)
        out = self.rulebook.engine.apply(st, ev, now)
        stats.handled += 1
        if out.rejection is not None:
            self._dead(rec, out.rejection, wall_ms)
            if not out.changes:
                return  # refused before anything changed
        self._settle(cid, out, st is not None, rec.timestamp)

    def _dead(self, rec: Rec, rej: Rejection, wall_ms: int) -> None:
        self.pending.dead_letters.append((rec.key, dead_letter(
            rec.key, rec.value, rej, topic=rec.topic, partition=rec.partition,
            offset=rec.offset, worker_id=self.worker_id, now_ms=wall_ms)))
        _bump(self.stats.rejected, str(rej.reason))
        _bump(self.stats.dead_letters, rec.topic)

    def _settle(self, cid: str, out: Outcome, existed: bool, cause_ts: int | None) -> None:
        st = out.state
        if st is None:
            if existed:
                self.store.delete(cid)
                self.pending.dirty.add(cid)
                self.customers -= 1
            self.due.set(cid, None)
        else:
            if not existed:
                self.customers += 1
            self.store.put(cid, st)
            self.pending.dirty.add(cid)
            self.due.set(cid, st.next_due)
        for ch in out.changes:
            self._emit(ch, cause_ts)
        if st is None and existed:
            # erased (its change record, cause "erasure", was emitted last above): a tombstone
            # on the compacted segment-changes, so that compaction forgets the customer
            self.pending.changes.append((cid.encode(), None))

    def _emit(self, ch: SegmentChange, cause_ts: int | None) -> None:
        pending, stats, sizes = self.pending, self.stats, self.sizes
        pending.changes.append((ch.customer_id.encode(), change_json(ch)))  # not a method call
        if cause_ts is not None:
            pending.latencies_ms.append(cause_ts)
        _bump(stats.causes, ch.cause.kind)
        for sid in ch.entered:
            sizes[sid] = sizes.get(sid, 0) + 1
            _bump(stats.moves, (sid, "entered"))
        for sid in ch.exited:
            sizes[sid] = sizes.get(sid, 0) - 1
            _bump(stats.moves, (sid, "exited"))

    # ------------------------------------------------------------------ time
    def fire_due(self, now: int) -> int:
        """Fire every customer due at or before `now`, each at its own due instants."""
        fired = 0
        engine = self.rulebook.engine
        for d, cid in self.due.pop_due(now):
            st = self.store.get(cid)
            if st is None:
                continue
            self._maybe_rollout_one(cid, d, st)
            self._settle(cid, engine.fire(st, d), True, None)
            fired += 1
        self.stats.timer_fires += fired
        self.stats.handled += fired
        return fired

    def now(self, wall_ms: int) -> int:
        return self.clock if self.event_clock else wall_ms

    # ------------------------------------------------------------------ rules
    def rollout_step(self, wall_ms: int, limit: int = 2000) -> bool:
        """Re-evaluate up to `limit` customers under a rule version switched to since the last
        step; True while some are left."""
        if self._generation != self.rulebook.generation:
            self._generation = self.rulebook.generation
            self._rollout = self.store.keys()
        if not self._rollout:
            return False
        now = self.now(wall_ms)
        batch, self._rollout = self._rollout[:limit], self._rollout[limit:]
        for cid in batch:
            self._maybe_rollout_one(cid, now)
        return bool(self._rollout)

    def _maybe_rollout_one(self, cid: str, now: int, st: CustomerState | None = None) -> None:
        rb = self.rulebook
        if st is None:
            st = self.store.get(cid)
        if st is None or st.rules_version == rb.rules.version:
            return
        out = rb.engine.reevaluate(st, now, quiet=rb.quiet,
                                   previous=rb.versions.get(st.rules_version))
        self._settle(cid, out, True, None)

    # ------------------------------------------------------------------ commit
    def take(self) -> Pending:
        """What the next commit writes; the task starts a new `Pending`."""
        out, self.pending = self.pending, Pending()
        return out

    def take_stats(self) -> Stats:
        out, self.stats = self.stats, Stats()
        return out
