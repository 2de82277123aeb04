"""The worker's record handling without Kafka: routing, dead letters, clocks, ticks, recovery."""

from __future__ import annotations

import base64
import itertools

import orjson
import pytest

from streams.codec import decode_state
from streams.events import encode_event
from streams.processor import TICK_TIME, Processor, partition_for
from tests.factories import DAY, T0, days, hours, purchase, rules_from_yaml, segment

P = 4


def _rules():  # type: ignore[no-untyped-def]
    return rules_from_yaml(
        segment("buyer", "purchase_count(7d) >= 1", label="Buyer", color="#00FF00"),
        segment("lapsed", "days_since_last_purchase() > 2"),
    )


class Table(dict[str, bytes]):
    def apply(self, out) -> None:  # type: ignore[no-untyped-def]
        if out.write:
            if out.state is None:
                self.pop(out.customer_id, None)
            else:
                self[out.customer_id] = out.state


_OFFSETS = itertools.count()


def _feed(proc: Processor, table: Table, ev, key: bytes | None = None,  # type: ignore[no-untyped-def]
          partition: int | None = None, offset: int | None = None):
    cid = ev.customer_id.encode()
    p = partition_for(cid, P) if partition is None else partition
    out = proc.on_input(cid if key is None else key, encode_event(ev), topic="purchases",
                        partition=p, offset=next(_OFFSETS) if offset is None else offset,
                        get=table.get)
    table.apply(out)
    return out


def test_event_on_its_partition_changes_segments_and_writes_state() -> None:
    proc, table = Processor(_rules(), partitions=P, worker_id="w1", clock="event"), Table()
    out = _feed(proc, table, purchase(T0, 100.0, customer_id="c-1"))
    assert [s.topic for s in out.sends] == ["changes"]
    change = orjson.loads(out.sends[0].value)
    assert out.sends[0].key == b"c-1"
    assert change["entered"] == ["buyer"] and change["seq"] == 1
    assert decode_state(table["c-1"]).members == {"buyer": T0}


def test_wrong_key_or_partition_is_rekeyed_not_applied() -> None:
    proc, table = Processor(_rules(), partitions=P, worker_id="w1", clock="event"), Table()
    ev = purchase(T0, 100.0, customer_id="c-1")
    out = _feed(proc, table, ev, key=b"someone-else")
    assert [(s.topic, s.key) for s in out.sends] == [("rekey", b"c-1")]
    assert table == {}
    right = partition_for(b"c-1", P)
    out = _feed(proc, table, ev, partition=(right + 1) % P)
    assert [(s.topic, s.key) for s in out.sends] == [("rekey", b"c-1")]
    assert table == {}


def test_garbage_goes_to_dead_letters_with_original_bytes() -> None:
    proc = Processor(_rules(), partitions=P, worker_id="w7", clock="event", wall=lambda: 1.5)
    raw = b"\xff\xfe not json"
    out = proc.on_input(b"k", raw, topic="web-activity", partition=2, offset=41,
                        get=lambda cid: None)
    [dl] = out.sends
    body = orjson.loads(dl.value)
    assert dl.topic == "dead_letters" and dl.key == b"k"
    assert body["reason"] == "bad_encoding"
    assert base64.b64decode(body["value_b64"]) == raw
    assert body["source"] == {"topic": "web-activity", "partition": 2, "offset": 41}
    assert body["worker_id"] == "w7" and body["at"] == "1970-01-01T00:00:01.500Z"


def test_duplicate_is_dead_lettered_and_changes_nothing() -> None:
    proc, table = Processor(_rules(), partitions=P, worker_id="w1", clock="event"), Table()
    ev = purchase(T0, 100.0, customer_id="c-1")
    _feed(proc, table, ev)
    before = table["c-1"]
    out = _feed(proc, table, ev)
    assert [s.topic for s in out.sends] == ["dead_letters"]
    assert orjson.loads(out.sends[0].value)["reason"] == "duplicate"
    assert decode_state(table["c-1"]) == decode_state(before)


def test_redelivered_record_is_skipped_however_far_the_clock_has_moved() -> None:
    """At-least-once: after a crash the new owner re-reads from the committed offset, which
    can be far behind what the table already has. With the event clock, weeks of event time can
    separate the first delivery from the second: beyond the event-id dedup horizon, so only the
    source offset kept in the state tells that the record was applied."""
    proc, table = Processor(_rules(), partitions=P, worker_id="w1", clock="event",
                            sources=("purchases",)), Table()
    p = partition_for(b"c-1", P)
    other = next(f"o-{i}" for i in range(100) if partition_for(f"o-{i}".encode(), P) == p)
    first = purchase(T0, 100.0, customer_id="c-1")
    _feed(proc, table, first, offset=10)
    _feed(proc, table, purchase(T0 + days(60), 1.0, customer_id=other), offset=11)
    _feed(proc, table, purchase(T0 + days(60), 5.0, customer_id="c-1"), offset=12)
    before = decode_state(table["c-1"])
    assert before.offsets == {"0": 12}
    out = _feed(proc, table, first, offset=10)  # the same record again
    assert out.replayed and not out.write
    assert [orjson.loads(s.value)["seq"] for s in out.sends] == [1]  # its change, resent
    assert decode_state(table["c-1"]) == before
    assert before.lifetime_orders == 2
    # a record past the one applied last is new, even with an old event time
    out = _feed(proc, table, purchase(T0 + days(1), 7.0, customer_id="c-1"), offset=13)
    assert not out.replayed and decode_state(table["c-1"]).lifetime_orders == 3


def test_replayed_record_sends_its_changes_again_identically() -> None:
    """kill -9: the state update may reach the changelog while the change records do not; the
    replay then finds the record applied, and sends the same change records again from the
    state's outbox (at-least-once: identical duplicates), for input records and ticks."""
    clock = [1000.0]
    proc, table = Processor(_rules(), partitions=P, worker_id="w1", clock="event",
                            sources=("purchases", "ticks"), wall=lambda: clock[0]), Table()
    p = partition_for(b"c-1", P)
    first = _feed(proc, table, purchase(T0, 100.0, customer_id="c-1"), offset=5)
    [sent] = [s.value for s in first.sends if s.topic == "changes"]
    again = _feed(proc, table, purchase(T0, 100.0, customer_id="c-1"), offset=5)
    assert again.replayed and [s.value for s in again.sends] == [sent] and not again.write
    other = next(f"o-{i}" for i in range(100) if partition_for(f"o-{i}".encode(), P) == p)
    _feed(proc, table, purchase(T0 + days(3), 1.0, customer_id=other), offset=6)
    [tick] = [t for t in proc.due_ticks(p) if t.key == b"c-1"]
    fired = proc.on_tick(b"c-1", tick.value, partition=p, get=table.get, topic="ticks", offset=9)
    table.apply(fired)
    [lapsed] = [s.value for s in fired.sends]
    replay = proc.on_tick(b"c-1", tick.value, partition=p, get=table.get, topic="ticks",
                          offset=9)
    assert replay.replayed and [s.value for s in replay.sends] == [lapsed]
    # the outbox forgets what is older than OUTBOX_MS of wall time
    clock[0] += 61.0
    _feed(proc, table, purchase(T0 + days(3), 2.0, customer_id="c-1"), offset=7)
    assert all(e[1] != 5 for e in decode_state(table["c-1"]).outbox)
    assert _feed(proc, table, purchase(T0, 100.0, customer_id="c-1"), offset=5).sends == []


def test_event_clock_is_per_partition_and_drives_ticks() -> None:
    proc, table = Processor(_rules(), partitions=P, worker_id="w1", clock="event"), Table()
    _feed(proc, table, purchase(T0, 100.0, customer_id="c-1"))
    p = partition_for(b"c-1", P)
    assert proc.due_ticks(p) == []  # nothing due yet: the clock is at T0
    # another customer on the same partition moves the clock 3 days on
    other = next(f"o-{i}" for i in range(100) if partition_for(f"o-{i}".encode(), P) == p)
    _feed(proc, table, purchase(T0 + days(3), 1.0, customer_id=other))
    ticks = proc.due_ticks(p)
    assert [(t.key, t.partition) for t in ticks] == [(b"c-1", p)]
    assert ticks[0].value.startswith(TICK_TIME)
    out = proc.on_tick(b"c-1", ticks[0].value, partition=p, get=table.get)
    table.apply(out)
    [change] = out.changes
    assert change.cause.kind == "time" and change.entered == ("lapsed",)
    assert change.at == T0 + 2 * DAY + 1  # the first millisecond after 2 days, not the tick time


def test_rebuild_restores_due_index_and_clock_from_table() -> None:
    proc, table = Processor(_rules(), partitions=P, worker_id="w1", clock="event"), Table()
    _feed(proc, table, purchase(T0 + hours(5), 100.0, customer_id="c-1"))
    p = partition_for(b"c-1", P)
    fresh = Processor(_rules(), partitions=P, worker_id="w2", clock="event")
    fresh.rebuild(p, list(table.items()))
    assert fresh.now(p) == T0 + hours(5)
    assert fresh.index(p).get("c-1") == proc.index(p).get("c-1")


def test_new_rule_version_reevaluates_on_next_tick() -> None:
    proc, table = Processor(_rules(), partitions=P, worker_id="w1", clock="event"), Table()
    _feed(proc, table, purchase(T0, 100.0, customer_id="c-1"))
    proc.switch_rules(rules_from_yaml(segment("big", "purchase_amount(7d) >= 50")))
    p = partition_for(b"c-1", P)
    out = proc.on_tick(b"c-1", TICK_TIME + b"0", partition=p, get=table.get)
    [change] = out.changes
    assert change.cause.kind == "rules"
    assert change.entered == ("big",) and change.exited == ("buyer",)
    assert change.seq == 2


def test_state_cache_reuses_the_decoded_state_only_for_the_bytes_it_wrote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streams.processor as processor
    from streams.state import CustomerState

    decoded: list[bytes] = []
    real = processor.decode_state

    def counting(data: bytes) -> CustomerState:
        decoded.append(data)
        return real(data)

    monkeypatch.setattr(processor, "decode_state", counting)
    cached = Processor(_rules(), partitions=P, worker_id="w1", clock="event", state_cache=1)
    plain = Processor(_rules(), partitions=P, worker_id="w1", clock="event")
    t1, t2 = Table(), Table()
    evs = [purchase(T0 + hours(i), 10.0 * (i + 1), customer_id="c-1") for i in range(3)]
    evs += [purchase(T0, 1.0, customer_id="c-2"), purchase(T0 + hours(5), 1.0, customer_id="c-1")]
    for e in evs[:2]:
        _feed(cached, t1, e)
    assert decoded == []  # the second event found the state it had written
    t1["c-1"] = bytes(bytearray(t1["c-1"]))  # equal content, another object (e.g. recovered)
    _feed(cached, t1, evs[2])
    assert len(decoded) == 1
    _feed(cached, t1, evs[3])  # c-2 evicts c-1 (size 1)
    _feed(cached, t1, evs[4])
    assert len(decoded) == 2
    for e in evs:
        _feed(plain, t2, e)
    assert {k: decode_state(v) for k, v in t1.items()} == {
        k: decode_state(v) for k, v in t2.items()}
