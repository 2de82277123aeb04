"""The engine: the pure state machine of one customer, shared by the worker, `simulate`, the
benchmarks and the property tests. No clock and no I/O: every call is told what instant it is.

- `apply(state, event, now)`: checks time and duplicates, first fires what was due up to `now`,
  then folds the event in and re-evaluates only the segments it can affect (`apply_batch`: the
  same over a run of records);
- `fire(state, t)`: time-driven re-evaluation of everything due at or before `t`;
- `switch_rules(state, ruleset, now, quiet)`: re-evaluate every segment under a new rule version.
Each returns an `Outcome`: the new state (None once a customer is erased), the segment changes
(in order, with contiguous `seq`) and a rejection when the event was refused.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, MutableMapping
from dataclasses import replace
from typing import Final

from mypy_extensions import mypyc_attr

from model.changes import (
    CAUSE_ERASURE,
    CAUSE_RULES,
    CAUSE_TIME,
    Cause,
    SegmentChange,
)
from model.events import Event, Rejection, RejectReason, check_time
from model.state import CustomerState, fold_event, prune
from rules.evaluate import TIMER_LOOKAHEAD, display, evaluate
from rules.ruleset import RuleSet

ERASED: Final = "customer_erased"
_TIME: Final = Cause(CAUSE_TIME)  # immutable: one instance serves every timer


class Outcome:
    """What one engine call did: the customer's state after it (None once erased), the segment
    changes in order and the rejection of a refused event. Never changed once made.

    A plain native class: made once per event and per timer fire, by compiled code it costs a
    C call (a NamedTuple's __new__ is generated Python and ran interpreted)."""

    state: CustomerState | None
    changes: tuple[SegmentChange, ...]
    rejection: Rejection | None

    def __init__(self, state: CustomerState | None, changes: tuple[SegmentChange, ...] = (),
                 rejection: Rejection | None = None) -> None:
        self.state = state
        self.changes = changes
        self.rejection = rejection

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Outcome) and self.state == other.state
                and self.changes == other.changes and self.rejection == other.rejection)

    def __repr__(self) -> str:
        return (f"Outcome(state={self.state!r}, changes={self.changes!r}, "
                f"rejection={self.rejection!r})")


# compiled by mypyc (model/native.py) and subclassed by plain Python (bench/instrument.py)
@mypyc_attr(allow_interpreted_subclasses=True)
class Engine:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        s = rules.settings
        self._r = s.resolution_ms
        self._retention = s.retention_ms
        self._dedup = s.dedup_horizon_ms
        self._future = s.future_tolerance_ms
        self._points = dict(s.engagement.points)
        self._half_life = s.engagement.half_life_ms

    # ------------------------------------------------------------------ events
    def apply(self, st: CustomerState | None, ev: Event, now: int) -> Outcome:
        ts = ev.ts  # the event's fields read once (a plain class: each read is a lookup)
        if ts < now - self._retention or ts > now + self._future:
            rej = check_time(ev, now_ms=now, retention_ms=self._retention,
                             future_tolerance_ms=self._future)
            if rej is not None:
                return Outcome(st, (), rej)
        event_id = ev.event_id
        if st is not None and st.dedup.get(event_id, -1 << 62) >= now - self._dedup:
            return Outcome(st, (), Rejection(
                RejectReason.DUPLICATE, f"event_id {event_id!r} was already applied",
                "event_id", event_id, ev.customer_id))
        changes: list[SegmentChange] = []
        if st is not None and (st.due or st.pending):
            self._fire_into(st, now, changes)
        etype = ev.type
        if etype == ERASED:
            if st is not None:
                changes.append(self._erase(st, ev, now))
            return Outcome(None, tuple(changes))
        if st is None:
            st = CustomerState(ev.customer_id, rules_version=self.rules.version)
        st.dedup[event_id] = now
        if ts > now:  # from the (tolerated) future: counts from its own instant on
            keys = [p.ts for p in st.pending]
            st.pending.insert(bisect.bisect_right(keys, ts), ev)
            return Outcome(st, tuple(changes))
        moved_first = st.first_seen is None or ts < st.first_seen
        fold_event(st, ev, self._r, self._points, self._half_life)
        prune(st, now, self._r, self._retention, self._dedup)
        # a new customer has no candidates yet: everything is evaluated once
        dirty = (self.rules.segments if st.last_eval is None
                 else self.rules.dirty_for_type(etype, moved_first))
        change = evaluate(self.rules, st, now, dirty, ev)  # the Cause is built on a change
        if change is not None:
            changes.append(change)
        return Outcome(st, tuple(changes))

    def apply_batch(self, states: MutableMapping[str, CustomerState],
                    records: Iterable[tuple[Event, int]]) -> list[Outcome]:
        """`apply` over records in order (e.g. one fetch of a task), each at its instant: the
        customer's state is taken from `states` and put back (removed once erased). The same
        outcomes as calling `apply` record by record."""
        out: list[Outcome] = []
        apply = self.apply
        for ev, now in records:
            cid = ev.customer_id
            o = apply(states.get(cid), ev, now)
            if o.state is None:
                states.pop(cid, None)
            else:
                states[cid] = o.state
            out.append(o)
        return out

    # ------------------------------------------------------------------ time
    def fire(self, st: CustomerState, t: int) -> Outcome:
        changes: list[SegmentChange] = []
        self._fire_into(st, t, changes)
        return Outcome(st, tuple(changes))

    def _fire_into(self, st: CustomerState, t: int, changes: list[SegmentChange]) -> None:
        while True:
            d = st.next_due
            if d is None or d > t:
                return
            dirty_ids = {sid for sid, at in st.due.items() if at <= d}
            for sid in dirty_ids:
                del st.due[sid]
            while st.pending and st.pending[0].ts <= d:
                ev = st.pending.pop(0)
                moved_first = st.first_seen is None or ev.ts < st.first_seen
                fold_event(st, ev, self._r, self._points, self._half_life)
                dirty_ids.update(s.id for s in self.rules.dirty_for_type(ev.type, moved_first))
            dirty = (self.rules.segments if st.last_eval is None
                     else self.rules.closure(dirty_ids))
            change = evaluate(self.rules, st, d, dirty, _TIME,
                              lookahead=TIMER_LOOKAHEAD)
            if change is not None:
                changes.append(change)

    # ------------------------------------------------------------------ rules
    def reevaluate(self, st: CustomerState, now: int, quiet: bool = False,
                   previous: RuleSet | None = None) -> Outcome:
        """Re-evaluate every segment under this engine's rules at `now`, after a rule roll-out.

        Fire what was due under the previous version first (with the previous engine). Segments
        that the new version no longer has are exited (`previous`, the version the customer was
        evaluated under, tells their groups); `quiet` marks the change `quiet` (views apply it,
        follow-ups such as webhooks skip it)."""
        rules = self.rules
        known = set(rules.by_id)
        gone = [sid for sid in st.members if sid not in known]
        old_groups: dict[str, str] = {}
        if previous is not None:
            for sid in gone:
                seg = previous.by_id.get(sid)
                if seg is not None and seg.defn.group is not None:
                    old_groups[seg.defn.group] = sid
        st.cands.intersection_update(known)
        for sid in list(st.due):
            if sid not in known:
                del st.due[sid]
        for sid in gone:
            del st.members[sid]
        st.rules_version = rules.version
        change = evaluate(rules, st, now, rules.segments, Cause(CAUSE_RULES))
        if gone:
            change = _with_removed(st, change, gone, rules, now, old_groups, previous)
        if change is not None and quiet:
            change = replace(change, quiet=True)
        return Outcome(st, () if change is None else (change,))

    def _erase(self, st: CustomerState, ev: Event, now: int) -> SegmentChange:
        return SegmentChange(
            customer_id=st.customer_id, seq=st.seq + 1, at=now,
            cause=Cause(CAUSE_ERASURE, ev.event_id, ev.type, ev.ts),
            rules_version=self.rules.version, entered=(), exited=tuple(sorted(st.members)),
            segments=(), groups=_erased_groups(self.rules, st),
            details={sid: _display(self.rules, sid) for sid in st.members})


def _display(rules: RuleSet, sid: str) -> dict[str, object]:
    return display(rules.by_id.get(sid), {})


def _erased_groups(rules: RuleSet, st: CustomerState) -> dict[str, dict[str, str | None]]:
    out: dict[str, dict[str, str | None]] = {}
    for g, ids in rules.groups.items():
        cur = next((s for s in ids if s in st.members), None)
        if cur is not None:
            out[g] = {"from": cur, "to": None}
    return out


def _with_removed(st: CustomerState, change: SegmentChange | None, gone: list[str],
                  rules: RuleSet, now: int, old_groups: dict[str, str],
                  previous: RuleSet | None = None) -> SegmentChange:
    """Fold the exits from segments that the new rule version no longer has into the change."""
    groups = {g: dict(v) for g, v in (change.groups if change else {}).items()}
    for g, sid in old_groups.items():
        to = next((s for s in rules.groups.get(g, ()) if s in st.members), None)
        groups[g] = {"from": sid, "to": to}
    details = dict(change.details) if change else {}
    for sid in gone:
        details[sid] = _display(previous, sid) if previous is not None else _display(rules, sid)
    if change is None:
        st.seq += 1
        return SegmentChange(st.customer_id, st.seq, now, Cause(CAUSE_RULES), rules.version,
                             (), tuple(sorted(gone)), tuple(sorted(st.members)), groups, details)
    return SegmentChange(
        change.customer_id, change.seq, change.at, change.cause, change.rules_version,
        change.entered, tuple(sorted((*change.exited, *gone))), change.segments, groups,
        details)

