"""Every input record handled once, in offset order: a guard against records the transport skips.

The worker's replay guard (`CustomerState.offsets`) takes a record whose offset is not above the
last one applied from its source as already applied. That is only sound if the agent handles each
input partition's records contiguously. Faust (0.15.3) does not promise it: around a rebalance it
re-seeks partitions to their committed offsets while its fetcher is still delivering an earlier
batch, and now and then one record is never delivered to the stream (seen in the crash test: one
offset missing, the records before and after it handled). Its commit then passed the missing
offset (`commit.py` closes that), and the record was lost for good.

`Contiguity` remembers, per (topic, partition), the offset the agent handles next. A record past it
is held back (neither handled nor acked), the partition is paused, and once the records already
on their way have passed (`quiet_ms` without one), the agent seeks the partition back to the
missing offset and resumes it (seeking while Faust's fetcher still delivers an earlier batch
would be undone by it). A record before the next offset was handled already. If Kafka itself
has no record there (a transaction marker, retention), the hole comes back after every seek:
after `max_seeks` it is accepted and reported. Pure: the caller passes the time and does the
pausing and seeking.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

Key = tuple[str, int]  # (topic, partition)


class Verdict(Enum):
    HANDLE = "handle"  # the next record: handle it, then call `handled`
    OLD = "old"  # handled already (delivered again): skip it
    PAUSE = "pause"  # a record is missing before it: pause the partition, skip this one unacked
    HOLD = "hold"  # the partition waits for a missing record: skip this one unacked
    ACCEPT_GAP = "accept_gap"  # the hole persisted through every seek: handle it


@dataclass(slots=True)
class _Wait:
    expected: int
    last_seen_ms: float  # when a held-back record last arrived
    seeks: int = 0
    sought: bool = False  # sought since the last pause


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    expected: int | None = None  # the missing offset (PAUSE, HOLD, ACCEPT_GAP)


class Contiguity:
    def __init__(self, quiet_ms: float = 1000.0, max_seeks: int = 5) -> None:
        self.quiet_ms = quiet_ms
        self.max_seeks = max_seeks
        self._next: dict[Key, int] = {}
        self._waiting: dict[Key, _Wait] = {}

    def next_offset(self, key: Key) -> int | None:
        return self._next.get(key)

    def admit(self, key: Key, offset: int, now_ms: float,
              committed: int | None = None) -> Admission:
        """What to do with the record at `offset`. `committed`: the partition's committed offset
        when known; it is where a partition without history here starts."""
        expected = self._next.get(key)
        if expected is None:
            expected = committed if committed is not None and committed < offset else offset
        if offset == expected:
            self._waiting.pop(key, None)
            return Admission(Verdict.HANDLE)
        if offset < expected:
            return Admission(Verdict.OLD)
        wait = self._waiting.get(key)
        if wait is None or wait.expected != expected:
            self._waiting[key] = _Wait(expected, now_ms)
            return Admission(Verdict.PAUSE, expected)
        wait.last_seen_ms = now_ms
        if not wait.sought:
            return Admission(Verdict.HOLD, expected)
        if wait.seeks >= self.max_seeks:
            del self._waiting[key]
            return Admission(Verdict.ACCEPT_GAP, expected)
        wait.sought = False  # the seek did not bring it: pause and seek again
        return Admission(Verdict.PAUSE, expected)

    def accept_gap(self, key: Key) -> None:
        """The consumer knows Kafka has no record at the missing offset (a transaction
        marker): stop waiting for it."""
        self._waiting.pop(key, None)

    def due_seeks(self, now_ms: float) -> list[tuple[Key, int]]:
        """Paused partitions to seek back (and resume) now: no held-back record for quiet_ms."""
        out = []
        for key, wait in self._waiting.items():
            if not wait.sought and now_ms - wait.last_seen_ms >= self.quiet_ms:
                wait.sought = True
                wait.seeks += 1
                out.append((key, wait.expected))
        return out

    def handled(self, key: Key, offset: int) -> None:
        self._next[key] = offset + 1

    def forget(self, partition: int) -> None:
        """A revoked partition: its records are read again from the committed offset."""
        for key in [k for k in self._next if k[1] == partition]:
            del self._next[key]
        for key in [k for k in self._waiting if k[1] == partition]:
            del self._waiting[key]

    def waiting(self) -> int:
        """How many partitions wait for a missing record."""
        return len(self._waiting)
