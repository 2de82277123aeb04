"""Fixture factories for example-based tests: rule sets from YAML, events with sane defaults,
time helpers, and a small driver that runs customers through the engine with explicit instants.

    rules = rules_from_yaml(segment("vip", "purchase_amount(24h) >= 500", label="VIP"))
    run = EngineRun(rules)
    run.apply(purchase(T0 + hours(1), 600))
    run.fire(T0 + days(2))          # time-driven re-evaluations up to that instant
    run.members()                   # {"vip": entered_at, ...}
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from model.changes import SegmentChange
from model.events import Attributes, AttributeValue, Event, Item
from model.state import CustomerState
from rules.loader import load_rules_text
from rules.ruleset import RuleSet
from streams.engine import Engine, Outcome

# ------------------------------------------------------------------ time

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z, a whole day (so also a whole hour/minute)
MS = 1
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def minutes(n: float) -> int:
    return round(n * MINUTE)


def hours(n: float) -> int:
    return round(n * HOUR)


def days(n: float) -> int:
    return round(n * DAY)


# ------------------------------------------------------------------ rules

DEFAULT_SETTINGS: dict[str, Any] = {"currency": "PLN"}


def segment(id: str, when: str, **fields: Any) -> dict[str, Any]:
    """One segment entry of a rule file: segment("vip", "...", group="tier", min_dwell="7d")."""
    return {"id": id, "when": when, **fields}


def rules_yaml(*segments: Mapping[str, Any] | str, settings: Mapping[str, Any] | None = None,
               name: str = "test") -> str:
    """The text of a rule file with these segments (dicts, or YAML flow mappings such as
    '{id: a, when: "purchase_count(1h) >= 1"}') and these settings (merged over currency PLN)."""
    merged = {**DEFAULT_SETTINGS, **(settings or {})}
    entries = [dict(s) if not isinstance(s, str) else yaml.safe_load(s) for s in segments]
    doc = {"version": 1, "name": name, "settings": merged, "segments": entries}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)


def rules_from_yaml(*text_or_segments: Mapping[str, Any] | str,
                    settings: Mapping[str, Any] | None = None, name: str = "test") -> RuleSet:
    """A RuleSet through rules.loader.load_rules_text, from either one complete rule file text
    (anything with a top-level `segments:` key) or segment entries (see rules_yaml)."""
    if (len(text_or_segments) == 1 and isinstance(text_or_segments[0], str)
            and "segments:" in text_or_segments[0]):
        assert settings is None, "settings go into the complete text"
        return RuleSet(load_rules_text(text_or_segments[0]))
    return RuleSet(load_rules_text(rules_yaml(*text_or_segments, settings=settings, name=name)))


# ------------------------------------------------------------------ events

_ids = itertools.count(1)
PURCHASE_FAMILY = frozenset({"purchase", "refund"})
CUSTOMER = "c-1"


def next_id(prefix: str = "ev") -> str:
    return f"{prefix}-{next(_ids)}"


def item(category: str = "books", quantity: int = 1, price: float = 10.0,
         sku: str | None = None) -> Item:
    return Item(sku or f"SKU-{category[:2].upper()}", category, quantity, price)


def event(type: str = "page_view", ts: int = T0, customer_id: str = CUSTOMER, *,
          event_id: str | None = None, amount: float | None = None, currency: str = "PLN",
          order_id: str | None = None, items: Iterable[Item] = (),
          campaign_id: str | None = None, session_id: str | None = None, url: str | None = None,
          sku: str | None = None, category: str | None = None,
          attributes: Mapping[str, AttributeValue] | None = None) -> Event:
    """A valid Event (what parse_event would return): incrementing ids, currency PLN and amount
    100 for purchases and refunds, the family's fields only."""
    purchase_family = type in PURCHASE_FAMILY
    if purchase_family and amount is None:
        amount = 100.0
    if type == "profile_update" and attributes is None:
        attributes = {}
    return Event(
        event_id=event_id or next_id(type[:2]),
        customer_id=customer_id,
        type=type,
        ts=ts,
        amount=float(amount) if purchase_family and amount is not None else 0.0,
        currency=currency if purchase_family else None,
        order_id=order_id,
        items=tuple(items),
        campaign_id=campaign_id,
        session_id=session_id,
        url=url,
        sku=sku,
        category=category,
        attributes=Attributes(attributes) if attributes is not None else None,
    )


def purchase(ts: int = T0, amount: float = 100.0, customer_id: str = CUSTOMER,
             **kw: Any) -> Event:
    return event("purchase", ts, customer_id, amount=amount, **kw)


def refund(ts: int = T0, amount: float = 100.0, customer_id: str = CUSTOMER, **kw: Any) -> Event:
    return event("refund", ts, customer_id, amount=amount, **kw)


def profile(ts: int = T0, customer_id: str = CUSTOMER, **attributes: AttributeValue) -> Event:
    return event("profile_update", ts, customer_id, attributes=attributes)


def erased(ts: int = T0, customer_id: str = CUSTOMER, **kw: Any) -> Event:
    return event("customer_erased", ts, customer_id, **kw)


# ------------------------------------------------------------------ engine driver

class EngineRun:
    """Customers driven through one Engine with explicit instants (no Simulator, no index):
    `apply(ev, now)` (now defaults to the event's ts), `fire(t)`, and every change in order."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.engine = Engine(rules)
        self.states: dict[str, CustomerState] = {}
        self.changes: list[SegmentChange] = []

    def apply(self, ev: Event, now: int | None = None) -> Outcome:
        out = self.engine.apply(self.states.get(ev.customer_id), ev,
                                ev.ts if now is None else now)
        self._keep(ev.customer_id, out)
        return out

    def fire(self, t: int, customer_id: str = CUSTOMER) -> Outcome:
        out = self.engine.fire(self.states[customer_id], t)
        self._keep(customer_id, out)
        return out

    def switch(self, rules: RuleSet, now: int, customer_id: str = CUSTOMER,
               quiet: bool = False) -> Outcome:
        """Roll out new rules: fire what was due under the old ones, then re-evaluate."""
        self.fire(now, customer_id)
        previous, self.rules = self.rules, rules
        self.engine = Engine(rules)
        out = self.engine.reevaluate(self.states[customer_id], now, quiet=quiet,
                                     previous=previous)
        self._keep(customer_id, out)
        return out

    def _keep(self, customer_id: str, out: Outcome) -> None:
        if out.state is None:
            self.states.pop(customer_id, None)
        else:
            self.states[customer_id] = out.state
        self.changes.extend(out.changes)

    def state(self, customer_id: str = CUSTOMER) -> CustomerState:
        return self.states[customer_id]

    def members(self, customer_id: str = CUSTOMER) -> dict[str, int]:
        st = self.states.get(customer_id)
        return {} if st is None else dict(st.members)

    def segments(self, customer_id: str = CUSTOMER) -> list[str]:
        return sorted(self.members(customer_id))

    def changes_of(self, customer_id: str = CUSTOMER) -> list[SegmentChange]:
        return [c for c in self.changes if c.customer_id == customer_id]

    def last(self, customer_id: str = CUSTOMER) -> SegmentChange:
        return self.changes_of(customer_id)[-1]

    def transitions(self, customer_id: str = CUSTOMER) -> list[tuple[int, str, tuple[str, ...],
                                                                     tuple[str, ...]]]:
        """(at, cause kind, entered, exited) of each change of the customer, in order."""
        return [(c.at, c.cause.kind, c.entered, c.exited) for c in self.changes_of(customer_id)]
