"""The rule-file loader: examples, every static check (position and suggestion), dependencies."""

from __future__ import annotations

import dataclasses
import hashlib
import textwrap
from importlib import resources
from pathlib import Path

import pytest

from model.errors import RuleFileError, RuleProblem
from rules.ast import Binary, Call, Expr, Literal, Pos, calls
from rules.loader import dependency_order, format_duration, load_rules, load_rules_text
from rules.model import DAY_MS, DEFAULT_RFM_GRID, HOUR_MS, MINUTE_MS, RuleFile

EXAMPLES = resources.files("rules").joinpath("examples")

HEAD = """\
version: 1
name: test
settings:
  currency: PLN
"""


def rules_text(segments: str, settings: str = "") -> str:
    """A rule file with the given (dedented) settings lines and segment list."""
    text = HEAD + textwrap.indent(textwrap.dedent(settings), "  ")
    return text + "segments:\n" + textwrap.indent(textwrap.dedent(segments), "  ")


def problems(text: str | bytes) -> list[RuleProblem]:
    with pytest.raises(RuleFileError) as info:
        load_rules_text(text, source="t.yaml")
    return info.value.problems


def one_problem(text: str | bytes) -> RuleProblem:
    found = problems(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def at(text: str, needle: str, nth: int = 0, after: str = "") -> tuple[int, int]:
    """1-based (line, column) of the nth occurrence of `needle` in `text` (after `after`)."""
    index = text.index(after) - 1 if after else -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def where(problem: RuleProblem) -> tuple[int, int]:
    return problem.line, problem.column


# --- the examples -------------------------------------------------------------------------------


def test_retail_example_loads() -> None:
    path = EXAMPLES.joinpath("retail.yaml")
    rule_file = load_rules(str(path))
    assert rule_file.version == 1
    assert rule_file.name == "retail-default"
    assert rule_file.source == str(path)
    settings = rule_file.settings
    assert settings.currency == "PLN"
    assert settings.resolution_ms == HOUR_MS
    assert settings.retention_ms == 400 * DAY_MS
    assert settings.dedup_horizon_ms == 7 * DAY_MS
    assert settings.engagement.half_life_ms == 14 * DAY_MS
    assert settings.engagement.points["page_view"] == 0.2
    assert settings.rfm.window_ms == 365 * DAY_MS
    assert settings.rfm.recency_days == (14, 30, 90, 180)
    assert settings.rfm.grid == DEFAULT_RFM_GRID
    assert 15 <= len(rule_file.segments) <= 20
    tier = [s.id for s in rule_file.segments if s.group == "tier"]
    assert tier == ["vip", "growth", "potential", "low_value"]
    vip = rule_file.segments[0]
    assert vip.label == "VIP" and vip.color == "#C9A227" and vip.icon == "crown"
    assert vip.when_text == "purchase_amount(180d) >= 5000 and purchase_count(180d) >= 3"
    assert vip.exit_when_text == "purchase_amount(180d) < 4000"
    assert vip.min_dwell_ms == 7 * DAY_MS
    assert vip.actions == {"pipeline": "premium",
                           "followups": ["account_manager_call", "vip_welcome_pack"]}
    used = {c.name for s in rule_file.segments for c in _calls(s.when)}
    assert {"rfm_segment", "open_rate", "click_rate", "email_opens", "engagement_score",
            "sessions", "days_since_last_purchase", "lifetime_orders", "days_since_first_seen",
            "attribute", "in_segment", "growth_ratio"} <= used
    hash_ = "sha256:" + hashlib.sha256(Path(str(path)).read_bytes()).hexdigest()
    assert rule_file.content_hash == hash_
    order = dependency_order(rule_file)
    ids = [rule_file.segments[i].id for i in order]
    assert ids.index("vip") < ids.index("vip_at_risk")


def _calls(expr: Expr) -> list[Call]:
    return calls(expr)


def test_minimal_example_loads() -> None:
    rule_file = load_rules(Path(str(EXAMPLES.joinpath("minimal.yaml"))))
    assert [s.id for s in rule_file.segments] == ["big_spender", "buyer", "reader"]
    assert rule_file.settings.currency == "EUR"
    assert rule_file.settings.resolution_ms == HOUR_MS  # default


def test_text_and_bytes_give_the_same_hash() -> None:
    text = rules_text("- id: a\n  when: purchase_count(30d) >= 1\n")
    from_text = load_rules_text(text)
    from_bytes = load_rules_text(text.encode(), source="x.yaml")
    expected = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert from_text.content_hash == from_bytes.content_hash == expected
    assert from_text.source == "<string>" and from_bytes.source == "x.yaml"
    changed = load_rules_text(text + "# a comment\n")
    assert changed.content_hash != expected


def test_segment_fields_and_positions() -> None:
    text = rules_text("""\
        - id: a
          label: 2024
          color: "#abc"
          when: |
            purchase_count(30d) >= 1
              and not unsubscribed()
          exit_when: 'purchase_count(60d) == 0'
          min_dwell: 90m
          actions: {x: [1, 2]}
    """)
    (seg,) = load_rules_text(text).segments
    assert seg.pos == Pos(*at(text, "id: a"))
    assert seg.label == "2024" and seg.color == "#abc" and seg.group is None
    assert seg.min_dwell_ms == 90 * MINUTE_MS
    assert seg.actions == {"x": [1, 2]}
    assert seg.when_text == "purchase_count(30d) >= 1\n  and not unsubscribed()"
    assert isinstance(seg.when, Binary)
    assert seg.when.pos == Pos(*at(text, "and not"))
    comparison = seg.when.left
    assert isinstance(comparison, Binary) and comparison.pos == Pos(*at(text, ">= 1"))
    assert comparison.left.pos == Pos(*at(text, "purchase_count(30d)"))
    assert seg.exit_when is not None and seg.exit_when.pos == Pos(*at(text, "== 0"))


# --- YAML and file level ------------------------------------------------------------------------


def test_bad_yaml_has_a_position() -> None:
    text = rules_text("- id: a\n  when: [purchase_count(30d)\n- id: b\n")
    problem = one_problem(text)
    assert problem.message.startswith("invalid YAML")
    assert problem.line == at(text, "- id: b")[0]


def test_colon_in_expression_gets_a_hint() -> None:
    text = rules_text('- id: a\n  when: attribute("x") == "a: b"\n')
    problem = one_problem(text)
    assert problem.message.startswith("invalid YAML")
    assert "when: >-" in problem.message


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    assert one_problem(text).message == "the rule file is empty"


def test_not_utf8() -> None:
    problem = one_problem(b"version: 1\nname: \xff\n")
    assert where(problem) == (2, 7)
    assert "UTF-8" in problem.message


def test_missing_file() -> None:
    with pytest.raises(RuleFileError) as info:
        load_rules("/nonexistent/rules.yaml")
    assert "cannot read" in info.value.problems[0].message


def test_missing_and_unknown_top_level_keys() -> None:
    text = "version: 1\nsettings:\n  currency: PLN\nsegmnets: []\n"
    found = problems(text)
    messages = [p.message for p in found]
    assert not any("'name'" in m for m in messages)  # optional: the file's stem
    assert any("missing the required key 'segments'" in m for m in messages)
    unknown = next(p for p in found if "unknown key 'segmnets'" in p.message)
    assert where(unknown) == (4, 1)
    assert unknown.suggestion == "segments"


def test_name_defaults_to_the_files_stem_and_segments_take_a_description(
        tmp_path: Path) -> None:
    path = tmp_path / "my-shop.yaml"
    path.write_text("version: 1\nsettings: {currency: PLN}\nsegments:\n"
                    "  - {id: buyer, when: 'purchase_count(30d) >= 1',\n"
                    "     description: Bought something in the last 30 days}\n")
    rule_file = load_rules(path)
    assert rule_file.name == "my-shop"
    assert rule_file.segments[0].description == "Bought something in the last 30 days"
    from rules.ruleset import RuleSet
    from streams.query import segments_view

    [seg] = segments_view(RuleSet(rule_file), {}, "worker")["segments"]
    assert seg["description"] == "Bought something in the last 30 days"


def test_root_must_be_a_mapping() -> None:
    assert "must be a mapping" in one_problem("- a\n- b\n").message


@pytest.mark.parametrize("value", ["2", "'1'", "1.0"])
def test_version_must_be_1(value: str) -> None:
    text = rules_text("- id: a\n  when: true\n").replace("version: 1", f"version: {value}")
    problem = one_problem(text)
    assert where(problem) == (1, 10)
    assert "version" in problem.message and problem.suggestion == "1"


def test_duplicate_keys() -> None:
    text = rules_text("- id: a\n  when: true\n  when: false\n")
    problem = one_problem(text)
    assert problem.message == f"duplicate key 'when' (first at line {at(text, 'when')[0]})"
    assert where(problem) == at(text, "when", 1)


def test_yaml_merge_keys_share_fields() -> None:
    text = rules_text("""\
        - &base
          id: a
          color: "#fff"
          actions: {pipeline: x}
          when: true
        - <<: *base
          id: b
          when: false
    """)
    a, b = load_rules_text(text).segments
    assert (b.id, b.color, b.actions, b.when_text) == ("b", "#fff", {"pipeline": "x"}, "false")
    assert a.when_text == "true"


def test_segments_must_be_a_non_empty_list() -> None:
    assert "at least one segment" in one_problem(HEAD + "segments: []\n").message
    assert "must be a list" in one_problem(HEAD + "segments: {a: 1}\n").message


# --- settings -----------------------------------------------------------------------------------

SEG = "- id: a\n  when: purchase_count(1d) >= 1\n"


@pytest.mark.parametrize(("currency", "suggestion"), [
    ("pln", "PLN"), ("zł", "PLN"), ("€", "EUR"), ("PLZ", "PLN"), ("EURO", "EUR"), ("QQQ", None),
])
def test_currency_must_be_iso_4217(currency: str, suggestion: str | None) -> None:
    text = rules_text(SEG).replace("currency: PLN", f"currency: {currency}")
    problem = one_problem(text)
    assert where(problem) == at(text, currency)
    assert "ISO 4217" in problem.message
    assert problem.suggestion == suggestion


def test_currency_is_required() -> None:
    text = "version: 1\nname: t\nsettings:\n  resolution: 1h\nsegments:\n" + textwrap.indent(
        SEG, "  ")
    problem = one_problem(text)
    assert where(problem) == (4, 3)
    assert "missing the required key 'currency'" in problem.message


@pytest.mark.parametrize(("value", "fragment", "suggestion"), [
    ("90s", "seconds are not supported", "2m"),
    ("120s", "seconds are not supported", "2m"),
    ("1.5h", "whole number", None),
    ("30", "has no unit", "30d"),
    ("2 weeks", "not a duration", "2w"),
    ("1H", "not a duration", "1h"),
    ("3 months", "months", "90d"),
    ("1y", "years", "365d"),
    ("soon", "not a duration", None),
    ("2x", "unknown unit", None),
])
def test_settings_durations(value: str, fragment: str, suggestion: str | None) -> None:
    text = rules_text(SEG, f"dedup_horizon: {value}\n")
    problem = one_problem(text)
    assert where(problem) == at(text, value, text.count(value) - 1)
    assert problem.message.startswith("dedup_horizon:")
    assert fragment in problem.message
    assert problem.suggestion == suggestion


@pytest.mark.parametrize(("value", "suggestion"), [("2d", "1d"), ("0m", None)])
def test_resolution_between_1m_and_1d(value: str, suggestion: str | None) -> None:
    text = rules_text(SEG, f"resolution: {value}\n")
    problem = one_problem(text)
    assert where(problem) == at(text, value)
    assert problem.suggestion == suggestion


def test_retention_at_least_resolution() -> None:
    text = rules_text("- id: a\n  when: true\n", "resolution: 1d\nretention: 12h\n")
    problem = one_problem(text)
    assert where(problem) == at(text, "12h")
    assert problem.suggestion == "1d"


def test_settings_values_are_read() -> None:
    text = rules_text("- id: a\n  when: purchase_count(15m) >= 1\n", """\
        resolution: 15m
        retention: 30d
        dedup_horizon: 0m
        future_tolerance: 2m
        engagement: {half_life: 1w, points: {email_click: 3, purchase: 10}}
        rfm:
          window: 28d
          recency_days: [7, 14, 21, 28.5]
          frequency: [1, 3, 5, 7]
          monetary: [10, 20, 30, 40]
          grid: {stars: ["55", "54"], fading: ["15"]}
    """)
    settings = load_rules_text(text).settings
    assert settings.resolution_ms == 15 * MINUTE_MS
    assert settings.retention_ms == 30 * DAY_MS
    assert settings.dedup_horizon_ms == 0
    assert settings.future_tolerance_ms == 2 * MINUTE_MS
    assert settings.engagement.half_life_ms == 7 * DAY_MS
    assert dict(settings.engagement.points) == {"email_click": 3, "purchase": 10}
    assert settings.rfm.window_ms == 28 * DAY_MS
    assert settings.rfm.recency_days == (7, 14, 21, 28.5)
    assert settings.rfm.frequency == (1, 3, 5, 7)
    expected_grid = {**DEFAULT_RFM_GRID, (5, 5): "stars", (5, 4): "stars", (1, 5): "fading"}
    assert settings.rfm.grid == expected_grid


def test_unknown_settings_key() -> None:
    text = rules_text(SEG, "retension: 30d\n")
    problem = one_problem(text)
    assert where(problem) == at(text, "retension")
    assert problem.suggestion == "retention"


def test_engagement_points() -> None:
    text = rules_text(SEG, "engagement: {points: {email_opn: 1, purchase: lots}}\n")
    found = problems(text)
    assert [(where(p), p.suggestion) for p in found] == [
        (at(text, "email_opn"), "email_open"), (at(text, "lots"), None)]
    assert "unknown event type 'email_opn'" in found[0].message
    assert "must be a number" in found[1].message


def test_engagement_unknown_key() -> None:
    problem = one_problem(rules_text(SEG, "engagement: {halflife: 7d}\n"))
    assert problem.suggestion == "half_life"


@pytest.mark.parametrize(("value", "fragment", "suggestion"), [
    ("[1, 2, 4]", "exactly 4 increasing numbers", None),
    ("[1, 2, 4, 8, 16]", "exactly 4 increasing numbers", None),
    ("[2, 1, 4, 8]", "must be increasing", "[1, 2, 4, 8]"),
    ("[1, 1, 4, 8]", "must be increasing", None),
    ("7", "exactly 4 increasing numbers", None),
])
def test_rfm_thresholds(value: str, fragment: str, suggestion: str | None) -> None:
    text = rules_text(SEG, f"rfm: {{frequency: {value}}}\n")
    problem = one_problem(text)
    assert where(problem) == at(text, value)
    assert fragment in problem.message
    assert problem.suggestion == suggestion


def test_rfm_threshold_items_must_be_numbers() -> None:
    text = rules_text(SEG, "rfm: {monetary: [1, two, 3, 4]}\n")
    problem = one_problem(text)
    assert where(problem) == at(text, "two")


def test_rfm_window_is_checked_like_a_window() -> None:
    text = rules_text(SEG, "retention: 100d\nrfm: {window: 365d}\n")
    problem = one_problem(text)
    assert where(problem) == at(text, "365d")
    assert "longer than the retention" in problem.message


def test_default_rfm_window_must_fit_when_rfm_is_used() -> None:
    text = rules_text('- id: a\n  when: rfm_m() >= 4 or rfm_r() >= 4\n', "retention: 100d\n")
    problem = one_problem(text)
    assert where(problem) == at(text, "rfm_m")
    assert "settings.rfm.window, which rfm_m() uses, (365d) is longer than the retention" \
        in problem.message
    load_rules_text(text.replace("retention: 100d", "retention: 100d\n  rfm: {window: 100d}"))


@pytest.mark.parametrize(("grid", "needle", "fragment"), [
    ('{champions: ["56"]}', '"56"', 'not an "RF" score'),
    ('{champions: ["5"]}', '"5"', 'not an "RF" score'),
    ('{champions: ["55"], loyal: ["55"]}', '"55"', "given to both 'champions' and 'loyal'"),
    ('{Champions: ["55"]}', "Champions", "must match"),
    ('{champions: "55"}', '"55"', "must be a list"),
])
def test_rfm_grid_override_problems(grid: str, needle: str, fragment: str) -> None:
    text = rules_text(SEG, f"rfm: {{grid: {grid}}}\n")
    problem = one_problem(text)
    assert where(problem) == at(text, needle, text.count(needle) - 1)
    assert fragment in problem.message


def test_rfm_segment_cells_follow_the_grid() -> None:
    segments = '- id: a\n  when: rfm_segment() in ["stars", "lost"]\n'
    load_rules_text(rules_text(segments, 'rfm: {grid: {stars: ["55"]}}\n'))
    text = rules_text(segments)
    problem = one_problem(text)
    assert where(problem) == at(text, '"stars"')
    assert "rfm_segment() is never 'stars'" in problem.message


def test_rfm_segment_typo() -> None:
    text = rules_text('- id: a\n  when: rfm_segment() == "champion"\n')
    problem = one_problem(text)
    assert where(problem) == at(text, '"champion"')
    assert problem.suggestion == "champions"


# --- segment fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(("seg_id", "suggestion"), [
    ("VIP", "vip"), ("new-customer", "new_customer"), ("1st_order", "st_order"), ("_x", "x"),
])
def test_segment_id_format(seg_id: str, suggestion: str) -> None:
    text = rules_text(f"- id: {seg_id}\n  when: true\n")
    problem = one_problem(text)
    assert where(problem) == at(text, seg_id)
    assert problem.suggestion == suggestion


def test_duplicate_segment_ids() -> None:
    text = rules_text("- id: a\n  when: true\n- id: b\n  when: true\n- id: a\n  when: false\n")
    problem = one_problem(text)
    line, column = at(text, "id: a", 1)
    assert where(problem) == (line, column + 4)
    first = at(text, "id: a")[0]
    assert problem.message == f"duplicate segment id 'a' (first defined at line {first})"


def test_unknown_segment_key() -> None:
    text = rules_text("- id: a\n  when: true\n  exit_whn: false\n")
    problem = one_problem(text)
    assert where(problem) == at(text, "exit_whn")
    assert problem.suggestion == "exit_when"


def test_when_is_required() -> None:
    text = rules_text("- id: a\n  label: A\n")
    problem = one_problem(text)
    assert where(problem) == at(text, "id: a")
    assert "missing the required key 'when'" in problem.message


@pytest.mark.parametrize("value", ["", " ~", " ''"])
def test_when_is_not_empty(value: str) -> None:
    text = rules_text(f"- id: a\n  when:{value}\n")
    assert "when is empty" in one_problem(text).message


def test_when_must_be_text() -> None:
    text = rules_text("- id: a\n  when: [a, b]\n")
    assert "written as text" in one_problem(text).message


@pytest.mark.parametrize(("color", "suggestion"), [
    ('"#GGG"', None), ('"C9A227"', "#C9A227"), ('"#12345"', None), ("red", None),
])
def test_bad_colour(color: str, suggestion: str | None) -> None:
    text = rules_text(f"- id: a\n  color: {color}\n  when: true\n")
    problem = one_problem(text)
    assert where(problem) == at(text, color)
    assert "#RGB or #RRGGBB" in problem.message
    assert problem.suggestion == suggestion


def test_unquoted_colour_is_a_yaml_comment() -> None:
    text = rules_text("- id: a\n  color: #C9A227\n  when: true\n")
    problem = one_problem(text)
    assert "quote" in problem.message
    assert problem.suggestion == '"#C9A227"'


def test_valid_colours() -> None:
    text = rules_text("- id: a\n  color: '#fff'\n  when: true\n- id: b\n  color: '#C9a227'\n"
                      "  when: true\n")
    assert [s.color for s in load_rules_text(text).segments] == ["#fff", "#C9a227"]


def test_group_name_format() -> None:
    text = rules_text("- id: a\n  group: Value Tier\n  when: true\n")
    problem = one_problem(text)
    assert where(problem) == at(text, "Value Tier")
    assert problem.suggestion == "value_tier"


def test_label_and_icon_must_be_text() -> None:
    text = rules_text("- id: a\n  label: [x]\n  icon: {a: 1}\n  when: true\n")
    found = problems(text)
    assert [where(p) for p in found] == [at(text, "[x]"), at(text, "{a: 1}")]


def test_min_dwell_and_actions() -> None:
    text = rules_text("- id: a\n  min_dwell: 7 days\n  actions: [call]\n  when: true\n")
    found = problems(text)
    assert [(where(p), p.suggestion) for p in found] == [
        (at(text, "7 days"), "7d"), (at(text, "[call]"), None)]
    assert "actions must be a mapping" in found[1].message


# --- expressions --------------------------------------------------------------------------------


def expr_problem(when: str, settings: str = "", extra: str = "") -> tuple[RuleProblem, str]:
    text = rules_text(f"- id: a\n  when: {when}\n{extra}", settings)
    return one_problem(text), text


def test_unknown_function() -> None:
    problem, text = expr_problem("purchase_amout(30d) > 1")
    assert where(problem) == at(text, "purchase_amout")
    assert problem.message == "unknown function 'purchase_amout'"
    assert problem.suggestion == "purchase_amount"


@pytest.mark.parametrize(("when", "fragment", "suggestion"), [
    ("purchase_amount() > 1", "takes 1 argument (window), got 0", "purchase_amount(30d)"),
    ("purchase_amount(30d, 60d) > 1", "takes 1 argument (window), got 2", "purchase_amount(30d)"),
    ('count("page_view") > 1', "takes 2 arguments (event_type, window), got 1",
     'count("page_view", 30d)'),
    ("unsubscribed(1d)", "takes 0 arguments (none), got 1", "unsubscribed()"),
])
def test_wrong_argument_count(when: str, fragment: str, suggestion: str) -> None:
    problem, text = expr_problem(when)
    assert where(problem) == at(text, when.split("(")[0])
    assert fragment in problem.message
    assert problem.suggestion == suggestion


@pytest.mark.parametrize(("when", "needle", "fragment", "suggestion"), [
    ("purchase_amount(30) > 1", "30)", "must be a duration", "purchase_amount(30d)"),
    ('purchase_amount("30d") > 1', '"30d"', "must be a duration", "purchase_amount(30d)"),
    ("purchase_amount(true) > 1", "true", "must be a duration", None),
    ("count(30d, 30d) > 1", "30d", "an event type in quotes", None),
    ('count("email_clik", 30d) > 1', '"email_clik"', "unknown event type", "email_click"),
    ('days_since_last(page_view()) > 1', "page_view()", "an event type in quotes", None),
    ('in_segment("vpi")', '"vpi"', "unknown segment 'vpi'", "vip"),
    ("in_segment(1)", "1)", "a segment id in quotes", None),
    ('attribute(1) == "x"', "1)", "a text in quotes", None),
])
def test_argument_kinds(when: str, needle: str, fragment: str, suggestion: str | None) -> None:
    problem, text = expr_problem(when, extra="- id: vip\n  when: true\n")
    assert where(problem) == at(text, needle)
    assert fragment in problem.message
    assert problem.suggestion == suggestion


@pytest.mark.parametrize(("when", "settings", "fragment", "suggestion"), [
    ("purchase_amount(90m) > 1", "", "not a multiple of the resolution (1h)",
     "purchase_amount(2h)"),
    ("purchase_amount(36h) > 1", "resolution: 1d\n", "not a multiple of the resolution (1d)",
     "purchase_amount(2d)"),
    ("purchase_amount(10m) > 1", "", "not a multiple", "purchase_amount(1h)"),
    ('count("page_view", 401d) > 1', "", "longer than the retention (400d)", None),
    ("purchase_amount(8w) > 1", "retention: 50d\n", "longer than the retention (50d)", None),
    ("growth_ratio(201d) > 1", "", "400d", "growth_ratio(200d)"),
    ("purchase_amount(0h) > 1", "", "longer than 0", "purchase_amount(1h)"),
])
def test_windows(when: str, settings: str, fragment: str, suggestion: str | None) -> None:
    problem, text = expr_problem(when, settings)
    arg = when[when.index("(") + 1:when.index(")")].split(", ")[-1]
    assert where(problem) == at(text, arg, text.count(arg) - 1)
    assert fragment in problem.message
    assert problem.suggestion == suggestion


def test_windows_that_fit() -> None:
    text = rules_text("- id: a\n  when: growth_ratio(200d) > 1 and purchase_amount(400d) > 0"
                      " and count(\"page_view\", 57w) > 1\n")
    assert load_rules_text(text).segments[0].id == "a"


def test_windows_are_not_checked_against_invalid_settings() -> None:
    # one problem (the resolution), not one more for each window
    text = rules_text("- id: a\n  when: purchase_amount(90m) > 1\n", "resolution: 90s\n")
    assert "seconds" in one_problem(text).message


def test_engagement_score_needs_points() -> None:
    problem, text = expr_problem("engagement_score() > 1")
    assert where(problem) == at(text, "engagement_score")
    assert "always 0" in problem.message
    load_rules_text(rules_text("- id: a\n  when: engagement_score() > 1\n",
                               "engagement: {points: {purchase: 1}}\n"))


@pytest.mark.parametrize(("when", "needle", "fragment", "suggestion"), [
    ("purchase_amount(30d)", "purchase_amount", "when must be a condition",
     "purchase_amount(30d) > 0"),
    ("'\"yes\"'", '"yes"', "when must be a condition", None),
    ("purchase_count(30d) and true", "purchase_count", "the operands of 'and'",
     "purchase_count(30d) > 0"),
    ("true or 1", "1", "the operands of 'or'", "1 > 0"),
    ("not lifetime_orders()", "lifetime_orders", "the operand of 'not'",
     "lifetime_orders() > 0"),
    ('purchase_count(30d) + "1" > 1', '"1"', "the operands of '+'", None),
    ("-unsubscribed() < 1", "unsubscribed", "the operand of unary '-'", None),
    ("purchase_amount(30d) * null > 1", "null", "the operands of '*'", None),
    ('purchase_amount(30d) > "100"', ">", "cannot compare a number with a text", None),
    ("unsubscribed() == 1", "==", "cannot compare a condition (true/false) with a number", None),
    ("unsubscribed() < true", "<", "cannot be ordered", None),
    ("days_since_last_purchase() > null", ">", "comparison with null is always false", None),
    ('purchase_count(30d) in [1, "2"]', '"2"', "the list of 'in' holds a text", None),
    ('attribute("x") not in ["a", null]', "null", "never matches", None),
    ("null", "null", "when must be a condition", None),
])
def test_static_types(when: str, needle: str, fragment: str, suggestion: str | None) -> None:
    problem, text = expr_problem(when)
    assert where(problem) == at(text, needle, after="when:")
    assert fragment in problem.message
    assert problem.suggestion == suggestion


@pytest.mark.parametrize("when", [
    'attribute("vip")',
    'attribute("x") and attribute("y") > 3',
    'attribute("tier") in ["gold", 1]',
    "days_since_last_purchase() == null or days_since_last_purchase() != null",
    'attribute("name") >= "M"',
    "unsubscribed() == false",
    "-purchase_count(7d) < -1 * 2",
    'rfm_segment() != null and rfm_segment() not in ["lost"]',
    "true",
])
def test_well_typed(when: str) -> None:
    load_rules_text(rules_text(f"- id: a\n  when: {when}\n"))


def test_syntax_error_inside_a_rule_file() -> None:
    text = rules_text("- id: a\n  when: purchase_count(30d) >= \n")
    problem = one_problem(text)
    assert problem.message.startswith("syntax error")
    line, _ = at(text, "purchase_count")
    assert problem.line == line


def test_positions_in_quoted_scalars() -> None:
    text = rules_text("""\
        - id: a
          when: "count(\\"email_clik\\", 30d) > 1"
        - id: b
          when: 'attribute(''region'') == 1 and purchase_amout(1d) > 0'
    """)
    found = problems(text)
    assert [(where(p), p.suggestion) for p in found] == [
        ((at(text, "email_clik")[0], at(text, "email_clik")[1] - 1), "email_click"),
        (at(text, "purchase_amout"), "purchase_amount"),
    ]


def test_positions_in_folded_and_plain_multi_line_scalars() -> None:
    text = rules_text("""\
        - id: a
          when: >-
            purchase_count(30d) >= 1
            and purchase_amout(30d) > 0
        - id: b
          when: purchase_count(30d) >= 1
            and days_since_lst() > 0
    """)
    found = problems(text)
    assert [where(p) for p in found] == [at(text, "purchase_amout"), at(text, "days_since_lst")]


# --- segment dependencies -----------------------------------------------------------------------


def test_self_reference() -> None:
    problem, text = expr_problem('in_segment("a")')
    assert where(problem) == at(text, '"a"')
    assert problem.message == "segment 'a' cannot depend on itself"


def test_in_segment_cycle() -> None:
    text = rules_text("""\
        - id: a
          when: in_segment("b")
        - id: b
          when: in_segment("c") or true
        - id: c
          when: not in_segment("a")
    """)
    problem = one_problem(text)
    assert where(problem) == at(text, '"b"')
    assert problem.message == ('in_segment cycle a -> b -> c -> a: a uses in_segment("b"); '
                               'b uses in_segment("c"); c uses in_segment("a")')


def test_cycle_through_a_group() -> None:
    # b's membership needs a's candidate (a comes first in the group), so a cannot read b
    text = rules_text("""\
        - id: a
          group: g
          when: in_segment("b")
        - id: b
          group: g
          when: true
    """)
    problem = one_problem(text)
    assert where(problem) == at(text, '"b"')
    assert "in_segment cycle a -> b -> a" in problem.message
    assert "b comes after a in group 'g'" in problem.message


def test_cycle_through_a_group_and_another_segment() -> None:
    text = rules_text("""\
        - id: a
          group: g
          when: in_segment("x")
        - id: b
          group: g
          when: true
        - id: x
          when: in_segment("b")
    """)
    problem = one_problem(text)
    assert "in_segment cycle a -> x -> b -> a" in problem.message


def test_reading_an_earlier_group_member_is_fine() -> None:
    text = rules_text("""\
        - id: a
          group: g
          when: purchase_count(30d) >= 1
        - id: b
          group: g
          when: in_segment("x")
        - id: x
          when: in_segment("a")
    """)
    rule_file = load_rules_text(text)
    assert dependency_order(rule_file) == [0, 2, 1]


def test_cycles_are_found_next_to_other_problems() -> None:
    text = rules_text("""\
        - id: a
          color: nope
          when: in_segment("b")
        - id: b
          when: in_segment("a") and purchase_amout(1d) > 1
    """)
    messages = [p.message for p in problems(text)]
    assert len(messages) == 3
    assert any(m.startswith("in_segment cycle a -> b -> a") for m in messages)


def test_dependency_order_is_stable() -> None:
    text = rules_text("""\
        - id: r
          when: in_segment("q")
        - id: p
          group: g
          when: true
        - id: q
          group: g
          when: true
        - id: s
          when: true
    """)
    assert dependency_order(load_rules_text(text)) == [1, 2, 0, 3]
    free = load_rules_text(rules_text("- id: a\n  when: true\n- id: b\n  when: true\n"))
    assert dependency_order(free) == [0, 1]


def test_dependency_order_respects_exit_when() -> None:
    text = rules_text("""\
        - id: a
          when: true
          exit_when: in_segment("b")
        - id: b
          when: true
    """)
    assert dependency_order(load_rules_text(text)) == [1, 0]


def test_dependency_order_rejects_a_cyclic_file() -> None:
    rule_file = load_rules_text(rules_text("- id: a\n  when: true\n- id: b\n  when: true\n"))
    a, b = rule_file.segments
    loop = Call("in_segment", (Literal("b", Pos(9, 9)),), 'in_segment("b")', Pos(9, 1))
    back = Call("in_segment", (Literal("a", Pos(10, 9)),), 'in_segment("a")', Pos(10, 1))
    cyclic: RuleFile = dataclasses.replace(
        rule_file, segments=(dataclasses.replace(a, when=loop), dataclasses.replace(b, when=back)))
    with pytest.raises(RuleFileError) as info:
        dependency_order(cyclic)
    (problem,) = info.value.problems
    assert where(problem) == (9, 9)
    selfish = dataclasses.replace(rule_file, segments=(a, dataclasses.replace(b, when=loop)))
    with pytest.raises(RuleFileError):
        dependency_order(selfish)


# --- several problems at once -------------------------------------------------------------------


def test_every_problem_is_reported_in_file_order() -> None:
    text = """\
version: 1
name: many
settings:
  currency: pln
  resolution: 1h
segments:
  - id: vip
    color: "#C9A22"
    when: purchase_amout(180d) >= 5000
  - id: vip
    when: count("email_clik", 30d) > 1
  - id: churn
    when: in_segment("vpi") and days_since_last_purchase() > "60"
    min_dwel: 7d
"""
    found = problems(text)
    assert [(where(p), p.suggestion) for p in found] == [
        (at(text, "pln"), "PLN"),
        (at(text, '"#C9A22"'), None),
        (at(text, "purchase_amout"), "purchase_amount"),
        (at(text, "vip", 1), None),
        (at(text, '"email_clik"'), "email_click"),
        (at(text, '"vpi"'), "vip"),
        (at(text, '> "60"'), None),
        (at(text, "min_dwel"), "min_dwell"),
    ]
    assert all(p.file == "t.yaml" for p in found)


def test_format_duration() -> None:
    assert format_duration(7 * DAY_MS) == "1w"
    assert format_duration(90 * MINUTE_MS) == "90m"
    assert format_duration(36 * HOUR_MS) == "36h"
    assert format_duration(400 * DAY_MS) == "400d"
