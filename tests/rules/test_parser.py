"""The expression parser: precedence, every construct, canonical text, positions, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.errors import RuleFileError, RuleProblem
from rules.ast import Binary, Call, Duration, Expr, In, Items, Keyword, Literal, Pos, Unary
from rules.model import DAY_MS, HOUR_MS, MINUTE_MS
from rules.parser import parse_expression, to_source


def parse(text: str, line: int = 1, column: int = 1) -> Expr:
    return parse_expression(text, file="r.yaml", line=line, column=column)


def shape(expr: Expr) -> str:
    """Fully parenthesised prefix form: shows exactly how the parser grouped things."""
    if isinstance(expr, Literal):
        return repr(expr.value)
    if isinstance(expr, Duration):
        return expr.text
    if isinstance(expr, Call):
        return expr.name + "(" + " ".join(shape(a) for a in expr.args) + ")"
    if isinstance(expr, Unary):
        return f"({expr.op} {shape(expr.operand)})"
    if isinstance(expr, Binary):
        return f"({expr.op} {shape(expr.left)} {shape(expr.right)})"
    if isinstance(expr, Items):
        return f"[{' '.join(repr(i.value) for i in expr.items)}]"
    if isinstance(expr, Keyword):
        return f"{expr.name}={shape(expr.value)}"
    op = "not-in" if expr.negated else "in"
    return f"({op} {shape(expr.operand)} [{' '.join(repr(i.value) for i in expr.items)}])"


def error(text: str, line: int = 1, column: int = 1) -> RuleProblem:
    with pytest.raises(RuleFileError) as info:
        parse(text, line, column)
    assert len(info.value.problems) == 1
    return info.value.problems[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("a() or b() and c()", "(or a() (and b() c()))"),
    ("a() and b() or c()", "(or (and a() b()) c())"),
    ("a() or b() or c()", "(or (or a() b()) c())"),
    ("not a() and b()", "(and (not a()) b())"),
    ("not a() == 1", "(not (== a() 1))"),
    ("not not a()", "(not (not a()))"),
    ("a() + 1 > b() * 2", "(> (+ a() 1) (* b() 2))"),
    ("1 + 2 * 3", "(+ 1 (* 2 3))"),
    ("(1 + 2) * 3", "(* (+ 1 2) 3)"),
    ("1 - 2 - 3", "(- (- 1 2) 3)"),
    ("8 / 4 / 2", "(/ (/ 8 4) 2)"),
    ("-a() * 2", "(* (- a()) 2)"),
    ("- -1", "(- (- 1))"),
    ("2 * -3", "(* 2 (- 3))"),
    ("a() + 1 in [1, 2]", "(in (+ a() 1) [1 2])"),
    ("not a() in [1]", "(not (in a() [1]))"),
    ("a() not in [1] and b()", "(and (not-in a() [1]) b())"),
    ("a() >= 1 and b() != null or c() <= -2.5",
     "(or (and (>= a() 1) (!= b() None)) (<= c() (- 2.5)))"),
])
def test_precedence_and_associativity(text: str, expected: str) -> None:
    assert shape(parse(text)) == expected


@pytest.mark.parametrize(("text", "value"), [
    ("5000", 5000),
    ("0.2", 0.2),
    ("1e3", 1000.0),
    ("2.5E-1", 0.25),
    ('"email_click"', "email_click"),
    ("'single'", "single"),
    ('"say \\"hi\\""', 'say "hi"'),
    ("'it\\'s'", "it's"),
    ('"a\\\\b"', "a\\b"),
    ('""', ""),
    ('"zażółć"', "zażółć"),
    ("true", True),
    ("false", False),
    ("null", None),
])
def test_literals(text: str, value: object) -> None:
    expr = parse(text)
    assert isinstance(expr, Literal)
    assert expr.value == value
    assert type(expr.value) is type(value)


@pytest.mark.parametrize(("text", "ms"), [
    ("15m", 15 * MINUTE_MS), ("1h", HOUR_MS), ("180d", 180 * DAY_MS), ("2w", 14 * DAY_MS),
    ("0d", 0),
])
def test_durations_as_arguments(text: str, ms: int) -> None:
    expr = parse(f"purchase_amount({text})")
    assert isinstance(expr, Call)
    (arg,) = expr.args
    assert arg == Duration(ms, text, Pos(1, 17))


def test_calls_and_canonical_text() -> None:
    expr = parse("count( 'email_click' ,30d )")
    assert isinstance(expr, Call)
    assert expr.name == "count"
    assert expr.text == 'count("email_click", 30d)'
    assert [type(a) for a in expr.args] == [Literal, Duration]

    empty = Call("lifetime_orders", (), "lifetime_orders()", Pos(1, 1))
    assert parse("lifetime_orders( )") == empty
    inner = parse("purchase_amount(180d) >= 5000")
    assert isinstance(inner, Binary) and isinstance(inner.left, Call)
    assert inner.left.text == "purchase_amount(180d)"
    quoted = parse("""attribute('say "x"')""")
    assert isinstance(quoted, Call)
    assert quoted.text == 'attribute("say \\"x\\"")'


def test_in_lists_hold_literals_including_negative_numbers() -> None:
    expr = parse('attribute("region") not in ["PL", \'DE\', -1, 2.5, true, null]')
    assert isinstance(expr, In)
    assert expr.negated
    assert [i.value for i in expr.items] == ["PL", "DE", -1, 2.5, True, None]
    assert expr.items[2].pos == Pos(1, 41)  # the minus sign
    assert parse("a() in []") == In(Call("a", (), "a()", Pos(1, 1)), (), False, Pos(1, 5))


def test_keywords_are_not_names() -> None:
    # names that merely start with a keyword are ordinary function names
    expr = parse("android() or order() and notes() in [1] and nullable()")
    assert shape(expr) == "(or android() (and (and order() (in notes() [1])) nullable()))"


def test_positions_are_in_file_coordinates() -> None:
    expr = parse("purchase_amount(180d) >= 5000 and not x()", line=12, column=11)
    assert isinstance(expr, Binary)
    assert expr.pos == Pos(12, 41)  # 'and'
    comparison = expr.left
    assert isinstance(comparison, Binary)
    assert comparison.pos == Pos(12, 33)  # '>='
    call = comparison.left
    assert isinstance(call, Call) and call.pos == Pos(12, 11)
    assert call.args[0].pos == Pos(12, 27)
    assert comparison.right.pos == Pos(12, 36)
    negation = expr.right
    assert isinstance(negation, Unary) and negation.pos == Pos(12, 45)
    assert negation.operand.pos == Pos(12, 49)


def test_positions_on_later_lines_keep_their_own_column() -> None:
    expr = parse("a() >= 1\n    and b()", line=7, column=20)
    assert isinstance(expr, Binary)
    assert expr.pos == Pos(8, 5)
    assert expr.right.pos == Pos(8, 9)


def test_custom_locator_maps_offsets() -> None:
    expr = parse_expression("a() or b()", file="f", line=1, column=1,
                            locate=lambda offset: (100, 1000 + offset))
    assert isinstance(expr, Binary)
    assert expr.pos == Pos(100, 1004)
    assert expr.right.pos == Pos(100, 1007)


def test_syntax_error_reports_position_and_expectation() -> None:
    problem = error("purchase_amount(30d) >= ", line=5, column=11)
    assert (problem.file, problem.line, problem.column) == ("r.yaml", 5, 34)
    assert "syntax error" in problem.message
    assert "expected an expression" in problem.message


def test_syntax_error_on_a_later_line() -> None:
    problem = error("a() and\n  b( ) or )", line=3, column=9)
    assert (problem.line, problem.column) == (4, 11)
    assert "unexpected ')'" in problem.message


def test_unclosed_call() -> None:
    problem = error("purchase_amount(30d")
    assert (problem.line, problem.column) == (1, 20)
    assert "unexpected end of expression" in problem.message
    assert "')'" in problem.message


@pytest.mark.parametrize("text", ["30d > 1", "purchase_count(30d) > 7d", "(30d)", "f(-30d)",
                                  "f(30d + 1d)"])
def test_durations_are_only_function_arguments(text: str) -> None:
    problem = error(text)
    assert "only allowed as a function argument" in problem.message


def test_duration_misplaced_points_at_it() -> None:
    problem = error("purchase_count(30d) > 7d", column=5)
    assert (problem.line, problem.column) == (1, 27)


def test_parenthesised_duration_is_still_an_argument() -> None:
    expr = parse("purchase_count((30d))")
    assert isinstance(expr, Call) and expr.text == "purchase_count(30d)"


def test_comparisons_do_not_chain() -> None:
    problem = error("1 < a() < 3")
    assert problem.column == 9
    assert "do not chain" in problem.message


@pytest.mark.parametrize(("text", "column", "suggestion"), [
    ("a() = 1", 5, "=="),
    ("a() && b()", 5, "and"),
    ("a() || b()", 5, "or"),
    ("True", 1, "true"),
    ("a() == NULL", 8, "null"),
    ("purchase_count", 1, "purchase_count()"),
    ("attribute(region) == 1", 11, '"region"'),
])
def test_common_mistakes_get_suggestions(text: str, column: int, suggestion: str) -> None:
    problem = error(text)
    assert problem.column == column
    assert problem.suggestion == suggestion


@pytest.mark.parametrize(("text", "column", "fragment"), [
    ('a() == "open', 8, "unterminated string"),
    ("", 1, "empty expression"),
    ("   ", 1, "empty expression"),
    ("a() in b()", 8, "expected '['"),
    ("a() in [b()]", 9, "expected a number, a string"),
    ("purchase_count(30days) > 1", 18, "whole number followed by m, h, d or w"),
    ("purchase_count(1.5d) > 1", 19, "whole number followed by m, h, d or w"),
    ('a() == ["x"]', 8, "in [...]"),
    ("1e999 > 1", 1, "too large"),
    ("a() $ 1", 5, "unexpected character '$'"),
])
def test_syntax_errors(text: str, column: int, fragment: str) -> None:
    problem = error(text)
    assert problem.column == column
    assert fragment in problem.message


def test_errors_carry_the_file_name() -> None:
    with pytest.raises(RuleFileError) as info:
        parse_expression("a() and", file="rules/x.yaml", line=2, column=3)
    assert str(info.value).startswith("rules/x.yaml:2:10: syntax error")


# --- canonical text ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "canonical"), [
    ("a()+1>2", "a() + 1 > 2"),
    ("(a() or b()) and c()", "(a() or b()) and c()"),
    ("((a())) or ((b()))", "a() or b()"),
    ("1 - (2 - 3)", "1 - (2 - 3)"),
    ("(1 - 2) - 3", "1 - 2 - 3"),
    ("-(1 + 2)", "-(1 + 2)"),
    ("not (a() and b())", "not (a() and b())"),
    ("(not a()) and b()", "not a() and b()"),
    ("(a() == 1) == true", "(a() == 1) == true"),
    ("x('a', 30d, -1, null)", 'x("a", 30d, -1, null)'),
    ("a() not in ['x',\"y\"]", 'a() not in ["x", "y"]'),
    ("(a() + 1) in [1]", "a() + 1 in [1]"),
    ("-(a() in [1])", "-(a() in [1])"),
])
def test_to_source(text: str, canonical: str) -> None:
    assert to_source(parse(text)) == canonical


_P = Pos(1, 1)
_names = st.sampled_from(["a", "purchase_amount", "count", "in_segment", "x_1"])
_literals = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(lambda v: Literal(v, _P)),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda v: Literal(v, _P)),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=6)
    .map(lambda v: Literal(v, _P)),
    st.sampled_from([True, False, None]).map(lambda v: Literal(v, _P)),
)
_durations = st.builds(lambda n, u: Duration(0, f"{n}{u}", _P),
                       st.integers(min_value=1, max_value=999), st.sampled_from("mhdw"))
_args = st.lists(st.one_of(_literals, _durations), max_size=3)
_calls = st.builds(lambda n, a: Call(n, tuple(a), "", _P), _names, _args)
_items = st.lists(st.one_of(_literals,
                            st.integers(min_value=1, max_value=99).map(lambda v: Literal(-v, _P))),
                  max_size=3)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(lambda op, e: Unary(op, e, _P), st.sampled_from(["not", "-"]), children),
        st.builds(lambda op, a, b: Binary(op, a, b, _P),
                  st.sampled_from(["and", "or", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*",
                                   "/"]), children, children),
        st.builds(lambda e, i, n: In(e, tuple(i), n, _P), children, _items, st.booleans()),
    )


_exprs = st.recursive(st.one_of(_literals, _calls), _extend, max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(_exprs)
def test_canonical_text_parses_back_to_the_same_tree(expr: Expr) -> None:
    source = to_source(expr)
    parsed = parse(source)
    assert shape(parsed) == shape(expr)
    assert to_source(parsed) == source
