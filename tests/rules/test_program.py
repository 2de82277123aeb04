"""rules/program.py: conditions and due plans as trees of compiled nodes.

The expression semantics are tested through the compiler (tests/rules/test_compiler.py: null
rules, precedence, comparisons, `in`) and the engine (tests/streams/test_engine_properties.py);
here, what is the trees' own: a due plan with more leaves than are precomputed (its parts are
built on first use), against the brute-force reference, and the condition as a callable."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from model.events import Event
from model.state import CustomerState, fold_event
from rules import program
from rules.compiler import _MAX_LEAVES, compile_expr
from rules.context import Ctx
from rules.model import HOUR_MS, EngagementSettings, RuleFile, RuleSettings, SegmentDef
from rules.parser import parse_expression
from rules.ruleset import RuleSet
from streams.simulate import Simulator
from tests.factories import T0, event
from tests.reference import Reference
from tests.streams.test_engine_properties import WINDOWS, streams

SETTINGS = RuleSettings(currency="PLN", resolution_ms=HOUR_MS, retention_ms=60 * HOUR_MS,
                        dedup_horizon_ms=HOUR_MS)
TEMPLATES = ('count("page_view", {w}h) >= {n}', "purchase_count({w}h) >= {n}",
             "purchase_amount({w}h) >= {a}", "email_opens({w}h) >= {n}")


@st.composite
def wide_expressions(draw: st.DrawFn) -> str:
    """`and` / `or` of more window comparisons than the plan precomputes parts for."""
    parts = []
    for _ in range(draw(st.integers(_MAX_LEAVES + 1, _MAX_LEAVES + 4))):
        tpl = draw(st.sampled_from(TEMPLATES))
        parts.append(tpl.format(w=draw(st.sampled_from(WINDOWS)), n=draw(st.integers(1, 3)),
                                a=draw(st.integers(0, 1500))))
    ops = [draw(st.sampled_from([" and ", " or "])) for _ in parts[1:]]
    text = parts[0]
    for op, part in zip(ops, parts[1:], strict=True):
        text = f"({text}){op}{part}" if draw(st.booleans()) else f"{text}{op}{part}"
    return text


def test_a_wide_expression_builds_its_parts_on_first_use() -> None:
    text = " or ".join(f'count("page_view", {w}h) >= 1' for w in range(1, _MAX_LEAVES + 2))
    expr = compile_expr(parse_expression(text, file="t", line=1, column=1), text, SETTINGS)
    plan = expr.due_plan
    assert plan is not None and plan.table is None and plan.build is not None
    ctx = Ctx(CustomerState("c"), 10 * HOUR_MS, HOUR_MS)
    assert plan.parts(ctx) is plan.parts(ctx)  # built once, then cached
    assert len(plan.cache) == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=wide_expressions(), events=streams(), tail=st.sampled_from([0, 5, 40]))
def test_a_wide_expression_matches_the_reference(text: str, events: list[Event],
                                                 tail: int) -> None:
    seg = SegmentDef(id="wide", when=parse_expression(text, file="t", line=1, column=1),
                     when_text=text)
    rf = RuleFile(1, "wide", SETTINGS, (seg,), "sha256:wide")
    ref = Reference(rf)
    for ev in events:
        ref.feed(ev)
    end = max(e.ts for e in events) + tail * HOUR_MS
    ref.advance(end)
    got: list[tuple[str, int, int, tuple[str, ...], tuple[str, ...]]] = []
    sim = Simulator(RuleSet(rf), until=end, on_change=lambda c: got.append(
        (c.customer_id, c.seq, c.at, c.entered, c.exited)))
    for ev in events:
        sim.feed(ev)
    sim.finish()
    want = [(c.customer_id, c.seq, c.at, c.entered, c.exited) for c in ref.changes]
    assert sorted(got) == sorted(want)


def test_a_condition_is_callable_and_says_what_it_is() -> None:
    cond = program.Condition(program.CmpNum(program.Const(3), program.GE, 2), "3 >= 2")
    ctx = Ctx(CustomerState("c"), 0, HOUR_MS)
    assert cond(ctx) is True and repr(cond) == "Condition('3 >= 2')"
    assert program.Condition(program.Const(None), "null")(ctx) is False


def test_a_part_that_time_can_only_turn_false_settles_an_and_while_false() -> None:
    """`engagement_score() >= 5` false now stays false (the score decays): the `and` cannot
    turn true before the next event, so the days_since threshold is no reason to look again;
    true now, the threshold and the score's own crossing are live."""
    s = RuleSettings(currency="PLN", resolution_ms=HOUR_MS, retention_ms=60 * HOUR_MS,
                     engagement=EngagementSettings(half_life_ms=HOUR_MS, points={"purchase": 10}))
    text = "engagement_score() >= 5 and days_since_last_purchase() > 1"
    expr = compile_expr(parse_expression(text, file="t", line=1, column=1), text, s)
    plan = expr.due_plan
    assert plan is not None
    st_ = CustomerState("c")
    fold_event(st_, event("purchase", T0), s.resolution_ms, {"purchase": 10.0}, HOUR_MS)
    assert plan.parts(Ctx(st_, T0 + 2 * HOUR_MS, HOUR_MS)) is None  # 2.5 points: settled
    live = plan.parts(Ctx(st_, T0 + HOUR_MS // 2, HOUR_MS))  # ~7.1 points
    assert live is not None and len(live.crossings) == 2
    # `or`: a part time can only turn true (days_since rises) that is true settles it
    text = "days_since_last_purchase() > 1 or engagement_score() >= 5"
    expr = compile_expr(parse_expression(text, file="t", line=1, column=1), text, s)
    assert expr.due_plan is not None
    assert expr.due_plan.parts(Ctx(st_, T0 + 2 * 24 * HOUR_MS, HOUR_MS)) is None
    assert expr.due_plan.parts(Ctx(st_, T0 + HOUR_MS, HOUR_MS)) is not None


@settings(max_examples=400, deadline=None)
@example(v=float(1 << 60), y=(1 << 60) + 1, op=program.LT)  # a double rounds y to v
@example(v=(1 << 60) + 1, y=1 << 60, op=program.GT)
@example(v=True, y=1, op=program.EQ)
@example(v=float("nan"), y=0, op=program.NE)
@given(v=st.one_of(st.integers(), st.integers(-(1 << 70), 1 << 70), st.floats(), st.booleans(),
                   st.none(), st.text(max_size=3)),
       y=st.one_of(st.integers(-5, 5), st.integers(-(1 << 70), 1 << 70),
                   st.floats(allow_nan=False)),
       op=st.sampled_from([program.EQ, program.NE, program.LT, program.LE, program.GT,
                           program.GE]))
def test_a_comparison_with_a_number_is_python_s_with_the_null_rules(v: object, y: float,
                                                                     op: int) -> None:
    """CmpNum's native paths (int against an int literal, float against a number a double
    holds) answer as Python's comparison does, big ints and NaN included; null is false, true
    and false are never numbers, text against a number is only `!=`."""
    if v is None:
        want = False
    elif type(v) is bool or type(v) is str:
        want = op == program.NE
    else:
        want = bool(program.PYOPS[op](v, y))
    node = program.CmpNum(program.Const(v), op, y)
    ctx = Ctx(CustomerState("c"), 0, HOUR_MS)
    assert node.truth(ctx) is want
    assert node.value(ctx) is want
