"""The event wire format: validation, timestamps, encoding, and fuzzing that nothing raises."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.events import (
    _RFC3339,
    EMAIL_TYPES,
    KNOWN_TYPES,
    MAX_ATTRIBUTES,
    MAX_ITEMS,
    MAX_TS_MS,
    PROFILE_TYPES,
    PURCHASE_TYPES,
    TOPIC_FOR_TYPE,
    WEB_TYPES,
    Attributes,
    Event,
    Item,
    Rejection,
    RejectReason,
    _rfc3339_fields_to_ms,
    check_time,
    encode_event,
    event_to_wire,
    new_event,
    new_item,
    parse_dict,
    parse_event,
    parse_rfc3339,
)
from rules.catalogue import EVENT_TYPES

TS = 1_714_564_800_000  # 2024-05-01T12:00:00Z
REASONS = {r.value for r in RejectReason}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def wire(type_: str = "page_view", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_id": "e-1", "customer_id": "c-1", "type": type_, "ts": TS}
    if type_ in PURCHASE_TYPES:
        base |= {"amount": 120.5, "currency": "PLN"}
    if type_ == "profile_update":
        base["attributes"] = {"city": "Gdańsk"}
    base.update(fields)
    return base


def parse(obj: Any, currency: str = "PLN") -> Event | Rejection:
    return parse_event(orjson.dumps(obj), currency=currency)


def rejected(obj: Any, reason: str, field: str | None = None, currency: str = "PLN") -> Rejection:
    result = parse(obj, currency)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result
    if field is not None:
        assert result.field == field, result
        assert field in result.message, result  # the message names the field
    return result


# --- valid events -------------------------------------------------------------------------------


def test_purchase_with_items_is_parsed() -> None:
    result = parse(wire("purchase", order_id="o-9", items=[
        {"sku": "EL-1", "category": "electronics", "quantity": 2, "price": 50},
        {"sku": "BK-2", "category": "books", "quantity": 1, "price": 20.5},
    ]))
    assert result == Event("e-1", "c-1", "purchase", TS, 120.5, "PLN", "o-9", (
        Item("EL-1", "electronics", 2, 50.0), Item("BK-2", "books", 1, 20.5)))
    assert isinstance(result, Event)
    assert type(result.items[0].price) is float


def test_refund_and_int_amount() -> None:
    result = parse(wire("refund", amount=30))
    assert isinstance(result, Event)
    assert result.type == "refund"
    assert result.amount == 30.0
    assert type(result.amount) is float
    assert result.items == ()


def test_zero_amount_is_allowed() -> None:
    assert isinstance(parse(wire("purchase", amount=0)), Event)


@pytest.mark.parametrize("type_", sorted(EMAIL_TYPES))
def test_email_types(type_: str) -> None:
    assert parse(wire(type_, campaign_id="cmp-1")) == Event("e-1", "c-1", type_, TS,
                                                            campaign_id="cmp-1")


@pytest.mark.parametrize("type_", sorted(WEB_TYPES))
def test_web_types(type_: str) -> None:
    result = parse(wire(type_, session_id="s-1", url="https://x.pl/p/1", sku="S1",
                        category="books"))
    assert result == Event("e-1", "c-1", type_, TS, session_id="s-1", url="https://x.pl/p/1",
                           sku="S1", category="books")


def test_profile_update_attributes() -> None:
    result = parse(wire("profile_update", attributes={
        "city": "Kraków", "age": 33, "score": 1.5, "vip": True, "coupon": None}))
    assert isinstance(result, Event)
    assert result.attributes == {"city": "Kraków", "age": 33, "score": 1.5, "vip": True,
                                 "coupon": None}
    assert isinstance(result.attributes, Attributes)
    with pytest.raises(TypeError):
        result.attributes["city"] = "Łódź"  # type: ignore[index]


def test_profile_update_empty_attributes_and_exactly_max() -> None:
    assert isinstance(parse(wire("profile_update", attributes={})), Event)
    many = {f"k{i}": i for i in range(MAX_ATTRIBUTES)}
    assert isinstance(parse(wire("profile_update", attributes=many)), Event)


def test_customer_erased() -> None:
    assert parse(wire("customer_erased")) == Event("e-1", "c-1", "customer_erased", TS)


def test_unknown_extra_fields_and_other_families_fields_are_ignored() -> None:
    result = parse(wire("email_open", amount=-5, items="nonsense", url=3, foo={"bar": [1]}))
    assert result == Event("e-1", "c-1", "email_open", TS)


def test_null_optional_fields_count_as_absent() -> None:
    result = parse(wire("purchase", order_id=None, items=None))
    assert isinstance(result, Event)
    assert result.order_id is None
    assert result.items == ()
    assert parse(wire("page_view", session_id=None)) == Event("e-1", "c-1", "page_view", TS)


def test_id_length_limits() -> None:
    assert isinstance(parse(wire(event_id="x" * 128, customer_id="ą" * 128)), Event)
    rejected(wire(event_id="x" * 129), "field_too_long", "event_id")
    rejected(wire(customer_id="x" * 129), "field_too_long", "customer_id")
    rejected(wire(event_id=""), "bad_value", "event_id")
    rejected(wire(customer_id=""), "bad_value", "customer_id")


@pytest.mark.parametrize("raw_type", [bytes, bytearray, memoryview, str])
def test_accepts_bytes_like_and_str(raw_type: Any) -> None:
    data = orjson.dumps(wire())
    raw = data.decode() if raw_type is str else raw_type(data)
    assert isinstance(parse_event(raw, currency="PLN"), Event)


def test_parse_dict_accepts_decoded_objects() -> None:
    assert parse_dict(wire(), currency="PLN") == parse(wire())
    assert parse_dict(["x"], currency="PLN").reason == "not_an_object"  # type: ignore[arg-type, union-attr]


# --- rejections, one reason at a time -----------------------------------------------------------


def test_malformed_json() -> None:
    for raw in (b"", b"{", b'{"event_id": }', b"NaN", b'{"a": 1e400}', b"[1, 2"):
        result = parse_event(raw, currency="PLN")
        assert isinstance(result, Rejection)
        assert result.reason == "malformed_json", raw


def test_bad_encoding() -> None:
    data = orjson.dumps(wire())
    result = parse_event(data[:5] + b"\xff" + data[5:], currency="PLN")
    assert isinstance(result, Rejection)
    assert result.reason == "bad_encoding"
    result = parse_event('{"event_id": "\ud800"}', currency="PLN")
    assert isinstance(result, Rejection)
    assert result.reason == "bad_encoding"


@pytest.mark.parametrize("value", [[], [wire()], 1, "x", None, True])
def test_not_an_object(value: Any) -> None:
    rejected(value, "not_an_object")


@pytest.mark.parametrize("name", ["event_id", "customer_id", "type", "ts"])
def test_missing_common_field(name: str) -> None:
    obj = wire()
    del obj[name]
    rejected(obj, "missing_field", name)
    rejected(wire() | {name: None}, "missing_field", name)


@pytest.mark.parametrize(("type_", "name"), [
    ("purchase", "amount"), ("purchase", "currency"), ("refund", "amount"),
    ("profile_update", "attributes"),
])
def test_missing_family_field(type_: str, name: str) -> None:
    obj = wire(type_)
    del obj[name]
    rejected(obj, "missing_field", name)


@pytest.mark.parametrize(("name", "value"), [
    ("event_id", 12), ("customer_id", ["c"]), ("type", 3), ("ts", True), ("ts", [TS]),
    ("ts", {"ms": TS}),
])
def test_common_field_bad_type(name: str, value: Any) -> None:
    rejected(wire() | {name: value}, "bad_type", name)


@pytest.mark.parametrize(("type_", "name", "value"), [
    ("purchase", "amount", "10.00"), ("purchase", "amount", True), ("purchase", "amount", None),
    ("purchase", "currency", 985), ("purchase", "order_id", 5), ("purchase", "items", {}),
    ("email_open", "campaign_id", 1), ("page_view", "session_id", True),
    ("page_view", "url", ["u"]), ("product_view", "sku", 1.5), ("product_view", "category", {}),
    ("profile_update", "attributes", ["a"]),
])
def test_family_field_bad_type(type_: str, name: str, value: Any) -> None:
    expected = "missing_field" if value is None else "bad_type"
    rejected(wire(type_, **{name: value}), expected, name)


def test_bool_is_not_a_number_anywhere() -> None:
    rejected(wire("purchase", amount=False), "bad_type", "amount")
    item = {"sku": "a", "category": "b", "quantity": True, "price": 1}
    rejected(wire("purchase", items=[item]), "bad_type", "items[0].quantity")
    item = {"sku": "a", "category": "b", "quantity": 1, "price": True}
    rejected(wire("purchase", items=[item]), "bad_type", "items[0].price")


@pytest.mark.parametrize(("item", "reason", "field"), [
    ("x", "bad_type", "items[1]"),
    ({"category": "b", "quantity": 1, "price": 1}, "missing_field", "items[1].sku"),
    ({"sku": "a", "quantity": 1, "price": 1}, "missing_field", "items[1].category"),
    ({"sku": "a", "category": "b", "price": 1}, "missing_field", "items[1].quantity"),
    ({"sku": "a", "category": "b", "quantity": 1}, "missing_field", "items[1].price"),
    ({"sku": "", "category": "b", "quantity": 1, "price": 1}, "bad_value", "items[1].sku"),
    ({"sku": "a" * 129, "category": "b", "quantity": 1, "price": 1}, "field_too_long",
     "items[1].sku"),
    ({"sku": "a", "category": 7, "quantity": 1, "price": 1}, "bad_type", "items[1].category"),
    ({"sku": "a", "category": "b", "quantity": 0, "price": 1}, "bad_value", "items[1].quantity"),
    ({"sku": "a", "category": "b", "quantity": -2, "price": 1}, "bad_value",
     "items[1].quantity"),
    ({"sku": "a", "category": "b", "quantity": 1.0, "price": 1}, "bad_type",
     "items[1].quantity"),
    ({"sku": "a", "category": "b", "quantity": 1, "price": "1"}, "bad_type", "items[1].price"),
    ({"sku": "a", "category": "b", "quantity": 1, "price": -0.01}, "negative_amount",
     "items[1].price"),
])
def test_item_checks(item: Any, reason: str, field: str) -> None:
    good = {"sku": "ok", "category": "ok", "quantity": 1, "price": 0}
    rejected(wire("purchase", items=[good, item]), reason, field)


def test_too_many_items() -> None:
    item = {"sku": "a", "category": "b", "quantity": 1, "price": 1}
    assert isinstance(parse(wire("purchase", items=[item] * MAX_ITEMS)), Event)
    rejected(wire("purchase", items=[item] * (MAX_ITEMS + 1)), "too_many_items", "items")


def test_negative_amount() -> None:
    rejected(wire("purchase", amount=-0.01), "negative_amount", "amount")
    rejected(wire("refund", amount=-10), "negative_amount", "amount")


def test_non_finite_amount_from_a_decoded_dict() -> None:
    for value in (float("nan"), float("inf")):
        result = parse_dict(wire("purchase", amount=value), currency="PLN")
        assert isinstance(result, Rejection)
        assert (result.reason, result.field) == ("bad_value", "amount")


def test_currency() -> None:
    rejected(wire("purchase", currency="EUR"), "currency_mismatch", "currency")
    assert isinstance(parse(wire("purchase", currency="EUR"), currency="EUR"), Event)
    for bad in ("pln", "PL", "PLNX", "P1N", "", "ZŁO"):
        rejected(wire("purchase", currency=bad), "bad_value", "currency")


def test_unknown_event_type() -> None:
    for bad in ("email_opened", "Purchase", "", "purchase "):
        rejected(wire(type=bad), "unknown_event_type", "type")


def test_optional_string_limits() -> None:
    rejected(wire("page_view", url="u" * 2049), "field_too_long", "url")
    assert isinstance(parse(wire("page_view", url="u" * 2048)), Event)
    rejected(wire("page_view", session_id=""), "bad_value", "session_id")
    rejected(wire("purchase", order_id="o" * 129), "field_too_long", "order_id")
    rejected(wire("email_click", campaign_id="c" * 129), "field_too_long", "campaign_id")


def test_attribute_checks() -> None:
    rejected(wire("profile_update", attributes={f"k{i}": 1 for i in range(MAX_ATTRIBUTES + 1)}),
             "too_many_attributes", "attributes")
    rejected(wire("profile_update", attributes={"tags": ["a"]}), "bad_type", "attributes.tags")
    rejected(wire("profile_update", attributes={"x": {"y": 1}}), "bad_type", "attributes.x")
    rejected(wire("profile_update", attributes={"bio": "b" * 1025}), "field_too_long",
             "attributes.bio")
    rejected(wire("profile_update", attributes={"": 1}), "bad_value")
    rejected(wire("profile_update", attributes={"k" * 129: 1}), "field_too_long")


def test_rejection_carries_the_ids_that_could_be_read() -> None:
    result = rejected(wire("purchase", event_id="e-7", customer_id="c-7", amount=-1),
                      "negative_amount")
    assert (result.event_id, result.customer_id) == ("e-7", "c-7")
    result = rejected(wire(event_id="e-8", customer_id=5), "bad_type")
    assert (result.event_id, result.customer_id) == ("e-8", None)
    result = rejected(wire(event_id=None), "missing_field")
    assert (result.event_id, result.customer_id) == (None, None)


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T12:00:00Z", TS),
    ("2024-05-01t12:00:00z", TS),
    ("2024-05-01 12:00:00Z", TS),
    ("2024-05-01T14:00:00+02:00", TS),
    ("2024-05-01T06:30:00-05:30", TS),
    ("2024-05-01T12:00:00-00:00", TS),
    ("2024-05-01T12:00:00.5Z", TS + 500),
    ("2024-05-01T12:00:00.12Z", TS + 120),
    ("2024-05-01T12:00:00.123Z", TS + 123),
    ("2024-05-01T12:00:00.123999999Z", TS + 123),
    ("2024-05-01t14:00:00.25+02:00", TS + 250),
    ("2016-12-31T23:59:60Z", 1_483_228_800_000),  # leap second: the next second
    ("2024-02-29T00:00:00Z", 1_709_164_800_000),
    ("1970-01-01T00:00:00Z", 0),
    ("9999-12-31T23:59:59.999Z", MAX_TS_MS),
])
def test_rfc3339_valid(text: str, expected: int) -> None:
    assert parse_rfc3339(text) == expected
    result = parse(wire(ts=text))
    assert isinstance(result, Event)
    assert result.ts == expected


@pytest.mark.parametrize("text", [
    "2024-05-01T12:00:00",  # naive
    "2024-05-01 12:00:00.123",  # naive
    "2024-05-01",
    "2024-05-01T12:00Z",  # no seconds
    "2024-05-01T12:00:00+0200",  # offset without colon
    "2024-05-01T12:00:00+02",
    "2024-05-01T12:00:00.Z",
    "2024-05-01T12:00:00 Z",
    "2024-05-01X12:00:00Z",
    "20240501T120000Z",
    "2024-5-1T12:00:00Z",
    "2023-02-29T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-05-00T00:00:00Z",
    "2024-05-01T24:00:00Z",
    "2024-05-01T12:60:00Z",
    "2024-05-01T12:00:61Z",
    "2024-05-01T12:00:00+24:00",
    "2024-05-01T12:00:00+02:60",
    "1969-12-31T23:59:59Z",  # before epoch
    "1970-01-01T00:00:00+00:01",  # before epoch too
    "0000-01-01T00:00:00Z",
    "２０２４-05-01T12:00:00Z",  # non-ASCII digits
    " 2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00Z\n",
    "2024-05-01T12:00:00." + "1" * 60 + "Z",  # absurdly long
    "",
    "1714564800000",
])
def test_rfc3339_invalid(text: str) -> None:
    assert parse_rfc3339(text) is None
    rejected(wire(ts=text), "bad_timestamp", "ts")


def test_epoch_ms_range_and_type() -> None:
    assert parse(wire(ts=0)).ts == 0  # type: ignore[union-attr]
    assert parse(wire(ts=MAX_TS_MS)).ts == MAX_TS_MS  # type: ignore[union-attr]
    rejected(wire(ts=-1), "bad_timestamp", "ts")
    rejected(wire(ts=MAX_TS_MS + 1), "bad_timestamp", "ts")
    rejected(wire(ts=2**64 - 1), "bad_timestamp", "ts")
    rejected(wire(ts=float(TS)), "bad_timestamp", "ts")
    rejected(wire(ts=1.5), "bad_timestamp", "ts")


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
    st.sampled_from(["T", "t", " "]),
    st.integers(min_value=0, max_value=9),
    st.booleans(),
)
def test_rfc3339_agrees_with_datetime(
    local: datetime, offset_min: int, sep: str, digits: int, lower_z: bool
) -> None:
    tz = timezone(timedelta(minutes=offset_min))
    moment = local.replace(tzinfo=tz)
    frac = f"{moment.microsecond:06d}000"[:digits]
    zone = moment.strftime("%z")
    zone = f"{zone[:3]}:{zone[3:]}"
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + (f".{frac}" if digits else "") + zone
    expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    if digits < 3:  # fewer digits: truncated fraction
        expected = expected // 1000 * 1000 + int((frac + "000")[:3])
    assert parse_rfc3339(text) == expected
    # the slow path (taken for 'z' and leap seconds) agrees with the fast one
    variant = text[:-6] + ("z" if lower_z else "Z") if offset_min == 0 else text
    fields = _RFC3339.fullmatch(variant)
    assert fields is not None
    assert _rfc3339_fields_to_ms(fields) == expected
    assert parse_rfc3339(variant) == expected


# --- clock checks -------------------------------------------------------------------------------


def test_check_time_boundaries() -> None:
    now, retention, tolerance = 10_000_000, 1_000_000, 300_000

    def at(ts: int) -> Rejection | None:
        return check_time(Event("e", "c", "page_view", ts), now_ms=now, retention_ms=retention,
                          future_tolerance_ms=tolerance)

    assert at(now - retention) is None
    assert at(now + tolerance) is None
    assert at(now) is None
    late = at(now - retention - 1)
    assert late is not None
    assert (late.reason, late.field, late.event_id, late.customer_id) == (
        "too_late", "ts", "e", "c")
    future = at(now + tolerance + 1)
    assert future is not None
    assert (future.reason, future.field) == ("too_far_in_future", "ts")


# --- topics, types, values ----------------------------------------------------------------------


def test_type_families_match_the_catalogue_and_topics() -> None:
    assert set(EVENT_TYPES) == KNOWN_TYPES
    families = [PURCHASE_TYPES, EMAIL_TYPES, WEB_TYPES, PROFILE_TYPES]
    assert sum(len(f) for f in families) == len(KNOWN_TYPES)  # disjoint
    assert set(TOPIC_FOR_TYPE) == KNOWN_TYPES
    assert {TOPIC_FOR_TYPE[t] for t in PURCHASE_TYPES} == {"purchases"}
    assert {TOPIC_FOR_TYPE[t] for t in EMAIL_TYPES} == {"email-events"}
    assert {TOPIC_FOR_TYPE[t] for t in WEB_TYPES} == {"web-activity"}
    assert {TOPIC_FOR_TYPE[t] for t in PROFILE_TYPES} == {"customer-profiles"}


def test_events_are_frozen_hashable_and_picklable() -> None:
    result = parse(wire("profile_update", attributes={"a": 1, "b": None}))
    assert isinstance(result, Event)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ts = 1
    assert type(result) is Event
    same = Event("e-1", "c-1", "profile_update", TS, attributes=Attributes({"b": None, "a": 1}))
    assert result == same
    assert hash(result) == hash(same)
    assert pickle.loads(pickle.dumps(result)) == result
    assert copy.deepcopy(result) == result
    assert dataclasses.replace(result, ts=5).ts == 5


def test_fast_constructors_equal_the_dataclass_ones() -> None:
    item = new_item("s", "c", 2, 1.5)
    assert type(item) is Item
    assert item == Item("s", "c", 2, 1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.price = 2.0  # type: ignore[misc]
    event = new_event("e", "c", "purchase", 1, 3.0, "PLN", "o", (item,))
    assert event == Event("e", "c", "purchase", 1, 3.0, "PLN", "o", (item,))
    assert hash(event) == hash(Event("e", "c", "purchase", 1, 3.0, "PLN", "o", (item,)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.amount = 4.0


@pytest.mark.parametrize("obj", [
    wire("purchase", order_id="o", items=[{"sku": "a", "category": "b", "quantity": 3,
                                           "price": 9.99}]),
    wire("refund", amount=0.1),
    wire("email_bounce", campaign_id="x"),
    wire("search", url="https://x/?q=ż", session_id="s"),
    wire("profile_update", attributes={"a": None, "b": 1.25, "c": "ü"}),
    wire("customer_erased"),
])
def test_wire_round_trip(obj: dict[str, Any]) -> None:
    event = parse(obj)
    assert isinstance(event, Event)
    assert event_to_wire(event) == obj
    assert parse_event(encode_event(event), currency="PLN") == event


def test_every_reason_code_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for reason in REASONS:
        assert f"`{reason}`" in text, reason
    assert {"malformed_json", "missing_field", "bad_type", "bad_timestamp",
                       "unknown_event_type", "negative_amount", "currency_mismatch", "too_late",
                       "too_far_in_future", "duplicate"} <= REASONS


# --- fuzzing: nothing raises, every rejection has a known reason --------------------------------


def check_outcome(result: object) -> None:
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert result.reason != RejectReason.INTERNAL_ERROR, result
        assert result.message


json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    check_outcome(parse_event(raw, currency="PLN"))


@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(raw: str) -> None:
    check_outcome(parse_event(raw, currency="PLN"))


@given(json_values)
def test_fuzz_arbitrary_json(value: Any) -> None:
    check_outcome(parse(value))


_FIELDS = ("event_id", "customer_id", "type", "ts", "amount", "currency", "order_id", "items",
           "campaign_id", "session_id", "url", "sku", "category", "attributes")
_TEMPLATES = [
    wire("purchase", order_id="o", items=[{"sku": "a", "category": "b", "quantity": 1,
                                           "price": 2.5}]),
    wire("refund"),
    wire("email_click", campaign_id="c"),
    wire("product_view", session_id="s", url="u", sku="k", category="c"),
    wire("profile_update", attributes={"a": 1, "b": "x"}),
    wire("customer_erased"),
]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_TEMPLATES), st.sampled_from(_FIELDS), json_values | st.just(...))
def test_fuzz_valid_event_with_one_field_mutated(
    template: dict[str, Any], name: str, value: Any
) -> None:
    obj = dict(template)
    if value is ...:
        obj.pop(name, None)
    else:
        obj[name] = value
    check_outcome(parse(obj))


@given(st.sampled_from(_TEMPLATES), st.data())
def test_fuzz_item_and_attribute_mutations(template: dict[str, Any], data: st.DataObject) -> None:
    obj = copy.deepcopy(template)
    if "items" in obj:
        key = data.draw(st.sampled_from(["sku", "category", "quantity", "price", "extra"]))
        obj["items"][0][key] = data.draw(json_values)
    elif "attributes" in obj:
        obj["attributes"][data.draw(st.text(max_size=130))] = data.draw(json_values)
    check_outcome(parse(obj))
