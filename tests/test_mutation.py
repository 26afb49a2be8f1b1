"""Mutations always give valid programs inside the search space, and are deterministic per seed."""

import collections
import dataclasses

import numpy as np

import discover
from discover.language.mutation import mutate, random_constant, validate
from discover.language.program import parse

ADAMW = discover.seed("adamw")


@dataclasses.dataclass(frozen=True)
class Space:
    ops: tuple = ("add", "sub", "mul", "div", "interp", "sign", "sqrt", "square", "pow", "clip", "tanh")
    max_len: int = 20
    n_state: int = 3
    allow_h: bool = False


def _lineage(seed, n=300, space=Space()):
    rng = np.random.default_rng(seed)
    pop, kinds = [ADAMW], collections.Counter()
    for _ in range(n):
        child, kind = mutate(pop[int(rng.integers(len(pop)))], rng, space)
        kinds[kind] += 1
        pop.append(child)
    return pop, kinds


def test_children_are_valid_and_inside_the_space():
    space = Space()
    pop, kinds = _lineage(0, space=space)
    assert set(kinds) >= {"insert", "delete", "modify_arg", "modify_const", "modify_op"}
    allowed = set(space.ops) | {"copy"} | {s.op for s in ADAMW.statements}
    for prog in pop:
        assert parse(str(prog)) == prog
        assert len(prog) <= space.max_len and len(prog.state) <= space.n_state
        assert "h" not in prog.params
        assert {s.op for s in prog.statements} <= allowed
    new_ops = {s.op for p in pop for s in p.statements} - {s.op for s in ADAMW.statements}
    assert new_ops and new_ops <= set(space.ops)
    assert len({str(p) for p in pop}) > 200  # mutations actually change programs


def test_mutation_is_deterministic_per_seed():
    a, _ = _lineage(7, n=60)
    b, _ = _lineage(7, n=60)
    c, _ = _lineage(8, n=60)
    assert [str(p) for p in a] == [str(p) for p in b]
    assert [str(p) for p in a] != [str(p) for p in c]


def test_weights_select_the_mutation_kinds():
    rng = np.random.default_rng(0)
    kinds = {mutate(ADAMW, rng, Space(), {"modify_const": 1.0})[1] for _ in range(30)}
    assert kinds == {"modify_const"}
    child, _ = mutate(ADAMW, rng, Space(), {"modify_const": 1.0})
    assert [s.op for s in child.statements] == [s.op for s in ADAMW.statements]
    assert child.constants != ADAMW.constants


def test_random_constants_are_finite_and_varied():
    rng = np.random.default_rng(1)
    values = [random_constant(rng) for _ in range(500)]
    assert all(np.isfinite(values)) and len(set(values)) > 100 and min(values) < 0 < max(values)


def test_validate_rejects_ops_outside_the_space():
    prog = parse("def f(g, lr):\n    u = erf(g) * lr\n    return u\n")
    try:
        validate(prog, Space())
    except discover.ProgramError as e:
        assert "erf" in str(e)
    else:
        raise AssertionError("erf is not in the space")
