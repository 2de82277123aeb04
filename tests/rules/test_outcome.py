"""rules/outcome.py (issue 14): a control-group segment's `outcome:` loads (metric: a numeric
rule expression; conversion: an event type) and every mistake is reported with line, column and
a suggestion where one exists."""

from __future__ import annotations

import pytest

from model.errors import RuleFileError
from rules.ast import Call
from rules.loader import load_rules_text

HEAD = """\
version: 1
settings: {currency: PLN}
segments:
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        load_rules_text(text, source="r.yaml")
    return [str(p) for p in info.value.problems]


def test_metric_and_conversion_outcomes_load() -> None:
    rf = load_rules_text(HEAD + """\
  - id: vip
    when: purchase_amount(180d) >= 5000
    control: 10%
    outcome: {metric: purchase_amount(30d) - refund_amount(30d), after: 30d}
  - id: reader
    when: count("email_open", 7d) >= 1
    control: 25%
    outcome:
      conversion: purchase
      within: 14d
  - {id: plain, when: purchase_count(30d) >= 1}
""")
    vip, reader, plain = rf.segments
    assert vip.outcome is not None and vip.outcome.kind == "metric"
    assert vip.outcome.metric_text == "purchase_amount(30d) - refund_amount(30d)"
    assert vip.outcome.window_ms == 30 * 86_400_000 and vip.outcome.event_type is None
    assert isinstance(getattr(vip.outcome.metric, "left", None), Call)
    assert reader.outcome is not None and reader.outcome.kind == "conversion"
    assert reader.outcome.event_type == "purchase"
    assert reader.outcome.window_ms == 14 * 86_400_000 and reader.outcome.metric is None
    assert plain.outcome is None


def test_outcome_problems_point_at_line_and_column() -> None:
    got = problems(HEAD + """\
  - {id: a, when: count(1h) > 0, outcome: {conversion: purchase, within: 14d}}
  - {id: b, when: count(1h) > 0, control: 5%, outcome: {conversion: purchse, within: 3d}}
  - {id: c, when: count(1h) > 0, control: 5%, outcome: {conversion: purchase, after: 3d}}
  - {id: d, when: count(1h) > 0, control: 5%, outcome: {metric: purchase_count(9d) >= 1, after: 9d}}
  - {id: e, when: count(1h) > 0, control: 5%, outcome: {metric: purchase_amount(30x), after: 9d}}
  - {id: f, when: count(1h) > 0, control: 5%, outcome: {metric: purchase_amount(31m), after: 9}}
  - {id: g, when: count(1h) > 0, control: 5%, outcome: 3}
  - {id: h, when: count(1h) > 0, control: 5%, outcome: {metric: purchase_amount(30d)}}
  - {id: i, when: count(1h) > 0, control: 5%, outcome: {metric: x(), conversion: purchase}}
  - {id: j, when: count(1h) > 0, control: 5%, outcome: {after: 3d}}
  - {id: k, when: count(1h) > 0, control: 5%, outcome: {metrc: purchase_amount(30d)}}
  - {id: l, when: count(1h) > 0, control: 5%, outcome: {metric: purchase_amount(30d), after: 0d}}
""")
    assert "r.yaml:4:43: outcome needs a control group to compare with: add control: 10% (or " \
           "another share) to this segment" in got
    assert "r.yaml:5:69: unknown event type 'purchse' in outcome conversion (an event type such " \
           "as purchase or email_click) (did you mean 'purchase'?)" in got
    assert "r.yaml:6:86: 'after' goes with metric: an outcome with conversion takes 'within' " \
           "(did you mean 'within'?)" in got
    assert not any(p.startswith("r.yaml:6:") and "missing" in p for p in got)
    assert any(p.startswith("r.yaml:7:65: outcome metric must be a number, but "
                            "purchase_count(9d) >= 1 is a condition (true/false)") for p in got)
    assert any(p.startswith("r.yaml:8:83: syntax error") for p in got)
    assert "r.yaml:9:81: the window of purchase_amount() (31m) is not a multiple of the " \
           "resolution (1h) (did you mean 'purchase_amount(1h)'?)" in got
    assert "r.yaml:9:94: outcome after: 9 has no unit: write e.g. 9d (units: m, h, d, w) " \
           "(did you mean '9d'?)" in got
    assert any(p.startswith("r.yaml:10:56: outcome must be a mapping") for p in got)
    assert any(p.startswith("r.yaml:11:56: outcome with metric is missing the required key "
                            "'after'") for p in got)
    assert any(p.startswith("r.yaml:12:82: outcome has both metric and conversion") for p in got)
    assert any(p.startswith("r.yaml:13:56: outcome needs either metric and after, or "
                            "conversion and within") for p in got)
    assert "r.yaml:14:57: unknown key 'metrc' in outcome (known keys: metric, after, " \
           "conversion, within) (did you mean 'metric'?)" in got
    assert not any(p.startswith("r.yaml:14:56") for p in got)  # the unknown key says it
    assert "r.yaml:15:94: outcome after must be longer than 0" in got


def test_an_unknown_function_in_a_metric_is_reported_once_with_a_suggestion() -> None:
    got = problems(HEAD + "  - {id: a, when: purchase_count(30d) >= 1, control: 5%,\n"
                          "     outcome: {metric: purchase_amout(30d), after: 30d}}\n")
    assert got == ["r.yaml:5:24: unknown function 'purchase_amout' (did you mean "
                   "'purchase_amount'?)"]


def test_a_comma_in_a_flow_mapping_metric_says_how_to_write_it() -> None:
    got = problems(HEAD + '  - {id: a, when: count(1h) > 0, control: 5%, outcome: {metric: '
                          'count("add_to_cart", 30d), after: 30d}}\n')
    assert "r.yaml:4:56: the metric contains a comma, which ends a value in a {...} mapping: " \
           "write outcome: as indented 'key: value' lines, or quote the metric" in got
