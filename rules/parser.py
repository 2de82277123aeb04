"""Parser of the rule expression language: text -> rules/ast.py nodes (never `eval`).

The grammar is rules/expr.lark (LALR(1), lark). Every node carries the 1-based line and column
in the *rule file* of the text it came from:

- Literal, Duration: the first character of the token (for a negative number in an `in` list,
  the minus sign);
- Call: the first character of the function name;
- Unary, Binary, In: the operator (`not`, `-`, `and`, `<=`, `in`, ...).

`parse_expression` raises RuleFileError with exactly one problem on a syntax error.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, Tree
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from model.errors import RuleFileError, RuleProblem
from rules.ast import Binary, Call, Duration, Expr, In, Items, Keyword, Literal, Pos, Unary, Value
from rules.catalogue import FUNCTIONS
from rules.model import DAY_MS, HOUR_MS, MINUTE_MS

Locate = Callable[[int], tuple[int, int]]
"""Maps a character offset in the expression text to a (line, column) in the rule file."""

UNIT_MS: dict[str, int] = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})

# Human names of the grammar's terminals, for "expected ..." messages.
_TERMINALS: dict[str, str] = {
    "OR": "'or'",
    "AND": "'and'",
    "NOT": "'not'",
    "IN": "'in'",
    "TRUE": "'true'",
    "FALSE": "'false'",
    "NULL": "'null'",
    "COMP_OP": "a comparison (== != < <= > >=)",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "MUL_OP": "'*' or '/'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "EQ": "'='",
    "DURATION": "a duration",
    "NUMBER": "a number",
    "STRING": "a string",
    "NAME": "a function name",
    "$END": "the end of the expression",
}
# The order in which expected terminals are listed (values first, then operators).
_TERMINAL_ORDER = {name: i for i, name in enumerate(
    ["NAME", "NUMBER", "STRING", "DURATION", "TRUE", "FALSE", "NULL", "NOT", "MINUS", "LPAR",
     "LSQB", "COMP_OP", "IN", "PLUS", "MUL_OP", "AND", "OR", "COMMA", "RPAR", "RSQB", "$END"])}

# Things people type from other languages: what to write instead.
_FOREIGN_OPERATORS = {"=": "==", "&": "and", "|": "or", "!": "not", "%": None, "^": None}

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


@functools.cache
def _lark() -> Lark:
    # beside this file (not `resources.files("rules")`: with the compiled build the package's
    # first path is the build's directory, model/native.py)
    grammar = Path(__file__).with_name("expr.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", maybe_placeholders=True)


def parse_expression(
    text: str, *, file: str, line: int, column: int, locate: Locate | None = None
) -> Expr:
    """Parse `text`, which starts at `line`:`column` (1-based) of `file`.

    Positions of the nodes are in file coordinates: a token on the first line of `text` is at
    `column` + its offset; a token on a later line keeps its own column. `locate`, when given,
    overrides that mapping (the loader uses it for quoted and multi-line YAML scalars).
    Raises RuleFileError with a single problem if `text` is not a valid expression.
    """
    where = locate or _offset_locator(text, line, column)
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, file, where) from None
    try:
        expr = _ToAst(file, where).transform(tree)
    except VisitError as exc:
        raise exc.orig_exc from None
    assert not isinstance(expr, Tree | Token)
    _check_durations(expr, file)
    return expr


def to_source(expr: Expr) -> str:
    """The canonical text of `expr`: single spaces, strings in double quotes, durations as
    written, parentheses only where precedence needs them. Parsing it gives the same tree."""
    return _render(expr, 0)


def duration_ms(text: str) -> int:
    """'30d' -> milliseconds. `text` must match \\d+[mhdw]."""
    return int(text[:-1]) * UNIT_MS[text[-1]]


def string_source(value: str) -> str:
    """A string literal in canonical form (double quotes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f'"{escaped}"'


# --- positions -------------------------------------------------------------------------------


def _offset_locator(text: str, line: int, column: int) -> Locate:
    starts = [0] + [m.end() for m in re.finditer(r"\n", text)]

    def locate(offset: int) -> tuple[int, int]:
        index = 0
        for i, start in enumerate(starts):
            if start <= offset:
                index = i
            else:
                break
        col = offset - starts[index] + 1
        if index == 0:
            return line, column + col - 1
        return line + index, col

    return locate


# --- tree -> AST -----------------------------------------------------------------------------


class _Listed(list[Literal]):
    """The items of a `[...]` list, with the position of its `[`."""

    pos: Pos | None = None


class _ToAst(Transformer[Token, Expr]):
    def __init__(self, file: str, locate: Locate) -> None:
        super().__init__(visit_tokens=False)
        self._file = file
        self._locate = locate

    def _pos(self, token: Token) -> Pos:
        assert token.start_pos is not None
        return Pos(*self._locate(token.start_pos))

    def _error(self, token: Token, message: str, suggestion: str | None = None) -> RuleFileError:
        pos = self._pos(token)
        return RuleFileError([RuleProblem(self._file, pos.line, pos.column, message, suggestion)])

    # literals
    def number(self, children: list[Token]) -> Literal:
        (token,) = children
        return Literal(self._number(token), self._pos(token))

    def negative_number(self, children: list[Token]) -> Literal:
        minus, token = children
        return Literal(-self._number(token), self._pos(minus))

    def _number(self, token: Token) -> int | float:
        text = str(token)
        if re.fullmatch(r"\d+", text):
            return int(text)
        value = float(text)
        if not math.isfinite(value):
            raise self._error(token, f"number {text} is too large")
        return value

    def string(self, children: list[Token]) -> Literal:
        (token,) = children
        body = str(token)[1:-1]
        value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), body)
        return Literal(value, self._pos(token))

    def true(self, children: list[Token]) -> Literal:
        return Literal(True, self._pos(children[0]))

    def false(self, children: list[Token]) -> Literal:
        return Literal(False, self._pos(children[0]))

    def null(self, children: list[Token]) -> Literal:
        return Literal(None, self._pos(children[0]))

    def duration(self, children: list[Token]) -> Duration:
        (token,) = children
        return Duration(duration_ms(str(token)), str(token), self._pos(token))

    # calls and names
    def call(self, children: list[Any]) -> Call:
        name, _lpar, args, _rpar = children
        arguments: tuple[Expr, ...] = tuple(args) if args is not None else ()
        text = f"{name}(" + ", ".join(_render(a, 0) for a in arguments) + ")"
        return Call(str(name), arguments, text, self._pos(name))

    def args(self, children: list[Any]) -> list[Expr]:
        return [c for c in children if not isinstance(c, Token)]

    def list_arg(self, children: list[Any]) -> Items:
        (items,) = children
        pos = getattr(items, "pos", None) or (items[0].pos if items else Pos(1, 1))
        return Items(tuple(items), pos)

    def keyword(self, children: list[Any]) -> Keyword:
        name, _eq, value = children
        return Keyword(str(name), value, self._pos(name))

    def bare_name(self, children: list[Token]) -> Expr:
        (name,) = children
        text = str(name)
        if text.lower() in KEYWORDS:
            raise self._error(name, f"unknown name {text!r}: keywords are lower case", text.lower())
        if text in FUNCTIONS:
            raise self._error(
                name, f"{text!r} is a function: call it with parentheses", f"{text}()"
            )
        raise self._error(
            name,
            f"unexpected name {text!r}: a name must be a function call like {text}(...), "
            "and a text value needs quotes",
            string_source(text),
        )

    def group(self, children: list[Any]) -> Expr:
        _lpar, inner, _rpar = children
        assert not isinstance(inner, Token)
        return inner

    # operators
    def unary(self, children: list[Any]) -> Unary:
        op, operand = children
        return Unary(str(op), operand, self._pos(op))

    def binary(self, children: list[Any]) -> Binary:
        left, op, right = children
        return Binary(str(op), left, right, self._pos(op))

    def in_list(self, children: list[Any]) -> In:
        operand, op, items = children
        return In(operand, tuple(items), False, self._pos(op))

    def not_in_list(self, children: list[Any]) -> In:
        operand, op, _in, items = children
        return In(operand, tuple(items), True, self._pos(op))

    def list(self, children: list[Any]) -> list[Literal]:
        out = _Listed(c for c in children if isinstance(c, Literal))
        out.pos = self._pos(children[0]) if isinstance(children[0], Token) else None
        return out


def _check_durations(expr: Expr, file: str) -> None:
    """A duration is only valid as a direct function argument."""
    stack: list[tuple[Expr, bool]] = [(expr, False)]
    while stack:
        node, as_argument = stack.pop()
        if isinstance(node, Duration) and not as_argument:
            raise RuleFileError([RuleProblem(
                file, node.pos.line, node.pos.column,
                f"a duration ({node.text}) is only allowed as a function argument, "
                f"e.g. purchase_count({node.text})",
            )])
        if isinstance(node, Call):
            stack.extend((a, True) for a in node.args)
        elif isinstance(node, Unary | In):
            stack.append((node.operand, False))
        elif isinstance(node, Binary):
            stack.extend([(node.left, False), (node.right, False)])


# --- syntax errors ---------------------------------------------------------------------------


def _syntax_error(exc: UnexpectedInput, text: str, file: str, locate: Locate) -> RuleFileError:
    suggestion: str | None = None
    hint = ""
    expected: set[str] | frozenset[str] | None
    if isinstance(exc, UnexpectedCharacters):
        offset = exc.pos_in_stream or 0
        char = text[offset]
        expected = exc.allowed
        if char in "\"'":
            message = f"unterminated string: the closing {char} is missing"
            expected = None
        else:
            message = f"unexpected character {char!r}"
            pair = text[offset:offset + 2]
            if char in _FOREIGN_OPERATORS and pair != "!=":
                suggestion = _FOREIGN_OPERATORS[char]
    elif isinstance(exc, UnexpectedEOF):
        offset = len(text.rstrip())
        message = "empty expression" if not text.strip() else "unexpected end of expression"
        expected = set(exc.expected)
    elif isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = exc.accepts or exc.expected
        if token.type == "$END":
            offset = len(text.rstrip())
            message = "empty expression" if not text.strip() else "unexpected end of expression"
        else:
            offset = token.start_pos if token.start_pos is not None else 0
            message = f"unexpected {_describe_token(token)}"
            before = text[:offset].rstrip()
            if token.type == "EQ":
                suggestion = "=="
            elif token.type in ("COMP_OP", "IN") and "AND" in expected:
                hint = " (comparisons do not chain: combine them with 'and')"
            elif token.type == "NAME" and offset > 0 and text[offset - 1].isdigit():
                hint = " (a duration is a whole number followed by m, h, d or w, e.g. 30d)"
            elif token.type == "LSQB" and before.endswith(("==", "!=")):
                hint = " (to test a list of values write 'in [...]')"
    else:  # pragma: no cover - lark raises only the three kinds above
        offset = 0
        message = str(exc)
        expected = None
    line, column = locate(min(offset, len(text)))
    message = "syntax error: " + message + hint + _expected(expected)
    return RuleFileError([RuleProblem(file, line, column, message, suggestion)])


_VALUE_TERMINALS = frozenset({"NAME", "NUMBER", "STRING", "DURATION", "TRUE", "FALSE", "NULL",
                              "LPAR", "MINUS", "NOT"})
_OPERATOR_TERMINALS = frozenset({"COMP_OP", "IN", "PLUS", "MINUS", "MUL_OP", "AND", "OR", "NOT"})


def _describe_token(token: Token) -> str:
    if token.type in ("NAME",):
        return f"name {str(token)!r}"
    if token.type in ("NUMBER", "DURATION", "STRING"):
        return f"{_TERMINALS[token.type][2:]} {token!s}"
    return repr(str(token))


def _expected(names: set[str] | frozenset[str] | None) -> str:
    if not names:
        return ""
    remaining = {n for n in names if n in _TERMINALS}
    words: list[str] = []
    if {"NAME", "NUMBER", "STRING"} <= remaining:
        words.append("an expression")
        remaining -= _VALUE_TERMINALS
    if {"COMP_OP", "AND", "OR"} <= remaining:
        words.append("an operator")
        remaining -= _OPERATOR_TERMINALS
    words += [_TERMINALS[n] for n in sorted(remaining, key=lambda n: _TERMINAL_ORDER.get(n, 99))]
    if not words:
        return ""
    if len(words) == 1:
        return f"; expected {words[0]}"
    return "; expected " + ", ".join(words[:-1]) + " or " + words[-1]


# --- rendering -------------------------------------------------------------------------------

_BINARY_PRECEDENCE = {"or": 1, "and": 2, **{op: 4 for op in ("==", "!=", "<", "<=", ">", ">=")},
                      "+": 5, "-": 5, "*": 6, "/": 6}
_ATOM = 8


def _precedence(expr: Expr) -> int:
    if isinstance(expr, Binary):
        return _BINARY_PRECEDENCE[expr.op]
    if isinstance(expr, In):
        return 4
    if isinstance(expr, Unary):
        return 3 if expr.op == "not" else 7
    if isinstance(expr, Literal) and isinstance(expr.value, int | float) \
            and not isinstance(expr.value, bool) and expr.value < 0:
        return 7  # rendered with a leading minus
    return _ATOM


def _render(expr: Expr, minimum: int) -> str:
    text = _render_bare(expr)
    return f"({text})" if _precedence(expr) < minimum else text


def _render_bare(expr: Expr) -> str:
    if isinstance(expr, Literal):
        return _literal_source(expr.value)
    if isinstance(expr, Duration):
        return expr.text
    if isinstance(expr, Call):
        return expr.name + "(" + ", ".join(_render(a, 0) for a in expr.args) + ")"
    if isinstance(expr, Unary):
        if expr.op == "not":
            return "not " + _render(expr.operand, 3)
        return "-" + _render(expr.operand, 7)
    if isinstance(expr, Binary):
        level = _BINARY_PRECEDENCE[expr.op]
        # left-associative: the right side needs a strictly higher level; comparisons do not
        # associate at all, so both sides do.
        left_min = level + 1 if level == 4 else level
        return f"{_render(expr.left, left_min)} {expr.op} {_render(expr.right, level + 1)}"
    if isinstance(expr, Items):
        return "[" + ", ".join(_literal_source(i.value) for i in expr.items) + "]"
    if isinstance(expr, Keyword):
        return f"{expr.name}={_render(expr.value, 0)}"
    op = "not in" if expr.negated else "in"
    items = ", ".join(_literal_source(i.value) for i in expr.items)
    return f"{_render(expr.operand, 5)} {op} [{items}]"


def _literal_source(value: Value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return string_source(value)
    return repr(value)

