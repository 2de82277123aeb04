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
from typing import Any, cast

from model.state import Bucket
from rules import ast, program
from rules.context import Ctx
from rules.functions import Term, amount_flip, build_term, counter_flip
from rules.model import RuleSettings

Fn = Callable[[Ctx], Any]
Interval = tuple[float, float]
IFn = Callable[[Ctx, Ctx], Interval | None]
_INF = float("inf")
_NUM = (int, float)
_PYOPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge}


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
    # `days_since_*() <op> number`: diff = (t - anchor(ctx)) / DAY_MS - const, solved directly
    anchor: Callable[[Ctx], int | None] | None = None
    const: float = 0.0
    op: str = ""  # the comparison (== for an `in` item): only its flips count
    # a model term against a number: ctx -> estimated instant of the crossing (rules/predictive)
    root: Callable[[Ctx], float | None] | None = None
    # `engagement_score() <op> number`: diff = engagement_at(st, t, half_life_ms) - const,
    # solved from the state's score (`decay_flip`)
    decay: bool = False


@dataclass(frozen=True, slots=True)
class DueParts:
    """What can move an expression's value with time, given the values of its time-less parts:
    the step terms' next-change functions and the crossings (see `CompiledExpr.due_parts`)."""

    step_fns: tuple[Callable[[Ctx], int | None], ...]
    crossings: tuple[Crossing, ...]
    # exact next-change instants of comparisons over window counts (`counter_flip`)
    atoms: tuple[Callable[[Ctx], int | None], ...] = ()


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A maximal sub-expression without and / or / not: its step terms and its crossings."""

    index: int
    steps: tuple[Callable[[Ctx], int | None], ...]
    crossings: tuple[Crossing, ...]
    atoms: tuple[Callable[[Ctx], int | None], ...] = ()
    node: ast.Expr | None = None  # an atom's comparison (see `_generate_parts`)


@dataclass(frozen=True, slots=True)
class _Junction:
    """`and` / `or` (flattened) or `not`: `fixed` are the children that only events change
    (their value now settles the junction until the next event when it is False for `and`,
    True for `or`), `timed` the others."""

    op: str
    fixed: tuple[ast.Expr, ...]
    timed: tuple[_Leaf | _Junction, ...]
    # timed children that time alone can only turn false (`and`; true for `or`, see `trend`):
    # one false now (true now) settles the junction as a fixed one does
    settlers: tuple[ast.Expr, ...] = ()


def _no_condition() -> program.Condition:
    return program.Condition(program.Const(None), "")


@dataclass(slots=True)
class CompiledExpr:
    text: str
    terms: list[Term] = field(default_factory=list)
    crossings: list[Crossing] = field(default_factory=list)
    coarse: bool = False
    _step_fns: tuple[Callable[[Ctx], int | None], ...] | None = None
    _plan: _Leaf | _Junction | None = None
    # built from the plan at compile time (`_build_plan`); None: time alone never changes it
    due_plan: program.Plan | None = None
    # the condition as a tree of compiled nodes (rules/program.py): what the engine calls
    cond: program.Condition = field(default_factory=_no_condition)
    # how time alone can move the value between events (`trend`): -1 only from true to false,
    # +1 only from false to true, 0 not at all, None either way; `decays`: that holds only
    # while the engagement score is not negative (it decays toward 0)
    trend: int | None = None
    decays: bool = False

    @property
    def fn(self) -> Fn:
        """The condition as a callable (ctx -> bool): `cond` itself."""
        return self.cond

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

    @property
    def timed(self) -> bool:
        """Time alone can change the value (a window, a threshold or a crossing)."""
        return self._plan is not None

    def due_parts(self, ctx: Ctx) -> DueParts | None:
        """The step terms and crossings that can change the value with time from `ctx` on, or
        None if none can. An `and` with a part that only events change (lifetime_orders(),
        attribute(), in_segment(), ...) that is false now stays false until the next event
        whatever its other parts do (an `or` likewise with a true one), so their windows and
        thresholds are no reason to look again."""
        plan = self.due_plan
        return None if plan is None else cast("DueParts | None", plan.parts(ctx))


def _leaves(node: _Leaf | _Junction) -> list[_Leaf]:
    out: list[_Leaf] = []
    stack: list[_Leaf | _Junction] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, _Leaf):
            out.append(n)
        else:
            stack.extend(reversed(n.timed))
    return sorted(out, key=lambda leaf: leaf.index)


def _parts_of(leaves: list[_Leaf], mask: int) -> DueParts | None:
    steps: list[Callable[[Ctx], int | None]] = []
    cross: list[Crossing] = []
    atoms: list[Callable[[Ctx], int | None]] = []
    for i, leaf in enumerate(leaves):
        if mask >> i & 1:
            for f in leaf.steps:
                if f not in steps:
                    steps.append(f)
            cross.extend(leaf.crossings)
            atoms.extend(leaf.atoms)
    return DueParts(tuple(steps), tuple(cross), tuple(atoms)) if steps or cross or atoms \
        else None


@dataclass(frozen=True, slots=True)
class _Node:
    fn: Fn
    mono: int | None  # 0: constant in time between events/steps; +1/-1 monotone; None unknown
    form: str = "const"  # const | lin | exp | mixed (see Crossing)
    ifn: IFn | None = None  # bounds over a time span (numeric nodes)
    literal: Any = None
    is_literal: bool = False
    is_null: bool = False
    anchor: Callable[[Ctx], int | None] | None = None  # a bare days_since_*() call
    # a window count or a sum of counts over the same window: (buckets, per-bucket parts)
    counter: tuple[int, tuple[Callable[[Bucket], int], ...]] | None = None
    falls: Callable[[Ctx], int | None] | None = None  # next change of a bare falling term
    amount: int | None = None  # a bare purchase_amount(w): its window in buckets
    root: Callable[[Ctx, float], float | None] | None = None  # a bare model term (Term.root)
    decay: bool = False  # a bare engagement_score() (Term.decays)


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
        self.out = CompiledExpr(text=text)
        self._terms: dict[str, Term] = {}
        self._nodes: dict[int, tuple[_Node, int, int]] = {}
        self._atoms: dict[int, Callable[[Ctx], int | None]] = {}
        self._leaf_count = 0

    def compile(self, node: ast.Expr) -> _Node:
        method = getattr(self, "_" + type(node).__name__.lower())
        before = len(self.out.crossings)
        result: _Node = method(node)
        self._nodes[id(node)] = (result, before, len(self.out.crossings))
        return result

    def plan(self, node: ast.Expr) -> _Leaf | _Junction | None:
        """The due plan of a node: None if only events change it."""
        if (isinstance(node, ast.Binary) and node.op in ast.LOGICAL) or (
                isinstance(node, ast.Unary) and node.op == "not"):
            if isinstance(node, ast.Unary):
                children = [node.operand]
                op = "not"
            else:
                op = node.op
                children = []
                todo: list[ast.Expr] = [node]
                while todo:  # flatten a and b and c
                    n = todo.pop()
                    if isinstance(n, ast.Binary) and n.op == op:
                        todo += [n.right, n.left]
                    else:
                        children.append(n)
            fixed: list[ast.Expr] = []
            timed: list[_Leaf | _Junction] = []
            settlers: list[ast.Expr] = []
            settles = -1 if op == "and" else 1
            for child in children:
                p = self.plan(child)
                if p is None:
                    fixed.append(child)
                else:
                    timed.append(p)
                    if op != "not" and trend(child, self._terms) == settles:
                        settlers.append(child)
            if not timed:
                return None
            return _Junction(op, tuple(fixed) if op != "not" else (), tuple(timed),
                             tuple(settlers))
        atom = self._atoms.get(id(node))
        if atom is not None:  # a comparison over window counts: its exact next change
            self._leaf_count += 1
            return _Leaf(self._leaf_count, (), (), (atom,), node)
        steps: list[Callable[[Ctx], int | None]] = []
        for c in ast.calls(node):
            nc = self._terms[c.text].next_change
            if nc is not None and nc not in steps:
                steps.append(nc)
        _, lo, hi = self._nodes[id(node)]
        crossings = tuple(self.out.crossings[lo:hi])
        if not steps and not crossings:
            return None
        self._leaf_count += 1
        return _Leaf(self._leaf_count, tuple(steps), crossings)

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
            args = tuple(_arg_value(a) for a in node.args if not isinstance(a, ast.Keyword))
            kwargs = {a.name: _arg_value(a.value) for a in node.args
                      if isinstance(a, ast.Keyword)}
            term = build_term(node.name, args, node.text, self.settings, kwargs)
            self._terms[node.text] = term
            self.out.terms.append(term)
        f = term.fn
        if term.kind != "cont":
            def const_bounds(a: Ctx, b: Ctx) -> Interval | None:
                v = f(a)
                return (v, v) if type(v) in _NUM else None
            counter = None if term.counter is None else (term.counter[0], (term.counter[1],))
            return _Node(f, 0, ifn=const_bounds, counter=counter,
                         falls=term.next_change if term.falls else None, amount=term.amount)

        def mono_bounds(a: Ctx, b: Ctx) -> Interval | None:
            x, y = f(a), f(b)
            if type(x) not in _NUM or type(y) not in _NUM:
                return None
            return (x, y) if x <= y else (y, x)
        return _Node(f, term.mono, term.form or ("lin" if term.mono > 0 else "exp"),
                     ifn=mono_bounds, anchor=term.anchor, root=term.root, decay=term.decays)

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
            counter = None
            if op == "+" and left.counter and right.counter \
                    and left.counter[0] == right.counter[0]:
                counter = (left.counter[0], left.counter[1] + right.counter[1])
            return _Node(_arith(op, left.fn, right.fn, right), _arith_mono(op, left, right),
                         _arith_form(op, left.form, right.form),
                         ifn=_iarith(op, left.ifn, right.ifn), counter=counter)
        fn = _compare(op, left, right)
        self._counter_atom(node, left, right)
        if id(node) not in self._atoms:
            self._falling_atom(node, fn, left, right)
        mono = _combine(left.mono, _neg(right.mono))
        if left.mono != 0 or right.mono != 0:
            self._crossing(left, right, mono, op)
        return _Node(fn, 0)

    def _counter_atom(self, node: ast.Binary, left: _Node, right: _Node) -> None:
        """`count op number` (either side): its next change is computed exactly."""
        pyop = _PYOPS[node.op]
        if left.counter and right.is_literal and type(right.literal) in _NUM:
            nb, parts = left.counter
            y = right.literal
            self._atoms[id(node)] = counter_flip(nb, parts, pyop, y)
        elif right.counter and left.is_literal and type(left.literal) in _NUM:
            nb, parts = right.counter
            x = left.literal
            self._atoms[id(node)] = counter_flip(nb, parts, pyop, x, swapped=True)
        elif left.amount is not None and right.is_literal and type(right.literal) in _NUM:
            self._atoms[id(node)] = amount_flip(left.amount, left.fn, pyop, right.literal)
        elif right.amount is not None and left.is_literal and type(left.literal) in _NUM:
            self._atoms[id(node)] = amount_flip(right.amount, right.fn, pyop, left.literal,
                                                swapped=True)

    def _falling_atom(self, node: ast.Binary, fn: Fn, left: _Node, right: _Node) -> None:
        """`t op number` for a term time can only lower (distinct counts over a window):
        `t >= n` false now stays false, `t <= n` true now stays true, until an event."""
        op = node.op
        if left.falls is not None and right.is_literal and type(right.literal) in _NUM:
            nc = left.falls
        elif right.falls is not None and left.is_literal and type(left.literal) in _NUM:
            nc = right.falls
            op = {">": "<", ">=": "<=", "<": ">", "<=": ">="}.get(op, op)
        else:
            return
        if op in (">", ">="):
            settled = False  # false now: stays false
        elif op in ("<", "<="):
            settled = True
        else:
            return

        def next_change(ctx: Ctx) -> int | None:
            return None if fn(ctx) is settled else nc(ctx)
        self._atoms[id(node)] = next_change

    def _crossing(self, left: _Node, right: _Node, mono: int | None, op: str = "") -> None:
        form = _arith_form("-", left.form, right.form)
        bounds = None
        if form not in ("lin", "exp"):
            form = "mono"
            if mono is None:
                self.out.coarse = True
                bounds = _iarith("-", left.ifn, right.ifn)
        anchor = None
        number = right.is_literal and type(right.literal) in _NUM
        if left.anchor is not None and number:
            anchor = left.anchor
        decay = left.decay and number
        self.out.crossings.append(Crossing(
            _arith("-", left.fn, right.fn, right), mono, form,
            self.settings.engagement.half_life_ms,
            bounds, anchor, right.literal if anchor is not None or decay else 0.0,
            op if anchor is not None else "", _root(left, right), decay))

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
                    self._crossing(inner, self._literal(i), inner.mono, "==")
        return _Node(member, 0)


def _root(left: _Node, right: _Node) -> Callable[[Ctx], float | None] | None:
    """`model term <op> number` (either side): the term's estimate of the crossing instant."""
    if left.root is not None and right.is_literal and type(right.literal) in _NUM:
        term_root, y = left.root, float(right.literal)
    elif right.root is not None and left.is_literal and type(left.literal) in _NUM:
        term_root, y = right.root, float(left.literal)
    else:
        return None
    return lambda ctx: term_root(ctx, y)


@dataclass(frozen=True, slots=True)
class NumberExpr:
    """A numeric expression outside a rule (a k-means feature): its value, its bounds over a
    time span without step changes, and its terms."""

    fn: Fn
    bounds: IFn | None
    terms: tuple[Term, ...]


def compile_number(expr: ast.Expr, text: str, settings: RuleSettings) -> NumberExpr:
    c = _Compiler(settings, text)
    node = c.compile(expr)
    return NumberExpr(node.fn, node.ifn, tuple(c.out.terms))


def _arg_value(a: ast.Expr) -> Any:
    """The value of a function argument: ms for a duration, a tuple for a list."""
    if isinstance(a, ast.Duration):
        return a.ms
    if isinstance(a, ast.Items):
        return tuple(i.value for i in a.items)
    return a.value  # type: ignore[union-attr]


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
    c.compile(expr)
    terms = {t.text: t for t in c.out.terms}
    c.out.cond = _condition(expr, terms, text)
    plan = c.out._plan = c.plan(expr)
    if plan is not None:
        c.out.due_plan = _build_plan(plan, terms)
    c.out.trend = trend(expr, terms)
    c.out.decays = any(t.decays for t in c.out.terms)
    return c.out


def trend(node: ast.Expr, terms: dict[str, Term]) -> int | None:
    """How time alone moves the node's value between events: 0 not at all, -1 only down (a
    condition: only from true to false), +1 only up, None either way or unknown.

    Counts over windows only fall (buckets leave them), days_since_*() only rises, a model's
    `cont` term moves its way (Term.mono); the engagement score counts as falling, which holds
    while it is not negative (CompiledExpr.decays). A comparison moves with the difference of
    its sides; `and`, `or` and `not` keep their children's direction (a condition false now
    whose every part can only fall stays false until the next event: no due to compute)."""
    if isinstance(node, (ast.Literal, ast.Duration)):
        return 0
    if isinstance(node, ast.Call):
        term = terms[node.text]
        if term.kind == "event":
            return 0
        if term.kind == "cont":
            return -1 if term.decays else (term.mono or None)
        return -1 if term.counter is not None or term.falls else None
    if isinstance(node, ast.Unary):  # `not` and `-` both reverse the direction
        return _neg(trend(node.operand, terms))
    if isinstance(node, ast.In):
        return 0 if trend(node.operand, terms) == 0 else None
    if not isinstance(node, ast.Binary):
        return None
    op = node.op
    left, right = trend(node.left, terms), trend(node.right, terms)
    if op in ast.LOGICAL or op == "+":
        return _combine(left, right)
    if op in ("*", "/"):  # monotone only when scaled by a number literal
        if isinstance(node.right, ast.Literal) and type(node.right.value) in _NUM:
            k = node.right.value
            return 0 if not k else (left if k > 0 else _neg(left))  # type: ignore[operator]
        if op == "*" and isinstance(node.left, ast.Literal) and type(node.left.value) in _NUM:
            k = node.left.value
            return 0 if not k else (right if k > 0 else _neg(right))  # type: ignore[operator]
        return 0 if left == 0 and right == 0 else None
    diff = _combine(left, _neg(right))  # `-` and the comparisons: left - right
    if op in ("-", ">", ">="):
        return diff
    if op in ("<", "<="):
        return _neg(diff)
    return 0 if diff == 0 else None  # == and !=


def compile_value(expr: ast.Expr, text: str, settings: RuleSettings) -> Fn:
    """The value of an expression at a context (a number, a text or null, with the null rules
    above), not turned into a condition as `compile_expr` does: what a segment's outcome metric
    (rules/outcome.py) is measured with. Not used by the engine."""
    return _Compiler(settings, text).compile(expr).fn


_MAX_LEAVES = 12  # beyond that, the parts of each combination are built when first met


def _build_plan(plan: _Leaf | _Junction, terms: dict[str, Term]) -> program.Plan:
    """`due_parts` as a tree of compiled nodes (rules/program.py): the time-less parts are
    tested (as conditions), the live leaves make a bit mask, the mask picks precomputed
    DueParts.

    An atom (a comparison over a window count or amount) whose next change is None cannot
    change before the next event either: inside an `and` it settles the junction when false
    (`count("add_to_cart", 2d) >= 1 and purchase_count(2d) == 0` with no cart in the window:
    a purchase leaving the window is no reason to look again), inside an `or` when true."""
    leaves = _leaves(plan)
    bit = {leaf.index: i for i, leaf in enumerate(leaves)}
    b = _Build(terms)

    def node_of(n: _Leaf | _Junction) -> program.PlanNode:
        if isinstance(n, _Leaf):
            return program.Leaf(1 << bit[n.index])
        # a settler is tested as a fixed child is: a false one (`or`: true) settles the
        # junction; its own parts are live only while it does not
        fixed = [b.expr(f) for f in (*n.fixed, *n.settlers)] if n.op in ("and", "or") else []
        live: list[tuple[program.Node, Callable[[Ctx], Any]]] = []
        if n.op in ("and", "or") and len(n.timed) > 1:
            for child in n.timed:
                if isinstance(child, _Leaf) and child.node is not None \
                        and not any(child.node is s for s in n.settlers):
                    live.append((b.expr(child.node), child.atoms[0]))
        return program.Junction(n.op == "and", n.op == "or", fixed, live,
                                [node_of(c) for c in n.timed])

    root = node_of(plan)
    if len(leaves) <= _MAX_LEAVES:
        return program.Plan(root, [_parts_of(leaves, m) for m in range(1 << len(leaves))], None)

    def build(m: int) -> DueParts | None:
        return _parts_of(leaves, m)
    return program.Plan(root, None, build)


# ---------------------------------------------------------------- condition trees
#
# The value of an expression is a tree of compiled nodes (rules/program.py) built from its syntax
# tree: function calls become calls of the compiled terms, literals constants, never anything
# from the user's text run. It keeps the closures' exact semantics (null rules, short-circuit
# `and` / `or`, bool is never a number) without a Python call per node.

def _is_bool(node: ast.Expr) -> bool:
    """The node's value is exactly True or False."""
    if isinstance(node, ast.Binary):
        return node.op not in ast.ARITHMETIC
    return isinstance(node, ast.In) or (isinstance(node, ast.Unary) and node.op == "not")


class _Build:
    def __init__(self, terms: dict[str, Term]) -> None:
        self.terms = terms
        self.calls: dict[str, program.Node] = {}

    def num_literal(self, node: ast.Expr) -> tuple[bool, Any]:
        """(True, value) when the node is a number literal (also `-literal`)."""
        if isinstance(node, ast.Literal) and type(node.value) in _NUM:
            return True, node.value
        if isinstance(node, ast.Unary) and node.op == "-":
            ok, v = self.num_literal(node.operand)
            if ok:
                return True, -v
        return False, None

    def cost(self, node: ast.Expr) -> int:
        """A rough static cost of evaluating `node`: what the order of `and`/`or` goes by."""
        if isinstance(node, ast.Call):
            term = self.terms[node.text]
            if term.explain is not None:
                return 20  # a model's prediction
            if term.kind == "step":
                return 8  # a window over buckets, an RFM score
            return 2 if term.kind == "cont" else 1  # a stored fact, days since, a score
        if isinstance(node, ast.Unary):
            return self.cost(node.operand)
        if isinstance(node, ast.In):
            return self.cost(node.operand)
        if isinstance(node, ast.Binary):
            return self.cost(node.left) + self.cost(node.right)
        return 0  # a literal, a duration

    def expr(self, node: ast.Expr) -> program.Node:
        if isinstance(node, ast.Literal):
            return program.Const(node.value)
        if isinstance(node, ast.Duration):
            return program.Const(node.ms)
        if isinstance(node, ast.Call):
            call = self.calls.get(node.text)
            if call is None:
                fn = self.terms[node.text].fn
                call = self.calls[node.text] = (program.NativeCall(fn)
                                                if isinstance(fn, program.TermValue)
                                                else program.Call(fn))
            return call
        if isinstance(node, ast.Unary):
            if node.op == "not":
                return program.Not(self.expr(node.operand))
            ok, v = self.num_literal(node)
            if ok:
                return program.Const(v)
            return program.Neg(self.expr(node.operand))
        if isinstance(node, ast.In):
            items = tuple(i.value for i in node.items)
            return program.Member(self.expr(node.operand),
                                  frozenset(i for i in items if type(i) is str), items,
                                  node.negated)
        assert isinstance(node, ast.Binary)
        op = node.op
        if op in ast.LOGICAL:
            # both sides are exactly True or False and pure, so `a and b` is `b and a`: the
            # cheaper side goes first and the other is often never read (`page_views(30d) >= 20
            # and lifetime_orders() == 0` reads no window for a customer who has ordered)
            a, b = node.left, node.right
            if self.cost(b) < self.cost(a):
                a, b = b, a
            if op == "and":
                return program.And(self.expr(a), self.expr(b))
            return program.Or(self.expr(a), self.expr(b))
        code = program.CODES[op]
        if op in ast.ARITHMETIC:
            ok, y = self.num_literal(node.right)
            if ok:
                if op == "/" and not y:
                    return program.Const(None)
                return program.ArithLit(self.expr(node.left), code, y)
            return program.Arith(self.expr(node.left), code, self.expr(node.right))
        left_null = isinstance(node.left, ast.Literal) and node.left.value is None
        right_null = isinstance(node.right, ast.Literal) and node.right.value is None
        if op in ("==", "!=") and (left_null or right_null):
            other = self.expr(node.right if left_null else node.left)
            return program.IsNull(other, op == "!=")
        right = node.right
        if isinstance(right, ast.Literal) and type(right.value) is str:
            return program.CmpStr(self.expr(node.left), code, right.value)
        ok, v = self.num_literal(right)  # `x > -5`: folded to a literal, as the closures did
        if ok:
            return program.CmpNum(self.expr(node.left), code, v)
        return program.Cmp(self.expr(node.left), code, self.expr(right))


def _condition(expr: ast.Expr, terms: dict[str, Term], text: str) -> program.Condition:
    return program.Condition(_Build(terms).expr(expr), text)
