"""rules.functions: the exact next change of `purchase_amount(w) <op> y` (amount_flip) against
brute force over the engine's own window sum, and what it saves: no timer where time alone
cannot change the answer."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from model.state import CustomerState, fold_event
from rules.context import Ctx
from rules.functions import _SCAN, _WALK, _window, amount_flip, build_term
from rules.model import HOUR_MS, RuleSettings
from tests.factories import (
    T0,
    EngineRun,
    days,
    hours,
    purchase,
    refund,
    rules_from_yaml,
    segment,
)

OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge, ">": operator.gt, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne}
# fractional amounts whose sums land on, or a rounding error away from, the thresholds below
AMOUNTS = [0.1, 0.2, 0.3, 0.7, 1.1, 2.2, 3.3, 100.01, 0.015, 500.0]


def _state(events: list[tuple[int, str, float]]) -> CustomerState:
    st = CustomerState("c1")
    for ts, etype, amount in events:  # in any order: buckets made out of time order too
        fold_event(st, purchase(ts, amount) if etype == "purchase" else refund(ts, amount),
                   HOUR_MS, {}, HOUR_MS)
    return st


def _brute(fn: Callable[[Ctx], Any], test: Callable[[Any, Any], Any], y: float,
           swapped: bool, st: CustomerState, t: int, nb: int) -> int | None:
    """The first instant after t where the comparison's truth differs from now: the amount is
    constant within a bucket, so every bucket start up to the window's length ahead."""
    def truth(at: int) -> bool:
        v = fn(Ctx(st, at, HOUR_MS))
        return bool(test(y, v) if swapped else test(v, y))
    now = truth(t)
    for b in range(t // HOUR_MS + 1, t // HOUR_MS + nb + 1):
        if truth(b * HOUR_MS) != now:
            return b * HOUR_MS
    return None


@settings(max_examples=600, deadline=None)
@given(events=st.lists(st.tuples(st.integers(0, 12), st.sampled_from(
           ["purchase", "purchase", "refund"]), st.sampled_from(AMOUNTS)), max_size=12),
       w=st.sampled_from([1, 2, 5, 24, 48]),
       parts=st.lists(st.sampled_from(AMOUNTS), min_size=1, max_size=4),
       shape=st.sampled_from(["sum", "-sum", "round", "zero", "int", "huge", "beyond"]),
       op=st.sampled_from(sorted(OPS)), swapped=st.booleans(),
       at=st.integers(0, 14 * HOUR_MS))
# 0.1 + 0.2 + 0.3 - 0.1 = 0.5000000000000001 but 0.2 + 0.3 = 0.5: the running figure says the
# amount is still above 0.5 when the 0.1 leaves, the condition will compute 0.5
@example(events=[(0, "purchase", 0.1), (1, "purchase", 0.2), (2, "purchase", 0.3)], w=3,
         parts=[0.2, 0.3], shape="sum", op=">", swapped=False, at=2 * HOUR_MS)
@example(events=[(0, "purchase", 0.1), (1, "purchase", 0.2), (2, "purchase", 0.3)], w=3,
         parts=[0.2, 0.3], shape="sum", op="==", swapped=True, at=2 * HOUR_MS)
# an out-of-order purchase made the oldest bucket last in the state: it leaves the window first
@example(events=[(5, "purchase", 100.01), (6, "purchase", 100.01), (2, "purchase", 100.01)],
         w=24, parts=[100.01, 100.01, 0.3], shape="sum", op=">=", swapped=False,
         at=6 * HOUR_MS)
def test_amount_flip_is_the_first_instant_the_comparison_changes(
        events: list[tuple[int, str, float]], w: int, parts: list[float], shape: str, op: str,
        swapped: bool, at: int) -> None:
    total = 0.0
    for p in parts:
        total += p
    # int thresholds too: exact compare up to 2**53, past it (and past the floats) as Python does
    y = {"sum": total, "-sum": -total, "round": round(total, 2), "zero": 0.0,
         "int": int(total), "huge": (1 << 60) + 1, "beyond": 10 ** 400}[shape]
    st_ = _state([(T0 + h * HOUR_MS, etype, a) for h, etype, a in events
                  if T0 + h * HOUR_MS <= T0 + at])
    term = build_term("purchase_amount", (w * HOUR_MS,), f"purchase_amount({w}h)",
                      RuleSettings(currency="PLN", resolution_ms=HOUR_MS))
    assert term.amount == w
    flip = amount_flip(w, term.fn, OPS[op], y, swapped)
    t = T0 + at
    got, want = flip(Ctx(st_, t, HOUR_MS)), _brute(term.fn, OPS[op], y, swapped, st_, t, w)
    bnow = t // HOUR_MS
    exits = sorted((b + w) * HOUR_MS for b, bk in st_.buckets.items()
                   if b > bnow - w and (bk.pc or bk.rc))
    if want is not None and want in exits[:_WALK]:
        assert got == want  # exact within the first _WALK exits
    elif want is not None:  # further: the exit after them, to look again (early, never late)
        assert got == exits[_WALK] <= want
    else:  # never: no timer, or a look again past the first _WALK exits
        assert got is None or (len(exits) > _WALK and got == exits[_WALK])


def test_a_threshold_not_reached_sets_no_timer_and_a_reached_one_times_exactly() -> None:
    """`purchase_amount(30d) >= 500`: below it with purchases only, time alone can only lower
    the amount, so there is nothing to look at until the next event; above it, the due instant is
    when enough has left the window, not the first bucket edge."""
    run = EngineRun(rules_from_yaml(segment("spender", "purchase_amount(30d) >= 500"),
                                    settings={"currency": "PLN", "resolution": "1d"}))
    run.apply(purchase(T0, 200))
    assert run.state().due == {}
    run.apply(purchase(T0 + days(3), 250))
    assert run.state().due == {}
    run.apply(purchase(T0 + days(5), 300))  # 750: a member until the 200 and the 250 have left
    assert run.segments() == ["spender"]
    assert run.state().due == {"spender": T0 + days(33)}  # 200 leaves at day 30: 550, still in
    out = run.fire(T0 + days(33) - 1)
    assert out.changes == ()
    out = run.fire(T0 + days(33))
    assert [c.exited for c in out.changes] == [("spender",)]


def test_a_refund_leaving_the_window_can_raise_the_amount() -> None:
    run = EngineRun(rules_from_yaml(segment("spender", "purchase_amount(2h) >= 100"),
                                    settings={"currency": "PLN", "resolution": "1h"}))
    run.apply(refund(T0, 100))
    run.apply(purchase(T0 + hours(1), 150))  # 50 in the window: out, until the refund leaves
    assert run.segments() == []
    assert run.state().due == {"spender": T0 + hours(2)}
    out = run.fire(T0 + hours(2))
    assert [c.entered for c in out.changes] == [("spender",)]
    assert run.state().due == {"spender": T0 + hours(3)}  # the purchase leaves too
    out = run.fire(T0 + hours(3))
    assert [c.exited for c in out.changes] == [("spender",)]


@settings(max_examples=300, deadline=None)
@given(hours=st.lists(st.integers(0, 24 * 40), min_size=0, max_size=60),
       at=st.integers(0, 24 * 50), nb=st.integers(1, 24 * 45))
def test_a_window_reads_exactly_its_buckets_oldest_first(hours: list[int], at: int,
                                                         nb: int) -> None:
    """_window skips the buckets before the window by bisecting the (ascending) bucket numbers:
    the same pairs as filtering every bucket, in ascending order, also with the key list
    cached on the context by an earlier read at the same instant. A state of at most _SCAN
    buckets is handed over whole (its readers test `b > lo` themselves): what they keep is
    the same."""
    state = CustomerState("c-1")
    for h in hours:  # in the order drawn: out of order too
        fold_event(state, purchase(T0 + h * HOUR_MS, 1.0), HOUR_MS, {}, 24 * HOUR_MS)
    ctx = Ctx(state, T0 + at * HOUR_MS, HOUR_MS)
    for n in (nb, max(1, nb // 2), nb):
        lo = ctx.bnow - n
        expected = [(b, bk) for b, bk in sorted(state.buckets.items()) if b > lo]
        window = _window(ctx, n)
        if len(state.buckets) <= _SCAN:
            assert window is state.buckets
            assert [(b, bk) for b, bk in window.items() if b > lo] == expected
        else:
            assert list(window.items()) == expected


WINDOW_TERMS = [("purchase_amount", ()), ("purchase_count", ()), ("refund_amount", ()),
                ("refund_count", ()), ("count", ("page_view",)), ("count", ()),
                ("sessions", ()), ("distinct_categories", ()), ("page_views", ()),
                ("growth_ratio", ())]


@settings(max_examples=150, deadline=None)
@given(hours=st.lists(st.integers(0, 24 * 6), min_size=0, max_size=80),
       at=st.integers(0, 24 * 8), w=st.integers(1, 24 * 7))
def test_window_reads_agree_with_and_without_skipping(hours: list[int], at: int,
                                                     w: int) -> None:
    """A state of more than rules.functions._SCAN buckets is read through _window (the buckets
    before the window skipped), a smaller one bucket by bucket: with the threshold moved so that
    every state takes the other way, every window function gives the same value and the same
    next change."""
    import rules.functions as functions
    from tests.factories import event as make_event

    state = CustomerState("c-1")
    for i, h in enumerate(hours):
        ts = T0 + h * HOUR_MS
        ev = (purchase(ts, 1.5) if i % 3 == 0 else refund(ts, 0.5) if i % 7 == 0
              else make_event("page_view", ts, session_id=f"s{i % 5}"))
        fold_event(state, ev, HOUR_MS, {}, HOUR_MS)
    t = T0 + at * HOUR_MS

    def read() -> list[Any]:
        out: list[Any] = []
        for name, extra in WINDOW_TERMS:
            term = build_term(name, (*extra, w * HOUR_MS), "x", RuleSettings(currency="PLN",
                                                                              resolution_ms=HOUR_MS))
            out.append(term.fn(Ctx(state, t, HOUR_MS)))
            if term.next_change is not None:
                out.append(term.next_change(Ctx(state, t, HOUR_MS)))
        flip = amount_flip(w, build_term("purchase_amount", (w * HOUR_MS,), "x", RuleSettings(
            currency="PLN", resolution_ms=HOUR_MS)).fn, operator.ge, 2.0)
        out.append(flip(Ctx(state, t, HOUR_MS)))
        return out

    assert functions._SCAN == 16
    usual = read()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(functions, "_SCAN", 0 if len(state.buckets) <= 16 else 1 << 30)
        assert read() == usual


@pytest.mark.parametrize("w", [1, 3, 10, 24])
def test_growth_ratio_of_a_long_history_reads_exactly_its_two_windows(w: int) -> None:
    """growth_ratio(w) of a state of more than _SCAN buckets (read through _window): the net
    amount of the last w buckets over that of the w before, each bucket counted once, in
    order, at every hour of a 50-hour history."""
    state = _state([(T0 + h * HOUR_MS, "purchase" if h % 4 else "refund", 1.0 + h)
                    for h in range(0, 50)])
    assert len(state.buckets) > 16
    term = build_term("growth_ratio", (w * HOUR_MS,), "g", RuleSettings(
        currency="PLN", resolution_ms=HOUR_MS))

    def net(lo: int, hi: int) -> float:
        total = 0.0
        for b, bk in sorted(state.buckets.items()):
            if lo < b <= hi:
                total += bk.pa - bk.ra
        return total

    for h in range(0, 60):
        t = T0 + h * HOUR_MS
        bnow = t // HOUR_MS
        prev = net(bnow - 2 * w, bnow - w)
        want = None if not prev else net(bnow - w, bnow) / prev
        assert term.fn(Ctx(state, t, HOUR_MS)) == want, h
