"""Per-customer feature vectors at an instant: rule expressions (k-means features of
`segmenter models fit` / `report`) evaluated on the states the offline Simulator folds from an
event log up to `until`. Pure: the caller reads the log.

A feature is checked like a rule (rules.loader.check_number_expression) and compiled with
rules.compiler.compile_value; a customer whose value of some feature is null (no data for it)
is left out and counted, never given a made-up value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rules.compiler import Fn, compile_value
from rules.context import Ctx
from rules.loader import check_number_expression
from rules.ruleset import RuleSet
from streams.simulate import Simulator


@dataclass(slots=True)
class FeatureTable:
    features: tuple[str, ...]
    ids: list[str] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    missing: Counter[str] = field(default_factory=Counter)  # feature -> customers left out
    customers: int = 0  # customers with a state at `until`
    applied: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    after_until: int = 0


def compile_features(rules: RuleSet, features: Sequence[str]) -> list[Fn]:
    """Check and compile every feature; raises RuleFileError naming the bad one."""
    fns = []
    for i, text in enumerate(features):
        expr = check_number_expression(text, rules.file, source=f"feature {i + 1} ({text!r})")
        fns.append(compile_value(expr, text, rules.settings))
    return fns


def features_at(rules: RuleSet, features: Sequence[str], fns: Sequence[Fn],
                lines: Iterable[bytes], until: int) -> FeatureTable:
    """Replay `lines` up to `until` (events after it are not applied) and evaluate the features
    for every customer at `until`."""
    sim = Simulator(rules, until=until)
    sim.feed_lines(lines)
    sim.finish()
    table = FeatureTable(tuple(features), applied=sim.stats.applied,
                         rejected=sim.stats.rejected, after_until=sim.stats.after_until,
                         customers=len(sim.states))
    settings = rules.settings
    for cid in sorted(sim.states):
        st = sim.states[cid]
        ctx = Ctx(st, until, settings.resolution_ms, st.cands, rules.groups_before)
        row: list[float] = []
        for name, fn in zip(features, fns, strict=True):
            value = fn(ctx)
            if value is None or isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                table.missing[name] += 1
                break
            row.append(float(value))
        else:
            table.ids.append(cid)
            table.rows.append(row)
    return table
