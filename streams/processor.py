"""What the worker does with one record, as plain code: the Faust agents only move bytes.

`Processor` owns the engine (and the rule version in force), one due index and one event clock per
partition, and turns each input record, timer tick or rule tick into `Output`: the customer's new
state bytes (or deletion), the records to send (segment changes, dead letters, re-keyed inputs).
It never touches Kafka; its only view of the Faust table is a get function and the output.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiokafka.partitioner import murmur2

from rules.ruleset import RuleSet
from streams.changes import SegmentChange, format_ts
from streams.codec import decode_state, encode_state
from streams.due_index import DueIndex
from streams.engine import Engine, Outcome
from streams.events import Event, Rejection, parse_event
from streams.state import CustomerState

GetState = Callable[[str], bytes | None]
TICK_TIME, TICK_RULES = b"t", b"r"
# How long a customer's state keeps the change records it sent (wall ms): a replay after a
# crash re-reads at most what came after the last commit (every second) and sends them again,
# since the state update may have reached the changelog while the change records did not.
OUTBOX_MS = 60_000


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives a key: Java clients, aiokafka
    and Faust agree on it; librdkafka clients (kcat) need `-X partitioner=murmur2_random`, and
    records that land elsewhere are re-keyed by the worker."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Send:
    topic: str  # logical name: "changes", "dead_letters", "rekey", "ticks"
    key: bytes | None
    value: bytes
    partition: int | None = None


@dataclass(slots=True)
class Output:
    customer_id: str | None = None
    state: bytes | None = None  # new state to write (when `write`)
    write: bool = False  # write `state` (None = delete the customer)
    sends: list[Send] = field(default_factory=list)
    changes: list[SegmentChange] = field(default_factory=list)
    rejection: Rejection | None = None
    event: Event | None = None
    replayed: bool = False  # already applied (at-least-once redelivery): nothing to do


def dead_letter(key: bytes | None, value: bytes, rej: Rejection, *, topic: str, partition: int,
                offset: int, worker_id: str, now_ms: int) -> Send:
    """A dead-letter record: the original key and value bytes, where they came from and why."""
    def text(b: bytes | None) -> str | None:
        if b is None:
            return None
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return None

    body = {
        "reason": str(rej.reason), "message": rej.message, "field": rej.field,
        "event_id": rej.event_id, "customer_id": rej.customer_id,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "key": text(key), "key_b64": base64.b64encode(key).decode() if key is not None else None,
        "value": text(value), "value_b64": base64.b64encode(value).decode(),
        "worker_id": worker_id, "at": format_ts(now_ms),
    }
    return Send("dead_letters", key, orjson.dumps(body))


class Processor:
    def __init__(self, rules: RuleSet, *, partitions: int, worker_id: str,
                 clock: str = "wall", wall: Callable[[], float] = time.time,
                 sources: tuple[str, ...] = (), state_cache: int = 0) -> None:
        self.engine = Engine(rules)
        self.versions: dict[str, RuleSet] = {rules.version: rules}  # for removed segments
        self.partitions = partitions
        self.worker_id = worker_id
        self.event_clock = clock == "event"
        self._wall = wall
        self.clocks: dict[int, int] = {}  # partition -> largest event time seen (event clock)
        self.due: dict[int, DueIndex] = {}
        # input topic -> short code kept in each customer's state with the offset applied last
        self._source_codes = {t: str(i) for i, t in enumerate(sources)}
        # customer -> (the bytes last written for it, that state decoded): when the table hands
        # back that very bytes object, its decoded form is reused (oldest entries evicted first)
        self._cache: dict[str, tuple[bytes, CustomerState]] = {}
        self._cache_size = state_cache

    @property
    def rules(self) -> RuleSet:
        return self.engine.rules

    def now(self, partition: int) -> int:
        if self.event_clock:
            return self.clocks.get(partition, 0)
        return int(self._wall() * 1000)

    def index(self, partition: int) -> DueIndex:
        idx = self.due.get(partition)
        if idx is None:
            idx = self.due[partition] = DueIndex()
        return idx

    # ------------------------------------------------------------------ input records
    def on_input(self, key: bytes | None, value: bytes, *, topic: str, partition: int,
                 offset: int, get: GetState, parsed: Event | Rejection | None = None) -> Output:
        """`parsed`: `parse_event` of `value` when the caller already has it."""
        rules = self.engine.rules
        ev = parsed if parsed is not None else parse_event(
            value, currency=rules.settings.currency)
        if isinstance(ev, Rejection):
            return self._reject(key, value, ev, topic, partition, offset)
        cid_bytes = ev.customer_id.encode()
        if key != cid_bytes or partition_for(cid_bytes, self.partitions) != partition:
            # not on the partition that owns this customer: send it there
            return Output(sends=[Send("rekey", cid_bytes, value)], event=ev)
        if self.event_clock:
            clock = self.clocks.get(partition, ev.ts)
            now = ev.ts if ev.ts > clock else clock
            self.clocks[partition] = now
        else:
            now = self.now(partition)
        st = self._load(ev.customer_id, get)
        source = self._source_codes.get(topic, topic)
        if st is not None and st.offsets.get(source, -1) >= offset:
            # redelivered after a crash or rebalance (the committed offset was behind what was
            # applied): applying it again would count it twice, whatever the clock says now;
            # the changes it caused are sent again (identical records: at-least-once)
            return self._replay(Output(customer_id=ev.customer_id, event=ev), st, source, offset)
        out = Output(customer_id=ev.customer_id, event=ev)
        if st is not None and st.rules_version != rules.version:
            self._collect(out, self.engine.reevaluate(
                st, now, quiet=self.quiet_rules, previous=self.versions.get(st.rules_version)))
        existed = st is not None
        result = self.engine.apply(st, ev, now)
        if result.rejection is not None:
            dl = self._reject(key, value, result.rejection, topic, partition, offset)
            out.sends += dl.sends
            out.rejection = result.rejection
        self._collect(out, result)
        if result.state is not None:
            self._applied(out, result.state, source, offset)
        if existed or result.state is not None:
            self._finish(out, ev.customer_id, result.state, partition)
        return out

    # ------------------------------------------------------------------ ticks
    def tick(self, kind: bytes, due: int) -> bytes:
        return kind + str(due).encode()

    def on_tick(self, key: bytes, value: bytes, *, partition: int, get: GetState,
                topic: str = "ticks", offset: int | None = None) -> Output:
        cid = key.decode()
        st = self._load(cid, get)
        out = Output(customer_id=cid)
        if st is None:
            self.index(partition).set(cid, None)
            return out
        source = self._source_codes.get(topic, topic)
        if offset is not None and st.offsets.get(source, -1) >= offset:
            return self._replay(out, st, source, offset)
        now = self.now(partition)
        if st.rules_version != self.engine.rules.version:
            self._collect(out, self.engine.reevaluate(
                st, now, quiet=self.quiet_rules, previous=self.versions.get(st.rules_version)))
        result = self.engine.fire(st, now)
        self._collect(out, result)
        if offset is not None:
            self._applied(out, st, source, offset)
        self._finish(out, cid, st, partition)
        return out

    quiet_rules: bool = False

    # ------------------------------------------------------------------ rules
    def switch_rules(self, rules: RuleSet, quiet: bool = False) -> None:
        """Use `rules` from now on; customers are re-evaluated lazily (on their next record or
        rule tick)."""
        self.engine = Engine(rules)
        self.versions[rules.version] = rules
        self.quiet_rules = quiet

    # ------------------------------------------------------------------ recovery
    def rebuild(self, partition: int, items: list[tuple[str, bytes]]) -> None:
        """Re-derive a partition's due index and event clock from the table's contents."""
        idx = self.due[partition] = DueIndex()
        clock = self.clocks.get(partition, 0)
        for cid, data in items:
            st = decode_state(data)
            idx.set(cid, st.next_due)
            if st.last_eval is not None and st.last_eval > clock:
                clock = st.last_eval
        if self.event_clock:
            self.clocks[partition] = clock

    def forget(self, partition: int) -> None:
        """Drop what this worker derived for a partition it no longer owns."""
        self.due.pop(partition, None)
        self.clocks.pop(partition, None)

    def due_ticks(self, partition: int) -> list[Send]:
        """Tick records for every customer of `partition` due by now (removed from the index)."""
        now = self.now(partition)
        return [Send("ticks", cid.encode(), TICK_TIME + str(d).encode(), partition)
                for d, cid in self.index(partition).pop_due(now)]

    # ------------------------------------------------------------------ helpers
    def _load(self, cid: str, get: GetState) -> CustomerState | None:
        data = get(cid)
        if data is None:
            return None
        hit = self._cache.get(cid)
        if hit is not None and hit[0] is data:
            return hit[1]  # the engine mutates it; the caller always writes the result back
        return decode_state(data)

    def _applied(self, out: Output, st: CustomerState, source: str, offset: int) -> None:
        """Note the record as applied, and its change records in the outbox."""
        st.offsets[source] = offset
        wall = int(self._wall() * 1000)
        box = st.outbox
        if box and box[0][2] < wall - OUTBOX_MS:
            box[:] = [e for e in box if e[2] >= wall - OUTBOX_MS]
        for s in out.sends:
            if s.topic == "changes":
                box.append([source, offset, wall, s.value.decode()])

    def _replay(self, out: Output, st: CustomerState, source: str, offset: int) -> Output:
        out.replayed = True
        key = st.customer_id.encode()
        out.sends = [Send("changes", key, e[3].encode()) for e in st.outbox
                     if e[0] == source and e[1] == offset]
        return out

    def _remember(self, cid: str, data: bytes | None, st: CustomerState | None) -> None:
        cache = self._cache
        if data is None or st is None or self._cache_size <= 0:
            cache.pop(cid, None)
            return
        if cid not in cache and len(cache) >= self._cache_size:
            del cache[next(iter(cache))]  # the oldest entry
        cache[cid] = (data, st)

    def _collect(self, out: Output, result: Outcome) -> None:
        for ch in result.changes:
            out.changes.append(ch)
            out.sends.append(Send("changes", ch.customer_id.encode(), ch.to_json()))

    def _finish(self, out: Output, cid: str, st: CustomerState | None, partition: int) -> None:
        out.write = True
        out.state = encode_state(st) if st is not None else None
        self._remember(cid, out.state, st)
        self.index(partition).set(cid, st.next_due if st is not None else None)

    def _reject(self, key: bytes | None, value: bytes, rej: Rejection, topic: str,
                partition: int, offset: int) -> Output:
        return Output(rejection=rej, sends=[dead_letter(
            key, value, rej, topic=topic, partition=partition, offset=offset,
            worker_id=self.worker_id, now_ms=int(self._wall() * 1000))])
