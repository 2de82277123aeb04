"""The table of `bench.peers`: one row per contender, the range over its rounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _range(values: Sequence[float], fmt: str) -> str:
    low, high = min(values), max(values)
    a, b = format(low, fmt), format(high, fmt)
    return a if a == b else f"{a}–{b}"


def summarize(contenders: Sequence[tuple[str, str]], runs: Sequence[dict[str, Any]]
              ) -> list[dict[str, str]]:
    """Rows (contender label, events/s, CPU ms per 1k events, change records, notes) from the
    runs: the min–max over the rounds that finished; a contender with no finished run shows
    its first error ("unavailable: ..." or "failed: ...")."""
    rows = []
    for name, label in contenders:
        mine = [r for r in runs if r["contender"] == name]
        if not mine:
            continue
        done = [r for r in mine if not r.get("error")]
        errors = [r["error"] for r in mine if r.get("error")]
        if not done:
            rows.append({"contender": label, "events_per_s": errors[0], "cpu_ms_per_1k": "",
                         "changes": "", "notes": ""})
            continue
        rate = _range([r["events_per_s"] / 1000 for r in done], ".1f") + "k"
        cpu = _range([r["cpu_ms_per_1k"] for r in done], ".1f")
        changes = _range([float(r["changes"]) for r in done], ",.0f")
        notes = [r["version"] for r in done[:1] if r.get("version")]
        if errors:
            notes.append(f"{len(errors)} of {len(mine)} rounds failed: {errors[0]}")
        rows.append({"contender": label, "events_per_s": rate, "cpu_ms_per_1k": cpu,
                     "changes": changes, "notes": "; ".join(notes)})
    return rows


def markdown(rows: Sequence[dict[str, str]], *, command: str, date: str,
             facts: Sequence[str] = ()) -> str:
    head = ["# Segmenter beside its peers (bench/peers)", "",
            f"`{command}` — {date}", ""]
    head += [f"- {fact}" for fact in facts]
    table = ["", "| contender | events/s | CPU ms per 1k events | change records | notes |",
             "|---|---|---|---|---|"]
    for r in rows:
        cells = [r["contender"], r["events_per_s"], r["cpu_ms_per_1k"], r["changes"], r["notes"]]
        table.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(head + table) + "\n"
