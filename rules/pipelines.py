"""Pipelines and control groups: what a customer's membership set means for follow-ups.

**Pipelines.** A rule file may list `pipelines:` in priority order. A pipeline's `when` is a list
of segment ids and group names; a customer is in the *first* pipeline that lists a segment they
are a member of (a group name stands for every segment of that group), else in the default one
(the entry without `when`, or an implicit one named `default`). So the pipeline is a pure
function of the membership set: it can change only when a membership changes, at exactly the
instants segments and groups change (including time-driven exits), and every customer is in
exactly one pipeline at every instant.

**Control groups.** A segment with `control: 10%` holds out a stable share of its members: a
customer is held out of segment `s` when the first 8 bytes of
`blake2b(salt NUL segment id NUL customer id)`, as an unsigned integer divided by 2^64, are below
the share. The salt is the segment's `control_salt`, else `settings.control_salt`, else
`DEFAULT_SALT`; neither the rule version nor anything else enters the hash, so the split is the
same on every run, worker and rule version. Held-out customers still enter the segment.

`Annotator.annotate` adds `pipeline` and `control` to the change records the engine produced
(streams/annotated.py); `PipelineParser` reads the rule file's parts (rules/loader.py).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from model.changes import CAUSE_ERASURE, SegmentChange
from rules.ast import Pos
from rules.model import PipelineDef, RuleFile

DEFAULT_SALT = "segmenter-control"
DEFAULT_PIPELINE = "default"
PIPELINE_KEYS = ("id", "label", "description", "when", "follow_ups")
TRANSITIONS = ("enter", "exit")
_ID_RE = re.compile(r"[a-z][a-z0-9_]*")
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")


# ---------------------------------------------------------------------- runtime


def held_out(customer_id: str, segment_id: str, share: float, salt: str = DEFAULT_SALT) -> bool:
    """Is this customer in the control group of this segment (declared `share`, 0..1)?"""
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(f"{salt}\x00{segment_id}\x00{customer_id}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 18446744073709551616  # 2 ** 64


class _Unset:
    """`before` not given (None is a valid pipeline: a version without pipelines)."""


UNSET = _Unset()


class Annotator:
    """The pipelines and control groups of one rule version, applied to change records."""

    def __init__(self, rule_file: RuleFile) -> None:
        self.pipelines = tuple(p for p in rule_file.pipelines if not p.default)
        defaults = [p for p in rule_file.pipelines if p.default]
        self.default: str | None = (defaults[0].id if defaults else
                                    DEFAULT_PIPELINE if rule_file.pipelines else None)
        self.by_id = {p.id: p for p in rule_file.pipelines}
        self._match = tuple((p.id, p.segments) for p in self.pipelines)
        salt = rule_file.settings.control_salt or DEFAULT_SALT
        self.control: dict[str, tuple[float, str]] = {
            s.id: (s.control_share, s.control_salt or salt)
            for s in rule_file.segments if s.control_share}

    @property
    def active(self) -> bool:
        """False for a rule file without pipelines and control groups (nothing to add)."""
        return self.default is not None or bool(self.control)

    def pipeline_of(self, members: Collection[str]) -> str | None:
        """The pipeline of a customer with these segments (None: the file has no pipelines)."""
        for pid, segs in self._match:
            if not segs.isdisjoint(members):
                return pid
        return self.default

    def held_out(self, customer_id: str, segment_id: str) -> bool:
        spec = self.control.get(segment_id)
        return spec is not None and held_out(customer_id, segment_id, spec[0], spec[1])

    def control_of(self, customer_id: str, segments: Iterable[str]) -> tuple[str, ...]:
        """The given segments (sorted) that hold this customer out."""
        if not self.control:
            return ()
        return tuple(sorted(s for s in set(segments) if self.held_out(customer_id, s)))

    def move(self, before: str | None, after: str | None,
             previous: Annotator | None = None) -> dict[str, Any]:
        """The `pipeline` field of a change from `before` to `after`: with the follow-ups of
        leaving `before` (as `previous` defined it) and of entering `after`."""
        out: dict[str, Any] = {"from": before, "to": after}
        items: list[Any] = []
        left = (previous or self).by_id.get(before) if before is not None else None
        entered = self.by_id.get(after) if after is not None else None
        if left is not None:
            items.extend(left.follow_ups.get("exit", ()))
        if entered is not None:
            items.extend(entered.follow_ups.get("enter", ()))
        if items:
            out["follow_ups"] = items
        return out

    def annotate(self, change: SegmentChange, before: str | _Unset | None = UNSET,
                 previous: Annotator | None = None) -> SegmentChange:
        """`change` with `pipeline` (only if the pipeline moved) and `control` set. `before`:
        the pipeline before the change when known (a rule roll-out), else derived from the
        change itself (its segments minus entries plus exits)."""
        if isinstance(before, _Unset):
            prior = set(change.segments).difference(change.entered)
            prior.update(change.exited)
            before = self.pipeline_of(prior)
        after = None if change.cause.kind == CAUSE_ERASURE else self.pipeline_of(change.segments)
        pipeline = self.move(before, after, previous) if before != after else None
        control = self.control_of(change.customer_id, (*change.entered, *change.exited))
        if pipeline is None and not control:
            return change
        return replace(change, pipeline=pipeline, control=control)


# ---------------------------------------------------------------------- loading


class _LoaderLike(Protocol):
    """What PipelineParser needs of rules.loader._Loader."""

    def add(self, where: Node | Pos | tuple[int, int], message: str,
            suggestion: str | None = None) -> None: ...

    def mapping(self, node: Node | None, what: str, keys: Iterable[str],
                required: Iterable[str] = ()) -> dict[str, Node] | None: ...

    def text_value(self, node: Node | None, what: str, *, required: bool = False
                   ) -> str | None: ...


def _suggest(name: str, known: Iterable[str]) -> str | None:
    near = difflib.get_close_matches(name, list(known), n=1)
    return near[0] if near else None


class PipelineParser:
    """Reads `pipelines:`, segments' `control`/`control_salt` and `settings.control_salt`."""

    def __init__(self, loader: _LoaderLike) -> None:
        self.loader = loader

    def percent(self, node: Node | None, what: str) -> float | None:
        """`10%` -> 0.1 (0% < share < 100%); a problem and None otherwise."""
        if node is None:
            return None
        text = node.value.strip() if isinstance(node, ScalarNode) else ""
        m = _PERCENT_RE.fullmatch(text)
        if m is not None and 0 < float(m[1]) < 100:
            return float(m[1]) / 100
        suggestion = None
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and 0 < number < 1:
            suggestion = f"{number * 100:g}%"
        elif number is not None and 1 <= number < 100:
            suggestion = f"{number:g}%"
        self.loader.add(node, f"{what} must be a share written as a percentage between 0% and "
                              "100% (exclusive), e.g. 10%", suggestion)
        return None

    def salt(self, node: Node | None, what: str) -> str | None:
        return self.loader.text_value(node, what, required=True) if node is not None else None

    def pipelines(self, node: Node | None, segments: Node | None
                  ) -> tuple[PipelineDef, ...] | None:
        """The `pipelines:` list (default last, implicit `default` added), or None on problems.
        `segments`: the `segments:` node; ids and groups are read from it directly, so that a
        segment with a problem of its own does not also make the pipelines fail."""
        if node is None:
            return ()
        add = self.loader.add
        if not isinstance(node, SequenceNode):
            add(node, "pipelines must be a list: one '- id: ...' entry per pipeline")
            return None
        if not node.value:
            add(node, "pipelines is empty: list at least one pipeline or remove the key")
            return None
        segment_ids: set[str] = set()
        groups: dict[str, set[str]] = {}
        for item in segments.value if isinstance(segments, SequenceNode) else ():
            if not isinstance(item, MappingNode):
                continue
            scalars = {k.value: str(v.value).strip() for k, v in item.value
                       if isinstance(k, ScalarNode) and isinstance(v, ScalarNode)}
            sid = scalars.get("id", "")
            if not sid:
                continue
            segment_ids.add(sid)
            if scalars.get("group"):
                groups.setdefault(scalars["group"], set()).add(sid)
        ok = True
        out: list[PipelineDef] = []
        seen: dict[str, int] = {}
        default: PipelineDef | None = None
        for item in node.value:
            fields = self.loader.mapping(item, "a pipeline", PIPELINE_KEYS, required=("id",))
            if fields is None:
                ok = False
                continue
            pipeline = self._pipeline(item, fields, groups, segment_ids, seen)
            if pipeline is None:
                ok = False
            elif pipeline.default:
                if default is not None:
                    add(item, f"pipeline {pipeline.id!r} has no 'when', and neither has "
                              f"{default.id!r}: only one default pipeline (without 'when') "
                              "is allowed")
                    ok = False
                default = pipeline
            else:
                out.append(pipeline)
        if default is None:
            if DEFAULT_PIPELINE in seen:
                add(node, f"the pipeline named {DEFAULT_PIPELINE!r} needs no 'when': without a "
                          "pipeline that has no 'when', an implicit default pipeline named "
                          f"{DEFAULT_PIPELINE!r} takes every other customer")
                ok = False
            default = PipelineDef(id=DEFAULT_PIPELINE, when=(), segments=frozenset(),
                                  label="Default", default=True,
                                  pos=Pos(node.start_mark.line + 1, node.start_mark.column + 1))
        out.append(default)
        return tuple(out) if ok else None

    def _pipeline(self, item: Node, fields: dict[str, Node], groups: Mapping[str, set[str]],
                  segment_ids: Collection[str], seen: dict[str, int]) -> PipelineDef | None:
        add = self.loader.add
        ok = True
        id_node = fields.get("id")
        pid = self.loader.text_value(id_node, "pipeline id", required=True)
        if pid is None or id_node is None:
            return None
        if not _ID_RE.fullmatch(pid):
            add(id_node, f"pipeline id {pid!r} must start with a lower-case letter and contain "
                         "only a-z, 0-9 and _")
            ok = False
        elif pid in seen:
            add(id_node, f"duplicate pipeline id {pid!r} (first defined at line {seen[pid]})")
            ok = False
        else:
            seen[pid] = id_node.start_mark.line + 1
        label = self.loader.text_value(fields.get("label"), "label")
        description = self.loader.text_value(fields.get("description"), "description")
        names: list[str] = []
        members: set[str] = set()
        when = fields.get("when")
        if when is not None:
            entries = when.value if isinstance(when, SequenceNode) else None
            if isinstance(when, ScalarNode) and when.value.strip():
                entries = [when]  # `when: vip` is `when: [vip]`
            if not entries:
                add(when, "when of a pipeline must be a non-empty list of segment ids or group "
                          "names, e.g. [vip, tier] (leave 'when' out for the default pipeline)")
                ok = False
            for entry in entries or ():
                name = entry.value.strip() if isinstance(entry, ScalarNode) else None
                if not name:
                    add(entry, "an entry of a pipeline's when must be a segment id or group name")
                    ok = False
                    continue
                if name in segment_ids and name in groups:
                    add(entry, f"{name!r} is both a segment id and a group name: rename one so "
                               "that the pipeline's when is unambiguous")
                    ok = False
                elif name in segment_ids:
                    members.add(name)
                elif name in groups:
                    members.update(groups[name])
                else:
                    add(entry, f"unknown segment or group {name!r} in the when of pipeline "
                               f"{pid!r}", _suggest(name, [*segment_ids, *groups]))
                    ok = False
                    continue
                names.append(name)
        follow_ups = self._follow_ups(fields.get("follow_ups"))
        ok &= follow_ups is not None
        if not ok:
            return None
        return PipelineDef(id=pid, when=tuple(names), segments=frozenset(members), label=label,
                           description=description, follow_ups=follow_ups or {},
                           default=when is None,
                           pos=Pos(item.start_mark.line + 1, item.start_mark.column + 1))

    def _follow_ups(self, node: Node | None) -> dict[str, tuple[Any, ...]] | None:
        if node is None:
            return {}
        fields = self.loader.mapping(node, "follow_ups", TRANSITIONS)
        if fields is None:
            return None
        out: dict[str, tuple[Any, ...]] = {}
        ok = True
        for key, value in fields.items():
            if isinstance(value, SequenceNode):
                out[key] = tuple(_construct(v) for v in value.value)
            elif isinstance(value, ScalarNode | MappingNode):
                out[key] = (_construct(value),)  # one follow-up without a list
            else:
                self.loader.add(value, f"follow_ups.{key} must be a list")
                ok = False
        return out if ok else None


def _construct(node: Node) -> Any:
    from yaml.constructor import SafeConstructor

    return SafeConstructor().construct_object(node, deep=True)
