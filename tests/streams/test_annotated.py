"""streams/annotated.py (issue 14): pipelines and control groups on the engine's changes, checked
against `segmenter simulate` (exactly one pipeline per customer at every instant, moves at the
instants memberships change, time-driven exits included) and rule roll-outs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from model.events import encode_event
from rules.loader import load_rules_text
from rules.ruleset import RuleSet
from segmenter.cli import main
from streams.annotated import AnnotatedEngine, engine_for
from streams.engine import Engine
from streams.generator import generate
from tests.factories import DAY, HOUR, T0, purchase

RULES = """\
version: 1
settings: {currency: PLN}
segments:
  - {id: vip, group: tier, when: purchase_amount(30d) >= 1000, control: 20%}
  - {id: buyer, group: tier, when: purchase_count(30d) >= 1}
  - {id: churn_risk, when: days_since_last_purchase() > 20 and lifetime_orders() >= 1}
pipelines:
  - {id: premium, when: [vip], follow_ups: {enter: [call]}}
  - {id: retention, when: [churn_risk]}
  - {id: occasional, when: [tier]}
  - {id: prospect}
"""


def reference_pipeline(segments: set[str]) -> str:
    """The spec, written independently: first listed pipeline with a member segment."""
    for pid, listed in (("premium", {"vip"}), ("retention", {"churn_risk"}),
                        ("occasional", {"vip", "buyer"})):
        if segments & listed:
            return pid
    return "prospect"


def test_engine_for_keeps_the_plain_engine_without_pipelines() -> None:
    plain = RuleSet(load_rules_text("version: 1\nsettings: {currency: PLN}\nsegments:\n"
                                    "  - {id: a, when: purchase_count(30d) >= 1}\n"))
    assert type(engine_for(plain)) is Engine
    assert isinstance(engine_for(RuleSet(load_rules_text(RULES))), AnnotatedEngine)
    # a roll-out away from pipelines still annotates (customers leave their pipeline)
    assert isinstance(engine_for(plain, previous=RuleSet(load_rules_text(RULES))),
                      AnnotatedEngine)


def _simulate(tmp_path: Path, rules: str, events: list[bytes]) -> tuple[list[dict[str, Any]],
                                                                         list[dict[str, Any]]]:
    (tmp_path / "r.yaml").write_text(rules)
    (tmp_path / "ev.jsonl").write_bytes(b"".join(e + b"\n" for e in events))
    result = CliRunner().invoke(main, [
        "simulate", "--rules", str(tmp_path / "r.yaml"), "--events", str(tmp_path / "ev.jsonl"),
        "--wall-now", "2030-01-01T00:00:00Z", "--out-changes", str(tmp_path / "ch.jsonl"),
        "--out-state", str(tmp_path / "st.jsonl"), "--quiet"])
    assert result.exit_code == 0, result.output
    def read(name: str) -> list[dict[str, Any]]:
        return [orjson.loads(x) for x in (tmp_path / name).read_bytes().splitlines()]

    return read("ch.jsonl"), read("st.jsonl")


def test_pipelines_follow_memberships_at_every_change(tmp_path: Path) -> None:
    events = [encode_event(e) for e in generate(
        customers=150, events=5000, seed=11, start_ms=T0, days=120, profile_fraction=0.02)]
    changes, states = _simulate(tmp_path, RULES, events)
    current: dict[str, str] = {}
    segs: dict[str, set[str]] = {}
    moves = time_moves = 0
    for ch in changes:
        cid = ch["customer_id"]
        before = segs.get(cid, set())
        after = set(ch["segments"])
        assert after == (before - set(ch["exited"])) | set(ch["entered"])
        was, now = reference_pipeline(before), reference_pipeline(after)
        assert current.get(cid, "prospect") == was  # exactly one pipeline, continuous
        if was != now:
            moves += 1
            time_moves += ch["cause"]["kind"] == "time"
            assert ch["pipeline"]["from"] == was and ch["pipeline"]["to"] == now
            assert ("follow_ups" in ch["pipeline"]) == (now == "premium")
        else:
            assert "pipeline" not in ch  # only when it moves
        current[cid], segs[cid] = now, after
        assert ch.get("control", []) == sorted(
            s for s in ch.get("control", []) if s in (*ch["entered"], *ch["exited"]))
    assert moves > 100 and time_moves > 20
    for line in states:
        assert line["pipeline"] == reference_pipeline(set(line["segments"]))
        assert line["pipeline"] == current.get(line["customer_id"], "prospect")
    held = [ch for ch in changes if "vip" in ch["entered"]]
    share = sum("vip" in ch.get("control", []) for ch in held) / len(held)
    assert 0.05 < share < 0.45  # ~20% of a few dozen entries


def test_time_driven_exit_moves_the_pipeline_at_the_exact_instant(tmp_path: Path) -> None:
    ts = T0 + HOUR
    changes, states = _simulate(tmp_path, RULES, [
        encode_event(purchase(ts, 1500, event_id="p1")),
        encode_event(purchase(ts + 40 * DAY, 10, customer_id="c-2", event_id="p2"))])
    mine = [(c["at"], c["cause"]["kind"], c.get("pipeline")) for c in changes
            if c["customer_id"] == "c-1"]
    assert mine == [
        ("2026-01-01T01:00:00.000Z", "event",
         {"from": "prospect", "to": "premium", "follow_ups": ["call"]}),
        ("2026-01-21T01:00:00.001Z", "time", None),  # churn_risk enters: still premium
        ("2026-01-31T01:00:00.000Z", "time", {"from": "premium", "to": "retention"}),
    ]
    assert states[0]["pipeline"] == "retention"


def test_rollout_that_only_changes_pipelines_emits_a_pipeline_move() -> None:
    old = RuleSet(load_rules_text(RULES))
    new = RuleSet(load_rules_text(RULES.replace("- {id: occasional, when: [tier]}",
                                                "- {id: occasional, when: [buyer]}")
                                  .replace("{id: premium, when: [vip]", "{id: premium, when: "
                                           "[churn_risk]")))
    engine = engine_for(old)
    out = engine.apply(None, purchase(T0, 1500), T0)
    st = out.state
    assert st is not None and out.changes[0].pipeline is not None
    assert out.changes[0].pipeline["to"] == "premium"
    roll = engine_for(new, previous=old).reevaluate(st, T0 + HOUR, quiet=True, previous=old)
    [change] = roll.changes
    assert (change.entered, change.exited, change.quiet) == ((), (), True)
    assert change.pipeline == {"from": "premium", "to": "prospect"}  # vip is in no pipeline now
    assert change.seq == 2
