"""`CompiledExpr.trend`: how time alone can move a condition between events. The engine skips
the due instant of a non-member whose `when` is false and can only fall (true and can only
rise), so a wrong direction would be a missed timer: checked here against the condition's value
at later instants, on random conditions over random customers (out-of-order events, refunds,
negative engagement points)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.events import Event
from model.state import CustomerState, fold_event
from rules.compiler import CompiledExpr, compile_expr
from rules.context import Ctx
from rules.model import HOUR_MS, EngagementSettings, RfmSettings, RuleSettings
from rules.parser import parse_expression
from tests.factories import T0, event, item

DAY = 24 * HOUR_MS

# ({w} window hours, {n} count, {a} amount, {d} days, {e} engagement)
ATOMS = [
    "purchase_amount({w}h) >= {a}",
    "purchase_count({w}h) >= {n}",
    "purchase_count({w}h) < {n}",
    'count("page_view", {w}h) >= {n}',
    'page_views({w}h) + count("product_view", {w}h) >= {n}',
    "2 * email_opens({w}h) > {n}",
    "email_opens({w}h) / 2 <= {n}",
    "-purchase_count({w}h) > -{n}",
    "items_count({w}h) >= {n}",
    "refund_count({w}h) == 0",
    "days_since_last_purchase() > {d}",
    "days_since_first_seen() < {d}",
    '{d} >= days_since_last("page_view")',
    "days_since_last_purchase() - days_since_first_seen() > -{d}",
    "engagement_score() >= {e}",
    "engagement_score() < {e}",
    "engagement_score() + purchase_count({w}h) >= {e}",
    "distinct_categories({w}h) >= 2",
    "sessions({w}h) < 2",
    "growth_ratio({w}h) > 1",
    "open_rate({w}h) >= 0.5",
    'rfm_segment() in ["champions", "loyal"]',
    "rfm_r() >= 4",
    'attribute("tier") == "gold"',
    "lifetime_orders() >= {n}",
    "unsubscribed()",
    "days_since_last_purchase() == null",
]


def _atom(draw: st.DrawFn, template: str) -> str:
    return template.format(
        w=draw(st.sampled_from([1, 3, 12, 48])), n=draw(st.integers(0, 3)),
        a=draw(st.integers(0, 1500)), d=draw(st.sampled_from([0.1, 0.5, 1, 2])),
        e=draw(st.sampled_from([-3, 0, 1, 5, 20])))


@st.composite
def conditions(draw: st.DrawFn) -> str:
    text = _atom(draw, draw(st.sampled_from(ATOMS)))
    for _ in range(draw(st.integers(1, 2))):
        how = draw(st.sampled_from(["and", "or", "not"]))
        other = _atom(draw, draw(st.sampled_from(ATOMS)))
        text = f"not ({text})" if how == "not" else f"({text}) {how} ({other})"
    return text


TYPES = ["purchase", "purchase", "refund", "page_view", "product_view", "email_open",
         "email_click", "email_unsubscribe", "profile_update"]


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    t = T0
    out = []
    for _ in range(draw(st.integers(0, 12))):
        t = max(T0, t + draw(st.sampled_from([0, 60_000, HOUR_MS, 5 * HOUR_MS, DAY,
                                              -3 * HOUR_MS])))
        etype = draw(st.sampled_from(TYPES))
        if etype in ("purchase", "refund"):
            items = [item(draw(st.sampled_from("abc")), draw(st.integers(1, 3)))
                     for _ in range(draw(st.integers(0, 2)))] if etype == "purchase" else []
            out.append(event(etype, t, amount=float(draw(st.integers(0, 900))), items=items))
        elif etype == "profile_update":
            out.append(event(etype, t, attributes={"tier": draw(st.sampled_from(["gold", "x"]))}))
        else:
            out.append(event(etype, t, session_id=draw(st.sampled_from([None, "s1", "s2"]))))
    return out


def _settings(points: dict[str, float]) -> RuleSettings:
    return RuleSettings(
        currency="PLN", resolution_ms=HOUR_MS, retention_ms=10 * DAY,
        engagement=EngagementSettings(half_life_ms=6 * HOUR_MS, points=points),
        rfm=RfmSettings(window_ms=2 * DAY, recency_days=(0.1, 0.5, 1, 2),
                        frequency=(1, 2, 3, 4), monetary=(100, 500, 1000, 2000)))


def _compiled(text: str, s: RuleSettings) -> CompiledExpr:
    return compile_expr(parse_expression(text, file="t", line=1, column=1), text, s)


POINTS = [{"email_open": 1.0, "purchase": 10.0, "page_view": 0.5},
          {"email_open": 2.0, "refund": -15.0, "page_view": -1.0}]
STARTS = [-2 * HOUR_MS, 0, 1, HOUR_MS // 2, 7 * HOUR_MS]


def _check(text: str, history: list[Event], points: dict[str, float], start: int) -> None:
    """Claimed trend -1: the condition never turns from false to true over the next three days
    (+1: never from true to false; 0: never changes)."""
    s = _settings(points)
    expr = _compiled(text, s)
    st_ = CustomerState("c-1")
    for ev in history:
        fold_event(st_, ev, s.resolution_ms, points, s.engagement.half_life_ms)
    trend = expr.trend
    if trend is None or (expr.decays and st_.eng_score < 0):
        return  # nothing claimed
    t0 = max((ev.ts for ev in history), default=T0) + start
    # a 20-minute grid (a crossing is monotone: a wrong-way flip shows on it), plus the
    # instants right around each hour edge (where windows step)
    instants = sorted({t0, *range(t0 + 1, t0 + 3 * DAY, 1_200_000),
                       *(h * HOUR_MS + d for h in range(t0 // HOUR_MS, (t0 + 3 * DAY) // HOUR_MS)
                         for d in (-1, 0, 1) if h * HOUR_MS + d > t0)})
    values = [expr.fn(Ctx(st_, t, s.resolution_ms)) for t in instants]
    if trend == 0:
        assert len(set(values)) == 1, (text, values)
    else:
        flips = [(instants[i + 1], values[i + 1]) for i in range(len(values) - 1)
                 if values[i] != values[i + 1]]
        assert all(b is (trend > 0) for _, b in flips), (text, trend, flips[:5])


@pytest.mark.parametrize("template", ATOMS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), history=histories(), points=st.sampled_from(POINTS),
       start=st.sampled_from(STARTS))
def test_each_function_moves_only_its_trend_way_as_time_passes(
        template: str, data: st.DataObject, history: list[Event], points: dict[str, float],
        start: int) -> None:
    _check(data.draw(st.composite(lambda draw: _atom(draw, template))()), history, points, start)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=conditions(), history=histories(), points=st.sampled_from(POINTS),
       start=st.sampled_from(STARTS))
def test_a_combined_condition_moves_only_its_trend_way_as_time_passes(
        text: str, history: list[Event], points: dict[str, float], start: int) -> None:
    _check(text, history, points, start)


@pytest.mark.parametrize(("text", "trend"), [
    ("purchase_count(365d) >= 2", -1),
    ("purchase_count(365d) < 2", 1),
    ("engagement_score() >= 20 or sessions(7d) >= 3", -1),
    ('page_views(30d) + count("product_view", 30d) >= 20 and lifetime_orders() == 0', -1),
    ("days_since_last_purchase() > 180 and lifetime_amount() >= 500", 1),
    ("not (days_since_last_purchase() > 180)", -1),
    ("days_since_first_seen() < 30 and purchase_count(30d) >= 1", -1),
    ("days_since_last_purchase() > 10 and purchase_count(30d) >= 1", None),
    ("purchase_amount(180d) >= 500", None),  # net of refunds: a refund leaving raises it
    ('rfm_segment() == "champions"', None),
    ("purchase_count(30d) == 1", None),
    ('attribute("region") in ["slaskie"]', 0),
    ("lifetime_orders() == 1 and unsubscribed()", 0),
])
def test_trend_of_the_usual_conditions(text: str, trend: int | None) -> None:
    assert _compiled(text, _settings({"purchase": 10.0})).trend == trend


def test_an_engagement_condition_claims_its_trend_only_for_a_score_not_negative() -> None:
    expr = _compiled("engagement_score() >= 5", _settings({"purchase": 10.0}))
    assert expr.trend == -1 and expr.decays
    assert not _compiled("purchase_count(30d) >= 1", _settings({})).decays
