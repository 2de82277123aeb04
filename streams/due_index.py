"""Which customers are due for a time-driven re-evaluation, without scanning them all.

A min-heap of (due instant, customer id) with lazy invalidation: `set` records the current due
instant of a customer and pushes it; stale heap entries (superseded or cleared) are skipped when
they surface. Pop cost O(log n), no full scans.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Final

# statics when compiled: no module attribute lookup per call
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop


class DueIndex:
    __slots__ = ("_due", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}

    def set(self, key: str, due: int | None) -> None:
        if due is None:
            if key in self._due:  # `in` and `del`: compiled, dict.pop is a method call
                del self._due[key]
            return
        if self._due.get(key) == due:
            return
        self._due[key] = due
        _heappush(self._heap, (due, key))
        if len(self._heap) > 4 * len(self._due) + 1024:
            self._compact()

    def earliest_at_most(self, t: int) -> bool:
        """Whether the heap may hold a key due at or before t (False: pop_due(t) yields
        nothing)."""
        heap = self._heap
        return bool(heap) and heap[0][0] <= t

    def get(self, key: str) -> int | None:
        return self._due.get(key)

    def pop_due(self, t: int) -> Iterator[tuple[int, str]]:
        """Yield (due, key) for every key due at or before t, earliest first. A key whose due
        is re-set to <= t while iterating is yielded again."""
        due = self._due
        while True:
            heap = self._heap  # read again each time: a `set` while iterating may compact
            if not heap or heap[0][0] > t:
                return
            d, key = _heappop(heap)
            if due.get(key) != d:
                continue  # stale
            del due[key]
            yield d, key

    def oldest(self) -> int | None:
        heap, due = self._heap, self._due
        while heap and due.get(heap[0][1]) != heap[0][0]:
            _heappop(heap)
        return heap[0][0] if heap else None

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included (what compaction bounds)."""
        return len(self._heap)

    def __len__(self) -> int:
        return len(self._due)

    def _compact(self) -> None:
        self._heap = [(d, k) for k, d in self._due.items()]
        heapq.heapify(self._heap)
