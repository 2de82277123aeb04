"""Implementations of the rule language's functions over a customer state.

Each function is built once per call site at compile time (`build_term`) into a `Term`:
- `fn(ctx)` gives its value at `ctx.t`;
- `reads`: the event types whose arrival can change it (drives incremental re-evaluation);
- `kind`: "event" (changes only when an event arrives), "step" (also changes at instants that
  `next_change(ctx)` computes exactly: a window sliding past a bucket, an RFM recency threshold),
  or "cont" (changes continuously with time: days_since_*, engagement_score), with `mono` the
  direction it moves as time passes (+1 up, -1 down).
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

from model.state import Bucket, engagement_at
from rules import program
from rules.catalogue import EVENT_TYPES, PREDICTIVE
from rules.context import Ctx
from rules.model import DAY_MS as _DAY_MS
from rules.model import RuleSettings

Value = Any
# Final here: a static of this module when compiled (an imported name is a dict lookup per read)
DAY_MS: Final = _DAY_MS
EMAIL_OPEN, EMAIL_CLICK, EMAIL_SENT, EMAIL_DELIVERED = (
    "email_open", "email_click", "email_sent", "email_delivered")
PURCHASE_TYPES = frozenset({"purchase", "refund"})
WEB_TYPES = frozenset({"page_view", "product_view", "add_to_cart", "checkout_started",
                       "form_submit", "download", "search"})
ALL_TYPES = frozenset(t for t in EVENT_TYPES if t != "customer_erased")
# Pseudo event type: "this event moved the customer's first_seen" (only the first event, or an
# out-of-order earlier one), so days_since_first_seen() is not re-evaluated on every event.
FIRST_SEEN = "@first_seen"


@dataclass(frozen=True, slots=True)
class Term:
    text: str
    fn: Callable[[Ctx], Value]
    reads: frozenset[str]
    kind: str = "event"  # "event" | "step" | "cont"
    next_change: Callable[[Ctx], int | None] | None = None
    mono: int = 0
    segment_ref: str | None = None  # for in_segment
    # days_since_*: the instant counted from (value = (t - anchor) / DAY_MS), None if none
    anchor: Callable[[Ctx], int | None] | None = None
    # a count over a window (an int that only drops as buckets leave it): (buckets in the
    # window, what one bucket adds)
    counter: tuple[int, Callable[[Bucket], int]] | None = None
    # a window aggregate that time alone can only lower (distinct sessions or categories)
    falls: bool = False
    # purchase_amount(w): the net amount over a window of this many buckets (comparisons with a
    # number get an exact next change, `amount_flip`)
    amount: int | None = None
    # "cont" terms: how they move between events ("": lin when mono > 0, else exp; "mono":
    # monotone, shape unknown: the engine bisects)
    form: str = ""
    # (ctx, y) -> an estimate of the instant the value reaches y (the engine then finds the
    # exact millisecond around it), None if unknown
    root: Callable[[Ctx, float], float | None] | None = None
    # ctx -> extra `why` entries (a model's inputs)
    explain: Callable[[Ctx], dict[str, Any]] | None = None
    # engagement_score(): the value is engagement_at(st, t, half_life) (model/state.py), so a
    # comparison with a number is solved from the state's score directly (`decay_flip`)
    decays: bool = False


# ---------------------------------------------------------------- window machinery

_SCAN: Final = 16  # up to this many buckets a window read looks at each (cheaper than skipping)


def _window(ctx: Ctx, nb: int) -> dict[int, Bucket]:
    """The buckets to read for a window of nb buckets at ctx, oldest first, as a dict: every
    window bucket (b > bucket(t) - nb), and maybe older ones, which the reader passes over by
    that test. A state of at most _SCAN buckets is read whole (its own dict: the tests cost less
    than skipping). Of a longer one, the buckets before the window are skipped in C (bisect on
    the keys; they are ascending, model/state.py), not looked at one by one: a 2-day window of a
    customer with a year of hourly buckets reads its last two days only. A dict, so that the
    readers' `for b, bk in _window(..).items()` walks it natively when compiled (any other
    iterable makes an iterator and a tuple per bucket)."""
    buckets = ctx.st.buckets
    if len(buckets) <= _SCAN:
        return buckets
    lo = ctx.bnow - nb
    if next(iter(buckets)) > lo:  # all inside (a long window)
        return buckets
    keys = ctx.cache.get(_KEYS)  # listed once per instant for every window read there
    if keys is None:
        keys = ctx.cache[_KEYS] = list(buckets)
    return dict(islice(buckets.items(), bisect_right(keys, lo), None))


_KEYS: Final = object()  # ctx.cache key: the state's bucket numbers, ascending


def _sums(ctx: Ctx, nb: int) -> tuple[float, int, float, int, int]:
    """(purchase amount, purchase count, refund amount, refund count, items) over nb buckets."""
    hit = ctx.cache.get(nb)  # the only int keys of ctx.cache (an int hashes the fastest)
    if hit is not None:
        return hit
    pa = ra = 0.0
    pc = rc = it = 0
    lo = ctx.bnow - nb
    for b, bk in _window(ctx, nb).items():
        if b > lo and (bk.pc or bk.rc):
            pa += bk.pa
            pc += bk.pc
            ra += bk.ra
            rc += bk.rc
            it += bk.items
    out = (pa, pc, ra, rc, it)
    ctx.cache[nb] = out
    return out


def _net_between(ctx: Ctx, lo: int, hi: int) -> float:
    """Net purchase amount of buckets lo < b <= hi."""
    total = 0.0
    for b, bk in ctx.st.buckets.items():
        if lo < b <= hi and (bk.pc or bk.rc):
            total += bk.pa - bk.ra
    return total


_CACHE_KEYS: dict[tuple[Any, ...], object] = {}


def _cache_key(*what: Any) -> object:
    """The ctx.cache key of a window read (one plain object per distinct read, made when the
    term is built): found by identity, where a tuple made per read hashes and compares its
    items at every lookup."""
    return _CACHE_KEYS.setdefault(what, object())


def _type_count(ctx: Ctx, etype: str, nb: int, key: object) -> int:
    """Events of type etype over nb buckets; `key`: _cache_key("type", etype, nb)."""
    hit = ctx.cache.get(key)
    if hit is not None:
        return hit
    n = 0
    lo = ctx.bnow - nb
    for b, bk in _window(ctx, nb).items():
        if b > lo:
            n += bk.types.get(etype, 0)
    ctx.cache[key] = n
    return n


def _distinct(ctx: Ctx, nb: int, attr: str, key: object) -> int:
    """Distinct `attr` values over nb buckets; `key`: _cache_key("distinct", nb, attr) (read
    by the condition, then by its due, `_falling_atom`: counted once)."""
    hit = ctx.cache.get(key)
    if hit is not None:
        return hit
    seen: set[str] = set()
    cats = attr == "cats"  # else "sessions" (read directly, not by getattr)
    lo = ctx.bnow - nb
    for b, bk in _window(ctx, nb).items():
        if b > lo:
            s = bk.cats if cats else bk.sessions
            if s:
                seen |= s
    n = ctx.cache[key] = len(seen)
    return n


_MISS: Final = object()
_EXIT_KEYS: dict[tuple[tuple[int, ...], Callable[[Bucket], Any]], object] = {}


# ---------------------------------------------------------------- terms as compiled classes
# The values of the terms a condition reads most (rules/program.py `TermValue`): read through
# a method table, not a Python call per read.

class _SumsPart(program.TermValue):
    """One of `_sums`' figures over nb buckets (1: purchase count, 2: refund amount, 3: refund
    count, 4: items)."""

    def __init__(self, nb: int, index: int) -> None:
        self.nb = nb
        self.index = index

    def value(self, ctx: Ctx) -> Value:
        return _sums(ctx, self.nb)[self.index]


class _NetAmount(program.TermValue):
    """purchase_amount(w): purchases minus refunds over nb buckets."""

    def __init__(self, nb: int) -> None:
        self.nb = nb

    def value(self, ctx: Ctx) -> Value:
        s = _sums(ctx, self.nb)
        return s[0] - s[2]


class _TypeCount(program.TermValue):
    """Events of one type over nb buckets."""

    def __init__(self, etype: str, nb: int) -> None:
        self.etype = etype
        self.nb = nb
        self.key = _cache_key("type", etype, nb)

    def value(self, ctx: Ctx) -> Value:
        return _type_count(ctx, self.etype, self.nb, self.key)


class _Distinct(program.TermValue):
    """Distinct categories ("cats") or sessions over nb buckets."""

    def __init__(self, nb: int, attr: str) -> None:
        self.nb = nb
        self.attr = attr
        self.key = _cache_key("distinct", nb, attr)

    def value(self, ctx: Ctx) -> Value:
        return _distinct(ctx, self.nb, self.attr, self.key)


class _LifetimeOrders(program.TermValue):
    def value(self, ctx: Ctx) -> Value:
        return ctx.st.lifetime_orders


class _LifetimeAmount(program.TermValue):
    def value(self, ctx: Ctx) -> Value:
        return ctx.st.lifetime_amount


class _Unsubscribed(program.TermValue):
    def value(self, ctx: Ctx) -> Value:
        return ctx.st.unsubscribed


class _Engagement(program.TermValue):
    def __init__(self, half_life_ms: int) -> None:
        self.half_life_ms = half_life_ms

    def value(self, ctx: Ctx) -> Value:
        return engagement_at(ctx.st, ctx.t, self.half_life_ms)



def _window_exit(edges: tuple[int, ...],
                 has: Callable[[Bucket], Any]) -> Callable[[Ctx], int | None]:
    """Next instant at which a bucket that matters (`has`) slides past one of the window edges."""
    far = max(edges)
    # terms over the same edges and predicate share the result; a plain object hashes fast
    key = _EXIT_KEYS.setdefault((edges, has), object())

    if len(edges) == 1:  # the oldest bucket that matters inside the window leaves it first
        edge = far

        def next_change_one(ctx: Ctx) -> int | None:
            cache = ctx.cache
            hit = cache.get(key, _MISS)
            if hit is not _MISS:
                return hit
            best = None
            lo = ctx.bnow - edge
            for b, bk in _window(ctx, edge).items():
                if b > lo and has(bk):  # oldest first: the first that matters
                    best = (b + edge) * ctx.r
                    break
            cache[key] = best
            return best

        return next_change_one

    def next_change(ctx: Ctx) -> int | None:
        cache = ctx.cache
        hit = cache.get(key, _MISS)
        if hit is not _MISS:
            return hit
        bnow = ctx.bnow
        best: int | None = None
        lo = bnow - far
        for b, bk in _window(ctx, far).items():
            if b > lo and has(bk):
                for e in edges:
                    if b > bnow - e:
                        at = (b + e) * ctx.r
                        if best is None or at < best:
                            best = at
                        break
        cache[key] = best
        return best

    return next_change


# what a part function counts, for the specialised scans of `counter_flip`
_PART_SPEC: dict[Callable[[Bucket], int], tuple[str, str]] = {}


def _pc_of(bk: Bucket) -> int:
    return bk.pc


def _rc_of(bk: Bucket) -> int:
    return bk.rc


def _items_of(bk: Bucket) -> int:
    return bk.items if bk.pc or bk.rc else 0  # what _sums adds


def _total_of(bk: Bucket) -> int:
    return sum(bk.types.values())


_PART_SPEC[_pc_of] = ("attr", "pc")
_PART_SPEC[_rc_of] = ("attr", "rc")


_TYPE_OF: dict[tuple[str, ...], Callable[[Bucket], int]] = {}


def _type_of(etype: str) -> Callable[[Bucket], int]:
    """One function per type, so every count of it over a window shares one scan."""
    fn = _TYPE_OF.get((etype,))
    if fn is None:
        def fn(bk: Bucket) -> int:
            return bk.types.get(etype, 0)
        _TYPE_OF[(etype,)] = fn
        _PART_SPEC[fn] = ("type", etype)
    return fn


def _types_of(types: tuple[str, ...]) -> Callable[[Bucket], int]:
    fn = _TYPE_OF.get(types)
    if fn is None:
        def fn(bk: Bucket) -> int:
            got = bk.types
            n = 0
            for t in types:
                n += got.get(t, 0)
            return n
        _TYPE_OF[types] = fn
    return fn


def _has_purchase_or_refund(bk: Bucket) -> Any:
    return bk.pc or bk.rc


def _has_purchase(bk: Bucket) -> Any:
    return bk.pc


def _has_refund(bk: Bucket) -> Any:
    return bk.rc


def _has_items(bk: Bucket) -> Any:
    return bk.items


def _has_cats(bk: Bucket) -> Any:
    return bk.cats


def _has_sessions(bk: Bucket) -> Any:
    return bk.sessions


_HAS_TYPES: dict[tuple[str, ...], Callable[[Bucket], Any]] = {}


def _has_types(types: Iterable[str]) -> Callable[[Bucket], Any]:
    """One predicate per type tuple, so terms reading the same types share cached results."""
    tt = tuple(types)
    pred = _HAS_TYPES.get(tt)
    if pred is None:
        if len(tt) == 1:
            only = tt[0]
            pred = _HAS_TYPES[tt] = lambda bk: only in bk.types
        else:
            wanted = frozenset(tt)
            pred = _HAS_TYPES[tt] = lambda bk: not wanted.isdisjoint(bk.types)
    return pred


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


# ---------------------------------------------------------------- builders

def build_term(name: str, args: tuple[Any, ...], text: str, settings: RuleSettings,
               kwargs: dict[str, Any] | None = None) -> Term:
    """A Term for call `name(*args, **kwargs)`; window args are in ms, string args are str, a
    list is a tuple."""
    r = settings.resolution_ms
    if name in _WINDOWED:
        nb = args[-1] // r
        if name == "purchase_amount" and kwargs and "category" in kwargs:
            return _category_amount(text, nb, kwargs["category"])
        if name == "count" and len(args) == 1:
            return _count_all(text, nb)
        if name == "count" and type(args[0]) is tuple:
            return _count_types(text, nb, args[0])
        return _WINDOWED[name](text, nb, *args[:-1])
    if name in _SIMPLE:
        return _SIMPLE[name](text, settings, *args)
    if name in PREDICTIVE:
        from rules.predictive import build_predictive  # it compiles k-means features

        return build_predictive(name, args, text, settings, kwargs or {})
    raise KeyError(name)


def _w(text: str, fn: Callable[[Ctx], Value], reads: Iterable[str], edges: tuple[int, ...],
       has: Callable[[Bucket], Any], counter: Callable[[Bucket], int] | None = None) -> Term:
    return Term(text, fn, frozenset(reads), "step", _window_exit(edges, has),
                counter=None if counter is None else (edges[0], counter))


_COUNTER_KEYS: dict[tuple[int, tuple[Callable[[Bucket], int], ...]], object] = {}


def counter_flip(nb: int, parts: tuple[Callable[[Bucket], int], ...],
                 test: Callable[[Any, Any], Any], y: Any,
                 swapped: bool = False) -> Callable[[Ctx], int | None]:
    """For `c <test> y` (`y <test> c` if swapped) where c is a count over a window of nb
    buckets (or a sum of such counts) and y a number: the first instant at which time alone
    changes the comparison, or None. The count only drops, one bucket at a time as the window
    slides past it, so its values ahead are known from the buckets now (ints: exactly the values
    the condition will compute there). An ordered comparison that is the same now and at 0 (the
    end of the fall) is the same all along: no walk (`purchase_count(365d) >= 2` false now)."""
    spec = _PART_SPEC.get(parts[0]) if len(parts) == 1 else None
    etype = spec[1] if spec is not None and spec[0] == "type" else None
    attr = spec[1] if spec is not None and spec[0] == "attr" else None
    ordered = test in (operator.ge, operator.gt, operator.le, operator.lt)
    at_end = bool(test(y, 0) if swapped else test(0, y))
    total_now = _count_now(nb, parts, etype, attr)

    def flip(ctx: Ctx) -> int | None:
        total = total_now.value(ctx)
        if not total:  # nothing in the window: nothing leaves it
            return None
        now = bool(test(y, total) if swapped else test(total, y))
        if ordered and now == at_end:
            return None
        cache = ctx.cache  # a walk is looked up again by the due plan (`_generate_parts`)
        out = cache.get(flip, _MISS)
        if out is not _MISS:
            return out
        out = None
        lo = ctx.bnow - nb
        c: int
        buckets = ctx.st.buckets
        # A low threshold is decided by the newest buckets (`purchase_count(365d) >= 1` flips
        # when the newest bucket with a purchase leaves): walk from them. Removing a bucket
        # and every older one leaves what the newer ones hold (`rest`); the comparison flips
        # once, so the answer is the oldest bucket after which that is no longer `now`.
        newest = ordered and 2 * abs(y) < total
        rest = 0
        for b, bk in (reversed(buckets.items()) if newest
                      else _window(ctx, nb).items()):
            if b <= lo:
                if newest:
                    break
                continue
            if etype is not None:
                c = bk.types.get(etype, 0)
            elif attr is not None:
                c = getattr(bk, attr)
            else:
                c = 0
                for part in parts:
                    c += part(bk)
            if not c:
                continue
            if newest:
                if bool(test(y, rest) if swapped else test(rest, y)) == now:
                    break
                out = (b + nb) * ctx.r
                rest += c
            else:
                total -= c
                if bool(test(y, total) if swapped else test(total, y)) != now:
                    out = (b + nb) * ctx.r
                    break
        cache[flip] = out
        return out
    return flip


def _count_now(nb: int, parts: tuple[Callable[[Bucket], int], ...], etype: str | None,
               attr: str | None) -> program.TermValue:
    """The count `counter_flip` starts from, read through the cache the condition filled when
    there is one (a type's count, purchase or refund count), else summed once per instant for
    every atom over the same count."""
    if etype is not None:
        return _TypeCount(etype, nb)
    if attr == "pc":
        return _SumsPart(nb, 1)
    if attr == "rc":
        return _SumsPart(nb, 3)
    return _PartsCount(nb, parts)


class _PartsCount(program.TermValue):
    """A sum of per-bucket counts over nb buckets, summed once per instant for every atom over
    the same count."""

    def __init__(self, nb: int, parts: tuple[Callable[[Bucket], int], ...]) -> None:
        self.nb = nb
        self.parts = parts
        self.key = _COUNTER_KEYS.setdefault((nb, parts), object())

    def value(self, ctx: Ctx) -> Value:
        cache = ctx.cache
        hit = cache.get(self.key)
        if hit is not None:
            return hit
        n = 0
        lo = ctx.bnow - self.nb
        for b, bk in _window(ctx, self.nb).items():
            if b > lo:
                for part in self.parts:
                    n += part(bk)
        cache[self.key] = n
        return n


def _purchase_amount(text: str, nb: int) -> Term:
    return Term(text, _NetAmount(nb), PURCHASE_TYPES, "step",
                _window_exit((nb,), _has_purchase_or_refund), amount=nb)


_WALK: Final = 3  # exits amount_flip looks through before it settles for a look-again instant


def amount_flip(nb: int, fn: Callable[[Ctx], Value], test: Callable[[Any, Any], Any], y: Any,
                swapped: bool = False) -> Callable[[Ctx], int | None]:
    """For `a <test> y` (`y <test> a` if swapped) where a = purchase_amount over nb buckets
    (`fn`) and y a number: the first instant at which time alone changes the comparison (or an
    earlier one to look again), or None.

    The amount changes only as buckets with purchases or refunds leave the window, at instants
    known now; walking them oldest first, the amount there is the running total minus what has
    left. Float sums in another order can differ in the last bits, so wherever the running
    figure is within rounding of y, the amount at that instant is computed as the condition will
    compute it (`fn` at that instant): the answer is exact. A flip further than `_WALK` exits
    away is not looked for: the exit after them is returned, an instant to look again (a due
    instant may be early, never late), so a big spender's every purchase does not walk all of
    their year. Amounts are >= 0 (parse_event refuses others), so without a refund in the
    window the amount only falls as time passes: a threshold false now (`a >= y` below it)
    stays false until the next event, no timer."""
    return _AmountFlip(nb, fn, test, y, swapped)


class _AmountFlip:
    """`amount_flip`'s function: a class, not a closure (compiled, its fields are native: the
    amounts are compared as C doubles, not boxed floats through `operator.ge`)."""

    def __init__(self, nb: int, fn: Callable[[Ctx], Value], test: Callable[[Any, Any], Any],
                 y: Any, swapped: bool) -> None:
        self.nb = nb
        self.fn = fn
        self.test = test
        self.code = program.PYOPS.index(test)
        self.y = y
        try:
            self.yf = float(y)
        except OverflowError:  # an int literal beyond the floats: every amount is below it
            self.yf = math.inf if y > 0 else -math.inf
        # a float compares with y as with its float: every float, an int up to 2**53
        self.exact = type(y) is float or -(1 << 53) <= y <= 1 << 53
        self.swapped = swapped
        self.ordered = self.code not in (program.EQ, program.NE)
        self.at_end = bool(test(y, 0.0) if swapped else test(0.0, y))  # once all has left
        self.slack_y = abs(self.yf)

    def holds(self, v: float) -> bool:
        """The comparison with the amount v."""
        if self.exact:
            if self.swapped:
                return program.compare_floats(self.yf, v, self.code)
            return program.compare_floats(v, self.yf, self.code)
        return self.holds_any(v)

    def holds_any(self, v: Any) -> bool:
        return bool(self.test(self.y, v) if self.swapped else self.test(v, self.y))

    def __call__(self, ctx: Ctx) -> int | None:
        nb = self.nb
        s = _sums(ctx, nb)  # what fn(ctx) reads (cached for this instant)
        pa: float = s[0]
        ra: float = s[2]
        now = self.holds(pa - ra)
        if not (s[1] or s[3]) or (self.ordered and now == self.at_end and not ra):
            # nothing in the window; or no refund: a sum of fewer non-negative terms is never
            # larger, in floats too, so the amount goes down to 0 monotonically, and a
            # threshold true (false) at both ends of the way stays so all along
            return None
        cache = ctx.cache  # a walk is looked up again by the due plan (rules/program.py)
        out = cache.get(self, _MISS)
        if out is _MISS:
            out = cache[self] = self.walk(ctx, now, pa, ra, _window(ctx, nb).items())
        return out

    def walk(self, ctx: Ctx, now: bool, pa: float, ra: float,
             buckets: Iterable[tuple[int, Bucket]]) -> int | None:
        """The first exit (`buckets` oldest first; those before the window are passed over)
        after which the comparison is not `now`."""
        nb = self.nb
        lo = ctx.bnow - nb
        slack = 1e-9 * (pa + ra + self.slack_y) + 1e-9  # far above the rounding of these sums
        r = ctx.r
        probe: Ctx | None = None
        steps = 0
        for b, bk in buckets:
            if b > lo and (bk.pc or bk.rc):
                if steps == _WALK:  # far enough: look again when this bucket leaves
                    return (b + nb) * r
                steps += 1
                pa -= bk.pa
                ra -= bk.ra
                v = pa - ra
                if -slack <= v - self.yf <= slack:  # too close to call from the running figure
                    at = (b + nb) * r
                    if probe is None:
                        probe = Ctx(ctx.st, at, r, ctx.cands, ctx.groups_before)
                    else:
                        probe.at(at)
                    # the amount as the condition computes it
                    flipped = self.holds_any(self.fn(probe)) != now
                else:
                    flipped = self.holds(v) != now
                if flipped:
                    return (b + nb) * r
        return None


def _purchase_count(text: str, nb: int) -> Term:
    return _w(text, _SumsPart(nb, 1), PURCHASE_TYPES, (nb,), _has_purchase,
              _pc_of)


def _avg_order_value(text: str, nb: int) -> Term:
    def fn(ctx: Ctx) -> Value:
        s = _sums(ctx, nb)
        return _ratio(s[0] - s[2], s[1])
    return _w(text, fn, PURCHASE_TYPES, (nb,), _has_purchase_or_refund)


def _items_count(text: str, nb: int) -> Term:
    return _w(text, _SumsPart(nb, 4), PURCHASE_TYPES, (nb,), _has_items,
              _items_of)


def _refund_amount(text: str, nb: int) -> Term:
    return _w(text, _SumsPart(nb, 2), PURCHASE_TYPES, (nb,), _has_refund)


def _refund_count(text: str, nb: int) -> Term:
    return _w(text, _SumsPart(nb, 3), PURCHASE_TYPES, (nb,), _has_refund,
              _rc_of)


def _distinct_categories(text: str, nb: int) -> Term:
    return _falls(_w(text, _Distinct(nb, "cats"), PURCHASE_TYPES, (nb,),
                     _has_cats))


def _sessions(text: str, nb: int) -> Term:
    return _falls(_w(text, _Distinct(nb, "sessions"), WEB_TYPES, (nb,),
                     _has_sessions))


def _falls(t: Term) -> Term:
    return Term(t.text, t.fn, t.reads, t.kind, t.next_change, t.mono, t.segment_ref, t.anchor,
                t.counter, True)


def _growth_ratio(text: str, nb: int) -> Term:
    def fn(ctx: Ctx) -> Value:
        bnow = ctx.bnow
        prev = _net_between(ctx, bnow - 2 * nb, bnow - nb)
        if not prev:
            return None
        return _net_between(ctx, bnow - nb, bnow) / prev
    return _w(text, fn, PURCHASE_TYPES, (nb, 2 * nb), _has_purchase_or_refund)


def _count_of(etype: str) -> Callable[[str, int], Term]:
    def build(text: str, nb: int) -> Term:
        return _w(text, _TypeCount(etype, nb), (etype,), (nb,),
                  _has_types((etype,)), _type_of(etype))
    return build


def _count(text: str, nb: int, etype: str) -> Term:
    return _count_of(etype)(text, nb)


def _total_count(ctx: Ctx, nb: int, key: object) -> int:
    """Events of any type over nb buckets; `key`: _cache_key("total", nb)."""
    hit = ctx.cache.get(key)
    if hit is not None:
        return hit
    n = 0
    lo = ctx.bnow - nb
    for b, bk in _window(ctx, nb).items():
        if b > lo:
            n += sum(bk.types.values())
    ctx.cache[key] = n
    return n


def _has_events(bk: Bucket) -> Any:
    return bk.types


def _count_all(text: str, nb: int) -> Term:
    """count(w): events of every type in the window."""
    key = _cache_key("total", nb)
    return _w(text, lambda ctx: _total_count(ctx, nb, key), ALL_TYPES, (nb,), _has_events,
              _total_of)


def _count_types(text: str, nb: int, etypes: tuple[str, ...]) -> Term:
    """count(["a", "b"], w): events of any of the listed types."""
    types = tuple(dict.fromkeys(etypes))
    counts = tuple(_TypeCount(t, nb) for t in types)

    def fn(ctx: Ctx) -> Value:
        n = 0
        for c in counts:
            n += c.value(ctx)
        return n
    return _w(text, fn, types, (nb,), _has_types(types), _types_of(types))


def _category_amount(text: str, nb: int, category: str) -> Term:
    """purchase_amount(w, category="c"): quantity x price of the items of category c bought in
    the window (refunds carry no items: they are not subtracted)."""
    def fn(ctx: Ctx) -> Value:
        total = 0.0
        lo = ctx.bnow - nb
        for b, bk in _window(ctx, nb).items():
            if b > lo:
                spent = bk.camt
                if spent:
                    total += spent.get(category, 0.0)
        return total
    return _w(text, fn, ("purchase",), (nb,), _has_category(category))


_HAS_CATEGORY: dict[str, Callable[[Bucket], Any]] = {}


def _has_category(category: str) -> Callable[[Bucket], Any]:
    """One predicate per category, so terms over the same category share cached instants."""
    pred = _HAS_CATEGORY.get(category)
    if pred is None:
        def pred(bk: Bucket) -> Any:
            spent = bk.camt
            return spent and category in spent
        _HAS_CATEGORY[category] = pred
    return pred


def _rate(num_type: str) -> Callable[[str, int], Term]:
    def build(text: str, nb: int) -> Term:
        num = _TypeCount(num_type, nb)
        delivered = _TypeCount(EMAIL_DELIVERED, nb)
        sent = _TypeCount(EMAIL_SENT, nb)

        def fn(ctx: Ctx) -> Value:
            return _ratio(num.value(ctx), delivered.value(ctx) or sent.value(ctx))
        types = (num_type, EMAIL_DELIVERED, EMAIL_SENT)
        return _w(text, fn, types, (nb,), _has_types(types))
    return build


_WINDOWED: dict[str, Callable[..., Term]] = {
    "purchase_amount": _purchase_amount,
    "purchase_count": _purchase_count,
    "avg_order_value": _avg_order_value,
    "distinct_categories": _distinct_categories,
    "items_count": _items_count,
    "refund_amount": _refund_amount,
    "refund_count": _refund_count,
    "growth_ratio": _growth_ratio,
    "count": _count,
    "email_opens": _count_of(EMAIL_OPEN),
    "email_clicks": _count_of(EMAIL_CLICK),
    "emails_sent": _count_of(EMAIL_SENT),
    "page_views": _count_of("page_view"),
    "open_rate": _rate(EMAIL_OPEN),
    "click_rate": _rate(EMAIL_CLICK),
    "sessions": _sessions,
}


def _days_since(text: str, pick: Callable[[Ctx], int | None], reads: Iterable[str]) -> Term:
    def fn(ctx: Ctx) -> Value:
        ts = pick(ctx)
        return None if ts is None else (ctx.t - ts) / DAY_MS
    return Term(text, fn, frozenset(reads), "cont", mono=1, anchor=pick)


def _days_last(etype: str) -> Callable[[Ctx], int | None]:
    return lambda ctx: ctx.st.last_ts.get(etype)


def _days_first(etype: str) -> Callable[[Ctx], int | None]:
    return lambda ctx: ctx.st.first_ts.get(etype)


def _simple_event(text: str, fn: Callable[[Ctx], Value], reads: Iterable[str]) -> Term:
    return Term(text, fn, frozenset(reads))


def _engagement(text: str, settings: RuleSettings) -> Term:
    hl = settings.engagement.half_life_ms
    reads = [t for t, p in settings.engagement.points.items() if p]
    return Term(text, _Engagement(hl), frozenset(reads), "cont",
                mono=-1, decays=True)


def _first_instant_after(last: int, days: float) -> int:
    """Smallest integer instant t with (t - last) / DAY_MS > days."""
    t = last + int(days * DAY_MS)
    while (t - last) / DAY_MS > days:
        t -= 1
    while (t - last) / DAY_MS <= days:
        t += 1
    return t


_RfmParts = tuple[Callable[[Ctx], Value], Callable[[Ctx], Value], Callable[[Ctx], Value],
                  Callable[[Ctx], int | None]]
_RFM_PARTS: dict[int, tuple[RuleSettings, _RfmParts]] = {}


def _rfm_parts(settings: RuleSettings) -> _RfmParts:
    """One set per settings object, so every rfm_*() call of a rule file shares the cached
    values and next-change instants of one evaluation."""
    hit = _RFM_PARTS.get(id(settings))
    if hit is not None and hit[0] is settings:
        return hit[1]
    if len(_RFM_PARTS) > 64:
        _RFM_PARTS.clear()
    parts = _make_rfm_parts(settings)
    _RFM_PARTS[id(settings)] = (settings, parts)
    return parts


def _make_rfm_parts(settings: RuleSettings) -> _RfmParts:
    rfm = settings.rfm
    nb = rfm.window_ms // settings.resolution_ms
    rec, freq, mon = rfm.recency_days, rfm.frequency, rfm.monetary

    # (plain loops: compiled, `zip(..., strict=True)` and `sum(<generator>)` are Python calls
    # of builtins with an iterator or a generator object each, ~5k instructions a score)
    if len(rec) != 4:
        raise ValueError(f"rfm.recency_days needs 4 thresholds, got {len(rec)}")

    def r_score(ctx: Ctx) -> Value:
        last = ctx.st.last_ts.get("purchase")
        if last is None:
            return None
        days = (ctx.t - last) / DAY_MS
        score = 5
        for th in rec:  # ascending: the first threshold the recency is within
            if days <= th:
                return score
            score -= 1
        return 1

    def f_score(ctx: Ctx) -> Value:
        if "purchase" not in ctx.st.last_ts:
            return None
        n = _sums(ctx, nb)[1]
        score = 1
        for th in freq:
            if n >= th:
                score += 1
        return score

    def m_score(ctx: Ctx) -> Value:
        if "purchase" not in ctx.st.last_ts:
            return None
        s = _sums(ctx, nb)
        amount = s[0] - s[2]
        score = 1
        for th in mon:
            if amount >= th:
                score += 1
        return score

    window_exit = _window_exit((nb,), _has_purchase_or_refund)

    instants: dict[int, tuple[int, ...]] = {}  # last purchase -> recency threshold instants

    def r_next(ctx: Ctx) -> int | None:
        last = ctx.st.last_ts.get("purchase")
        if last is None:
            return None
        ats = instants.get(last)
        if ats is None:
            if len(instants) > 8192:
                instants.clear()
            ats = instants[last] = tuple(_first_instant_after(last, th) for th in rec)
        t = ctx.t
        for at in ats:
            if at > t:
                return at
        return None

    key = object()

    def next_change(ctx: Ctx) -> int | None:
        cache = ctx.cache
        hit = cache.get(key, _MISS)
        if hit is not _MISS:
            return hit
        a, b = r_next(ctx), window_exit(ctx)
        out = b if a is None else (a if b is None or a < b else b)
        cache[key] = out
        return out

    return r_score, f_score, m_score, next_change


_RFM_SEGMENT: dict[int, tuple[RuleSettings, Callable[[Ctx], Value]]] = {}


def _rfm_segment_fn(settings: RuleSettings, r_score: Callable[[Ctx], Value],
                    f_score: Callable[[Ctx], Value]) -> Callable[[Ctx], Value]:
    """rfm_segment(), one function per settings (its value is cached per evaluation)."""
    hit = _RFM_SEGMENT.get(id(settings))
    if hit is not None and hit[0] is settings:
        return hit[1]
    grid = settings.rfm.grid

    def segment(ctx: Ctx) -> Value:
        cache = ctx.cache
        out = cache.get(segment, _MISS)
        if out is _MISS:
            r = r_score(ctx)
            out = cache[segment] = None if r is None else grid.get((r, f_score(ctx)))
        return out

    if len(_RFM_SEGMENT) > 64:
        _RFM_SEGMENT.clear()
    _RFM_SEGMENT[id(settings)] = (settings, segment)
    return segment


def _rfm(which: str) -> Callable[[str, RuleSettings], Term]:
    def build(text: str, settings: RuleSettings) -> Term:
        r_score, f_score, m_score, next_change = _rfm_parts(settings)
        fns: dict[str, Callable[[Ctx], Value]] = {"r": r_score, "f": f_score, "m": m_score}

        fn = _rfm_segment_fn(settings, r_score, f_score) if which == "segment" else fns[which]
        return Term(text, fn, PURCHASE_TYPES, "step", next_change)
    return build


def _in_segment(text: str, settings: RuleSettings, seg: str) -> Term:
    return Term(text, lambda ctx: ctx.member(seg), frozenset(), segment_ref=seg)


def _attribute(text: str, settings: RuleSettings, name: str) -> Term:
    return _simple_event(text, lambda ctx: ctx.st.attributes.get(name), ("profile_update",))


_lifetime_amount_of: Final = _LifetimeAmount()
_lifetime_orders_of: Final = _LifetimeOrders()
_unsubscribed_of: Final = _Unsubscribed()


def _first_seen_of(ctx: Ctx) -> int | None:
    return ctx.st.first_seen


# (named functions, not nested lambdas: mypyc compiles this module, see model/native.py)
def _lifetime_amount(text: str, s: RuleSettings) -> Term:
    return _simple_event(text, _lifetime_amount_of, PURCHASE_TYPES)


def _lifetime_orders(text: str, s: RuleSettings) -> Term:
    return _simple_event(text, _lifetime_orders_of, PURCHASE_TYPES)


def _unsubscribed(text: str, s: RuleSettings) -> Term:
    return _simple_event(text, _unsubscribed_of, ("email_unsubscribe",))


def _days_since_last_purchase(text: str, s: RuleSettings) -> Term:
    return _days_since(text, _days_last("purchase"), ("purchase",))


def _days_since_first_purchase(text: str, s: RuleSettings) -> Term:
    return _days_since(text, _days_first("purchase"), ("purchase",))


def _days_since_last_of(text: str, s: RuleSettings, etype: str) -> Term:
    return _days_since(text, _days_last(etype), (etype,))


def _days_since_first_seen(text: str, s: RuleSettings) -> Term:
    return _days_since(text, _first_seen_of, (FIRST_SEEN,))


_SIMPLE: dict[str, Callable[..., Term]] = {
    "lifetime_amount": _lifetime_amount,
    "lifetime_orders": _lifetime_orders,
    "unsubscribed": _unsubscribed,
    "days_since_last_purchase": _days_since_last_purchase,
    "days_since_first_purchase": _days_since_first_purchase,
    "days_since_last": _days_since_last_of,
    "days_since_first_seen": _days_since_first_seen,
    "engagement_score": _engagement,
    "rfm_r": _rfm("r"),
    "rfm_f": _rfm("f"),
    "rfm_m": _rfm("m"),
    "rfm_segment": _rfm("segment"),
    "attribute": _attribute,
    "in_segment": _in_segment,
}

KNOWN = frozenset(_WINDOWED) | frozenset(_SIMPLE) | frozenset(PREDICTIVE)
