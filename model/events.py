"""The event wire format: typed, frozen events and their validation. Pure: no I/O, no clock.

One JSON object per Kafka message (UTF-8, key = customer id). `parse_event` runs every check
that needs neither a clock nor state and returns an `Event` or a `Rejection` with a stable reason
code; it never raises, whatever the bytes. `check_time` adds the clock checks (too_late,
too_far_in_future); `duplicate` is decided by the engine, which holds the dedup state.
See docs/events.md for the contract.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import FrozenInstanceError, dataclass, fields
from datetime import UTC, date, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, cast

import msgspec
import orjson

from model.twin import mutable_twin
from model.wire import (
    MAX_ATTRIBUTE_VALUE_LEN,
    MAX_ATTRIBUTES,
    MAX_ID_LEN,
    MAX_ITEMS,
    MAX_QUANTITY,
    MAX_TS_MS,
    MAX_TS_TEXT_LEN,
    MAX_URL_LEN,
    MIN_TS_MS,
    Item,
    WireEvent,
    fast_decode,
)

# --- types and families -------------------------------------------------------------------------

PURCHASE_TYPES: frozenset[str] = frozenset({"purchase", "refund"})
EMAIL_TYPES: frozenset[str] = frozenset({
    "email_sent", "email_delivered", "email_open", "email_click", "email_bounce",
    "email_unsubscribe",
})
WEB_TYPES: frozenset[str] = frozenset({
    "page_view", "product_view", "add_to_cart", "checkout_started", "form_submit", "download",
    "search",
})
PROFILE_TYPES: frozenset[str] = frozenset({"profile_update", "customer_erased"})
# every event type (the rule language checks type names against it: rules/catalogue.py)
EVENT_TYPES: tuple[str, ...] = (
    "purchase", "refund",
    "email_sent", "email_delivered", "email_open", "email_click", "email_bounce",
    "email_unsubscribe",
    "page_view", "product_view", "add_to_cart", "checkout_started", "form_submit", "download",
    "search",
    "profile_update", "customer_erased",
)

KNOWN_TYPES: frozenset[str] = frozenset(EVENT_TYPES)

if PURCHASE_TYPES | EMAIL_TYPES | WEB_TYPES | PROFILE_TYPES != KNOWN_TYPES:  # pragma: no cover
    raise RuntimeError("model.events type families disagree with EVENT_TYPES")

TOPIC_PURCHASES = "purchases"
TOPIC_EMAIL = "email-events"
TOPIC_WEB = "web-activity"
TOPIC_PROFILES = "customer-profiles"

TOPIC_FOR_TYPE: Mapping[str, str] = MappingProxyType({
    **dict.fromkeys(sorted(PURCHASE_TYPES), TOPIC_PURCHASES),
    **dict.fromkeys(sorted(EMAIL_TYPES), TOPIC_EMAIL),
    **dict.fromkeys(sorted(WEB_TYPES), TOPIC_WEB),
    **dict.fromkeys(sorted(PROFILE_TYPES), TOPIC_PROFILES),
})

# --- limits: model/wire.py (MAX_ID_LEN, ..., shared with the fast path's schema) ----------


class RejectReason(StrEnum):
    """Stable reason codes of rejected events (the values are the wire/metric names)."""

    MALFORMED_JSON = "malformed_json"  # not parseable as JSON (incl. numbers beyond float range)
    BAD_ENCODING = "bad_encoding"  # bytes are not valid UTF-8 (or a str holds lone surrogates)
    NOT_AN_OBJECT = "not_an_object"  # valid JSON, but the top level is not an object
    MISSING_FIELD = "missing_field"  # a required field is absent or null
    BAD_TYPE = "bad_type"  # a field has the wrong JSON type (e.g. a string where a number goes)
    BAD_VALUE = "bad_value"  # right type, invalid value (empty id, currency not ISO 4217, ...)
    FIELD_TOO_LONG = "field_too_long"  # a string is longer than its limit
    BAD_TIMESTAMP = "bad_timestamp"  # ts is not RFC 3339 with an offset nor int epoch ms in range
    UNKNOWN_EVENT_TYPE = "unknown_event_type"  # type is a string but not a known event type
    NEGATIVE_AMOUNT = "negative_amount"  # amount or an item price is < 0
    CURRENCY_MISMATCH = "currency_mismatch"  # currency differs from the rule file's currency
    TOO_MANY_ITEMS = "too_many_items"  # items has more than MAX_ITEMS entries
    TOO_MANY_ATTRIBUTES = "too_many_attributes"  # attributes has more than MAX_ATTRIBUTES keys
    TOO_LATE = "too_late"  # ts < now - retention
    TOO_FAR_IN_FUTURE = "too_far_in_future"  # ts > now + future tolerance
    DUPLICATE = "duplicate"  # event_id already applied for this customer within the dedup horizon
    INTERNAL_ERROR = "internal_error"  # a validator bug; reported, never raised


# --- values -------------------------------------------------------------------------------------

AttributeValue = str | int | float | bool | None


class Attributes(Mapping[str, AttributeValue]):
    """A read-only, hashable, picklable mapping of profile attributes."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, AttributeValue] | None = None) -> None:
        self._data: dict[str, AttributeValue] = dict(data) if data else {}

    def __getitem__(self, key: str) -> AttributeValue:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Attributes):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"Attributes({self._data!r})"

    def __reduce__(self) -> tuple[type[Attributes], tuple[dict[str, AttributeValue]]]:
        return (Attributes, (self._data,))



# Compiled, Event is a native class: its fields are read as C struct members (not through the
# generic attribute lookup, ~160 instructions each, a dozen per event) and made by the written
# __init__ below (a generated one runs interpreted). Frozen by __setattr__, as a frozen
# dataclass is (`frozen=True` would not let the compiled __init__ store its fields): equal,
# hashed and printed by its fields, FrozenInstanceError on any assignment.
_COMPILED: Final = not __file__.endswith(".py")
_oset: Final = object.__setattr__


@dataclass(slots=True, init=False, unsafe_hash=True)
class Event:
    """One validated event. A single class for every type keeps the engine's hot path simple;
    fields that do not belong to the event's family keep their defaults."""

    event_id: str
    customer_id: str
    type: str
    ts: int  # epoch milliseconds, UTC
    amount: float = 0.0
    currency: str | None = None
    order_id: str | None = None
    items: tuple[Item, ...] = ()
    campaign_id: str | None = None
    session_id: str | None = None
    url: str | None = None
    sku: str | None = None
    category: str | None = None
    attributes: Mapping[str, AttributeValue] | None = None  # profile_update only (Attributes)

    def __init__(self, event_id: str, customer_id: str, type: str, ts: int,
                 amount: float = 0.0, currency: str | None = None,
                 order_id: str | None = None, items: tuple[Item, ...] = (),
                 campaign_id: str | None = None, session_id: str | None = None,
                 url: str | None = None, sku: str | None = None,
                 category: str | None = None,
                 attributes: Mapping[str, AttributeValue] | None = None) -> None:
        if _COMPILED:  # native stores (they do not go through __setattr__)
            self.event_id = event_id
            self.customer_id = customer_id
            self.type = type
            self.ts = ts
            self.amount = amount
            self.currency = currency
            self.order_id = order_id
            self.items = items
            self.campaign_id = campaign_id
            self.session_id = session_id
            self.url = url
            self.sku = sku
            self.category = category
            self.attributes = attributes
        else:  # as a frozen dataclass's __init__ does
            for name, value in zip(_EVENT_FIELDS, (
                    event_id, customer_id, type, ts, amount, currency, order_id, items, campaign_id,
                    session_id, url, sku, category, attributes), strict=True):
                _oset(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # copy and pickle: compiled, the class cannot be made without its __init__ arguments
        return (Event, tuple(getattr(self, name) for name in _EVENT_FIELDS))


_EVENT_FIELDS: Final = tuple(f.name for f in fields(Event))  # plain __init__, __reduce__


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was refused. event_id/customer_id are filled when they could be read."""

    reason: str  # a RejectReason value
    message: str
    field: str | None = None
    event_id: str | None = None
    customer_id: str | None = None


_ItemTwin: Final = mutable_twin(Item)


def new_event(
    event_id: str,
    customer_id: str,
    type: str,
    ts: int,
    amount: float = 0.0,
    currency: str | None = None,
    order_id: str | None = None,
    items: tuple[Item, ...] = (),
    campaign_id: str | None = None,
    session_id: str | None = None,
    url: str | None = None,
    sku: str | None = None,
    category: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Event:
    """Same as Event(...) (kept for its callers: it was the fast way to make one before Event
    became a native class). Validates nothing."""
    return Event(event_id, customer_id, type, ts, amount, currency, order_id, items,
                 campaign_id, session_id, url, sku, category, attributes)


_new: Final = object.__new__  # a twin made with it and filled by plain stores skips the generated
# __init__'s call: three times faster for an Item (0.2 us instead of 0.65)


def new_item(sku: str, category: str, quantity: int, price: float) -> Item:
    """Same as Item(...), faster (see model/twin.py). Validates nothing."""
    item = _new(_ItemTwin)
    item.sku = sku
    item.category = category
    item.quantity = quantity
    item.price = price
    item.__class__ = Item
    return cast(Item, item)


# --- timestamps ---------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):(\d\d))",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_DAY_MS: Final = 86_400_000


def parse_rfc3339(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 date-time with a zone offset ('Z', 'z' or '+hh:mm'),
    'T', 't' or ' ' as separator, any number of fractional digits (truncated to milliseconds),
    second 60 (leap second) read as the next second. None if the text is not such a date-time
    or lies outside [MIN_TS_MS, MAX_TS_MS]."""
    if len(text) > MAX_TS_TEXT_LEN:
        return None
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    offset_minutes = m.group(10)
    if offset_minutes is not None and offset_minutes > "59":  # fromisoformat allows +02:60
        return None
    try:  # fast path (C): the grammar is checked above, fromisoformat checks the ranges
        delta = datetime.fromisoformat(text) - _EPOCH
        ms = delta.days * _DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000
    except (ValueError, OverflowError):  # lowercase t/z, leap second, out of range
        return _rfc3339_fields_to_ms(m)
    return ms if MIN_TS_MS <= ms <= MAX_TS_MS else None


def _rfc3339_fields_to_ms(m: re.Match[str]) -> int | None:
    year, month, day, hour, minute, second, frac, sign, off_h, off_m = m.groups()
    h, mi, s = int(hour), int(minute), int(second)
    if h > 23 or mi > 59 or s > 60:
        return None
    try:
        ordinal = date(int(year), int(month), int(day)).toordinal()
    except ValueError:
        return None
    ms = (ordinal - _EPOCH_ORDINAL) * _DAY_MS + ((h * 60 + mi) * 60 + s) * 1000
    if frac is not None:
        ms += int((frac + "00")[:3])
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            return None
        offset = (oh * 60 + om) * 60_000
        ms = ms - offset if sign == "+" else ms + offset
    return ms if MIN_TS_MS <= ms <= MAX_TS_MS else None


# --- validation ---------------------------------------------------------------------------------

_FAMILY_PURCHASE: Final = 0
_FAMILY_EMAIL: Final = 1
_FAMILY_WEB: Final = 2
_FAMILY_PROFILE_UPDATE: Final = 3
_FAMILY_ERASED: Final = 4
_FAMILY: Final[dict[str, int]] = {
    **dict.fromkeys(PURCHASE_TYPES, _FAMILY_PURCHASE),
    **dict.fromkeys(EMAIL_TYPES, _FAMILY_EMAIL),
    **dict.fromkeys(WEB_TYPES, _FAMILY_WEB),
    "profile_update": _FAMILY_PROFILE_UPDATE,
    "customer_erased": _FAMILY_ERASED,
}

_R = RejectReason


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


class _Reject(Exception):  # internal control flow, never escapes parse_dict
    __slots__ = ("field", "message", "reason")

    def __init__(self, reason: RejectReason, field: str, message: str) -> None:
        self.reason = reason
        self.field = field
        self.message = message


def _string_problem(name: str, value: object, limit: int) -> _Reject:
    if value is None:
        return _Reject(_R.MISSING_FIELD, name, f"missing required field {name!r}")
    if not isinstance(value, str):
        return _Reject(_R.BAD_TYPE, name,
                       f"field {name!r} must be a string, got {_json_type(value)}")
    if not value:
        return _Reject(_R.BAD_VALUE, name, f"field {name!r} must not be empty")
    return _Reject(_R.FIELD_TOO_LONG, name,
                   f"field {name!r} is {len(value)} characters long, the limit is {limit}")


def _opt_str(obj: Mapping[str, Any], name: str, limit: int = MAX_ID_LEN) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, str) and 0 < len(value) <= limit:
        return value
    raise _string_problem(name, value, limit)


def _req_str(obj: Mapping[str, Any], name: str, label: str, limit: int = MAX_ID_LEN) -> str:
    value = obj.get(name)
    if isinstance(value, str) and 0 < len(value) <= limit:
        return value
    raise _string_problem(label, value, limit)


def _amount(value: object, name: str) -> float:
    """A finite number >= 0 (bool is not a number)."""
    if value is None:
        raise _Reject(_R.MISSING_FIELD, name, f"missing required field {name!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject(_R.BAD_TYPE, name,
                      f"field {name!r} must be a number, got {_json_type(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _Reject(_R.BAD_VALUE, name, f"field {name!r} must be a finite number")
    if number < 0:
        raise _Reject(_R.NEGATIVE_AMOUNT, name, f"field {name!r} must be >= 0, got {value!r}")
    return number


def _items(value: object) -> tuple[Item, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise _Reject(_R.BAD_TYPE, "items",
                      f"field 'items' must be an array, got {_json_type(value)}")
    if len(value) > MAX_ITEMS:
        raise _Reject(_R.TOO_MANY_ITEMS, "items",
                      f"field 'items' has {len(value)} entries, the limit is {MAX_ITEMS}")
    out = []
    for i, entry in enumerate(value):
        if type(entry) is dict:  # fast path for the common, valid item
            sku = entry.get("sku")
            category = entry.get("category")
            quantity = entry.get("quantity")
            price = entry.get("price")
            if (type(sku) is str and 0 < len(sku) <= MAX_ID_LEN
                    and type(category) is str and 0 < len(category) <= MAX_ID_LEN
                    and type(quantity) is int and 1 <= quantity <= MAX_QUANTITY
                    and (type(price) is float or type(price) is int) and 0 <= price < math.inf):
                out.append(new_item(sku, category, quantity, float(price)))
                continue
        out.append(_item(entry, f"items[{i}]"))
    return tuple(out)


def _item(entry: object, where: str) -> Item:
    """The careful check of one item: returns it or raises the precise problem."""
    if not isinstance(entry, Mapping):
        raise _Reject(_R.BAD_TYPE, where,
                      f"field {where!r} must be an object, got {_json_type(entry)}")
    sku = _req_str(entry, "sku", f"{where}.sku")
    category = _req_str(entry, "category", f"{where}.category")
    quantity = entry.get("quantity")
    qname = f"{where}.quantity"
    if quantity is None:
        raise _Reject(_R.MISSING_FIELD, qname, f"missing required field {qname!r}")
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise _Reject(_R.BAD_TYPE, qname,
                      f"field {qname!r} must be an integer, got {_json_type(quantity)}"
                      + (f" {quantity!r}" if isinstance(quantity, float) else ""))
    if quantity < 1 or quantity > MAX_QUANTITY:
        raise _Reject(_R.BAD_VALUE, qname,
                      f"field {qname!r} must be between 1 and {MAX_QUANTITY}, got {quantity}")
    price = _amount(entry.get("price"), f"{where}.price")
    return Item(sku, category, int(quantity), price)


def _attributes(value: object) -> Attributes:
    if value is None:
        raise _Reject(_R.MISSING_FIELD, "attributes", "missing required field 'attributes'")
    if not isinstance(value, Mapping):
        raise _Reject(_R.BAD_TYPE, "attributes",
                      f"field 'attributes' must be an object, got {_json_type(value)}")
    if len(value) > MAX_ATTRIBUTES:
        raise _Reject(_R.TOO_MANY_ATTRIBUTES, "attributes",
                      f"field 'attributes' has {len(value)} keys, the limit is {MAX_ATTRIBUTES}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_ID_LEN:
            raise _string_problem("attributes key", key, MAX_ID_LEN)
        name = f"attributes.{key}"
        if item is None or item is True or item is False:
            continue
        kind = type(item)
        if kind is str:
            if len(item) > MAX_ATTRIBUTE_VALUE_LEN:
                raise _Reject(_R.FIELD_TOO_LONG, name,
                              f"field {name!r} is {len(item)} characters long, "
                              f"the limit is {MAX_ATTRIBUTE_VALUE_LEN}")
        elif kind is int:
            pass
        elif kind is float:
            if not math.isfinite(item):
                raise _Reject(_R.BAD_VALUE, name, f"field {name!r} must be a finite number")
        else:
            raise _Reject(_R.BAD_TYPE, name,
                          f"field {name!r} must be a string, number, boolean or null, "
                          f"got {_json_type(item)}")
    return Attributes(value)


def _currency(value: object, expected: str) -> str:
    if value is None:
        raise _Reject(_R.MISSING_FIELD, "currency", "missing required field 'currency'")
    if not isinstance(value, str):
        raise _Reject(_R.BAD_TYPE, "currency",
                      f"field 'currency' must be a string, got {_json_type(value)}")
    if value == expected:
        return value
    if len(value) != 3 or not (value.isascii() and value.isalpha() and value.isupper()):
        raise _Reject(_R.BAD_VALUE, "currency",
                      f"field 'currency' must be an ISO 4217 code (3 capital letters), "
                      f"got {value[:16]!r}")
    raise _Reject(_R.CURRENCY_MISMATCH, "currency",
                  f"field 'currency' is {value!r}, the rules use {expected!r}")


def _timestamp(value: object) -> int:
    if type(value) is int:
        if MIN_TS_MS <= value <= MAX_TS_MS:
            return value
        raise _Reject(_R.BAD_TIMESTAMP, "ts",
                      f"field 'ts' epoch milliseconds {value} is outside "
                      f"[{MIN_TS_MS}, {MAX_TS_MS}]")
    if isinstance(value, str):
        ms = parse_rfc3339(value)
        if ms is not None:
            return ms
        raise _Reject(_R.BAD_TIMESTAMP, "ts",
                      f"field 'ts' must be RFC 3339 with a zone offset "
                      f"(e.g. 2024-05-01T12:00:00Z), got {value[:40]!r}")
    if value is None:
        raise _Reject(_R.MISSING_FIELD, "ts", "missing required field 'ts'")
    if isinstance(value, float):
        raise _Reject(_R.BAD_TIMESTAMP, "ts",
                      f"field 'ts' must be integer epoch milliseconds, got {value!r}")
    raise _Reject(_R.BAD_TYPE, "ts", f"field 'ts' must be a string or an integer, "
                                      f"got {_json_type(value)}")


def parse_dict(obj: Mapping[str, Any], *, currency: str) -> Event | Rejection:
    """Validate an already decoded JSON object (see parse_event). Never raises."""
    event_id: str | None = None
    customer_id: str | None = None
    if not isinstance(obj, Mapping):
        return Rejection(_R.NOT_AN_OBJECT,
                         f"an event must be a JSON object, got {_json_type(obj)}")
    try:
        event_id = _req_str(obj, "event_id", "event_id")
        customer_id = _req_str(obj, "customer_id", "customer_id")
        etype = obj.get("type")
        if not isinstance(etype, str):
            if etype is None:
                raise _Reject(_R.MISSING_FIELD, "type", "missing required field 'type'")
            raise _Reject(_R.BAD_TYPE, "type",
                          f"field 'type' must be a string, got {_json_type(etype)}")
        family = _FAMILY.get(etype)
        if family is None:
            raise _Reject(_R.UNKNOWN_EVENT_TYPE, "type",
                          f"field 'type' is {etype[:40]!r}, not a known event type")
        ts = _timestamp(obj.get("ts"))
        amount = 0.0
        cur = order_id = campaign_id = session_id = url = sku = category = None
        items: tuple[Item, ...] = ()
        attributes = None
        if family == _FAMILY_WEB:
            session_id = _opt_str(obj, "session_id")
            url = _opt_str(obj, "url", MAX_URL_LEN)
            sku = _opt_str(obj, "sku")
            category = _opt_str(obj, "category")
        elif family == _FAMILY_EMAIL:
            campaign_id = _opt_str(obj, "campaign_id")
        elif family == _FAMILY_PURCHASE:
            amount = _amount(obj.get("amount"), "amount")
            cur = _currency(obj.get("currency"), currency)
            order_id = _opt_str(obj, "order_id")
            items = _items(obj.get("items"))
        elif family == _FAMILY_PROFILE_UPDATE:
            attributes = _attributes(obj.get("attributes"))
        return Event(event_id, customer_id, etype, ts, amount, cur, order_id, items,
                     campaign_id, session_id, url, sku, category, attributes)
    except _Reject as rej:
        return Rejection(rej.reason, rej.message, rej.field, event_id, customer_id)
    except Exception as exc:  # a validator bug: keep the never-raises contract, say so loudly
        return Rejection(_R.INTERNAL_ERROR, f"validator error {type(exc).__name__}: {exc}",
                         None, event_id, customer_id)


def parse_event(
    raw: bytes | bytearray | memoryview | str, *, currency: str
) -> Event | Rejection:
    """Decode and validate one message value: everything but the clock and dedup checks.

    `currency` is the rule file's `settings.currency`. Returns an Event or a Rejection, never
    raises. The common, valid event takes the fast path (`_fast_event`); anything it does not
    accept as is goes through `parse_event_checked`, which gives the precise rejection."""
    event = _fast_event(raw, currency)
    if event is not None:
        return event
    return parse_event_checked(raw, currency=currency)


def parse_event_checked(
    raw: bytes | bytearray | memoryview | str, *, currency: str
) -> Event | Rejection:
    """parse_event without the fast path: orjson, then parse_dict's field-by-field checks."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _decode_rejection(raw, exc)
    except Exception as exc:  # pragma: no cover - orjson raises JSONDecodeError for everything
        return Rejection(_R.MALFORMED_JSON, f"cannot decode JSON: {exc}")
    if type(obj) is not dict:
        return Rejection(_R.NOT_AN_OBJECT,
                         f"an event must be a JSON object, got {_json_type(obj)}")
    return parse_dict(obj, currency=currency)


# --- the fast path -------------------------------------------------------------------------------
# msgspec decodes and checks the common, valid event in one C pass (~1 us instead of ~4). Its
# schema is stricter than parse_dict: no unknown field, every field of every family typed and
# bounded whatever the event's type, no bool for a number, integers as JSON integers. So every
# message it accepts is one parse_dict accepts too, with the same Event (the property test in
# tests/model/test_events_fast.py holds the two paths equal); everything else, valid or not,
# takes the checked path and gets its precise rejection there. The schema is in model/wire.py.

_I64_MIN, _U64_MAX = -(1 << 63), (1 << 64) - 1


# WireEvent's fields by position: compiled, a tuple's items are read directly, a Struct's
# attributes only through the generic attribute lookup (~160 instructions each, ~11 an event)
_W_FIELDS: Final = ("event_id", "customer_id", "type", "ts", "amount", "currency", "order_id",
                    "items", "campaign_id", "session_id", "url", "sku", "category",
                    "attributes")
if WireEvent.__struct_fields__ != _W_FIELDS:
    raise RuntimeError("model/events.py: _W_FIELDS out of step with model/wire.py WireEvent")
_astuple: Final = msgspec.structs.astuple
# Final here: statics of this module when compiled (an imported name is a dict lookup per read)
_fast_decode: Final = fast_decode
_MIN_TS: Final[int] = MIN_TS_MS
_MAX_TS: Final[int] = MAX_TS_MS
_W_ID: Final = 0
_W_CUSTOMER: Final = 1
_W_TYPE: Final = 2
_W_TS: Final = 3
_W_AMOUNT: Final = 4
_W_CURRENCY: Final = 5
_W_ORDER: Final = 6
_W_ITEMS: Final = 7
_W_CAMPAIGN: Final = 8
_W_SESSION: Final = 9
_W_URL: Final = 10
_W_SKU: Final = 11
_W_CATEGORY: Final = 12
_W_ATTRIBUTES: Final = 13


def _fast_event(raw: bytes | bytearray | memoryview | str, currency: str) -> Event | None:
    """The Event of a common, valid message, or None for parse_event_checked to decide."""
    try:
        w: tuple[Any, ...] = _astuple(_fast_decode(raw))  # in _W_FIELDS' order
    except Exception:  # invalid, or not bytes at all: the checked path says what it is
        return None
    wire_ts = w[_W_TS]
    if type(wire_ts) is int:
        if not _MIN_TS <= wire_ts <= _MAX_TS:
            return None
        ts: int = wire_ts
    else:
        parsed = parse_rfc3339(cast(str, wire_ts))
        if parsed is None:
            return None
        ts = parsed
    etype: str = w[_W_TYPE]
    family = _FAMILY.get(etype)
    if family == _FAMILY_PURCHASE:
        amount = w[_W_AMOUNT]
        if amount is None or w[_W_CURRENCY] != currency:
            return None
        # msgspec decoded the items as a tuple of Items (model/wire.py)
        return Event(w[_W_ID], w[_W_CUSTOMER], etype, ts, amount, currency, w[_W_ORDER],
                     w[_W_ITEMS] or ())
    if family == _FAMILY_WEB:
        return Event(w[_W_ID], w[_W_CUSTOMER], etype, ts, 0.0, None, None, (), None,
                     w[_W_SESSION], w[_W_URL], w[_W_SKU], w[_W_CATEGORY])
    if family == _FAMILY_EMAIL:
        return Event(w[_W_ID], w[_W_CUSTOMER], etype, ts, 0.0, None, None, (),
                     w[_W_CAMPAIGN])
    if family == _FAMILY_PROFILE_UPDATE:
        attrs: dict[str, Any] | None = w[_W_ATTRIBUTES]
        if attrs is None or len(attrs) > MAX_ATTRIBUTES:
            return None
        for key, value in attrs.items():
            if not key or len(key) > MAX_ID_LEN:
                return None
            if type(value) is str:
                if len(value) > MAX_ATTRIBUTE_VALUE_LEN:
                    return None
            elif type(value) is int:
                if not _I64_MIN <= value <= _U64_MAX:  # orjson reads these as floats
                    return None
            elif type(value) is float and not math.isfinite(value):
                return None
        return Event(w[_W_ID], w[_W_CUSTOMER], etype, ts, attributes=Attributes(attrs))
    if family is None:
        return None
    # a type of no family here (erasure): the identity fields only
    return Event(w[_W_ID], w[_W_CUSTOMER], etype, ts)


def _decode_rejection(raw: object, exc: Exception) -> Rejection:
    try:
        if isinstance(raw, str):
            raw.encode("utf-8")
        elif isinstance(raw, bytes | bytearray | memoryview):
            bytes(raw).decode("utf-8")
        else:
            return Rejection(_R.MALFORMED_JSON,
                             f"an event must be bytes or str, got {type(raw).__name__}")
    except UnicodeError as uexc:
        return Rejection(_R.BAD_ENCODING, f"message is not valid UTF-8: {uexc}")
    return Rejection(_R.MALFORMED_JSON, f"malformed JSON: {exc}")


def check_time(
    event: Event, *, now_ms: int, retention_ms: int, future_tolerance_ms: int
) -> Rejection | None:
    """The clock checks: too_late if ts < now - retention, too_far_in_future if
    ts > now + future tolerance; None if the event is in time."""
    if event.ts < now_ms - retention_ms:
        return Rejection(_R.TOO_LATE,
                         f"field 'ts' is {now_ms - event.ts} ms before now, "
                         f"older than the retention of {retention_ms} ms",
                         "ts", event.event_id, event.customer_id)
    if event.ts > now_ms + future_tolerance_ms:
        return Rejection(_R.TOO_FAR_IN_FUTURE,
                         f"field 'ts' is {event.ts - now_ms} ms ahead of now, "
                         f"more than the tolerance of {future_tolerance_ms} ms",
                         "ts", event.event_id, event.customer_id)
    return None


# --- encoding -----------------------------------------------------------------------------------


def event_to_wire(event: Event) -> dict[str, object]:
    """The wire object of an event: the common fields (ts as int epoch ms) and the fields of its
    family that are set. parse_event(encode_event(e), currency=...) == e for a valid event."""
    wire: dict[str, object] = {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "type": event.type,
        "ts": event.ts,
    }
    family = _FAMILY.get(event.type)
    if family == _FAMILY_WEB:
        if event.session_id is not None:
            wire["session_id"] = event.session_id
        if event.url is not None:
            wire["url"] = event.url
        if event.sku is not None:
            wire["sku"] = event.sku
        if event.category is not None:
            wire["category"] = event.category
    elif family == _FAMILY_EMAIL:
        if event.campaign_id is not None:
            wire["campaign_id"] = event.campaign_id
    elif family == _FAMILY_PURCHASE:
        wire["amount"] = event.amount
        wire["currency"] = event.currency
        if event.order_id is not None:
            wire["order_id"] = event.order_id
        if event.items:
            wire["items"] = [
                {"sku": i.sku, "category": i.category, "quantity": i.quantity, "price": i.price}
                for i in event.items
            ]
    elif family == _FAMILY_PROFILE_UPDATE:
        wire["attributes"] = dict(event.attributes) if event.attributes is not None else {}
    return wire


def encode_event(event: Event) -> bytes:
    """UTF-8 JSON bytes of event_to_wire(event)."""
    return orjson.dumps(event_to_wire(event))
