"""The engine with pipelines and control groups (rules/pipelines.py) on its change records.

`engine_for(rules)` is what the worker's rulebook and `simulate` use: the plain `Engine` for a
rule file without pipelines and control groups (so its outputs and speed are exactly the
engine's), else an `AnnotatedEngine`, which adds `pipeline` and `control` to every change the
engine produces. A pipeline is a pure function of the membership set, so it needs no state of
its own; a rule roll-out that changes which pipeline a customer is in without changing their
segments yields a change of its own (no entries or exits, only the pipeline move).
"""

from __future__ import annotations

from model.changes import CAUSE_RULES, Cause, SegmentChange
from model.events import Event
from model.state import CustomerState
from rules.model import RuleFile
from rules.pipelines import Annotator
from rules.ruleset import RuleSet
from streams.engine import Engine, Outcome

_ANNOTATORS: dict[tuple[str, str], Annotator] = {}


def annotator_for(rule_file: RuleFile) -> Annotator:
    """The (cached) Annotator of a rule version."""
    key = (rule_file.content_hash, rule_file.source)
    found = _ANNOTATORS.get(key)
    if found is None:
        if len(_ANNOTATORS) > 64:
            _ANNOTATORS.clear()
        found = _ANNOTATORS[key] = Annotator(rule_file)
    return found


def engine_for(rules: RuleSet, previous: RuleSet | None = None) -> Engine:
    """The engine for `rules`: annotated when they (or `previous`, the version customers may
    still be evaluated under) have pipelines or control groups."""
    if annotator_for(rules.file).active or (
            previous is not None and annotator_for(previous.file).active):
        return AnnotatedEngine(rules)
    return Engine(rules)


class AnnotatedEngine(Engine):
    def __init__(self, rules: RuleSet) -> None:
        super().__init__(rules)
        self.annotator = annotator_for(rules.file)

    def _annotated(self, out: Outcome) -> Outcome:
        if not out.changes:
            return out
        annotate = self.annotator.annotate
        return Outcome(out.state, tuple(annotate(c) for c in out.changes), out.rejection)

    def apply(self, st: CustomerState | None, ev: Event, now: int) -> Outcome:
        # (Engine.apply_batch calls self.apply: batches are annotated too)
        return self._annotated(super().apply(st, ev, now))

    def fire(self, st: CustomerState, t: int) -> Outcome:
        return self._annotated(super().fire(st, t))

    def reevaluate(self, st: CustomerState, now: int, quiet: bool = False,
                   previous: RuleSet | None = None) -> Outcome:
        before_ann = annotator_for(previous.file) if previous is not None else self.annotator
        before = before_ann.pipeline_of(st.members)
        out = super().reevaluate(st, now, quiet=quiet, previous=previous)
        ann = self.annotator
        if out.changes:
            return Outcome(out.state, tuple(ann.annotate(c, before, before_ann)
                                            for c in out.changes), out.rejection)
        after = ann.pipeline_of(st.members)
        if before == after:
            return out
        st.seq += 1  # the pipelines changed under the customer: a change of its own
        change = SegmentChange(
            customer_id=st.customer_id, seq=st.seq, at=now, cause=Cause(CAUSE_RULES),
            rules_version=self.rules.version, entered=(), exited=(),
            segments=tuple(sorted(st.members)), quiet=quiet,
            pipeline=ann.move(before, after, before_ann))
        return Outcome(st, (change,), out.rejection)
