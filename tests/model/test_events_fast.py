"""parse_event's fast path (msgspec) against the checked path (orjson + parse_dict).

The fast path may only accept a message the checked path accepts, with the same Event; whatever
it declines goes to the checked path. These tests hold the two equal on valid events of every
family, on the generator's bad records and on mutated messages (a field replaced by any JSON
value, removed, duplicated, an unknown field added, numbers at the edges of the integer and
float ranges), and check that the fast path really takes the common events (so it cannot
silently decline everything and still pass)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.events import (
    EVENT_TYPES,
    Event,
    Item,
    _fast_event,
    encode_event,
    parse_event,
    parse_event_checked,
)
from streams.generator import generate, generate_raw

CURRENCY = "PLN"
START = 1_735_689_600_000

FIELDS = ("event_id", "customer_id", "type", "ts", "amount", "currency", "order_id", "items",
          "campaign_id", "session_id", "url", "sku", "category", "attributes")

json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.sampled_from([0, -1, 1, 1_000_000, 1_000_001, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
                     1 << 64, -(1 << 63), -(1 << 63) - 1, 253_402_300_799_999,
                     253_402_300_800_000]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e308, 1.5, -1.5, 5e-324]),
    st.text(max_size=140),
    st.sampled_from(["", "x" * 128, "x" * 129, "PLN", "EUR", "pln", "2025-01-01T00:00:00Z",
                     "2025-01-01T00:00:00", "2025-01-01 00:00:00.123456+02:00",
                     "9999-12-31T23:59:59.999Z", "purchase", "page_view", "profile_update",
                     "customer_erased", "nope"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _events() -> list[Event]:
    return list(generate(customers=40, events=400, seed=7, start_ms=START, days=30,
                         currency=CURRENCY, profile_fraction=0.05, erasures=True))


EVENTS = _events()


def _dumps(obj: Any) -> bytes:
    """JSON of any value, integers beyond 64 bits too (orjson.dumps refuses them)."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _same(raw: bytes | str) -> None:
    assert parse_event(raw, currency=CURRENCY) == parse_event_checked(raw, currency=CURRENCY)


def test_the_fast_path_takes_every_generated_event_and_gives_the_same_event() -> None:
    kinds = {e.type for e in EVENTS}
    assert {"purchase", "page_view", "email_open", "profile_update"} <= kinds
    for event in EVENTS:
        raw = encode_event(event)
        fast = _fast_event(raw, CURRENCY)
        assert fast is not None, raw
        assert fast == parse_event_checked(raw, currency=CURRENCY) == event


def test_bytes_like_and_str_inputs() -> None:
    raw = encode_event(EVENTS[0])
    for value in (raw, bytearray(raw), memoryview(raw), raw.decode()):
        assert parse_event(value, currency=CURRENCY) == EVENTS[0]


def test_the_generators_bad_records_are_rejected_exactly_as_before() -> None:
    records = list(generate_raw(customers=40, events=2_000, seed=3, start_ms=START, days=30,
                                currency=CURRENCY, bad_fraction=0.3))
    assert len(records) > 2_500
    for raw in records:
        _same(raw)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(min_value=0, max_value=len(EVENTS) - 1),
       name=st.sampled_from((*FIELDS, "extra", "items.0.price", "items.0.quantity",
                             "items.0.sku", "items.0.extra", "attributes.k")),
       action=st.sampled_from(("set", "delete")),
       value=json_values)
def test_a_mutated_message_gets_the_same_answer_from_both_paths(
        index: int, name: str, action: str, value: Any) -> None:
    wire: dict[str, Any] = orjson.loads(encode_event(EVENTS[index]))
    target: Any = wire
    path = name.split(".")
    for part in path[:-1]:
        if isinstance(target, dict):
            target = target.setdefault(part, [] if part == "items" else {})
        if isinstance(target, list):
            if not target:
                target.append({"sku": "s", "category": "c", "quantity": 1, "price": 1.0})
            target = target[0]
    if action == "delete":
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    _same(_dumps(wire))


@settings(max_examples=300, deadline=None)
@given(event_type=st.sampled_from(EVENT_TYPES), body=st.dictionaries(
    st.sampled_from((*FIELDS, "extra")), json_values, max_size=10))
def test_any_object_gets_the_same_answer_from_both_paths(
        event_type: str, body: dict[str, Any]) -> None:
    _same(_dumps({"type": event_type, **body}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_get_the_same_answer_from_both_paths(raw: bytes) -> None:
    _same(raw)


def test_json_text_the_two_decoders_could_read_differently() -> None:
    base = encode_event(next(e for e in EVENTS if e.type == "purchase")).decode()
    texts = [
        base.replace('"event_id"', '"event_id":"dup","event_id"', 1),  # duplicate key: last wins
        base[:-1] + ',"extra":1e400}',  # a number orjson refuses
        base[:-1] + ',"extra":' + "[" * 1100 + "]" * 1100 + "}",  # deeper than orjson reads
        base.replace('"customer_id":"', '"customer_id":"\\ud800', 1),  # a lone surrogate
        base.replace('"customer_id":"', '"customer_id":"\\u0000', 1),
        "\ufeff" + base,  # byte order mark
        " \n" + base + " \t",
        base + "x",
        base.replace('"amount":', '"amount":1e2,"x":', 1),
    ]
    for text in texts:
        _same(text.encode())


def test_profile_attributes_at_the_edges_of_the_number_ranges() -> None:
    profile = orjson.loads(encode_event(next(e for e in EVENTS if e.type == "profile_update")))
    for value in ((1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, -(1 << 63), -(1 << 63) - 1,
                  10 ** 30, 1e308, -0.0, True, None, "x" * 1024, "x" * 1025, [1], {"a": 1}):
        _same(_dumps({**profile, "attributes": {"k": value}}))
    _same(_dumps({**profile, "attributes": {str(i): i for i in range(51)}}))
    _same(_dumps({**profile, "attributes": {"": 1}}))
    _same(_dumps({**profile, "attributes": {"k" * 129: 1}}))


def test_items_are_decoded_as_items_unknown_and_repeated_item_fields_as_the_checked_path() -> None:
    """The fast path decodes an item with Item's layout and re-classes it (model/wire.py): the
    items are real, frozen Items, equal to the checked path's; an unknown field of an item is
    ignored and a repeated one read last-wins, by both paths, and the fast path takes them."""
    base = encode_event(next(e for e in EVENTS if e.type == "purchase" and e.items)).decode()
    texts = [base,
             base.replace('"sku":', '"note":{"a":[1]},"sku":', 1),  # unknown item field
             base.replace('"quantity":', '"quantity":7,"quantity":', 1)]  # repeated: last wins
    for text in texts:
        fast = _fast_event(text.encode(), CURRENCY)
        assert fast is not None, text
        assert fast == parse_event_checked(text.encode(), currency=CURRENCY)
        assert fast.items and all(type(i) is Item for i in fast.items)
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.items[0].quantity = 2  # type: ignore[misc]
