"""bench/peers without a broker: the equivalent work, its rule file and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.peers.__main__ import engine_of
from bench.peers.report import markdown, summarize
from bench.peers.work import DAY_MS, SEGMENTS, apply, rule_file_text
from rules.loader import load_rules_text

T0 = 1_735_689_600_000


def event(kind: str, amount: float, day: float, customer: str = "c1") -> dict[str, Any]:
    return {"customer_id": customer, "type": kind, "amount": amount, "ts": T0 + int(day * DAY_MS)}


def test_rule_file_is_valid_and_says_the_same_segments() -> None:
    rules = load_rules_text(rule_file_text(), source="peers.yaml")
    assert [s.id for s in rules.segments] == [sid for sid, _m, _t in SEGMENTS]
    assert rules.settings.resolution_ms == DAY_MS
    assert rules.settings.dedup_horizon_ms == 0
    assert [s.when_text for s in rules.segments] == [
        "purchase_amount(30d) >= 500", "purchase_amount(30d) >= 2000", "lifetime_orders() >= 5"]


def test_spend_is_net_over_30_day_buckets_and_orders_count_for_ever() -> None:
    state, change = apply(None, event("purchase", 300.0, 0.5))
    assert change is None and state["n"] == 1
    state, change = apply(state, event("purchase", 250.0, 10.2))
    assert change is not None
    assert change["entered"] == ["spender"] and change["segments"] == ["spender"]
    state, change = apply(state, event("refund", 100.0, 11))
    assert change == {"customer_id": "c1", "ts": T0 + 11 * DAY_MS, "segments": [],
                      "entered": [], "left": ["spender"]}
    assert state["n"] == 2  # a refund is not an order
    # day 30: the day-0 bucket (300) has left the window, 250 - 100 + 400 = 550
    state, change = apply(state, event("purchase", 400.0, 30))
    assert set(state["d"]) == {str(T0 // DAY_MS + d) for d in (10, 11, 30)}
    assert change is not None and change["segments"] == ["spender"]
    for day in (31, 32):
        state, change = apply(state, event("purchase", 10.0, day))
    assert change is not None and change["entered"] == ["frequent"]
    assert change["segments"] == ["spender", "frequent"]
    state, change = apply(state, event("purchase", 2000.0, 33))
    assert change is not None and change["segments"] == ["spender", "big_spender", "frequent"]


def test_table_ranges_errors_and_unavailable() -> None:
    contenders = [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")]
    runs: list[dict[str, Any]] = [
        {"contender": "a", "events_per_s": 30_000.0, "cpu_ms_per_1k": 25.04, "changes": 10,
         "version": "a 1.0"},
        {"contender": "a", "events_per_s": 36_540.0, "cpu_ms_per_1k": 21.96, "changes": 10,
         "version": "a 1.0"},
        {"contender": "b", "error": "unavailable: no wheel | here"},
        {"contender": "c", "events_per_s": 2_400.0, "cpu_ms_per_1k": 400.0, "changes": 7},
        {"contender": "c", "error": "failed: exit 1"},
    ]
    rows = summarize(contenders, runs)
    assert [r["contender"] for r in rows] == ["A", "B", "C"]
    assert rows[0] == {"contender": "A", "events_per_s": "30.0–36.5k",
                       "cpu_ms_per_1k": "22.0–25.0", "changes": "10", "notes": "a 1.0"}
    assert rows[1]["events_per_s"] == "unavailable: no wheel | here"
    assert rows[2]["notes"] == "1 of 2 rounds failed: failed: exit 1"
    text = markdown(rows, command="python -m bench.peers", date="2026-12-01", facts=["x"])
    assert "`python -m bench.peers` — 2026-12-01" in text and "- x" in text
    assert "| A | 30.0–36.5k | 22.0–25.0 | 10 | a 1.0 |" in text
    assert "| B | unavailable: no wheel \\| here |  |  |  |" in text


def test_the_report_says_which_engine_the_worker_ran(tmp_path: Path) -> None:
    from model.native import native_status

    log = tmp_path / "worker.log"
    # the worker's start-up line (streams/runtime/worker.py), with this process's engine
    log.write_text("2026-12-03 08:00:00 INFO streams.runtime.worker: worker w1 joined group "
                   f"g (exactly_once, event clock, memory:// store; engine {native_status()})\n")
    assert engine_of(log) == "engine " + native_status().split(" (")[0]
    log.write_text("nothing about it\n")
    assert engine_of(log) == "engine not logged"
