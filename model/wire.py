"""The wire schemas msgspec works with: the event decoder's fast path (model/events.py says how
the two paths relate), the limits it shares with the checked path, `Item` (decoded straight
into), and the segment-change record as written (model/changes.py `change_json`).

A module of its own, never compiled by mypyc (model/native.py): msgspec reads the field types
from the class annotations, which a compiled class body does not keep as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

# --- limits ----------------------------------------------------------------------------------

MAX_ID_LEN = 128  # event_id, customer_id, order_id, campaign_id, session_id, sku, category
MAX_URL_LEN = 2048
MAX_ITEMS = 1000
MAX_QUANTITY = 1_000_000
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_VALUE_LEN = 1024
MIN_TS_MS = 0  # 1970-01-01T00:00:00Z
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write
MAX_TS_TEXT_LEN = 64
DEFAULT_FUTURE_TOLERANCE_MS = 5 * 60_000

WireId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)]
WireUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_LEN)]
WireMoney = Annotated[float, msgspec.Meta(ge=0.0, le=1.7976931348623157e308)]  # finite, >= 0


@dataclass(frozen=True, slots=True)
class Item:
    """One line of a purchase (model.events.Item, defined here): msgspec decodes a purchase's
    items straight into Items, with the constraints of the wire format in the field types
    (checked when decoding only; `Item(...)` validates nothing, as before). Unknown fields of
    an item are ignored, as the checked path ignores them."""

    sku: WireId
    category: WireId
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
    price: WireMoney


class WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """(gc=False: never in a reference cycle, lives for one parse; not tracked by the cyclic
    collector, cheaper to make and free.)"""

    event_id: WireId
    customer_id: WireId
    type: str
    ts: int | Annotated[str, msgspec.Meta(max_length=MAX_TS_TEXT_LEN)]
    amount: WireMoney | None = None
    currency: str | None = None
    order_id: WireId | None = None
    items: Annotated[tuple[Item, ...], msgspec.Meta(max_length=MAX_ITEMS)] | None = None
    campaign_id: WireId | None = None
    session_id: WireId | None = None
    url: WireUrl | None = None
    sku: WireId | None = None
    category: WireId | None = None
    attributes: dict[str, str | int | float | bool | None] | None = None


fast_decode = msgspec.json.Decoder(WireEvent).decode


# --- the segment-change record, as written ---------------------------------------------------
# Structs, not dicts: made with positional arguments, encoded with their field names encoded
# once (a change record through a dict: ~2x the work). Field order is the record's key order.


class WireEventCause(msgspec.Struct, gc=False):
    kind: str
    event_id: str
    event_type: str | None
    event_ts: str | None


class WireKindCause(msgspec.Struct, gc=False):
    kind: str


class WireChange(msgspec.Struct, omit_defaults=True, gc=False):
    """Written without `quiet`, `pipeline` and `control` when they are at their defaults."""

    customer_id: str
    seq: int
    at: str
    cause: WireEventCause | WireKindCause
    rules_version: str
    entered: Any
    exited: Any
    segments: Any
    groups: Any
    details: Any
    quiet: bool = False
    pipeline: Any = None
    control: Any = ()
