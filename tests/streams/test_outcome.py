"""streams/outcome.py (issue 14): the outcome report of a control-group segment on generated
streams with a known effect (found, the interval covers it) and without one (the interval covers
0); exact measurement instants, first entries only, open windows pending, the engine's outputs
unchanged."""

from __future__ import annotations

import random

import pytest

from model.changes import SegmentChange
from model.events import Event, encode_event
from rules.pipelines import held_out
from streams.outcome import (
    OutcomeError,
    OutcomeSimulator,
    compare_means,
    compare_proportions,
    outcome_report,
)
from streams.simulate import Simulator
from tests.factories import DAY, HOUR, T0, days, event, minutes, purchase, rules_from_yaml

SALT = "outcome-test"
SHARE = 0.3
METRIC_RULES = f"""\
version: 1
settings: {{currency: PLN, control_salt: {SALT}}}
segments:
  - id: buyer
    when: purchase_count(7d) >= 1
    control: 30%
    outcome: {{metric: purchase_amount(30d), after: 30d}}
"""
CONVERSION_RULES = f"""\
version: 1
settings: {{currency: PLN, control_salt: {SALT}}}
segments:
  - id: reader
    when: count("email_open", 7d) >= 1
    control: 30%
    outcome: {{conversion: purchase, within: 14d}}
"""


def _cid(i: int) -> str:
    return f"cust-{i:05d}"


def _lines(events: list[Event], end: int | None = None) -> list[bytes]:
    """The log in ts order; `end`: a last event (of another customer) at that instant."""
    if end is not None:
        events.append(event("page_view", end, "zz-end"))
    events.sort(key=lambda e: (e.ts, e.event_id))
    return [encode_event(e) for e in events]


def metric_log(customers: int = 2000, *, effect: float = 50.0, seed: int = 7) -> list[bytes]:
    """Each customer enters `buyer` with a purchase, then buys 0-3 times (10-190 PLN each) in
    the next 29 days; a treated customer (not held out) buys once more for effect +- 20 PLN
    (so the true effect on purchase_amount(30d) 30 days after entering is `effect`)."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(customers):
        cid = _cid(i)
        start = T0 + i * minutes(7)
        events.append(purchase(start, 100.0, cid))
        for _ in range(rng.randint(0, 3)):
            events.append(purchase(start + rng.randint(HOUR, days(29)),
                                   round(rng.uniform(10, 190), 2), cid))
        if effect and not held_out(cid, "buyer", SHARE, SALT):
            events.append(purchase(start + rng.randint(HOUR, days(29)),
                                   round(rng.uniform(effect - 20, effect + 20), 2), cid))
    return _lines(events, T0 + customers * minutes(7) + days(31))


def conversion_log(customers: int = 2000, *, treated_rate: float = 0.5,
                   control_rate: float = 0.3, seed: int = 11) -> list[bytes]:
    """Each customer enters `reader` with an email_open, buys within 13 days with the rate of
    their group, and some buy again 15-20 days later (too late to count)."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(customers):
        cid = _cid(i)
        start = T0 + i * minutes(7)
        events.append(event("email_open", start, cid))
        rate = control_rate if held_out(cid, "reader", SHARE, SALT) else treated_rate
        if rng.random() < rate:
            events.append(purchase(start + rng.randint(HOUR, days(13)), 50.0, cid))
        if rng.random() < 0.3:
            events.append(purchase(start + rng.randint(days(15), days(20)), 50.0, cid))
    return _lines(events, T0 + customers * minutes(7) + days(15))


def test_a_known_effect_on_a_metric_is_found_and_covered() -> None:
    report = outcome_report(rules_from_yaml(METRIC_RULES), "buyer", metric_log(effect=50.0))
    c = report.comparison
    assert report.entered == 2000 and report.pending == 0 and not report.excluded
    assert c.treated.n + c.control.n == 2000
    assert 0.25 < c.control.n / 2000 < 0.35  # the declared 30%
    assert c.ci_low is not None and c.ci_high is not None and c.difference is not None
    assert c.ci_low > 0 and c.p_value is not None and c.p_value < 1e-6 and report.significant
    assert c.ci_low <= 50.0 <= c.ci_high
    assert c.ci_low < c.difference < c.ci_high
    assert "Welch" in c.method


def test_no_effect_on_a_metric_the_interval_covers_zero() -> None:
    report = outcome_report(rules_from_yaml(METRIC_RULES), "buyer", metric_log(effect=0.0))
    c = report.comparison
    assert c.ci_low is not None and c.ci_high is not None
    assert c.ci_low <= 0.0 <= c.ci_high
    assert not report.significant


def test_a_known_effect_on_conversion_is_found_and_covered() -> None:
    report = outcome_report(rules_from_yaml(CONVERSION_RULES), "reader", conversion_log())
    c = report.comparison
    assert report.kind == "conversion" and report.outcome == "purchase within 2w"
    assert c.ci_low is not None and c.ci_high is not None
    assert c.ci_low > 0 and report.significant
    assert c.ci_low <= 0.2 <= c.ci_high
    assert c.treated.conversions is not None and c.control.conversions is not None
    assert c.treated.mean == pytest.approx(c.treated.conversions / c.treated.n)
    assert "statsmodels" in c.method


def test_no_effect_on_conversion_the_interval_covers_zero() -> None:
    report = outcome_report(rules_from_yaml(CONVERSION_RULES), "reader",
                            conversion_log(treated_rate=0.4, control_rate=0.4))
    c = report.comparison
    assert c.ci_low is not None and c.ci_high is not None
    assert c.ci_low <= 0.0 <= c.ci_high and not report.significant


def test_the_report_does_not_change_the_engines_change_records() -> None:
    rules = rules_from_yaml(METRIC_RULES)
    lines = metric_log(300)
    plain: list[SegmentChange] = []
    sim = Simulator(rules, on_change=plain.append)
    sim.feed_lines(lines)
    sim.finish()
    seen: list[SegmentChange] = []
    osim = OutcomeSimulator(rules, "buyer", on_change=seen.append)
    osim.feed_lines(lines)
    osim.finish()
    assert seen == plain and osim.clock == sim.clock
    assert any(ch.control for ch in seen)  # held-out entries are marked in the records


def _held(share_of: str) -> tuple[str, str]:
    """A treated and a held-out customer id of segment `share_of`."""
    ids = [_cid(i) for i in range(100)]
    treated = next(c for c in ids if not held_out(c, share_of, SHARE, SALT))
    control = next(c for c in ids if held_out(c, share_of, SHARE, SALT))
    return treated, control


def test_a_metric_is_measured_at_exactly_entered_at_plus_after() -> None:
    rules = rules_from_yaml(METRIC_RULES.replace("purchase_amount(30d), after: 30d",
                                                 "purchase_amount(365d), after: 10d"))
    a, b = _held("buyer")
    events = [purchase(T0, 10.0, a), purchase(T0 + days(10), 5.0, a),  # at M: counts
              purchase(T0 + days(10) + 1, 1000.0, a),  # just after M: does not
              purchase(T0, 10.0, b), purchase(T0 + days(3), 7.0, b),
              purchase(T0 + days(40), 1.0, "other")]
    sim = OutcomeSimulator(rules, "buyer")
    sim.feed_lines(_lines(events))
    sim.finish()
    assert sim.entries[a].value == 15.0 and not sim.entries[a].control
    assert sim.entries[b].value == 17.0 and sim.entries[b].control


def test_conversion_window_is_after_entry_up_to_within_inclusive() -> None:
    rules = rules_from_yaml(CONVERSION_RULES)
    a, b = _held("reader")
    events = [event("email_open", T0, a), purchase(T0 + days(14), 5.0, a),  # at M: converts
              event("email_open", T0, b), purchase(T0 + days(14) + 1, 5.0, b),  # too late
              purchase(T0 + days(30), 1.0, "other")]
    sim = OutcomeSimulator(rules, "reader")
    sim.feed_lines(_lines(events))
    sim.finish()
    assert sim.entries[a].value == 1.0 and sim.entries[b].value == 0.0
    # the event that makes a customer enter is not a conversion
    rules = rules_from_yaml(METRIC_RULES.replace("metric: purchase_amount(30d), after: 30d",
                                                 "conversion: purchase, within: 14d"))
    sim = OutcomeSimulator(rules, "buyer")
    sim.feed_lines(_lines([purchase(T0, 10.0, a), purchase(T0 + days(20), 1.0, "other")]))
    sim.finish()
    assert sim.entries[a].value == 0.0


def test_first_entry_only_open_windows_pending_and_erased_excluded() -> None:
    rules = rules_from_yaml(METRIC_RULES)
    a, b = _held("buyer")
    c = "cust-late"
    events = [purchase(T0, 10.0, a), purchase(T0 + days(10), 10.0, a),
              purchase(T0 + days(20), 10.0, a),  # re-entries: not measured again
              purchase(T0, 10.0, b), event("customer_erased", T0 + days(5), b),
              purchase(T0 + days(20), 10.0, c),  # window closes day 50 > the end
              purchase(T0 + days(35), 1.0, "other")]
    sim = OutcomeSimulator(rules, "buyer")
    sim.feed_lines(_lines(events))
    sim.finish()
    report = sim.report()
    assert sim.entries[a].entered_at == T0 and sim.entries[a].value == 20.0
    assert report.reentries == 2  # a exits on day 7 and 17, enters again on day 10 and 20
    assert report.excluded == {"erased": 1}
    assert report.pending == 1 + 1  # cust-late and "other" (entered day 35)
    assert report.comparison.treated.n == 1 and report.comparison.control.n == 0
    assert report.comparison.ci_low is None and report.comparison.note
    # --until cuts the log: a's window (day 30) is open at day 29
    sim = OutcomeSimulator(rules, "buyer", until=T0 + days(29))
    sim.feed_lines(_lines(events))
    sim.finish()
    assert sim.report().pending == 2 and sim.report().end == T0 + days(29)


def test_a_segment_without_control_or_outcome_is_refused() -> None:
    rules = rules_from_yaml(METRIC_RULES.replace(
        "    outcome: {metric: purchase_amount(30d), after: 30d}\n", "") + """\
  - id: plain
    when: purchase_count(7d) >= 1
""")
    with pytest.raises(OutcomeError, match="declares no outcome"):
        OutcomeSimulator(rules, "buyer")
    with pytest.raises(OutcomeError, match="no control group"):
        OutcomeSimulator(rules, "plain")
    with pytest.raises(OutcomeError, match="unknown segment 'nope'"):
        OutcomeSimulator(rules, "nope")


def test_statistics_agree_with_scipy_and_statsmodels_directly() -> None:
    from scipy import stats
    from statsmodels.stats.proportion import confint_proportions_2indep

    t = [1.0, 2.0, 3.0, 4.0, 10.0]
    c = [0.0, 1.0, 1.5, 2.0]
    got = compare_means(t, c, confidence=0.9)
    res = stats.ttest_ind(t, c, equal_var=False)
    ci = res.confidence_interval(confidence_level=0.9)
    assert (got.ci_low, got.ci_high, got.p_value) == pytest.approx((ci.low, ci.high,
                                                                    res.pvalue))
    assert got.difference == pytest.approx(4.0 - 1.125)
    p = compare_proportions([1.0] * 30 + [0.0] * 70, [1.0] * 20 + [0.0] * 80)
    low, high = confint_proportions_2indep(30, 100, 20, 100, method="newcomb", compare="diff")
    assert (p.ci_low, p.ci_high) == pytest.approx((low, high))
    assert p.difference == pytest.approx(0.1)
    # no variance: no interval, and said why
    flat = compare_means([1.0, 1.0], [1.0, 1.0])
    assert flat.ci_low is None and flat.note == "the outcome is the same for every customer"


def test_report_json_and_text() -> None:
    report = outcome_report(rules_from_yaml(METRIC_RULES), "buyer", metric_log(400))
    data = report.to_json()
    assert data["segment"] == "buyer" and data["outcome"] == "purchase_amount(30d) after 30d"
    assert data["window"] == "30d" and data["control_share"] == 0.3
    assert set(data) >= {"treated", "control", "difference", "ci_low", "ci_high", "p_value",
                         "significant", "confidence", "method", "pending", "excluded"}
    text = report.text()
    assert "segment buyer: metric purchase_amount(30d) after 30d, control 30%" in text
    assert "95% CI [" in text and "treated" in text and "control" in text
    assert DAY == 24 * HOUR  # (the factories' units the logs above are built with)
