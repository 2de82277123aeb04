"""The commit safeguards of streams/commit.py, on Faust's own methods with their collaborators
replaced: the order of flush and commit, and which acks count. The kill -9 test in
test_worker.py exercises them against the broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.commit import SafeCommitConsumer, _LastStableOffsets

TP0 = TP("purchases", 0)


def _consumer(calls: list[str], offsets: dict[TP, int]) -> Any:
    async def flush() -> None:
        calls.append("flush")

    async def attached(o: dict[TP, int]) -> None:
        calls.append("attached")

    async def commit(o: dict[TP, int], start_new_transaction: bool) -> bool:
        calls.append(f"commit {o}")
        return True

    return SimpleNamespace(app=SimpleNamespace(producer=SimpleNamespace(flush=flush)),
                           _filter_committable_offsets=lambda tps: dict(offsets),
                           _handle_attached=attached, _commit_offsets=commit)


async def test_the_producer_is_flushed_before_offsets_are_committed() -> None:
    calls: list[str] = []
    done = await SafeCommitConsumer._commit_tps(_consumer(calls, {TP0: 42}), [TP0], False)
    assert done and calls == ["flush", "attached", f"commit {({TP0: 42})}"]


async def test_nothing_to_commit_flushes_nothing() -> None:
    calls: list[str] = []
    assert not await SafeCommitConsumer._commit_tps(_consumer(calls, {}), [TP0], False)
    assert calls == []


def test_an_ack_from_an_earlier_generation_does_not_count() -> None:
    me = SimpleNamespace(app=SimpleNamespace(consumer_generation_id=3))
    stale = SimpleNamespace(generation_id=2, acked=False)
    assert SafeCommitConsumer.ack(me, stale) is False  # type: ignore[arg-type]
    assert stale.acked  # marked, so Faust does not wait for it; not counted towards a commit


async def test_changelog_ends_come_from_the_broker_in_a_transaction() -> None:
    asked: list[list[TP]] = []

    async def end_offsets(tps: list[TP]) -> dict[TP, int]:
        asked.append(tps)
        return {tp: 17 for tp in tps}

    me = SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(end_offsets=end_offsets))
    assert await _LastStableOffsets._highwaters(me, [TP0]) == {TP0: 17}  # type: ignore[arg-type]
    assert asked == [[TP0]]


def _offsets(committed: int | None, acked: list[int], gap: tuple[int, int] | None = None) -> Any:
    from collections import defaultdict

    from intervaltree import IntervalTree

    me: Any = SafeCommitConsumer.__new__(SafeCommitConsumer)  # only the offset bookkeeping
    me._acked = defaultdict(list, {TP0: list(acked)})
    me._acked_index = defaultdict(set, {TP0: set(acked)})
    me._committed_offset = defaultdict(lambda: None, {TP0: committed})
    me._gap = defaultdict(IntervalTree)
    if gap is not None:
        me._gap[TP0].addi(*gap)
    return me


def test_no_commit_past_a_record_at_the_committed_offset_that_was_not_acked() -> None:
    from faust.transport.consumer import Consumer

    # Faust alone commits past 164 (off by one): the record there was never acked
    assert Consumer._new_offset(_offsets(164, list(range(165, 171))), TP0) == 171
    assert SafeCommitConsumer._new_offset(_offsets(164, list(range(165, 171))), TP0) is None
    assert SafeCommitConsumer._new_offset(_offsets(164, list(range(164, 171))), TP0) == 171


def test_a_known_gap_at_the_committed_offset_does_not_block_the_commit() -> None:
    me = _offsets(164, list(range(165, 171)), gap=(164, 165))  # a transaction marker at 164
    assert SafeCommitConsumer._new_offset(me, TP0) == 171


def test_nothing_committed_yet_commits_the_acked_run() -> None:
    assert SafeCommitConsumer._new_offset(_offsets(None, [0, 1, 2, 4]), TP0) == 3
