"""Builders of segment-change records for the connector tests (real `SegmentChange.to_wire`),
and a Redis view built from the real change records of the retail rules replayed by the
Simulator (`replay_into_view`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from connectors.changes import ChangeRecord, change_from_wire
from connectors.redis_view import RedisView, rule_file_groups, rule_file_metadata
from model.changes import CAUSE_ERASURE, CAUSE_EVENT, Cause, SegmentChange, format_ts
from model.events import parse_rfc3339
from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.generator import generate
from streams.simulate import Simulator

BASE_AT = parse_rfc3339("2024-05-01T12:00:00Z") or 0

META: dict[str, dict[str, Any]] = {
    "vip": {"label": "VIP", "color": "#C9A227", "icon": "crown",
            "actions": {"pipeline": "premium", "followups": []}},
    "buyer": {"label": "Buyer", "color": None, "icon": None, "actions": {}},
    "reader": {"label": "Newsletter reader", "color": "#00AA00", "icon": "mail",
               "actions": {"list": "news"}},
}
GROUP_OF = {"vip": "tier", "buyer": "tier"}


def details_for(segments: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {s: {**META.get(s, {"label": s, "color": None, "icon": None, "actions": {}}),
                "why": f"because {s}"} for s in segments}


def wire_change(
    customer_id: str,
    seq: int,
    *,
    segments: Iterable[str],
    previous: Iterable[str] = (),
    at_ms: int | None = None,
    kind: str = CAUSE_EVENT,
    rules_version: str = "sha256:test",
    details: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The wire object of a change from `previous` to `segments` (entered, exited, groups and
    details derived like the engine does)."""
    after, before = set(segments), set(previous)
    entered, exited = sorted(after - before), sorted(before - after)
    groups: dict[str, dict[str, str | None]] = {}
    for group in sorted({GROUP_OF[s] for s in (*entered, *exited) if s in GROUP_OF}):
        old = next((s for s in sorted(before) if GROUP_OF.get(s) == group), None)
        new = next((s for s in sorted(after) if GROUP_OF.get(s) == group), None)
        if old != new:
            groups[group] = {"from": old, "to": new}
    event = None if kind != CAUSE_EVENT else f"ev-{customer_id}-{seq}"
    change = SegmentChange(
        customer_id=customer_id, seq=seq, at=BASE_AT + seq * 1000 if at_ms is None else at_ms,
        cause=Cause(kind, event, "purchase" if event else None, BASE_AT if event else None),
        rules_version=rules_version, entered=tuple(entered), exited=tuple(exited),
        segments=tuple(sorted(after)), groups=groups,
        details=details_for((*entered, *exited)) if details is None else details)
    return change.to_wire()


def erasure(customer_id: str, seq: int, previous: Iterable[str], at_ms: int | None = None
            ) -> dict[str, Any]:
    wire = wire_change(customer_id, seq, segments=(), previous=previous, at_ms=at_ms,
                       kind=CAUSE_ERASURE, details={})
    wire["cause"] = {"kind": CAUSE_ERASURE, "event_id": f"erase-{customer_id}",
                     "event_type": "customer_erased", "event_ts": "2024-05-01T12:00:00.000Z"}
    return wire


def record(wire: dict[str, Any]) -> ChangeRecord:
    return change_from_wire(orjson.loads(orjson.dumps(wire)))


# ---------------------------------------------------------------------- a replayed view

RETAIL_RULES = RuleSet(load_rules(Path(__file__).resolve().parents[2] / "rules" / "examples"
                                  / "retail.yaml"))


@dataclass
class Replayed:
    """The retail rules replayed over a generated log: the final states (what the worker
    holds) and every change record, applied to a Redis view."""

    sim: Simulator
    changes: list[SegmentChange]
    view: RedisView

    def members(self, segment: str) -> dict[str, str]:
        """customer -> entered_at (RFC 3339) of the Simulator's current members."""
        return {cid: format_ts(st.members[segment]) for cid, st in self.sim.states.items()
                if segment in st.members}

    def why(self, segment: str, customer_id: str) -> Any:
        """The `why` of the change that last entered the customer into the segment."""
        entering = [c for c in self.changes
                    if c.customer_id == customer_id and segment in c.entered]
        return entering[-1].details[segment]["why"]


async def replay_into_view(client: aioredis.Redis, prefix: str, *, customers: int = 1000,
                           events: int = 10_000, seed: int = 14) -> Replayed:
    changes: list[SegmentChange] = []
    sim = Simulator(RETAIL_RULES, on_change=changes.append)
    for ev in generate(customers=customers, events=events, seed=seed,
                       start_ms=BASE_AT - 120 * 86_400_000, days=120):
        sim.feed(ev)
    sim.finish()
    view = RedisView(client, prefix=prefix,
                     fallback_metadata=rule_file_metadata(RETAIL_RULES.file),
                     segment_groups=rule_file_groups(RETAIL_RULES.file))
    records = [change_from_wire(orjson.loads(orjson.dumps(c.to_wire()))) for c in changes]
    for i in range(0, len(records), 500):
        assert set(await view.apply_many(records[i:i + 500])) <= {"applied", "erased"}
    return Replayed(sim, changes, view)
