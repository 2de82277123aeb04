"""model.changes: the wire timestamp format."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from model.changes import format_ts


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
