"""rules/pipelines.py (issue 14): loading `pipelines:` and `control:`, the pipeline function, the
control-group hash (stable, close to the declared share) and the annotation of change records."""

from __future__ import annotations

import pytest

from model.changes import CAUSE_ERASURE, CAUSE_EVENT, Cause, SegmentChange
from model.errors import RuleFileError
from rules.loader import load_rules_text
from rules.pipelines import DEFAULT_SALT, Annotator, held_out

BASE = """\
version: 1
settings:
  currency: PLN
  control_salt: spring
segments:
  - {id: vip, group: tier, when: purchase_amount(30d) >= 1000, control: 10%}
  - {id: buyer, group: tier, when: purchase_count(30d) >= 1}
  - {id: churn_risk, when: days_since_last_purchase() > 20 and lifetime_orders() >= 1,
     control: 25%, control_salt: own}
"""
PIPELINES = BASE + """\
pipelines:
  - {id: premium, label: Premium, when: [vip], follow_ups: {enter: [call], exit: [thanks]}}
  - {id: retention, when: [churn_risk]}
  - {id: occasional, when: [tier], follow_ups: {enter: welcome}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        load_rules_text(text, source="r.yaml")
    return [str(p) for p in info.value.problems]


def test_pipelines_load_in_order_with_an_implicit_default() -> None:
    rf = load_rules_text(PIPELINES)
    assert [p.id for p in rf.pipelines] == ["premium", "retention", "occasional", "default"]
    assert rf.pipelines[0].segments == {"vip"} and rf.pipelines[0].label == "Premium"
    assert rf.pipelines[2].segments == {"vip", "buyer"}  # the group stands for its segments
    assert rf.pipelines[2].follow_ups == {"enter": ("welcome",)}
    assert rf.pipelines[-1].default and rf.pipelines[-1].when == ()
    assert rf.settings.control_salt == "spring"
    shares = {s.id: (s.control_share, s.control_salt) for s in rf.segments}
    assert shares == {"vip": (0.1, None), "buyer": (None, None), "churn_risk": (0.25, "own")}


def test_an_entry_without_when_is_the_default_wherever_it_is_written() -> None:
    rf = load_rules_text(BASE + "pipelines:\n  - {id: nurture}\n  - {id: premium, when: vip}\n")
    assert [(p.id, p.default) for p in rf.pipelines] == [("premium", False), ("nurture", True)]
    ann = Annotator(rf)
    assert ann.pipeline_of(set()) == "nurture" and ann.pipeline_of({"vip"}) == "premium"


def test_no_pipelines_no_control_nothing_to_annotate() -> None:
    rf = load_rules_text(BASE.replace(", control: 10%", "").replace(
        "\n     control: 25%, control_salt: own", ""))
    assert rf.pipelines == ()
    assert not Annotator(rf).active


def test_pipeline_and_control_problems_point_at_line_and_column() -> None:
    text = BASE.replace("control: 10%", "control: 0.1") + """\
pipelines:
  - {id: premium, when: [vipp, tier]}
  - {id: premium, when: []}
  - {id: Bad, when: [vip]}
  - {id: a}
  - {id: b}
  - {id: c, when: [vip], follow_ups: {enters: [x]}}
"""
    got = problems(text)
    assert "r.yaml:6:73: control must be a share written as a percentage between 0% and 100% " \
           "(exclusive), e.g. 10% (did you mean '10%'?)" in got
    assert "r.yaml:11:26: unknown segment or group 'vipp' in the when of pipeline 'premium' " \
           "(did you mean 'vip'?)" in got
    assert any(p.startswith("r.yaml:12:10: duplicate pipeline id 'premium'") for p in got)
    assert any(p.startswith("r.yaml:12:25: when of a pipeline must be a non-empty list")
               for p in got)
    assert any(p.startswith("r.yaml:13:10: pipeline id 'Bad' must start") for p in got)
    assert any(p.startswith("r.yaml:15:5: pipeline 'b' has no 'when', and neither has 'a'")
               for p in got)
    assert any(p.startswith("r.yaml:16:39: unknown key 'enters' in follow_ups")
               and p.endswith("(did you mean 'enter'?)") for p in got)


def test_a_pipeline_named_default_needs_no_when() -> None:
    got = problems(BASE + "pipelines:\n  - {id: default, when: [vip]}\n")
    assert any("the pipeline named 'default' needs no 'when'" in p for p in got)


def test_unknown_top_level_key_suggests_pipelines() -> None:
    got = problems(BASE + "pipeline:\n  - {id: x}\n")
    assert any("unknown key 'pipeline'" in p and "(did you mean 'pipelines'?)" in p for p in got)


def test_first_match_wins_and_default_otherwise() -> None:
    ann = Annotator(load_rules_text(PIPELINES))
    assert ann.pipeline_of({"vip", "churn_risk"}) == "premium"
    assert ann.pipeline_of({"buyer", "churn_risk"}) == "retention"
    assert ann.pipeline_of({"buyer"}) == "occasional"
    assert ann.pipeline_of(()) == "default"


def _change(entered: tuple[str, ...], exited: tuple[str, ...], segments: tuple[str, ...],
            cid: str = "c-1", kind: str = CAUSE_EVENT) -> SegmentChange:
    return SegmentChange(cid, 1, 0, Cause(kind), "v", entered, exited, segments)


def test_annotate_adds_the_pipeline_only_when_it_moves() -> None:
    ann = Annotator(load_rules_text(PIPELINES.replace("control: 10%", "control: 1%")
                                    .replace("control: 25%", "control: 1%")))
    cid = next(f"c-{i}" for i in range(1000)
               if not ann.held_out(f"c-{i}", "vip") and not ann.held_out(f"c-{i}", "churn_risk"))
    moved = ann.annotate(_change(("vip",), ("buyer",), ("vip",), cid))
    assert moved.pipeline == {"from": "occasional", "to": "premium", "follow_ups": ["call"]}
    assert moved.to_wire()["pipeline"] == moved.pipeline and "control" not in moved.to_wire()
    same = _change(("churn_risk",), (), ("churn_risk", "vip"), cid)
    assert ann.annotate(same) is same  # premium before and after: nothing added
    left = ann.annotate(_change((), ("vip",), ("churn_risk",), cid))
    assert left.pipeline == {"from": "premium", "to": "retention", "follow_ups": ["thanks"]}
    gone = ann.annotate(_change((), ("buyer",), (), cid, CAUSE_ERASURE))
    assert gone.pipeline == {"from": "occasional", "to": None}


def test_control_lists_the_held_out_segments_of_the_change() -> None:
    ann = Annotator(load_rules_text(PIPELINES))
    cid = next(f"c-{i}" for i in range(1000) if ann.held_out(f"c-{i}", "vip"))
    ch = ann.annotate(_change(("vip",), (), ("vip",), cid))
    assert ch.control == ("vip",) and ch.to_wire()["control"] == ["vip"]
    assert "vip" in ch.segments  # held out, still a member


def test_control_split_is_stable_and_close_to_the_declared_share() -> None:
    ids = [f"cust-{i:06d}" for i in range(10_000)]
    for share in (0.1, 0.25, 0.5):
        out = [c for c in ids if held_out(c, "vip", share)]
        assert abs(len(out) / len(ids) - share) < 0.02, (share, len(out))
    # stable: the same ids every time, and a known value pins the hash across versions
    first = [c for c in ids if held_out(c, "vip", 0.1)]
    assert first == [c for c in ids if held_out(c, "vip", 0.1, DEFAULT_SALT)]
    assert first[:3] == EXPECTED_FIRST_HELD_OUT
    # other salts, other segments: independent draws
    other = {c for c in ids if held_out(c, "vip", 0.1, "autumn")}
    assert 0.05 < len(other & set(first)) / len(first) < 0.2
    # a larger share keeps everyone a smaller one held out
    assert set(first) <= {c for c in ids if held_out(c, "vip", 0.2)}


def test_control_split_does_not_depend_on_the_rule_version() -> None:
    a = Annotator(load_rules_text(PIPELINES))
    b = Annotator(load_rules_text(PIPELINES + "# a comment: another rules_version\n"))
    ids = [f"c{i}" for i in range(2000)]
    assert [a.held_out(c, "vip") for c in ids] == [b.held_out(c, "vip") for c in ids]
    assert [a.held_out(c, "churn_risk") for c in ids] == [
        held_out(c, "churn_risk", 0.25, "own") for c in ids]


# pinned when the hash was introduced: a change of the hash would move every control group
EXPECTED_FIRST_HELD_OUT = ["cust-000003", "cust-000004", "cust-000030"]
