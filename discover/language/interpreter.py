"""The batched interpreter: P different programs, one jitted call, no recompilation when they change.

A population is *encoded* into fixed-shape integer/float arrays (:class:`Encoded`, leading axis P,
statements padded to a static maximum length L, state to S slots). Each member's parameters,
gradients and state are flat float32 vectors (P, N); per-tensor reductions use the static leaf
``segments`` of that flat layout.

Registers (per member, each a (N,) vector): ``0 g, 1 w, 2 lr, 3 t, 4 h``, then the S state slots,
then one register per statement (SSA: statement i writes register ``5 + S + i``), so writes go to a
static place and reads are one gather. The statements run in a ``fori_loop``. At each statement the
ops are computed group by group (:data:`discover.language.ops.GROUPS`), each group under a ``lax.cond`` on
"does any member use an op of this group here", so a population of similar programs pays for the
few ops it uses rather than for the whole vocabulary, and padding statements cost almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from discover.language import ops
from discover.language.program import Program

N_INPUT_REGS = 5
INPUT_REG = {"g": 0, "w": 1, "lr": 2, "t": 3, "h": 4}


class Encoded(NamedTuple):
    """A population of programs as arrays (leading axis P)."""

    op: jax.Array  # (P, L) int32, 0 = no-op
    arg: jax.Array  # (P, L, 3) int32 register of each argument
    is_const: jax.Array  # (P, L, 3) bool
    const: jax.Array  # (P, L, 3) float32 value of constant arguments
    comp: jax.Array  # (P, L) float32: 1 - a for interp with a literal a (computed in float64), else nan
    out: jax.Array  # (P, 1 + S) int32 registers of the update and of each state slot's new value
    length: jax.Array  # (P,) int32 number of statements

    @property
    def max_len(self) -> int:
        return self.op.shape[-1]

    @property
    def n_state(self) -> int:
        return self.out.shape[-1] - 1


def encode(programs: Sequence[Program], max_len: int, n_state: int) -> Encoded:
    """Encode programs (each at most `max_len` statements and `n_state` state variables)."""
    P = len(programs)
    op = np.zeros((P, max_len), np.int32)
    arg = np.zeros((P, max_len, 3), np.int32)
    is_const = np.zeros((P, max_len, 3), bool)
    const = np.zeros((P, max_len, 3), np.float32)
    comp = np.full((P, max_len), np.nan, np.float32)
    out = np.zeros((P, 1 + n_state), np.int32)
    length = np.array([len(prog) for prog in programs], np.int32)
    for p, prog in enumerate(programs):
        if len(prog) > max_len:
            raise ValueError(f"program '{prog.name}' has {len(prog)} statements > max_len {max_len}")
        if len(prog.state) > n_state:
            raise ValueError(f"program '{prog.name}' has {len(prog.state)} state variables > {n_state}")
        env = {name: INPUT_REG[name] for name in prog.inputs}
        env.update({s: N_INPUT_REGS + j for j, s in enumerate(prog.state)})
        for i, st in enumerate(prog.statements):
            op[p, i] = ops.OP_ID[st.op]
            for k, a in enumerate(st.args):
                if isinstance(a, str):
                    arg[p, i, k] = env[a]
                else:
                    is_const[p, i, k] = True
                    const[p, i, k] = a
            if st.op == "interp" and not isinstance(st.args[2], str):
                comp[p, i] = 1.0 - float(st.args[2])  # float64 on the host, like optax
            env[st.dst] = N_INPUT_REGS + n_state + i
        out[p, 0] = env[prog.update]
        for j in range(n_state):
            out[p, 1 + j] = env[prog.state[j]] if j < len(prog.state) else N_INPUT_REGS + j
    return Encoded(*(jnp.asarray(x) for x in (op, arg, is_const, const, comp, out, length)))


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
    return N_INPUT_REGS + n_state + max_len


def init_registers(P: int, N: int, max_len: int, n_state: int) -> jax.Array:
    """The optimizer state of a population: its register file (R, P, N), state slots at zero."""
    return jnp.zeros((n_registers(max_len, n_state), P, N), jnp.float32)


def state_of(enc: Encoded, regs: jax.Array) -> jax.Array:
    """The state variables (P, S, N) held in a register file."""
    return jnp.moveaxis(regs[N_INPUT_REGS:N_INPUT_REGS + enc.n_state], 0, 1)


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

    inputs = (g, w, jnp.broadcast_to(jnp.asarray(lr, f32)[:, None], (P, N)),
              jnp.broadcast_to(jnp.asarray(t, f32), (P, N)), h)
    for row, x in enumerate(inputs):
        if x is not None:
            regs = jax.lax.dynamic_update_index_in_dim(regs, x.astype(f32), row, 0)

    def body(i, regs):
        op_i = enc.op[:, i]
        group_i = group_of[op_i]

        def read(regs, k):
            v = regs[enc.arg[:, i, k], members]
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
        return jax.lax.dynamic_update_index_in_dim(regs, out, N_INPUT_REGS + S + i, 0)

    # Run only as many statements as the longest program has: padding costs nothing.
    regs = jax.lax.fori_loop(0, jnp.max(enc.length), body, regs)
    outs = regs[enc.out.T, members[None, :]]  # (1 + S, P, N)
    regs = jax.lax.dynamic_update_slice_in_dim(regs, outs[1:], N_INPUT_REGS, 0)
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

