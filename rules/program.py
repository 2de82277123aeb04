"""A rule condition and its due plan as a tree of compiled nodes (rules/compiler.py builds them).

Each node of an expression's syntax tree becomes one object of a small class here; the engine
asks the root for its truth at a context. The module is compiled by mypyc (model/native.py), so
a node's call of its children is a direct C call: no interpreter frame per condition (the
Python source these trees replace was generated at load and ran interpreted, ~15 frames per
event on the retail rules), no `eval` of anything.

The semantics are the rule language's null rules (docs/rules.md), as rules/compiler.py states
them: arithmetic with null or a non-number gives null, and so does a division by zero; a
comparison with null is false except `== null` / `!= null`; `and`, `or` and `not` read anything
but true as false; true and false are never numbers.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

from rules.context import Ctx

TermFn = Callable[[Ctx], Any]

# operator codes
EQ: Final = 0
NE: Final = 1
LT: Final = 2
LE: Final = 3
GT: Final = 4
GE: Final = 5
ADD: Final = 6
SUB: Final = 7
MUL: Final = 8
DIV: Final = 9
CODES: Final[dict[str, int]] = {"==": EQ, "!=": NE, "<": LT, "<=": LE, ">": GT, ">=": GE,
                                "+": ADD, "-": SUB, "*": MUL, "/": DIV}
PYOPS: Final[tuple[Callable[[Any, Any], Any], ...]] = (  # the comparisons, by code
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge)


def _is_num(v: object) -> bool:
    t = type(v)
    return t is float or t is int


def _compare(x: Any, y: Any, op: int) -> Any:
    if op == GE:
        return x >= y
    if op == GT:
        return x > y
    if op == LT:
        return x < y
    if op == LE:
        return x <= y
    if op == EQ:
        return x == y
    return x != y


def compare_floats(x: float, y: float, op: int) -> bool:
    """`_compare` on two floats, as C doubles (no boxed floats, no rich comparison)."""
    if op == GE:
        return x >= y
    if op == GT:
        return x > y
    if op == LT:
        return x < y
    if op == LE:
        return x <= y
    if op == EQ:
        return x == y
    return x != y


def _arith(x: Any, y: Any, op: int) -> Any:
    if op == ADD:
        return x + y
    if op == SUB:
        return x - y
    if op == MUL:
        return x * y
    return x / y


def cmp_slow(x: Any, y: Any, op: int) -> bool:
    """`x op y` for a value x that is not a plain number or text (y: a literal)."""
    if x is None:
        return False
    if type(x) is bool:  # y is not a bool
        return op == NE
    try:
        return bool(PYOPS[op](x, y))
    except TypeError:
        return op == NE


def cmp_any(x: Any, y: Any, op: int) -> bool:
    """`x op y` for two computed values."""
    if x is None or y is None:
        return False
    if (type(x) is bool) is not (type(y) is bool):  # true/false are never numbers
        return op == NE
    if type(x) is bool and op != EQ and op != NE:
        return False  # and are not ordered
    try:
        return bool(PYOPS[op](x, y))
    except TypeError:
        return op == NE


def in_slow(v: Any, items: tuple[Any, ...], negated: bool) -> bool:
    if v is None:
        return False
    is_bool = type(v) is bool
    found = any(v == i and (type(i) is bool) is is_bool for i in items)
    return not found if negated else found


class Node:
    """An expression node: `value` at a context (a number, a text, a bool or None); `truth`:
    whether that value is exactly true (what `and`, `or`, `not` and a condition read)."""

    def value(self, ctx: Ctx) -> Any:
        raise NotImplementedError

    def truth(self, ctx: Ctx) -> bool:
        return self.value(ctx) is True


class Test(Node):
    """A node whose value is exactly True or False: its `truth` is its value."""

    def value(self, ctx: Ctx) -> Any:
        return self.truth(ctx)

    def truth(self, ctx: Ctx) -> bool:
        raise NotImplementedError


class Const(Node):
    def __init__(self, v: Any) -> None:
        self.v = v

    def value(self, ctx: Ctx) -> Any:
        return self.v


class Call(Node):
    """A function call: the compiled term's value."""

    def __init__(self, fn: TermFn) -> None:
        self.fn = fn

    def value(self, ctx: Ctx) -> Any:
        return self.fn(ctx)


class TermValue:
    """A term's value as a method of a compiled class (rules/functions.py): a `NativeCall`
    calls it through the class's method table, where a plain function is a Python call (its
    arguments packed and parsed). Callable as the function it stands for."""

    def value(self, ctx: Ctx) -> Any:
        raise NotImplementedError

    def __call__(self, ctx: Ctx) -> Any:
        return self.value(ctx)


class NativeCall(Node):
    """A call of a term whose value is a `TermValue`."""

    def __init__(self, fn: TermValue) -> None:
        self.fn = fn

    def value(self, ctx: Ctx) -> Any:
        return self.fn.value(ctx)


class Not(Test):
    def __init__(self, x: Node) -> None:
        self.x = x

    def truth(self, ctx: Ctx) -> bool:
        return self.x.value(ctx) is not True


class Neg(Node):
    def __init__(self, x: Node) -> None:
        self.x = x

    def value(self, ctx: Ctx) -> Any:
        v = self.x.value(ctx)
        return -v if _is_num(v) else None


class Logical(Test):
    """`and` / `or` of two sides, both pure: the cheaper one is `a` (the compiler orders
    them)."""

    def __init__(self, a: Node, b: Node) -> None:
        self.a = a
        self.b = b


class And(Logical):
    def truth(self, ctx: Ctx) -> bool:
        return self.a.truth(ctx) and self.b.truth(ctx)


class Or(Logical):
    def truth(self, ctx: Ctx) -> bool:
        return self.a.truth(ctx) or self.b.truth(ctx)


class WithLiteral(Node):
    """`x op literal` (a number or a text)."""

    def __init__(self, x: Node, op: int, y: Any) -> None:
        self.x = x
        self.op = op
        self.y = y


class ArithLit(WithLiteral):
    """`x op number` (not a zero divisor)."""

    def value(self, ctx: Ctx) -> Any:
        v = self.x.value(ctx)
        if not _is_num(v):
            return None
        return _arith(v, self.y, self.op)


def compare_ints(x: int, y: int, op: int) -> bool:
    """`_compare` on two ints, as mypyc's tagged ints (exact, no rich comparison)."""
    if op == GE:
        return x >= y
    if op == GT:
        return x > y
    if op == LT:
        return x < y
    if op == LE:
        return x <= y
    if op == EQ:
        return x == y
    return x != y


class CmpNum(WithLiteral):
    """`x op number` (a literal, negative ones folded). Its value is always a bool: `truth`
    computes it, natively for an int against an int literal (window counts) and for a float
    against a number a double holds exactly (amounts, days, scores)."""

    def __init__(self, x: Node, op: int, y: Any) -> None:
        super().__init__(x, op, y)
        self.int_y = type(y) is int
        self.yi: int = y if type(y) is int else 0
        # a float compares with y as with its double: every float, an int up to 2**53
        self.float_y = type(y) is float or (type(y) is int and -(1 << 53) <= y <= 1 << 53)
        self.yf: float = float(y) if self.float_y else 0.0

    def value(self, ctx: Ctx) -> Any:
        return self.truth(ctx)

    def truth(self, ctx: Ctx) -> bool:
        v = self.x.value(ctx)
        t = type(v)
        if t is int and self.int_y:
            return compare_ints(v, self.yi, self.op)
        if t is float and self.float_y:
            return compare_floats(v, self.yf, self.op)
        if t is int or t is float:
            return bool(_compare(v, self.y, self.op))
        return cmp_slow(v, self.y, self.op)


class CmpStr(WithLiteral):
    """`x op "text"`."""

    def value(self, ctx: Ctx) -> Any:
        v = self.x.value(ctx)
        if type(v) is str:
            return _compare(v, self.y, self.op)
        return cmp_slow(v, self.y, self.op)


class Arith(Node):
    def __init__(self, x: Node, op: int, y: Node) -> None:
        self.x = x
        self.op = op
        self.y = y

    def value(self, ctx: Ctx) -> Any:
        a = self.x.value(ctx)
        if not _is_num(a):
            return None
        b = self.y.value(ctx)
        if not _is_num(b) or (self.op == DIV and not b):
            return None
        return _arith(a, b, self.op)


class Cmp(Test):
    """`x op y`, both computed."""

    def __init__(self, x: Node, op: int, y: Node) -> None:
        self.x = x
        self.op = op
        self.y = y

    def truth(self, ctx: Ctx) -> bool:
        return cmp_any(self.x.value(ctx), self.y.value(ctx), self.op)


class IsNull(Test):
    """`x == null` (`negated`: `x != null`)."""

    def __init__(self, x: Node, negated: bool) -> None:
        self.x = x
        self.negated = negated

    def truth(self, ctx: Ctx) -> bool:
        return (self.x.value(ctx) is None) is not self.negated


class Member(Test):
    """`x in [items]` / `x not in [items]`."""

    def __init__(self, x: Node, strings: frozenset[str], items: tuple[Any, ...],
                 negated: bool) -> None:
        self.x = x
        self.strings = strings
        self.items = items
        self.negated = negated

    def truth(self, ctx: Ctx) -> bool:
        v = self.x.value(ctx)
        if type(v) is str:
            return (v in self.strings) is not self.negated
        return in_slow(v, self.items, self.negated)


class Condition:
    """A segment's condition: callable with a context, true when the expression's value is
    exactly true (the `fn` of a CompiledExpr)."""

    def __init__(self, root: Node, text: str) -> None:
        self.root = root
        self.text = text

    def __call__(self, ctx: Ctx) -> bool:
        return self.root.truth(ctx)

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


# ------------------------------------------------------------------------------ due plans

class PlanNode:
    def mask(self, ctx: Ctx) -> int:
        raise NotImplementedError


class Leaf(PlanNode):
    def __init__(self, bit: int) -> None:
        self.bit = bit

    def mask(self, ctx: Ctx) -> int:
        return self.bit


class Junction(PlanNode):
    """`and` / `or` (flattened) or `not` in a due plan (rules/compiler.py `_Junction`):
    `fixed` are the children only events change: one that is false for `and` (true for `or`)
    settles the junction until the next event, so no part below it is live. `live`: the atom
    children (a comparison over a window count and its exact next change) with the same rule:
    such a child settles the junction when its value does and its next change is None."""

    def __init__(self, is_and: bool, is_or: bool, fixed: list[Node],
                 live: list[tuple[Node, TermFn]], children: list[PlanNode]) -> None:
        self.is_and = is_and
        self.is_or = is_or
        self.fixed = fixed
        self.live = live
        self.children = children

    def mask(self, ctx: Ctx) -> int:
        if self.is_and:
            for f in self.fixed:
                if not f.truth(ctx):
                    return 0
            for value, atom in self.live:
                if not value.truth(ctx) and atom(ctx) is None:
                    return 0
        elif self.is_or:
            for f in self.fixed:
                if f.truth(ctx):
                    return 0
            for value, atom in self.live:
                if value.truth(ctx) and atom(ctx) is None:
                    return 0
        m = 0
        for child in self.children:
            m |= child.mask(ctx)
        return m


class Plan:
    """An expression's due plan: the live leaves make a bit mask, the mask picks the
    precomputed DueParts (`table`, or built on first use by `build` when there are too many
    leaves to precompute every combination)."""

    def __init__(self, root: PlanNode, table: list[Any] | None,
                 build: Callable[[int], Any] | None) -> None:
        self.root = root
        self.table = table
        self.build = build
        self.cache: dict[int, Any] = {}

    def parts(self, ctx: Ctx) -> Any:
        m = self.root.mask(ctx)
        table = self.table
        if table is not None:
            return table[m]
        cache = self.cache
        if m in cache:
            return cache[m]
        assert self.build is not None
        p = cache[m] = self.build(m)
        return p
