"""discover.language.program: the update-rule language (parse, canonical printing, ProgramError with line:col)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import discover
from discover.language.ops import OP_BY_NAME
from discover.language.program import MAX_LEN, Program, ProgramError, Statement, parse
from tests.strategies import float64_constants, nested_program_texts, programs

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
H = "def f(g, w, lr, t):\n"
HM = "def f(g, w, m, lr, t):\n"


def _long(n: int) -> str:
    return H + "".join(f"    a{i} = g + {i}.0\n" for i in range(n)) + "    return a0\n"


# (id, text, words the message must contain, line, column); columns are 1-based characters.
ERRORS = [
    ("syntax", H + "    u = g +\n    return u\n", "syntax error", 2, 12),
    ("syntax-unclosed", H + "    u = sqrt(g\n    return u\n", "'(' was never closed", 2, 13),
    ("no-function", "", "no function found", 1, 1),
    ("import-top", "import os\n" + H + "    return g\n", "an import outside the function", 1, 1),
    ("import-inside", H + "    from os import path\n    return g\n", "an import is not allowed", 2, 5),
    ("statement-outside", "x = 1.0\n" + H + "    return g\n", "outside the function", 1, 1),
    ("attribute", H + "    u = g.T\n    return u\n", "attribute access", 2, 9),
    ("attribute-call", H + "    u = 2.0 * jnp.sqrt(g)\n    return u\n", "no attributes", 2, 15),
    ("subscript", H + "    u = g[0]\n    return u\n", "subscripting", 2, 9),
    ("for-loop", H + "    for x in g:\n        u = x\n    return g\n", "a loop", 2, 5),
    ("while-loop", H + "    u = g\n    while u:\n        u = w\n    return u\n", "a loop", 3, 5),
    ("lambda", H + "    u = lambda: g\n    return u\n", "lambda", 2, 9),
    ("conditional-expr", H + "    u = g * (w if lr else t)\n    return u\n", "conditional expression", 2, 14),
    ("if-statement", H + "    if g:\n        u = g\n    return g\n", "an if statement", 2, 5),
    ("comparison", H + "    u = g < w\n    return u\n", "comparison", 2, 9),
    ("string", H + "    u = g + 'abc'\n    return u\n", "strings are not allowed", 2, 13),
    ("f-string", H + "    u = f'{g}'\n    return u\n", "f-string", 2, 9),
    ("bool-constant", H + "    u = g * True\n    return u\n", "bool constants", 2, 13),
    ("none-constant", H + "    return None\n", "NoneType constants", 2, 12),
    ("matmul", H + "    u = g @ w\n    return u\n", "MatMult", 2, 9),
    ("several-functions", H + "    return g\n" + "def k(g):\n    return g\n", "exactly one function", 3, 1),
    ("nested-function", H + "    def k(x):\n        return x\n    return g\n", "nested function", 2, 5),
    ("decorator", "@jax.jit\n" + H + "    return g\n", "decorators", 1, 2),
    ("default-param", "def f(g, w, lr, t=1.0):\n    return g\n", "plain names", 1, 1),
    ("duplicate-param", "def f(g, w, g):\n    return g\n", "duplicate parameter", 1, 1),
    ("param-is-op", "def f(g, sqrt):\n    return g\n", "name of an op", 1, 10),
    ("assign-input", H + "    g = 2.0 * w\n    return g\n", "cannot assign to the input 'g'", 2, 5),
    ("assign-op-name", H + "    exp = g\n    return exp\n", "it is an op name", 2, 5),
    ("tuple-assign", H + "    a, b = g, w\n    return a\n", "one plain variable", 2, 5),
    ("aug-assign-subscript", H + "    u = g\n    u[0] += 1.0\n    return u\n", "augmented assignment", 3, 5),
    ("unknown-op", H + "    u = 2.0 * foo(g)\n    return u\n", "unknown op 'foo'", 2, 15),
    ("keyword-arg", H + "    u = clip(g, c=1.0)\n    return u\n", "positional arguments only", 2, 9),
    ("arity-unary", H + "    u = sqrt(g, w)\n    return u\n", "op 'sqrt' takes 1 argument(s), got 2", 2, 9),
    ("arity-ternary", H + "    u = lr * interp(g, w)\n    return u\n", "op 'interp' takes 3 argument(s), got 2",
     2, 14),
    ("undefined", H + "    u = g * zz\n    return u\n", "undefined variable 'zz'", 2, 13),
    ("used-before-defined", H + "    u = sqrt(w) + z\n    z = g\n    return u\n", "undefined variable 'z'", 2, 19),
    ("undefined-update", H + "    u = g\n    return q\n", "undefined variable 'q'", 3, 5),
    ("unknown-input-t", "def f(g, w, lr):\n    u = g * t\n    return u\n", "input 't' is used but is not a parameter",
     2, 13),
    ("unknown-input-h", H + "    u = g / sqrt(h)\n    return u\n", "input 'h' is used but is not a parameter", 2, 18),
    ("non-finite-1e999", H + "    u = g * 1e999\n    return u\n", "non-finite constant", 2, 13),
    ("non-finite-negative", H + "    u = g * -1e999\n    return u\n", "non-finite constant", 2, 14),
    ("non-finite-huge-int", H + "    u = g * 1" + "0" * 400 + "\n    return u\n", "non-finite constant", 2, 13),
    ("missing-return", H + "    u = g\n", "missing return", 2, 5),
    ("return-not-last", H + "    return g\n    return w\n", "return must be the last statement", 2, 5),
    ("bare-return", H + "    u = g\n    return\n", "malformed return", 3, 5),
    ("empty-tuple-return", H + "    return ()\n", "malformed return", 2, 5),
    ("state-expression-returned", HM + "    u = g + m\n    return u, m * 2.0\n", "plain names", 3, 15),
    ("state-not-returned", HM + "    u = g + m\n    return u\n", "state 'm' is not returned", 3, 5),
    ("state-out-of-order", "def f(g, w, m, v, lr, t):\n    u = g + m + v\n    return u, v, m\n", "out of order",
     3, 5),
    ("returns-non-state", HM + "    u = g + m\n    return u, m, u\n", "'u' is returned but is not a state", 3, 5),
    ("too-long", _long(MAX_LEN + 1), f"program has {MAX_LEN + 1} statements; the limit is {MAX_LEN}",
     2 + MAX_LEN, 11),
    ("null-byte", H + "    u = g\x00\n    return u\n", "null byte", 2, 10),
    ("lone-surrogate", H + "    u = g\ud800\n    return u\n", "U+D800", 2, 10),
    ("unicode-column", H + "    é = g\n    u = é * zz\n    return u\n", "undefined variable 'zz'", 3, 13),
    ("crlf-lines", H.replace("\n", "\r\n") + "    u = g\r\n    return u, v\r\n", "'v' is returned", 3, 5),
]


@pytest.mark.parametrize("text,words,line,col", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_every_defect_is_a_program_error_with_line_and_column(text, words, line, col):
    with pytest.raises(ProgramError) as info:
        parse(text)
    e = info.value
    assert words in e.message
    assert (e.line, e.col) == (line, col), e
    assert str(e) == f"line {line}:{col}: {e.message}"
    assert "\n" not in str(e)


def test_program_error_is_a_value_error_exported_by_the_package():
    assert discover.ProgramError is ProgramError and issubclass(ProgramError, ValueError)
    assert discover.parse is parse


def test_the_length_limit_is_a_parameter():
    text = H + "    u = g * 2.0\n    v = u + w\n    z = v - lr\n    return z\n"
    assert len(parse(text, max_len=3)) == 3
    with pytest.raises(ProgramError, match="program has 3 statements; the limit is 2") as info:
        parse(text, max_len=2)
    assert (info.value.line, info.value.col) == (4, 9)  # the first statement past the limit
    # flattened temporaries count: one line, three ops
    with pytest.raises(ProgramError, match="program has 3 statements") as info:
        parse(H + "    u = sqrt(g * g + w)\n    return u\n", max_len=2)
    assert info.value.line == 2


def test_h_is_rejected_where_the_search_space_has_no_hessian():
    text = "def f(g, w, h, lr, t):\n    u = g / sqrt(h)\n    return u\n"
    assert parse(text).reads_h
    with pytest.raises(ProgramError, match="input 'h'") as info:
        parse(text, allow_h=False)
    assert (info.value.line, info.value.col) == (1, 13)


def test_a_spurious_system_error_from_ast_parse_is_retried(monkeypatch):
    """CPython < 3.11.8 (gh-106905) may raise SystemError from ast.parse while other threads run: parse again."""
    import ast

    from discover.language import program as program_module

    real, calls = ast.parse, []

    def flaky(text, *args, **kwargs):
        calls.append(text)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=72, after=39)")
        return real(text, *args, **kwargs)

    monkeypatch.setattr(program_module.ast, "parse", flaky)
    text = "def r(g, w, m, v, lr, t):\n    return lr * g, m, v\n"
    assert str(parse(text)) == str(program_module.parse(text)) and len(calls) == 3
    monkeypatch.setattr(program_module.ast, "parse", lambda *a, **k: (_ for _ in ()).throw(SystemError("x")))
    with pytest.raises(SystemError):  # a persistent SystemError is a real error, not hidden
        parse(text)


def test_non_string_input_is_a_program_error():
    with pytest.raises(ProgramError, match="must be a string"):
        parse(b"def f(g):\n    return g\n")


# --- the canonical form -----------------------------------------------------------------------------
def test_nested_expressions_flatten_into_temporaries_in_emission_order():
    prog = parse(
        "def rule(g, w, m, lr, t):\n"
        "    m = interp(g, m, 0.9)\n"
        "    u = sqrt(g * g + w) / (1.0 + exp(-lr))\n"
        "    v = -(m - w) ** 2.0\n"
        "    return lr * u + v, m\n"
    )
    assert [str(s) for s in prog.statements] == [
        "m = interp(g, m, 0.9)",
        "_1 = g * g",
        "_2 = _1 + w",
        "_3 = sqrt(_2)",
        "_4 = -lr",
        "_5 = exp(_4)",
        "_6 = 1.0 + _5",
        "u = _3 / _6",
        "_7 = m - w",
        "_8 = pow(_7, 2.0)",
        "v = -_8",
        "_9 = lr * u",
        "update = _9 + v",
    ]
    assert prog.update == "update" and prog.state == ("m",) and prog.inputs == ("g", "w", "lr", "t")
    again = parse(str(prog))
    assert again == prog and str(again) == str(prog)


def test_temporaries_skip_names_the_program_uses():
    prog = parse(H + "    _1 = g\n    update = w\n    _3 = sqrt(_1 * w)\n    return update + _3\n")
    dsts = [s.dst for s in prog.statements]
    assert dsts == ["_1", "update", "_2", "_3", "_4"]  # _2 for `_1 * w`, then a fresh name for the update
    assert prog.update == "_4"
    assert parse(str(prog)) == prog


def test_augmented_assignment_unary_plus_and_constants():
    prog = parse(HM + "    m *= 0.5\n    m += g\n    u = +m\n    c = -2.5\n    d = -(3)\n    return u * c * d, m\n")
    assert [(s.dst, s.op, s.args) for s in prog.statements[:5]] == [
        ("m", "mul", ("m", 0.5)),
        ("m", "add", ("m", "g")),
        ("u", "copy", ("m",)),
        ("c", "copy", (-2.5,)),
        ("d", "copy", (-3.0,)),
    ]
    assert all(isinstance(a, float) for s in prog.statements for a in s.args if not isinstance(a, str))
    assert prog.constants == (0.5, -2.5, -3.0)


def test_canonical_text_of_each_statement_form():
    prog = Program(
        name="f", params=("g", "w", "m", "lr", "t"), update="u",
        statements=(
            Statement("a", "copy", ("g",)), Statement("b", "neg", ("a",)), Statement("c", "neg", (2.0,)),
            Statement("d", "sub", ("b", -1.5)), Statement("e", "div", (1e-08, "d")),
            Statement("p", "pow", ("e", "t")), Statement("m", "interp", ("g", "m", 0.999)),
            Statement("u", "mul", ("lr", "p")),
        ),
    )
    assert str(prog) == (
        "def f(g, w, m, lr, t):\n"
        "    a = g\n"
        "    b = -a\n"
        "    c = neg(2.0)\n"  # `-2.0` would read back as a constant
        "    d = b - -1.5\n"
        "    e = 1e-08 / d\n"
        "    p = pow(e, t)\n"
        "    m = interp(g, m, 0.999)\n"
        "    u = lr * p\n"
        "    return u, m\n"
    )
    assert parse(str(prog)) == prog


def test_seed_texts_parse_to_their_canonical_form():
    from search_spaces.update_rules import SEED_NAMES, seed

    for name in SEED_NAMES:
        prog = seed(name)
        assert parse(str(prog)) == prog, name


def _evaluate(program: Program, env: dict) -> np.ndarray:
    """One step of a program with elementwise ops, straight from the op definitions."""
    env = dict(env)
    for s in program.statements:
        env[s.dst] = np.asarray(OP_BY_NAME[s.op].fn(*(env[a] if isinstance(a, str) else a for a in s.args)))
    return env[program.update]


def test_flattening_keeps_operand_order_and_precedence():
    rng = np.random.default_rng(0)
    g, w = rng.normal(size=5).astype(np.float32), rng.normal(size=5).astype(np.float32)
    lr, t = np.float32(0.3), np.float32(2.0)
    prog = parse(H + "    u = (g - w) / (lr - t * g) - w ** 2.0 - -g + 3.0 ** -lr\n    return u\n")
    expect = (g - w) / (lr - t * g) - np.sign(w) * np.abs(w) ** 2.0 - -g + 3.0 ** -lr
    np.testing.assert_allclose(_evaluate(prog, {"g": g, "w": w, "lr": lr, "t": t}), expect, rtol=1e-5)


# --- round trips ------------------------------------------------------------------------------------
@FAST
@given(programs())
def test_random_programs_round_trip_through_text(prog):
    text = str(prog)
    again = parse(text)
    assert again == prog
    assert str(again) == text


@settings(FAST, max_examples=30)
@given(programs(constants=float64_constants, max_statements=MAX_LEN, max_state=3))
def test_round_trip_keeps_every_finite_double_exactly(prog):
    again = parse(str(prog))
    assert again == prog
    assert [repr(c) for c in again.constants] == [repr(c) for c in prog.constants]  # -0.0 stays -0.0


@FAST
@given(nested_program_texts())
def test_canonical_form_of_nested_text_is_a_fixed_point(text):
    prog = parse(text, max_len=10_000)
    assert all(s.op in OP_BY_NAME for s in prog.statements)
    assert all(len(s.args) == OP_BY_NAME[s.op].arity for s in prog.statements)
    again = parse(str(prog), max_len=10_000)
    assert again == prog
    assert str(again) == str(prog)


# --- fuzz: only ProgramError may escape -------------------------------------------------------------
def _check_only_program_error(text: str) -> None:
    try:
        prog = parse(text)
    except ProgramError as e:
        n_lines = len(re.split(r"\r\n|\r|\n", text))
        assert e.line is not None and 1 <= e.line <= n_lines + 1, (e, text)
        assert e.col is not None and e.col >= 1, (e, text)
        assert "\n" not in str(e) and "\r" not in str(e)
    else:  # whatever parses must be a valid program in canonical form
        assert parse(str(prog)) == prog


_SPECIAL = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\ufeff", "\r", "\n", "\t", "\x0c", "\u2028", "é", "(", ")", ",", ":",
     "=", "-", "*", "**", "1e999", "9" * 330, "'", '"', "#", "\\", " ", "lambda", "import", "[", "]", "."]
)


@st.composite
def _mutated(draw):
    text = draw(st.one_of(programs().map(str), nested_program_texts()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "duplicate", "insert", "swap", "truncate"]))
        i = draw(st.integers(0, max(len(text) - 1, 0)))
        if kind == "delete":
            text = text[:i] + text[i + 1:]
        elif kind == "duplicate":
            text = text[:i] + text[i:i + 1] * draw(st.integers(2, 3)) + text[i + 1:]
        elif kind == "insert":
            ins = draw(st.one_of(_SPECIAL, st.characters(codec=None, categories=None)))
            text = text[:i] + ins + text[i:]
        elif kind == "swap":
            toks = re.findall(r"\w+|\s+|[^\w\s]", text)
            if len(toks) > 1:
                a, b = draw(st.integers(0, len(toks) - 1)), draw(st.integers(0, len(toks) - 1))
                toks[a], toks[b] = toks[b], toks[a]
                text = "".join(toks)
        else:
            text = text[:i]
    return text


@settings(max_examples=200, deadline=None)
@given(_mutated())
def test_fuzz_mutated_programs_raise_only_program_error(text):
    _check_only_program_error(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, categories=None), max_size=80))
def test_fuzz_random_text_raises_only_program_error(text):
    _check_only_program_error(text)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="defgwlrtm(),:=+-*/ \n_0123456789.e", max_size=120))
def test_fuzz_python_like_text_raises_only_program_error(text):
    _check_only_program_error("def f(g, w, lr, t):\n    " + text)


DEEP = {
    "parentheses-2000": H + "    u = " + "(" * 2000 + "g" + ")" * 2000 + "\n    return u\n",
    "unary-minus-2000": H + "    u = " + "-" * 2000 + "g\n    return u\n",
    "unary-minus-const-3000": H + "    u = " + "-" * 3000 + "1.0\n    return u\n",
    "chained-add-5000": H + "    u = g" + " + g" * 5000 + "\n    return u\n",
    "nested-calls-300": H + "    u = " + "sqrt(" * 300 + "g" + ")" * 300 + "\n    return u\n",
    "nested-parenthesized-adds-150": H + "    u = " + "(g + " * 150 + "g" + ")" * 150 + "\n    return u\n",
    "power-tower-3000": H + "    u = g" + " ** g" * 3000 + "\n    return u\n",
    "1e999": H + "    return 1e999\n",
    "int-5000-digits": H + "    u = g * " + "9" * 5000 + "\n    return u\n",
    "only-def": "def f(g):\n",
    "bom": "\ufeff" + H + "    return g\n",
    "async": "async def f(g):\n    return g\n",
    "class": "class A:\n    pass\n",
    "star-return": HM + "    return *g, m\n",
    "walrus": H + "    u = (v := g)\n    return u\n",
    "yield": H + "    yield g\n    return g\n",
    "global": H + "    global x\n    return g\n",
    "unicode-line-separator": H + "    u = g\u2028    return u\n",
}


@pytest.mark.parametrize("text", list(DEEP.values()), ids=list(DEEP))
def test_hostile_inputs_raise_only_program_error(text):
    with pytest.raises(ProgramError) as info:
        parse(text)
    assert info.value.line is not None and info.value.col >= 1


def test_constants_beyond_float32_are_rejected():
    with pytest.raises(ProgramError, match="float32") as e:
        parse("def f(g, lr):\n    u = g * 1e300\n    return u\n")
    assert (e.value.line, e.value.col) == (2, 13)
