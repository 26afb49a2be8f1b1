"""Hypothesis strategies for update-rule programs (shared by the language, interpreter and search tests).

:func:`programs` draws random VALID :class:`discover.Program` objects directly (no text involved):
a signature with a non-empty subset of the inputs ``g, w, lr, t`` and 0-3 state variables in a random
interleaving, statements that draw ops from :data:`discover.language.ops.OPS` with the right arity and arguments
from already-defined names or finite constants, and ``return update, *state`` in parameter order.

:func:`nested_program_texts` draws program *text* with nested expressions (infix operators, unary minus,
op calls), which :func:`discover.parse` must flatten.
"""

from __future__ import annotations

import keyword

from hypothesis import strategies as st

from discover.language.ops import OP_BY_NAME, OPS
from discover.language.program import INPUTS, MAX_LEN, Program, Statement

BASE_INPUTS = ("g", "w", "lr", "t")
OP_NAMES = tuple(op.name for op in OPS)
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}


def _usable(name: str) -> bool:
    return (name.isidentifier() and not keyword.iskeyword(name) and name not in OP_BY_NAME
            and name not in INPUTS)


#: Variable names: short random identifiers (which may look like temporaries, e.g. ``_1``) that are
#: not Python keywords, op names or input names.
names = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True).filter(_usable)

#: Finite constants that stay finite in float32 (the interpreter's precision), any sign, incl. subnormals.
float32_constants = st.floats(allow_nan=False, allow_infinity=False, width=32).map(float)

#: Any finite Python float (the parser's whole range), for the text round trip.
# Doubles (not rounded to float32) within the float32 range: parse rejects constants beyond it.
float64_constants = st.floats(allow_nan=False, allow_infinity=False, min_value=-3.4028234663852886e38,
                              max_value=3.4028234663852886e38)

#: Constants an optimizer is likely to contain: decays near one, epsilons, small integers.
typical_constants = st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5, 0.9, 0.99, 0.999, 1e-8, 1e-3, 3.0])


@st.composite
def programs(
    draw,
    *,
    max_statements: int = 12,
    max_state: int = 3,
    inputs: tuple[str, ...] = BASE_INPUTS,
    ops: tuple[str, ...] = OP_NAMES,
    constants: st.SearchStrategy[float] | None = None,
    const_prob: float = 0.25,
) -> Program:
    """A random valid program (see the module docstring); at most `max_statements` <= MAX_LEN statements."""
    assert max_statements <= MAX_LEN
    constants = constants if constants is not None else st.one_of(typical_constants, float32_constants)
    used_inputs = [x for x in inputs if draw(st.booleans())] or [draw(st.sampled_from(inputs))]
    state = draw(st.lists(names, min_size=0, max_size=max_state, unique=True))
    params = draw(st.permutations(used_inputs + state))
    fname = draw(names)

    defined = list(params)
    statements = []
    for _ in range(draw(st.integers(0, max_statements))):
        op = OP_BY_NAME[draw(st.sampled_from(ops))]
        args = []
        for _ in range(op.arity):
            if draw(st.floats(0, 1)) < const_prob:
                args.append(draw(constants))
            else:
                args.append(draw(st.sampled_from(defined)))
        writable = [n for n in defined if n not in INPUTS]
        if writable and draw(st.booleans()):
            dst = draw(st.sampled_from(writable))  # reassign a local or a state variable
        else:
            dst = draw(names.filter(lambda n: n not in defined))
            defined.append(dst)
        statements.append(Statement(dst, op.name, tuple(args)))
    update = draw(st.sampled_from(defined))
    return Program(name=fname, params=tuple(params), statements=tuple(statements), update=update)


# --- nested program text ----------------------------------------------------------------------------
def _expression(names_in_scope: list[str], constants) -> st.SearchStrategy[str]:
    leaves = st.one_of(
        st.sampled_from(names_in_scope),
        constants.map(lambda c: repr(c) if c >= 0 else f"({c!r})"),
    )

    def extend(inner):
        infix = st.tuples(inner, st.sampled_from(sorted(_INFIX.values())), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})")
        unary = inner.map(lambda e: f"-({e})")
        calls = st.sampled_from(OP_NAMES).flatmap(
            lambda name: st.lists(inner, min_size=OP_BY_NAME[name].arity, max_size=OP_BY_NAME[name].arity)
            .map(lambda args: f"{name}({', '.join(args)})"))
        return st.one_of(infix, unary, calls)

    return st.recursive(leaves, extend, max_leaves=6)


@st.composite
def nested_program_texts(draw, *, max_statements: int = 4, constants=typical_constants) -> str:
    """Program text whose statements are nested expressions (valid, and short enough once flattened)."""
    inputs = [x for x in BASE_INPUTS if draw(st.booleans())] or ["g"]
    state = draw(st.lists(names, max_size=2, unique=True))
    params = inputs + state
    defined = list(params)
    lines = [f"def {draw(names)}({', '.join(params)}):"]
    for _ in range(draw(st.integers(1, max_statements))):
        expr = draw(_expression(defined, constants))
        local = [n for n in defined if n not in INPUTS]
        dst = draw(st.sampled_from(local)) if local and draw(st.booleans()) else draw(
            names.filter(lambda n: n not in defined))
        if dst not in defined:
            defined.append(dst)
        lines.append(f"    {dst} = {expr}")
    update = draw(st.one_of(st.sampled_from(defined), _expression(defined, constants)))
    lines.append(f"    return {', '.join([update] + state)}")
    return "\n".join(lines) + "\n"

