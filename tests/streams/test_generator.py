"""The synthetic event generator: determinism, mix, order, validity, personas, bad records."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Mapping
from functools import cache

import pytest

from model.events import (
    EMAIL_TYPES,
    PURCHASE_TYPES,
    WEB_TYPES,
    Event,
    Rejection,
    RejectReason,
    encode_event,
    parse_event,
)
from streams.generator import (
    DAY_MS,
    PERSONAS,
    assign_personas,
    customer_id,
    generate,
    generate_raw,
)

START = 1_714_521_600_000  # 2024-05-01T00:00:00Z


@cache
def sample(seed: int = 3, customers: int = 2_000, events: int = 40_000,
           erasures: bool = False) -> tuple[Event, ...]:
    return tuple(generate(customers=customers, events=events, seed=seed, start_ms=START,
                          erasures=erasures))


def family_counts(events: tuple[Event, ...]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for e in events:
        counts["web" if e.type in WEB_TYPES else "email" if e.type in EMAIL_TYPES
               else "purchase" if e.type in PURCHASE_TYPES else "profile"] += 1
    return counts


def by_persona(customers: int, seed: int) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for i, persona in enumerate(assign_personas(customers, seed)):
        out[persona.name].add(customer_id(i, customers))
    return out


def test_deterministic_for_a_seed() -> None:
    first = list(generate(customers=300, events=5_000, seed=11, start_ms=START))
    again = list(generate(customers=300, events=5_000, seed=11, start_ms=START))
    other = list(generate(customers=300, events=5_000, seed=12, start_ms=START))
    assert first == again
    assert first != other


def test_exact_count_unique_ids_sorted_and_in_the_period() -> None:
    events = sample()
    assert len(events) == 40_000
    assert len({e.event_id for e in events}) == len(events)
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(events))
    assert events[0].ts >= START
    assert events[-1].ts < START + 90 * DAY_MS
    assert len({e.customer_id for e in events}) > 1_500


def test_default_mix() -> None:
    counts = family_counts(sample())
    total = sum(counts.values())
    assert counts["profile"] == round(total * 0.005)
    rest = total - counts["profile"]
    assert counts["web"] / rest == pytest.approx(0.50, abs=0.001)
    assert counts["email"] / rest == pytest.approx(0.35, abs=0.001)
    assert counts["purchase"] / rest == pytest.approx(0.15, abs=0.001)


def test_custom_mix_and_no_profile_events() -> None:
    events = tuple(generate(customers=100, events=4_000, seed=1, start_ms=START, days=10,
                            mix=(0.2, 0.2, 0.6), profile_fraction=0.0))
    counts = family_counts(events)
    assert counts == {"web": 800, "email": 800, "purchase": 2_400}


def test_every_event_is_valid_and_round_trips() -> None:
    for event in sample():
        assert parse_event(encode_event(event), currency="PLN") == event


def test_other_currency() -> None:
    events = list(generate(customers=50, events=2_000, seed=2, start_ms=START, currency="EUR"))
    purchases = [e for e in events if e.type in PURCHASE_TYPES]
    assert purchases
    assert {e.currency for e in purchases} == {"EUR"}
    assert all(isinstance(parse_event(encode_event(e), currency="EUR"), Event) for e in events)


def test_all_types_but_erasure_occur_and_erasure_only_on_request() -> None:
    types = {e.type for e in sample()}
    assert types == (WEB_TYPES | EMAIL_TYPES | PURCHASE_TYPES | {"profile_update"})
    with_erasures = Counter(e.type for e in sample(erasures=True))
    assert 0 < with_erasures["customer_erased"] < 40


def test_purchases_are_consistent() -> None:
    events = sample()
    orders: dict[str, Event] = {}
    refunds = 0
    for e in events:
        if e.type == "purchase":
            assert e.amount > 0
            assert e.order_id is not None and e.order_id not in orders
            if e.items:
                total = sum(i.quantity * i.price for i in e.items)
                assert e.amount == pytest.approx(total, abs=0.005)
            orders[e.order_id] = e
        elif e.type == "refund":
            refunds += 1
            assert e.order_id is not None
            order = orders[e.order_id]  # refunds come after their order
            assert order.customer_id == e.customer_id
            assert 0 < e.amount <= order.amount + 1e-9
            assert e.ts >= order.ts + DAY_MS
    assert refunds > 0
    assert sum(1 for e in orders.values() if not e.items) > 0  # total-only orders exist


def test_email_funnels_are_ordered_and_unsubscribes_stop_sends() -> None:
    delivered: set[tuple[str, str | None]] = set()
    opened: set[tuple[str, str | None]] = set()
    unsubscribed: set[str] = set()
    for e in sample():
        key = (e.customer_id, e.campaign_id)
        if e.type == "email_delivered":
            delivered.add(key)
        elif e.type == "email_open":
            assert key in delivered
            opened.add(key)
        elif e.type == "email_click":
            assert key in opened
        elif e.type == "email_unsubscribe":
            assert key in opened
            unsubscribed.add(e.customer_id)
        elif e.type == "email_sent":
            assert e.customer_id not in unsubscribed
    assert unsubscribed


def test_web_sessions_group_several_events() -> None:
    sessions = Counter(e.session_id for e in sample() if e.type in WEB_TYPES)
    assert None not in sessions
    assert max(sessions.values()) >= 5
    assert sum(sessions.values()) / len(sessions) > 2


def test_personas_behave_differently() -> None:
    events = sample()
    groups = by_persona(2_000, 3)
    spend: defaultdict[str, float] = defaultdict(float)
    orders: Counter[str] = Counter()
    web: Counter[str] = Counter()
    opens: Counter[str] = Counter()
    for e in events:
        if e.type == "purchase":
            spend[e.customer_id] += e.amount
            orders[e.customer_id] += 1
        elif e.type == "refund":
            spend[e.customer_id] -= e.amount
        elif e.type in WEB_TYPES:
            web[e.customer_id] += 1
        elif e.type == "email_open":
            opens[e.customer_id] += 1

    def mean(counter: Mapping[str, float], persona: str) -> float:
        members = groups[persona]
        return sum(counter.get(c, 0) for c in members) / len(members)

    assert mean(spend, "vip") > 3 * mean(spend, "regular") > 3 * mean(spend, "occasional")
    assert mean(web, "window_shopper") > 2 * mean(web, "occasional")
    assert mean(orders, "window_shopper") < mean(orders, "occasional")
    assert mean(opens, "newsletter_reader") > 2 * mean(opens, "occasional")
    # the VIP tier of the example rules (>= 5000 in 180 days and >= 3 orders) is reached
    vips = [c for c in spend if spend[c] >= 5_000 and orders[c] >= 3]
    assert len(vips) > 20


def test_lapsing_go_quiet_and_new_customers_arrive() -> None:
    events = sample()
    groups = by_persona(2_000, 3)
    third = 30 * DAY_MS
    early: Counter[str] = Counter()
    late: Counter[str] = Counter()
    for e in events:
        if e.type in WEB_TYPES or e.type == "purchase":
            for name in ("lapsing", "new_customer", "regular"):
                if e.customer_id in groups[name]:
                    if e.ts < START + third:
                        early[name] += 1
                    elif e.ts >= START + 2 * third:
                        late[name] += 1
    assert late["lapsing"] < 0.3 * early["lapsing"]
    assert late["new_customer"] > 2 * early["new_customer"]
    assert 0.5 < late["regular"] / early["regular"] < 2


def test_assign_personas_shares() -> None:
    personas = assign_personas(1_000, 5)
    counts = Counter(p.name for p in personas)
    assert counts == {p.name: round(p.share * 1_000) for p in PERSONAS}
    assert assign_personas(1_000, 5) == personas
    assert assign_personas(1_000, 6) != personas
    assert len(assign_personas(7, 1)) == 7


@pytest.mark.parametrize(("customers", "events", "days"), [(1, 300, 90.0), (3, 1_000, 0.01),
                                                           (5, 1, 1.0), (10, 0, 1.0)])
def test_small_and_short_runs(customers: int, events: int, days: float) -> None:
    out = list(generate(customers=customers, events=events, seed=4, start_ms=START, days=days))
    assert len(out) == events
    assert all(START <= e.ts < START + days * DAY_MS for e in out)
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(out))
    assert len({e.customer_id for e in out}) <= customers


@pytest.mark.parametrize("kwargs", [
    {"customers": 0}, {"events": -1}, {"days": 0}, {"days": float("nan")},
    {"currency": "pln"}, {"mix": (0.0, 0.0, 0.0)}, {"mix": (0.5, -0.1, 0.6)},
    {"profile_fraction": 1.5}, {"start_ms": -1},
])
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"customers": 10, "events": 10, "seed": 1, "start_ms": START}
    args.update(kwargs)
    with pytest.raises(ValueError):
        list(generate(**args))  # type: ignore[arg-type]


def test_raw_without_bad_records_is_the_encoded_events() -> None:
    raw = list(generate_raw(customers=300, events=3_000, seed=8, start_ms=START))
    events = generate(customers=300, events=3_000, seed=8, start_ms=START)
    assert raw == [encode_event(e) for e in events]


def test_raw_with_bad_records() -> None:
    raw = list(generate_raw(customers=300, events=10_000, seed=8, start_ms=START,
                            bad_fraction=0.2))
    assert raw == list(generate_raw(customers=300, events=10_000, seed=8, start_ms=START,
                                    bad_fraction=0.2))
    good = list(generate(customers=300, events=10_000, seed=8, start_ms=START))
    parsed = [parse_event(r, currency="PLN") for r in raw]
    valid = [p for p in parsed if isinstance(p, Event)]
    rejections = [p for p in parsed if isinstance(p, Rejection)]
    assert valid == good  # the good records are exactly generate's, in order
    assert len(rejections) / len(raw) == pytest.approx(0.2, abs=0.02)
    reasons = Counter(r.reason for r in rejections)
    assert set(reasons) <= {r.value for r in RejectReason}
    assert {"malformed_json", "bad_encoding", "not_an_object", "missing_field", "bad_type",
            "unknown_event_type", "bad_timestamp", "field_too_long", "currency_mismatch",
            "negative_amount"} <= set(reasons)
    assert all(b"\n" not in r and b"\r" not in r for r in raw)


def test_raw_bad_fraction_range() -> None:
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            generate_raw(customers=1, events=1, seed=1, start_ms=START, bad_fraction=bad)
