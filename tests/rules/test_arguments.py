"""The rule-language conveniences: count(w), count([...], w) and purchase_amount(w,
category=...): parsing, canonical text, values, and the loader's problems (line, column,
suggestion) for lists and name=value arguments used wrongly."""

from __future__ import annotations

import pytest

from model.events import Event, Item
from model.state import CustomerState, fold_event
from rules.compiler import compile_expr
from rules.context import Ctx
from rules.loader import load_rules_text
from rules.model import RuleSettings
from rules.parser import parse_expression, to_source
from tests.factories import DAY, HOUR, T0, event, purchase, refund
from tests.rules.test_loader import at, expr_problem, rules_text, where

SETTINGS = RuleSettings(currency="PLN")


@pytest.mark.parametrize("text", [
    "count(30d) >= 1",
    'count(["page_view", "product_view"], 30d) >= 2',
    'purchase_amount(30d, category="books") >= 100',
    'purchase_amount(30d, category="books") - purchase_amount(30d) < 0',
])
def test_canonical_text_round_trips(text: str) -> None:
    expr = parse_expression(text, file="t", line=1, column=1)
    assert to_source(expr) == text
    assert to_source(parse_expression(to_source(expr), file="t", line=1, column=1)) == text


def test_the_new_functions_load() -> None:
    rf = load_rules_text(rules_text(
        "- id: a\n  when: count(30d) >= 20\n"
        '- id: b\n  when: count(["page_view", "product_view"], 7d) >= 3\n'
        '- id: c\n  when: purchase_amount(90d, category="books") >= 100\n'))
    assert [s.when_text for s in rf.segments] == [
        "count(30d) >= 20", 'count(["page_view", "product_view"], 7d) >= 3',
        'purchase_amount(90d, category="books") >= 100']


def _values(text: str, st: CustomerState, t: int) -> dict[str, object]:
    expr = compile_expr(parse_expression(text, file="t", line=1, column=1), text, SETTINGS)
    ctx = Ctx(st, t, SETTINGS.resolution_ms)
    return {term.text: term.fn(ctx) for term in expr.terms}


def _customer(*events: Event) -> CustomerState:
    st = CustomerState("c-1")
    for ev in events:
        fold_event(st, ev, SETTINGS.resolution_ms, {}, SETTINGS.engagement.half_life_ms)
    return st


def test_values() -> None:
    st = _customer(
        event("page_view", T0), event("product_view", T0 + HOUR), event("email_open", T0),
        purchase(T0 + 2 * HOUR, amount=90.0, items=(Item("s1", "books", 2, 20.0),
                                                    Item("s2", "toys", 1, 50.0))),
        purchase(T0 - 40 * DAY, amount=30.0, items=(Item("s3", "books", 1, 30.0),)),
        refund(T0 + 3 * HOUR, amount=40.0))
    got = _values('count(7d) + count(["page_view", "product_view", "purchase"], 7d) + '
                  'purchase_amount(7d, category="books") + purchase_amount(90d, category="books")'
                  ' + purchase_amount(7d, category="garden") > 0', st, T0 + 4 * HOUR)
    assert got == {
        "count(7d)": 5,  # page_view, product_view, email_open, purchase, refund
        'count(["page_view", "product_view", "purchase"], 7d)': 3,
        'purchase_amount(7d, category="books")': 40.0,  # the refund is not subtracted
        'purchase_amount(90d, category="books")': 70.0,
        'purchase_amount(7d, category="garden")': 0.0,
    }


def test_count_of_everything_reads_every_event_type() -> None:
    text = "count(30d) >= 1"
    expr = compile_expr(parse_expression(text, file="t", line=1, column=1), text, SETTINGS)
    assert {"page_view", "purchase", "email_bounce", "profile_update"} <= expr.reads
    text = 'purchase_amount(30d, category="x") >= 1'
    expr = compile_expr(parse_expression(text, file="t", line=1, column=1), text, SETTINGS)
    assert expr.reads == frozenset({"purchase"})


@pytest.mark.parametrize(("when", "needle", "fragment", "suggestion"), [
    ('count(["page_veiw"], 30d) > 1', '"page_veiw"', "unknown event type 'page_veiw'",
     "page_view"),
    ('count(["page_view", "page_view"], 30d) > 1', '"page_view"]', "listed twice", None),
    ("count([1], 30d) > 1", "1]", "must hold event types in quotes", '"1"'),
    ("count([], 30d) > 1", "[]", "is empty", 'count(["page_view", "product_view"], 30d)'),
    ('count(["page_view"]) > 1', "count", "takes 2 arguments (event_type, window), got 1",
     'count(["page_view"], 30d)'),
    ('days_since_last(["page_view"]) > 1', '["page_view"]', "not a list", None),
    ('purchase_amount(30d, categroy="books") > 1', "categroy", "has no argument 'categroy'",
     "category"),
    ('purchase_count(30d, category="books") > 1', "category", "takes no name=value arguments",
     "purchase_count(30d)"),
    ("purchase_amount(30d, category=5) > 1", "5)", "must be a product category in quotes",
     '"5"'),
    ('purchase_amount(30d, category="") > 1', '""', "is empty", None),
    ('purchase_amount(category="books", 30d) > 1', "30d", "come first", None),
    ('purchase_amount(30d, category="a", category="b") > 1', 'category="b"', "given twice",
     None),
])
def test_problems(when: str, needle: str, fragment: str, suggestion: str | None) -> None:
    problem, text = expr_problem(f"'{when}'")
    assert where(problem) == at(text, needle, after="when:")
    assert fragment in problem.message
    assert problem.suggestion == suggestion


def test_keyword_equals_outside_a_call_still_suggests_double_equals() -> None:
    problem, text = expr_problem("lifetime_orders() = 1")
    assert where(problem) == at(text, "=", after="orders()")
    assert problem.suggestion == "=="
