"""The batched interpreter: P different programs, one jitted call, no recompilation when they change.

A population is *encoded* into fixed-shape integer/float arrays (:class:`Encoded`, leading axis P,
statements padded to a static maximum length L, state to S slots). Each member's parameters,
gradients and state are flat float32 vectors (P, N); per-tensor reductions use the static leaf
``segments`` of that flat layout.

Each program is split at encode time into two straight-line parts, each in its original order:

* *scalar* statements: elementwise ops whose operands are only ``lr``, ``t``, constants and other scalar
  statements (bias corrections, schedules: 4 of AdamW's 15). They run first, on (P,) values in a small
  scalar file (rows ``0 lr, 1 t``, then one per scalar statement), all ops computed densely: cheap.
* *tensor* statements: everything else, on (P, N) rows of the register file (rows ``0 g, 1 w, 2 h``, the S
  state slots, then one per tensor statement: SSA, so writes go to a static place and reads are one
  gather). An operand may be a scalar row, broadcast. They run in a ``fori_loop``; at each statement the
  ops are computed group by group (:data:`discover.language.ops.GROUPS`), each group under a ``lax.cond`` on
  "does any member use an op of this group here", so a population of similar programs pays for the few
  ops it uses, and padding statements cost almost nothing.

Statements whose value reaches neither the update nor a state variable are left out when encoding.
Neither split changes a result: every statement computes the same float32 op on the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from discover.language import ops
from discover.language.program import Program, backward_live

TENSOR_INPUT_ROW = {"g": 0, "w": 1, "h": 2}
SCALAR_INPUT_ROW = {"lr": 0, "t": 1}
N_TENSOR_INPUTS, N_SCALAR_INPUTS = len(TENSOR_INPUT_ROW), len(SCALAR_INPUT_ROW)


class Encoded(NamedTuple):
    """A population of programs as arrays (leading axis P). Tensor statements: ``op`` ... ``length``;
    scalar statements: the ``s_`` fields. An argument row names the scalar file where ``arg_scalar``."""

    op: jax.Array  # (P, L) int32, 0 = no-op
    arg: jax.Array  # (P, L, 3) int32 row of each argument
    arg_scalar: jax.Array  # (P, L, 3) bool: the row is in the scalar file
    is_const: jax.Array  # (P, L, 3) bool
    const: jax.Array  # (P, L, 3) float32 value of constant arguments
    comp: jax.Array  # (P, L) float32: 1 - a for interp with a literal a (computed in float64), else nan
    out: jax.Array  # (P, 1 + S) int32 rows of the update and of each state slot's new value
    out_scalar: jax.Array  # (P, 1 + S) bool: that row is in the scalar file
    length: jax.Array  # (P,) int32 number of tensor statements
    s_op: jax.Array  # (P, L) int32 scalar statements, as above; their arguments are all scalar rows
    s_arg: jax.Array  # (P, L, 3) int32
    s_is_const: jax.Array  # (P, L, 3) bool
    s_const: jax.Array  # (P, L, 3) float32
    s_comp: jax.Array  # (P, L) float32
    s_length: jax.Array  # (P,) int32 number of scalar statements

    @property
    def max_len(self) -> int:
        return self.op.shape[-1]

    @property
    def n_state(self) -> int:
        return self.out.shape[-1] - 1


def _live(program: Program) -> list[bool]:
    """Whether each statement's value reaches the update or a state variable's new value."""
    return backward_live(program.statements, (program.update, *program.state))[0]


def encode(programs: Sequence[Program], max_len: int, n_state: int) -> Encoded:
    """Encode programs (each at most `max_len` statements and `n_state` state variables)."""
    P, L = len(programs), max_len
    a = {  # per part: "t" tensor statements, "s" scalar statements
        part: {"op": np.zeros((P, L), np.int32), "arg": np.zeros((P, L, 3), np.int32),
                   "is_const": np.zeros((P, L, 3), bool), "const": np.zeros((P, L, 3), np.float32),
                   "comp": np.full((P, L), np.nan, np.float32), "length": np.zeros((P,), np.int32)}
        for part in "ts"
    }
    arg_scalar = np.zeros((P, L, 3), bool)
    out = np.zeros((P, 1 + n_state), np.int32)
    out_scalar = np.zeros((P, 1 + n_state), bool)
    for p, prog in enumerate(programs):
        if len(prog) > max_len:
            raise ValueError(f"program '{prog.name}' has {len(prog)} statements > max_len {max_len}")
        if len(prog.state) > n_state:
            raise ValueError(f"program '{prog.name}' has {len(prog.state)} state variables > {n_state}")
        # env: name -> (part, row); part "s" is the scalar file, "t" the tensor register file
        env = {name: ("t", TENSOR_INPUT_ROW[name]) if name in TENSOR_INPUT_ROW else ("s", SCALAR_INPUT_ROW[name])
               for name in prog.inputs}
        env.update({s: ("t", N_TENSOR_INPUTS + j) for j, s in enumerate(prog.state)})
        for st, live in zip(prog.statements, _live(prog)):
            if not live:
                continue
            scalar = ops.OP_BY_NAME[st.op].kind == "elementwise" and all(
                env[x][0] == "s" for x in st.args if isinstance(x, str))
            part = "s" if scalar else "t"
            d, i = a[part], a[part]["length"][p]
            d["op"][p, i] = ops.OP_ID[st.op]
            for k, x in enumerate(st.args):
                if isinstance(x, str):
                    src_part, d["arg"][p, i, k] = env[x]
                    if part == "t":
                        arg_scalar[p, i, k] = src_part == "s"
                else:
                    d["is_const"][p, i, k] = True
                    d["const"][p, i, k] = x
            if st.op == "interp" and not isinstance(st.args[2], str):
                d["comp"][p, i] = 1.0 - float(st.args[2])  # float64 on the host, like optax
            base = N_SCALAR_INPUTS if scalar else N_TENSOR_INPUTS + n_state
            env[st.dst] = (part, base + i)
            d["length"][p] = i + 1
        for j, name in enumerate((prog.update,) + prog.state):
            out_scalar[p, j], out[p, j] = env[name][0] == "s", env[name][1]
        for j in range(len(prog.state), n_state):
            out[p, 1 + j] = N_TENSOR_INPUTS + j  # an unused slot keeps its value
    t, s = a["t"], a["s"]
    fields = {"op": t["op"], "arg": t["arg"], "arg_scalar": arg_scalar, "is_const": t["is_const"], "const": t["const"],
                  "comp": t["comp"], "out": out, "out_scalar": out_scalar, "length": t["length"], "s_op": s["op"],
                  "s_arg": s["arg"], "s_is_const": s["is_const"], "s_const": s["const"], "s_comp": s["comp"],
                  "s_length": s["length"]}
    return Encoded(**{k: jnp.asarray(v) for k, v in fields.items()})


def _group_table() -> tuple[np.ndarray, list[list[ops.Op]]]:
    group_of = np.full(len(ops.OPS) + 1, -1, np.int32)  # op id -> group index (no-op: -1)
    members: list[list[ops.Op]] = [[] for _ in ops.GROUPS]
    for i, op in enumerate(ops.OPS):
        gi = ops.GROUPS.index(op.group)
        group_of[i + 1] = gi
        members[gi].append(op)
    return group_of, members


_GROUP_OF, _GROUP_MEMBERS = _group_table()


def _segment_broadcast(values: jax.Array, segments, n: int) -> jax.Array:
    """(P, n_segments) -> (P, N): each segment's value repeated over its slice."""
    lengths = np.array([length for _, length in segments])
    return jnp.repeat(values, lengths, axis=1, total_repeat_length=n)


def _group_values(group, a, b, read_c, comp, segments, n):
    """The value of every op of a group on (P, N) arguments (reductions share their statistics)."""
    kind = group[0].kind
    if kind == "tensor":
        stats = [ops.tensor_stats(a[:, s:s + length], axis=1) for s, length in segments]
        return [_segment_broadcast(jnp.stack([op.fn(st) for st in stats], axis=1), segments, n) for op in group]
    if kind == "global":
        stats = ops.tensor_stats(a, b, axis=1)
        return [op.fn(stats)[:, None] for op in group]
    vals = []
    for op in group:
        if op.name == "interp":
            c = read_c()
            vals.append(op.fn(a, b, c, jnp.where(jnp.isnan(comp), 1.0 - c, comp)))
        else:
            vals.append(op.fn(*(a, b)[: op.arity]))
    return vals


def n_registers(max_len: int, n_state: int) -> int:
    """Rows of the tensor register file."""
    return N_TENSOR_INPUTS + n_state + max_len


def init_registers(P: int, N: int, max_len: int, n_state: int) -> jax.Array:
    """The optimizer state of a population: its register file (R, P, N), state slots at zero."""
    return jnp.zeros((n_registers(max_len, n_state), P, N), jnp.float32)


def state_of(enc: Encoded, regs: jax.Array) -> jax.Array:
    """The state variables (P, S, N) held in a register file."""
    return jnp.moveaxis(regs[N_TENSOR_INPUTS:N_TENSOR_INPUTS + enc.n_state], 0, 1)


_ELEMENTWISE = [op for op in ops.OPS if op.kind == "elementwise"]


def _scalar_file(enc: Encoded, lr, t) -> jax.Array:
    """(N_SCALAR_INPUTS + L, P): lr, t and every member's scalar statements, computed on (P,) values."""
    P, L = enc.s_op.shape
    members = jnp.arange(P)
    sregs = jnp.zeros((N_SCALAR_INPUTS + L, P), jnp.float32)
    sregs = sregs.at[0].set(lr).at[1].set(jnp.broadcast_to(t, (P,)))

    def body(i, sregs):
        def read(k):
            return jnp.where(enc.s_is_const[:, i, k], enc.s_const[:, i, k], sregs[enc.s_arg[:, i, k], members])

        a, b, c = read(0), read(1), read(2)
        comp = enc.s_comp[:, i]
        out = jnp.zeros((P,), jnp.float32)
        for op in _ELEMENTWISE:  # every op, densely: on (P,) values a select costs less than a cond
            if op.name == "interp":
                val = op.fn(a, b, c, jnp.where(jnp.isnan(comp), 1.0 - c, comp))
            else:
                val = op.fn(*(a, b)[: op.arity])
            out = jnp.where(enc.s_op[:, i] == ops.OP_ID[op.name], val, out)
        return sregs.at[N_SCALAR_INPUTS + i].set(out)

    return jax.lax.fori_loop(0, jnp.max(enc.s_length), body, sregs)


def run_population(enc: Encoded, regs, g, w, lr, t, h=None, *, segments=None):
    """Run every member's program for one step.

    regs: the register file from :func:`init_registers` (it carries the state between steps, and is
    updated in place inside a jitted loop); g, w, h: (P, N); lr: (P,); t: scalar step from 1.
    ``segments``: static ((start, length), ...) of the leaves in the flat layout (default: one tensor).
    Returns (update (P, N), regs).
    """
    P, N = g.shape
    S = enc.n_state
    segments = tuple(segments) if segments else ((0, N),)
    f32 = jnp.float32
    members = jnp.arange(P)
    group_of = jnp.asarray(_GROUP_OF)
    sregs = _scalar_file(enc, jnp.asarray(lr, f32), jnp.asarray(t, f32))
    last_srow = sregs.shape[0] - 1

    def gather(regs, rows, scalar):
        """(P, N) values of per-member rows; a scalar row is broadcast."""
        v = regs[rows, members]
        return jnp.where(scalar[:, None], sregs[jnp.minimum(rows, last_srow), members][:, None], v)

    for name, x in (("g", g), ("w", w), ("h", h)):
        if x is not None:
            regs = jax.lax.dynamic_update_index_in_dim(regs, x.astype(f32), TENSOR_INPUT_ROW[name], 0)

    def body(i, regs):
        op_i = enc.op[:, i]
        group_i = group_of[op_i]

        def read(regs, k):
            v = gather(regs, enc.arg[:, i, k], enc.arg_scalar[:, i, k])
            return jnp.where(enc.is_const[:, i, k][:, None], enc.const[:, i, k][:, None], v)

        # The arguments are gathered once per statement; each op group then runs under a cond on "does
        # any member use it here", so groups nobody uses cost a predicate. Measured: gathering inside
        # each group instead fuses better for uniform populations but costs 2x on diverse ones.
        a, b = read(regs, 0), read(regs, 1)
        comp = enc.comp[:, i][:, None]
        out = jnp.zeros((P, N), f32)
        for gi, group in enumerate(_GROUP_MEMBERS):
            def compute(regs, a, b, out, group=group):
                vals = _group_values(group, a, b, lambda: read(regs, 2), comp, segments, N)
                for op, val in zip(group, vals):
                    out = jnp.where((op_i == ops.OP_ID[op.name])[:, None], val, out)
                return out

            out = jax.lax.cond(jnp.any(group_i == gi), compute, lambda r, a, b, o: o, regs, a, b, out)
        return jax.lax.dynamic_update_index_in_dim(regs, out, N_TENSOR_INPUTS + S + i, 0)

    # Run only as many statements as the longest program has: padding costs nothing.
    regs = jax.lax.fori_loop(0, jnp.max(enc.length), body, regs)
    outs = jax.vmap(lambda rows, scalar: gather(regs, rows, scalar))(enc.out.T, enc.out_scalar.T)  # (1+S, P, N)
    regs = jax.lax.dynamic_update_slice_in_dim(regs, outs[1:], N_TENSOR_INPUTS, 0)
    return outs[0], regs


def population_update_fn(segments):
    """The interpreter as an ``update_fn(regs, g, w, lr, t, h, enc)`` for :mod:`envs.train`'s trainer."""
    segments = tuple(segments)

    def update_fn(regs, g, w, lr, t, h, enc):
        return run_population(enc, regs, g, w, lr, t, h, segments=segments)

    return update_fn


def population_init_fn(max_len: int, n_state: int):
    """``init_opt_state(P, N)`` for the trainer: an empty register file."""
    return lambda P, N: init_registers(P, N, max_len, n_state)

