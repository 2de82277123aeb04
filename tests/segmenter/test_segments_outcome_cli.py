"""`segmenter segments outcome` (issue 14): the outcome report on a stream of
streams.generator with a known effect added (found, the interval covers it) and without it (the
interval covers 0); --json / --out / --until; exit codes and messages; one run of the real
console entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from model.changes import SegmentChange
from model.events import encode_event
from rules.loader import load_rules_text
from rules.ruleset import RuleSet
from segmenter.cli import main
from streams.generator import generate
from streams.simulate import Simulator
from tests.factories import DAY, HOUR, T0, event

ROOT = Path(__file__).resolve().parents[2]
EFFECT = 5  # extra add_to_cart events of every treated customer right after entering
RULES = """\
version: 1
settings: {currency: PLN, control_salt: cli-test}
segments:
  - id: engaged
    when: count("email_open", 14d) >= 1
    control: 30%
    outcome:
      metric: count("add_to_cart", 30d)
      after: 30d
  - id: engaged_buyers
    when: count("email_open", 14d) >= 1
    control: 30%
    outcome: {conversion: purchase, within: 14d}
  - {id: plain, when: purchase_count(30d) >= 1}
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["segments", "outcome", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A generated shop (1,000 customers, 90 days) as is, and with EFFECT add_to_cart events
    one day after the first entry into `engaged` of every treated customer (add_to_cart does
    not move `engaged`, so the entries stay the same and the true effect on
    count("add_to_cart", 30d) 30 days after entering is exactly EFFECT)."""
    d = tmp_path_factory.mktemp("outcome")
    events = list(generate(customers=1000, events=40000, seed=5, start_ms=T0, days=90))
    rules = RuleSet(load_rules_text(RULES))
    first: dict[str, SegmentChange] = {}

    def on_change(change: SegmentChange) -> None:
        if "engaged" in change.entered:
            first.setdefault(change.customer_id, change)

    sim = Simulator(rules, on_change=on_change)
    for ev in events:
        sim.feed(ev)
    end = events[-1].ts
    extra = [event("add_to_cart", ch.at + DAY + k * HOUR, cid, event_id=f"extra-{k}-{cid}")
             for cid, ch in first.items() if "engaged" not in ch.control
             and ch.at + DAY + EFFECT * HOUR < end for k in range(EFFECT)]
    assert len(extra) > 1000
    (d / "rules.yaml").write_text(RULES)
    (d / "plain.jsonl").write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    treated = sorted(events + extra, key=lambda e: e.ts)
    (d / "effect.jsonl").write_bytes(b"".join(encode_event(e) + b"\n" for e in treated))
    return {"rules": d / "rules.yaml", "plain": d / "plain.jsonl",
            "effect": d / "effect.jsonl", "dir": d}


def report(logs: dict[str, Path], log: str, *args: str) -> dict[str, Any]:
    code, out, err = run("engaged", "--rules", str(logs["rules"]), "--events", str(logs[log]),
                         "--json", *args)
    assert code == 0, err
    data: dict[str, Any] = orjson.loads(out)
    return data


def test_a_known_effect_is_found_and_its_interval_covers_it(logs: dict[str, Path]) -> None:
    data = report(logs, "effect")
    assert data["significant"] and data["p_value"] < 1e-6
    assert 0 < data["ci_low"] <= EFFECT <= data["ci_high"]
    assert data["treated"]["n"] > 300 and data["control"]["n"] > 100
    assert data["kind"] == "metric" and data["outcome"] == 'count("add_to_cart", 30d) after 30d'
    assert data["pending"] > 0  # entries of the last 30 days


def test_without_the_effect_the_interval_covers_zero(logs: dict[str, Path]) -> None:
    data = report(logs, "plain")
    assert data["ci_low"] <= 0 <= data["ci_high"] and not data["significant"]
    with_effect = report(logs, "effect")
    # the same customers, the treated ones each EFFECT higher
    assert data["treated"]["n"] == with_effect["treated"]["n"]
    assert with_effect["treated"]["mean"] - data["treated"]["mean"] == pytest.approx(EFFECT)
    assert with_effect["control"]["mean"] == data["control"]["mean"]


def test_text_report_out_file_and_until(logs: dict[str, Path]) -> None:
    out_file = logs["dir"] / "report.json"
    code, out, err = run("engaged", "--rules", str(logs["rules"]), "--events",
                         str(logs["effect"]), "--out", str(out_file))
    assert code == 0, err
    assert out.startswith("segment engaged: metric count(\"add_to_cart\", 30d) after 30d, "
                          "control 30%\n")
    assert "difference (treated - control): " in out and "95% CI [" in out
    assert "(significant; Welch t-test (scipy))" in out
    assert orjson.loads(out_file.read_bytes())["segment"] == "engaged"
    cut = report(logs, "effect", "--until", "2026-02-15T00:00:00Z", "--confidence", "0.99")
    full = orjson.loads(out_file.read_bytes())
    assert cut["end"] == "2026-02-15T00:00:00.000Z" and cut["confidence"] == 0.99
    assert cut["treated"]["n"] + cut["control"]["n"] < full["treated"]["n"] + \
        full["control"]["n"]


def test_a_conversion_outcome(logs: dict[str, Path]) -> None:
    code, out, err = run("engaged_buyers", "--rules", str(logs["rules"]), "--events",
                         str(logs["plain"]), "--json")
    assert code == 0, err
    data = orjson.loads(out)
    assert data["kind"] == "conversion" and data["outcome"] == "purchase within 2w"
    assert data["treated"]["conversions"] <= data["treated"]["n"]
    assert data["ci_low"] <= data["difference"] <= data["ci_high"]
    assert "statsmodels" in data["method"]


def test_errors_exit_2_with_a_message(logs: dict[str, Path], tmp_path: Path) -> None:
    args = ["--rules", str(logs["rules"]), "--events", str(logs["plain"])]
    code, _, err = run("plain", *args)
    assert code == 2 and "segment 'plain' has no control group" in err
    code, _, err = run("nope", *args)
    assert code == 2 and "unknown segment 'nope' (segments with an outcome: engaged, " \
                         "engaged_buyers)" in err
    code, _, err = run("engaged", *args, "--until", "yesterday")
    assert code == 2 and "--until 'yesterday' is not an RFC 3339 instant" in err
    code, _, err = run("engaged", "--rules", str(logs["rules"]), "--events",
                       str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES.replace("after: 30d", "after: 30"))
    code, _, err = run("engaged", "--rules", str(bad), "--events", str(logs["plain"]))
    assert code == 2 and f"{bad}:9:14: outcome after: 30 has no unit" in err


def test_the_console_entry_point_end_to_end(logs: dict[str, Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "segmenter.cli", "segments", "outcome", "engaged", "--rules",
         str(logs["rules"]), "--events", "-", "--json"],
        input=logs["effect"].read_bytes(), capture_output=True, cwd=ROOT, timeout=300,
        check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    data = orjson.loads(proc.stdout)
    assert data == report(logs, "effect")
