"""model.changes: the wire timestamp format."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.changes import (
    CAUSE_EVENT,
    Cause,
    SegmentChange,
    event_cause,
    format_ts,
    new_change,
)


def _reference(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@given(st.integers(min_value=-2_000_000_000_000, max_value=253_402_300_799_999))
def test_format_ts_matches_datetime(ms: int) -> None:
    assert format_ts(ms) == _reference(ms)


def test_format_ts_edges() -> None:
    assert format_ts(0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(1_735_689_599_999) == "2024-12-31T23:59:59.999Z"
    assert format_ts(1_735_689_600_000) == "2025-01-01T00:00:00.000Z"
    assert format_ts(-1) == "1969-12-31T23:59:59.999Z"


def test_the_fast_constructors_make_the_same_frozen_records() -> None:
    cause = event_cause("e-1", "purchase", 1_735_689_600_000)
    assert cause == Cause(CAUSE_EVENT, "e-1", "purchase", 1_735_689_600_000)
    assert type(cause) is Cause and hash(cause) == hash(Cause(CAUSE_EVENT, "e-1", "purchase",
                                                              1_735_689_600_000))
    args = ("c-1", 3, 1_735_689_600_001, cause, "v1", ("vip",), ("new",), ("vip",),
            {"tier": {"from": "new", "to": "vip"}}, {"vip": {"label": "VIP", "why": {}}})
    fast = new_change(*args)
    slow = SegmentChange(*args)
    assert type(fast) is SegmentChange
    assert fast == slow and repr(fast) == repr(slow) and fast.to_json() == slow.to_json()
    # every field set: a field added to SegmentChange must be added to new_change too
    assert {f.name: getattr(fast, f.name) for f in fields(SegmentChange)} == \
        {f.name: getattr(slow, f.name) for f in fields(SegmentChange)}
    with pytest.raises(FrozenInstanceError):
        fast.seq = 4  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        cause.kind = "time"  # type: ignore[misc]
