"""A control-group segment's `outcome:`: what its treated and held-out members are compared on.

```yaml
- id: vip
  when: purchase_amount(180d) >= 5000
  control: 10%
  outcome: {metric: purchase_amount(30d), after: 30d}   # a number, measured 30 days after entry
# or
  outcome: {conversion: purchase, within: 14d}          # any purchase within 14 days of entry
```

A **metric** is a numeric rule expression (the functions of `when`, parsed and type-checked the
same way, problems with line and column) evaluated on the customer's state at
`entered_at + after`. A **conversion** is whether the customer has an event of that type with
`entered_at < ts <= entered_at + within`. `streams/outcome.py` computes the report from a replayed
event log; this module only reads the rule file's part (`OutcomeParser`, used by
rules/loader.py).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from yaml.nodes import MappingNode, Node, ScalarNode

from model.errors import RuleFileError
from rules.ast import Expr, Pos
from rules.catalogue import EVENT_TYPES
from rules.model import OutcomeDef
from rules.parser import parse_expression, to_source

if TYPE_CHECKING:
    from rules.loader import _ExprChecker, _Loader

OUTCOME_KEYS = ("metric", "after", "conversion", "within")
EXAMPLES = "{metric: purchase_amount(30d), after: 30d} or {conversion: purchase, within: 14d}"


class OutcomeParser:
    """Reads a segment's `outcome:` (the loader's problems collect what is wrong)."""

    def __init__(self, loader: _Loader, checker: _ExprChecker) -> None:
        self.loader = loader
        self.checker = checker

    def outcome(self, node: Node | None, seg_id: str | None, has_control: bool
                ) -> OutcomeDef | None:
        """The OutcomeDef, or None (with problems added unless `node` is None)."""
        if node is None:
            return None
        add = self.loader.add
        if not isinstance(node, MappingNode):
            add(node, f"outcome must be a mapping: {EXAMPLES}")
            return None
        before = len(self.loader.problems)
        fields = self.loader.mapping(node, "outcome", OUTCOME_KEYS)
        if fields is None or len(self.loader.problems) > before:  # unknown keys: said so
            for key, _ in node.value:
                if isinstance(key, ScalarNode) and (")" in key.value or "(" in key.value):
                    add(node, "the metric contains a comma, which ends a value in a {...} "
                              "mapping: write outcome: as indented 'key: value' lines, or quote "
                              "the metric")
                    break
            return None
        ok = True
        if not has_control:
            add(node, "outcome needs a control group to compare with: add control: 10% (or "
                      "another share) to this segment")
            ok = False
        metric, conversion = fields.get("metric"), fields.get("conversion")
        pos = Pos(node.start_mark.line + 1, node.start_mark.column + 1)
        if metric is not None and conversion is not None:
            add(conversion, "outcome has both metric and conversion: give one of them (a "
                            "second segment with the same when can measure the other)")
            return None
        if metric is None and conversion is None:
            add(node, f"outcome needs either metric and after, or conversion and within: "
                      f"{EXAMPLES}")
            return None
        if metric is not None:
            wrong, right, needed = "within", "after", "metric"
        else:
            wrong, right, needed = "after", "within", "conversion"
        if wrong in fields:
            owner = "metric" if wrong == "after" else "conversion"
            add(fields[wrong], f"'{wrong}' goes with {owner}: an outcome with {needed} takes "
                               f"'{right}'", right)
            ok = False
        if right not in fields and wrong not in fields:
            add(node, f"outcome with {needed} is missing the required key {right!r}: "
                      f"{EXAMPLES}")
            ok = False
        window = self.loader.duration(fields.get(right), f"outcome {right}", positive=True)
        ok &= window is not None or right not in fields
        if metric is not None:
            parsed = self._metric(metric, seg_id)
            if parsed is None or not ok or window is None:
                return None
            return OutcomeDef(window_ms=window, metric=parsed[0], metric_text=parsed[1], pos=pos)
        assert conversion is not None
        event_type = self._event_type(conversion)
        if event_type is None or not ok or window is None:
            return None
        return OutcomeDef(window_ms=window, event_type=event_type, pos=pos)

    def _metric(self, node: Node, seg_id: str | None) -> tuple[Expr, str] | None:
        if not isinstance(node, ScalarNode) or not str(node.value).strip():
            self.loader.add(node, "outcome metric must be a numeric expression written as text, "
                                  "e.g. purchase_amount(30d)")
            return None
        value = str(node.value)
        try:
            expr = parse_expression(value, file=self.loader.source,
                                    line=node.start_mark.line + 1,
                                    column=node.start_mark.column + 1,
                                    locate=self.loader._scalar_locator(node))
        except RuleFileError as exc:
            self.loader.problems.extend(exc.problems)
            return None
        before = len(self.loader.problems)
        self.checker.segment_id = seg_id
        kind = self.checker.type_of(expr)
        if len(self.loader.problems) > before:
            return None
        if kind not in ("number", "any"):
            source = to_source(expr)
            hint = (" (a condition: measure it as a conversion, or count events, e.g. "
                    "purchase_count(30d))" if kind == "bool" else "")
            what = "a condition (true/false)" if kind == "bool" else f"a {kind}"
            self.loader.add(node, f"outcome metric must be a number, but {source} is {what}"
                                  f"{hint}")
            return None
        return expr, value.strip()

    def _event_type(self, node: Node) -> str | None:
        text = self.loader.text_value(node, "outcome conversion", required=True)
        if text is None:
            return None
        text = text.strip()
        if text not in EVENT_TYPES:
            near = difflib.get_close_matches(text, EVENT_TYPES, n=1)
            self.loader.add(node, f"unknown event type {text!r} in outcome conversion (an event "
                                  "type such as purchase or email_click)",
                            near[0] if near else None)
            return None
        return text
