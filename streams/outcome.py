"""The outcome report of a control-group segment: treated vs held-out, from a replayed event log.

Pure (no Kafka, Redis or wall clock): the log is replayed through the engine by a
`streams.simulate.Simulator` with an event clock, exactly as `segmenter simulate` does, and the
change records it emits say who entered the segment, when, and whether they are held out
(`control`). The engine and its outputs are untouched; this module only watches them.

- **Who counts.** Each customer once, at their **first** entry into the segment in the log (later
  re-entries are counted in `reentries` but not measured: the customer is the unit the control
  hash assigns, so one customer must not weigh twice). Treated = not held out, control = held
  out (the change record's `control` lists the segment).
- **What is measured**, at M = entered_at + `after` (metric) or + `within` (conversion):
  - a metric: the rule expression evaluated on the customer's engine state at instant M (the
    state after every event with ts <= M that arrived before the clock passed M, with the
    timers due up to M fired), as `when` would see it at M;
  - a conversion: 1 if an event of that type with entered_at < ts <= M was applied (not
    rejected, not a duplicate) before the clock passed M, else 0. The event that made the
    customer enter does not count (ts <= entered_at).
- **Only closed windows count**: M <= the end of the replay (`until`, else the last event's
  time). Entries whose window is still open are `pending`; customers erased before M, and
  metrics that are null at M (e.g. `days_since_last_purchase()` without a purchase), are
  `excluded`.
- **Statistics** (scipy / statsmodels, imported only here): a metric compares the means with
  Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`, whose confidence interval is that of
  the difference of means); a conversion compares the rates with statsmodels'
  `confint_proportions_2indep` (Newcomb's score interval of the difference) and
  `test_proportions_2indep` (score test). The difference is always treated minus control.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from model.changes import CAUSE_ERASURE, SegmentChange, format_ts
from model.events import Event
from rules.compiler import Fn, compile_value
from rules.context import Ctx
from rules.loader import format_duration
from rules.model import OutcomeDef
from rules.ruleset import RuleSet
from streams.simulate import OnChange, OnReject, Simulator, _ignore_change, _ignore_reject

DEFAULT_CONFIDENCE = 0.95


class OutcomeError(ValueError):
    """The segment cannot be reported on (unknown, no control group or no outcome)."""


@dataclass(slots=True)
class Entry:
    """One customer's first entry into the segment and its measured outcome."""

    customer_id: str
    entered_at: int
    control: bool
    value: float | None = None  # the metric at M, or 1.0 / 0.0 for a conversion
    measured: bool = False
    excluded: str | None = None  # "erased" or "null"


@dataclass(frozen=True, slots=True)
class GroupStats:
    n: int
    mean: float | None
    sd: float | None  # sample standard deviation (ddof=1); None below 2 customers
    conversions: int | None = None  # conversion outcomes only

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "mean": self.mean, "sd": self.sd}
        if self.conversions is not None:
            out["conversions"] = self.conversions
        return out


@dataclass(frozen=True, slots=True)
class Comparison:
    treated: GroupStats
    control: GroupStats
    difference: float | None  # treated mean minus control mean (rates for a conversion)
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    confidence: float
    method: str
    note: str | None = None  # why there is no interval (too few customers, no variance)


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    segment: str
    kind: str  # "metric" or "conversion"
    outcome: str  # "purchase_amount(30d) after 30d" / "purchase within 14d"
    window_ms: int
    control_share: float
    end: int | None  # the replay's end instant
    entered: int  # customers who entered at least once
    reentries: int
    pending: int  # window still open at the end
    excluded: dict[str, int]
    comparison: Comparison

    @property
    def significant(self) -> bool:
        c = self.comparison
        return c.p_value is not None and c.p_value < 1.0 - c.confidence

    def to_json(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "segment": self.segment, "kind": self.kind, "outcome": self.outcome,
            "window": format_duration(self.window_ms), "control_share": self.control_share,
            "end": format_ts(self.end) if self.end is not None else None,
            "entered": self.entered, "reentries": self.reentries, "pending": self.pending,
            "excluded": dict(self.excluded),
            "treated": c.treated.to_json(), "control": c.control.to_json(),
            "difference": c.difference, "ci_low": c.ci_low, "ci_high": c.ci_high,
            "confidence": c.confidence, "p_value": c.p_value, "significant": self.significant,
            "method": c.method, "note": c.note,
        }

    def text(self) -> str:
        c = self.comparison
        level = f"{c.confidence * 100:g}%"
        unit = " (rate)" if self.kind == "conversion" else ""

        def group(name: str, g: GroupStats) -> str:
            mean = _fmt(g.mean)
            if g.conversions is not None:
                return f"{name:<8} n={g.n:<7} converted={g.conversions:<7} rate={mean}"
            return f"{name:<8} n={g.n:<7} mean={mean:<12} sd={_fmt(g.sd)}"

        lines = [
            f"segment {self.segment}: {self.kind} {self.outcome}, control "
            f"{self.control_share * 100:g}%",
            f"replayed to {format_ts(self.end) if self.end is not None else '-'}; "
            f"{self.entered} customers entered, {self.pending} with the window still open"
            + (", excluded: " + ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items()))
               if self.excluded else ""),
            group("treated", c.treated),
            group("control", c.control),
        ]
        if c.difference is None or c.ci_low is None or c.ci_high is None:
            lines.append(f"difference: {_fmt(c.difference)} (no interval: {c.note})")
        else:
            verdict = "significant" if self.significant else "not significant"
            lines.append(f"difference (treated - control){unit}: {_fmt(c.difference)}, "
                         f"{level} CI [{_fmt(c.ci_low)}, {_fmt(c.ci_high)}], "
                         f"p={_fmt_p(c.p_value)} ({verdict}; {c.method})")
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}" if abs(x) < 1e-3 and x != 0 else f"{x:,.4f}"


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def _finite(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------- statistics


def _stats(values: Sequence[float], conversions: bool) -> GroupStats:
    n = len(values)
    if n == 0:
        return GroupStats(0, None, None, 0 if conversions else None)
    from statistics import fmean, stdev

    return GroupStats(n, fmean(values), stdev(values) if n > 1 else None,
                      int(sum(values)) if conversions else None)


def compare_means(treated: Sequence[float], control: Sequence[float],
                  confidence: float = DEFAULT_CONFIDENCE) -> Comparison:
    """Welch's t-test of treated vs control (scipy): difference of means and its interval."""
    t, c = _stats(treated, False), _stats(control, False)
    method = "Welch t-test (scipy)"
    if t.n < 2 or c.n < 2:
        diff = (t.mean - c.mean) if t.mean is not None and c.mean is not None else None
        return Comparison(t, c, diff, None, None, None, confidence, method,
                          "fewer than 2 customers in a group")
    assert t.mean is not None and c.mean is not None
    diff = t.mean - c.mean
    if not t.sd and not c.sd:
        return Comparison(t, c, diff, None, None, None, confidence, method,
                          "the outcome is the same for every customer")
    from scipy import stats

    res = stats.ttest_ind(list(treated), list(control), equal_var=False)
    ci = res.confidence_interval(confidence_level=confidence)
    return Comparison(t, c, diff, _finite(ci.low), _finite(ci.high), _finite(res.pvalue),
                      confidence, method)


def compare_proportions(treated: Sequence[float], control: Sequence[float],
                        confidence: float = DEFAULT_CONFIDENCE) -> Comparison:
    """Conversion rates (values 0/1) of treated vs control (statsmodels): the difference of
    proportions, Newcomb's score interval and the score test."""
    t, c = _stats(treated, True), _stats(control, True)
    method = "difference of proportions, Newcomb interval and score test (statsmodels)"
    if t.n == 0 or c.n == 0:
        diff = (t.mean - c.mean) if t.mean is not None and c.mean is not None else None
        return Comparison(t, c, diff, None, None, None, confidence, method,
                          "no customer in a group")
    assert t.mean is not None and c.mean is not None and t.conversions is not None \
        and c.conversions is not None
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        test_proportions_2indep,
    )

    low, high = confint_proportions_2indep(t.conversions, t.n, c.conversions, c.n,
                                           method="newcomb", compare="diff",
                                           alpha=1.0 - confidence)
    p_value: float | None = None
    if 0 < t.conversions + c.conversions < t.n + c.n:  # else no variance: nothing to test
        test = test_proportions_2indep(t.conversions, t.n, c.conversions, c.n,
                                       method="score", compare="diff")
        p_value = _finite(test.pvalue)
    return Comparison(t, c, t.mean - c.mean, _finite(low), _finite(high), p_value,
                      confidence, method)


# ---------------------------------------------------------------------- replay


class OutcomeSimulator(Simulator):
    """A Simulator that also measures one segment's outcome (see the module's docstring).

    It only adds calls to `Simulator.advance` at the measurement instants (the same timers fire
    in the same order, so the change records are exactly those of a plain Simulator) and reads
    the customers' states."""

    def __init__(self, rules: RuleSet, segment_id: str, *, until: int | None = None,
                 wall_now: int | None = None, on_change: OnChange = _ignore_change,
                 on_reject: OnReject = _ignore_reject) -> None:
        self.segment_id = segment_id
        self.outcome_def = _outcome_of(rules, segment_id)
        self._forward = on_change
        super().__init__(rules, until=until, wall_now=wall_now, on_change=self._watch,
                         on_reject=on_reject)
        self.entries: dict[str, Entry] = {}
        self.reentries = 0
        self._due: list[tuple[int, int, str]] = []  # (M, order, customer id)
        self._order = 0
        od = self.outcome_def
        self._metric: Fn | None = (
            compile_value(od.metric, od.metric_text or "", rules.settings)
            if od.metric is not None else None)

    # what the engine emits

    def _watch(self, change: SegmentChange) -> None:
        sid = self.segment_id
        cid = change.customer_id
        if sid in change.entered:
            if cid in self.entries:
                self.reentries += 1
            else:
                self.entries[cid] = Entry(cid, change.at, sid in change.control)
                heapq.heappush(self._due, (change.at + self.outcome_def.window_ms, self._order,
                                           cid))
                self._order += 1
        if change.cause.kind == CAUSE_ERASURE:
            entry = self.entries.get(cid)
            if entry is not None and not entry.measured:
                entry.excluded = "erased"
        self._forward(change)

    def feed(self, ev: Event, raw: bytes = b"") -> None:
        applied = self.stats.applied
        super().feed(ev, raw)
        if (self.stats.applied > applied and ev.type == self.outcome_def.event_type):
            entry = self.entries.get(ev.customer_id)
            if (entry is not None and not entry.measured
                    and entry.entered_at < ev.ts <= entry.entered_at
                    + self.outcome_def.window_ms):
                entry.value = 1.0

    # measuring

    def advance(self, t: int) -> None:
        due = self._due
        while due and due[0][0] < t:  # events at ts == M still count: measure once past M
            m, _, cid = heapq.heappop(due)
            super().advance(m)
            self._measure(cid, m)
        super().advance(t)

    def finish(self) -> None:
        super().finish()
        end = self.end
        due = self._due
        while end is not None and due and due[0][0] <= end:
            m, _, cid = heapq.heappop(due)
            self._measure(cid, m)

    @property
    def end(self) -> int | None:
        return self.until if self.until is not None else self.clock

    def _measure(self, cid: str, m: int) -> None:
        entry = self.entries[cid]
        entry.measured = True
        if entry.excluded is not None:
            return
        st = self.states.get(cid)
        if st is None:
            entry.excluded = "erased"
            return
        if self._metric is None:  # a conversion: seen (or not) as the events were applied
            if entry.value is None:
                entry.value = 0.0
            return
        ctx = Ctx(st, m, self.rules.settings.resolution_ms, st.cands, self.rules.groups_before)
        value = self._metric(ctx)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            entry.excluded = "null"
            return
        entry.value = float(value)

    # the report

    def report(self, confidence: float = DEFAULT_CONFIDENCE) -> OutcomeReport:
        """The report (call after `finish`)."""
        od = self.outcome_def
        treated: list[float] = []
        control: list[float] = []
        excluded: dict[str, int] = {}
        pending = 0
        for entry in self.entries.values():
            if entry.excluded is not None:
                excluded[entry.excluded] = excluded.get(entry.excluded, 0) + 1
            elif not entry.measured:
                pending += 1
            elif entry.value is not None:
                (control if entry.control else treated).append(entry.value)
        compare: Callable[[Sequence[float], Sequence[float], float], Comparison] = (
            compare_proportions if od.event_type is not None else compare_means)
        seg = self.rules.by_id[self.segment_id].defn
        return OutcomeReport(
            segment=self.segment_id, kind=od.kind, outcome=describe(od),
            window_ms=od.window_ms, control_share=seg.control_share or 0.0, end=self.end,
            entered=len(self.entries), reentries=self.reentries, pending=pending,
            excluded=excluded, comparison=compare(treated, control, confidence))


def describe(od: OutcomeDef) -> str:
    """`purchase_amount(30d) after 30d` / `purchase within 14d`."""
    if od.event_type is not None:
        return f"{od.event_type} within {format_duration(od.window_ms)}"
    return f"{od.metric_text} after {format_duration(od.window_ms)}"


def _outcome_of(rules: RuleSet, segment_id: str) -> OutcomeDef:
    seg = rules.by_id.get(segment_id)
    if seg is None:
        known = ", ".join(sorted(s.id for s in rules.segments if s.defn.outcome is not None))
        raise OutcomeError(f"unknown segment {segment_id!r}"
                           + (f" (segments with an outcome: {known})" if known else ""))
    if not seg.defn.control_share:
        raise OutcomeError(f"segment {segment_id!r} has no control group: add control: 10% and "
                           "an outcome to its rule")
    if seg.defn.outcome is None:
        raise OutcomeError(f"segment {segment_id!r} declares no outcome: add e.g. outcome: "
                           "{metric: purchase_amount(30d), after: 30d} or outcome: "
                           "{conversion: purchase, within: 14d}")
    return seg.defn.outcome


def outcome_report(rules: RuleSet, segment_id: str, lines: Iterable[bytes], *,
                   until: int | None = None, wall_now: int | None = None,
                   confidence: float = DEFAULT_CONFIDENCE) -> OutcomeReport:
    """Replay JSONL event lines and report the segment's outcome."""
    sim = OutcomeSimulator(rules, segment_id, until=until, wall_now=wall_now)
    sim.feed_lines(lines)
    sim.finish()
    return sim.report(confidence)


__all__ = ["Comparison", "Entry", "GroupStats", "OutcomeError", "OutcomeReport",
           "OutcomeSimulator", "compare_means", "compare_proportions", "describe",
           "outcome_report"]
