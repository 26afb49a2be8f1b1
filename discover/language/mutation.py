"""Mutations of update-rule programs (host side, numpy Generator: seeded, its state checkpointable).

``mutate(program, rng, space)`` applies one of

* ``insert``: a new statement ``x = op(args)`` at a random position (args from the names defined there
  or constants), sometimes overwriting an existing variable, or starting a new state variable;
* ``delete``: remove a statement;
* ``modify_arg``: point one argument at another defined name or a constant;
* ``modify_const``: resample a constant, or scale it by ``2^N(0, 1)``;
* ``modify_op``: swap an op for another of the same arity,

and always returns a valid program of the space: a child that does not validate (an undefined name
after a deletion, too long, ...) is mutated again from the parent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from discover.language.ops import OP_BY_NAME
from discover.language.program import INPUTS, Program, ProgramError, Statement, parse

DEFAULT_WEIGHTS = {"insert": 1.0, "delete": 1.0, "modify_arg": 1.0, "modify_const": 1.0, "modify_op": 1.0}
COMMON_CONSTANTS = (0.5, 0.9, 0.99, 0.999, 1.0, 2.0, 1e-8, 1e-3, 0.1)
MAX_TRIES = 50


def random_constant(rng: np.random.Generator) -> float:
    """Common optimizer constants half of the time, else log-uniform magnitude in [1e-4, 10] with a sign."""
    if rng.random() < 0.5:
        return float(rng.choice(COMMON_CONSTANTS))
    value = 10.0 ** rng.uniform(-4.0, 1.0)
    return float(_round_sig(value if rng.random() < 0.8 else -value))


def _round_sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _space_attr(space, name, default):
    return getattr(space, name, default) if space is not None else default


def _ops_of(space):
    return tuple(_space_attr(space, "ops", tuple(OP_BY_NAME)))


def _defined_before(program: Program, i: int) -> list[str]:
    names = list(program.params)
    for st in program.statements[:i]:
        if st.dst not in names:
            names.append(st.dst)
    return [n for n in names if n != "h" or _reads_h_allowed(program)]


def _reads_h_allowed(program: Program) -> bool:
    return "h" in program.params


def _sample_constant(rng, space):
    sample = getattr(space, "sample_constant", None)
    return float(sample(rng)) if sample else random_constant(rng)


def _random_arg(rng, names, space=None, const_prob=0.25):
    if rng.random() < const_prob or not names:
        return _sample_constant(rng, space)
    return names[int(rng.integers(len(names)))]


def _fresh_name(program: Program, prefix="x") -> str:
    used = set(program.params) | {s.dst for s in program.statements}
    k = 0
    while f"{prefix}{k}" in used:
        k += 1
    return f"{prefix}{k}"


def _insert(program, rng, space):
    ops_allowed = _ops_of(space)
    i = int(rng.integers(len(program.statements) + 1))
    names = _defined_before(program, i)
    op = OP_BY_NAME[ops_allowed[int(rng.integers(len(ops_allowed)))]]
    args = tuple(_random_arg(rng, names, space) for _ in range(op.arity))
    if all(not isinstance(a, str) for a in args):  # keep at least one variable input
        args = (names[int(rng.integers(len(names)))],) + args[1:]
    params = program.params
    roll = rng.random()
    n_state = _space_attr(space, "n_state", 4)
    if roll < 0.1 and len(program.state) < n_state:
        dst = _fresh_name(program, "s")  # a new state variable: an EMA-like accumulator of something
        args = (names[int(rng.integers(len(names)))], dst, float(rng.choice((0.9, 0.99, 0.999))))
        op = OP_BY_NAME["interp"]
        cut = params.index("lr") if "lr" in params else len(params)
        params = params[:cut] + (dst,) + params[cut:]
    elif roll < 0.5:
        writable = [n for n in names if n not in INPUTS]
        dst = writable[int(rng.integers(len(writable)))] if writable else _fresh_name(program)
    else:
        dst = _fresh_name(program)
    st = Statement(dst, op.name, args)
    statements = program.statements[:i] + (st,) + program.statements[i:]
    # A new variable nobody reads would be dead: half the time make it the update's input.
    if dst.startswith("x") and dst not in names and rng.random() < 0.5:
        upd = program.update
        statements = statements + (Statement(upd, "add" if rng.random() < 0.5 else "mul", (upd, dst)),)
    return program.replace(params=params, statements=statements)


def _delete(program, rng, space):
    if not program.statements:
        return None
    i = int(rng.integers(len(program.statements)))
    return program.replace(statements=program.statements[:i] + program.statements[i + 1:])


def _modify_arg(program, rng, space):
    if not program.statements:
        return None
    i = int(rng.integers(len(program.statements)))
    st = program.statements[i]
    k = int(rng.integers(len(st.args)))
    args = list(st.args)
    args[k] = _random_arg(rng, _defined_before(program, i), space)
    return _replace_statement(program, i, Statement(st.dst, st.op, tuple(args)))


def _modify_const(program, rng, space):
    spots = [(i, k) for i, st in enumerate(program.statements) for k, a in enumerate(st.args) if not isinstance(a, str)]
    if not spots:
        return _modify_arg(program, rng, space)
    i, k = spots[int(rng.integers(len(spots)))]
    st = program.statements[i]
    args = list(st.args)
    perturb = getattr(space, "perturb_constant", None)
    if rng.random() < 0.5:
        args[k] = _sample_constant(rng, space)
    else:
        args[k] = float(perturb(args[k], rng)) if perturb else _round_sig(args[k] * 2.0 ** rng.normal())
    if not math.isfinite(args[k]):
        return None
    return _replace_statement(program, i, Statement(st.dst, st.op, tuple(args)))


def _modify_op(program, rng, space):
    if not program.statements:
        return None
    i = int(rng.integers(len(program.statements)))
    st = program.statements[i]
    arity = len(st.args)
    same = [o for o in _ops_of(space) if OP_BY_NAME[o].arity == arity and o != st.op]
    if not same:
        return None
    return _replace_statement(program, i, Statement(st.dst, same[int(rng.integers(len(same)))], st.args))


def _replace_statement(program, i, st):
    return program.replace(statements=program.statements[:i] + (st,) + program.statements[i + 1:])


MUTATIONS = {
    "insert": _insert,
    "delete": _delete,
    "modify_arg": _modify_arg,
    "modify_const": _modify_const,
    "modify_op": _modify_op,
}


def validate(program: Program, space=None) -> Program:
    """Re-parse the printed program under the space's limits (raises ProgramError)."""
    max_len = _space_attr(space, "max_len", 32)
    program = parse(str(program), max_len=max_len, allow_h=_space_attr(space, "allow_h", True))
    if len(program.state) > _space_attr(space, "n_state", 4):
        raise ProgramError(f"{len(program.state)} state variables > {_space_attr(space, 'n_state', 4)}")
    bad = {st.op for st in program.statements} - set(_ops_of(space)) - {"copy"}
    if bad:
        raise ProgramError(f"ops outside the search space: {', '.join(sorted(bad))}")
    return program


def mutate(program: Program, rng: np.random.Generator, space=None,
           weights: Mapping[str, float] | None = None, max_tries: int = MAX_TRIES) -> tuple[Program, str]:
    """One valid child of `program` and the name of the mutation that made it; after `max_tries`
    attempts that give no valid new program, `(program, "none")`."""
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    names = [n for n in MUTATIONS if weights.get(n, 0.0) > 0]
    p = np.array([weights[n] for n in names], dtype=np.float64)
    p /= p.sum()
    for _ in range(max_tries):
        kind = names[int(rng.choice(len(names), p=p))]
        child = MUTATIONS[kind](program, rng, space)
        if child is None or child == program:
            continue
        try:
            return validate(child, space), kind
        except ProgramError:
            continue
    return program, "none"
