"""A brute-force reference of the segment semantics, written straight from the spec (section 3).

It keeps every applied event of a customer in a plain list, computes each function from that
list by its definition, evaluates *every* segment at *every* candidate instant, and never asks
the engine anything. Candidate instants: each event's application instant, every bucket boundary,
every instant a `days_since_*` or `engagement_score` comparison against a number can flip (from
the rule's constants), RFM recency thresholds, dwell expiries, and t + 1 ms after any change.
It is slow on purpose and only as general as the property tests need (comparisons whose
time-dependent side is a single call against a number literal).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

from model.events import Event
from rules import ast
from rules.model import DAY_MS, RuleFile, SegmentDef

WEB = {"page_view", "product_view", "add_to_cart", "checkout_started", "form_submit", "download",
       "search"}


@dataclass
class RefCustomer:
    events: list[Event] = field(default_factory=list)  # applied (ts <= application instant)
    pending: list[Event] = field(default_factory=list)
    applied_at: dict[str, int] = field(default_factory=dict)  # dedup: event_id -> instant
    members: dict[str, int] = field(default_factory=dict)
    seq: int = 0


@dataclass(frozen=True)
class RefChange:
    customer_id: str
    seq: int
    at: int
    kind: str
    entered: tuple[str, ...]
    exited: tuple[str, ...]


class Reference:
    def __init__(self, rf: RuleFile) -> None:
        self.rf = rf
        self.s = rf.settings
        self.r = rf.settings.resolution_ms
        self.customers: dict[str, RefCustomer] = {}
        self.changes: list[RefChange] = []
        self.clock: int | None = None
        self.order = _order(rf)
        self.day_consts = sorted({c for seg in rf.segments for c in _consts(seg, "days")})
        self.eng_consts = sorted({c for seg in rf.segments for c in _consts(seg, "eng")})

    # ------------------------------------------------------------ driving
    def feed(self, ev: Event) -> str | None:
        """Apply one event in stream order; returns the rejection reason or None."""
        now = ev.ts if self.clock is None else max(self.clock, ev.ts)
        self.advance(now)
        s = self.s
        if ev.ts < now - s.retention_ms:
            return "too_late"
        if ev.ts > now + s.future_tolerance_ms:
            return "too_far_in_future"
        cust = self.customers.get(ev.customer_id)
        if cust is not None:
            horizon = now - s.dedup_horizon_ms
            if cust.applied_at.get(ev.event_id, -math.inf) >= horizon:
                return "duplicate"
        if ev.type == "customer_erased":
            if cust is not None:
                self.changes.append(RefChange(ev.customer_id, cust.seq + 1, now, "erasure", (),
                                              tuple(sorted(cust.members))))
                del self.customers[ev.customer_id]
            return None
        if cust is None:
            cust = self.customers[ev.customer_id] = RefCustomer()
        cust.applied_at[ev.event_id] = now
        if ev.ts > now:
            cust.pending.append(ev)
            return None
        cust.events.append(ev)
        self._eval(ev.customer_id, cust, now, "event")
        return None

    def advance(self, t: int) -> None:
        """Evaluate every customer at every candidate instant up to t (inclusive)."""
        start = self.clock
        if start is not None:
            for cid in sorted(self.customers):
                self._run_time(cid, self.customers[cid], start, t)
        if self.clock is None or t > self.clock:
            self.clock = t

    def _run_time(self, cid: str, cust: RefCustomer, start: int, end: int) -> None:
        heap = [i for i in self._candidates(cust, start) if start < i <= end]
        heapq.heapify(heap)
        seen: set[int] = set()
        while heap:
            t = heapq.heappop(heap)
            if t in seen:
                continue
            seen.add(t)
            promoted = [e for e in cust.pending if e.ts <= t]
            for e in promoted:
                cust.pending.remove(e)
                cust.events.append(e)
            changed = self._eval(cid, cust, t, "time")
            if changed or promoted:
                for i in self._candidates(cust, t):
                    if t < i <= end and i not in seen:
                        heapq.heappush(heap, i)

    def _candidates(self, cust: RefCustomer, start: int) -> list[int]:
        r = self.r
        out: list[int] = []
        if cust.events or cust.pending:
            # every bucket boundary up to the longest window past the newest event
            last = max(e.ts for e in cust.events + cust.pending)
            b = start // r + 1
            top = last // r + self.s.retention_ms // r + 2
            top = min(top, b + 24 * 60)  # plenty for the windows the tests use
            out.extend(k * r for k in range(b, top))
        for e in cust.events:
            for c in self.day_consts + [float(x) for x in self.s.rfm.recency_days]:
                base = e.ts + int(c * DAY_MS)
                out.extend((base - 1, base, base + 1, base + 2))
        for c in self.eng_consts:
            for t0 in (start, *[e.ts for e in cust.events]):
                v = self._engagement(cust, t0)
                if v > 0 and c > 0 and v > c:
                    at = t0 + self.s.engagement.half_life_ms * math.log2(v / c)
                    base = int(at)
                    out.extend((base - 1, base, base + 1, base + 2))
        for sid, entered in cust.members.items():
            seg = self._seg(sid)
            if seg.min_dwell_ms:
                out.append(entered + seg.min_dwell_ms)
        out.extend(e.ts for e in cust.pending)
        out.append(start + 1)
        return out

    # ------------------------------------------------------------ semantics
    def _seg(self, sid: str) -> SegmentDef:
        return next(s for s in self.rf.segments if s.id == sid)

    def _eval(self, cid: str, cust: RefCustomer, t: int, kind: str) -> bool:
        cands: dict[str, bool] = {}
        members_prev = cust.members
        for seg in self.order:
            entered = members_prev.get(seg.id)
            env = _Env(self, cust, t, cands)
            if entered is not None and seg.exit_when is not None:
                c = not _truth(env.ev(seg.exit_when))
            else:
                c = _truth(env.ev(seg.when))
            if entered is not None and not c and t - entered < seg.min_dwell_ms:
                c = True
            cands[seg.id] = c
        new: dict[str, int] = {}
        for seg in self.rf.segments:
            if _member(self.rf, cands, seg.id):
                new[seg.id] = members_prev.get(seg.id, t)
        entered_ids = tuple(sorted(set(new) - set(members_prev)))
        exited_ids = tuple(sorted(set(members_prev) - set(new)))
        cust.members = new
        if entered_ids or exited_ids:
            cust.seq += 1
            self.changes.append(RefChange(cid, cust.seq, t, kind, entered_ids, exited_ids))
            return True
        return False

    def _engagement(self, cust: RefCustomer, t: int) -> float:
        pts = self.s.engagement.points
        hl = self.s.engagement.half_life_ms
        return sum(pts.get(e.type, 0) * 2.0 ** (-(t - e.ts) / hl) for e in cust.events
                   if e.ts <= t and pts.get(e.type))


def _member(rf: RuleFile, cands: dict[str, bool], sid: str) -> bool:
    seg = next(s for s in rf.segments if s.id == sid)
    if not cands.get(sid):
        return False
    if seg.group is None:
        return True
    for other in rf.segments:
        if other.group == seg.group:
            if other.id == sid:
                return True
            if cands.get(other.id):
                return False
    return True


def _truth(v: Any) -> bool:
    return v is True


class _Env:
    def __init__(self, ref: Reference, cust: RefCustomer, t: int, cands: dict[str, bool]) -> None:
        self.ref, self.cust, self.t, self.cands = ref, cust, t, cands

    def counted(self, w: int) -> list[Event]:
        r = self.ref.r
        return [e for e in self.cust.events
                if e.ts <= self.t and (self.t // r) - (e.ts // r) < w // r]

    def between(self, w_lo: int, w_hi: int) -> list[Event]:
        """Events in the window of length w_hi but not in the window of length w_lo."""
        inner = set(map(id, self.counted(w_lo)))
        return [e for e in self.counted(w_hi) if id(e) not in inner]

    def ev(self, node: ast.Expr) -> Any:
        if isinstance(node, ast.Literal):
            return node.value
        if isinstance(node, ast.Unary):
            v = self.ev(node.operand)
            if node.op == "not":
                return not _truth(v)
            return -v if isinstance(v, int | float) and not isinstance(v, bool) else None
        if isinstance(node, ast.In):
            v = self.ev(node.operand)
            if v is None:
                return False
            items = [i.value for i in node.items]
            return (v not in items) if node.negated else (v in items)
        if isinstance(node, ast.Binary):
            if node.op == "and":
                return _truth(self.ev(node.left)) and _truth(self.ev(node.right))
            if node.op == "or":
                return _truth(self.ev(node.left)) or _truth(self.ev(node.right))
            a, b = self.ev(node.left), self.ev(node.right)
            if node.op in ("+", "-", "*", "/"):
                if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b)):
                    return None
                if node.op == "/":
                    return a / b if b else None
                return {"+": a + b, "-": a - b, "*": a * b}[node.op]
            is_null = [isinstance(n, ast.Literal) and n.value is None
                       for n in (node.left, node.right)]
            if node.op in ("==", "!=") and any(is_null):
                other = b if is_null[0] else a
                return (other is None) if node.op == "==" else (other is not None)
            if a is None or b is None:
                return False
            try:
                return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b,
                        ">=": a >= b}[node.op]
            except TypeError:
                return node.op == "!="
        assert isinstance(node, ast.Call)
        return self.call(node)

    def call(self, node: ast.Call) -> Any:
        name = node.name
        args: list[Any] = [
            a.ms if isinstance(a, ast.Duration)
            else tuple(i.value for i in a.items) if isinstance(a, ast.Items)
            else a.value  # type: ignore[union-attr]
            for a in node.args if not isinstance(a, ast.Keyword)]
        kwargs = {a.name: a.value.value  # type: ignore[union-attr]
                  for a in node.args if isinstance(a, ast.Keyword)}
        t = self.t
        evs = self.cust.events
        if name == "in_segment":
            return _member(self.ref.rf, self.cands, args[0])
        if name == "attribute":
            val = None
            for e in sorted((e for e in evs if e.type == "profile_update"),
                            key=lambda e: evs.index(e)):
                if e.attributes and args[0] in e.attributes:
                    val = e.attributes[args[0]]
            return val
        if name == "unsubscribed":
            return any(e.type == "email_unsubscribe" for e in evs)
        if name == "lifetime_amount":
            return sum(e.amount if e.type == "purchase" else -e.amount for e in evs
                       if e.type in ("purchase", "refund"))
        if name == "lifetime_orders":
            return sum(1 for e in evs if e.type == "purchase")
        if name in ("days_since_last_purchase", "days_since_first_purchase", "days_since_last",
                    "days_since_first_seen"):
            pool = {"days_since_last_purchase": [e.ts for e in evs if e.type == "purchase"],
                    "days_since_first_purchase": [e.ts for e in evs if e.type == "purchase"],
                    "days_since_last": [e.ts for e in evs if args and e.type == args[0]],
                    "days_since_first_seen": [e.ts for e in evs]}[name]
            if not pool:
                return None
            ts = max(pool) if "last" in name else min(pool)
            return (t - ts) / DAY_MS
        if name == "engagement_score":
            return self.ref._engagement(self.cust, t)
        if name.startswith("rfm_"):
            return self.rfm(name)
        w = args[-1]
        win = self.counted(w)
        purchases = [e for e in win if e.type == "purchase"]
        refunds = [e for e in win if e.type == "refund"]
        net = sum(e.amount for e in purchases) - sum(e.amount for e in refunds)
        if name == "purchase_amount" and "category" in kwargs:
            return sum(i.quantity * i.price for e in purchases for i in e.items
                       if i.category == kwargs["category"])
        if name == "purchase_amount":
            return net
        if name == "purchase_count":
            return len(purchases)
        if name == "avg_order_value":
            return net / len(purchases) if purchases else None
        if name == "distinct_categories":
            return len({i.category for e in purchases for i in e.items})
        if name == "items_count":
            return sum(i.quantity for e in purchases for i in e.items)
        if name == "refund_amount":
            return sum(e.amount for e in refunds)
        if name == "refund_count":
            return len(refunds)
        if name == "growth_ratio":
            prev = self.between(w, 2 * w)
            p = sum(e.amount if e.type == "purchase" else -e.amount for e in prev
                    if e.type in ("purchase", "refund"))
            return net / p if p else None
        if name == "count" and len(args) == 1:  # count(w): every event
            return len(win)
        if name == "count" and isinstance(args[0], tuple):
            return sum(1 for e in win if e.type in args[0])
        counts = {"count": args[0] if name == "count" else None, "email_opens": "email_open",
                  "email_clicks": "email_click", "emails_sent": "email_sent",
                  "page_views": "page_view"}
        if name in counts:
            return sum(1 for e in win if e.type == counts[name])
        if name in ("open_rate", "click_rate"):
            num = sum(1 for e in win if e.type == ("email_open" if name == "open_rate"
                                                  else "email_click"))
            den = (sum(1 for e in win if e.type == "email_delivered")
                   or sum(1 for e in win if e.type == "email_sent"))
            return num / den if den else None
        if name == "sessions":
            return len({e.session_id for e in win if e.type in WEB and e.session_id})
        raise AssertionError(f"reference does not know {name}")

    def rfm(self, name: str) -> Any:
        s = self.ref.s.rfm
        purchases = [e for e in self.cust.events if e.type == "purchase"]
        if not purchases:
            return None
        days = (self.t - max(e.ts for e in purchases)) / DAY_MS
        r = next((sc for sc, th in zip((5, 4, 3, 2), s.recency_days, strict=True)
                  if days <= th), 1)
        win = self.counted(s.window_ms)
        n = sum(1 for e in win if e.type == "purchase")
        net = sum(e.amount if e.type == "purchase" else -e.amount for e in win
                  if e.type in ("purchase", "refund"))
        f = 1 + sum(1 for th in s.frequency if n >= th)
        m = 1 + sum(1 for th in s.monetary if net >= th)
        return {"rfm_r": r, "rfm_f": f, "rfm_m": m,
                "rfm_segment": s.grid.get((r, f))}[name]


def _consts(seg: SegmentDef, kind: str) -> list[float]:
    out: list[float] = []
    exprs = [seg.when] + ([seg.exit_when] if seg.exit_when is not None else [])
    stack: list[ast.Expr] = list(exprs)
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Binary):
            for side, other in ((n.left, n.right), (n.right, n.left)):
                if isinstance(side, ast.Call) and isinstance(other, ast.Literal) and isinstance(
                        other.value, int | float) and not isinstance(other.value, bool):
                    is_days = side.name.startswith("days_since")
                    is_eng = side.name == "engagement_score"
                    if (kind == "days" and is_days) or (kind == "eng" and is_eng):
                        out.append(float(other.value))
            stack += [n.left, n.right]
        elif isinstance(n, ast.Unary):
            stack.append(n.operand)
    return out


def _order(rf: RuleFile) -> list[SegmentDef]:
    """Dependency order: in_segment(x) needs x and x's earlier group peers first."""
    by_id = {s.id: s for s in rf.segments}
    need: dict[str, set[str]] = {}
    for s in rf.segments:
        req: set[str] = set()
        for e in [s.when] + ([s.exit_when] if s.exit_when is not None else []):
            for c in ast.calls(e):
                if c.name == "in_segment":
                    x: str = c.args[0].value  # type: ignore[union-attr,assignment]
                    req.add(x)
                    g = by_id[x].group
                    if g:
                        for o in rf.segments:
                            if o.id == x:
                                break
                            if o.group == g:
                                req.add(o.id)
        req.discard(s.id)
        need[s.id] = req
    out: list[SegmentDef] = []
    done: set[str] = set()
    while len(out) < len(rf.segments):
        s = next(s for s in rf.segments if s.id not in done and need[s.id] <= done)
        out.append(s)
        done.add(s.id)
    return out
