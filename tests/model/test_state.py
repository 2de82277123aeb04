"""CustomerState's buckets stay in ascending bucket order whatever order the events arrive in
(pruning and the oldest-first walks of the window functions rely on it), and prune drops
exactly the buckets past the retention."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random
from typing import Any

from model.state import CustomerState, fold_event, prune
from tests.factories import DAY, HOUR, T0, event, purchase

R = HOUR  # resolution
RETENTION = 10 * DAY


def folded(timestamps: list[int]) -> CustomerState:
    st = CustomerState("c-1")
    for ts in timestamps:
        fold_event(st, purchase(ts, 10.0) if ts % 2 else event("page_view", ts), R, {}, DAY)
    return st


def test_buckets_stay_ascending_when_events_arrive_out_of_order() -> None:
    rng = random.Random(11)
    for _ in range(200):
        stamps = [T0 + rng.randrange(0, 5 * DAY) for _ in range(rng.randrange(1, 40))]
        st = folded(stamps)
        keys = list(st.buckets)
        assert keys == sorted(keys)
        assert set(keys) == {ts // R for ts in stamps}
        assert sum(sum(bk.types.values()) for bk in st.buckets.values()) == len(stamps)


def test_an_older_bucket_opened_late_is_put_first_and_pruned_first() -> None:
    st = folded([T0 + 3 * DAY, T0 + 4 * DAY, T0 + DAY + 1])  # the last opens the oldest bucket
    assert list(st.buckets) == [(T0 + DAY + 1) // R, (T0 + 3 * DAY) // R, (T0 + 4 * DAY) // R]
    # the oldest leaves the retention first, even though it was added last
    prune(st, T0 + 11 * DAY + HOUR, R, RETENTION, DAY)
    assert list(st.buckets) == [(T0 + 3 * DAY) // R, (T0 + 4 * DAY) // R]
    prune(st, T0 + 13 * DAY + HOUR, R, RETENTION, DAY)
    assert list(st.buckets) == [(T0 + 4 * DAY) // R]
    prune(st, T0 + 20 * DAY, R, RETENTION, DAY)
    assert st.buckets == {}


def test_prune_keeps_a_bucket_a_window_can_still_reach() -> None:
    st = folded([T0, T0 + HOUR, T0 + 2 * HOUR])
    # lo = bucket(now) - retention buckets: bucket T0//R is dropped at lo >= T0//R, not before
    prune(st, T0 + RETENTION - 1, R, RETENTION, DAY)
    assert len(st.buckets) == 3
    prune(st, T0 + RETENTION, R, RETENTION, DAY)
    assert list(st.buckets) == [(T0 + HOUR) // R, (T0 + 2 * HOUR) // R]


def test_the_written_out_init_sets_every_field_to_its_default_or_argument() -> None:
    st = CustomerState("c-1")
    for f in dataclasses.fields(CustomerState):
        if f.name == "customer_id":
            continue
        factory: Any = f.default_factory
        want = f.default if factory is dataclasses.MISSING else factory()
        assert getattr(st, f.name) == want, f.name
    # each field by keyword: a distinct value per field, read back from the same field
    values: dict[str, Any] = {f.name: _distinct(f, i)
                              for i, f in enumerate(dataclasses.fields(CustomerState))}
    made = CustomerState(**values)
    assert {name: getattr(made, name) for name in values} == values
    # and copies (copy, pickle) keep every field
    assert copy.deepcopy(made) == made and pickle.loads(pickle.dumps(made)) == made
    # fresh containers per state, never shared
    other = CustomerState("c-2")
    assert st.buckets is not other.buckets and st.cands is not other.cands


def _distinct(f: dataclasses.Field[Any], i: int) -> Any:
    """A value of the field's kind (read off its default), different for each index i."""
    factory: Any = f.default_factory
    kind: Any = (type(factory()) if factory is not dataclasses.MISSING
            else str if f.default is dataclasses.MISSING  # customer_id
            else int if f.default is None else type(f.default))
    if kind is dict:
        return {f"k{i}": i}
    if kind is set:
        return {f"s{i}"}
    if kind is list:
        return [i]
    if kind is bool:
        return True
    if kind is str:
        return f"v{i}"
    return kind(1000 + i)  # int, float
