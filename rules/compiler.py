"""Compile rule expressions (rules/ast.py) into Python closures, once, at load time.

Besides the value of an expression, the compiler works out what the engine needs to evaluate it
incrementally and on time:
- `reads`: the event types that can change its value; `deps`: the segments it reads through
  `in_segment`;
- `terms`: its function calls (their values are the `why` of a change record);
- `crossings`: every comparison whose operands move continuously with time (`days_since_*`,
  `engagement_score`), with the difference of its two sides and the direction that difference
  moves, so the engine can find the exact instant the comparison flips;
- crossings whose direction cannot be known statically (e.g. a product of two time-dependent
  terms) carry `bounds`: interval arithmetic over a time span, which lets the engine find their
  first flip exactly by branch and bound.

Null rules: arithmetic with null (or a non-number) and division by zero give null; a comparison
with null is false, except `== null` / `!= null`; `and`, `or`, `not` treat null as false.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rules import ast
from rules.context import Ctx
from rules.functions import Term, build_term
from rules.model import RuleSettings

Fn = Callable[[Ctx], Any]
Interval = tuple[float, float]
IFn = Callable[[Ctx, Ctx], Interval | None]
_INF = float("inf")
_NUM = (int, float)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A time-continuous comparison: `diff(ctx)` = left - right (None when not numeric).

    `form` tells how diff depends on time between two step changes: "lin" (a*t + b: days_since
    terms), "exp" (a * 2^(-t/half_life) + b: engagement), "mono" (monotone, shape unknown);
    the engine solves lin and exp in closed form and bisects mono."""

    diff: Fn
    mono: int | None  # +1 / -1: how diff moves with time; None: unknown (use bounds)
    form: str = "mono"
    half_life_ms: int = 0
    bounds: IFn | None = None  # (ctx at a, ctx at b) -> (low, high) of diff over [a, b]


@dataclass(slots=True)
class CompiledExpr:
    fn: Fn
    text: str
    terms: list[Term] = field(default_factory=list)
    crossings: list[Crossing] = field(default_factory=list)
    coarse: bool = False
    _step_fns: tuple[Callable[[Ctx], int | None], ...] | None = None

    @property
    def reads(self) -> frozenset[str]:
        out: set[str] = set()
        for t in self.terms:
            out |= t.reads
        return frozenset(out)

    @property
    def deps(self) -> frozenset[str]:
        return frozenset(t.segment_ref for t in self.terms if t.segment_ref)

    @property
    def step_fns(self) -> tuple[Callable[[Ctx], int | None], ...]:
        """The next-change functions of the step terms (computed once, used on every due)."""
        fns = self._step_fns
        if fns is None:
            fns = self._step_fns = tuple(t.next_change for t in self.terms
                                         if t.next_change is not None)
        return fns


@dataclass(frozen=True, slots=True)
class _Node:
    fn: Fn
    mono: int | None  # 0: constant in time between events/steps; +1/-1 monotone; None unknown
    form: str = "const"  # const | lin | exp | mixed (see Crossing)
    ifn: IFn | None = None  # bounds over a time span (numeric nodes)
    literal: Any = None
    is_literal: bool = False
    is_null: bool = False


def _combine(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return None
    if a == 0:
        return b
    if b == 0 or a == b:
        return a
    return None


def _neg(m: int | None) -> int | None:
    return None if m is None else -m


class _Compiler:
    def __init__(self, settings: RuleSettings, text: str) -> None:
        self.settings = settings
        self.out = CompiledExpr(fn=lambda ctx: None, text=text)
        self._terms: dict[str, Term] = {}

    def compile(self, node: ast.Expr) -> _Node:
        method = getattr(self, "_" + type(node).__name__.lower())
        result: _Node = method(node)
        return result

    def _literal(self, node: ast.Literal) -> _Node:
        v = node.value
        iv: Interval | None = (float(v), float(v)) if type(v) in _NUM else None  # type: ignore[arg-type]
        return _Node(lambda ctx: v, 0, ifn=lambda a, b: iv, literal=v, is_literal=True,
                     is_null=v is None)

    def _duration(self, node: ast.Duration) -> _Node:  # only reachable as an argument
        ms = node.ms
        return _Node(lambda ctx: ms, 0, literal=ms, is_literal=True)

    def _call(self, node: ast.Call) -> _Node:
        term = self._terms.get(node.text)
        if term is None:
            args = tuple(a.ms if isinstance(a, ast.Duration) else a.value  # type: ignore[union-attr]
                         for a in node.args)
            term = build_term(node.name, args, node.text, self.settings)
            self._terms[node.text] = term
            self.out.terms.append(term)
        f = term.fn
        if term.kind != "cont":
            def const_bounds(a: Ctx, b: Ctx) -> Interval | None:
                v = f(a)
                return (v, v) if type(v) in _NUM else None
            return _Node(f, 0, ifn=const_bounds)

        def mono_bounds(a: Ctx, b: Ctx) -> Interval | None:
            x, y = f(a), f(b)
            if type(x) not in _NUM or type(y) not in _NUM:
                return None
            return (x, y) if x <= y else (y, x)
        return _Node(f, term.mono, "lin" if term.mono > 0 else "exp", ifn=mono_bounds)

    def _unary(self, node: ast.Unary) -> _Node:
        inner = self.compile(node.operand)
        f = inner.fn
        if node.op == "not":
            return _Node(lambda ctx: f(ctx) is not True, 0)

        def neg(ctx: Ctx) -> Any:
            v = f(ctx)
            return -v if type(v) in _NUM else None

        if inner.is_literal and type(inner.literal) in _NUM:
            v = -inner.literal
            return _Node(lambda ctx: v, 0, ifn=lambda a, b: (v, v), literal=v, is_literal=True)
        return _Node(neg, _neg(inner.mono), inner.form, ifn=_ineg(inner.ifn))

    def _binary(self, node: ast.Binary) -> _Node:
        left, right = self.compile(node.left), self.compile(node.right)
        op = node.op
        if op in ast.LOGICAL:
            return _Node(_logical(op, left.fn, right.fn), 0)
        if op in ast.ARITHMETIC:
            return _Node(_arith(op, left.fn, right.fn, right), _arith_mono(op, left, right),
                         _arith_form(op, left.form, right.form),
                         ifn=_iarith(op, left.ifn, right.ifn))
        fn = _compare(op, left, right)
        mono = _combine(left.mono, _neg(right.mono))
        if left.mono != 0 or right.mono != 0:
            self._crossing(left, right, mono)
        return _Node(fn, 0)

    def _crossing(self, left: _Node, right: _Node, mono: int | None) -> None:
        form = _arith_form("-", left.form, right.form)
        bounds = None
        if form not in ("lin", "exp"):
            form = "mono"
            if mono is None:
                self.out.coarse = True
                bounds = _iarith("-", left.ifn, right.ifn)
        self.out.crossings.append(Crossing(
            _arith("-", left.fn, right.fn, right), mono, form,
            self.settings.engagement.half_life_ms,
            bounds))

    def _in(self, node: ast.In) -> _Node:
        inner = self.compile(node.operand)
        items = tuple(i.value for i in node.items)
        f = inner.fn
        negated = node.negated

        strings = frozenset(i for i in items if type(i) is str)

        def member(ctx: Ctx) -> bool:
            v = f(ctx)
            if v is None:
                return False
            if type(v) is str:  # equal only to the listed strings
                return (v not in strings) if negated else (v in strings)
            is_bool = type(v) is bool
            found = any(v == i and (type(i) is bool) is is_bool for i in items)
            return not found if negated else found

        if inner.mono != 0:  # a time-dependent value meets each listed number at an instant
            for i in node.items:
                if type(i.value) in _NUM:
                    self._crossing(inner, self._literal(i), inner.mono)
        return _Node(member, 0)


def _ineg(f: IFn | None) -> IFn | None:
    if f is None:
        return None

    def neg(a: Ctx, b: Ctx) -> Interval | None:
        r = f(a, b)
        return None if r is None else (-r[1], -r[0])
    return neg


def _iarith(op: str, fl: IFn | None, fr: IFn | None) -> IFn | None:
    """Interval arithmetic: bounds of `l op r` over a span from the bounds of l and r."""
    if fl is None or fr is None:
        return None

    def bounds(a: Ctx, b: Ctx) -> Interval | None:
        x, y = fl(a, b), fr(a, b)
        if x is None or y is None:
            return None
        if op == "+":
            return (x[0] + y[0], x[1] + y[1])
        if op == "-":
            return (x[0] - y[1], x[1] - y[0])
        if op == "/":
            if y[0] <= 0.0 <= y[1]:
                return (-_INF, _INF)
            y = (1.0 / y[1], 1.0 / y[0])
        p = (x[0] * y[0], x[0] * y[1], x[1] * y[0], x[1] * y[1])
        if any(v != v for v in p):  # inf * 0
            return (-_INF, _INF)
        return (min(p), max(p))
    return bounds


def _logical(op: str, a: Fn, b: Fn) -> Fn:
    if op == "and":
        return lambda ctx: a(ctx) is True and b(ctx) is True
    return lambda ctx: a(ctx) is True or b(ctx) is True


def _arith(op: str, a: Fn, b: Fn, right: _Node | None = None) -> Fn:
    """`a op b` (null unless both are numbers); `right`: b's node, to specialise on a number
    literal (`days_since_last_purchase() - 60`, the diff of most crossings)."""
    if right is not None and right.is_literal and type(right.literal) in _NUM:
        y = right.literal
        if op == "/" and not y:
            return lambda ctx: None
        pyop = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                "/": operator.truediv}[op]

        def with_literal(ctx: Ctx) -> Any:
            x = a(ctx)
            return pyop(x, y) if type(x) in _NUM else None

        return with_literal

    def add(ctx: Ctx) -> Any:
        x, y = a(ctx), b(ctx)
        return x + y if type(x) in _NUM and type(y) in _NUM else None

    def sub(ctx: Ctx) -> Any:
        x, y = a(ctx), b(ctx)
        return x - y if type(x) in _NUM and type(y) in _NUM else None

    def mul(ctx: Ctx) -> Any:
        x, y = a(ctx), b(ctx)
        return x * y if type(x) in _NUM and type(y) in _NUM else None

    def div(ctx: Ctx) -> Any:
        x, y = a(ctx), b(ctx)
        return x / y if type(x) in _NUM and type(y) in _NUM and y else None

    return {"+": add, "-": sub, "*": mul, "/": div}[op]


def _arith_form(op: str, a: str, b: str) -> str:
    if op in "+-":
        if a == "const":
            return b
        if b == "const" or a == b:
            return a
        return "mixed"
    if b == "const":
        return a
    if op == "*" and a == "const":
        return b
    return "mixed"


def _arith_mono(op: str, left: _Node, right: _Node) -> int | None:
    if op == "+":
        return _combine(left.mono, right.mono)
    if op == "-":
        return _combine(left.mono, _neg(right.mono))
    # * and /: monotone only when scaled by a literal number of known sign
    if right.is_literal and type(right.literal) in _NUM:
        k = right.literal
        if op == "/" and k == 0:
            return 0
        return 0 if k == 0 else (left.mono if k > 0 else _neg(left.mono))
    if op == "*" and left.is_literal and type(left.literal) in _NUM:
        k = left.literal
        return 0 if k == 0 else (right.mono if k > 0 else _neg(right.mono))
    if left.mono == 0 and right.mono == 0:
        return 0
    return None


def _compare(op: str, left: _Node, right: _Node) -> Fn:
    a, b = left.fn, right.fn
    if op in ("==", "!=") and (left.is_null or right.is_null):
        other = b if left.is_null else a
        if op == "==":
            return lambda ctx: other(ctx) is None
        return lambda ctx: other(ctx) is not None

    pyop = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}[op]

    if right.is_literal and type(right.literal) in (int, float, str):
        # The common `term <op> literal`: the same rules as `cmp` below, with y known.
        y0 = right.literal
        fast = _NUM if type(y0) in _NUM else (str,)  # x of these types compares directly

        def cmp_literal(ctx: Ctx) -> bool:
            x = a(ctx)
            if type(x) in fast:
                return pyop(x, y0)
            if x is None:
                return False
            if type(x) is bool:  # y0 is not a bool
                return op == "!="
            try:
                return bool(pyop(x, y0))
            except TypeError:
                return op == "!="

        return cmp_literal

    def cmp(ctx: Ctx) -> bool:
        x = a(ctx)
        if x is None:
            return False
        y = b(ctx)
        if y is None:
            return False
        if (type(x) is bool) is not (type(y) is bool):  # true/false are never numbers
            return op == "!="
        if type(x) is bool and op not in ("==", "!="):
            return False  # and are not ordered
        try:
            return bool(pyop(x, y))
        except TypeError:
            return op == "!="

    return cmp


def compile_expr(expr: ast.Expr, text: str, settings: RuleSettings) -> CompiledExpr:
    c = _Compiler(settings, text)
    node = c.compile(expr)
    f = node.fn
    if isinstance(expr, ast.Binary | ast.In) or (isinstance(expr, ast.Unary)
                                                 and expr.op == "not"):
        c.out.fn = f  # already returns a bool
    else:
        c.out.fn = lambda ctx: f(ctx) is True
    return c.out
