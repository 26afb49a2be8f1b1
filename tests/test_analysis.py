"""discover.language.analysis: dead-code removal, the structural hash and the functional fingerprint."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discover import dead_fraction, fingerprint, fingerprints, parse, remove_dead_code, structural_hash
from discover.language.analysis import live_statements
from search_spaces.update_rules import SEED_NAMES, seed
from tests.strategies import programs

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# One interpreter shape for every fingerprint in this file (and the CLI tests): one compile.
# Batches of at most 8 programs share the smallest population bucket, so that shape too.
FP_LEN, FP_STATE, FP_BATCH = 32, 3, 8


def fps(*progs):
    progs = list(progs)
    return [f for i in range(0, len(progs), FP_BATCH)
            for f in fingerprints(progs[i:i + FP_BATCH], max_len=FP_LEN, n_state=FP_STATE)]


# --- dead code --------------------------------------------------------------------------------------
def test_a_dead_chain_is_removed():
    prog = parse(
        "def f(g, w, lr, t):\n"
        "    a = g * 2.0\n"
        "    b = sqrt(a) + w\n"
        "    c = exp(b)\n"
        "    u = lr * g\n"
        "    return u\n"
    )
    assert live_statements(prog) == [False, False, False, False, True]  # sqrt(a) + w is two statements
    assert dead_fraction(prog) == pytest.approx(0.8)
    assert remove_dead_code(prog) == parse("def f(g, w, lr, t):\n    u = lr * g\n    return u\n")


def test_an_overwritten_value_is_dead_but_its_reads_before_are_live():
    prog = parse(
        "def f(g, w, lr, t):\n"
        "    u = g * 3.0\n"  # dead: overwritten before anyone reads it
        "    u = sign(g)\n"
        "    v = u * lr\n"  # reads the second u
        "    u = w\n"  # dead: the update is v
        "    return v\n"
    )
    assert live_statements(prog) == [False, True, True, False]


def test_state_written_but_never_read_is_removed_with_its_parameter():
    prog = parse(
        "def f(g, w, m, v, lr, t):\n"
        "    m = interp(g, m, 0.9)\n"  # m feeds the update: live
        "    v = interp(square(g), v, 0.999)\n"  # v is never read by the update: dead, with its square
        "    u = lr * m\n"
        "    return u, m, v\n"
    )
    assert live_statements(prog) == [True, False, False, True]
    clean = remove_dead_code(prog)
    assert clean.params == ("g", "w", "m", "lr", "t") and clean.state == ("m",)
    assert clean == parse(
        "def f(g, w, m, lr, t):\n    m = interp(g, m, 0.9)\n    u = lr * m\n    return u, m\n")
    assert parse(str(clean)) == clean


def test_state_that_only_feeds_itself_is_dead():
    prog = parse(
        "def f(g, w, s, lr, t):\n"
        "    s = s + square(g)\n"  # accumulates forever, but nothing reads it
        "    u = lr * g\n"
        "    return u, s\n"
    )
    clean = remove_dead_code(prog)
    assert clean.state == () and len(clean) == 1 and dead_fraction(prog) == pytest.approx(2 / 3)


def test_state_needed_through_a_chain_across_steps_is_kept():
    # The update reads a (last step's value); a is written from b (last step's), b from g. So b's write
    # matters two steps later: a fixed point over steps must keep every statement and both states.
    prog = parse(
        "def f(g, w, a, b, c, lr, t):\n"
        "    u = lr * a\n"
        "    a = b + 1.0\n"
        "    b = g * 2.0\n"
        "    c = c + a\n"  # c only feeds itself: dead
        "    return u, a, b, c\n"
    )
    assert live_statements(prog) == [True, True, True, False]
    clean = remove_dead_code(prog)
    assert clean.state == ("a", "b") and len(clean) == 3
    assert fps(prog)[0] == fps(clean)[0]


def test_seeds_have_no_dead_code():
    for name in SEED_NAMES:
        assert dead_fraction(seed(name)) == 0.0, name
        assert remove_dead_code(seed(name)) == seed(name), name


@FAST
@given(programs())
def test_dead_code_removal_is_idempotent_and_keeps_a_valid_program(prog):
    clean = remove_dead_code(prog)
    assert remove_dead_code(clean) == clean
    assert parse(str(clean)) == clean  # still a valid program (return matches the trimmed state)
    kept = iter(prog.statements)
    assert all(any(s == k for k in kept) for s in clean.statements)  # an order-preserving subsequence
    assert set(clean.state) <= set(prog.state) and clean.inputs == prog.inputs and clean.update == prog.update
    assert dead_fraction(clean) == 0.0
    if len(prog):
        assert dead_fraction(prog) == pytest.approx(1 - len(clean) / len(prog))
    assert structural_hash(clean) == structural_hash(prog)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(programs(), min_size=1, max_size=4))
def test_dead_code_removal_never_changes_what_a_program_computes(progs):
    cleaned = [remove_dead_code(p) for p in progs]
    together = fingerprints(progs + cleaned, max_len=FP_LEN, n_state=FP_STATE)
    assert together == fps(*progs) + fps(*cleaned)  # batch companions do not matter either
    assert fps(*progs) == fps(*cleaned)


# --- structural hash --------------------------------------------------------------------------------
ADAM_LIKE = (
    "def adam(g, w, m, v, lr, t):\n"
    "    m = interp(g, m, 0.9)\n"
    "    v = interp(square(g), v, 0.999)\n"
    "    u = m / (sqrt(v) + 1e-08)\n"
    "    return lr * u, m, v\n"
)


def test_structural_hash_ignores_names():
    renamed = parse(
        "def other(g, w, first, second, lr, t):\n"
        "    first = interp(g, first, 0.9)\n"
        "    gg = square(g)\n"
        "    second = interp(gg, second, 0.999)\n"
        "    root = sqrt(second)\n"
        "    den = root + 1e-08\n"
        "    step = first / den\n"
        "    return lr * step, first, second\n"
    )
    assert structural_hash(renamed) == structural_hash(parse(ADAM_LIKE))


def test_structural_hash_ignores_the_order_of_independent_statements_and_dead_code():
    reordered = parse(
        "def adam(g, w, m, v, lr, t):\n"
        "    junk = exp(w) * 3.0\n"  # dead
        "    v = interp(square(g), v, 0.999)\n"  # v before m: independent
        "    m = interp(g, m, 0.9)\n"
        "    u = m / (sqrt(v) + 1e-08)\n"
        "    junk = junk + u\n"  # dead
        "    return lr * u, m, v\n"
    )
    assert structural_hash(reordered) == structural_hash(parse(ADAM_LIKE))
    with_dead_state = parse(ADAM_LIKE.replace("m, v, lr, t", "m, v, z, lr, t").replace(
        "    return lr * u, m, v\n", "    z = z + g\n    return lr * u, m, v, z\n"))
    assert structural_hash(with_dead_state) == structural_hash(parse(ADAM_LIKE))


@pytest.mark.parametrize("change", [
    ("0.999", "0.99"),  # a constant
    ("interp(g, m, 0.9)", "interp(m, g, 0.9)"),  # argument order
    ("sqrt(v)", "rsqrt(v)"),  # an op
    ("m / (sqrt(v) + 1e-08)", "m / (sqrt(v) + 1e-08) + 0.0"),  # an extra (if harmless) op
    ("lr * u", "t * u"),  # an input
])
def test_structural_hash_tells_different_programs_apart(change):
    assert structural_hash(parse(ADAM_LIKE.replace(*change))) != structural_hash(parse(ADAM_LIKE))


def test_structural_hash_of_state_depends_on_how_it_carries_over():
    # Same statements, but which variable is carried to the next step differs.
    a = parse("def f(g, w, m, lr, t):\n    n = m + g\n    m = n * 0.5\n    return n, m\n")
    b = parse("def f(g, w, m, lr, t):\n    n = m + g\n    m = g * 0.5\n    return n, m\n")
    assert structural_hash(a) != structural_hash(b)


def test_seeds_have_distinct_structural_hashes():
    hashes = {structural_hash(seed(n)) for n in SEED_NAMES}
    assert len(hashes) == len(SEED_NAMES)


# --- functional fingerprint -------------------------------------------------------------------------
def _rule(expr: str, params: str = "g, w, lr, t") -> str:
    return f"def f({params}):\n    u = {expr}\n    return lr * u\n"


def test_commuted_and_equivalent_arithmetic_collide():
    add_ab, add_ba = parse(_rule("g + w")), parse(_rule("w + g"))
    mul2, addself = parse(_rule("g * 2.0")), parse(_rule("g + g"))
    f = fps(add_ab, add_ba, mul2, addself)
    assert f[0] == f[1]  # a + b and b + a
    assert f[2] == f[3]
    assert f[0] != f[2]


def test_different_constants_give_different_fingerprints():
    progs = [parse(ADAM_LIKE), parse(ADAM_LIKE.replace("0.999", "0.99")),
             parse(ADAM_LIKE.replace("0.9)", "0.8)")), parse(_rule("g * 2.0")), parse(_rule("g * 2.01"))]
    f = fps(*progs)
    assert len(set(f)) == len(f)


def test_fingerprint_ignores_names_and_state_order():
    swapped = parse(
        "def adam(g, w, v, m, lr, t):\n"  # state slots in the other order, other names for temporaries
        "    m = interp(g, m, 0.9)\n"
        "    q = square(g)\n"
        "    v = interp(q, v, 0.999)\n"
        "    r = m / (sqrt(v) + 1e-08)\n"
        "    return lr * r, v, m\n"
    )
    assert fps(swapped) == fps(parse(ADAM_LIKE))


def test_fingerprint_sees_state_feedback():
    # Same first step (m starts at zero), different later steps.
    ema = parse("def f(g, w, m, lr, t):\n    m = interp(g, m, 0.9)\n    return lr * m, m\n")
    no_state = parse("def f(g, w, lr, t):\n    m = g * 0.1\n    return lr * m\n")
    assert fps(ema) != fps(no_state)


def test_seeds_have_distinct_and_deterministic_fingerprints():
    progs = [seed(n) for n in SEED_NAMES]
    first = fps(*progs)
    assert len(set(first)) == len(SEED_NAMES)
    assert fps(*progs) == first
    assert fps(*reversed(progs)) == first[::-1]


def test_fingerprint_does_not_depend_on_the_padding_shape():
    prog = seed("momentum")
    assert fingerprint(prog) == fps(prog)[0]  # default shape (8 statements, 1 state slot) vs (32, 3)
    assert fingerprints([]) == []
