"""The evaluation context: one customer's state seen at one instant.

A context caches window sums for the instant it stands at, so `purchase_amount(180d)` and
`purchase_count(180d)` in the same evaluation walk the buckets once. Moving the context to another
instant (`at`) clears the cache.
"""

from __future__ import annotations

from typing import Any

from model.state import CustomerState


class Ctx:
    __slots__ = ("bnow", "cache", "cands", "groups_before", "r", "st", "t")

    def __init__(self, st: CustomerState, t: int, resolution_ms: int,
                 cands: set[str] | None = None,
                 groups_before: dict[str, tuple[str, ...]] | None = None) -> None:
        self.st = st
        self.t = t
        self.r = resolution_ms
        self.bnow = t // resolution_ms
        self.cache: dict[Any, Any] = {}
        self.cands = st.cands if cands is None else cands
        self.groups_before = groups_before or {}

    def at(self, t: int) -> Ctx:
        """Move to instant `t` (same state); returns self."""
        self.t = t
        self.bnow = t // self.r
        self.cache.clear()
        return self

    def member(self, segment_id: str) -> bool:
        """Membership of a segment at this instant, from the candidates computed so far."""
        cands = self.cands
        if segment_id not in cands:
            return False
        return all(p not in cands for p in self.groups_before.get(segment_id, ()))
