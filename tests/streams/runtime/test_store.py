"""The task stores (streams/runtime/store.py): memory and RocksDB, without Kafka."""

from __future__ import annotations

from pathlib import Path

from model.codec import decode_state, encode_state
from model.state import CustomerState
from streams.runtime.store import MemoryStore, RocksStore


def state(cid: str, seq: int = 1) -> CustomerState:
    return CustomerState(cid, seq=seq, rules_version="v", members={"buyer": 5})


def test_memory_store_writes_one_changelog_record_per_dirty_customer_and_restores_them() -> None:
    store = MemoryStore()
    store.put("a", state("a"))
    store.put("b", state("b"))
    store.delete("b")
    records = store.changelog_records(["a", "b"])
    assert records == [(b"a", encode_state(state("a"))), (b"b", None)]
    again = MemoryStore()
    for key, value in [(b"b", encode_state(state("b"))), *records]:
        again.restore(key, value)
    assert again.keys() == ["a"] and again.get("a") == state("a")
    assert again.checkpoint() is None  # nothing survives the process


def test_rocks_store_writes_only_committed_states_with_their_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "customers-0.db"
    store = RocksStore(path, cache=1)
    store.put("a", state("a"))
    store.committed(store.changelog_records(["a"]), 17)
    store.put("a", state("a", seq=2))
    store.put("b", state("b"))
    assert sorted(store.keys()) == ["a", "b"] and store.get("a") == state("a", seq=2)
    assert store.discard_uncommitted() is True  # an abort: back to what was committed
    assert store.keys() == ["a"] and store.get("a") == state("a")
    store.close()
    reopened = RocksStore(path)
    assert reopened.checkpoint() == 17 and reopened.get("a") == state("a")
    reopened.restore(b"a", None)  # a tombstone read from the changelog
    reopened.restore(b"c", encode_state(state("c", seq=3)))
    assert reopened.keys() == ["c"] and decode_state(encode_state(reopened.get("c") or
                                                                  state("x"))).seq == 3
    reopened.forget_checkpoint()
    assert reopened.checkpoint() is None and reopened.keys() == []
    reopened.close()
