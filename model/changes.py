"""Segment-change records: what the engine emits when a customer's membership changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import FrozenInstanceError, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from model.wire import WireChange, WireEventCause, WireKindCause

CAUSE_EVENT, CAUSE_TIME, CAUSE_RULES, CAUSE_ERASURE = "event", "time", "rules", "erasure"


_DAY_MS: Final = 86_400_000


_DATES: Final[dict[int, str]] = {}  # day -> 'YYYY-MM-DDT' (a dict: cheaper to call than lru_cache)


def _date(day: int) -> str:
    """'YYYY-MM-DDT' of the UTC day `day` (days since the epoch)."""
    text = _DATES.get(day)
    if text is None:
        if len(_DATES) >= 4096:
            _DATES.clear()
        text = _DATES[day] = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%dT")
    return text


def format_ts(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. 2026-11-20T10:15:00.000Z.
    (Every change record carries two: the date part is cached per day, the rest is arithmetic,
    ~5x faster than datetime.strftime per call.)"""
    # `//` and `%`, not divmod: compiled, divmod goes through Python's generic number protocol
    # and a tuple (~4k instructions a call), these are C arithmetic
    rest = ms % _DAY_MS
    sec = rest // 1000
    return (f"{_date(ms // _DAY_MS)}{_TWO[sec // 3600]}:{_TWO[sec // 60 % 60]}:"
            f"{_TWO[sec % 60]}.{_THREE[rest % 1000]}Z")


# zero-padded digits by table: strings joined are several times cheaper than format specs
_TWO: Final = [f"{i:02d}" for i in range(60)]
_THREE: Final = [f"{i:03d}" for i in range(1000)]


# Compiled, Cause and SegmentChange are native classes, as model/events.py's Event (its
# comment says why and how): dataclasses with a written __init__, frozen by __setattr__.
_COMPILED: Final = not __file__.endswith(".py")
_oset: Final = object.__setattr__


@dataclass(slots=True, init=False, unsafe_hash=True)
class Cause:
    kind: str  # event | time | rules | erasure
    event_id: str | None = None
    event_type: str | None = None
    event_ts: int | None = None

    def __init__(self, kind: str, event_id: str | None = None, event_type: str | None = None,
                 event_ts: int | None = None) -> None:
        if _COMPILED:  # native stores (they do not go through __setattr__)
            self.kind = kind
            self.event_id = event_id
            self.event_type = event_type
            self.event_ts = event_ts
        else:  # as a frozen dataclass's __init__ does
            for name, value in zip(_CAUSE_FIELDS, (
                    kind, event_id, event_type, event_ts), strict=True):
                _oset(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # copy and pickle: compiled, the class cannot be made without its __init__ arguments
        return (Cause, tuple(getattr(self, name) for name in _CAUSE_FIELDS))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.event_id is not None:
            out["event_id"] = self.event_id
            out["event_type"] = self.event_type
            out["event_ts"] = format_ts(self.event_ts) if self.event_ts is not None else None
        return out


_CAUSE_FIELDS: Final = tuple(f.name for f in fields(Cause))  # plain __init__, __reduce__


@dataclass(slots=True, init=False, unsafe_hash=True)
class SegmentChange:
    customer_id: str
    seq: int
    at: int  # evaluation instant, epoch ms
    cause: Cause
    rules_version: str
    entered: tuple[str, ...]
    exited: tuple[str, ...]
    segments: tuple[str, ...]  # sorted ids after the change
    groups: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    details: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # a quiet rule roll-out: views apply it, follow-ups (webhooks) skip it unless asked to
    quiet: bool = False
    # only with rule files that have pipelines / control groups (rules/pipelines.py): the
    # pipeline move {"from", "to"[, "follow_ups"]} when the customer changes pipeline, and the
    # entered/exited segments for which this customer is in the control group (held out)
    pipeline: Mapping[str, Any] | None = None
    control: tuple[str, ...] = ()

    def __init__(self, customer_id: str, seq: int, at: int, cause: Cause, rules_version: str,
                 entered: tuple[str, ...], exited: tuple[str, ...], segments: tuple[str, ...],
                 groups: Mapping[str, Mapping[str, str | None]] | None = None,
                 details: Mapping[str, Mapping[str, Any]] | None = None, quiet: bool = False,
                 pipeline: Mapping[str, Any] | None = None,
                 control: tuple[str, ...] = ()) -> None:
        if groups is None:
            groups = {}
        if details is None:
            details = {}
        if _COMPILED:  # native stores (they do not go through __setattr__)
            self.customer_id = customer_id
            self.seq = seq
            self.at = at
            self.cause = cause
            self.rules_version = rules_version
            self.entered = entered
            self.exited = exited
            self.segments = segments
            self.groups = groups
            self.details = details
            self.quiet = quiet
            self.pipeline = pipeline
            self.control = control
        else:  # as a frozen dataclass's __init__ does
            for name, value in zip(_CHANGE_FIELDS, (
                    customer_id, seq, at, cause, rules_version, entered, exited, segments, groups,
                    details, quiet, pipeline, control), strict=True):
                _oset(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (SegmentChange, tuple(getattr(self, name) for name in _CHANGE_FIELDS))

    def to_wire(self) -> dict[str, Any]:
        """The record as plain JSON values (lists, dicts): what to_json writes (written from
        model/wire.py's structs; a property test holds the two equal, keys in order)."""
        out: dict[str, Any] = {
            "customer_id": self.customer_id,
            "seq": self.seq,
            "at": format_ts(self.at),
            "cause": self.cause.to_wire(),
            "rules_version": self.rules_version,
            "entered": list(self.entered),
            "exited": list(self.exited),
            "segments": list(self.segments),
            "groups": {g: dict(v) for g, v in self.groups.items()},
            "details": {s: dict(v) for s, v in self.details.items()},
        }
        if self.quiet:
            out["quiet"] = True
        if self.pipeline is not None:
            out["pipeline"] = dict(self.pipeline)
        if self.control:
            out["control"] = list(self.control)
        return out

    def to_json(self) -> bytes:
        return change_json(self)


_CHANGE_FIELDS: Final = tuple(f.name for f in fields(SegmentChange))  # as _CAUSE_FIELDS


def _plain(obj: object) -> object:
    """msgspec's hook for what it does not encode itself: a read-only mapping as a dict."""
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"a segment change cannot carry a {type(obj).__name__}")


_encode_change: Final = msgspec.json.Encoder(enc_hook=_plain).encode
# Final here: statics of this module when compiled (an imported name is a dict lookup per read)
_WireChange: Final = WireChange
_WireEventCause: Final = WireEventCause
_WireKindCause: Final = WireKindCause


def change_json(ch: SegmentChange) -> bytes:
    """The change record's JSON (`to_wire`'s object, same keys in the same order), written by
    msgspec from the wire structs of model/wire.py: no dict built, the tuples and mappings as
    they are. msgspec, not orjson: the bytes orjson returns keep its ~4 KB working buffer, and
    a worker holds every change record until its commit (model/codec.py)."""
    at = ch.at
    at_text = format_ts(at)
    c = ch.cause
    cause: WireEventCause | WireKindCause
    if c.event_id is not None:
        ts = c.event_ts
        # an event's change is at the event's instant: its timestamp written once
        cause = _WireEventCause(c.kind, c.event_id, c.event_type,
                               None if ts is None else at_text if ts == at else format_ts(ts))
    else:
        cause = _WireKindCause(c.kind)
    control = ch.control
    return _encode_change(_WireChange(
        ch.customer_id, ch.seq, at_text, cause, ch.rules_version, ch.entered, ch.exited,
        ch.segments, ch.groups, ch.details, bool(ch.quiet), ch.pipeline,
        control if control else ()))


def event_cause(event_id: str, event_type: str, event_ts: int) -> Cause:
    """Cause(CAUSE_EVENT, event_id, event_type, event_ts): made for every event-driven change
    (kept for its callers: it was the fast way to make one before Cause became native)."""
    return Cause(CAUSE_EVENT, event_id, event_type, event_ts)


def new_change(customer_id: str, seq: int, at: int, cause: Cause, rules_version: str,
               entered: tuple[str, ...], exited: tuple[str, ...], segments: tuple[str, ...],
               groups: Mapping[str, Mapping[str, str | None]],
               details: Mapping[str, Mapping[str, Any]]) -> SegmentChange:
    """SegmentChange(...) with these fields, the others at their defaults (kept for its
    callers, as event_cause)."""
    return SegmentChange(customer_id, seq, at, cause, rules_version, entered, exited, segments,
                         groups, details)
