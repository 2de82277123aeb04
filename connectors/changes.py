"""Reading segment-change records (the values of `segment-changes`) on the consumer side.

The producer side is `model.changes.SegmentChange.to_wire`; this module checks what the
connectors rely on and never trusts the rest blindly.

A record with a null value is a tombstone: the worker writes one (key = customer id) right
after an erasure's change record, so that compaction of `segment-changes` forgets the customer.
`decode_record` returns it as a `Tombstone`; it is not a change and not an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from model.changes import CAUSE_ERASURE
from model.errors import ChangeRecordError


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """A decoded segment change. `wire` is the whole JSON object as received."""

    customer_id: str
    seq: int
    at: str  # RFC 3339, as written by the engine
    cause_kind: str
    rules_version: str
    entered: tuple[str, ...]
    exited: tuple[str, ...]
    segments: tuple[str, ...]  # sorted, full membership after the change
    groups: Mapping[str, Mapping[str, str | None]]  # group -> {"from": seg|None, "to": seg|None}
    details: Mapping[str, Mapping[str, Any]]  # entered/exited segment -> label, color, ...
    wire: Mapping[str, Any] = field(repr=False)

    @property
    def quiet(self) -> bool:
        """A quiet rule roll-out's change: views apply it, follow-ups skip it."""
        return self.wire.get("quiet") is True

    @property
    def is_erasure(self) -> bool:
        return self.cause_kind == CAUSE_ERASURE

    @property
    def pipeline(self) -> Mapping[str, Any] | None:
        """The pipeline move {"from", "to"[, "follow_ups"]}, present only when the customer
        changed pipeline (rule files with `pipelines:`)."""
        move = self.wire.get("pipeline")
        return move if isinstance(move, dict) else None

    @property
    def control(self) -> frozenset[str]:
        """The entered/exited segments whose control group holds this customer out."""
        held = self.wire.get("control")
        if not isinstance(held, list):
            return frozenset()
        return frozenset(s for s in held if isinstance(s, str))

    def group_of(self, segment: str) -> str | None:
        """The group of an entered or exited segment, as far as this change tells."""
        for name, move in self.groups.items():
            if segment in (move.get("from"), move.get("to")):
                return name
        return None


def _strings(obj: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = obj.get(name, [])
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ChangeRecordError(f"field {name!r} must be an array of non-empty strings")
    return tuple(value)


def change_from_wire(obj: object, key: bytes | None = None) -> ChangeRecord:
    """Check a decoded change object; ChangeRecordError if a connector cannot use it."""
    if not isinstance(obj, dict):
        raise ChangeRecordError("a segment change must be a JSON object")
    customer_id = obj.get("customer_id")
    if customer_id is None and key is not None:
        try:
            customer_id = key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ChangeRecordError("the record key is not UTF-8") from exc
    if not isinstance(customer_id, str) or not customer_id:
        raise ChangeRecordError("field 'customer_id' must be a non-empty string")
    seq = obj.get("seq")
    if type(seq) is not int or seq < 0:
        raise ChangeRecordError("field 'seq' must be an integer >= 0")
    at = obj.get("at")
    if not isinstance(at, str):
        raise ChangeRecordError("field 'at' must be a string (RFC 3339)")
    cause = obj.get("cause")
    kind = cause.get("kind") if isinstance(cause, dict) else None
    if not isinstance(kind, str):
        raise ChangeRecordError("field 'cause.kind' must be a string")
    rules_version = obj.get("rules_version", "")
    if not isinstance(rules_version, str):
        raise ChangeRecordError("field 'rules_version' must be a string")
    groups_raw = obj.get("groups") or {}
    if not isinstance(groups_raw, dict):
        raise ChangeRecordError("field 'groups' must be an object")
    groups: dict[str, dict[str, str | None]] = {}
    for name, move in groups_raw.items():
        if not name or not isinstance(move, dict):
            raise ChangeRecordError(f"groups.{name} must be an object {{from, to}}")
        before, after = move.get("from"), move.get("to")
        if not all(v is None or (isinstance(v, str) and v) for v in (before, after)):
            raise ChangeRecordError(f"groups.{name}.from/to must be segment ids or null")
        groups[name] = {"from": before, "to": after}
    details_raw = obj.get("details") or {}
    if not isinstance(details_raw, dict) or not all(
            isinstance(v, dict) for v in details_raw.values()):
        raise ChangeRecordError("field 'details' must be an object of objects")
    return ChangeRecord(
        customer_id=customer_id, seq=seq, at=at, cause_kind=kind, rules_version=rules_version,
        entered=_strings(obj, "entered"), exited=_strings(obj, "exited"),
        segments=tuple(sorted(set(_strings(obj, "segments")))), groups=groups,
        details=details_raw, wire=obj)


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A null-value record of `segment-changes`: `customer_id` was erased. It follows the
    erasure's change record; after compaction it may be all that is left of the customer."""

    customer_id: str


def decode_record(value: bytes | None, key: bytes | None) -> ChangeRecord | Tombstone:
    """Decode one `segment-changes` record: a change, or a tombstone (null value)."""
    if value is None:
        if key is None:
            raise ChangeRecordError("a record with neither key nor value")
        try:
            customer_id = key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ChangeRecordError("the tombstone's key is not UTF-8") from exc
        if not customer_id:
            raise ChangeRecordError("a tombstone with an empty key")
        return Tombstone(customer_id)
    return decode_change(value, key)


def decode_change(value: bytes | None, key: bytes | None = None) -> ChangeRecord:
    """Decode one `segment-changes` record value (the key is used when customer_id is absent).
    A tombstone (null value) is refused here: read with `decode_record`, or skip it first."""
    if value is None:
        raise ChangeRecordError("a tombstone (null value), not a change")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ChangeRecordError(f"not JSON: {exc}") from exc
    return change_from_wire(obj, key)
