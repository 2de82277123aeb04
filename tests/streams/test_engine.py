"""The engine's contract, by example, straight from the spec (issue 3, sections 3 and 4, and
docs/rules.md): windows, refunds, late/future/duplicate events, hysteresis, dwell, groups,
dependencies, time-driven transitions at the exact instant, change records, erasure, rule
roll-out, and the functions whose definitions have edge cases.

Every test drives the engine with explicit instants (tests.factories.EngineRun): `apply(ev, now)`
(now defaults to the event's ts) and `fire(t)` (time-driven re-evaluation up to t)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from model.events import RejectReason
from rules import program
from rules.ruleset import RuleSet
from streams.simulate import customer_metrics
from tests.factories import (
    DAY,
    HOUR,
    MINUTE,
    T0,
    EngineRun,
    erased,
    event,
    hours,
    item,
    minutes,
    profile,
    purchase,
    refund,
    rules_from_yaml,
    segment,
)


def run_with(*segments: dict[str, Any], settings: dict[str, Any] | None = None) -> EngineRun:
    return EngineRun(rules_from_yaml(*segments, settings=settings))


def metric(run: EngineRun, text: str, t: int, customer_id: str = "c-1") -> Any:
    """The value of rule term `text` (used by some segment of the run's rules) at instant t."""
    run.fire(t, customer_id)
    return customer_metrics(run.rules, run.state(customer_id), t)[text]


def assert_member_until(run: EngineRun, sid: str, leaves_at: int) -> None:
    """sid is a member up to leaves_at - 1 ms and leaves at exactly leaves_at, by time."""
    run.fire(leaves_at - 1)
    assert sid in run.members(), f"{sid} left before {leaves_at - T0} ms after T0"
    run.fire(leaves_at)
    assert sid not in run.members(), f"{sid} still a member at {leaves_at - T0} ms after T0"
    last = run.last()
    assert (last.at, last.cause.kind) == (leaves_at, "time")
    assert sid in last.exited


def assert_enters_at(run: EngineRun, sid: str, enters_at: int) -> None:
    run.fire(enters_at - 1)
    assert sid not in run.members(), f"{sid} entered before {enters_at - T0} ms after T0"
    run.fire(enters_at)
    assert sid in run.members(), f"{sid} not a member at {enters_at - T0} ms after T0"
    last = run.last()
    assert (last.at, last.cause.kind) == (enters_at, "time")
    assert sid in last.entered


def first_ms(pred: Any, lo: int, hi: int) -> int:
    """The smallest integer in (lo, hi] where the monotone predicate holds (false at lo)."""
    assert not pred(lo) and pred(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi



# ================================================================== windows


@pytest.mark.parametrize(
    ("resolution", "window", "ts", "leaves"),
    [
        # an event counts iff ts <= now and bucket(now) - bucket(ts) < w / r
        ("1h", "1h", T0, T0 + HOUR),
        ("1h", "2h", T0 + HOUR - 1, T0 + 2 * HOUR),  # last ms of bucket 0
        ("1h", "2h", T0 + HOUR, T0 + 3 * HOUR),  # first ms of bucket 1
        ("1h", "24h", T0 + minutes(30), T0 + 24 * HOUR),
        ("15m", "30m", T0 + minutes(20), T0 + minutes(45)),
        ("1d", "2d", T0 + hours(23), T0 + 2 * DAY),
        ("1m", "5m", T0 + 59_999, T0 + 5 * MINUTE),
    ],
)
def test_window_edges_are_bucket_boundaries(resolution: str, window: str, ts: int,
                                            leaves: int) -> None:
    run = run_with(segment("buyer", f"purchase_count({window}) >= 1"),
                   settings={"resolution": resolution})
    out = run.apply(purchase(ts))
    assert out.changes[0].entered == ("buyer",)
    assert out.changes[0].at == ts
    assert_member_until(run, "buyer", leaves)


def test_window_example_from_the_docs() -> None:
    """resolution 1h: purchase_count(24h) at 10:20 counts purchases from 11:00 yesterday; one made
    at 10:59 yesterday left the window at 10:00 today."""
    yesterday = T0
    run = run_with(segment("two", "purchase_count(24h) >= 2"),
                   segment("one", "purchase_count(24h) >= 1"))
    run.apply(purchase(yesterday + hours(10) + minutes(59)))
    run.apply(purchase(yesterday + hours(11)))
    assert run.segments() == ["one", "two"]
    assert metric(run, "purchase_count(24h)", T0 + DAY + hours(9) + minutes(59)) == 2
    assert metric(run, "purchase_count(24h)", T0 + DAY + hours(10) + minutes(20)) == 1
    assert [(c.at, c.exited) for c in run.changes if c.exited] == [(T0 + DAY + hours(10),
                                                                    ("two",))]
    assert_member_until(run, "one", T0 + DAY + hours(11))


def test_window_sum_moves_bucket_by_bucket() -> None:
    run = run_with(segment("spender", "purchase_amount(3h) >= 250"))
    run.apply(purchase(T0 + minutes(10), 100))
    run.apply(purchase(T0 + hours(1) + minutes(10), 100))
    run.apply(purchase(T0 + hours(2) + minutes(10), 100))
    assert run.segments() == ["spender"]
    assert metric(run, "purchase_amount(3h)", T0 + hours(3) - 1) == 300
    assert metric(run, "purchase_amount(3h)", T0 + hours(3)) == 200
    assert run.last().exited == ("spender",)
    assert run.last().at == T0 + hours(3)
    assert metric(run, "purchase_amount(3h)", T0 + hours(5)) == 0


def test_timers_due_at_the_events_instant_fire_before_the_event() -> None:
    run = run_with(segment("buyer", "purchase_count(1h) >= 1"))
    run.apply(purchase(T0 + minutes(10)))
    out = run.apply(purchase(T0 + HOUR))  # the first purchase leaves the window at T0 + 1h
    assert [(c.at, c.cause.kind, c.entered, c.exited) for c in out.changes] == [
        (T0 + HOUR, "time", (), ("buyer",)),
        (T0 + HOUR, "event", ("buyer",), ()),
    ]
    assert [c.seq for c in out.changes] == [2, 3]


# ================================================================== refunds


def test_refund_nets_purchase_amount() -> None:
    run = run_with(
        segment("spent_100", "purchase_amount(24h) >= 100"),
        segment("one_order", "purchase_count(24h) == 1"),
        segment("refunded", "refund_amount(24h) == 30 and refund_count(24h) == 1"),
        segment("aov_70", "avg_order_value(24h) == 70"),
        segment("lifetime_70", "lifetime_amount() == 70 and lifetime_orders() == 1"),
    )
    run.apply(purchase(T0 + HOUR, 100, order_id="o-1"))
    assert run.segments() == ["one_order", "spent_100"]
    out = run.apply(refund(T0 + 2 * HOUR, 30, order_id="o-1"))
    (change,) = out.changes
    assert change.cause.kind == "event"
    assert change.cause.event_type == "refund"
    assert change.exited == ("spent_100",)
    assert change.entered == ("aov_70", "lifetime_70", "refunded")
    assert metric(run, "purchase_amount(24h)", T0 + 2 * HOUR) == 70


def test_purchase_and_refund_leave_the_window_in_their_own_buckets() -> None:
    run = run_with(segment("negative", "purchase_amount(24h) < 0"))
    run.apply(purchase(T0 + minutes(30), 100))
    run.apply(refund(T0 + hours(1) + minutes(30), 30))
    assert run.segments() == []
    # the purchase leaves at T0 + 24h, the refund an hour later: -30 in between
    assert_enters_at(run, "negative", T0 + 24 * HOUR)
    assert metric(run, "purchase_amount(24h)", T0 + 24 * HOUR) == -30
    assert_member_until(run, "negative", T0 + 25 * HOUR)
    assert run.state().lifetime_amount == 70


# ================================================================== out of order


def test_out_of_order_event_counts_in_its_own_bucket() -> None:
    run = run_with(segment("w4", "purchase_count(4h) >= 1"),
                   segment("w2", "purchase_count(2h) >= 1"),
                   segment("old_buyer", "days_since_last_purchase() > 1"))
    now = T0 + 10 * HOUR
    run.apply(event("page_view", now))
    late = purchase(T0 + 7 * HOUR + minutes(30))
    out = run.apply(late, now)
    (change,) = out.changes
    # bucket(now) - bucket(ts) = 3: inside 4h, outside 2h
    assert change.entered == ("w4",)
    assert change.at == now
    assert change.cause.event_ts == late.ts
    assert change.cause.kind == "event"
    assert_member_until(run, "w4", T0 + 11 * HOUR)
    # days_since_last_purchase() counts from the late event's own ts
    assert_enters_at(run, "old_buyer", late.ts + DAY + 1)


def test_late_event_does_not_move_the_last_purchase_back() -> None:
    run = run_with(segment("old_buyer", "days_since_last_purchase() > 1"))
    run.apply(purchase(T0 + 10 * HOUR))
    run.apply(purchase(T0 + 5 * HOUR), T0 + 10 * HOUR)
    assert run.state().lifetime_orders == 2
    assert_enters_at(run, "old_buyer", T0 + 10 * HOUR + DAY + 1)


def test_out_of_order_earlier_event_moves_first_seen() -> None:
    run = run_with(segment("seen_3d", "days_since_first_seen() > 3"))
    now = T0 + 10 * DAY
    run.apply(event("page_view", now))
    assert run.segments() == []
    out = run.apply(event("email_open", T0 + 5 * DAY), now)
    assert [(c.at, c.cause.kind, c.entered) for c in out.changes] == [(now, "event", ("seen_3d",))]


def test_late_event_already_outside_every_window_changes_no_window() -> None:
    run = run_with(segment("w2", "purchase_count(2h) >= 1"),
                   segment("ever", "lifetime_orders() >= 1"))
    now = T0 + 10 * DAY
    run.apply(event("page_view", now))
    out = run.apply(purchase(T0 + DAY), now)
    assert out.rejection is None
    assert [c.entered for c in out.changes] == [("ever",)]


# ================================================================== rejections


RETENTION_10D = {"retention": "10d", "dedup_horizon": "2d"}


def settled(run: EngineRun, now: int) -> Any:
    """Fire what is due up to now, then snapshot the customer's state."""
    run.fire(now)
    return copy.deepcopy(run.state())


def test_too_late_is_rejected_and_changes_nothing() -> None:
    run = run_with(segment("buyer", "purchase_count(10d) >= 1"),
                   segment("ever", "lifetime_orders() >= 1"), settings=RETENTION_10D)
    run.apply(purchase(T0))
    now = T0 + 20 * DAY
    before = settled(run, now)
    n = len(run.changes)
    out = run.apply(purchase(now - 10 * DAY - 1), now)
    assert out.rejection is not None
    assert out.rejection.reason == RejectReason.TOO_LATE
    assert out.changes == ()
    assert run.state() == before
    assert len(run.changes) == n
    # exactly now - retention is still in time (it counts in lifetime, in no window)
    out = run.apply(purchase(now - 10 * DAY), now)
    assert out.rejection is None
    assert run.state().lifetime_orders == 2


def test_too_far_in_future_is_rejected_and_changes_nothing() -> None:
    run = run_with(segment("buyer", "purchase_count(1h) >= 1"))
    run.apply(event("page_view", T0))
    before = settled(run, T0)
    out = run.apply(purchase(T0 + 5 * MINUTE + 1), T0)
    assert out.rejection is not None
    assert out.rejection.reason == RejectReason.TOO_FAR_IN_FUTURE
    assert out.rejection.field == "ts"
    assert out.changes == ()
    assert run.state() == before
    assert run.apply(purchase(T0 + 5 * MINUTE), T0).rejection is None  # the tolerance itself


def test_future_tolerance_is_configurable() -> None:
    run = run_with(segment("buyer", "purchase_count(1h) >= 1"),
                   settings={"future_tolerance": "1h"})
    assert run.apply(purchase(T0 + HOUR), T0).rejection is None
    out = run.apply(purchase(T0 + HOUR + 1), T0)
    assert out.rejection is not None
    assert out.rejection.reason == RejectReason.TOO_FAR_IN_FUTURE


def test_duplicate_within_dedup_horizon_changes_nothing() -> None:
    run = run_with(segment("buyer", "purchase_count(10d) >= 1"),
                   segment("two", "lifetime_orders() >= 2"), settings=RETENTION_10D)
    run.apply(purchase(T0, event_id="p-1"))
    now = T0 + DAY
    before = settled(run, now)
    again = purchase(T0 + DAY, event_id="p-1")  # same id, even with another ts
    out = run.apply(again, now)
    assert out.rejection is not None
    assert out.rejection.reason == RejectReason.DUPLICATE
    assert (out.rejection.event_id, out.rejection.customer_id) == ("p-1", "c-1")
    assert out.changes == ()
    assert run.state() == before
    out = run.apply(purchase(T0 + 2 * DAY - 1, event_id="p-1"))  # still within 2d of T0
    assert out.rejection is not None
    assert out.rejection.reason == RejectReason.DUPLICATE


def test_same_event_id_after_the_dedup_horizon_counts_again() -> None:
    run = run_with(segment("two", "lifetime_orders() >= 2"), settings=RETENTION_10D)
    run.apply(purchase(T0, event_id="p-1"))
    out = run.apply(purchase(T0 + 2 * DAY + 1, event_id="p-1"))
    assert out.rejection is None
    assert [c.entered for c in out.changes] == [("two",)]


def test_event_ids_are_unique_per_customer_only() -> None:
    run = run_with(segment("buyer", "purchase_count(24h) >= 1"))
    run.apply(purchase(T0, event_id="p-1", customer_id="a"))
    out = run.apply(purchase(T0 + 1, event_id="p-1", customer_id="b"))
    assert out.rejection is None
    assert run.segments("b") == ["buyer"]


# ================================================================== future events (wall clock)


def test_future_event_within_tolerance_counts_only_from_its_ts() -> None:
    run = run_with(segment("buyer", "purchase_count(1h) >= 1"),
                   segment("known", "days_since_first_seen() >= 0"),
                   settings={"future_tolerance": "10m"})
    now = T0 + HOUR - 3 * MINUTE
    ts = T0 + HOUR + 2 * MINUTE
    out = run.apply(purchase(ts), now)
    assert out.rejection is None
    assert out.changes == ()
    assert run.segments() == []
    assert run.state().lifetime_orders == 0
    run.fire(ts - 1)
    assert run.segments() == []
    run.fire(ts)
    assert run.segments() == ["buyer", "known"]
    assert run.last().at == ts
    assert run.state().lifetime_orders == 1
    # it lands in its own bucket (T0+1h .. T0+2h) and leaves with it
    assert_member_until(run, "buyer", T0 + 2 * HOUR)


def test_future_event_is_remembered_for_dedup_at_once() -> None:
    run = run_with(segment("buyer", "purchase_count(1h) >= 1"))
    run.apply(purchase(T0 + MINUTE, event_id="p-9"), T0)
    out = run.apply(purchase(T0 + MINUTE, event_id="p-9"), T0 + 1)
    assert out.rejection is not None
    assert out.rejection.reason == RejectReason.DUPLICATE


# ================================================================== hysteresis and dwell


def test_exit_when_gives_hysteresis() -> None:
    run = run_with(segment("vip", "purchase_amount(24h) >= 500",
                           exit_when="purchase_amount(24h) < 300"))
    run.apply(purchase(T0, 400))
    assert run.segments() == []  # 400: `when` is false, exit_when does not matter to a non-member
    run.apply(purchase(T0 + 1, 200))
    assert run.segments() == ["vip"]
    run.apply(refund(T0 + 2, 250))  # 350: below 500, not below 300: stays
    assert run.segments() == ["vip"]
    out = run.apply(refund(T0 + 3, 100))  # 250 < 300: leaves
    (change,) = out.changes
    assert change.exited == ("vip",)
    assert change.details["vip"]["why"] == {"purchase_amount(24h)": 250}
    run.apply(purchase(T0 + 4, 200))  # 450: not a member, `when` decides again
    assert run.segments() == []
    run.apply(purchase(T0 + 5, 50))
    assert run.segments() == ["vip"]


def test_min_dwell_keeps_a_member_until_entered_at_plus_dwell() -> None:
    run = run_with(segment("buyer", "purchase_count(1h) >= 1", min_dwell="3h"))
    entered_at = T0 + minutes(10)
    run.apply(purchase(entered_at))
    assert run.members() == {"buyer": entered_at}
    assert_member_until(run, "buyer", entered_at + 3 * HOUR)
    assert run.last().details["buyer"]["why"] == {"purchase_count(1h)": 0}


def test_min_dwell_then_candidate_true_again_stays() -> None:
    run = run_with(segment("buyer", "purchase_count(1h) >= 1", min_dwell="3h"))
    run.apply(purchase(T0 + minutes(10)))
    run.apply(purchase(T0 + 3 * HOUR))  # candidate true at the dwell's end: no exit
    assert_member_until(run, "buyer", T0 + 4 * HOUR)
    assert [c.at for c in run.changes] == [T0 + minutes(10), T0 + 4 * HOUR]


def test_min_dwell_holds_against_exit_when() -> None:
    run = run_with(segment("vip", "purchase_amount(48h) >= 100",
                           exit_when="purchase_amount(48h) < 50", min_dwell="1d"))
    run.apply(purchase(T0, 100))
    run.apply(refund(T0 + HOUR, 80))  # exit condition holds, but the dwell runs until T0 + 1d
    assert run.segments() == ["vip"]
    assert_member_until(run, "vip", T0 + DAY)
    assert run.last().details["vip"]["why"] == {"purchase_amount(48h)": 20}


def test_min_dwell_does_not_protect_against_a_higher_group_member() -> None:
    run = run_with(segment("vip", "purchase_amount(24h) >= 1000", group="tier"),
                   segment("low", "purchase_count(24h) >= 1", group="tier", min_dwell="7d"))
    run.apply(purchase(T0, 100))
    assert run.segments() == ["low"]
    out = run.apply(purchase(T0 + HOUR, 1000))
    (change,) = out.changes
    assert (change.entered, change.exited) == (("vip",), ("low",))
    assert change.groups == {"tier": {"from": "low", "to": "vip"}}


# ================================================================== groups


TIERS = (
    segment("vip", "purchase_amount(24h) >= 1000", group="tier", label="VIP"),
    segment("mid", "purchase_amount(24h) >= 500", group="tier"),
    segment("low", "purchase_count(24h) >= 1", group="tier"),
    segment("any_buyer", "purchase_count(24h) >= 1"),
)


def test_group_member_is_the_first_candidate_in_file_order() -> None:
    run = run_with(*TIERS)
    out = run.apply(purchase(T0, 1200))
    (change,) = out.changes
    assert change.entered == ("any_buyer", "vip")
    assert change.segments == ("any_buyer", "vip")
    assert change.groups == {"tier": {"from": None, "to": "vip"}}
    out = run.apply(refund(T0 + 1, 500))  # 700: mid
    (change,) = out.changes
    assert (change.entered, change.exited) == (("mid",), ("vip",))
    assert change.groups == {"tier": {"from": "vip", "to": "mid"}}
    assert set(change.details) == {"mid", "vip"}
    out = run.apply(refund(T0 + 2, 400))  # 300: low
    assert out.changes[0].groups == {"tier": {"from": "mid", "to": "low"}}
    assert_member_until(run, "low", T0 + 24 * HOUR)
    assert run.last().groups == {"tier": {"from": "low", "to": None}}
    assert run.last().exited == ("any_buyer", "low")


def test_group_change_record_lists_only_groups_that_moved() -> None:
    run = run_with(*TIERS, segment("opener", "email_opens(24h) >= 1", group="mail"))
    run.apply(purchase(T0, 1200))
    out = run.apply(event("email_open", T0 + 1))
    (change,) = out.changes
    assert change.groups == {"mail": {"from": None, "to": "opener"}}


def test_group_priority_is_file_order_even_when_evaluation_order_differs() -> None:
    # `top` reads in_segment("big"), so `big` is evaluated first; `top` still outranks `rest`.
    run = run_with(
        segment("top", 'in_segment("big")', group="g"),
        segment("rest", "purchase_count(24h) >= 1", group="g"),
        segment("big", "purchase_amount(24h) >= 500"),
    )
    run.apply(purchase(T0, 100))
    assert run.segments() == ["rest"]
    out = run.apply(purchase(T0 + 1, 500))
    (change,) = out.changes
    assert (change.entered, change.exited) == (("big", "top"), ("rest",))
    assert change.groups == {"g": {"from": "rest", "to": "top"}}


# ================================================================== in_segment


def test_in_segment_reads_the_membership_of_the_same_instant() -> None:
    run = run_with(
        segment("follower", 'in_segment("leader") and email_opens(24h) >= 1'),
        segment("leader", "purchase_count(2h) >= 1"),  # declared after its dependant
    )
    run.apply(event("email_open", T0))
    assert run.segments() == []
    out = run.apply(purchase(T0 + HOUR))
    (change,) = out.changes
    assert change.entered == ("follower", "leader")
    run.fire(T0 + 3 * HOUR)
    last = run.last()
    assert (last.at, last.cause.kind, last.exited) == (T0 + 3 * HOUR, "time",
                                                       ("follower", "leader"))


def test_in_segment_of_a_grouped_segment_is_its_membership_not_its_candidate() -> None:
    run = run_with(*TIERS, segment("mid_tag", 'in_segment("mid")'),
                   segment("not_vip", 'not in_segment("vip") and purchase_count(24h) >= 1'))
    run.apply(purchase(T0, 1200))  # mid's candidate is true, but vip is the member
    assert run.segments() == ["any_buyer", "vip"]
    run.apply(refund(T0 + 1, 600))
    assert run.segments() == ["any_buyer", "mid", "mid_tag", "not_vip"]


# ================================================================== time-driven transitions


def test_days_since_last_purchase_threshold_at_the_exact_millisecond() -> None:
    run = run_with(segment("lapsed", "days_since_last_purchase() > 30"),
                   segment("recent", "days_since_last_purchase() <= 30"))
    ts = T0 + 12_345
    run.apply(purchase(ts))
    assert run.segments() == ["recent"]
    run.fire(ts + 30 * DAY)
    assert run.segments() == ["recent"]
    run.fire(ts + 30 * DAY + 1)
    assert run.segments() == ["lapsed"]
    (change,) = run.changes[1:]
    assert (change.at, change.cause.kind) == (ts + 30 * DAY + 1, "time")
    assert (change.entered, change.exited) == (("lapsed",), ("recent",))
    assert change.cause.to_wire() == {"kind": "time"}
    why = change.details["lapsed"]["why"]["days_since_last_purchase()"]
    assert why == (30 * DAY + 1) / DAY
    # a new purchase restarts the count
    run.apply(purchase(ts + 40 * DAY))
    assert run.segments() == ["recent"]
    assert_enters_at(run, "lapsed", ts + 70 * DAY + 1)


def test_days_since_range_enters_and_exits_on_time() -> None:
    run = run_with(segment("churn_risk", "days_since_last_purchase() > 60 "
                                         "and days_since_last_purchase() <= 180"))
    ts = T0 + 777
    run.apply(purchase(ts))
    assert_enters_at(run, "churn_risk", ts + 60 * DAY + 1)
    assert_member_until(run, "churn_risk", ts + 180 * DAY + 1)


def test_days_since_first_seen_strictly_less_leaves_at_the_threshold() -> None:
    run = run_with(segment("new_customer", "days_since_first_seen() < 30"))
    run.apply(event("page_view", T0 + 5))
    assert run.segments() == ["new_customer"]
    run.apply(event("email_open", T0 + 10 * DAY))  # later events do not move first_seen
    assert_member_until(run, "new_customer", T0 + 5 + 30 * DAY)


def test_days_since_first_purchase_at_the_threshold() -> None:
    run = run_with(segment("follow_up", "lifetime_orders() == 1"
                                        " and days_since_first_purchase() >= 14"
                                        " and days_since_first_purchase() <= 60"))
    run.apply(purchase(T0 + 5 * DAY))
    run.apply(event("page_view", T0 + 6 * DAY))  # other event types do not matter
    assert_enters_at(run, "follow_up", T0 + 19 * DAY)  # >= 14: at exactly 14 days
    assert_member_until(run, "follow_up", T0 + 65 * DAY + 1)


def test_days_since_first_purchase_moves_back_with_a_late_earlier_purchase() -> None:
    run = run_with(segment("old_customer", "days_since_first_purchase() > 10"))
    now = T0 + 20 * DAY
    run.apply(purchase(now))
    out = run.apply(purchase(T0), now)
    assert [c.entered for c in out.changes] == [("old_customer",)]


def test_lifetime_facts_outlive_retention() -> None:
    run = run_with(segment("spent", "lifetime_amount() >= 100 and lifetime_orders() == 1"),
                   segment("recent", "purchase_count(10d) >= 1"), settings={"retention": "10d"})
    run.apply(purchase(T0, 100))
    run.fire(T0 + 500 * DAY)
    assert run.segments() == ["spent"]
    run.apply(event("page_view", T0 + 500 * DAY))
    assert run.state().buckets.keys() == {(T0 + 500 * DAY) // HOUR}  # old buckets pruned
    assert run.segments() == ["spent"]


def test_days_since_last_of_a_type() -> None:
    run = run_with(segment("browsing", 'days_since_last("page_view") <= 2'))
    run.apply(event("page_view", T0))
    run.apply(event("email_open", T0 + DAY))  # another type: no effect
    assert_member_until(run, "browsing", T0 + 2 * DAY + 1)


ENGAGEMENT = {"engagement": {"half_life": "1d", "points": {"email_open": 8, "email_click": 3}}}


def test_engagement_score_decays_across_a_threshold() -> None:
    run = run_with(segment("engaged", "engagement_score() >= 1"), settings=ENGAGEMENT)
    run.apply(event("email_open", T0))
    assert run.segments() == ["engaged"]
    # 8 * 0.5^(age / 1d) >= 1 until age = 3d exactly
    assert metric(run, "engagement_score()", T0 + 3 * DAY) == 1.0
    assert_member_until(run, "engaged", T0 + 3 * DAY + 1)


def test_engagement_score_of_several_events_crosses_at_the_exact_instant() -> None:
    run = run_with(segment("cooling", "engagement_score() * 2 < 5"),
                   segment("warm", "engagement_score() > 4"), settings=ENGAGEMENT)
    opens = [T0, T0 + hours(7), T0 + hours(30)]
    clicks = [T0 + hours(3) + 17]
    for ts in sorted([*opens, *clicks]):
        run.apply(event("email_open" if ts in opens else "email_click", ts))

    def score(t: int) -> float:  # the spec's formula
        return (sum(8 * 0.5 ** ((t - ts) / DAY) for ts in opens)
                + sum(3 * 0.5 ** ((t - ts) / DAY) for ts in clicks))

    last = opens[-1]
    warm_leaves = first_ms(lambda t: not score(t) > 4, last, last + 30 * DAY)
    cooling_enters = first_ms(lambda t: score(t) * 2 < 5, last, last + 30 * DAY)
    assert run.segments() == ["warm"]
    assert_member_until(run, "warm", warm_leaves)
    assert_enters_at(run, "cooling", cooling_enters)


def test_product_of_a_day_count_and_a_window_count_on_time() -> None:
    run = run_with(segment("x", "days_since_last_purchase() * purchase_count(30d) > 10"))
    run.apply(purchase(T0 + minutes(30)))
    run.apply(purchase(T0 + hours(1) + minutes(30)))
    # two purchases in 30d: days * 2 > 10 from 5 days after the last one, on the millisecond
    assert_enters_at(run, "x", T0 + hours(1) + minutes(30) + 5 * DAY + 1)
    # the first purchase leaves the 30d window at T0 + 30d: 29.96 * 1 > 10, stays;
    # the second at T0 + 30d + 1h: 0 purchases, leaves
    assert_member_until(run, "x", T0 + 30 * DAY + HOUR)


SQRT2_DAYS = first_ms(lambda d: (d / DAY) * (d / DAY) > 2, 0, 2 * DAY)


@pytest.mark.parametrize(
    ("when", "enters", "leaves"),
    [
        # d * d > 2: d > sqrt(2) days; monotone, but not known to be so statically
        pytest.param("days_since_last_purchase() * days_since_last_purchase() > 2",
                     SQRT2_DAYS, None),
        # (d - 2)^2 < 0.25: 1.5 < d < 2.5; not monotone
        pytest.param(
            "(days_since_last_purchase() - 2) * (days_since_last_purchase() - 2) < 0.25",
            int(1.5 * DAY) + 1, int(2.5 * DAY)),
    ],
)
def test_nonlinear_time_conditions_change_at_the_exact_instant(when: str, enters: int,
                                                               leaves: int | None) -> None:
    run = run_with(segment("x", when))
    ts = T0 + minutes(30)
    run.apply(purchase(ts))
    assert_enters_at(run, "x", ts + enters)
    if leaves is not None:
        assert_member_until(run, "x", ts + leaves)


# ================================================================== change records


def test_why_holds_the_deciding_terms_of_entered_and_exited_segments() -> None:
    run = run_with(
        segment("vip", "purchase_amount(24h) >= 500 and purchase_count(24h) >= 2",
                exit_when="purchase_amount(24h) < 300"),
        segment("single", "purchase_count(24h) == 1"),
    )
    run.apply(purchase(T0, 250.5))
    out = run.apply(purchase(T0 + 1, 300))
    (change,) = out.changes
    assert change.entered == ("vip",)
    assert change.exited == ("single",)
    assert change.details["vip"]["why"] == {"purchase_amount(24h)": 550.5,
                                           "purchase_count(24h)": 2}
    assert change.details["single"]["why"] == {"purchase_count(24h)": 2}
    out = run.apply(refund(T0 + 2, 300))
    (change,) = out.changes
    assert change.exited == ("vip",)
    assert change.details["vip"]["why"] == {"purchase_amount(24h)": 250.5}


def test_details_pass_label_color_icon_and_actions_through() -> None:
    actions = {"pipeline": "premium", "followups": ["account_manager_call"], "n": 2}
    run = run_with(segment("vip", "purchase_amount(24h) >= 500", label="VIP", color="#C9A227",
                           icon="crown", actions=actions),
                   segment("other", "purchase_count(24h) >= 1", label="Other"))
    out = run.apply(purchase(T0, 600))
    (change,) = out.changes
    vip = change.details["vip"]
    assert vip["label"] == "VIP"
    assert vip["color"] == "#C9A227"
    assert vip["icon"] == "crown"
    assert vip["actions"] == actions
    assert vip["why"] == {"purchase_amount(24h)": 600}
    assert change.details["other"]["label"] == "Other"
    run.fire(T0 + DAY)
    exit_change = run.last()
    assert exit_change.exited == ("other", "vip")
    assert exit_change.details["vip"]["actions"] == actions
    assert exit_change.details["vip"]["label"] == "VIP"
    # the wire form carries them as they are
    wire = exit_change.to_wire()
    assert wire["details"]["vip"]["color"] == "#C9A227"
    assert wire["details"]["vip"]["actions"] == actions


def test_details_only_for_segments_that_changed() -> None:
    run = run_with(segment("buyer", "purchase_count(24h) >= 1"),
                   segment("reader", "email_opens(24h) >= 1"))
    run.apply(purchase(T0))
    out = run.apply(event("email_open", T0 + 1))
    (change,) = out.changes
    assert change.entered == ("reader",)
    assert change.segments == ("buyer", "reader")
    assert set(change.details) == {"reader"}


def test_event_change_record_on_the_wire() -> None:
    rules = rules_from_yaml(segment("buyer", "purchase_count(24h) >= 1"))
    run = EngineRun(rules)
    out = run.apply(purchase(T0 + 1500, event_id="p-123"))
    wire = out.changes[0].to_wire()
    assert wire == {
        "customer_id": "c-1", "seq": 1, "at": "2026-01-01T00:00:01.500Z",
        "cause": {"kind": "event", "event_id": "p-123", "event_type": "purchase",
                  "event_ts": "2026-01-01T00:00:01.500Z"},
        "rules_version": rules.version, "entered": ["buyer"], "exited": [],
        "segments": ["buyer"], "groups": {}, "details": wire["details"],
    }
    assert list(wire["details"]) == ["buyer"]
    assert wire["details"]["buyer"]["why"] == {"purchase_count(24h)": 1}
    assert rules.version.startswith("sha256:") and len(rules.version) == 7 + 64


def test_seq_is_contiguous_from_one_per_customer() -> None:
    run = run_with(segment("buyer", "purchase_count(1h) >= 1"),
                   segment("reader", "email_opens(1h) >= 1"))
    t = T0
    for i in range(6):
        cid = "a" if i % 2 else "b"
        run.apply(purchase(t, customer_id=cid))
        run.apply(event("email_open", t + 1, cid))
        run.apply(event("page_view", t + 2, cid))  # no change: uses no seq
        run.apply(purchase(t + 2, customer_id=cid, event_id=f"dup-{cid}"))
        run.apply(purchase(t + 3, customer_id=cid, event_id=f"dup-{cid}"))  # duplicate
        t += 2 * HOUR
        run.fire(t, cid)
    for cid in ("a", "b"):
        seqs = [c.seq for c in run.changes_of(cid)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= 6
        assert run.state(cid).seq == seqs[-1]


# ================================================================== erasure


def test_customer_erased_exits_everything_and_forgets_the_customer() -> None:
    rules = rules_from_yaml(*TIERS, segment("reader", "email_opens(24h) >= 1"))
    run = EngineRun(rules)
    run.apply(purchase(T0, 700, event_id="p-1"))
    run.apply(event("email_open", T0 + 1))
    seq = run.state().seq
    out = run.apply(erased(T0 + 2, event_id="x-1"))
    assert out.state is None
    (change,) = out.changes
    assert change.cause.kind == "erasure"
    assert change.cause.to_wire() == {"kind": "erasure", "event_id": "x-1",
                                      "event_type": "customer_erased",
                                      "event_ts": "2026-01-01T00:00:00.002Z"}
    assert change.seq == seq + 1
    assert change.at == T0 + 2
    assert change.rules_version == rules.version
    assert change.entered == ()
    assert change.exited == ("any_buyer", "mid", "reader")
    assert change.segments == ()
    assert change.groups == {"tier": {"from": "mid", "to": None}}
    assert "c-1" not in run.states
    # a later event starts from nothing: no history, no seq, no dedup memory
    out = run.apply(purchase(T0 + 3, 100, event_id="p-1"))
    assert out.rejection is None
    st = run.state()
    assert (st.lifetime_orders, st.lifetime_amount) == (1, 100)
    assert [c.seq for c in out.changes] == [1]
    assert out.changes[0].segments == ("any_buyer", "low")


def test_erasure_change_carries_the_details_of_the_exited_segments() -> None:
    run = run_with(segment("vip", "purchase_count(24h) >= 1", label="VIP", color="#C9A227",
                           icon="crown", actions={"pipeline": "premium"}))
    run.apply(purchase(T0))
    (change,) = run.apply(erased(T0 + 1)).changes
    assert change.exited == ("vip",)
    vip = change.details["vip"]
    assert (vip["label"], vip["color"], vip["icon"], vip["actions"]) == (
        "VIP", "#C9A227", "crown", {"pipeline": "premium"})


def test_erasing_an_unknown_customer_emits_nothing() -> None:
    run = run_with(segment("buyer", "purchase_count(24h) >= 1"))
    out = run.apply(erased(T0))
    assert (out.state, out.changes, out.rejection) == (None, (), None)


# ================================================================== rule roll-out


def test_reevaluate_after_a_rule_change() -> None:
    v1 = rules_from_yaml(segment("buyer", "purchase_count(24h) >= 1"),
                         segment("big", "purchase_amount(24h) >= 1000"),
                         segment("doomed", "purchase_count(24h) >= 1"))
    v2 = rules_from_yaml(segment("buyer", "purchase_count(24h) >= 1"),
                         segment("big", "purchase_amount(24h) >= 50"),
                         segment("ever", "lifetime_orders() >= 1"))
    assert v1.version != v2.version
    run = EngineRun(v1)
    run.apply(purchase(T0, 100))
    assert run.segments() == ["buyer", "doomed"]
    out = run.switch(v2, T0 + HOUR)
    (change,) = out.changes
    assert change.cause.kind == "rules"
    assert change.cause.to_wire() == {"kind": "rules"}
    assert change.rules_version == v2.version
    assert change.at == T0 + HOUR
    assert change.seq == 2
    assert change.entered == ("big", "ever")
    assert change.exited == ("doomed",)
    assert change.segments == ("big", "buyer", "ever")
    assert run.state().rules_version == v2.version
    # the next change carries the new version and continues the seq
    run.fire(T0 + DAY)
    assert (run.last().seq, run.last().rules_version) == (3, v2.version)


def test_reevaluate_quietly_emits_a_quiet_change_that_views_apply() -> None:
    v1 = rules_from_yaml(segment("buyer", "purchase_count(24h) >= 1"),
                         segment("doomed", "purchase_count(24h) >= 1"))
    v2 = rules_from_yaml(segment("buyer", "purchase_count(24h) >= 1"),
                         segment("ever", "lifetime_orders() >= 1"))
    run = EngineRun(v1)
    run.apply(purchase(T0))
    out = run.switch(v2, T0 + HOUR, quiet=True)
    [change] = out.changes
    assert (change.seq, change.cause.kind, change.quiet) == (2, "rules", True)
    assert (change.entered, change.exited) == (("ever",), ("doomed",))
    assert change.to_wire()["quiet"] is True
    assert "quiet" not in run.changes[0].to_wire()  # others carry no such field
    assert run.segments() == ["buyer", "ever"]
    assert run.state().rules_version == v2.version
    run.fire(T0 + DAY)
    last = run.last()
    assert (last.seq, last.exited, last.rules_version, last.quiet) == \
        (3, ("buyer",), v2.version, False)


def test_reevaluate_removing_a_group_member_reports_the_group_move() -> None:
    v1 = rules_from_yaml(segment("vip", "purchase_amount(24h) >= 500", group="tier"),
                         segment("low", "purchase_count(24h) >= 1", group="tier"))
    v2 = rules_from_yaml(segment("low", "purchase_count(24h) >= 1", group="tier"))
    run = EngineRun(v1)
    run.apply(purchase(T0, 600))
    assert run.segments() == ["vip"]
    (change,) = run.switch(v2, T0 + HOUR).changes
    assert (change.entered, change.exited) == (("low",), ("vip",))
    assert change.groups == {"tier": {"from": "vip", "to": "low"}}



def test_reevaluate_removing_the_only_group_member_reports_the_group_move() -> None:
    v1 = rules_from_yaml(segment("vip", "purchase_amount(24h) >= 500", group="tier"),
                         segment("buyer", "purchase_count(24h) >= 1"))
    v2 = rules_from_yaml(segment("buyer", "purchase_count(24h) >= 1"))
    run = EngineRun(v1)
    run.apply(purchase(T0, 600))
    (change,) = run.switch(v2, T0 + HOUR).changes
    assert (change.entered, change.exited, change.segments) == ((), ("vip",), ("buyer",))
    assert change.groups == {"tier": {"from": "vip", "to": None}}


def test_reevaluate_with_nothing_to_change_emits_nothing() -> None:
    v1 = rules_from_yaml(segment("buyer", "purchase_count(24h) >= 1"))
    v2 = rules_from_yaml(segment("buyer", "purchase_count(24h) >= 1", label="Buyer"))
    run = EngineRun(v1)
    run.apply(purchase(T0))
    assert run.switch(v2, T0 + HOUR).changes == ()
    assert run.state().seq == 1


# ================================================================== functions


def test_profile_attributes_replace_keep_and_null_removes() -> None:
    run = run_with(
        segment("south", 'attribute("region") in ["malopolskie", "slaskie"]'),
        segment("has_region", 'attribute("region") != null'),
        segment("krakow", 'attribute("city") == "Kraków"'),
        segment("flagged", 'attribute("vip") == true'),
        segment("adult", 'attribute("age") >= 18'),
    )
    run.apply(profile(T0, region="slaskie", city="Kraków", age=30))
    assert run.segments() == ["adult", "has_region", "krakow", "south"]
    run.apply(profile(T0 + 1, region=None, vip=True))  # keys not mentioned are kept
    assert run.segments() == ["adult", "flagged", "krakow"]
    assert run.state().attributes == {"city": "Kraków", "age": 30, "vip": True}
    run.apply(profile(T0 + 2, region="mazowieckie", age=17))
    assert run.segments() == ["flagged", "has_region", "krakow"]


def test_unsubscribed_is_forever() -> None:
    run = run_with(segment("unsub", "unsubscribed()"),
                   segment("reader", "email_opens(400d) >= 1 and not unsubscribed()"))
    run.apply(event("email_open", T0))
    assert run.segments() == ["reader"]
    out = run.apply(event("email_unsubscribe", T0 + HOUR))
    (change,) = out.changes
    assert (change.entered, change.exited) == (("unsub",), ("reader",))
    run.apply(event("email_open", T0 + DAY))
    run.fire(T0 + 500 * DAY)
    assert run.segments() == ["unsub"]


RFM_TERMS = (
    segment("r", "rfm_r() >= 1"), segment("f", "rfm_f() >= 1"), segment("m", "rfm_m() >= 1"),
    segment("cell", "rfm_segment() != null"),
    segment("r5", "rfm_r() == 5"),
    segment("no_rfm", "rfm_segment() == null and rfm_r() == null"),
)


def rfm_at(run: EngineRun, t: int) -> tuple[Any, Any, Any, Any]:
    run.fire(t)
    m = customer_metrics(run.rules, run.state(), t)
    return m["rfm_r()"], m["rfm_f()"], m["rfm_m()"], m["rfm_segment()"]


@pytest.mark.parametrize(
    ("age", "r"),
    [(0, 5), (14 * DAY, 5), (14 * DAY + 1, 4), (30 * DAY, 4), (30 * DAY + 1, 3), (90 * DAY, 3),
     (90 * DAY + 1, 2), (180 * DAY, 2), (180 * DAY + 1, 1), (399 * DAY, 1)],
)
def test_rfm_recency_thresholds(age: int, r: int) -> None:
    run = run_with(*RFM_TERMS)
    run.apply(purchase(T0 + 3))
    assert rfm_at(run, T0 + 3 + age)[0] == r


def test_rfm_r_changes_by_time_at_the_exact_instant() -> None:
    run = run_with(*RFM_TERMS)
    run.apply(purchase(T0 + 3))
    assert_member_until(run, "r5", T0 + 3 + 14 * DAY + 1)


@pytest.mark.parametrize(("orders", "f"), [(1, 2), (2, 3), (3, 3), (4, 4), (7, 4), (8, 5)])
def test_rfm_frequency_thresholds(orders: int, f: int) -> None:
    run = run_with(*RFM_TERMS)
    for i in range(orders):
        run.apply(purchase(T0 + i, 1))
    assert rfm_at(run, T0 + HOUR)[1] == f


@pytest.mark.parametrize(("amount", "m"), [(99.99, 1), (100, 2), (499, 2), (500, 3), (1500, 4),
                                           (4999.5, 4), (5000, 5)])
def test_rfm_monetary_thresholds(amount: float, m: int) -> None:
    run = run_with(*RFM_TERMS)
    run.apply(purchase(T0, amount + 100))
    run.apply(refund(T0 + 1, 100))  # M is on the net amount
    assert rfm_at(run, T0 + HOUR)[2] == m


def test_rfm_window_bounds_frequency_and_monetary() -> None:
    run = run_with(*RFM_TERMS)  # rfm.window 365d
    run.apply(purchase(T0, 6000))
    assert rfm_at(run, T0 + 365 * DAY - 1) == (1, 2, 5, "hibernating")
    assert rfm_at(run, T0 + 365 * DAY) == (1, 1, 1, "lost")


@pytest.mark.parametrize(
    ("orders", "age", "cell"),
    [(1, 0, "potential_loyalist"), (4, 0, "champions"), (4, 20 * DAY, "loyal"),
     (2, 100 * DAY, "at_risk"), (8, 200 * DAY, "cannot_lose"), (1, 100 * DAY, "hibernating"),
     (3, 60 * DAY, "need_attention"), (1, 200 * DAY, "hibernating")],
)
def test_rfm_segment_default_grid(orders: int, age: int, cell: str) -> None:
    run = run_with(*RFM_TERMS)
    for i in range(orders):
        run.apply(purchase(T0 + i))
    assert rfm_at(run, T0 + orders + age)[3] == cell


@pytest.mark.parametrize(("age", "cell"), [(10 * DAY, "new"), (20 * DAY, "promising"),
                                           (50 * DAY, "about_to_sleep"), (100 * DAY, "hibernating"),
                                           (200 * DAY, "lost")])
def test_rfm_segment_with_frequency_one(age: int, cell: str) -> None:
    # a 7-day RFM window: after a week the purchase still sets R but no longer counts in F
    run = run_with(*RFM_TERMS, settings={"rfm": {"window": "7d"}})
    run.apply(purchase(T0))
    _, f, _, got = rfm_at(run, T0 + age)
    assert f == 1
    assert got == cell


def test_rfm_grid_override() -> None:
    run = run_with(segment("giant", 'rfm_segment() == "sleeping_giants"'),
                   segment("champ", 'rfm_segment() == "champions"'),
                   settings={"rfm": {"grid": {"sleeping_giants": ["25", "15"],
                                              "champions": ["55", "54", "45"]}}})
    for i in range(8):
        run.apply(purchase(T0 + i))
    assert run.segments() == ["champ"]
    assert_enters_at(run, "giant", T0 + 7 + 90 * DAY + 1)  # R 2, F 5


def test_rfm_is_null_without_purchases() -> None:
    run = run_with(*RFM_TERMS)
    run.apply(event("email_open", T0))
    assert run.segments() == ["no_rfm"]
    assert rfm_at(run, T0 + 1) == (None, None, None, None)


def test_growth_ratio_is_null_when_the_previous_window_is_zero() -> None:
    run = run_with(segment("no_ratio", "growth_ratio(24h) == null"),
                   segment("growing", "growth_ratio(24h) > 2"),
                   segment("shrinking", "growth_ratio(24h) < 1"))
    run.apply(purchase(T0 + HOUR, 100))
    assert run.segments() == ["no_ratio"]
    assert metric(run, "growth_ratio(24h)", T0 + 25 * HOUR - 1) is None
    # at T0+25h the purchase's bucket (1) is the previous window (bnow-48, bnow-24]
    assert metric(run, "growth_ratio(24h)", T0 + 25 * HOUR) == 0
    assert run.segments() == ["shrinking"]
    out = run.apply(purchase(T0 + 25 * HOUR + 1, 300))
    assert out.changes[0].entered == ("growing",)
    assert metric(run, "growth_ratio(24h)", T0 + 25 * HOUR + 1) == 3
    assert metric(run, "growth_ratio(24h)", T0 + 49 * HOUR) == 0
    assert metric(run, "growth_ratio(24h)", T0 + 73 * HOUR) is None


def test_open_rate_and_click_rate_fall_back_to_sent() -> None:
    run = run_with(segment("opens", "open_rate(24h) >= 0.5"),
                   segment("no_rate", "open_rate(24h) == null and click_rate(24h) == null"),
                   segment("clicks", "click_rate(24h) > 0"))
    run.apply(event("email_open", T0))  # an open without sent/delivered: no rate
    assert run.segments() == ["no_rate"]
    run.apply(event("email_sent", T0 + 1))
    assert metric(run, "open_rate(24h)", T0 + 1) == 1.0
    run.apply(event("email_sent", T0 + 2))
    run.apply(event("email_click", T0 + 3))
    assert metric(run, "open_rate(24h)", T0 + 3) == 0.5  # 1 open / 2 sent
    assert metric(run, "click_rate(24h)", T0 + 3) == 0.5
    assert run.segments() == ["clicks", "opens"]
    for i in range(4):
        run.apply(event("email_delivered", T0 + 4 + i))
    assert metric(run, "open_rate(24h)", T0 + 8) == 0.25  # delivered reported: 1 / 4
    assert run.segments() == ["clicks"]


def test_sessions_counts_distinct_session_ids() -> None:
    run = run_with(segment("multi", "sessions(24h) >= 2"),
                   segment("views", "page_views(24h) == 3"))
    run.apply(event("page_view", T0, session_id="s1"))
    run.apply(event("page_view", T0 + 1, session_id="s1"))
    run.apply(event("search", T0 + 2))  # no session id
    assert metric(run, "sessions(24h)", T0 + 2) == 1
    run.apply(event("page_view", T0 + 3))
    assert run.segments() == ["views"]
    run.apply(event("product_view", T0 + HOUR, session_id="s2"))
    assert metric(run, "sessions(24h)", T0 + HOUR) == 2
    assert run.segments() == ["multi", "views"]
    assert_member_until(run, "multi", T0 + 24 * HOUR)


def test_purchase_window_functions() -> None:
    run = run_with(segment("cats", "distinct_categories(24h) >= 3"),
                   segment("items", "items_count(24h) >= 5"),
                   segment("count", 'count("add_to_cart", 24h) >= 2'))
    run.apply(purchase(T0, 50, items=[item("books", 2), item("toys", 1)]))
    run.apply(purchase(T0 + 1, 50, items=[item("books", 1), item("home", 1)]))
    assert run.segments() == ["cats", "items"]
    assert metric(run, "distinct_categories(24h)", T0 + 1) == 3
    assert metric(run, "items_count(24h)", T0 + 1) == 5
    run.apply(event("add_to_cart", T0 + 2))
    run.apply(event("add_to_cart", T0 + 3))
    assert run.segments() == ["cats", "count", "items"]


# ================================================================== incremental evaluation


def incremental_rules() -> RuleSet:
    return rules_from_yaml(
        segment("buyer", "purchase_count(24h) >= 1"),
        segment("reader", "email_opens(24h) >= 1"),
        segment("reader_tag", 'in_segment("reader")'),
        segment("regional", 'attribute("region") == "slaskie"'),
    )


def test_dirty_for_type_lists_only_segments_reading_the_type_and_their_dependants() -> None:
    rules = incremental_rules()
    assert [s.id for s in rules.dirty_for_type("email_open")] == ["reader", "reader_tag"]
    assert [s.id for s in rules.dirty_for_type("purchase")] == ["buyer"]
    assert [s.id for s in rules.dirty_for_type("refund")] == ["buyer"]
    assert [s.id for s in rules.dirty_for_type("profile_update")] == ["regional"]
    assert rules.dirty_for_type("page_view") == ()


def test_an_email_event_does_not_reevaluate_a_purchase_only_segment() -> None:
    rules = incremental_rules()
    calls: dict[str, int] = {"buyer": 0, "reader": 0}
    for sid in calls:
        expr = rules.by_id[sid].when
        inner = expr.fn

        def counting(ctx: Any, inner: Any = inner, sid: str = sid) -> Any:
            calls[sid] += 1
            return inner(ctx)

        # the engine calls the condition's tree (rules/program.py): a call node counts
        expr.cond = program.Condition(program.Call(counting), expr.text)
    run = EngineRun(rules)
    run.apply(purchase(T0))
    before = dict(calls)
    out = run.apply(event("email_open", T0 + 1))
    assert out.changes[0].entered == ("reader", "reader_tag")
    assert calls["buyer"] == before["buyer"]
    assert calls["reader"] > before["reader"]
    run.apply(purchase(T0 + 2))
    assert calls["buyer"] > before["buyer"]
