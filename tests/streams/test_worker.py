"""The streaming worker on the real broker: equivalence with `simulate`, kill -9 of one of two
workers, restart, exact timers, rules roll-out and erasure, bad input, the topology check.

Every test runs real `python -m segmenter.commands.worker` processes against the local Kafka,
with its own topic prefix (so its own topics and consumer group) and its own state folder; the
shared machinery is in tests/streams/workers.py.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from model.events import encode_event
from rules.loader import load_rules, load_rules_text
from rules.ruleset import RuleSet
from segmenter.commands.rules import publish_rules
from streams.runtime.app import DEAD_LETTERS, RULES, SEGMENT_CHANGES
from streams.runtime.records import partition_for
from streams.simulate import Simulator
from tests.streams.workers import (
    DAY,
    HOUR,
    MINUTE,
    PARTITIONS,
    RETAIL,
    ROLL_V1,
    ROLL_V2,
    SECOND,
    T0,
    Collector,
    Record,
    changes_by_customer,
    check_at_least_once,
    cid_on,
    cluster,
    consumer_view,
    diff_report,
    ev,
    final_segments,
    free_port,
    generated,
    http_get,
    iso,
    owned,
    produce,
    rules_text,
    sentinels,
    simulate,
    split_between,
    transitions,
    wait_rules_version,
    wire,
    write_rules,
)

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ 1. equivalence


EQ_CUSTOMERS = 6_000  # 5,117 of them have events
EQ_EVENTS = 50_000


async def test_worker_with_event_clock_matches_simulate(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    """>= 50k generated events for >= 5k customers, produced first, then one worker with the
    event clock: exactly the changes (every field) and final segments of `simulate`."""
    events = generated(EQ_CUSTOMERS, EQ_EVENTS, seed=4, erasures=True)
    raw = [encode_event(e) for e in events]
    ref = simulate(RuleSet(load_rules(RETAIL)), raw)
    assert len({e.customer_id for e in events}) >= 5_000
    kinds = Counter(c["cause"]["kind"] for chs in ref.changes.values() for c in chs)
    assert ref.total > 10_000 and kinds["time"] > 1_000 and kinds["erasure"] > 0, kinds
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path) as c:
        started = time.perf_counter()
        await produce(kafka_bootstrap, ((c.topic(t), k, v) for t, k, v in map(wire, events)))
        produced = time.perf_counter()
        async with Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
            w = c.start("--rules", str(RETAIL))
            await col.wait(f"{ref.total} changes", lambda: len(col.records) >= ref.total,
                           timeout=240, workers=[w], quiet=20.0)
            done = time.perf_counter()
            await col.settle(1.5)
            got = changes_by_customer(col.records)
        print(f"equivalence: {len(events)} events produced in {produced - started:.1f} s, "
              f"{ref.total} changes out after {done - produced:.1f} s")
        assert len(col.records) == ref.total, diff_report(got, ref.changes)
        assert got == ref.changes, diff_report(got, ref.changes)
        assert final_segments(got) == {cid: ref.segments.get(cid, []) for cid in got}


# ------------------------------------------------------------------ 2. crash


# a killed member is noticed after 6 s (the broker's group.min.session.timeout.ms)
FAST_FAILOVER = "6000"  # SEGMENTER_SESSION_TIMEOUT_MS


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_kill_9_of_one_of_two_workers_loses_no_change(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path,
    guarantee: str,
) -> None:
    """Workers a and b start together on a backlog and share the partitions; a is killed with
    SIGKILL mid-stream and b takes all partitions over. Per customer: seq contiguous from 1,
    every change of `simulate` there, repeats only of identical changes (none with
    exactly-once); final segments as `simulate`'s."""
    events = generated(1_500, 15_000, seed=5)
    ref = simulate(RuleSet(load_rules(RETAIL)), [encode_event(e) for e in events])
    topic = f"{unique}.purchases"
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_PROCESSING_GUARANTEE=guarantee,
                       SEGMENTER_SESSION_TIMEOUT_MS=FAST_FAILOVER) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
        await produce(kafka_bootstrap, ((c.topic(t), k, v) for t, k, v in map(wire, events)))
        started = time.perf_counter()
        a = c.start("--rules", str(RETAIL), name="a")
        b = c.start("--rules", str(RETAIL), name="b")
        await col.wait("a and b sharing the partitions",
                       lambda: split_between([a, b], topic, PARTITIONS), workers=[a, b])
        await col.wait("some changes", lambda: len(col.records) >= ref.total // 4,
                       workers=[a, b])
        assert a.alive() and b.alive(), c.logs()
        await a.kill()
        killed_at = len(col.records)
        await col.wait("b owning every partition",
                       lambda: owned(b, topic) == set(range(PARTITIONS)), workers=[b])

        def distinct() -> int:
            return len({(r.key, r.json["seq"]) for r in col.records})

        await col.wait(f"{ref.total} distinct changes", lambda: distinct() >= ref.total,
                       workers=[b], quiet=15.0)  # stop early once nothing comes any more
        await col.settle(2.0)
        got = changes_by_customer(col.records)
        print(f"{guarantee}: {ref.total} changes expected, {len(col.records)} received "
              f"({killed_at} at the kill) in {time.perf_counter() - started:.1f} s")
        assert b.alive(), b.tail()
    duplicates = check_at_least_once(got, ref.changes)
    print(f"{guarantee}: {duplicates} duplicates")
    if guarantee == "exactly_once":
        assert duplicates == 0
    assert consumer_view(got) == {cid: ref.segments.get(cid, []) for cid in got}


# ------------------------------------------------------------------ 3. restart


RESTART_RULES = rules_text("restart", """\
  - {id: buyer, when: "purchase_count(7d) >= 1"}
  - {id: big, when: "purchase_amount(7d) >= 500"}
  - {id: quiet, when: "days_since_last_purchase() > 1"}
""")


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_restart_recovers_state_and_continues_seq(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path,
    store: str,
) -> None:
    """SIGTERM a worker, start another one in the group: state (and the due index derived from
    it) comes back from the changelog or the local RocksDB store, not from re-reading the
    inputs; each customer's next change continues its seq."""
    rules_path, rules = write_rules(tmp_path, "restart", RESTART_RULES)
    customers = [f"r-{i}" for i in range(12)]
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_STORE=store) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES), c.topic(DEAD_LETTERS)) as col:
        changes = lambda: col.of(c.topic(SEGMENT_CHANGES))  # noqa: E731
        first = c.start("--rules", str(rules_path), name="w1")
        await produce(kafka_bootstrap, [
            (c.topic(t), k, v) for t, k, v in
            (wire(ev("purchase", cid, T0 + i * MINUTE)) for i, cid in enumerate(customers))])
        await col.wait("first changes", lambda: len(changes()) >= len(customers),
                       workers=[first])
        assert await first.stop() == 0, first.tail()
        if store == "rocksdb://":  # the local store is on disk, under the stable worker id
            datadir = tmp_path / "state" / "worker" / c.settings.group_id / "w1"
            assert list(datadir.rglob("customers-*.db")), list(datadir.rglob("*"))
        second = c.start("--rules", str(rules_path), name="w1" if store == "rocksdb://"
                         else "w2")
        # the clock of every partition moves 3 days on: each customer's due "quiet" fires
        await produce(kafka_bootstrap, [
            (c.topic(t), k, v) for t, k, v in map(wire, sentinels(PARTITIONS, T0 + 3 * DAY))])
        await col.wait("time changes after the restart",
                       lambda: len(changes()) >= 2 * len(customers), workers=[second])
        await produce(kafka_bootstrap, [
            (c.topic(t), k, v) for t, k, v in
            (wire(ev("purchase", cid, T0 + 3 * DAY + i * SECOND, amount=600.0))
             for i, cid in enumerate(customers))])
        await col.wait("changes of the new purchases",
                       lambda: len(changes()) >= 3 * len(customers), workers=[second])
        await col.settle(1.0)
        got = changes_by_customer(changes())
        dead = col.of(c.topic(DEAD_LETTERS))
    assert not dead, [r.json for r in dead]  # nothing was read and applied twice
    assert sorted(got) == sorted(customers)
    for i, cid in enumerate(customers):
        assert transitions(got[cid]) == [
            (1, iso(T0 + i * MINUTE), "event", ("buyer",), ()),
            (2, iso(T0 + i * MINUTE + DAY + 1), "time", ("quiet",), ()),
            (3, iso(T0 + 3 * DAY + i * SECOND), "event", ("big",), ("quiet",)),
        ], cid
        assert {ch["rules_version"] for ch in got[cid]} == {rules.version}


# ------------------------------------------------------------------ 4. timers


TIMER_RULES = rules_text("timers", """\
  - {id: recent_buyer, when: "purchase_count(2m) >= 1"}
  - {id: lapsed, when: "days_since_last_purchase() > 0.001"}
""", "currency: PLN, resolution: 1m, retention: 1d")  # 0.001 days = 86.4 s


def time_changes_of(rules: RuleSet, events: list[Any], until: int) -> list[tuple[Any, ...]]:
    """The (customer, seq, at ms, entered, exited) of simulate's time-driven changes."""
    out: list[tuple[Any, ...]] = []
    sim = Simulator(rules, until=until, on_change=lambda ch: out.append(
        (ch.customer_id, ch.seq, ch.at, ch.entered, ch.exited)) if ch.cause.kind == "time"
        else None)
    for e in events:
        sim.feed(e)
    sim.finish()
    return out


async def test_timers_fire_at_the_exact_instant_with_the_event_clock(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    """A customer buys once, then nothing: 86.401 s later they enter `lapsed`, at the 2-minute
    bucket boundary they leave the windowed `recent_buyer`; both as cause "time" changes with
    `at` exactly the due instant, fired when another customer's event moves the partition's
    clock past them."""
    rules_path, rules = write_rules(tmp_path, "timers", TIMER_RULES)
    buyer = "quiet-buyer"
    p = partition_for(buyer.encode(), PARTITIONS)
    bought = T0 + 10 * SECOND
    events = [ev("purchase", buyer, bought),
              ev("page_view", cid_on(p, PARTITIONS, "clock"), T0 + 10 * MINUTE)]
    assert time_changes_of(rules, events, T0 + 10 * MINUTE) == [
        (buyer, 2, bought + 86_401, ("lapsed",), ()),
        (buyer, 3, T0 + 2 * MINUTE, (), ("recent_buyer",)),
    ]
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
        w = c.start("--rules", str(rules_path))
        await produce(kafka_bootstrap, [(c.topic(t), k, v) for t, k, v in map(wire, events)])
        await col.wait("3 changes", lambda: len(col.records) >= 3, workers=[w])
        await col.settle(1.0)
    got = [r.json for r in col.records]
    assert [(ch["seq"], ch["at"], ch["cause"], ch["entered"], ch["exited"]) for ch in got] == [
        (1, iso(bought), {"kind": "event", "event_id": events[0].event_id,
                           "event_type": "purchase", "event_ts": iso(bought)},
         ["recent_buyer"], []),
        (2, iso(bought + 86_401), {"kind": "time"}, ["lapsed"], []),
        (3, iso(T0 + 2 * MINUTE), {"kind": "time"}, [], ["recent_buyer"]),
    ]
    assert [r.key for r in col.records] == [buyer.encode()] * 3
    assert got[2]["segments"] == ["lapsed"] and set(got[2]) == set(got[0])  # same shape


async def test_timers_fire_within_a_second_with_the_wall_clock(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    """Wall clock, events stamped in the recent past: `lapsed` (exact due, ~6 s ahead) and the
    exit from the windowed `recent_buyer` (the next whole minute) are published within 1 s of
    their due instant (Kafka record timestamp), with `at` = the due instant."""
    rules_path, _ = write_rules(tmp_path, "timers", TIMER_RULES)
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_CLOCK="wall") as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
        w = c.start("--rules", str(rules_path))
        await col.wait("the worker assigned", lambda: bool(owned(w, c.topic("purchases"))),
                       workers=[w])
        await asyncio.sleep(1.0)  # recovery done, timer running
        now = int(time.time() * 1000)
        lapsing = ev("purchase", "lapsing", now - 80 * SECOND)  # lapsed due in ~6.4 s
        boundary = (now + 3 * SECOND) // MINUTE * MINUTE + MINUTE  # 3..63 s ahead
        windowed = ev("purchase", "windowed", boundary - 2 * MINUTE + 500)  # leaves then
        due_lapsed = lapsing.ts + 86_401
        assert due_lapsed > now + 5 * SECOND
        await produce(kafka_bootstrap, [(c.topic(t), k, v)
                                        for t, k, v in map(wire, [lapsing, windowed])])

        def change(cid: str, at: int) -> Record | None:
            return next((r for r in col.records if r.key == cid.encode()
                         and r.json["at"] == iso(at) and r.json["cause"]["kind"] == "time"),
                        None)

        await col.wait("both time changes",
                       lambda: change("lapsing", due_lapsed) is not None
                       and change("windowed", boundary) is not None,
                       timeout=(boundary - now) / 1000 + 30, workers=[w])
    lapsed, left = change("lapsing", due_lapsed), change("windowed", boundary)
    assert lapsed is not None and left is not None
    assert "lapsed" in lapsed.json["entered"]
    assert left.json["exited"] == ["recent_buyer"]
    for record, due in ((lapsed, due_lapsed), (left, boundary)):
        print(f"{record.key!r}: published {record.timestamp - due} ms after due, "
              f"received {record.received * 1000 - due:.0f} ms after due")
        assert 0 <= record.timestamp - due <= 1000, (record.timestamp - due, record.json)


# ------------------------------------------------------------------ 5. rules roll-out, erasure


ROLL_V3 = rules_text("rollout", """\
  - {id: buyer, when: "purchase_count(30d) >= 1"}
  - {id: big, when: "purchase_amount(30d) >= 50"}
  - {id: repeat, when: "purchase_count(30d) >= 2"}
""")  # published --quiet: everybody enters big silently


async def test_rules_roll_out_quiet_invalid_and_erasure_on_a_running_worker(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    v1, v2, v3 = (RuleSet(load_rules_text(t)) for t in (ROLL_V1, ROLL_V2, ROLL_V3))
    port = free_port()
    customers = [f"roll-{i}" for i in range(10)]
    amount = {cid: 200.0 if i % 2 else 100.0 for i, cid in enumerate(customers)}
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_WEB_PORT=str(port)) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
        await publish_rules(c.settings, ROLL_V1, "v1.yaml")
        w = c.start()  # no --rules: the latest version on the rules topic
        await wait_rules_version(port, v1.version, w)

        def send(*events: Any) -> Any:
            return produce(kafka_bootstrap, [(c.topic(t), k, v) for t, k, v in map(wire, events)])

        await send(*(ev("purchase", cid, T0 + i * SECOND, amount=amount[cid])
                     for i, cid in enumerate(customers)))
        await col.wait("buyer changes", lambda: len(col.records) >= len(customers), workers=[w])
        await send(*(ev("email_open", cid, T0 + MINUTE + i * SECOND)
                     for i, cid in enumerate(customers)))
        await col.wait("reader changes", lambda: len(col.records) >= 2 * len(customers),
                       workers=[w])

        # v2: every customer re-evaluated, one "rules" change each
        await publish_rules(c.settings, ROLL_V2, "v2.yaml")
        await wait_rules_version(port, v2.version, w)
        await col.wait("rule changes", lambda: len(col.records) >= 3 * len(customers),
                       workers=[w])
        await col.settle(1.0)
        rule_changes = changes_by_customer(col.records[2 * len(customers):])
        assert sorted(rule_changes) == sorted(customers)
        for cid, [ch] in rule_changes.items():
            assert (ch["seq"], ch["cause"], ch["rules_version"], ch["exited"]) == \
                (3, {"kind": "rules"}, v2.version, ["reader"]), ch
            assert ch["entered"] == (["big"] if amount[cid] >= 150 else []), ch
            assert ch["segments"] == sorted(["buyer", *ch["entered"]]), ch

        # v3 --quiet: the customers who enter `big` get a quiet "rules" change (views apply
        # it, webhooks skip it); later changes carry v3 and continue the seq
        await publish_rules(c.settings, ROLL_V3, "v3.yaml", quiet=True)
        await wait_rules_version(port, v3.version, w)
        cheap = [cid for cid in customers if amount[cid] < 150]
        base = 3 * len(customers) + len(cheap)
        await col.wait("quiet changes", lambda: len(col.records) >= base, workers=[w])
        await col.settle(1.0)
        quiet = [r.json for r in col.records[3 * len(customers):]]
        assert sorted(ch["customer_id"] for ch in quiet) == sorted(cheap)
        assert {(ch["seq"], ch["cause"]["kind"], ch.get("quiet"), tuple(ch["entered"]),
                 ch["rules_version"]) for ch in quiet} == {(4, "rules", True, ("big",),
                                                            v3.version)}
        first, second, erased = customers[0], customers[1], customers[3]
        assert first in cheap and second not in cheap and erased not in cheap
        await send(ev("purchase", first, T0 + 2 * MINUTE))
        await col.wait("a change under v3", lambda: len(col.records) > base, workers=[w])
        ch = col.records[-1].json
        assert (ch["customer_id"], ch["seq"], ch["cause"]["kind"], ch["rules_version"],
                ch["entered"], ch["segments"], "quiet" in ch) == \
            (first, 5, "event", v3.version, ["repeat"], ["big", "buyer", "repeat"], False), ch

        # an invalid file on the rules topic (bypassing validation) is refused; v3 stays
        await produce(kafka_bootstrap, [(c.topic(RULES), b"rules", orjson.dumps(
            {"yaml": "garbage: [", "source": "broken.yaml", "quiet": False}))])
        await col.wait("the refusal in the log",
                       lambda: "refused" in w.log_text(), workers=[w])
        _, metrics = await http_get(port, "/metrics")
        assert b"segmenter_rules_refused_total 1.0" in metrics, metrics[-2000:]
        await send(ev("purchase", second, T0 + 3 * MINUTE))
        await col.wait("a change after the refusal",
                       lambda: len(col.records) > base + 1, workers=[w])
        ch = col.records[-1].json
        assert (ch["customer_id"], ch["seq"], ch["rules_version"], ch["entered"]) == \
            (second, 4, v3.version, ["repeat"]), ch
        _, ready = await http_get(port, "/readyz")
        assert orjson.loads(ready)["rules_version"] == v3.version

        # erasure: one change exiting everything, then a tombstone of the customer (in the
        # same transaction, on the same partition, right after it); no other tombstone
        assert col.tombstones == []
        await send(ev("customer_erased", erased, T0 + 4 * MINUTE))
        await col.wait("the erasure and its tombstone",
                       lambda: len(col.records) > base + 2 and len(col.tombstones) >= 1,
                       workers=[w])
        erasure_record = col.records[-1]
        ch = erasure_record.json
        assert (ch["customer_id"], ch["seq"], ch["cause"]["kind"], ch["entered"], ch["exited"],
                ch["segments"]) == (erased, 4, "erasure", [], ["big", "buyer"], []), ch
        [tombstone] = col.tombstones
        assert (tombstone.key, tombstone.partition, tombstone.offset) == \
            (erased.encode(), erasure_record.partition, erasure_record.offset + 1)
        await send(ev("page_view", erased, T0 + 5 * MINUTE),
                   ev("purchase", erased, T0 + 6 * MINUTE))
        await col.wait("the erased id again", lambda: len(col.records) > base + 3, workers=[w])
        await col.settle(1.0)
        again = [r.json for r in col.records[base + 3:]]
        assert [(ch["customer_id"], ch["seq"], ch["cause"]["kind"], ch["entered"])
                for ch in again] == [(erased, 1, "event", ["big", "buyer"])], again
        assert col.records[-1].offset > tombstone.offset  # the new life comes after it
        assert len(col.tombstones) == 1
        assert w.alive(), w.tail()


# ------------------------------------------------------------------ 6. bad input


BAD_INPUT_RULES = rules_text("bad-input", """\
  - {id: seen, when: "days_since_first_seen() >= 0"}
""", "currency: PLN, retention: 2d, dedup_horizon: 1d")

GOOD_TYPE = {"purchases": "purchase", "email-events": "email_open",
             "web-activity": "page_view", "customer-profiles": "profile_update"}


async def test_bad_input_goes_to_dead_letters_and_wrong_keys_are_rekeyed(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    """On every input topic: garbage bytes, malformed JSON, a wrong type, an unknown event
    type, a wrong currency, a late, a future and a duplicate event each end in the dead-letter
    topic with their reason, original bytes and source; good events around them are applied;
    a record without a key and one with someone else's key are re-keyed and applied."""
    rules_path, _ = write_rules(tmp_path, "bad", BAD_INPUT_RULES)
    now = int(time.time() * 1000)
    records: list[tuple[str, bytes | None, bytes, str | None]] = []  # topic, key, value, reason
    good: list[str] = []
    for topic, etype in GOOD_TYPE.items():
        def good_event(cid: str, etype: str = etype) -> bytes:
            good.append(cid)
            return encode_event(ev(etype, cid, now - 5 * SECOND))

        first = good_event(f"good-{topic}-1")
        purchase = orjson.loads(encode_event(ev("purchase", f"bad-{topic}", now)))
        bad = {
            "bad_encoding": b"\xff\xfe\x00 not utf-8",
            "malformed_json": b'{"event_id": "x", ',
            "bad_type": orjson.dumps({**purchase, "event_id": 42}),
            "unknown_event_type": orjson.dumps({**purchase, "type": "teleported"}),
            "currency_mismatch": orjson.dumps({**purchase, "currency": "EUR"}),
            "too_late": orjson.dumps({**purchase, "ts": now - 3 * DAY}),
            "too_far_in_future": orjson.dumps({**purchase, "ts": now + HOUR}),
        }
        records.append((topic, f"good-{topic}-1".encode(), first, None))
        for reason, value in bad.items():
            records.append((topic, f"bad-{topic}".encode() if reason != "bad_encoding"
                            else None, value, reason))
        records.append((topic, f"good-{topic}-1".encode(), first, "duplicate"))
        records.append((topic, f"good-{topic}-2".encode(), good_event(f"good-{topic}-2"),
                        None))
        records.append((topic, None, good_event(f"nokey-{topic}"), None))
        records.append((topic, b"someone-else", good_event(f"wrongkey-{topic}"), None))
    expected_dead = sum(1 for r in records if r[3] is not None)
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_CLOCK="wall") as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES), c.topic(DEAD_LETTERS)) as col:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        sent: dict[tuple[str, int, int], tuple[bytes | None, bytes, str | None]] = {}
        try:
            for topic, key, value, why in records:
                md = await producer.send_and_wait(c.topic(topic), value, key=key)
                sent[(md.topic, md.partition, md.offset)] = (key, value, why)
        finally:
            await producer.stop()
        w = c.start("--rules", str(rules_path), name="bad-input-worker")
        changes = lambda: col.of(c.topic(SEGMENT_CHANGES))  # noqa: E731
        dead = lambda: col.of(c.topic(DEAD_LETTERS))  # noqa: E731
        await col.wait(f"{len(good)} changes and {expected_dead} dead letters",
                       lambda: len(changes()) >= len(good) and len(dead()) >= expected_dead,
                       workers=[w])
        await col.settle(1.5)
        assert w.alive(), w.tail()
    got = changes_by_customer(changes())
    assert sorted(got) == sorted(good)
    for r in changes():
        assert r.partition == partition_for(r.key or b"", PARTITIONS), r
        assert transitions([r.json]) == [(1, r.json["at"], "event", ("seen",), ())], r.json
    assert len(dead()) == expected_dead, [r.json for r in dead()]
    reasons: Counter[tuple[str, str]] = Counter()
    for r in dead():
        letter = r.json
        src = letter["source"]
        key, value, why = sent[(src["topic"], src["partition"], src["offset"])]
        assert why is not None and letter["reason"] == why, letter
        assert base64.b64decode(letter["value_b64"]) == value, letter
        assert letter["key_b64"] == (base64.b64encode(key).decode() if key else None), letter
        assert letter["key"] == (key.decode() if key else None), letter
        assert letter["worker_id"] == "bad-input-worker" and letter["message"], letter
        assert letter["at"].endswith("Z"), letter
        assert r.key == key, (r.key, letter)
        reasons[(src["topic"].removeprefix(c.prefix), why)] += 1
    assert reasons == Counter({(t, why): 1 for t, _, _, why in records if why})


# ------------------------------------------------------------------ topology check


async def test_worker_refuses_inputs_with_different_partition_counts(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    from tests.kafka_helpers import create_topics

    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       ensure=False) as c:
        await create_topics(kafka_admin, [c.topic("purchases")], partitions=PARTITIONS)
        await create_topics(kafka_admin, [c.topic("email-events")], partitions=2)
        w = c.start("--rules", str(RETAIL))
        code = await asyncio.to_thread(w.process.wait, 60)
        text = w.log_text()
        assert code != 0, text
        assert f"{c.topic('email-events')}=2" in text and f"{c.topic('purchases')}=4" in text, \
            text
        assert "SEGMENTER_PARTITIONS" in text, text
        assert not (set(await kafka_admin.list_topics()) & {c.topic(SEGMENT_CHANGES),
                                                          c.topic("web-activity")})


async def test_after_a_restart_the_latest_published_rules_win_over_the_rules_file(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    """A worker started with --rules v1 seeds the empty rules topic; v2 is published; the worker
    restarted with the same --rules keeps v2 and says that the file differs."""
    v1_path, v1 = write_rules(tmp_path, "v1", ROLL_V1)
    v2 = RuleSet(load_rules_text(ROLL_V2))
    port = free_port()
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_WEB_PORT=str(port)) as c:
        first = c.start("--rules", str(v1_path), name="r1")
        await wait_rules_version(port, v1.version, first)
        assert "seeding it with --rules v1.yaml" in first.log_text()
        await publish_rules(c.settings, ROLL_V2, "v2.yaml")
        await wait_rules_version(port, v2.version, first)
        assert await first.stop() == 0, first.tail()
        second = c.start("--rules", str(v1_path), name="r1")
        await wait_rules_version(port, v2.version, second)
        await asyncio.sleep(1.0)  # nothing switches it back
        _, ready = await http_get(port, "/readyz")
        assert orjson.loads(ready)["rules_version"] == v2.version
        text = second.log_text()
        assert f"--rules v1.yaml ({v1.version}) differs from the version on the rules topic, " \
               f"{v2.version}" in text, text[-2000:]


async def test_one_event_far_in_the_future_does_not_move_a_partitions_event_clock(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    """Event clock: an event at 9999-12-31 on a partition is dead-lettered too_far_in_future;
    the other customers of that partition get exactly simulate's changes of the log without
    it (no mass exit at year 9999), and later events are not refused as too_late."""
    rules_path, rules = write_rules(tmp_path, "timers", TIMER_RULES)
    p = 0
    a, b, poison = (cid_on(p, PARTITIONS, x) for x in ("pa", "pb", "poison"))
    clean = [ev("purchase", a, T0), ev("purchase", b, T0 + SECOND),
             ev("page_view", cid_on(p, PARTITIONS, "clock"), T0 + 10 * MINUTE)]
    bad = ev("purchase", poison, 253_402_300_799_000)
    ref = simulate(rules, [encode_event(e) for e in clean])
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES), c.topic(DEAD_LETTERS)) as col:
        w = c.start("--rules", str(rules_path))
        await produce(kafka_bootstrap, [(c.topic(t), k, v) for t, k, v in
                                        map(wire, [clean[0], bad, *clean[1:]])])
        await col.wait("changes and the dead letter",
                       lambda: len(col.of(c.topic(SEGMENT_CHANGES))) >= ref.total
                       and bool(col.of(c.topic(DEAD_LETTERS))), workers=[w], quiet=10.0)
        await col.settle(1.5)
    got = changes_by_customer(col.of(c.topic(SEGMENT_CHANGES)))
    assert got == ref.changes, diff_report(got, ref.changes)
    [letter] = [r.json for r in col.of(c.topic(DEAD_LETTERS))]
    assert (letter["reason"], letter["customer_id"]) == ("too_far_in_future", poison)
