"""The specialized path: a program as an ordinary ``optax.GradientTransformation``.

:func:`to_optax` runs a program's statements directly, leaf by leaf, and :func:`export_module`
writes a standalone Python module (importing only jax and optax) that does exactly the same thing:
the module contains the *source* of the op functions of :mod:`discover.language.ops` and of the leaf-wise
runners below, so what is measured through ``to_optax`` is what an exported file computes.

Convention: a program returns the update that the caller subtracts (``w <- w - update``); optax adds
updates, so the transformation returns ``-update`` (cast back to the parameters' dtype). Arithmetic
is float32 whatever the parameters' dtype (bfloat16 parameters work); state is float32.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import textwrap
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from discover.language import ops
from discover.language.ops import combine_stats, tensor_stats
from discover.language.program import Program, parse


# --- leaf-wise runners (exported verbatim) ---------------------------------------------------------
# A value is a scalar (shared by every tensor) or a list with one array per tensor of the tree.
def f32(x):
    return jnp.asarray(x, jnp.float32)


def map_leaves(fn, *args):
    n = next((len(a) for a in args if isinstance(a, list)), None)
    if n is None:
        return fn(*args)
    return [fn(*(a[i] if isinstance(a, list) else a for a in args)) for i in range(n)]


def _full(x, shapes):
    xs = x if isinstance(x, list) else [x] * len(shapes)
    return [jnp.broadcast_to(xi, s) for xi, s in zip(xs, shapes)]


def per_tensor(fn, x, shapes):
    return [fn(tensor_stats(xi)) for xi in _full(x, shapes)]


def over_tree(fn, shapes, x, y=None):
    ys = _full(y, shapes) if y is not None else [None] * len(shapes)
    return fn(combine_stats([tensor_stats(xi, yi) for xi, yi in zip(_full(x, shapes), ys)]))


def make_transformation(step, state_cls, learning_rate, reads_h=False):
    """An optax transformation around ``step(g, w, lr, t, h, state_values, shapes) -> (update, state)``."""

    def init_fn(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
        return state_cls(jnp.zeros([], jnp.int32), *([zeros] * (len(state_cls._fields) - 1)))

    def update_fn(updates, state, params=None, h=None, **extra_args):
        del extra_args
        leaves, treedef = jax.tree.flatten(updates)
        shapes = [jnp.shape(x) for x in leaves]
        g = [f32(x) for x in leaves]
        w = None if params is None else [f32(x) for x in treedef.flatten_up_to(params)]
        hs = None if h is None else [f32(x) for x in treedef.flatten_up_to(h)]
        if reads_h and hs is None:
            raise ValueError("this update rule reads h: call update(updates, state, params, h=hessian_diag)")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        t = f32(state.count + 1)
        old = [treedef.flatten_up_to(s) for s in state[1:]]
        update, new = step(g, w, f32(lr), t, hs, old, shapes)
        update = _full(update, shapes)
        new_state = [treedef.unflatten(_full(s, shapes)) for s in new]
        out = treedef.unflatten([(-u).astype(x.dtype) for u, x in zip(update, leaves)])
        return out, state_cls(optax.safe_increment(state.count), *new_state)

    if reads_h:
        return optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return optax.GradientTransformation(init_fn, update_fn)


_RUNNERS = (f32, map_leaves, _full, per_tensor, over_tree, make_transformation)


# --- to_optax ---------------------------------------------------------------------------------------
def _state_class(program: Program):
    return _state_class_for(program.name, program.state)


@functools.cache
def _state_class_for(name: str, state: tuple[str, ...]):
    # One class per (name, state): jax compares pytree node types, so two to_optax calls on one
    # program (e.g. under optax.inject_hyperparams) must build identical state types.
    return NamedTuple(f"{_camel(name)}State", [("count", Any)] + [(s, Any) for s in state])


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) or "Rule"


def run_statements(program: Program, env: dict, shapes) -> dict:
    """Execute the statements on leaf lists / scalars; ``env`` maps names to values (updated copy)."""
    env = dict(env)
    for st in program.statements:
        op = ops.OP_BY_NAME[st.op]
        args = [env[a] if isinstance(a, str) else f32(a) for a in st.args]
        if op.kind == "tensor":
            env[st.dst] = per_tensor(op.fn, args[0], shapes)
        elif op.kind == "global":
            env[st.dst] = over_tree(op.fn, shapes, *args)
        elif st.op == "interp" and not isinstance(st.args[2], str):
            env[st.dst] = map_leaves(op.fn, *args, f32(1.0 - st.args[2]))
        else:
            env[st.dst] = map_leaves(op.fn, *args)
    return env


def to_optax(program: Program, learning_rate: float | Callable = 1e-3) -> optax.GradientTransformation:
    """The program as an optax transformation (``learning_rate``: a float or an optax schedule).

    Its state is a NamedTuple ``(count, *state variables)``. A program that reads ``h`` returns an
    ``optax.GradientTransformationExtraArgs`` whose ``update`` takes ``h=`` (a pytree like the params).
    """
    if isinstance(program, str):
        program = parse(program)

    def step(g, w, lr, t, h, old_state, shapes):
        env = {"g": g, "w": w, "lr": lr, "t": t, "h": h, **dict(zip(program.state, old_state))}
        if "w" in _used_names(program) and w is None:
            raise ValueError(f"update rule '{program.name}' reads w: pass params to update()")
        env = run_statements(program, env, shapes)
        return env[program.update], [env[s] for s in program.state]

    return make_transformation(step, _state_class(program), learning_rate, program.reads_h)


def _used_names(program: Program) -> set:
    return {a for s in program.statements for a in s.args if isinstance(a, str)} | {program.update}


# --- export -----------------------------------------------------------------------------------------
_RESERVED = {"jax", "jnp", "optax", "NamedTuple", "Any", "shapes", "TINY", "EXP_MAX", "state", "learning_rate"}


def export_module(program: Program) -> str:
    """Source of a standalone module exposing ``def <name>(learning_rate) -> optax.GradientTransformation``."""
    used_ops = sorted({s.op for s in program.statements})
    op_fns = [ops.OP_BY_NAME[o].fn for o in used_ops]
    needs_stats = any(ops.OP_BY_NAME[o].kind != "elementwise" for o in used_ops)
    helpers = [ops.div] if ops.reciprocal in op_fns or ops.cosine in op_fns else []
    helpers += op_fns + ([ops.tensor_stats, ops.combine_stats] if needs_stats else []) + list(_RUNNERS)
    seen, parts = set(), []
    for fn in helpers:
        if fn.__name__ not in seen:
            seen.add(fn.__name__)
            parts.append(inspect.getsource(fn).rstrip())

    reserved = _RESERVED | seen | set(keyword.kwlist)
    rename = {}
    for name in set(program.params) | {s.dst for s in program.statements}:
        new = name
        while new in reserved:
            new += "_"
        rename[name] = new
    v = lambda a: rename[a] if isinstance(a, str) else f"f32({float(a)!r})"

    body = []
    for st in program.statements:
        op = ops.OP_BY_NAME[st.op]
        args = ", ".join(v(a) for a in st.args)
        if op.kind == "tensor":
            rhs = f"per_tensor({op.fn.__name__}, {args}, shapes)"
        elif op.kind == "global":
            rhs = f"over_tree({op.fn.__name__}, shapes, {args})"
        elif st.op == "interp" and not isinstance(st.args[2], str):
            rhs = f"map_leaves(interp, {args}, f32(1.0 - {float(st.args[2])!r}))"
        else:
            rhs = f"map_leaves({op.fn.__name__}, {args})"
        body.append(f"    {rename[st.dst]} = {rhs}  # {st}")
    state = [rename[s] for s in program.state]
    cls = f"{_camel(program.name)}State"
    fname = program.name if program.name not in reserved else program.name + "_"
    doc = textwrap.indent(str(program), "    ")
    field_lines = "\n".join(f"    {s}: Any" for s in ["count"] + state)
    state_unpack = f"    {', '.join(state)}{',' if len(state) == 1 else ''} = state\n" if state else ""
    ret = ", ".join(state) + ("," if len(state) == 1 else "")
    return f'''"""{program.name}: an update rule written by discover.

The program, in discover's canonical form (the caller does ``w <- w - update``)::

{doc}
Use ``{fname}(learning_rate)`` like any optax optimizer (``learning_rate``: a float or an optax
schedule); it returns optax's sign convention, so ``optax.apply_updates`` works as usual.
Arithmetic is float32 with discover's protected numerics (the op functions below).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

TINY = {ops.TINY!r}
EXP_MAX = {ops.EXP_MAX!r}


{chr(10).join(p + chr(10) + chr(10) for p in parts).rstrip()}


class {cls}(NamedTuple):
{field_lines}


def _step(g, w, lr, t, h, state, shapes):
{state_unpack}{chr(10).join(body)}
    return {rename[program.update]}, [{ret}]


def {fname}(learning_rate) -> optax.GradientTransformation:
    """{program.name} as an optax transformation{" (update takes h=, a diagonal Hessian estimate)" if program.reads_h else ""}."""
    return make_transformation(_step, {cls}, learning_rate, reads_h={program.reads_h})
'''
