"""Replay an event log through the engine with an event clock (no Kafka, no wall clock).

now = the largest event time seen so far; before an event is applied, every customer whose
segments are due at or before `now` is re-evaluated at its due instant, earliest first. Used by
`segmenter simulate`, `segmenter rules diff`, the benchmarks and the equivalence tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from model.changes import SegmentChange
from model.events import Event, Rejection, check_time, parse_event
from model.state import CustomerState
from rules.context import Ctx
from rules.ruleset import RuleSet
from streams.annotated import engine_for
from streams.due_index import DueIndex
from streams.engine import Engine, Outcome

OnChange = Callable[[SegmentChange], None]
OnReject = Callable[[bytes, Rejection], None]


@dataclass(slots=True)
class SimulationStats:
    applied: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    after_until: int = 0
    changes: int = 0
    time_changes: int = 0


def _ignore_change(change: SegmentChange) -> None:
    pass


def _ignore_reject(raw: bytes, rejection: Rejection) -> None:
    pass


# compiled by mypyc (model/native.py) and subclassed by plain Python (streams/outcome.py)
@mypyc_attr(allow_interpreted_subclasses=True)
class Simulator:
    def __init__(self, rules: RuleSet, *, until: int | None = None,
                 wall_now: int | None = None,
                 on_change: OnChange = _ignore_change,
                 on_reject: OnReject = _ignore_reject) -> None:
        """`wall_now`: the wall-clock instant the log is replayed at; an event more than the
        future tolerance past it is refused (`too_far_in_future`) and does not move the
        clock, as in the worker. None: no such check (synthetic logs in tests)."""
        self.rules = rules
        self.wall_now = wall_now
        self.engine: Engine = engine_for(rules)
        self.currency = rules.settings.currency
        self.states: dict[str, CustomerState] = {}
        self.index = DueIndex()
        self.clock: int | None = None
        self.until = until
        self.stats = SimulationStats()
        self._on_change = on_change
        self._on_reject = on_reject

    def feed_lines(self, lines: Iterable[bytes]) -> None:
        for raw in lines:
            if raw.strip():
                self.feed_raw(raw)

    def feed_raw(self, raw: bytes) -> None:
        ev = parse_event(raw, currency=self.currency)
        if isinstance(ev, Rejection):
            self._reject(raw, ev)
        else:
            self.feed(ev, raw)

    def feed(self, ev: Event, raw: bytes = b"") -> None:
        if self.until is not None and ev.ts > self.until:
            self.stats.after_until += 1
            return
        if self.wall_now is not None and (self.clock is None or ev.ts > self.clock):
            rej = check_time(ev, now_ms=self.wall_now, retention_ms=1 << 62,
                             future_tolerance_ms=self.rules.settings.future_tolerance_ms)
            if rej is not None:
                self._reject(raw, rej)
                return
        now = ev.ts if self.clock is None or ev.ts > self.clock else self.clock
        self.advance(now)
        out = self.engine.apply(self.states.get(ev.customer_id), ev, now)
        if out.rejection is not None:
            self._reject(raw, out.rejection)
        else:
            self.stats.applied += 1
        self._settle(ev.customer_id, out)

    def advance(self, t: int) -> None:
        """Move the clock to t, firing everything due up to t in due order."""
        index = self.index
        if index.earliest_at_most(t):
            for d, cid in index.pop_due(t):
                st = self.states[cid]
                self._settle(cid, self.engine.fire(st, d))
        if self.clock is None or t > self.clock:
            self.clock = t

    def finish(self) -> None:
        end = self.until if self.until is not None else self.clock
        if end is not None:
            self.advance(end)

    def _settle(self, cid: str, out: Outcome) -> None:
        st = out.state
        if st is None:
            self.states.pop(cid, None)
            self.index.set(cid, None)
        else:
            self.states[cid] = st
            self.index.set(cid, st.next_due)
        for ch in out.changes:
            self.stats.changes += 1
            if ch.cause.kind == "time":
                self.stats.time_changes += 1
            self._on_change(ch)

    def _reject(self, raw: bytes, rej: Rejection) -> None:
        self.stats.rejected[rej.reason] += 1
        self._on_reject(raw, rej)

    def segment_sizes(self) -> Counter[str]:
        sizes: Counter[str] = Counter({s.id: 0 for s in self.rules.segments})
        for st in self.states.values():
            sizes.update(st.members.keys())
        return sizes


def customer_metrics(rules: RuleSet, st: CustomerState, t: int) -> dict[str, Any]:
    """Key metrics of a customer at instant t: core facts and the value of every rule term."""
    ctx = Ctx(st, t, rules.settings.resolution_ms, st.cands, rules.groups_before)
    out: dict[str, Any] = {"seq": st.seq, "lifetime_amount": st.lifetime_amount,
                           "lifetime_orders": st.lifetime_orders}
    for seg in rules.segments:
        for expr in (seg.when, seg.exit_when):
            if expr is not None:
                for term in expr.terms:
                    if term.text not in out:
                        out[term.text] = term.fn(ctx)
    return out
