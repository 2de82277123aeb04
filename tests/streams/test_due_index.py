"""DueIndex: which customers are due for a time-driven re-evaluation, earliest first, without
scanning them all; re-setting, clearing, stale heap entries, oldest(), compaction."""

from __future__ import annotations

import random

from streams.due_index import DueIndex


def drain(idx: DueIndex, t: int) -> list[tuple[int, str]]:
    return list(idx.pop_due(t))


def test_pops_what_is_due_earliest_first() -> None:
    idx = DueIndex()
    idx.set("c", 30)
    idx.set("a", 10)
    idx.set("d", 40)
    idx.set("b", 20)
    assert len(idx) == 4
    assert drain(idx, 25) == [(10, "a"), (20, "b")]
    assert len(idx) == 2
    assert (idx.get("a"), idx.get("c")) == (None, 30)
    assert drain(idx, 29) == []
    assert drain(idx, 30) == [(30, "c")]  # due at or before t
    assert drain(idx, 10**15) == [(40, "d")]
    assert len(idx) == 0
    assert drain(idx, 10**15) == []


def test_ties_all_come_out() -> None:
    idx = DueIndex()
    for key in ("x", "y", "z"):
        idx.set(key, 5)
    assert sorted(drain(idx, 5)) == [(5, "x"), (5, "y"), (5, "z")]


def test_reset_to_later_moves_the_key() -> None:
    idx = DueIndex()
    idx.set("a", 10)
    idx.set("b", 15)
    idx.set("a", 20)
    assert idx.get("a") == 20
    assert len(idx) == 2
    assert drain(idx, 15) == [(15, "b")]  # the stale (10, a) is skipped
    assert drain(idx, 20) == [(20, "a")]


def test_reset_to_earlier_moves_the_key() -> None:
    idx = DueIndex()
    idx.set("a", 50)
    idx.set("a", 5)
    assert drain(idx, 10) == [(5, "a")]
    assert drain(idx, 100) == []  # the stale (50, a) never comes out


def test_back_and_forth_yields_once() -> None:
    idx = DueIndex()
    idx.set("a", 10)
    idx.set("a", 20)
    idx.set("a", 10)
    idx.set("a", 10)  # same instant again: nothing new
    assert drain(idx, 100) == [(10, "a")]
    assert len(idx) == 0


def test_clearing() -> None:
    idx = DueIndex()
    idx.set("a", 10)
    idx.set("b", 20)
    idx.set("a", None)
    idx.set("never-set", None)  # harmless
    assert idx.get("a") is None
    assert len(idx) == 1
    assert drain(idx, 100) == [(20, "b")]
    idx.set("a", 30)  # set again after clearing
    assert drain(idx, 100) == [(30, "a")]


def test_key_reset_while_popping_is_yielded_again_when_due() -> None:
    idx = DueIndex()
    idx.set("a", 10)
    idx.set("b", 20)
    seen = []
    for due, key in idx.pop_due(100):
        seen.append((due, key))
        if key == "a" and due == 10:
            idx.set("a", 15)  # still due (15 <= 100): comes out again, before b
        if key == "b":
            idx.set("b", 500)  # not due yet: stays
    assert seen == [(10, "a"), (15, "a"), (20, "b")]
    assert idx.get("b") == 500
    assert len(idx) == 1


def test_popped_key_set_to_the_same_instant_comes_back() -> None:
    idx = DueIndex()
    idx.set("a", 10)
    assert drain(idx, 10) == [(10, "a")]
    idx.set("a", 10)
    assert idx.get("a") == 10
    assert drain(idx, 10) == [(10, "a")]


def test_oldest_skips_stale_entries() -> None:
    idx = DueIndex()
    assert idx.oldest() is None
    idx.set("a", 10)
    idx.set("b", 20)
    assert idx.oldest() == 10
    idx.set("a", 30)
    assert idx.oldest() == 20
    idx.set("b", None)
    assert idx.oldest() == 30
    idx.set("a", None)
    assert idx.oldest() is None
    assert len(idx) == 0


def test_oldest_does_not_pop() -> None:
    idx = DueIndex()
    idx.set("a", 10)
    assert idx.oldest() == 10
    assert idx.oldest() == 10
    assert drain(idx, 10) == [(10, "a")]


def test_compaction_bounds_the_heap_and_keeps_the_answers() -> None:
    idx = DueIndex()
    rng = random.Random(3)
    expected: dict[str, int] = {}
    for _ in range(20_000):
        key = f"c{rng.randrange(50)}"
        if rng.random() < 0.05:
            idx.set(key, None)
            expected.pop(key, None)
        else:
            due = rng.randrange(1_000_000)
            idx.set(key, due)
            expected[key] = due
    assert idx.entries <= 4 * len(idx) + 1024 + 1  # stale entries were compacted away
    assert len(idx) == len(expected)
    assert idx.oldest() == min(expected.values())
    out = drain(idx, 10**9)
    assert out == sorted((d, k) for k, d in expected.items())
    assert len(idx) == 0


def test_matches_a_plain_dict_under_random_operations() -> None:
    idx = DueIndex()
    model: dict[str, int] = {}
    rng = random.Random(11)
    now = 0
    for _ in range(5000):
        op = rng.random()
        key = f"k{rng.randrange(30)}"
        if op < 0.6:
            due = now + rng.randrange(-5, 200)
            idx.set(key, due)
            model[key] = due
        elif op < 0.7:
            idx.set(key, None)
            model.pop(key, None)
        else:
            now += rng.randrange(0, 50)
            want = sorted((d, k) for k, d in model.items() if d <= now)
            got = drain(idx, now)
            assert got == want  # in (instant, key) order, as the simulator fires them
            for _, k in want:
                del model[k]
        assert len(idx) == len(model)
        assert idx.oldest() == (min(model.values()) if model else None)


def test_a_key_reset_while_iterating_is_yielded_even_when_the_set_compacts() -> None:
    """A timer that re-sets its own key to an instant already due is fired again in the same
    pass, also when that pass's `set`s cross the compaction threshold (the iteration reads the
    new heaps, not the ones it started with)."""
    idx = DueIndex()
    idx.set("a", 10)
    for i in range(1020):  # "b" moves on and on: its stale entries pile up, short of compacting
        idx.set("b", 1_000 + i)
    out: list[tuple[int, str]] = []
    compacted = False
    for d, key in idx.pop_due(20):
        out.append((d, key))
        if (d, key) == (10, "a"):
            for i in range(40):
                idx.set("b", 5_000 + i)
            compacted = idx.entries < 100  # 1,060 sets of "b" in all: a compaction dropped them
            idx.set("a", 15)  # due again within this pass
    assert compacted
    assert out == [(10, "a"), (15, "a")]
