"""BG/NBD (Fader, Hardie & Lee 2005) and Gamma-Gamma (Fader, Hardie & Lee 2005b) evaluated with
plain math: no numpy, no scipy, so the rule engine can call them on its hot path.

Times are in the model's time unit (a day or a week: `BgNbd.time_unit`): `x` is the number of
repeat purchases, `t_x` the time of the last purchase and `T` the customer's age, both measured
from the first purchase. The formulas and their equation numbers are the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    p: float
    q: float
    v: float


def p_alive(m: BgNbdParams, x: float, t_x: float, T: float) -> float:
    """P(alive | x, t_x, T) (FHL 2005, eq. 11 / appendix): 1 for x = 0, else
    1 / (1 + a/(b+x-1) · ((α+T)/(α+t_x))^(r+x))."""
    if x <= 0:
        return 1.0
    log_ratio = (m.r + x) * (math.log(m.alpha + T) - math.log(m.alpha + t_x))
    log_term = math.log(m.a / (m.b + x - 1.0)) + log_ratio
    if log_term > 700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(log_term))


def p_alive_age_at(m: BgNbdParams, threshold: float, x: float, t_x: float) -> float | None:
    """The age T at which P(alive | x, t_x, T) equals `threshold` (0 < threshold < 1).

    P(alive) decreases monotonically in T (the customer's age, i.e. time passing without a
    purchase), so that age is unique: with K = (1/p − 1)·(b+x−1)/a,
    T = (α+t_x)·K^(1/(r+x)) − α. It may lie before t_x (the customer is already below the
    threshold right after the last purchase). None for x = 0 (P(alive) stays 1) and for a
    threshold ≥ 1 (never reached) or ≤ 0 (reached only at infinity)."""
    if x <= 0 or not 0.0 < threshold < 1.0:
        return None
    k = (1.0 / threshold - 1.0) * (m.b + x - 1.0) / m.a
    return (m.alpha + t_x) * math.exp(math.log(k) / (m.r + x)) - m.alpha


def hyp2f1(a: float, b: float, c: float, z: float) -> float:
    """Gauss's hypergeometric function 2F1(a, b; c; z) for 0 ≤ z < 1, by its power series
    (terms until they no longer change the sum)."""
    if not 0.0 <= z < 1.0:
        raise ValueError(f"hyp2f1 needs 0 <= z < 1, got {z}")
    total = term = 1.0
    n = 0
    while True:
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z
        total += term
        n += 1
        if abs(term) <= 1e-16 * abs(total) or n > 5_000_000:
            return total


def expected_purchases(m: BgNbdParams, t: float, x: float, t_x: float, T: float) -> float:
    """E[Y(t) | x, t_x, T]: the expected number of purchases in the next `t` (FHL 2005, eq. 10):

        (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x−1; t/(α+T+t))]
        / [1 + δ(x>0) · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x)]
    """
    if t <= 0:
        return 0.0
    r, alpha, a, b = m.r, m.alpha, m.a, m.b
    z = t / (alpha + T + t)
    head = (a + b + x - 1.0) / (a - 1.0)
    power = math.exp((r + x) * (math.log(alpha + T) - math.log(alpha + T + t)))
    body = 1.0 - power * hyp2f1(r + x, b + x, a + b + x - 1.0, z)
    if x > 0:
        log_term = (math.log(a / (b + x - 1.0))
                    + (r + x) * (math.log(alpha + T) - math.log(alpha + t_x)))
        if log_term > 700.0:
            return 0.0
        return head * body / (1.0 + math.exp(log_term))
    return head * body


def expected_purchases_age_at(m: BgNbdParams, threshold: float, t: float, x: float,
                              t_x: float, T_from: float, tolerance: float = 1e-9
                              ) -> float | None:
    """The age T ≥ T_from at which E[Y(t) | x, t_x, T] falls to `threshold`.

    With x, t_x and t fixed, the expectation decreases as the customer ages without a purchase
    (P(alive) falls and so does the posterior purchase rate (r+x)/(α+T)), and tends to 0; the
    crossing is found by bisection to `tolerance` time units (no closed form). Returns T_from
    when the value is already at or below the threshold, None when the threshold is ≤ 0."""
    if threshold <= 0.0:
        return None
    if expected_purchases(m, t, x, t_x, T_from) <= threshold:
        return T_from
    lo = T_from
    step = max(1.0, t, m.alpha)
    hi = T_from + step
    while expected_purchases(m, t, x, t_x, hi) > threshold:
        lo = hi
        step *= 2.0
        hi = T_from + step
        if step > 1e12:
            return None
    while hi - lo > tolerance * max(1.0, hi):
        mid = (lo + hi) / 2.0
        if expected_purchases(m, t, x, t_x, mid) > threshold:
            lo = mid
        else:
            hi = mid
    return hi


def log_likelihood(m: BgNbdParams, x: float, t_x: float, T: float) -> float:
    """One customer's BG/NBD log-likelihood (FHL 2005, eq. 6)."""
    r, alpha, a, b = m.r, m.alpha, m.a, m.b
    common = math.lgamma(r + x) - math.lgamma(r) + r * math.log(alpha)
    first = (_log_beta(a, b + x) - _log_beta(a, b) + common - (r + x) * math.log(alpha + T))
    if x <= 0:
        return first
    second = (_log_beta(a + 1.0, b + x - 1.0) - _log_beta(a, b) + common
              - (r + x) * math.log(alpha + t_x))
    top = max(first, second)
    return top + math.log(math.exp(first - top) + math.exp(second - top))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def expected_order_value(g: GammaGammaParams, x: float, mean_value: float) -> float:
    """Gamma-Gamma E[M | x, m̄]: the expected average value of a customer's future orders given
    x repeat purchases of mean value m̄, a weighted mean of the population's vp/(q−1) and m̄:

        (q−1)/(px+q−1) · vp/(q−1) + px/(px+q−1) · m̄ = p(v + x·m̄) / (px + q − 1)
    """
    if x <= 0:
        return g.v * g.p / (g.q - 1.0)
    return g.p * (g.v + x * mean_value) / (g.p * x + g.q - 1.0)


def clv(m: BgNbdParams, g: GammaGammaParams, horizon: float, x: float, t_x: float, T: float,
        mean_value: float) -> float:
    """Customer value over the next `horizon`: expected purchases × expected order value,
    undiscounted (E[Y(h) | x, t_x, T] · E[M | x, m̄]): revenue, not margin."""
    return expected_purchases(m, horizon, x, t_x, T) * expected_order_value(g, x, mean_value)
