"""What `segmenter rules diff` adds for people (issue 14): who moves between two rule versions,
and how many follow-ups and pipeline moves each version fires over the same event log.

A *follow-up* is what the automation behind the change records would act on: an entry or an
exit of a segment that has `actions`, unless the customer is held out of that segment (its
control group), plus every item of a pipeline move's `follow_ups`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from model.changes import SegmentChange
from rules.ruleset import RuleSet
from streams.annotated import annotator_for
from streams.simulate import Simulator


class FiredCounter:
    """Counts the changes, follow-ups and pipeline moves of one replay (Simulator on_change)."""

    def __init__(self, rules: RuleSet) -> None:
        self.with_actions = {s.id for s in rules.segments if s.defn.actions}
        self.changes = 0
        self.follow_ups = 0
        self.pipeline_moves: Counter[tuple[str | None, str | None]] = Counter()

    def count(self, change: SegmentChange) -> None:
        self.changes += 1
        held = set(change.control)
        self.follow_ups += sum(1 for s in (*change.entered, *change.exited)
                               if s in self.with_actions and s not in held)
        if change.pipeline is not None:
            self.pipeline_moves[(change.pipeline.get("from"), change.pipeline.get("to"))] += 1
            self.follow_ups += len(change.pipeline.get("follow_ups") or ())


def movers(before: Simulator, after: Simulator) -> list[dict[str, Any]]:
    """Every customer whose segments or pipeline at the end of the log differ between the two
    replays, sorted by id: {customer_id, entered, exited[, pipeline: {from, to}]}."""
    old_p, new_p = annotator_for(before.rules.file), annotator_for(after.rules.file)
    out: list[dict[str, Any]] = []
    for cid in sorted(set(before.states) | set(after.states)):
        a = set(before.states[cid].members) if cid in before.states else set()
        b = set(after.states[cid].members) if cid in after.states else set()
        line: dict[str, Any] = {"customer_id": cid, "entered": sorted(b - a),
                                "exited": sorted(a - b)}
        pa, pb = old_p.pipeline_of(a), new_p.pipeline_of(b)
        if pa != pb:
            line["pipeline"] = {"from": pa, "to": pb}
        if line["entered"] or line["exited"] or "pipeline" in line:
            out.append(line)
    return out


def report_movers(moving: list[dict[str, Any]], old: FiredCounter, new: FiredCounter,
                  show: int, echo: Callable[[str], None]) -> None:
    """The readable part of the report: who moves, first `show` ids per segment."""
    by_segment: dict[tuple[str, str], list[str]] = {}
    pipelines: Counter[tuple[str | None, str | None]] = Counter()
    for line in moving:
        for sid in line["entered"]:
            by_segment.setdefault((sid, "enter"), []).append(line["customer_id"])
        for sid in line["exited"]:
            by_segment.setdefault((sid, "exit"), []).append(line["customer_id"])
        if "pipeline" in line:
            pipelines[(line["pipeline"]["from"], line["pipeline"]["to"])] += 1
    echo(f"customers who move: {len(moving)}")
    if show:
        for (sid, way), ids in sorted(by_segment.items()):
            more = f" (+{len(ids) - show} more)" if len(ids) > show else ""
            echo(f"  {way} {sid}: " + ", ".join(ids[:show]) + more)
    for (a, b), n in sorted(pipelines.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        echo(f"  pipeline {a} -> {b}: {n}")
    for name, c in (("old", old), ("new", new)):
        moves = sum(c.pipeline_moves.values())
        echo(f"{name} version fires: {c.changes} changes, {c.follow_ups} follow-ups, "
             f"{moves} pipeline moves")
