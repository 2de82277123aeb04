"""A task without Kafka: records in, pending commit out (streams/runtime/task.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from model.events import encode_event
from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.generator import generate
from streams.runtime.records import partition_for
from streams.runtime.rulebook import Rulebook
from streams.runtime.store import MemoryStore
from streams.runtime.task import Task
from streams.simulate import Simulator
from tests.factories import DAY, MINUTE, SECOND, T0, event, purchase, rules_from_yaml, segment

RETAIL = Path(__file__).resolve().parents[3] / "rules" / "examples" / "retail.yaml"
PARTITIONS = 4
WALL = T0 + 365 * DAY  # the wall clock of event-clock tests: well after their events
SOURCES = ("purchases", "web-activity", "rekey")


@dataclass(frozen=True, slots=True)
class FakeRecord:
    """What a task reads of an aiokafka ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


def loads(value: bytes | None) -> Any:
    """A change record's JSON (a tombstone, None, is not one)."""
    assert value is not None, "a tombstone where a change record was expected"
    return orjson.loads(value)


def cid_on(partition: int, label: str = "c") -> str:
    return next(f"{label}-{i}" for i in range(10_000)
                if partition_for(f"{label}-{i}".encode(), PARTITIONS) == partition)


def rules() -> RuleSet:
    return rules_from_yaml(segment("buyer", "purchase_count(30d) >= 1"),
                           segment("big", "purchase_amount(30d) >= 150"),
                           segment("lapsed", "days_since_last_purchase() > 1"))


def new_task(rs: RuleSet | None = None, *, event_clock: bool = False, partition: int = 0,
             store: MemoryStore | None = None) -> Task:
    return Task(partition, Rulebook(rs or rules()), store or MemoryStore(),
                partitions=PARTITIONS, event_clock=event_clock, worker_id="w", sources=SOURCES)


class Feed:
    """Offsets per topic, like a broker would give them."""

    def __init__(self, partition: int = 0) -> None:
        self.partition = partition
        self.next: dict[str, int] = {}

    def rec(self, topic: str, value: bytes | None, key: bytes | None = None) -> FakeRecord:
        offset = self.next.get(topic, 0)
        self.next[topic] = offset + 1
        if key is None and value is not None:
            try:
                key = orjson.loads(value)["customer_id"].encode()
            except (orjson.JSONDecodeError, KeyError, TypeError):
                key = None
        return FakeRecord(topic, self.partition, offset, key, value, timestamp=T0)


def test_an_event_changes_state_and_leaves_one_change_and_its_offset_to_commit() -> None:
    task, feed = new_task(), Feed()
    cid = cid_on(0)
    task.add("purchases", [feed.rec("purchases", encode_event(purchase(T0, 200, cid)))], T0)
    pending = task.take()
    assert [loads(v)["entered"] for _, v in pending.changes] == [["big", "buyer"]]
    assert pending.dirty == {cid} and pending.offsets == {"purchases": 1}
    assert task.customers == 1 and task.sizes == {"big": 1, "buyer": 1}
    assert not task.take()  # nothing left for the next commit
    [(key, value)] = task.store.changelog_records([cid])
    assert key == cid.encode() and value is not None


def test_wrong_key_or_partition_is_rekeyed_and_garbage_dead_lettered() -> None:
    task, feed = new_task(), Feed()
    other = cid_on(1)
    mine = cid_on(0)
    task.add("purchases", [
        feed.rec("purchases", encode_event(purchase(T0, 10, other))),  # belongs to partition 1
        feed.rec("purchases", encode_event(purchase(T0, 10, mine)), key=b"someone-else"),
        feed.rec("purchases", b"\xff not json", key=b"k"),
    ], T0)
    pending = task.take()
    assert [(p, k) for p, k, _ in pending.rekey] == [(1, other.encode()), (0, mine.encode())]
    [(key, letter)] = pending.dead_letters
    body = orjson.loads(letter)
    assert key == b"k" and body["reason"] == "bad_encoding"
    assert body["source"] == {"topic": "purchases", "partition": 0, "offset": 2}
    assert pending.offsets == {"purchases": 3} and not pending.dirty and not pending.changes


def test_a_duplicate_is_dead_lettered_and_changes_nothing() -> None:
    task, feed = new_task(), Feed()
    ev = purchase(T0, 10, cid_on(0))
    task.add("purchases", [feed.rec("purchases", encode_event(ev))], T0)
    task.take()
    task.add("purchases", [feed.rec("purchases", encode_event(ev))], T0 + SECOND)
    pending = task.take()
    assert [loads(v)["reason"] for _, v in pending.dead_letters] == ["duplicate"]
    assert not pending.dirty and not pending.changes and pending.offsets == {"purchases": 2}


def test_event_clock_merges_topics_in_event_time_and_commits_no_offset_past_a_waiting_record(
) -> None:
    task, feed = new_task(event_clock=True), Feed()
    a, b = cid_on(0, "a"), cid_on(0, "b")
    task.add("purchases", [feed.rec("purchases", encode_event(purchase(T0 + 2 * SECOND, 10, a))),
                           feed.rec("purchases", b"garbage", key=a.encode())], WALL)
    task.add("web-activity", [feed.rec("web-activity",
                                       encode_event(event("page_view", T0 + SECOND, b)))], WALL)
    # the rekey topic's end is not known yet: nothing is handled within idle_ms
    task.drain({"purchases": True, "web-activity": True}.get, 0.0, WALL)
    assert not task.take()
    drained = {"purchases": True, "web-activity": True, "rekey": True}
    task.drain(drained.get, 1.0, WALL)
    pending = task.take()
    assert [loads(v)["customer_id"] for _, v in pending.changes] == [a]
    assert task.clock == T0 + 2 * SECOND
    # the garbage record follows a's purchase in its topic: handled after it, offsets to 2
    assert pending.offsets == {"purchases": 2, "web-activity": 1}
    assert len(pending.dead_letters) == 1


def test_timers_fire_at_their_due_instant_with_the_event_clock() -> None:
    task, feed = new_task(event_clock=True), Feed()
    buyer, clock = cid_on(0, "buyer"), cid_on(0, "clock")
    drained = dict.fromkeys(SOURCES, True).get
    task.add("purchases", [feed.rec("purchases", encode_event(purchase(T0, 10, buyer)))], WALL)
    task.drain(drained, 0.0, WALL)
    task.add("purchases", [feed.rec("purchases",
                                    encode_event(purchase(T0 + 3 * DAY, 10, clock)))], WALL)
    task.drain(drained, 0.0, WALL)
    changes = [loads(v) for _, v in task.take().changes]
    timed = [c for c in changes if c["customer_id"] == buyer and c["cause"]["kind"] == "time"]
    assert [(c["at"], c["entered"]) for c in timed] == [("2026-01-02T00:00:00.001Z", ["lapsed"])]


def test_wall_clock_timers_fire_when_the_worker_says_it_is_time() -> None:
    task, feed = new_task(), Feed()
    buyer = cid_on(0)
    task.add("purchases", [feed.rec("purchases", encode_event(purchase(T0, 10, buyer)))], T0)
    task.take()
    task.fire_due(T0 + DAY)  # lapsed is due one millisecond later
    assert not task.take().changes
    assert task.fire_due(T0 + DAY + 1) >= 1
    [change] = [loads(v) for _, v in task.take().changes]
    assert change["entered"] == ["lapsed"] and change["at"] == "2026-01-02T00:00:00.001Z"


def test_a_new_rule_version_is_rolled_out_to_every_customer_in_slices() -> None:
    rb = Rulebook(rules())
    task = Task(0, rb, MemoryStore(), partitions=PARTITIONS, event_clock=False, worker_id="w",
                sources=SOURCES)
    feed = Feed()
    customers = [cid_on(0, f"r{i}") for i in range(5)]
    task.add("purchases", [feed.rec("purchases", encode_event(purchase(T0, 100, c)))
                           for c in customers], T0)
    task.take()
    v2 = rules_from_yaml(segment("buyer", "purchase_count(30d) >= 1"),
                         segment("mid", "purchase_amount(30d) >= 50"))
    assert rb.switch(v2)
    assert task.rollout_step(T0 + MINUTE, limit=2) is True
    assert task.rollout_step(T0 + MINUTE, limit=2) is True
    assert task.rollout_step(T0 + MINUTE, limit=2) is False
    changes = [loads(v) for _, v in task.take().changes]
    assert sorted(c["customer_id"] for c in changes) == sorted(customers)
    assert {(tuple(c["entered"]), c["cause"]["kind"], c["rules_version"]) for c in changes} == \
        {(("mid",), "rules", v2.version)}
    assert task.sizes["mid"] == 5


def test_load_derives_due_index_clock_sizes_and_count_from_the_store() -> None:
    first, feed = new_task(event_clock=True), Feed()
    cid = cid_on(0)
    first.add("purchases", [feed.rec("purchases", encode_event(purchase(T0, 200, cid)))], WALL)
    first.drain(dict.fromkeys(SOURCES, True).get, 0.0, WALL)
    restored = MemoryStore()
    for key, value in first.store.changelog_records(first.take().dirty):
        restored.restore(key, value)
    again = new_task(event_clock=True, store=restored)
    again.load()
    assert again.clock == T0 and again.customers == 1
    assert again.sizes == {"big": 1, "buyer": 1}
    assert again.due.get(cid) == first.due.get(cid) is not None


def test_a_generated_log_through_one_task_gives_simulates_changes() -> None:
    """Every customer of partition 0 of a generated log, with the event clock: the task's change
    records are simulate's, to the byte."""
    rs = RuleSet(load_rules(RETAIL))
    events = [e for e in generate(customers=300, events=4000, seed=11, start_ms=T0, days=20)
              if partition_for(e.customer_id.encode(), PARTITIONS) == 0]
    want: list[bytes] = []
    sim = Simulator(rs, on_change=lambda ch: want.append(ch.to_json()))
    for e in events:
        sim.feed(e)
    task, feed = new_task(rs, event_clock=True), Feed()
    drained = dict.fromkeys(SOURCES, True).get
    got: list[bytes] = []
    for i in range(0, len(events), 97):  # fetches of uneven size
        chunk = events[i:i + 97]
        task.add("purchases", [feed.rec("purchases", encode_event(e)) for e in chunk], WALL)
        task.drain(drained, 0.0, WALL)
        got += [v for _, v in task.take().changes if v is not None]
    sim.advance(task.clock)
    assert len(got) > 100

    def per_customer(records: list[bytes]) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for r in records:
            out.setdefault(orjson.loads(r)["customer_id"], []).append(r)
        return out

    assert per_customer(got) == per_customer(want)


def test_an_event_far_in_the_future_does_not_move_the_event_clock() -> None:
    """One event at 9999-12-31 (valid on the wire) is dead-lettered too_far_in_future against
    the wall clock; the partition's clock and its other customers do not move."""
    task, feed = new_task(event_clock=True), Feed()
    drained = dict.fromkeys(SOURCES, True).get
    buyer, poison, later = cid_on(0, "buyer"), cid_on(0, "poison"), cid_on(0, "later")
    task.add("purchases", [feed.rec("purchases", encode_event(purchase(T0, 10, buyer)))], WALL)
    task.drain(drained, 0.0, WALL)
    task.take()
    task.add("purchases", [
        feed.rec("purchases", encode_event(purchase(253_402_300_799_000, 10, poison))),
        feed.rec("purchases", encode_event(purchase(T0 + SECOND, 10, later)))], WALL)
    task.drain(drained, 0.0, WALL)
    pending = task.take()
    assert [loads(v)["reason"] for _, v in pending.dead_letters] == ["too_far_in_future"]
    assert task.clock == T0 + SECOND
    changes = [loads(v) for _, v in pending.changes]
    assert [(c["customer_id"], c["cause"]["kind"]) for c in changes] == [(later, "event")]
    assert pending.offsets == {"purchases": 3}
