"""`segmenter rules diff` and issue 14: who moves (first N per segment, --out for all), and the
follow-ups and pipeline moves each version fires."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from model.events import encode_event
from segmenter.cli import main
from tests.factories import T0, purchase

OLD = """\
version: 1
settings: {currency: PLN}
segments:
  - {id: vip, group: tier, when: purchase_amount(30d) >= 1000, actions: {call: true}}
  - {id: buyer, group: tier, when: purchase_count(30d) >= 1}
pipelines:
  - {id: premium, when: [vip], follow_ups: {enter: [call, gift]}}
  - {id: occasional, when: [buyer]}
"""
NEW = OLD.replace(">= 1000", ">= 2000")


def test_diff_lists_movers_and_fired_counts(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text(OLD)
    (tmp_path / "new.yaml").write_text(NEW)
    amounts = {f"c-{i}": 1500.0 for i in range(5)} | {"c-big": 2500.0, "c-small": 50.0}
    log = b"".join(encode_event(purchase(T0 + n * 1000, a, customer_id=cid)) + b"\n"
                   for n, (cid, a) in enumerate(amounts.items()))
    (tmp_path / "ev.jsonl").write_bytes(log)
    result = CliRunner().invoke(main, [
        "rules", "diff", str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml"),
        "--events", str(tmp_path / "ev.jsonl"), "--show", "2",
        "--out", str(tmp_path / "movers.jsonl")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "customers who move: 5" in out
    assert "  enter buyer: c-0, c-1 (+3 more)" in out
    assert "  exit vip: c-0, c-1 (+3 more)" in out
    assert "  pipeline premium -> occasional: 5" in out
    # old: 6 vip entries with actions + 6 premium moves x 2 follow-ups; new: 1 + 1 x 2
    assert "old version fires: 7 changes, 18 follow-ups, 7 pipeline moves" in out
    assert "new version fires: 7 changes, 3 follow-ups, 7 pipeline moves" in out
    movers = [orjson.loads(x) for x in (tmp_path / "movers.jsonl").read_bytes().splitlines()]
    assert [m["customer_id"] for m in movers] == [f"c-{i}" for i in range(5)]
    assert movers[0] == {"customer_id": "c-0", "entered": ["buyer"], "exited": ["vip"],
                         "pipeline": {"from": "premium", "to": "occasional"}}
