"""Timestamp-ordered merge of co-partitioned input topics (event clock only).

Kafka orders records within a partition, not across topics: a customer's purchase (topic
`purchases`) and the page view just before it (topic `web-activity`) can reach the worker in
either order. With the event clock that order decides the evaluation instants, so a replay would
depend on fetch timing. Like Kafka Streams, the worker buffers records per source and hands out
the one with the smallest event time, but only once every source of the partition either has a
buffered record or has been read to its end. A source known to have records not yet delivered
(its high watermark is past what was seen) is waited for up to `pending_ms`; one whose end is
not known yet, up to `idle_ms`; after that the order is decided by what is there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any


class TimestampMerger:
    def __init__(self, idle_ms: int = 500, pending_ms: int = 60_000) -> None:
        self.idle_ms = idle_ms
        self.pending_ms = pending_ms
        self._queues: dict[int, dict[str, deque[tuple[int, int, Any]]]] = {}
        self._blocked_since: dict[int, float] = {}
        self._seq = 0

    def push(self, partition: int, source: str, ts: int, item: Any) -> None:
        queues = self._queues.setdefault(partition, {})
        q = queues.get(source)
        if q is None:
            q = queues[source] = deque()
        self._seq += 1
        q.append((ts, self._seq, item))

    def drop(self, partition: int) -> int:
        """Forget a revoked partition's buffer (its records were not acked: the new owner gets
        them again from the committed offset). Returns how many were dropped."""
        queues = self._queues.pop(partition, {})
        self._blocked_since.pop(partition, None)
        return sum(len(q) for q in queues.values())

    def buffered(self, partition: int) -> int:
        return sum(len(q) for q in self._queues.get(partition, {}).values())

    def partitions(self) -> list[int]:
        return [p for p, qs in self._queues.items() if any(qs.values())]

    def pop_ready(self, partition: int, sources: Iterable[str],
                  drained: Callable[[str], bool | None], now_ms: float) -> list[Any]:
        """Buffered items that may be processed now, in event-time order.

        `drained(source)`: True when the source has nothing more to deliver, False when it is
        known to have more (wait up to pending_ms), None when that is not known (idle_ms).
        Asked again only when a source's queue runs empty."""
        queues = self._queues.get(partition)
        if not queues:
            return []
        out: list[Any] = []
        append = out.append
        sources = tuple(sources)
        while True:
            nonempty = [q for q in queues.values() if q]
            if not nonempty:
                break
            states = [drained(s) for s in sources if not queues.get(s)]
            if not all(states):
                limit = self.pending_ms if False in states else self.idle_ms
                since = self._blocked_since.setdefault(partition, now_ms)
                if now_ms - since < limit:
                    break
            else:
                self._blocked_since.pop(partition, None)
            if len(nonempty) == 1:
                q = nonempty[0]
                while q:
                    append(q.popleft()[2])
                continue
            while True:  # until one of the queues runs empty: then ask `drained` again
                best = min(nonempty, key=_head)
                append(best.popleft()[2])
                if not best:
                    break
        if out:
            self._blocked_since.pop(partition, None)
        return out


def _head(q: deque[tuple[int, int, Any]]) -> tuple[int, int]:
    ts, seq, _ = q[0]
    return ts, seq
