"""Static and functional analysis of programs: dead code, structural hash, functional fingerprint.

* :func:`remove_dead_code` drops statements whose result never reaches the update, including state
  that is written but whose value is never read by a later step (a fixed point over steps), and that
  state variable itself.
* :func:`structural_hash` hashes the expression DAG of the update and of the state that matters, so it
  is blind to variable names, statement order and dead code.
* :func:`fingerprints` runs programs a few steps on fixed random inputs with the batched interpreter,
  quantizes the updates to 4 significant digits and hashes them, so functionally equal programs
  (``a + b`` and ``b + a``, ``x * 2`` and ``x + x``) collide and the search reuses their fitness.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from discover.language import interpreter
from discover.language.program import Program, backward_live


def _live_mask(program: Program) -> tuple[list[bool], set[str]]:
    """(live flag per statement, state variables whose value matters), by a fixed point over steps."""
    needed_state: set[str] = set()
    while True:
        mask, live_names = backward_live(program.statements, {program.update} | needed_state)
        read_at_entry = live_names & set(program.state)
        if read_at_entry <= needed_state:
            return mask, needed_state
        needed_state |= read_at_entry


def live_statements(program: Program) -> list[bool]:
    return _live_mask(program)[0]


def dead_fraction(program: Program) -> float:
    mask = live_statements(program)
    return 0.0 if not mask else 1.0 - sum(mask) / len(mask)


def remove_dead_code(program: Program) -> Program:
    mask, needed = _live_mask(program)
    statements = tuple(s for s, keep in zip(program.statements, mask) if keep)
    params = tuple(p for p in program.params if p in program.inputs or p in needed)
    return program.replace(statements=statements, params=params)


def structural_hash(program: Program) -> str:
    """Hash of what the program computes structurally (names, order and dead code ignored)."""
    program = remove_dead_code(program)
    state_index = {s: j for j, s in enumerate(program.state)}
    env = {name: ("in", name) for name in program.inputs}
    env.update({s: ("state", j) for s, j in state_index.items()})
    for st in program.statements:
        args = tuple(env[a] if isinstance(a, str) else ("c", float(a)) for a in st.args)
        env[st.dst] = (st.op, args)
    key = (env[program.update], tuple(env[s] for s in program.state))
    return hashlib.sha1(repr(key).encode()).hexdigest()[:16]


# --- functional fingerprint -------------------------------------------------------------------------
_FP_SEGMENTS = ((0, 10), (10, 6))
_FP_N, _FP_STEPS = 16, 6


@functools.cache
def _fingerprint_fn(max_len: int, n_state: int):
    rng = np.random.default_rng(12345)
    gs = jnp.asarray(rng.normal(size=(_FP_STEPS, _FP_N)) * rng.choice([1e-3, 1.0, 10.0], size=_FP_N), jnp.float32)
    w0 = jnp.asarray(rng.normal(size=_FP_N), jnp.float32)
    h = jnp.asarray(np.abs(rng.normal(size=_FP_N)) + 0.1, jnp.float32)

    @jax.jit
    def run(enc):
        P = enc.op.shape[0]
        regs = interpreter.init_registers(P, _FP_N, max_len, n_state)
        w = jnp.broadcast_to(w0, (P, _FP_N))

        def step(carry, inputs):
            w, regs = carry
            g, t = inputs
            g = jnp.broadcast_to(g, (P, _FP_N)) + 0.1 * w  # gradient depends on w: feedback matters
            u, regs = interpreter.run_population(
                enc, regs, g, w, jnp.full((P,), 0.01), t, jnp.broadcast_to(h, (P, _FP_N)),
                segments=_FP_SEGMENTS)
            return (w - u, regs), u

        _, us = jax.lax.scan(step, (w, regs), (gs, jnp.arange(1, _FP_STEPS + 1, dtype=jnp.float32)))
        return jnp.moveaxis(us, 0, 1)  # (P, steps, N)

    return run


def fingerprints(programs: Sequence[Program], max_len: int | None = None, n_state: int | None = None) -> list[str]:
    """Functional fingerprints of programs, computed in one batched call (padded to a bucket size)."""
    if not programs:
        return []
    max_len = max_len or max(8, *(len(p) for p in programs))
    n_state = n_state if n_state is not None else max(1, *(len(p.state) for p in programs))
    P = len(programs)
    bucket = 1 << max(3, (P - 1).bit_length())
    padded = list(programs) + [programs[0]] * (bucket - P)
    us = np.asarray(_fingerprint_fn(max_len, n_state)(interpreter.encode(padded, max_len, n_state)))[:P]
    out = []
    for u in us:
        text = " ".join(np.char.mod("%.4g", u.ravel().astype(np.float64) + 0.0))  # +0.0: no "-0"
        out.append(hashlib.sha1(text.encode()).hexdigest()[:16])
    return out


def fingerprint(program: Program) -> str:
    return fingerprints([program])[0]
