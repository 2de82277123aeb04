"""The event-time merge of a partition's input topics."""

from __future__ import annotations

from streams.merge import TimestampMerger


def _drained(states: dict[str, bool | None]):  # type: ignore[no-untyped-def]
    return lambda source: states.get(source, True)


def test_hands_out_in_event_time_order_once_every_source_has_a_record() -> None:
    m = TimestampMerger()
    m.push(0, "web", 30, "w30")
    m.push(0, "web", 50, "w50")
    states: dict[str, bool | None] = {"web": False, "buy": False}
    assert m.pop_ready(0, ["web", "buy"], _drained(states), 0) == []  # buy has more coming
    m.push(0, "buy", 40, "b40")
    # w50 waits: buy may still deliver something earlier than 50
    assert m.pop_ready(0, ["web", "buy"], _drained(states), 1) == ["w30", "b40"]
    states["buy"] = True  # buy read to its end
    assert m.pop_ready(0, ["web", "buy"], _drained(states), 2) == ["w50"]


def test_a_source_known_to_have_more_is_waited_for_longer_than_an_unknown_one() -> None:
    m = TimestampMerger(idle_ms=100, pending_ms=1000)
    m.push(0, "web", 10, "w10")
    unknown: dict[str, bool | None] = {"buy": None}
    assert m.pop_ready(0, ["web", "buy"], _drained(unknown), 0) == []
    assert m.pop_ready(0, ["web", "buy"], _drained(unknown), 99) == []
    assert m.pop_ready(0, ["web", "buy"], _drained(unknown), 100) == ["w10"]
    m.push(0, "web", 20, "w20")
    pending: dict[str, bool | None] = {"buy": False}
    assert m.pop_ready(0, ["web", "buy"], _drained(pending), 200) == []
    assert m.pop_ready(0, ["web", "buy"], _drained(pending), 500) == []
    assert m.pop_ready(0, ["web", "buy"], _drained(pending), 1200) == ["w20"]


def test_ties_keep_arrival_order_and_partitions_are_independent() -> None:
    m = TimestampMerger()
    m.push(0, "a", 5, "a1")
    m.push(0, "b", 5, "b1")
    m.push(1, "a", 1, "p1")
    assert m.pop_ready(0, ["a", "b"], _drained({}), 0) == ["a1", "b1"]
    assert m.buffered(1) == 1 and m.partitions() == [1]


def test_dropping_a_revoked_partition_forgets_its_buffer() -> None:
    m = TimestampMerger()
    m.push(3, "a", 1, "x")
    m.push(3, "b", 2, "y")
    assert m.drop(3) == 2
    assert m.buffered(3) == 0 and m.pop_ready(3, ["a", "b"], _drained({}), 0) == []
