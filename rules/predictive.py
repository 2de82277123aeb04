"""The rule functions that evaluate a model of `settings.models` (docs/models.md):

- `p_alive()`, `expected_purchases(h)`, `clv(h)`: BG/NBD (and Gamma-Gamma) on the customer's
  purchase occasions (model/state.py): x repeat transactions (distinct purchase days or orders,
  as the model was fitted), t_x the last one and T now, both from the first purchase, in the
  model's time unit. Null for a customer who never purchased. Between events they only fall as
  T grows ("cont" terms, monotone): a threshold on them flips at one instant, which the engine
  finds to the millisecond, starting from the closed form (p_alive_age_at) or the bisection
  (expected_purchases_age_at) of rules/models/bgnbd.py.
- `cluster()`: the label of the nearest k-means centroid to the customer's standardised
  features (rule expressions compiled here with the rule file's settings); null when a feature
  is null. A "step" term: its next change is the next window step of a feature or, when a
  feature moves with time (days_since_*, engagement_score), the first millisecond at which
  the nearest centroid changes, found by interval branch and bound: over a span without step
  changes each feature lies between its values at the ends, the standardised point in a box,
  and the difference of two squared distances is linear in the point, so its bounds over the
  box are exact; a span where every other centroid stays farther cannot hold a change.

Every term adds its model's inputs to `why` (`"<term> inputs": {...}`).
"""

from __future__ import annotations

import math
from typing import Any

from rules.catalogue import PREDICTIVE
from rules.compiler import NumberExpr, compile_number
from rules.context import Ctx
from rules.functions import Term
from rules.model import RuleSettings
from rules.models.bgnbd import (
    expected_order_value,
    expected_purchases,
    expected_purchases_age_at,
    p_alive,
    p_alive_age_at,
)
from rules.models.file import BgNbdModel, KMeansModel, pick_model
from rules.models.kmeans import nearest_centroid, squared_distances, standardise
from rules.parser import parse_expression

HORIZON_MS = 100 * 365 * 86_400_000  # how far ahead a change of cluster is looked for
_PURCHASE = frozenset({"purchase"})  # refunds do not change purchase occasions
_MISS = object()

Inputs = tuple[float, float, float, float, int]  # x, t_x, T, mean repeat value, first purchase


def build_predictive(name: str, args: tuple[Any, ...], text: str, settings: RuleSettings,
                     kwargs: dict[str, Any]) -> Term:
    picked = pick_model(settings.models, PREDICTIVE[name], kwargs.get("model"), name)
    if isinstance(picked, str):  # the loader reports these with a position
        raise ValueError(picked)
    model_name, model = picked
    if isinstance(model, KMeansModel):
        return _cluster(text, settings, model_name, model)
    assert isinstance(model, BgNbdModel)
    horizon = args[0] / model.unit_ms if args else 0.0
    return _bgnbd(name, text, model_name, model, horizon)


# ---------------------------------------------------------------------------- BG/NBD

def inputs_at(model: BgNbdModel, ctx: Ctx) -> Inputs | None:
    """(x, t_x, T, mean repeat transaction value, first purchase instant) of the customer at
    ctx.t, counted as the model counts repeat purchases; None before any purchase."""
    st = ctx.st
    first = st.first_ts.get("purchase")
    if first is None or st.pday_ts is None:
        return None
    unit = model.unit_ms
    if model.repeat == "days":
        x = st.pdays - 1
        last = st.pday_ts
        first_value = st.first_day_amount
    else:
        x = st.lifetime_orders - 1
        last = st.last_ts["purchase"]
        first_value = st.first_amount
    mean = (st.gross - first_value) / x if x > 0 else 0.0
    return float(x), (last - first) / unit, (ctx.t - first) / unit, mean, first


def _bgnbd(name: str, text: str, model_name: str, model: BgNbdModel, horizon: float) -> Term:
    params, spend, unit = model.params, model.spend, model.unit_ms

    if name == "p_alive":
        def fn(ctx: Ctx) -> Any:
            i = inputs_at(model, ctx)
            return None if i is None else p_alive(params, i[0], i[1], i[2])

        def age(i: Inputs, y: float) -> float | None:
            return p_alive_age_at(params, y, i[0], i[1])
    elif name == "expected_purchases":
        def fn(ctx: Ctx) -> Any:
            i = inputs_at(model, ctx)
            return None if i is None else expected_purchases(params, horizon, i[0], i[1], i[2])

        def age(i: Inputs, y: float) -> float | None:
            return expected_purchases_age_at(params, y, horizon, i[0], i[1], i[2], 1e-7)
    else:  # clv
        assert spend is not None  # the loader requires Gamma-Gamma for clv()

        def fn(ctx: Ctx) -> Any:
            i = inputs_at(model, ctx)
            if i is None:
                return None
            return (expected_purchases(params, horizon, i[0], i[1], i[2])
                    * expected_order_value(spend, i[0], i[3]))

        def age(i: Inputs, y: float) -> float | None:
            value = expected_order_value(spend, i[0], i[3])
            if value <= 0:
                return None
            return expected_purchases_age_at(params, y / value, horizon, i[0], i[1], i[2],
                                             1e-7)

    def root(ctx: Ctx, y: float) -> float | None:
        i = inputs_at(model, ctx)
        if i is None:
            return None
        T = age(i, y)
        if T is None or not math.isfinite(T):
            return None
        at = i[4] + T * unit
        return at if math.isfinite(at) and abs(at) < 1e17 else None

    def explain(ctx: Ctx) -> dict[str, Any]:
        i = inputs_at(model, ctx)
        if i is None:
            return {}
        shown: dict[str, Any] = {"model": model_name, "x": i[0], "t_x": i[1], "T": i[2],
                                 "time_unit": model.time_unit, "repeat": model.repeat}
        if name == "clv" and spend is not None:
            shown["mean_value"] = i[3]
            shown["expected_purchases"] = expected_purchases(params, horizon, i[0], i[1], i[2])
            shown["expected_order_value"] = expected_order_value(spend, i[0], i[3])
        elif name == "expected_purchases":
            shown["horizon"] = horizon
        return {f"{text} inputs": shown}

    return Term(text, fn, _PURCHASE, "cont", mono=-1, form="mono", root=root, explain=explain)


# ---------------------------------------------------------------------------- k-means

def _cluster(text: str, settings: RuleSettings, model_name: str, model: KMeansModel) -> Term:
    features: list[NumberExpr] = []
    for i, feature in enumerate(model.features):
        expr = parse_expression(feature, file=f"model {model_name} feature {i + 1}", line=1,
                                column=1)
        features.append(compile_number(expr, feature, settings))
    terms = [t for f in features for t in f.terms]
    reads = frozenset().union(*(t.reads for t in terms))
    steps = tuple(dict.fromkeys(t.next_change for t in terms if t.next_change is not None))
    moving = any(t.kind == "cont" for t in terms)
    mean, scale, centroids = model.mean, model.scale, model.centroids
    fns = [f.fn for f in features]
    bounds = [f.bounds for f in features]
    key = object()

    def values(ctx: Ctx) -> list[float] | None:
        out: list[float] = []
        for f in fns:
            v = f(ctx)
            if type(v) not in (int, float) or not math.isfinite(v):
                return None
            out.append(float(v))
        return out

    def index(ctx: Ctx) -> int | None:
        hit = ctx.cache.get(key, _MISS)
        if hit is not _MISS:
            return hit
        v = values(ctx)
        out = None if v is None else nearest_centroid(standardise(v, mean, scale), centroids)
        ctx.cache[key] = out
        return out

    def fn(ctx: Ctx) -> Any:
        i = index(ctx)
        return None if i is None else model.label(i)

    def settled(i: int, ca: Ctx, cb: Ctx) -> bool:
        """Over [ca.t, cb.t] (no step change inside), centroid i stays the nearest."""
        box: list[tuple[float, float]] = []
        for b, m, s in zip(bounds, mean, scale, strict=True):
            iv = None if b is None else b(ca, cb)
            if iv is None or not (math.isfinite(iv[0]) and math.isfinite(iv[1])):
                return False
            s = s or 1.0
            box.append(((iv[0] - m) / s, (iv[1] - m) / s))
        ci = centroids[i]
        for j, cj in enumerate(centroids):
            if j == i:
                continue
            # |z - cj|^2 - |z - ci|^2 = sum_k -2 z_k (cj_k - ci_k) + cj_k^2 - ci_k^2
            low = 0.0
            size = 0.0
            for (zlo, zhi), a, c in zip(box, ci, cj, strict=True):
                w = -2.0 * (c - a)
                low += (w * zlo if w > 0 else w * zhi) + c * c - a * a
                size += abs(w) * max(abs(zlo), abs(zhi)) + c * c + a * a
            # a tie goes to the lower index: j < i needs a strictly positive margin
            if low <= 1e-9 * max(1.0, size):
                return False
        return True

    def search(i: int, lo: int, hi: int, ca: Ctx, cb: Ctx, probe: Ctx) -> int | None:
        if settled(i, ca.at(lo), cb.at(hi)):
            return None
        if hi - lo < 16:
            for t in range(lo, hi + 1):
                if index(probe.at(t)) != i:
                    return t
            return None
        mid = (lo + hi) // 2
        first = search(i, lo, mid, ca, cb, probe)
        return first if first is not None else search(i, mid + 1, hi, ca, cb, probe)

    def next_change(ctx: Ctx) -> int | None:
        hit = ctx.cache.get(next_change, _MISS)
        if hit is not _MISS:
            return hit
        now = ctx.t
        nxt: int | None = None
        for nc in steps:
            at = nc(ctx)
            if at is not None and at > now and (nxt is None or at < nxt):
                nxt = at
        out = nxt
        if moving:
            i = index(ctx)
            if i is not None:
                top = nxt - 1 if nxt is not None else now + HORIZON_MS
                if top > now:
                    scratch = [Ctx(ctx.st, now, ctx.r, ctx.cands, ctx.groups_before)
                               for _ in range(3)]
                    flip = search(i, now + 1, top, *scratch)
                    if flip is not None:
                        out = flip
        ctx.cache[next_change] = out
        return out

    def explain(ctx: Ctx) -> dict[str, Any]:
        v = values(ctx)
        if v is None:
            return {f"{text} inputs": {"model": model_name,
                                       "features": {f: f_(ctx) for f, f_ in
                                                    zip(model.features, fns, strict=True)}}}
        d = squared_distances(standardise(v, mean, scale), centroids)
        return {f"{text} inputs": {
            "model": model_name,
            "features": dict(zip(model.features, v, strict=True)),
            "distances": {model.label(j): math.sqrt(x) for j, x in enumerate(d)}}}

    return Term(text, fn, reads, "step", next_change, explain=explain)

