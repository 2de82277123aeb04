"""The compiled expression language (docs/rules.md, "Expressions"): null rules, precedence,
strings, `in` / `not in`, and the time analysis the engine schedules with (crossings, coarse),
plus what each expression reads (incremental evaluation) and its terms (the `why`)."""

from __future__ import annotations

from typing import Any

import pytest

from model.state import CustomerState, fold_event
from rules.compiler import CompiledExpr, compile_expr
from rules.context import Ctx
from rules.functions import _cache_key
from rules.model import EngagementSettings, RuleSettings
from rules.parser import parse_expression
from tests.factories import DAY, HOUR, T0, event, profile, purchase

SETTINGS = RuleSettings(
    currency="PLN",
    engagement=EngagementSettings(half_life_ms=DAY, points={"email_open": 1.0, "purchase": 10.0}),
)


def compiled(text: str) -> CompiledExpr:
    return compile_expr(parse_expression(text, file="t.yaml", line=1, column=1), text, SETTINGS)


def customer(*events: Any) -> CustomerState:
    st = CustomerState("c-1")
    for ev in events:
        fold_event(st, ev, SETTINGS.resolution_ms, dict(SETTINGS.engagement.points),
                   SETTINGS.engagement.half_life_ms)
    return st


# A customer who never bought, with a profile.
PROFILED = customer(
    event("page_view", T0),
    profile(T0, region="slaskie", name="Anna", city="Kraków", age=30, flag=True, zero=0),
)


def holds(text: str, st: CustomerState = PROFILED, t: int = T0 + HOUR) -> bool:
    result = compiled(text).fn(Ctx(st, t, SETTINGS.resolution_ms))
    assert type(result) is bool
    return result


# ================================================================== null


@pytest.mark.parametrize("text", [
    "avg_order_value(24h) + 1 == null",
    "1 + avg_order_value(24h) == null",
    "avg_order_value(24h) - 1 == null",
    "avg_order_value(24h) * 0 == null",
    "0 * avg_order_value(24h) == null",
    "avg_order_value(24h) / 1 == null",
    "-avg_order_value(24h) == null",
    "days_since_last_purchase() + days_since_first_seen() == null",
    'attribute("missing") * 2 == null',
    "1 / 0 == null",
    "lifetime_orders() / 0 == null",
    "1 / lifetime_orders() == null",
    "(1 / 0) + 1 == null",
])
def test_arithmetic_with_null_and_division_by_zero_give_null(text: str) -> None:
    assert holds(text)
    assert not holds(text.replace("== null", "!= null"))


def test_zero_divided_is_zero_not_null() -> None:
    assert holds("0 / 4 == 0")
    assert holds("lifetime_orders() / 4 == 0")


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("null_side", [
    "avg_order_value(24h)", 'attribute("missing")', "days_since_last_purchase()", "1 / 0",
])
def test_comparison_with_null_is_false(op: str, null_side: str) -> None:
    assert not holds(f"{null_side} {op} 1")
    assert not holds(f"1 {op} {null_side}")


def test_comparison_with_a_null_valued_text_attribute_is_false() -> None:
    assert not holds('attribute("missing") == "x"')
    assert not holds('attribute("missing") != "x"')
    assert not holds('attribute("missing") < "x"')


def test_equal_null_and_not_equal_null() -> None:
    assert holds("avg_order_value(24h) == null")
    assert holds("null == avg_order_value(24h)")
    assert not holds("avg_order_value(24h) != null")
    assert holds("lifetime_orders() != null")
    assert not holds("lifetime_orders() == null")
    assert holds('attribute("missing") == null')
    assert holds('attribute("region") != null')
    assert holds("null == null")
    assert not holds("null != null")


def test_in_and_not_in_with_null_are_both_false() -> None:
    assert not holds('attribute("missing") in ["a", "b"]')
    assert not holds('attribute("missing") not in ["a", "b"]')
    assert not holds('rfm_segment() in ["lost", "new"]')
    assert not holds('rfm_segment() not in ["lost", "new"]')
    assert not holds("avg_order_value(24h) in [1, 2]")
    assert not holds("avg_order_value(24h) not in [1, 2]")


def test_logic_treats_null_as_false() -> None:
    assert not holds('attribute("missing")')
    assert holds('not attribute("missing")')
    assert not holds('attribute("missing") and true')
    assert not holds('true and attribute("missing")')
    assert holds('attribute("missing") or true')
    assert not holds('attribute("missing") or false')
    assert holds("not (avg_order_value(24h) > 1)")
    assert holds("not (avg_order_value(24h) <= 1)")
    assert not holds("not (avg_order_value(24h) == null)")


def test_a_boolean_attribute_is_a_condition() -> None:
    assert holds('attribute("flag")')
    assert holds('attribute("flag") and true')
    assert not holds('not attribute("flag")')
    assert holds('attribute("flag") == true')
    assert not holds('attribute("flag") == false')


def test_boolean_attribute_values_are_not_numbers() -> None:
    assert not holds('attribute("flag") == 1')
    assert not holds('attribute("flag") >= 1')
    assert not holds('attribute("flag") in [1, 2]')
    assert not holds('attribute("zero") == false')


# ================================================================== precedence


@pytest.mark.parametrize("text", [
    "1 + 2 * 3 == 7",
    "(1 + 2) * 3 == 9",
    "1 - 2 - 3 == -4",
    "1 - (2 - 3) == 2",
    "8 / 4 / 2 == 1",
    "8 / (4 / 2) == 4",
    "-2 * 3 == -6",
    "2 * -3 == -6",
    "-(2 + 3) == -5",
    "10 - 2 * 3 + 4 / 2 == 6",
    "1e3 == 1000",
    "0.25 * 4 == 1",
    "not false and false == false",  # (not false) and (false == false): true
    "true or false and false",  # true or (false and false)
    "false and false or true",  # (false and false) or true
    "not 1 > 2",  # not (1 > 2)
    "1 < 2 and 2 < 3",
    "not not true",
    "lifetime_orders() + 1 * 2 == 2",
    "-lifetime_orders() - 1 == -1",
])
def test_precedence(text: str) -> None:
    assert holds(text)


@pytest.mark.parametrize("text", [
    "not false and false",  # (not false) and false
    "(true or false) and false",
    "not (1 < 2)",
    "1 + 2 * 3 == 9",
    "1 - 2 - 3 == 2",
])
def test_precedence_false(text: str) -> None:
    assert not holds(text)


# ================================================================== strings


def test_string_comparisons() -> None:
    assert holds('attribute("name") == "Anna"')
    assert not holds('attribute("name") != "Anna"')
    assert not holds('attribute("name") == "anna"')  # case matters
    assert holds('attribute("city") == "Kraków"')
    assert holds('"abc" < "abd"')
    assert holds('attribute("name") < "B"')
    assert holds('attribute("name") >= "Ann"')
    assert holds("""'it\\'s' == "it's\"""")
    assert holds('"a\\"b" != "ab"')
    assert holds('"tab\\there" != "tab here"')


def test_text_against_number_never_raises() -> None:
    assert not holds('attribute("name") == 1')
    assert not holds('attribute("name") > 1')
    assert not holds('attribute("name") <= 1')
    assert not holds('attribute("name") + 1 == 1')
    assert holds('attribute("name") + 1 == null')


# ================================================================== in / not in


def test_in_and_not_in() -> None:
    assert holds('attribute("region") in ["malopolskie", "slaskie"]')
    assert not holds('attribute("region") not in ["malopolskie", "slaskie"]')
    assert holds('attribute("region") not in ["mazowieckie"]')
    assert holds('attribute("age") in [18, 30]')
    assert holds('attribute("age") in [30.0]')
    assert not holds('attribute("age") in ["30"]')
    assert holds("lifetime_orders() not in [1, 2]")
    assert holds("lifetime_orders() in [0]")
    assert holds('attribute("flag") in [true]')
    assert holds('not attribute("region") in ["x"]')  # not (... in [...])


def test_in_with_rfm_cells() -> None:
    st = customer(purchase(T0, 100))
    assert holds('rfm_segment() in ["potential_loyalist", "new"]', st)
    assert not holds('rfm_segment() not in ["potential_loyalist", "new"]', st)
    assert holds('rfm_segment() in ["hibernating"]', st, T0 + 200 * DAY)  # R 1, F 2


# ================================================================== time analysis


def test_a_days_since_threshold_is_an_increasing_crossing() -> None:
    expr = compiled("days_since_last_purchase() > 30")
    assert not expr.coarse
    (c,) = expr.crossings
    assert c.mono == 1
    st = customer(purchase(T0))
    assert c.diff(Ctx(st, T0 + 31 * DAY, SETTINGS.resolution_ms)) == 1.0
    assert c.diff(Ctx(st, T0 + 29 * DAY, SETTINGS.resolution_ms)) == -1.0
    assert c.diff(Ctx(customer(), T0, SETTINGS.resolution_ms)) is None  # never bought


@pytest.mark.parametrize(("text", "mono"), [
    ("days_since_last_purchase() > 30", 1),
    ("days_since_last_purchase() <= 30", 1),
    ("30 < days_since_last_purchase()", -1),
    ("days_since_last_purchase() / 2 > 3", 1),
    ("days_since_last_purchase() / -2 > 3", -1),
    ("-days_since_last_purchase() < -30", -1),
    ("days_since_first_seen() + 5 >= 30", 1),
    ('days_since_last("page_view") - 1 < 7', 1),
    ("engagement_score() >= 20", -1),
    ("engagement_score() * 2 < 5", -1),
    ("-engagement_score() > -5", 1),
    ("5 > engagement_score() * 2", 1),
])
def test_crossing_direction(text: str, mono: int) -> None:
    expr = compiled(text)
    assert not expr.coarse
    (c,) = expr.crossings
    assert c.mono == mono


def test_one_crossing_per_time_dependent_comparison() -> None:
    expr = compiled("days_since_last_purchase() > 60 and days_since_last_purchase() <= 180 "
                    "and engagement_score() < 3 and purchase_count(30d) >= 1")
    assert [c.mono for c in expr.crossings] == [1, 1, -1]
    assert not expr.coarse


def test_a_product_with_a_window_count_has_no_static_direction() -> None:
    # between two window steps the count is constant, but its sign is unknown statically
    expr = compiled("days_since_last_purchase() * purchase_count(30d) > 10")
    (c,) = expr.crossings
    assert c.mono is None
    st = customer(purchase(T0), purchase(T0 + 1))
    assert c.diff(Ctx(st, T0 + 1 + 6 * DAY, SETTINGS.resolution_ms)) == pytest.approx(2.0)


@pytest.mark.parametrize("text", [
    "days_since_last_purchase() * days_since_last_purchase() > 2",
    "engagement_score() + days_since_last_purchase() > 5",
    "days_since_last_purchase() * engagement_score() < 1",
    "(days_since_last_purchase() - 2) * (days_since_last_purchase() - 2) < 0.25",
])
def test_coarse_when_the_direction_cannot_be_known(text: str) -> None:
    expr = compiled(text)
    assert expr.coarse
    assert expr.crossings
    assert all(c.mono is None for c in expr.crossings)


@pytest.mark.parametrize("text", [
    "purchase_count(30d) >= 1",
    "purchase_amount(180d) >= 5000 and purchase_count(180d) >= 3",
    'rfm_segment() in ["at_risk", "cannot_lose"]',
    "rfm_r() >= 4",
    'attribute("x") == 1',
    "unsubscribed()",
    "lifetime_orders() * 2 > lifetime_amount()",
    'in_segment("vip")',
    "growth_ratio(90d) >= 1.5",
])
def test_no_crossings_without_continuous_time_terms(text: str) -> None:
    expr = compiled(text)
    assert expr.crossings == []
    assert not expr.coarse


# ================================================================== reads, deps, terms


@pytest.mark.parametrize(("text", "reads"), [
    ("purchase_amount(30d) >= 1", {"purchase", "refund"}),
    ("purchase_count(30d) >= 1", {"purchase", "refund"}),
    ("email_opens(7d) >= 1", {"email_open"}),
    ('count("add_to_cart", 2d) >= 1', {"add_to_cart"}),
    ("open_rate(30d) > 0.2", {"email_open", "email_delivered", "email_sent"}),
    ('attribute("region") == "x"', {"profile_update"}),
    ("unsubscribed()", {"email_unsubscribe"}),
    ("days_since_last_purchase() > 3", {"purchase"}),
    ('days_since_last("page_view") > 3', {"page_view"}),
    ("engagement_score() > 3", {"email_open", "purchase"}),
    ('in_segment("vip")', set()),
    ("email_opens(7d) >= 1 and purchase_count(7d) == 0",
     {"email_open", "purchase", "refund"}),
])
def test_reads(text: str, reads: set[str]) -> None:
    assert compiled(text).reads == reads


def test_deps_are_the_segments_read_through_in_segment() -> None:
    assert compiled('in_segment("vip") and not in_segment("churn")').deps == {"vip", "churn"}
    assert compiled("purchase_count(30d) >= 1").deps == frozenset()


def test_terms_are_the_distinct_calls_in_canonical_text() -> None:
    expr = compiled("days_since_last_purchase() > 60 and days_since_last_purchase() <= 180 "
                    "and lifetime_orders() >= 2 and count('email_click', 30d) >= 1")
    assert [t.text for t in expr.terms] == [
        "days_since_last_purchase()", "lifetime_orders()", 'count("email_click", 30d)']


# ================================================================== literal fast paths
# `x <op> literal` and `x <arith> literal` are compiled to specialised closures; they must agree
# with the general ones (forced here by writing the literal as `(literal + 0)`, which is not a
# literal node), for every kind of value x can have.

MIXED = customer(profile(T0, s="b", i=3, f=2.5, yes=True, no=False, zero=0))
MIXED_VALUES = ['attribute("s")', 'attribute("i")', 'attribute("f")', 'attribute("yes")',
                'attribute("no")', 'attribute("zero")', 'attribute("missing")']


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("lit", ["3", "2.5", "-1", "0"])
@pytest.mark.parametrize("x", MIXED_VALUES)
def test_compare_with_a_number_literal_is_the_general_comparison(x: str, op: str, lit: str
                                                                  ) -> None:
    assert holds(f"{x} {op} {lit}", MIXED) == holds(f"{x} {op} ({lit} + 0)", MIXED)


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("x", MIXED_VALUES)
def test_compare_with_a_string_literal(x: str, op: str) -> None:
    value = {"s": "b"}.get(x.split('"')[1])
    expected = {"==": value == "b", "!=": value is not None and value != "b",
                "<": False, "<=": value == "b", ">": False, ">=": value == "b"}[op]
    if x in ('attribute("i")', 'attribute("f")', 'attribute("zero")', 'attribute("yes")',
             'attribute("no")'):
        expected = op == "!="  # a number or a boolean never equals nor orders with a string
    assert holds(f'{x} {op} "b"', MIXED) is expected


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
@pytest.mark.parametrize("lit", ["2", "0.5", "0", "-3"])
@pytest.mark.parametrize("x", MIXED_VALUES)
def test_arithmetic_with_a_number_literal_is_the_general_arithmetic(x: str, op: str, lit: str
                                                                     ) -> None:
    fast, general = f"({x} {op} {lit})", f"({x} {op} ({lit} + 0))"
    assert holds(f"{fast} == null", MIXED) == holds(f"{general} == null", MIXED)
    if not holds(f"{general} == null", MIXED):
        assert holds(f"{fast} == {general}", MIXED)


def test_in_a_list_of_strings_numbers_and_booleans() -> None:
    assert holds('attribute("s") in ["a", "b"]', MIXED)
    assert not holds('attribute("s") in [1, true, "c"]', MIXED)
    assert holds('attribute("s") not in [1, true, "c"]', MIXED)
    assert not holds('attribute("s") not in [2, "b"]', MIXED)
    assert holds('attribute("i") in ["3", 3]', MIXED)
    assert not holds('attribute("yes") in [1, "true"]', MIXED)
    assert holds('attribute("yes") in [true]', MIXED)


# ================================================================== evaluation order

BUYER = customer(*(event("page_view", T0 + i * HOUR) for i in range(30)), purchase(T0, 50.0))


@pytest.mark.parametrize("text, reads_window", [
    # the cheap side decides: the window is never read
    ("page_views(30d) >= 20 and lifetime_orders() == 0", False),
    ("lifetime_orders() == 0 and page_views(30d) >= 20", False),
    ("page_views(30d) >= 20 or lifetime_orders() >= 1", False),
    # the cheap side does not decide: the window is read, the answer is the same
    ("page_views(30d) >= 20 and lifetime_orders() >= 1", True),
    ("page_views(30d) >= 20 or lifetime_orders() == 0", True),
])
def test_and_or_read_the_cheaper_side_first(text: str, reads_window: bool) -> None:
    """`and`/`or` of two exact booleans commute: the generated condition reads a stored fact
    before a window over buckets (what a customer's window cost is avoided), with the same
    answer as the written order."""
    ctx = Ctx(BUYER, T0 + 31 * HOUR, SETTINGS.resolution_ms)
    result = compiled(text).fn(ctx)
    a, op, b = text.partition(" and ") if " and " in text else text.partition(" or ")
    expected = (holds(a, BUYER, ctx.t) and holds(b, BUYER, ctx.t) if op == " and "
                else holds(a, BUYER, ctx.t) or holds(b, BUYER, ctx.t))
    assert result is expected
    key = _cache_key("type", "page_view", 30 * DAY // SETTINGS.resolution_ms)
    assert (key in ctx.cache) is reads_window
