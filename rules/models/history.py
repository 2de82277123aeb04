"""Purchase histories read from a JSONL event log (the format `segmenter simulate` reads), and the
per-customer summaries the BG/NBD and Gamma-Gamma models are fitted on and checked against.

Pure Python: events are validated by `model.events.parse_dict`; rejected lines are counted by
reason, never fatal. Only `purchase` events count (a refund does not undo a purchase occasion);
an event id seen twice for a customer counts once.

A *transaction* is a distinct purchase day (UTC) when `repeat == "days"` (the BG/NBD paper's
convention: several orders on one day are one purchase occasion) or each purchase event when
`repeat == "orders"`. Its time is its first purchase's, its value the sum of its amounts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from model.events import Event, Rejection, parse_dict
from rules.model import DAY_MS

_PURCHASE_TYPES = ("purchase", "refund")


@dataclass(slots=True)
class PurchaseLog:
    """Every customer's purchases: customer id -> {transaction key: [first ts, value]}."""

    customers: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    repeat: str = "days"
    currency: str | None = None
    lines: int = 0
    events: int = 0
    purchases: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    first_ts: int | None = None
    last_ts: int | None = None
    _seen: set[tuple[str, str]] = field(default_factory=set)
    _orders: int = 0

    def add_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        self.lines += 1
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.rejected["malformed_json"] += 1
            return
        if (self.currency is None and isinstance(obj, dict)
                and obj.get("type") in _PURCHASE_TYPES and isinstance(obj.get("currency"), str)):
            self.currency = obj["currency"]
        ev = parse_dict(obj, currency=self.currency or "XXX")
        if isinstance(ev, Rejection):
            self.rejected[ev.reason] += 1
            return
        self.add(ev)

    def add(self, ev: Event) -> None:
        self.events += 1
        if self.first_ts is None or ev.ts < self.first_ts:
            self.first_ts = ev.ts
        if self.last_ts is None or ev.ts > self.last_ts:
            self.last_ts = ev.ts
        if ev.type != "purchase":
            return
        key = (ev.customer_id, ev.event_id)
        if key in self._seen:
            self.duplicates += 1
            return
        self._seen.add(key)
        self.purchases += 1
        if self.repeat == "days":
            tkey = ev.ts // DAY_MS
        else:
            self._orders += 1
            tkey = self._orders
        txns = self.customers.setdefault(ev.customer_id, {})
        txn = txns.get(tkey)
        if txn is None:
            txns[tkey] = [float(ev.ts), ev.amount]
        else:
            txn[0] = min(txn[0], float(ev.ts))
            txn[1] += ev.amount

    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def read_purchases(lines: Iterable[bytes], *, repeat: str = "days",
                   currency: str | None = None) -> PurchaseLog:
    """Read a JSONL event log. `currency`: the purchases' currency (others are rejected as
    `currency_mismatch`); None takes the first purchase's."""
    log = PurchaseLog(repeat=repeat, currency=currency)
    for raw in lines:
        log.add_line(raw)
    return log


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    """One customer's calibration summary (times in model time units, from the first purchase)
    and, when a holdout period is asked for, the transactions in it."""

    customer_id: str
    x: int  # repeat transactions in the calibration period
    t_x: float  # time of the last one
    T: float  # age at the end of the calibration period
    mean_value: float  # mean value of the repeat transactions (0 without any)
    holdout: int = 0  # transactions in (until, holdout_end]
    holdout_value: float = 0.0


def summarise(log: PurchaseLog, until: int, unit_ms: int,
              holdout_end: int | None = None) -> list[CustomerSummary]:
    """The customers whose first purchase is at or before `until` (the calibration cohort), with
    their repeat transactions up to `until` (inclusive) and those in (until, holdout_end]."""
    out: list[CustomerSummary] = []
    for cid, txns in log.customers.items():
        cal: list[list[float]] = []
        holdout = 0
        holdout_value = 0.0
        for txn in txns.values():
            if txn[0] <= until:
                cal.append(txn)
            elif holdout_end is not None and txn[0] <= holdout_end:
                holdout += 1
                holdout_value += txn[1]
        if not cal:
            continue
        cal.sort()
        first = cal[0][0]
        x = len(cal) - 1
        mean_value = sum(t[1] for t in cal[1:]) / x if x else 0.0
        out.append(CustomerSummary(cid, x, (cal[-1][0] - first) / unit_ms,
                                   (until - first) / unit_ms, mean_value, holdout,
                                   holdout_value))
    return out
