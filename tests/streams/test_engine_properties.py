"""Property tests: the engine (incremental, timer-driven) against the brute-force reference
(tests/reference.py: every segment at every candidate instant) on random rule files and random
event streams, including hysteresis, dwell, groups, refunds, out-of-order events, duplicates and
time-only transitions."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.events import Event, Item
from rules.model import HOUR_MS, EngagementSettings, RfmSettings, RuleFile, RuleSettings, SegmentDef
from rules.parser import parse_expression
from rules.ruleset import RuleSet
from streams.simulate import Simulator
from tests.reference import Reference

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOWS = [1, 2, 3, 6, 12, 24, 48]

# (template, hysteresis-capable): {w} window hours, {n} small count, {a} amount, {d} days,
# {e} engagement points
ATOMS = [
    ("purchase_amount({w}h) >= {a}", True),
    ("purchase_count({w}h) >= {n}", True),
    ('count("page_view", {w}h) >= {n}', True),
    ("email_opens({w}h) >= {n}", True),
    ("days_since_last_purchase() > {d}", False),
    ("days_since_first_seen() < {d}", False),
    ('days_since_last("page_view") <= {d}', False),
    ("engagement_score() >= {e}", True),
    ("distinct_categories({w}h) >= 2", False),
    ("sessions({w}h) >= 2", False),
    ("refund_amount({w}h) > 0", False),
    ("growth_ratio({w}h) > 1", False),
    ("avg_order_value({w}h) > {a}", False),
    ("open_rate({w}h) >= 0.5", False),
    ('rfm_segment() in ["new", "promising", "potential_loyalist", "champions"]', False),
    ("rfm_r() >= 4", False),
    ('attribute("tier") == "gold"', False),
    ("lifetime_orders() >= {n}", True),
    ("unsubscribed()", False),
    ("days_since_last_purchase() == null", False),
]


@st.composite
def atoms(draw: st.DrawFn) -> tuple[str, str | None]:
    tpl, hyst = draw(st.sampled_from(ATOMS))
    vals = {"w": draw(st.sampled_from(WINDOWS)), "n": draw(st.integers(1, 4)),
            "a": draw(st.integers(0, 2000)), "d": draw(st.sampled_from([0.05, 0.2, 0.5, 1, 1.5])),
            "e": draw(st.integers(1, 30))}
    expr = tpl.format(**vals)
    exit_expr = None
    if hyst and draw(st.booleans()):
        lhs, thr = expr.rsplit(" >= ", 1)
        lower = max(0, int(float(thr)) - draw(st.integers(0, int(float(thr)))))
        exit_expr = f"{lhs} < {lower}"
    return expr, exit_expr


@st.composite
def rule_files(draw: st.DrawFn) -> RuleFile:
    n = draw(st.integers(1, 6))
    segs: list[SegmentDef] = []
    for i in range(n):
        expr, exit_expr = draw(atoms())
        combine = draw(st.sampled_from(["", "and", "or", "not", "in_segment"]))
        if combine in ("and", "or"):
            other, _ = draw(atoms())
            expr, exit_expr = f"{expr} {combine} {other}", None
        elif combine == "not":
            expr, exit_expr = f"not ({expr})", None
        elif combine == "in_segment" and segs:
            ref = draw(st.sampled_from([s.id for s in segs]))
            neg = draw(st.booleans())
            expr = f'{"not " if neg else ""}in_segment("{ref}") and ({expr})'
            exit_expr = None
        group = draw(st.sampled_from([None, None, "tier"]))
        dwell = draw(st.sampled_from([0, 0, 1, 3])) * HOUR_MS
        segs.append(SegmentDef(
            id=f"s{i}", when=parse_expression(expr, file="t", line=1, column=1), when_text=expr,
            exit_when=parse_expression(exit_expr, file="t", line=1, column=1)
            if exit_expr else None, exit_when_text=exit_expr, group=group, min_dwell_ms=dwell))
    settings_ = RuleSettings(
        currency="PLN", resolution_ms=HOUR_MS, retention_ms=30 * 24 * HOUR_MS,
        dedup_horizon_ms=draw(st.sampled_from([1, 48])) * HOUR_MS,
        engagement=EngagementSettings(
            half_life_ms=draw(st.sampled_from([2, 12])) * HOUR_MS,
            # negative points make a score that rises toward 0: no "only falls" shortcut then
            points=draw(st.sampled_from([
                {"email_open": 1, "email_click": 3, "page_view": 0.5, "purchase": 10},
                {"email_open": 1, "page_view": -2, "refund": -10, "purchase": 10}]))),
        rfm=RfmSettings(window_ms=48 * HOUR_MS, recency_days=(0.1, 0.5, 1, 2),
                        frequency=(1, 2, 3, 4), monetary=(100, 500, 1000, 2000)))
    return RuleFile(1, "prop", settings_, tuple(segs), "sha256:prop")


TYPES = ["purchase", "purchase", "refund", "page_view", "page_view", "product_view",
         "email_sent", "email_delivered", "email_open", "email_click", "email_unsubscribe",
         "profile_update", "customer_erased"]


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 40))
    t = T0 + draw(st.integers(0, HOUR_MS))
    out: list[Event] = []
    for i in range(n):
        step = draw(st.sampled_from([0, 1, 60_000, HOUR_MS // 2, 3 * HOUR_MS, 9 * HOUR_MS,
                                     30 * HOUR_MS, -2 * HOUR_MS]))
        t = max(T0, t + step)
        etype = draw(st.sampled_from(TYPES))
        if etype == "customer_erased" and draw(st.integers(0, 3)):
            etype = "page_view"
        cid = draw(st.sampled_from(["c1", "c2", "c3"]))
        eid = f"e{i}"
        if out and draw(st.integers(0, 9)) == 0:
            eid = draw(st.sampled_from(out)).event_id  # a duplicate (or an id reuse)
        kw: dict[str, object] = {}
        if etype in ("purchase", "refund"):
            amount = float(draw(st.integers(0, 1500)))
            kw = {"amount": amount, "currency": "PLN"}
            if etype == "purchase":
                kw["items"] = tuple(Item(f"sku{k}", draw(st.sampled_from("abc")), 1 + k, 1.0)
                                    for k in range(draw(st.integers(0, 2))))
        elif etype in ("page_view", "product_view"):
            kw = {"session_id": draw(st.sampled_from([None, "s1", "s2", "s3"]))}
        elif etype == "profile_update":
            kw = {"attributes": {"tier": draw(st.sampled_from(["gold", "silver", None]))}}
        out.append(Event(event_id=eid, customer_id=cid, type=etype, ts=t, **kw))  # type: ignore[arg-type]
    return out


def _per_customer(changes: list[tuple[str, int, int, str, tuple[str, ...], tuple[str, ...]]]
                  ) -> dict[str, list[tuple[int, int, str, tuple[str, ...], tuple[str, ...]]]]:
    out: dict[str, list[tuple[int, int, str, tuple[str, ...], tuple[str, ...]]]] = defaultdict(list)
    for cid, *rest in changes:
        out[cid].append(tuple(rest))  # type: ignore[arg-type]
    return dict(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rf=rule_files(), events=streams(), tail=st.sampled_from([0, 1, 5, 40]))
def test_engine_matches_reference(rf: RuleFile, events: list[Event], tail: int) -> None:
    ref = Reference(rf)
    ref_rejects = [ref.feed(ev) for ev in events]
    end = max(e.ts for e in events) + tail * HOUR_MS
    ref.advance(end)

    got: list[tuple[str, int, int, str, tuple[str, ...], tuple[str, ...]]] = []
    sim_rejects: list[str | None] = []
    sim = Simulator(RuleSet(rf), until=end,
                    on_change=lambda c: got.append((c.customer_id, c.seq, c.at, c.cause.kind,
                                                    c.entered, c.exited)))
    for ev in events:
        before = sum(sim.stats.rejected.values())
        sim.feed(ev)
        after = sim.stats.rejected
        sim_rejects.append(next((k for k, v in after.items() if v), None)
                           if sum(after.values()) > before else None)
        sim.stats.rejected.clear()
    sim.finish()

    want = [(c.customer_id, c.seq, c.at, c.kind, c.entered, c.exited) for c in ref.changes]
    assert _per_customer(got) == _per_customer(want)
    assert sim_rejects == ref_rejects
    assert {cid: sorted(s.members) for cid, s in sim.states.items()} == {
        cid: sorted(c.members) for cid, c in ref.customers.items()}
