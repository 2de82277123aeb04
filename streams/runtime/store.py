"""A task's customer store: decoded states in memory, or RocksDB on disk with a decoded cache.

The store never talks to Kafka. The task reads and writes decoded `CustomerState`s; at each
commit the worker asks for one changelog record per customer changed since the last commit
(`changelog_records`, encoded once), produces them, and after the commit succeeded tells the
store (`committed`), which is when RocksDB writes them and its checkpoint (the changelog offset
it holds). Restoring feeds changelog records in (`restore`).

- `MemoryStore`: a dict of decoded states; restored from the changelog's beginning on every
  assignment (its contents survive a rebalance only in the worker's parked tasks).
- `RocksStore` (`SEGMENTER_STORE=rocksdb://`): committed states in RocksDB (raw bytes, the
  codec's), under the worker's data folder as `customers-<partition>.db`, with a checkpoint file
  `customers-<partition>.offset`; restoring reads the changelog only from that offset on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from model.codec import decode_state, encode_state
from model.state import CustomerState

ChangelogRecord = tuple[bytes, bytes | None]  # key, encoded state (None: tombstone)


class Store:
    """What a task needs of its store (a compiled base class rather than a Protocol: the task's
    calls are then direct, not looked up by name on every record)."""

    def get(self, cid: str) -> CustomerState | None:
        raise NotImplementedError

    def put(self, cid: str, st: CustomerState) -> None:
        raise NotImplementedError

    def delete(self, cid: str) -> None:
        raise NotImplementedError

    def keys(self) -> list[str]:
        raise NotImplementedError

    def items(self) -> Iterator[tuple[str, CustomerState]]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def restore(self, key: bytes, value: bytes | None) -> None:
        raise NotImplementedError

    def changelog_records(self, dirty: Iterable[str]) -> list[ChangelogRecord]:
        raise NotImplementedError

    def committed(self, records: list[ChangelogRecord], next_offset: int | None) -> None:
        raise NotImplementedError

    def checkpoint(self) -> int | None:
        raise NotImplementedError

    def discard_uncommitted(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class MemoryStore(Store):
    """Decoded states in a dict (the default store)."""

    def __init__(self) -> None:
        self._states: dict[str, CustomerState] = {}

    def get(self, cid: str) -> CustomerState | None:
        return self._states.get(cid)

    def put(self, cid: str, st: CustomerState) -> None:
        self._states[cid] = st

    def delete(self, cid: str) -> None:
        self._states.pop(cid, None)

    def keys(self) -> list[str]:
        return list(self._states)

    def items(self) -> Iterator[tuple[str, CustomerState]]:
        return iter(list(self._states.items()))

    def __len__(self) -> int:
        return len(self._states)

    def restore(self, key: bytes, value: bytes | None) -> None:
        cid = key.decode()
        if value is None:
            self._states.pop(cid, None)
        else:
            self._states[cid] = decode_state(value)

    def changelog_records(self, dirty: Iterable[str]) -> list[ChangelogRecord]:
        states = self._states
        out: list[ChangelogRecord] = []
        for cid in dirty:
            st = states.get(cid)
            out.append((cid.encode(), None if st is None else encode_state(st)))
        return out

    def committed(self, records: list[ChangelogRecord], next_offset: int | None) -> None:
        pass  # the dict already holds them

    def checkpoint(self) -> int | None:
        return None  # nothing local survives the process: restore from the beginning

    def discard_uncommitted(self) -> bool:
        """Uncommitted changes are mixed into the dict: the caller must restore it anew."""
        self._states.clear()
        return False

    def close(self) -> None:
        self._states.clear()


class RocksStore(Store):
    """Committed states in RocksDB; states changed since the last commit (and the most recently
    used ones, up to `cache` of them) decoded in memory."""

    def __init__(self, path: Path, cache: int = 20_000) -> None:
        from rocksdict import Options, Rdict

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db: Any = Rdict(str(path), Options(raw_mode=True))
        self._offset_file = path.with_suffix(".offset")
        self._dirty: dict[str, CustomerState | None] = {}  # not committed yet (None: deleted)
        self._cache: dict[str, CustomerState] = {}  # committed, decoded
        self._cache_size = cache

    def get(self, cid: str) -> CustomerState | None:
        if cid in self._dirty:
            return self._dirty[cid]
        st = self._cache.get(cid)
        if st is not None:
            return st
        data = self._db.get(cid.encode())
        return None if data is None else decode_state(data)

    def put(self, cid: str, st: CustomerState) -> None:
        self._dirty[cid] = st
        self._cache.pop(cid, None)

    def delete(self, cid: str) -> None:
        self._dirty[cid] = None
        self._cache.pop(cid, None)

    def keys(self) -> list[str]:
        keys = {k.decode() for k in self._db.keys()}  # noqa: SIM118 (Rdict is no mapping)
        for cid, st in self._dirty.items():
            if st is None:
                keys.discard(cid)
            else:
                keys.add(cid)
        return list(keys)

    def items(self) -> Iterator[tuple[str, CustomerState]]:
        for cid in self.keys():
            st = self.get(cid)
            if st is not None:
                yield cid, st

    def __len__(self) -> int:
        return len(self.keys())

    def restore(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self._db.delete(key)
        else:
            self._db[key] = value
        self._cache.pop(key.decode(), None)

    def changelog_records(self, dirty: Iterable[str]) -> list[ChangelogRecord]:
        out: list[ChangelogRecord] = []
        for cid in dirty:
            st = self.get(cid)
            out.append((cid.encode(), None if st is None else encode_state(st)))
        return out

    def committed(self, records: list[ChangelogRecord], next_offset: int | None) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._db.write(batch)
        for key, _ in records:
            cid = key.decode()
            st = self._dirty.pop(cid, None)
            if st is not None:
                self._remember(cid, st)
        if next_offset is not None:
            self._offset_file.write_text(str(next_offset))

    def _remember(self, cid: str, st: CustomerState) -> None:
        cache = self._cache
        if self._cache_size <= 0:
            return
        if len(cache) >= self._cache_size:
            del cache[next(iter(cache))]  # the oldest entry
        cache[cid] = st

    def checkpoint(self) -> int | None:
        try:
            return int(self._offset_file.read_text())
        except (OSError, ValueError):
            return None

    def forget_checkpoint(self) -> None:
        """The changelog no longer has what the checkpoint points at: start from scratch."""
        self._offset_file.unlink(missing_ok=True)
        for key in list(self._db.keys()):
            self._db.delete(key)
        self._cache.clear()

    def discard_uncommitted(self) -> bool:
        """Drop what was not committed; the DB only ever holds committed states."""
        self._dirty.clear()
        self._cache.clear()
        return True

    def close(self) -> None:
        self._dirty.clear()
        self._cache.clear()
        self._db.close()
