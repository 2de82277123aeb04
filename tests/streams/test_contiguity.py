"""streams/contiguity.py: records handled contiguously per input partition, holes read again."""

from __future__ import annotations

from streams.contiguity import Admission, Contiguity, Verdict

K = ("purchases", 1)


def feed(c: Contiguity, offsets: list[int], now: float = 0.0,
         committed: int | None = None) -> list[tuple[int, Verdict]]:
    out = []
    for o in offsets:
        v = c.admit(K, o, now, committed).verdict
        if v in (Verdict.HANDLE, Verdict.ACCEPT_GAP):
            c.handled(K, o)
        out.append((o, v))
    return out


def test_contiguous_records_are_handled() -> None:
    c = Contiguity()
    assert {v for _, v in feed(c, [155, 156, 157])} == {Verdict.HANDLE}
    assert c.next_offset(K) == 158


def test_a_missing_record_pauses_the_partition_then_it_is_sought_once_quiet() -> None:
    c = Contiguity(quiet_ms=1000)
    assert feed(c, [155, 156, 158, 159], now=0.0) == [
        (155, Verdict.HANDLE), (156, Verdict.HANDLE), (158, Verdict.PAUSE), (159, Verdict.HOLD)]
    assert c.admit(K, 160, 500.0) == Admission(Verdict.HOLD, 157)  # still on their way
    assert c.due_seeks(1400.0) == []  # quiet for 900 ms only
    assert c.due_seeks(1500.0) == [(K, 157)]
    assert c.due_seeks(1600.0) == []  # once
    # after the seek: the hole first, then what was held back
    assert feed(c, [157, 158, 159], now=1700.0) == [
        (157, Verdict.HANDLE), (158, Verdict.HANDLE), (159, Verdict.HANDLE)]
    assert c.waiting() == 0


def test_records_delivered_again_are_old() -> None:
    c = Contiguity()
    feed(c, [10, 11, 12])
    assert feed(c, [11, 12]) == [(11, Verdict.OLD), (12, Verdict.OLD)]


def test_the_first_record_after_an_assignment_starts_at_the_committed_offset() -> None:
    assert Contiguity().admit(K, 164, 0.0, committed=160) == Admission(Verdict.PAUSE, 160)
    assert feed(Contiguity(), [160], committed=160) == [(160, Verdict.HANDLE)]
    assert feed(Contiguity(), [7], committed=None) == [(7, Verdict.HANDLE)]


def test_a_hole_that_comes_back_after_every_seek_is_accepted() -> None:
    c = Contiguity(quiet_ms=100, max_seeks=2)
    feed(c, [0])
    now, verdicts = 0.0, []
    for _ in range(3):  # offset 1 has no record: every seek delivers 2 first
        verdicts.append(c.admit(K, 2, now).verdict)
        now += 200
        c.due_seeks(now)
    assert verdicts == [Verdict.PAUSE, Verdict.PAUSE, Verdict.ACCEPT_GAP]
    c.handled(K, 2)
    assert c.admit(K, 3, now).verdict is Verdict.HANDLE and c.waiting() == 0


def test_a_gap_the_consumer_knows_is_accepted_at_once() -> None:
    c = Contiguity()
    feed(c, [0])
    assert c.admit(K, 2, 0.0).verdict is Verdict.PAUSE
    c.accept_gap(K)
    c.handled(K, 2)
    assert c.waiting() == 0 and c.due_seeks(10_000.0) == []


def test_a_revoked_partition_is_forgotten() -> None:
    c = Contiguity()
    feed(c, [5, 6])
    feed(c, [9])  # waiting for 7
    c.forget(1)
    assert c.waiting() == 0
    assert c.admit(K, 3, 0.0).verdict is Verdict.HANDLE  # read again from the committed offset
