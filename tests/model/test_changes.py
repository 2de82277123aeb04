"""model.changes: the wire timestamp format, the fast constructors, the JSON of a change."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson
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
        fast.seq = 4
    with pytest.raises(FrozenInstanceError):
        cause.kind = "time"


_ids = st.lists(st.sampled_from(["vip", "growing", "at_risk", "ząb"]), max_size=3, unique=True)
_detail = st.fixed_dictionaries({"label": st.none() | st.text(max_size=5),
                                 "why": st.dictionaries(st.text(max_size=8), st.floats(
                                     allow_nan=False, allow_infinity=False), max_size=2)})


def _maybe_proxy(draw: Any, d: dict[str, Any]) -> Any:
    return MappingProxyType(d) if draw(st.booleans()) else d


@st.composite
def _changes(draw: Any) -> SegmentChange:
    groups = {g: _maybe_proxy(draw, {"from": draw(st.none() | st.text(max_size=4)),
                                     "to": draw(st.none() | st.text(max_size=4))})
              for g in draw(st.lists(st.sampled_from(["tier", "life"]), unique=True))}
    details = {sid: _maybe_proxy(draw, draw(_detail)) for sid in draw(_ids)}
    at = draw(st.integers(0, 253_402_300_799_999))
    # an event's cause at another instant, or at the change's own (its timestamp written once)
    cause = draw(st.sampled_from([Cause("time"), event_cause("ev-1", "purchase", 1_700_000),
                                  event_cause("ev-2", "purchase", at), Cause("rules")]))
    pipeline = draw(st.none() | st.just({"from": "lead", "to": "customer"}))
    return SegmentChange(
        draw(st.text(min_size=1, max_size=10)), draw(st.integers(1, 2**40)), at, cause,
        "sha256:abc",
        tuple(draw(_ids)), tuple(draw(_ids)), tuple(draw(_ids)),
        _maybe_proxy(draw, groups), _maybe_proxy(draw, details), quiet=draw(st.booleans()),
        pipeline=None if pipeline is None else _maybe_proxy(draw, pipeline),
        control=tuple(draw(_ids)))


@given(_changes())
def test_to_json_is_to_wire(change: SegmentChange) -> None:
    # the record written (no copies, read-only mappings encoded as objects) is the wire dict,
    # keys in the same order
    wire = change.to_wire()
    assert orjson.loads(change.to_json()) == wire
    assert list(orjson.loads(change.to_json())) == list(wire)
    assert all(type(wire[k]) is list for k in ("entered", "exited", "segments"))
    assert all(type(v) is dict for v in wire["details"].values())


def test_to_json_refuses_what_json_cannot_carry() -> None:
    change = new_change("c1", 1, 0, Cause("time"), "v", (), (), (), {},
                        {"vip": {"why": {object()}}})
    with pytest.raises(TypeError):
        change.to_json()
