"""Syntax tree of the rule expression language (what the parser produces, the compiler consumes).

Positions are 1-based line and column in the *rule file* (not in the expression string), so an
error anywhere can point at the exact spot a marketer typed.
"""

from __future__ import annotations

from dataclasses import dataclass

Value = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class Pos:
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Literal:
    """A number, a string, true, false or null."""

    value: Value
    pos: Pos


@dataclass(frozen=True, slots=True)
class Duration:
    """`N` + `m|h|d|w`, only allowed as a function argument. `text` is as written, e.g. '180d'."""

    ms: int
    text: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Call:
    """A function call. `text` is the canonical source, e.g. 'purchase_amount(180d)' or
    'count("email_click", 30d)': the key of the term in a change record's `why`."""

    name: str
    args: tuple[Expr, ...]
    text: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not" | "-"
    operand: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # "and" "or" "==" "!=" "<" "<=" ">" ">=" "+" "-" "*" "/"
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class In:
    """`operand in [items]` or `operand not in [items]` (items are literals)."""

    operand: Expr
    items: tuple[Literal, ...]
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class Items:
    """A list of literals `["page_view", "product_view"]`, only allowed as a function argument
    (`count(["page_view", "product_view"], 30d)`)."""

    items: tuple[Literal, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Keyword:
    """`name=value`, only allowed as a function argument (`purchase_amount(30d,
    category="books")`); `pos` is the name's."""

    name: str
    value: Expr
    pos: Pos


Expr = Literal | Duration | Call | Unary | Binary | In | Items | Keyword

COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
ARITHMETIC = frozenset({"+", "-", "*", "/"})
LOGICAL = frozenset({"and", "or"})


def calls(expr: Expr) -> list[Call]:
    """Every call in `expr`, outermost first, in source order."""
    out: list[Call] = []
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            out.append(node)
            stack.extend(reversed(node.args))
        elif isinstance(node, Unary):
            stack.append(node.operand)
        elif isinstance(node, Binary):
            stack.append(node.right)
            stack.append(node.left)
        elif isinstance(node, In):
            stack.append(node.operand)
        elif isinstance(node, Keyword):
            stack.append(node.value)
    return out
