"""A rule file compiled for evaluation: segments in dependency order and the incremental plan.

`RuleSet.dirty_for_type(t)` answers "which segments must be re-evaluated when an event of type t
arrives": the segments reading t, plus every segment whose `in_segment` reads one of those (or a
group peer whose membership those can change), transitively, in evaluation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rules.catalogue import EVENT_TYPES
from rules.compiler import CompiledExpr, compile_expr
from rules.functions import FIRST_SEEN
from rules.model import RuleFile, RuleSettings, SegmentDef


@dataclass(frozen=True, slots=True)
class CompiledSegment:
    id: str
    index: int  # position in the file
    defn: SegmentDef
    when: CompiledExpr
    exit_when: CompiledExpr | None
    group_before: tuple[str, ...]  # earlier segments of the same group (file order)
    group_peers: tuple[str, ...]  # every other segment of the same group
    dwell: int
    reads: frozenset[str]
    deps: frozenset[str]  # segments whose membership this one reads (in_segment + their peers)
    timeless: bool = False  # no window, threshold or dwell: time alone never changes it
    group: str | None = None  # = defn.group
    # (label, color, icon, actions) of defn, read natively for every change's details
    shown: tuple[Any, ...] = (None, None, None, {})
    # `when` false now (true now) stays so until the next event (CompiledExpr.trend), while the
    # engagement score is not negative if `trend_eng`: a non-member then has no due instant
    stays_false: bool = False
    stays_true: bool = False
    trend_eng: bool = False


class RuleSet:
    def __init__(self, rule_file: RuleFile) -> None:
        self.file = rule_file
        self.settings: RuleSettings = rule_file.settings
        self.resolution_ms: int = rule_file.settings.resolution_ms  # read by every evaluation
        self.version = rule_file.content_hash
        groups: dict[str, list[str]] = {}
        for s in rule_file.segments:
            if s.group:
                groups.setdefault(s.group, []).append(s.id)
        self.groups = {g: tuple(ids) for g, ids in groups.items()}
        compiled = [self._compile(i, s, groups) for i, s in enumerate(rule_file.segments)]
        self.segments: tuple[CompiledSegment, ...] = tuple(_topo_order(compiled))
        self.by_id = {s.id: s for s in self.segments}
        self.groups_before = {s.id: s.group_before for s in self.segments}
        self._rank = {s.id: i for i, s in enumerate(self.segments)}
        self._closures: dict[frozenset[str], tuple[CompiledSegment, ...]] = {}
        self._dependants: dict[str, set[str]] = {s.id: set() for s in self.segments}
        for cs in self.segments:
            for d in cs.deps:
                self._dependants[d].add(cs.id)
        self._by_type = {t: self.closure(s.id for s in self.segments if t in s.reads)
                         for t in (*EVENT_TYPES, FIRST_SEEN)}
        self._by_type_first = {
            t: self.closure(s.id for s in self.segments if t in s.reads or FIRST_SEEN in s.reads)
            for t in EVENT_TYPES}

    def _compile(self, index: int, s: SegmentDef, groups: dict[str, list[str]]) -> CompiledSegment:
        when = compile_expr(s.when, s.when_text, self.settings)
        exit_when = (compile_expr(s.exit_when, s.exit_when_text or "", self.settings)
                     if s.exit_when is not None else None)
        peers = groups.get(s.group, []) if s.group else []
        before = tuple(peers[: peers.index(s.id)]) if s.group else ()
        reads = when.reads | (exit_when.reads if exit_when else frozenset())
        refs = when.deps | (exit_when.deps if exit_when else frozenset())
        return CompiledSegment(
            id=s.id, index=index, defn=s, when=when, exit_when=exit_when, group_before=before,
            group_peers=tuple(p for p in peers if p != s.id), dwell=s.min_dwell_ms, reads=reads,
            deps=frozenset(refs), group=s.group, shown=(s.label, s.color, s.icon, s.actions),
            stays_false=when.trend in (0, -1), stays_true=when.trend in (0, 1),
            trend_eng=when.decays,
            timeless=not s.min_dwell_ms and all(
                not e.timed for e in (when, exit_when) if e is not None))

    def closure(self, ids: object) -> tuple[CompiledSegment, ...]:
        """The given segments plus everything that reads their membership, in evaluation order."""
        key = frozenset(ids)  # type: ignore[call-overload]
        hit = self._closures.get(key)
        if hit is not None:
            return hit
        todo = list(key)
        seen: set[str] = set()
        while todo:
            sid = todo.pop()
            if sid in seen or sid not in self.by_id:
                continue
            seen.add(sid)
            todo.extend(self._dependants[sid])
            # a change of this candidate can change the membership of later group peers
            seg = self.by_id[sid]
            for peer in seg.group_peers:
                if sid in self.by_id[peer].group_before:
                    todo.extend(self._dependants[peer])
        out = tuple(sorted((self.by_id[s] for s in seen), key=lambda s: self._rank[s.id]))
        if len(self._closures) < 4096:  # memo: the sets of due segments repeat a lot
            self._closures[key] = out
        return out

    def dirty_for_type(self, event_type: str, first_seen: bool = False
                       ) -> tuple[CompiledSegment, ...]:
        """Segments to re-evaluate after an event of this type (`first_seen`: the event moved
        the customer's first-seen instant)."""
        return (self._by_type_first if first_seen else self._by_type).get(event_type, ())


def _topo_order(segs: list[CompiledSegment]) -> list[CompiledSegment]:
    """Stable topological order (file order where free). Dependencies: in_segment(x) depends on
    x's candidate and on the candidates of x's earlier group peers."""
    by_id = {s.id: s for s in segs}
    needs: dict[str, set[str]] = {}
    for s in segs:
        req: set[str] = set()
        for d in s.deps:
            if d in by_id:
                req.add(d)
                req.update(by_id[d].group_before)
        req.discard(s.id)
        needs[s.id] = req
    out: list[CompiledSegment] = []
    done: set[str] = set()
    while len(out) < len(segs):
        progressed = False
        for s in segs:
            if s.id not in done and needs[s.id] <= done:
                out.append(s)
                done.add(s.id)
                progressed = True
                break
        if not progressed:
            cyc = sorted(set(by_id) - done)
            raise ValueError(f"in_segment dependency cycle among {cyc}")
    return out
