"""Segment membership at one instant, exactly as the spec defines it, and when to look again.

Given the previous membership M, at instant t, for each segment s in dependency order:
candidate(s) = not exit_when(t) if s in M and exit_when is set, else when(t); if s in M, candidate
is false and t - entered_at(s) < min_dwell, it stays true. In a group the member is the first
segment in file order whose candidate is true; a segment without a group is a member iff its
candidate is true.

Only the segments handed in (`dirty`) are re-evaluated; the others keep their stored candidate,
which is valid because each segment also stores `due`: the earliest instant at which time alone
could change its candidate (a window edge, a threshold crossing, a dwell expiring). The engine
re-evaluates a segment at or before that instant, never later.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Final

from model.changes import Cause, SegmentChange, event_cause, new_change
from model.events import Event
from model.state import CustomerState, engagement_at
from rules.compiler import Crossing, DueParts
from rules.context import Ctx
from rules.model import DAY_MS as _DAY_MS
from rules.ruleset import CompiledSegment, RuleSet

HORIZON_MS: Final = 100 * 365 * 86_400_000  # how far ahead a threshold crossing is looked for

# Final here: a static of this module when compiled (an imported name is a dict lookup per read)
DAY_MS: Final = _DAY_MS


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _guess(c: Crossing, t0: int, d0: float, top: int, dtop: float) -> float | None:
    """Closed-form estimate of where diff reaches 0, from its value at t0 and at top."""
    if c.form == "lin":
        return t0 + (-d0) * (top - t0) / (dtop - d0)
    if c.form == "exp":
        q = 2.0 ** (-(top - t0) / c.half_life_ms)
        a = (d0 - dtop) / (1.0 - q)
        ratio = -(d0 - a) / a if a else 0.0
        if 0.0 < ratio <= 1.0:
            return t0 - c.half_life_ms * math.log2(ratio)
    return None


_EPS: Final = 1e-9


def days_flip(ts: int, const: float, now: int, op: str = "") -> int | None:
    """First instant t > now at which `(t - ts) / DAY_MS <op> const` changes (with no `op`: at
    which the sign of (t - ts) / DAY_MS - const changes), None if never. The value only grows
    with t, so its sign goes -1, 0, +1 at two known instants: what `_first_flip` finds by
    galloping, without evaluating the expression."""
    truth = _TRUTH.get(op)
    d = (now - ts) / DAY_MS - const
    s = (d > 0) - (d < 0)
    first = s if truth is None else truth(s)
    t = now
    while s < 1:
        if s < 0:  # the first instant at or past const
            t = ts + int(const * DAY_MS)
            while (t - 1 - ts) / DAY_MS >= const:
                t -= 1
            while (t - ts) / DAY_MS < const:
                t += 1
            s = 0 if (t - ts) / DAY_MS == const else 1
        else:  # at const now: the first instant past it
            t = ts + int(const * DAY_MS)
            while (t - ts) / DAY_MS > const:
                t -= 1
            while (t - ts) / DAY_MS <= const:
                t += 1
            s = 1
        if (s if truth is None else truth(s)) != first:
            return t
    return None


_TRUTH: Final[dict[str, Callable[[int], bool]]] = {
    "<": lambda s: s < 0, "<=": lambda s: s <= 0, ">": lambda s: s > 0,
    ">=": lambda s: s >= 0, "==": lambda s: s == 0, "!=": lambda s: s != 0}


def _search(c: Crossing, s0: int, lo: int, hi: int, ca: Ctx, cb: Ctx) -> int | None:
    """First instant in [lo, hi] where sign(diff) != s0, by interval bisection: a span whose
    bounds keep diff strictly on the side of s0 cannot contain a flip."""
    assert c.bounds is not None
    b = c.bounds(ca.at(lo), cb.at(hi))
    if b is None:
        return None
    low, high = b
    slack = _EPS * max(1.0, abs(low), abs(high))
    if (s0 < 0 and high < -slack) or (s0 > 0 and low > slack):
        return None
    if hi - lo < 16:
        for t in range(lo, hi + 1):
            d = c.diff(ca.at(t))
            if d is None or _sign(d) != s0:
                return t
        return None
    mid = (lo + hi) // 2
    first = _search(c, s0, lo, mid, ca, cb)
    return first if first is not None else _search(c, s0, mid + 1, hi, ca, cb)


def _first_flip(expr: DueParts, ctx: Ctx, scratch: Ctx, hi: int) -> int | None:
    """Earliest instant in (ctx.t, hi] at which a time-continuous comparison of `expr` flips.

    Each diff is monotone between step changes, so: no flip if its sign at `hi` is the sign
    now; otherwise start from the closed-form root (lin/exp) and gallop to the exact
    millisecond, or bisect when no closed form is known."""
    best: int | None = None
    t0 = ctx.t
    for c in expr.crossings:
        top = hi if best is None else best - 1  # only an earlier flip matters now
        if top <= t0:
            break
        anchor = c.anchor
        if anchor is not None:  # days_since_*() against a number: solved directly
            ts = anchor(ctx)
            if ts is None:
                continue
            flip = days_flip(ts, c.const, t0, c.op)
            if flip is not None and flip <= top:
                best = flip
            continue
        if c.decay:  # engagement_score() against a number: from the state's score
            at = decay_flip(ctx.st, c.half_life_ms, c.const, t0, top)
            if at != _GENERAL:
                if at is not None:
                    best = at
                continue
        d0 = c.diff(ctx)
        if d0 is None:
            continue
        s0 = _sign(d0)
        if c.mono is None and c.form == "mono":  # direction unknown: branch and bound
            at = None
            if c.bounds is None:
                at = (ctx.bnow + 1) * ctx.r  # no bounds (non-numeric parts): every bucket
            else:
                at = _search(c, s0, t0 + 1, top, scratch, Ctx(ctx.st, t0, ctx.r, ctx.cands,
                                                                  ctx.groups_before))
            if at is not None and (best is None or at < best):
                best = at
            continue
        dtop = c.diff(scratch.at(top))
        if dtop is None or _sign(dtop) == s0:
            continue
        g = c.root(ctx) if c.root is not None else _guess(c, t0, d0, top, dtop)
        best = _pinpoint(_DiffFlipped(c, scratch, s0), t0, top, g)
    return best


# The predicates handed to _pinpoint are small classes, not closures: a compiled closure and
# its environment refer to each other, so every call would leave a reference cycle for the
# cyclic garbage collector to find (measured: ~18k of them in each young collection of a
# worker on the retail rules).
class _DiffFlipped:
    """Whether the crossing's diff is off the sign s0 (or undefined) at instant t."""

    __slots__ = ("c", "s0", "scratch")

    def __init__(self, c: Crossing, scratch: Ctx, s0: int) -> None:
        self.c = c
        self.scratch = scratch
        self.s0 = s0

    def __call__(self, t: int) -> bool:
        d = self.c.diff(self.scratch.at(t))
        return d is None or _sign(d) != self.s0


def _pinpoint(flipped: Callable[[int], bool], lo: int, up: int, g: float | None) -> int:
    """The first instant in (lo, up] at which `flipped` holds, given that it does not at lo
    and does at up and changes once in between: from the estimate g (a closed-form root),
    gallop to a bracket, then bisect to the millisecond."""
    if g is not None and math.isfinite(g):
        gi = int(g)  # clamped to (lo, up] by comparisons: compiled, min() and max() are
        if gi <= lo:  # builtins called with boxed ints (~2k instructions each)
            gi = lo + 1
        if gi > up:
            gi = up
        step = 1
        if flipped(gi):
            up = gi
            while up - step > lo:
                if not flipped(up - step):
                    lo = up - step
                    break
                up -= step
                step *= 2
        else:
            lo = gi
            while lo + step < up:
                if flipped(lo + step):
                    up = lo + step
                    break
                lo += step
                step *= 2
    while up - lo > 1:
        mid = (lo + up) // 2
        if flipped(mid):
            up = mid
        else:
            lo = mid
    return up


_GENERAL: Final = -1  # decay_flip: no closed form here, take the general way


def decay_flip(st: CustomerState, half_life_ms: int, y: float, now: int,
               top: int) -> int | None:
    """First instant in (now, top] at which the sign of engagement_at(st, t) - y changes, None
    if none, _GENERAL if this case is left to the general search (a score or a threshold <= 0:
    the value may only reach y by underflowing to 0). The value falls with t from the state's
    score, so the closed-form root is exact up to rounding, and the millisecond is found by
    `engagement_at` itself: the instant `_first_flip` finds through the expression, without
    evaluating it."""
    score = st.eng_score
    if score == 0.0:
        return None  # 0 at every instant: -y throughout
    if score < 0.0 or y <= 0:
        return _GENERAL

    s0 = _decay_sign(st, now, half_life_ms, y)
    if s0 < 0 or _decay_sign(st, top, half_life_ms, y) == s0:  # under y and falling, or no
        return None  # change before top
    return _pinpoint(_DecayFlipped(st, half_life_ms, y, s0), now, top,
                     st.eng_ref + half_life_ms * math.log2(score / y))


def _decay_sign(st: CustomerState, t: int, half_life_ms: int, y: float) -> int:
    d = engagement_at(st, t, half_life_ms) - y
    return (d > 0) - (d < 0)


class _DecayFlipped:
    """Whether the sign of engagement_at(st, t) - y is off s0 at instant t."""

    __slots__ = ("hl", "s0", "st", "y")

    def __init__(self, st: CustomerState, half_life_ms: int, y: float, s0: int) -> None:
        self.st = st
        self.hl = half_life_ms
        self.y = y
        self.s0 = s0

    def __call__(self, t: int) -> bool:
        return _decay_sign(self.st, t, self.hl, self.y) != self.s0


# Step instants looked at ahead when a timer fires (after an event the next step is taken as it
# is: most dues computed after events are superseded by the next event before they fire).
TIMER_LOOKAHEAD: Final = 2


def segment_due(seg: CompiledSegment, ctx: Ctx, scratch: Ctx, entered_at: int | None,
                lookahead: int = 0, probes: dict[int, Ctx] | None = None) -> int | None:
    """Earliest instant after ctx.t at which time alone may change seg's candidate.

    Walks the step instants (window edges, RFM thresholds) ahead in order and stops at the
    first where the expression's value changes, so a bucket leaving a window that cannot flip
    the answer (`purchase_count(365d) >= 1` with several purchases) costs no timer; between
    steps, time-continuous comparisons are solved for their exact crossing instant. `probes`:
    contexts at the instants looked at, shared by the segments of one evaluation (the four
    rfm_segment() cells step to the same instants: their values there are computed once)."""
    t = ctx.t
    expr = seg.exit_when if (entered_at is not None and seg.exit_when is not None) else seg.when
    dwell_at: int | None = None
    if entered_at is not None and seg.dwell and t < entered_at + seg.dwell:
        dwell_at = entered_at + seg.dwell
    plan = expr.due_plan
    parts: DueParts | None = None if plan is None else plan.parts(ctx)
    if parts is None:
        return dwell_at
    steps = parts.step_fns
    if not lookahead:  # every event: no probing ahead
        return _next_at(parts, ctx, scratch, dwell_at)[0]
    current = expr.cond.root.truth(ctx) if steps else None
    here = ctx
    if probes is None:
        probes = {}
    for step in range(lookahead + 1):
        at, final = _next_at(parts, here, scratch, dwell_at)
        if final or step == lookahead or at is None:
            return at
        probe = probes.get(at)
        if probe is None:
            probe = probes[at] = Ctx(ctx.st, at, ctx.r, ctx.cands, ctx.groups_before)
        if expr.cond.root.truth(probe) != current:
            return at
        here = probe
    return here.t  # pragma: no cover - the loop always returns


def _next_at(expr: DueParts, here: Ctx, scratch: Ctx,
             dwell_at: int | None, atoms: bool = True) -> tuple[int | None, bool]:
    """From `here`: the first crossing, else the next step instant of the expression (capped by
    the dwell end and the atoms' exact instants). `final` is False only for a step instant,
    where the value may not change."""
    now = here.t
    if atoms:
        for af in expr.atoms:  # exact: cap everything after them, like a dwell end
            at = af(here)
            if at is not None and (dwell_at is None or at < dwell_at):
                dwell_at = at
    nxt: int | None = None
    for nc in expr.step_fns:
        at = nc(here)
        if at is not None and at > now and (nxt is None or at < nxt):
            nxt = at
    if expr.crossings:
        top = (nxt - 1) if nxt is not None else now + HORIZON_MS
        if dwell_at is not None and dwell_at - 1 < top:
            top = dwell_at - 1
        flip = _first_flip(expr, here, scratch, top)
        if flip is not None:
            return flip, True
    if nxt is None or (dwell_at is not None and nxt >= dwell_at):
        return dwell_at, True
    return nxt, False


def _candidate(seg: CompiledSegment, ctx: Ctx, entered_at: int | None) -> bool:
    if entered_at is not None and seg.exit_when is not None:
        c = not seg.exit_when.cond.root.truth(ctx)
    else:
        c = seg.when.cond.root.truth(ctx)
    if not c and entered_at is not None and ctx.t - entered_at < seg.dwell:
        return True
    return bool(c)


def why(seg: CompiledSegment, ctx: Ctx, was_member: bool) -> dict[str, Any]:
    expr = seg.exit_when if (was_member and seg.exit_when is not None) else seg.when
    out = {term.text: term.fn(ctx) for term in expr.terms}
    for term in expr.terms:
        if term.explain is not None:  # a model's inputs
            out.update(term.explain(ctx))
    return out


def display(seg: CompiledSegment | None, why_: dict[str, Any]) -> dict[str, Any]:
    """A segment's entry in a change record's `details`: display metadata and `why`."""
    if seg is None:
        return {"label": None, "color": None, "icon": None, "actions": {}, "why": why_}
    label, color, icon, actions = seg.shown
    return {"label": label, "color": color, "icon": icon, "actions": dict(actions), "why": why_}


def _detail(seg: CompiledSegment, ctx: Ctx, was_member: bool) -> dict[str, Any]:
    return display(seg, why(seg, ctx, was_member))


def evaluate(rs: RuleSet, st: CustomerState, t: int, dirty: tuple[CompiledSegment, ...],
             cause: Cause | Event, emit: bool = True, lookahead: int = 0
             ) -> SegmentChange | None:
    """Re-evaluate `dirty` (in evaluation order) at instant t; update st; return the change.
    `cause`: the change's cause, or the event it is caused by (its Cause is only built when
    there is a change: most events change nothing)."""
    members = st.members
    cands = st.cands
    ctx = Ctx(st, t, rs.resolution_ms, cands, rs.groups_before)
    entered: list[str] = []
    exited: list[str] = []
    groups_touched: list[str] | None = None
    for seg in dirty:
        sid = seg.id
        entered_at = members.get(sid)
        if entered_at is not None and seg.exit_when is not None:
            c = not seg.exit_when.cond.root.truth(ctx)
        else:
            c = seg.when.cond.root.truth(ctx)
        if not c and entered_at is not None and t - entered_at < seg.dwell:
            c = True
        if c:
            cands.add(sid)
        else:
            cands.discard(sid)
        g = seg.group
        if g is None:
            if c != (entered_at is not None):
                (entered if c else exited).append(sid)
        elif groups_touched is None:
            groups_touched = [g]
        elif g not in groups_touched:
            groups_touched.append(g)
    # group -> {"from", "to"} where a group changed; made only then (most evaluations change
    # nothing)
    moves: dict[str, dict[str, str | None]] | None = None
    if groups_touched:
        for g in groups_touched:
            ids = rs.groups[g]
            first = None  # the member now: the first candidate in file order
            for sid in ids:
                if sid in cands:
                    first = sid
                    break
            before = None
            for sid in ids:
                if sid in members:
                    before = sid
                    break
            if before != first:
                if moves is None:
                    moves = {}
                moves[g] = {"from": before, "to": first}
            for sid in ids:
                if (sid == first) != (sid in members):
                    (entered if sid == first else exited).append(sid)
    st.last_eval = t
    if not entered and not exited:
        _set_dues(st, dirty, ctx, lookahead)
        return None
    details: dict[str, dict[str, Any]] = {}
    if emit:
        for sid in entered:
            details[sid] = _detail(rs.by_id[sid], ctx, False)
        for sid in exited:
            details[sid] = _detail(rs.by_id[sid], ctx, True)
    for sid in exited:
        del members[sid]
    for sid in entered:
        members[sid] = t
    # The candidate formula of a segment whose membership changed switches (when <-> exit_when,
    # dwell protection on/off): recompute it against the new membership; if it flips, the
    # membership may change at the next instant, so look again at t + 1 ms.
    to_due = {seg.id: seg for seg in dirty}
    for sid in (*entered, *exited):
        seg = rs.by_id[sid]
        to_due[sid] = seg
        if seg.exit_when is not None or seg.dwell:
            c = _candidate(seg, ctx, members.get(sid))
            if c != (sid in cands):
                if c:
                    cands.add(sid)
                else:
                    cands.discard(sid)
                st.due[sid] = t + 1
                del to_due[sid]
    _set_dues(st, tuple(to_due.values()), ctx, lookahead)
    if not emit:
        return None
    st.seq += 1
    if not isinstance(cause, Cause):
        cause = event_cause(cause.event_id, cause.type, cause.ts)
    return new_change(st.customer_id, st.seq, t, cause, rs.version, _sorted(entered),
                      _sorted(exited), _sorted(members), {} if moves is None else moves,
                      details)


def _sorted(ids: Iterable[str]) -> tuple[str, ...]:
    """The ids in order, as a tuple; a sort only for two or more (CPython's has a fixed cost)."""
    out = tuple(ids)
    return out if len(out) < 2 else tuple(sorted(out))


def _set_dues(st: CustomerState, segs: tuple[CompiledSegment, ...], ctx: Ctx,
              lookahead: int) -> None:
    """Store the due instant of each of segs (none for a segment time alone cannot change).
    A tuple: compiled, a walk by index (an iterable takes an iterator and a call per item)."""
    due = st.due
    members = st.members
    cands = st.cands
    t = ctx.t
    scratch: Ctx | None = None  # a second context for probing other instants, made on demand
    probes: dict[int, Ctx] | None = None  # timers: contexts at the instants looked at
    for seg in segs:
        sid = seg.id
        if seg.timeless or (
                # a non-member's `when` (its candidate, computed just now) that time alone
                # cannot turn: false and only falling, or true and only rising
                (seg.stays_true if sid in cands else seg.stays_false)
                and sid not in members and (not seg.trend_eng or st.eng_score >= 0.0)):
            if sid in due:  # `in` and `del`: compiled, dict.pop is a method call (~6x)
                del due[sid]
            continue
        if lookahead:
            if scratch is None:
                scratch = Ctx(st, t, ctx.r, ctx.cands, ctx.groups_before)
                probes = {}
            at = segment_due(seg, ctx, scratch, members.get(sid), lookahead, probes)
        else:  # segment_due without probing ahead, inlined: the path of every event
            entered_at = members.get(sid)
            if entered_at is None:
                expr = seg.when
                at = None
            else:
                expr = seg.when if seg.exit_when is None else seg.exit_when
                at = entered_at + seg.dwell if seg.dwell and t < entered_at + seg.dwell else None
            plan = expr.due_plan
            parts: DueParts | None = None if plan is None else plan.parts(ctx)
            if parts is not None:
                for af in parts.atoms:  # exact instants: they cap everything after them
                    a = af(ctx)
                    if a is not None and (at is None or a < at):
                        at = a
                if parts.crossings:
                    if scratch is None:
                        scratch = Ctx(st, t, ctx.r, ctx.cands, ctx.groups_before)
                    at = _next_at(parts, ctx, scratch, at, False)[0]
                else:  # the next step instant, capped by the dwell end
                    for nc in parts.step_fns:
                        nxt = nc(ctx)
                        if nxt is not None and nxt > t and (at is None or nxt < at):
                            at = nxt
        if at is None:
            if sid in due:
                del due[sid]
        else:
            due[sid] = at
