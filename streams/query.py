"""The Query API's answers, built from a customer state and the rules in force (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from model.changes import format_ts
from model.state import CustomerState
from rules.context import Ctx
from rules.loader import format_duration
from rules.model import PipelineDef
from rules.ruleset import RuleSet
from streams.annotated import annotator_for
from streams.simulate import customer_metrics


def customer_view(rules: RuleSet, st: CustomerState, now: int) -> dict[str, Any]:
    """`GET /v1/customers/{id}`: current segments with display data and why, key metrics."""
    ctx = Ctx(st, now, rules.settings.resolution_ms, st.cands, rules.groups_before)
    segments: list[dict[str, Any]] = []
    for sid in sorted(st.members):
        seg = rules.by_id.get(sid)
        if seg is None:
            continue
        d = seg.defn
        why = {t.text: t.fn(ctx) for t in seg.when.terms}
        if seg.exit_when is not None:
            why.update({t.text: t.fn(ctx) for t in seg.exit_when.terms})
        segments.append({"id": sid, "label": d.label, "color": d.color, "icon": d.icon,
                         "group": d.group, "actions": dict(d.actions),
                         "entered_at": format_ts(st.members[sid]), "when": d.when_text,
                         "exit_when": d.exit_when_text, "why": why})
    out = {"customer_id": st.customer_id, "seq": st.seq, "rules_version": st.rules_version,
           "evaluated_at": format_ts(st.last_eval) if st.last_eval is not None else None,
           "segments": segments, "metrics": customer_metrics(rules, st, now)}
    annotator = annotator_for(rules.file)
    if annotator.default is not None:  # rule files with `pipelines:`: the current one
        out["pipeline"] = annotator.pipeline_of(st.members)
    for entry in segments:  # `control: 10%` segments: is this customer held out?
        if entry["id"] in annotator.control:
            entry["control"] = annotator.held_out(st.customer_id, entry["id"])
    return out


def segments_view(rules: RuleSet, sizes: Mapping[str, int], scope: str) -> dict[str, Any]:
    """`GET /v1/segments`: the definitions in force, in file order, with live sizes."""
    out = []
    for seg in sorted(rules.segments, key=lambda s: s.index):
        d = seg.defn
        out.append({"id": d.id, "label": d.label, "description": d.description,
                    "color": d.color, "icon": d.icon,
                    "group": d.group, "when": d.when_text, "exit_when": d.exit_when_text,
                    "min_dwell": format_duration(d.min_dwell_ms) if d.min_dwell_ms else None,
                    "actions": dict(d.actions), "size": int(sizes.get(d.id, 0))})
    return {"name": rules.file.name, "rules_version": rules.version,
            "groups": {g: list(ids) for g, ids in rules.groups.items()},
            "pipelines": pipelines_view(rules.file.pipelines),
            "sizes_scope": scope, "segments": out}


def pipelines_view(pipelines: Sequence[PipelineDef]) -> list[dict[str, Any]]:
    """The `pipelines:` of a rule file in priority order (the default last): id, label,
    description, when (as written), default. Empty without pipelines."""
    return [{"id": p.id, "label": p.label, "description": p.description, "when": list(p.when),
             "default": p.default} for p in pipelines]
