"""Property tests for the engine's newer mechanisms, against the brute-force reference
(tests/reference.py), where a fast path could drift from the spec:

- generated condition functions and the due plan: conditions nesting and / or / not over parts
  that only events change (lifetime_orders(), attribute(), unsubscribed(), in_segment()) and
  parts that time changes (windows crossing bucket edges, days_since_* thresholds solved in
  closed form, engagement crossings), with hysteresis, dwell and groups;
- the rule-language conveniences: count(w), count([...], w), purchase_amount(w, category=...);
- a rule roll-out in the middle of a stream (Engine.reevaluate), against a reference that
  switches its rule file at the same instant;
- `days_flip`, the closed form of a days_since_*() threshold, against its definition;
- `decay_flip`, an engagement_score() threshold solved from the state's score, against its
  definition.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.events import Event
from model.state import CustomerState, engagement_at
from rules.evaluate import _GENERAL, days_flip, decay_flip
from rules.model import DAY_MS, HOUR_MS, RuleFile, RuleSettings, SegmentDef
from rules.parser import parse_expression
from rules.ruleset import RuleSet
from streams.engine import Engine
from streams.simulate import Simulator
from tests.reference import Reference, _consts, _order
from tests.streams.test_engine_properties import WINDOWS, _per_customer, streams

# (template, can have an exit_when lowering its threshold)
TIMED = [
    ("purchase_amount({w}h) >= {a}", True),
    ("purchase_count({w}h) >= {n}", True),
    ('count("page_view", {w}h) >= {n}', True),
    ("count({w}h) >= {n}", True),
    ('count(["page_view", "email_open", "purchase"], {w}h) >= {n}', True),
    # window counts under the other comparisons (counter_flip: == and != walk, the ordered
    # ones stop early when the count at 0 would give the same answer)
    ("purchase_count({w}h) == {n}", False),
    ('count("page_view", {w}h) != {n}', False),
    ('{n} > count(["page_view", "email_open"], {w}h)', False),
    ("refund_count({w}h) <= {n}", False),
    ("growth_ratio({w}h) >= 1.5", False),
    # low thresholds: counter_flip walks from the newest buckets
    ("count({w}h) >= 1", True),
    ('0 < count("page_view", {w}h)', False),
    ("purchase_count({w}h) < 1", False),
    ('purchase_amount({w}h, category="a") >= {n}', True),
    ('purchase_amount({w}h, category="b") > 0', False),
    ("days_since_last_purchase() > {d}", False),
    ("days_since_first_seen() < {d}", False),
    ('days_since_last("page_view") <= {d}', False),
    ("days_since_first_purchase() >= {d}", False),
    ("engagement_score() >= {e}", True),
    ("sessions({w}h) >= 2", False),
    ("open_rate({w}h) >= 0.5", False),
    ("rfm_r() >= 4", False),
    # RFM cells and scores under other comparisons (== and not in, swapped)
    ('rfm_segment() == "champions"', False),
    ('rfm_segment() not in ["lost", "hibernating", "about_to_sleep"]', False),
    ("rfm_f() < 3", False),
    ("3 <= rfm_r()", False),
    ('rfm_segment() in ["new", "promising", "potential_loyalist", "champions"]', False),
]
FIXED = [
    "lifetime_orders() >= {n}",
    "lifetime_orders() == 0",
    "lifetime_amount() >= {a}",
    'attribute("tier") == "gold"',
    "unsubscribed()",
    "not unsubscribed()",
]


@st.composite
def timed_atom(draw: st.DrawFn) -> tuple[str, bool]:
    tpl, hyst = draw(st.sampled_from(TIMED))
    return tpl.format(**_values(draw)), hyst


def _values(draw: st.DrawFn) -> dict[str, object]:
    return {"w": draw(st.sampled_from(WINDOWS)), "n": draw(st.integers(1, 4)),
            "a": draw(st.integers(0, 2000)),
            "d": draw(st.sampled_from([0.05, 0.2, 0.5, 1, 1.5, 0.3333])),
            "e": draw(st.integers(1, 30))}


@st.composite
def condition(draw: st.DrawFn, depth: int = 0) -> str:
    """A random and / or / not tree over timed and event-only parts."""
    kind = draw(st.sampled_from(["timed", "fixed", "and", "or", "not"] if depth < 2
                                else ["timed", "fixed"]))
    if kind == "timed":
        return draw(timed_atom())[0]
    if kind == "fixed":
        return draw(st.sampled_from(FIXED)).format(**_values(draw))
    if kind == "not":
        return f"not ({draw(condition(depth + 1))})"
    left, right = draw(condition(depth + 1)), draw(condition(depth + 1))
    return f"({left}) {kind} ({right})"


@st.composite
def rule_files(draw: st.DrawFn, name: str = "drift") -> RuleFile:
    n = draw(st.integers(1, 5))
    segs: list[SegmentDef] = []
    for i in range(n):
        exit_expr = None
        if draw(st.booleans()):
            expr, hyst = draw(timed_atom())
            if hyst and " >= " in expr and draw(st.booleans()):
                lhs, thr = expr.rsplit(" >= ", 1)
                exit_expr = f"{lhs} < {max(0, int(float(thr)) - draw(st.integers(0, 2)))}"
        else:
            expr = draw(condition())
        if segs and draw(st.integers(0, 3)) == 0:
            ref = draw(st.sampled_from([s.id for s in segs]))
            expr = f'{draw(st.sampled_from(["", "not "]))}in_segment("{ref}") and ({expr})'
            exit_expr = None
        group = draw(st.sampled_from([None, None, "tier"]))
        dwell = draw(st.sampled_from([0, 0, 1, 3])) * HOUR_MS
        segs.append(SegmentDef(
            id=f"s{i}", when=parse_expression(expr, file="t", line=1, column=1), when_text=expr,
            exit_when=parse_expression(exit_expr, file="t", line=1, column=1)
            if exit_expr else None, exit_when_text=exit_expr, group=group, min_dwell_ms=dwell))
    return RuleFile(1, name, _settings(draw), tuple(segs), f"sha256:{name}")


def _settings(draw: st.DrawFn) -> RuleSettings:
    from rules.model import EngagementSettings, RfmSettings

    return RuleSettings(
        currency="PLN", resolution_ms=HOUR_MS, retention_ms=30 * 24 * HOUR_MS,
        dedup_horizon_ms=draw(st.sampled_from([1, 48])) * HOUR_MS,
        engagement=EngagementSettings(half_life_ms=draw(st.sampled_from([2, 12])) * HOUR_MS,
                                      points={"email_open": 1, "email_click": 3, "page_view": 0.5,
                                              "purchase": 10}),
        rfm=RfmSettings(window_ms=48 * HOUR_MS, recency_days=(0.1, 0.5, 1, 2),
                        frequency=(1, 2, 3, 4), monetary=(100, 500, 1000, 2000)))


Change = tuple[str, int, int, str, tuple[str, ...], tuple[str, ...]]


def _run(rf: RuleFile, events: list[Event], end: int,
         switch: tuple[int, RuleFile, int] | None = None) -> tuple[list[Change], Simulator]:
    """The engine through Simulator; `switch` = (events before it, new rules, instant)."""
    got: list[Change] = []
    sim = Simulator(RuleSet(rf), until=end,
                    on_change=lambda c: got.append((c.customer_id, c.seq, c.at, c.cause.kind,
                                                    c.entered, c.exited)))
    for i, ev in enumerate(events):
        if switch is not None and i == switch[0]:
            _roll_out(sim, switch[1], switch[2])
        sim.feed(ev)
    if switch is not None and switch[0] >= len(events):
        _roll_out(sim, switch[1], switch[2])
    sim.finish()
    return got, sim


def _roll_out(sim: Simulator, rf: RuleFile, at: int) -> None:
    """What a worker does on a new rule version: fire what was due under the old rules, then
    re-evaluate every customer under the new ones."""
    sim.advance(at)
    previous, rules = sim.rules, RuleSet(rf)
    engine = Engine(rules)
    for cid in sorted(sim.states):
        sim._settle(cid, engine.reevaluate(sim.states[cid], at, previous=previous))
    sim.rules, sim.engine = rules, engine


def _reference(rf: RuleFile, events: list[Event], end: int,
               switch: tuple[int, RuleFile, int] | None = None) -> Reference:
    ref = Reference(rf)
    for i, ev in enumerate(events):
        if switch is not None and i == switch[0]:
            _ref_switch(ref, switch[1], switch[2])
        ref.feed(ev)
    if switch is not None and switch[0] >= len(events):
        _ref_switch(ref, switch[1], switch[2])
    ref.advance(end)
    return ref


def _ref_switch(ref: Reference, rf: RuleFile, at: int) -> None:
    """The spec of a roll-out at `at`: membership so far under the old rules, then every
    customer evaluated under the new ones (kept segments keep their entry instant)."""
    ref.advance(at)
    ref.rf, ref.s, ref.r = rf, rf.settings, rf.settings.resolution_ms
    ref.order = _order(rf)
    ref.day_consts = sorted({c for seg in rf.segments for c in _consts(seg, "days")})
    ref.eng_consts = sorted({c for seg in rf.segments for c in _consts(seg, "eng")})
    for cid in sorted(ref.customers):
        ref._eval(cid, ref.customers[cid], at, "rules")


def _assert_same(got: list[Change], sim: Simulator, ref: Reference) -> None:
    want = [(c.customer_id, c.seq, c.at, c.kind, c.entered, c.exited) for c in ref.changes]
    assert _per_customer(got) == _per_customer(want)
    assert {cid: sorted(s.members) for cid, s in sim.states.items()} == {
        cid: sorted(c.members) for cid, c in ref.customers.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rf=rule_files(), events=streams(), tail=st.sampled_from([0, 1, 5, 40]))
def test_nested_conditions_and_new_functions_match_reference(rf: RuleFile, events: list[Event],
                                                             tail: int) -> None:
    end = max(e.ts for e in events) + tail * HOUR_MS
    got, sim = _run(rf, events, end)
    _assert_same(got, sim, _reference(rf, events, end))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=rule_files("old"), new=rule_files("new"), events=streams(),
       cut=st.floats(0.0, 1.0), shift=st.sampled_from([0, 1, HOUR_MS // 2, 5 * HOUR_MS]),
       tail=st.sampled_from([0, 5, 40]))
def test_rule_roll_out_mid_stream_matches_reference(old: RuleFile, new: RuleFile,
                                                    events: list[Event], cut: float, shift: int,
                                                    tail: int) -> None:
    # same settings: the state's aggregates (engagement points and half-life, buckets) are
    # folded under the settings of their time, so only the segments change here
    new = dataclasses.replace(new, settings=old.settings)
    k = int(cut * len(events))
    # the roll-out happens after the k-th event was applied (the clock: the largest ts so far)
    at = max((e.ts for e in events[:k]), default=events[0].ts) + shift
    switch = (k, new, at)
    end = max(max(e.ts for e in events), at) + tail * HOUR_MS
    got, sim = _run(old, events, end, switch)
    _assert_same(got, sim, _reference(old, events, end, switch))


_OPS = {"": None, "<": lambda s: s < 0, "<=": lambda s: s <= 0, ">": lambda s: s > 0,
        ">=": lambda s: s >= 0, "==": lambda s: s == 0, "!=": lambda s: s != 0}


@settings(max_examples=800, deadline=None)
@given(ts=st.integers(0, 10**13), const=st.one_of(
    st.sampled_from([0, 0.05, 0.2, 0.5, 1, 1.5, 14, 30, 45, 60, 180, 0.3333, 1e-9]),
    st.floats(-5, 400, allow_nan=False)), ahead=st.integers(-3 * DAY_MS, 400 * DAY_MS),
    exact=st.booleans(), op=st.sampled_from(sorted(_OPS)))
def test_days_flip_is_the_first_instant_the_comparison_changes(
        ts: int, const: float, ahead: int, exact: bool, op: str) -> None:
    now = ts + ahead
    if exact:  # land exactly on the threshold now (sign 0), where the next instant matters
        now = days_flip(ts, const, ts - 10 * DAY_MS) or now
    truth = _OPS[op]

    def value(t: int) -> object:
        d = (t - ts) / DAY_MS - const
        s = (d > 0) - (d < 0)
        return s if truth is None else truth(s)

    at = days_flip(ts, const, now, op)
    if at is None:  # never: past the threshold already, or no later change matters
        assert value(now) == value(now + 1000 * DAY_MS)
        return
    assert at > now
    assert value(at) != value(now)
    assert at - 1 == now or value(at - 1) == value(now)


@settings(max_examples=800, deadline=None)
@given(score=st.one_of(st.sampled_from([0.0, 0.2, 1.0, 20.0, 30.0, 1e6]),
                       st.floats(1e-6, 1e5, allow_nan=False)),
       y=st.one_of(st.sampled_from([0, 0.2, 1, 20, 30]), st.floats(-5, 1e5, allow_nan=False)),
       half_life=st.sampled_from([1, HOUR_MS, 14 * DAY_MS]), ref=st.integers(0, 10**13),
       ahead=st.integers(0, 400 * DAY_MS), span=st.integers(1, 1000 * DAY_MS),
       exact=st.booleans())
def test_decay_flip_is_the_first_instant_the_sign_changes(
        score: float, y: float, half_life: int, ref: int, ahead: int, span: int,
        exact: bool) -> None:
    state = CustomerState("c-1", eng_score=score, eng_ref=ref)

    def sign(t: int) -> int:  # of engagement_score() - y at t, by its definition
        d = engagement_at(state, t, half_life) - y
        return (d > 0) - (d < 0)

    now = ref + ahead  # never before ref: the score's instant is that of an event folded in
    if exact and score > 0 and y > 0:  # start just before the crossing
        at = decay_flip(state, half_life, y, ref, ref + 10**15)
        now = at - 1 if at not in (None, _GENERAL) else now
    top = now + span
    at = decay_flip(state, half_life, y, now, top)
    if at == _GENERAL:  # left to the general search: only scores or thresholds <= 0
        assert score < 0 or y <= 0
        return
    if at is None:  # no change up to top: the value only falls, so the sign there tells
        assert sign(top) == sign(now) or sign(now) < 0
        return
    assert now < at <= top
    assert sign(at) != sign(now)
    assert sign(at - 1) == sign(now)
