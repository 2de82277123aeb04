"""Signatures of every function the rule language knows: used by the loader's static checks.

Parameter kinds:
- "window": a Duration that is a multiple of settings.resolution and at most settings.retention;
- "event_type": a string literal naming a known event type;
- "segment": a string literal naming a segment of the same file (creates a dependency);
- "string": any string literal;
- "horizon": a Duration > 0, how far ahead a model looks (not bounded by the retention).
Result types: "number", "number?" (may be null), "bool", "string?", "any".
"""

from __future__ import annotations

from dataclasses import dataclass

from model.events import EVENT_TYPES

__all__ = ["EVENT_TYPES"]  # the event types, defined with the events



@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    params: tuple[str, ...]
    result: str
    doc: str


_SIGS = [
    Signature("purchase_amount", ("window",), "number", "net amount: purchases minus refunds"),
    Signature("purchase_count", ("window",), "number", "number of purchases"),
    Signature("avg_order_value", ("window",), "number?", "purchase_amount / purchase_count"),
    Signature("distinct_categories", ("window",), "number", "distinct item categories bought"),
    Signature("items_count", ("window",), "number", "sum of item quantities bought"),
    Signature("refund_amount", ("window",), "number", "amount refunded"),
    Signature("refund_count", ("window",), "number", "number of refunds"),
    Signature("lifetime_amount", (), "number", "net amount of all time"),
    Signature("lifetime_orders", (), "number", "purchases of all time"),
    Signature("days_since_last_purchase", (), "number?", "days since the last purchase"),
    Signature("days_since_first_purchase", (), "number?", "days since the first purchase"),
    Signature("growth_ratio", ("window",), "number?", "amount in last w / amount in the w before"),
    Signature("count", ("event_type", "window"), "number",
              "events of a type (or of a list of types) in the window; count(w): of any type"),
    Signature("days_since_last", ("event_type",), "number?", "days since the last event of a type"),
    Signature("days_since_first_seen", (), "number?", "days since the first event of any type"),
    Signature("email_opens", ("window",), "number", "email_open events"),
    Signature("email_clicks", ("window",), "number", "email_click events"),
    Signature("emails_sent", ("window",), "number", "email_sent events"),
    Signature("open_rate", ("window",), "number?", "opens / delivered (or sent)"),
    Signature("click_rate", ("window",), "number?", "clicks / delivered (or sent)"),
    Signature("unsubscribed", (), "bool", "an email_unsubscribe was ever received"),
    Signature("sessions", ("window",), "number", "distinct web session ids"),
    Signature("page_views", ("window",), "number", "page_view events"),
    Signature("engagement_score", (), "number", "decayed sum of engagement points"),
    Signature("rfm_r", (), "number?", "recency score 1-5"),
    Signature("rfm_f", (), "number?", "frequency score 1-5"),
    Signature("rfm_m", (), "number?", "monetary score 1-5"),
    Signature("rfm_segment", (), "string?", "named cell of the R/F grid"),
    Signature("attribute", ("string",), "any", "profile attribute, null if missing"),
    Signature("in_segment", ("segment",), "bool", "membership of another segment"),
    Signature("p_alive", (), "number?", "BG/NBD probability the customer is still active"),
    Signature("expected_purchases", ("horizon",), "number?",
              "BG/NBD expected purchases in the coming horizon"),
    Signature("clv", ("horizon",), "number?",
              "expected purchases x Gamma-Gamma expected order value over the horizon"),
    Signature("cluster", (), "string?", "label of the nearest k-means centroid"),
]

# the functions that evaluate a model of settings.models (rules/predictive.py)
PREDICTIVE: dict[str, str] = {"p_alive": "bgnbd", "expected_purchases": "bgnbd",
                              "clv": "bgnbd", "cluster": "kmeans"}

FUNCTIONS: dict[str, Signature] = {s.name: s for s in _SIGS}

# name=value arguments a function accepts (after its other arguments), and their kind.
KEYWORDS: dict[str, dict[str, str]] = {
    "purchase_amount": {"category": "category"},
    **{name: {"model": "model"} for name in PREDICTIVE},
}
