"""The "equivalent work" every contender does per event, as plain Python on plain data (no
import beyond the standard library, so the peer scripts can use it from their own venv).

Per customer: the 30-day net spend (purchases minus refunds) in day buckets and the number of
orders of all time; three threshold segments; a change record when the set of segments changes.
`rule_file_text()` says the same to Segmenter's worker as a rule file (resolution 1d, so its
windows move by whole days too: an event counts while `day(now) - day(ts) < 30`).
"""

from __future__ import annotations

from typing import Any

DAY_MS = 86_400_000
WINDOW_DAYS = 30

# (segment id, measure, threshold): "spend" = net amount in the last 30 days, "orders" = orders
# of all time.
SEGMENTS: tuple[tuple[str, str, float], ...] = (
    ("spender", "spend", 500.0),
    ("big_spender", "spend", 2000.0),
    ("frequent", "orders", 5.0),
)

_WHEN = {"spend": f"purchase_amount({WINDOW_DAYS}d)", "orders": "lifetime_orders()"}

State = dict[str, Any]  # {"d": {str(day): net amount}, "n": orders, "s": [segment ids]}


def apply(state: State | None, event: dict[str, Any]) -> tuple[State, dict[str, Any] | None]:
    """Fold one decoded event into the customer's state; returns the new state and the change
    record (None when the segment set did not change). `now` is the event's ts."""
    if state is None:
        state = {"d": {}, "n": 0, "s": []}
    ts: int = event["ts"]
    day = ts // DAY_MS
    kind = event["type"]
    amount = float(event.get("amount", 0.0))
    if kind == "refund":
        amount = -amount
    elif kind == "purchase":
        state["n"] += 1
    buckets: dict[str, float] = state["d"]
    key = str(day)
    buckets[key] = buckets.get(key, 0.0) + amount
    oldest = day - WINDOW_DAYS + 1
    for old in [k for k in buckets if int(k) < oldest]:
        del buckets[old]
    values = {"spend": sum(buckets.values()), "orders": state["n"]}
    segments = [sid for sid, measure, threshold in SEGMENTS if values[measure] >= threshold]
    if segments == state["s"]:
        return state, None
    before = state["s"]
    state["s"] = segments
    change = {"customer_id": event["customer_id"], "ts": ts, "segments": segments,
              "entered": [s for s in segments if s not in before],
              "left": [s for s in before if s not in segments]}
    return state, change


def rule_file_text() -> str:
    """The three segments as a Segmenter rule file (docs/rules.md)."""
    lines = [
        "# bench/peers: the peers' three threshold segments (bench/peers/work.py), generated.",
        "version: 1",
        "name: bench-peers",
        "settings:",
        "  currency: PLN",
        "  resolution: 1d",
        f"  retention: {WINDOW_DAYS}d",
        "  dedup_horizon: 0d    # the peers do not deduplicate event ids either",
        "segments:",
    ]
    for sid, measure, threshold in SEGMENTS:
        lines += [f"  - id: {sid}", f"    when: {_WHEN[measure]} >= {threshold:g}"]
    return "\n".join(lines) + "\n"
