"""Why a customer is in a segment: the conditions of its rule with the customer's values.

The Query API gives, per held segment, `why`: rule term (canonical call text, e.g.
`purchase_amount(180d)`) -> the customer's value. `explain(when_text, values)` parses the rule's
expression and lists its conditions (comparisons, `in` lists and bare boolean calls), each with
the value of its left side, its threshold and whether it holds now.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from model.errors import SegmenterError
from rules.ast import (
    COMPARISONS,
    Binary,
    Call,
    Duration,
    Expr,
    In,
    Keyword,
    Literal,
    Unary,
)
from rules.catalogue import PREDICTIVE
from rules.parser import parse_expression, to_source

_MISSING = object()


@dataclass(frozen=True, slots=True)
class _Atom:
    expr: Expr
    negated: bool


@lru_cache(maxsize=1024)
def _parse(text: str) -> Expr | None:
    try:
        return parse_expression(text, file="<rule>", line=1, column=1)
    except (SegmenterError, ValueError):
        return None


def _atoms(expr: Expr, negated: bool, out: list[_Atom]) -> None:
    if isinstance(expr, Binary) and expr.op in ("and", "or"):
        _atoms(expr.left, negated, out)
        _atoms(expr.right, negated, out)
    elif isinstance(expr, Unary) and expr.op == "not":
        _atoms(expr.operand, not negated, out)
    else:
        out.append(_Atom(expr, negated))


def _value(expr: Expr, values: Mapping[str, Any]) -> Any:
    """The value of `expr` from the term values; _MISSING when a term is not known."""
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Duration):
        return expr.text
    if isinstance(expr, Call):
        return values.get(expr.text, _MISSING)
    if isinstance(expr, Unary):
        inner = _value(expr.operand, values)
        if inner is _MISSING:
            return _MISSING
        if expr.op == "-":
            return -inner if _is_number(inner) else None
        return None if inner is None else not inner
    if isinstance(expr, Binary):
        left, right = _value(expr.left, values), _value(expr.right, values)
        if left is _MISSING or right is _MISSING:
            return _MISSING
        if expr.op in COMPARISONS:
            return _compare(expr.op, left, right)
        if expr.op in ("and", "or"):
            return bool(left and right) if expr.op == "and" else bool(left or right)
        if not (_is_number(left) and _is_number(right)):
            return None
        if expr.op == "+":
            return left + right
        if expr.op == "-":
            return left - right
        if expr.op == "*":
            return left * right
        if expr.op == "/":
            return None if right == 0 else left / right
    if isinstance(expr, In):
        operand = _value(expr.operand, values)
        if operand is _MISSING:
            return _MISSING
        found = operand is not None and operand in [i.value for i in expr.items]
        return (not found) if expr.negated else found
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if left is None or right is None:
        return False  # null compares as false (see docs/rules.md)
    try:
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        if op == ">":
            return bool(left > right)
        return bool(left >= right)
    except TypeError:
        return False


def _json_value(value: Any) -> Any:
    if value is _MISSING:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def explain(text: str | None, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conditions of the rule expression `text`, each as a dict:

    `text` (the condition as written, canonical), `term` (its left side), `op`, `threshold`
    (the right side's source; a list for `in`), `value` (the left side's value, null when not
    known), `ok` (whether the condition holds with these values; null when not known) and
    `negated` (it stands under a `not`: the segment wants it false)."""
    if not text:
        return []
    expr = _parse(text)
    if expr is None:
        return []
    atoms: list[_Atom] = []
    _atoms(expr, False, atoms)
    out: list[dict[str, Any]] = []
    for atom in atoms:
        e = atom.expr
        threshold: Any
        if isinstance(e, Binary) and e.op in COMPARISONS:
            term, op, threshold = to_source(e.left), e.op, to_source(e.right)
            left = _value(e.left, values)
            right = _value(e.right, values)
            if not isinstance(e.right, Literal) and right is not _MISSING:
                threshold = f"{threshold} = {_fmt(right)}"
            value = left
        elif isinstance(e, In):
            term, op = to_source(e.operand), "not in" if e.negated else "in"
            threshold = [i.value for i in e.items]
            value = _value(e.operand, values)
        else:
            term, op = to_source(e), "is"
            threshold = "false" if atom.negated else "true"
            value = _value(e, values)
        result = _value(e, values)
        ok: bool | None = None if result is _MISSING else bool(result) != atom.negated
        out.append({"text": to_source(e), "term": term, "op": op, "threshold": threshold,
                    "value": _json_value(value), "ok": ok, "negated": atom.negated})
    return out


_PREDICTION_LABELS = {"p_alive": "P(alive)", "expected_purchases": "Expected purchases",
                      "clv": "CLV", "cluster": "Cluster"}
_PREDICTION_ORDER = {name: i for i, name in enumerate(_PREDICTION_LABELS)}


def predictions(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The model functions among the term values (the Query API's `metrics`: every rule term,
    evaluated by the worker's engine at its clock), in the order P(alive), expected purchases,
    CLV, cluster, then by term. Each: `term` (canonical call text, e.g. `clv(365d)`),
    `function`, `label` (with the horizon, e.g. "CLV, next 365d"), `model` (a `model=` name,
    else null) and `value` as the engine computed it (never recomputed here)."""
    out: list[dict[str, Any]] = []
    for term, value in values.items():
        expr = _parse(term)
        if not isinstance(expr, Call) or expr.name not in PREDICTIVE:
            continue
        horizon = next((a.text for a in expr.args if isinstance(a, Duration)), None)
        label = _PREDICTION_LABELS[expr.name] + (f", next {horizon}" if horizon else "")
        model = next((str(a.value.value) for a in expr.args if isinstance(a, Keyword)
                      and a.name == "model" and isinstance(a.value, Literal)), None)
        out.append({"term": term, "function": expr.name, "label": label, "model": model,
                    "value": _json_value(value)})
    out.sort(key=lambda p: (_PREDICTION_ORDER[p["function"]], p["term"]))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


__all__ = ["explain", "predictions"]
