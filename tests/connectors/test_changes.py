"""Decoding segment-change records on the consumer side."""

from __future__ import annotations

import orjson
import pytest

from connectors.changes import ChangeRecord, Tombstone, decode_change, decode_record
from model.errors import ChangeRecordError
from tests.connectors.factories import erasure, wire_change


def test_a_wire_change_round_trips() -> None:
    wire = wire_change("c-1", 2, segments=["vip", "reader"], previous=["buyer"])
    change = decode_change(orjson.dumps(wire), b"c-1")
    assert change.customer_id == "c-1" and change.seq == 2
    assert change.entered == ("reader", "vip") and change.exited == ("buyer",)
    assert change.segments == ("reader", "vip")
    assert change.groups == {"tier": {"from": "buyer", "to": "vip"}}
    assert change.group_of("vip") == "tier" and change.group_of("reader") is None
    assert change.details["vip"]["label"] == "VIP"
    assert change.wire == wire and not change.is_erasure
    assert decode_change(orjson.dumps(erasure("c-1", 3, ["vip"]))).is_erasure


def test_the_key_stands_in_for_a_missing_customer_id() -> None:
    wire = wire_change("c-1", 1, segments=["vip"])
    del wire["customer_id"]
    assert decode_change(orjson.dumps(wire), "ü".encode()).customer_id == "ü"


@pytest.mark.parametrize("mutate", [
    lambda w: w.update(seq="1"),
    lambda w: w.update(seq=-1),
    lambda w: w.update(customer_id=""),
    lambda w: w.pop("at"),
    lambda w: w.update(cause="event"),
    lambda w: w.update(entered="vip"),
    lambda w: w.update(segments=[1]),
    lambda w: w.update(groups={"tier": "vip"}),
    lambda w: w.update(groups={"tier": {"from": 3}}),
    lambda w: w.update(details={"vip": "VIP"}),
])
def test_unusable_records_are_refused(mutate: object) -> None:
    wire = wire_change("c-1", 1, segments=["vip"])
    assert callable(mutate)
    mutate(wire)
    with pytest.raises(ChangeRecordError):
        decode_change(orjson.dumps(wire))


@pytest.mark.parametrize("value", [None, b"", b"nope", b"[1]", b'"x"'])
def test_non_objects_are_refused(value: bytes | None) -> None:
    with pytest.raises(ChangeRecordError):
        decode_change(value)


def test_a_null_value_is_a_tombstone_not_an_error() -> None:
    """The worker writes a tombstone (key = customer id, null value) after each erasure's
    change: decode_record returns it as such; decode_change refuses it (not a change)."""
    assert decode_record(None, b"c-1") == Tombstone("c-1")
    change = decode_record(orjson.dumps(wire_change("c-1", 1, segments=["vip"])), b"c-1")
    assert isinstance(change, ChangeRecord) and change.segments == ("vip",)
    with pytest.raises(ChangeRecordError, match="tombstone"):
        decode_change(None, b"c-1")
    for key in (None, b"", b"\xff"):
        with pytest.raises(ChangeRecordError):
            decode_record(None, key)
