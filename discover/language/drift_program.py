"""Closed-form drift programs: a restricted Python function of four scalars, parsed with `ast` (never
eval/exec/pickle), for the distillation of learned drifts (``discover distill``)::

    def drift(r, A, progress, log_n):
        x = (r - 1.0) * A
        return relu(x - 2.0 * tanh(x / 2.0))

``r`` is the probability ratio, ``A`` the (normalized) advantage, ``progress`` the training progress n/N in
[0, 1] and ``log_n`` the log10 horizon (number of updates). The body is flattened, as update-rule programs
are (:mod:`discover.language.program`, whose expression flattener is reused), into one op per statement;
the ops are the elementwise ops of :mod:`discover.language.ops` of arity 1 or 2 (:data:`DRIFT_OPS`), with
their protected numerics: one definition of each op.

The program computes a raw term ``f``; the drift is :func:`constrain` of it,
``drift = min(relu(f), cap * (r - 1)^2)`` (0 where f is NaN, exactly 0 at r = 1). Whatever ``f`` is,
``0 <= drift <= cap * (r - 1)^2``, so the drift is non-negative and vanishes with zero derivative at r = 1
(squeezed between 0 and a parabola touching 0 there): the drift constraints hold by construction. At r = 1
exactly the program is evaluated at another ratio and the result discarded, so even a program whose own
derivative is infinite at r = 1 (``sqrt(r - 1)``) gets an exact 0 gradient there (no NaN from autodiff).

Three evaluators, which agree to float32 rounding: :func:`raw_term` runs a program's statements directly
(traced once per program: :func:`drift_function`, the safe loader of written formulas); :func:`interpret`
runs an :func:`encode`-d program (fixed shapes: programs are data, a population or a PPO trainer compiles
once); the module written by ``discover distill`` holds the source of the same op functions and of
:func:`constrain`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from discover.language.ops import INFIX, OP_BY_NAME
from discover.language.program import (
    ProgramError,
    Statement,
    _describe,
    _err,
    _Flattener,
    backward_live,
    parse_python,
)

INPUTS = ("r", "A", "progress", "log_n")
# Elementwise ops of arity 1 or 2, in encoding order (op id = index + 1; 0 is `copy`). Append only.
DRIFT_OPS = tuple(op.name for op in OP_BY_NAME.values()
                  if op.kind == "elementwise" and op.arity <= 2 and op.name != "copy")
DRIFT_OP_ID = {"copy": 0, **{name: i + 1 for i, name in enumerate(DRIFT_OPS)}}
DEFAULT_CAP = 1e4
MAX_LEN = 32
_INFIX_OF = {v: k for k, v in INFIX.items()}


@dataclasses.dataclass(frozen=True)
class DriftProgram:
    """A parsed drift program: ``name(r, A, progress, log_n) -> output`` (the raw term f)."""

    name: str
    statements: tuple[Statement, ...]
    output: str  # a variable or an input

    @property
    def params(self) -> tuple[str, ...]:
        return INPUTS

    @property
    def constants(self) -> tuple[float, ...]:
        return tuple(a for s in self.statements for a in s.args if not isinstance(a, str))

    def __len__(self) -> int:
        return len(self.statements)

    def __str__(self) -> str:
        lines = [f"def {self.name}({', '.join(INPUTS)}):"]
        lines += [f"    {s}" for s in self.statements]
        lines.append(f"    return {self.output}")
        return "\n".join(lines) + "\n"

    def replace(self, **kw) -> DriftProgram:
        return dataclasses.replace(self, **kw)


# --- parsing ---------------------------------------------------------------------------------------
def parse_drift(text: str, *, max_len: int = MAX_LEN, ops: Sequence[str] | None = None) -> DriftProgram:
    """Parse and validate a drift program; :class:`ProgramError` (with line:col) for every defect. ``ops``
    restricts the ops it may use (default: all of :data:`DRIFT_OPS`)."""
    if not isinstance(text, str):
        raise ProgramError(f"program text must be a string, got {type(text).__name__}")
    try:
        tree = parse_python(text)
    except SyntaxError as e:
        raise ProgramError(f"syntax error: {e.msg}", e.lineno, max(e.offset or 1, 1)) from None
    except (ValueError, MemoryError, RecursionError):
        raise ProgramError("cannot parse program (bad characters or nested too deeply)", 1, 1) from None
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    others = [n for n in tree.body if not isinstance(n, ast.FunctionDef)]
    if others:
        raise _err(others[0], f"{_describe(others[0])} outside the function is not allowed")
    if len(funcs) != 1:
        raise ProgramError(f"a drift program is exactly one `def drift({', '.join(INPUTS)}):`", 1, 1)
    try:
        program = _parse_function(funcs[0], max_len)
    except RecursionError:
        raise _err(funcs[0], "expression nested too deeply") from None
    allowed = set(DRIFT_OPS if ops is None else ops) | {"copy"}
    for st in program.statements:
        if st.op not in DRIFT_OP_ID:
            raise ProgramError(f"op '{st.op}' is not a drift op (elementwise ops of arity 1 or 2 only)")
        if st.op not in allowed:
            raise ProgramError(f"op '{st.op}' is outside the search space")
    return program


def _parse_function(fn: ast.FunctionDef, max_len: int) -> DriftProgram:
    a = fn.args
    if fn.decorator_list:
        raise _err(fn.decorator_list[0], "decorators are not allowed")
    if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults or a.kw_defaults:
        raise _err(fn, "parameters must be plain names (no defaults, *args, **kwargs or keyword-only)")
    if fn.returns is not None or any(p.annotation is not None for p in a.args):
        raise _err(fn, "annotations are not allowed")
    if tuple(p.arg for p in a.args) != INPUTS:
        raise _err(fn, f"the parameters must be exactly ({', '.join(INPUTS)})")
    if not fn.body or not isinstance(fn.body[-1], ast.Return) or fn.body[-1].value is None:
        raise _err(fn.body[-1] if fn.body else fn, "missing return: a drift program ends with `return f`")
    assigned = {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    flat = _Flattener(set(INPUTS) | assigned)
    for node in fn.body[:-1]:
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                raise _err(node, "assign to exactly one plain variable name per statement")
            _check_target(node.targets[0])
            flat.emit(node.targets[0].id, node.value)
        elif isinstance(node, ast.Return):
            raise _err(node, "return must be the last statement")
        else:
            raise _err(node, f"{_describe(node)} is not allowed in drift programs")
    ret = fn.body[-1].value
    if isinstance(ret, ast.Name):
        output = ret.id
    else:
        output = "f" if "f" not in flat.used else flat.fresh()
        flat.used.add(output)
        flat.emit(output, ret)
    defined = set(INPUTS)
    for st, node in flat.out:
        for arg in st.args:
            if isinstance(arg, str) and arg not in defined:
                raise _err(node, f"undefined variable '{arg}'")
        defined.add(st.dst)
    if output not in defined:
        raise _err(fn.body[-1], f"undefined variable '{output}'")
    if len(flat.out) > max_len:
        raise _err(flat.out[max_len][1], f"program has {len(flat.out)} statements; the limit is {max_len}")
    return DriftProgram(name=fn.name, statements=tuple(s for s, _ in flat.out), output=output)


def _check_target(target: ast.Name) -> None:
    if target.id in OP_BY_NAME:
        raise _err(target, f"cannot assign to '{target.id}': it is an op name")
    if target.id in INPUTS:
        raise _err(target, f"cannot assign to the input '{target.id}'")


# --- analysis ----------------------------------------------------------------------------------------
def live_mask(program: DriftProgram) -> list[bool]:
    """Whether each statement's result reaches the output."""
    return backward_live(program.statements, (program.output,))[0]


def remove_dead_code(program: DriftProgram) -> DriftProgram:
    mask = live_mask(program)
    return program.replace(statements=tuple(s for s, keep in zip(program.statements, mask) if keep))


def formula(program: DriftProgram) -> str:
    """The raw term as one expression (temporaries inlined), e.g. ``relu((r - 1.0) * A)``."""
    prec = {"add": 1, "sub": 1, "mul": 2, "div": 2}
    exprs: dict[str, tuple[str, int]] = {name: (name, 9) for name in INPUTS}  # name -> (text, precedence)

    def atom(a) -> tuple[str, int]:
        return exprs[a] if isinstance(a, str) else (repr(float(a)), 9 if float(a) >= 0 else 3)

    def arg(a, need: int) -> str:
        text, p = atom(a)
        return f"({text})" if p < need else text

    for st in remove_dead_code(program).statements:
        if st.op == "copy":
            exprs[st.dst] = atom(st.args[0])
        elif st.op == "neg":
            exprs[st.dst] = (f"-{arg(st.args[0], 3)}", 3)
        elif st.op in prec:
            p = prec[st.op]
            right = p + 1 if st.op in ("sub", "div") else p
            exprs[st.dst] = (f"{arg(st.args[0], p)} {_INFIX_OF[st.op]} {arg(st.args[1], right)}", p)
        else:
            exprs[st.dst] = (f"{st.op}({', '.join(arg(a, 0) for a in st.args)})", 9)
    return exprs[program.output][0]


# --- the constraint wrapper (exported verbatim into written formula modules) -------------------------
def constrain(raw, r, cap):
    """The drift of raw term ``raw(r)``: min(relu(f), cap (r - 1)^2), NaN -> 0, exactly 0 at r = 1, where
    ``raw`` is evaluated at another ratio (2.0) and discarded, so its gradient there is exactly 0 too."""
    at_one = r == 1.0
    r_safe = jnp.where(at_one, 2.0, r)
    f = jnp.broadcast_to(raw(r_safe), jnp.shape(r_safe))
    f = jnp.where(jnp.isnan(f), 0.0, f)
    f = jnp.where(f > 0.0, f, 0.0)
    bound = cap * jnp.square(r_safe - 1.0)
    return jnp.where(at_one, 0.0, jnp.where(f < bound, f, bound))


# --- direct evaluation -------------------------------------------------------------------------------
def _apply(op: str, args: list):
    if op == "copy":
        return args[0]
    return OP_BY_NAME[op].fn(*args)


def raw_term(program: DriftProgram, r, A, progress, log_n):
    """The program's output f (no constraint), statement by statement with the ops of ops.py."""
    env = {"r": r, "A": A, "progress": progress, "log_n": log_n}
    for st in program.statements:
        env[st.dst] = _apply(st.op, [env[a] if isinstance(a, str) else jnp.float32(a) for a in st.args])
    return env[program.output]


def drift_function(program: DriftProgram, cap: float = DEFAULT_CAP):
    """A jitted ``drift(ratio, advantage, progress, log_horizon)`` (float32, broadcasting) of ``program``."""

    @jax.jit
    def drift(ratio, advantage, progress, log_horizon):
        r, A, n, h = (jnp.asarray(x, jnp.float32) for x in (ratio, advantage, progress, log_horizon))
        r, A, n, h = jnp.broadcast_arrays(r, A, n, h)
        return constrain(lambda rs: raw_term(program, rs, A, n, h), r, jnp.float32(cap))

    return drift


# --- encoding: programs as data (fixed shapes) ---------------------------------------------------------
class Encoded(NamedTuple):
    """A program as arrays: statement i computes ``op[i](reg[a[i]], reg[b[i]])`` into register
    ``N_IN + K + i``; registers ``0..3`` are the inputs, ``N_IN..N_IN+K-1`` the constants."""

    op: jax.Array  # [L] int32, DRIFT_OP_ID (0: copy, also the padding)
    a: jax.Array  # [L] int32
    b: jax.Array  # [L] int32
    consts: jax.Array  # [K] float32, in the order of `constant_slots` (statement, then argument)
    out: jax.Array  # [] int32


N_IN = len(INPUTS)


def max_constants(max_len: int) -> int:
    return 2 * max_len


def encode(program: DriftProgram, max_len: int) -> Encoded:
    """Fixed-shape arrays of ``program`` (padded to ``max_len`` statements, 2 * max_len constants)."""
    if len(program) > max_len:
        raise ValueError(f"program has {len(program)} statements; the encoding holds {max_len}")
    k_max = max_constants(max_len)
    reg = {name: i for i, name in enumerate(INPUTS)}
    op, a, b, consts = [0] * max_len, [0] * max_len, [0] * max_len, []
    for i, st in enumerate(program.statements):
        idx = []
        for arg in st.args:
            if isinstance(arg, str):
                idx.append(reg[arg])
            else:
                idx.append(N_IN + len(consts))
                consts.append(float(arg))
        op[i], a[i], b[i] = DRIFT_OP_ID[st.op], idx[0], idx[1] if len(idx) > 1 else idx[0]
        reg[st.dst] = N_IN + k_max + i
    consts += [0.0] * (k_max - len(consts))
    return Encoded(np.asarray(op, np.int32), np.asarray(a, np.int32), np.asarray(b, np.int32),
                   np.asarray(consts, np.float32), np.asarray(reg[program.output], np.int32))


def stack(encoded: Sequence[Encoded]) -> Encoded:
    """A population: every field gets a leading axis."""
    return Encoded(*(np.stack(field) for field in zip(*encoded)))


def _branch(name: str):
    if name == "copy":
        return lambda x, y: x
    fn = OP_BY_NAME[name].fn
    return (lambda x, y: fn(x)) if OP_BY_NAME[name].arity == 1 else (lambda x, y: fn(x, y))


_BRANCHES = tuple(_branch(name) for name in ("copy",) + DRIFT_OPS)


def interpret(enc: Encoded, r, A, progress, log_n):
    """The raw term f of an encoded program on broadcastable inputs (scan over statements, one
    ``lax.switch`` each: a single op runs per statement unless the op index is batched by vmap)."""
    shape = jnp.broadcast_shapes(jnp.shape(r), jnp.shape(A), jnp.shape(progress), jnp.shape(log_n))
    inputs = [jnp.broadcast_to(jnp.asarray(x, jnp.float32), shape) for x in (r, A, progress, log_n)]
    n_len, n_const = enc.op.shape[0], enc.consts.shape[0]
    consts = jnp.broadcast_to(jnp.asarray(enc.consts, jnp.float32).reshape((n_const,) + (1,) * len(shape)),
                              (n_const,) + shape)
    regs = jnp.concatenate([jnp.stack(inputs), consts, jnp.zeros((n_len,) + shape, jnp.float32)])

    def body(regs, i):
        value = jax.lax.switch(enc.op[i], _BRANCHES, regs[enc.a[i]], regs[enc.b[i]])
        return regs.at[N_IN + n_const + i].set(jnp.asarray(value, jnp.float32)), None

    regs, _ = jax.lax.scan(body, regs, jnp.arange(n_len))
    return regs[enc.out]


def encoded_drift(enc: Encoded, ratio, advantage, progress, log_horizon, cap=DEFAULT_CAP):
    """The constrained drift of an encoded program (a DriftFn body: ``enc`` plays the drift parameters)."""
    ratio = jnp.asarray(ratio, jnp.float32)
    return constrain(lambda rs: interpret(enc, rs, advantage, progress, log_horizon), ratio, jnp.float32(cap))


def value_and_slope(enc: Encoded, r, A, progress, log_n, cap=DEFAULT_CAP):
    """(drift, d drift / d r) per sample, by forward-mode differentiation (safe under vmap: a batched
    op index selects among every op's tangent, and NaN in an unselected one is discarded)."""
    fn = lambda rr: encoded_drift(enc, rr, A, progress, log_n, cap)
    r = jnp.asarray(r, jnp.float32)
    return jax.jvp(fn, (r,), (jnp.ones_like(r),))


# --- functional fingerprints ---------------------------------------------------------------------------
_PROBE_SIZE = 96


@functools.lru_cache(maxsize=4)
def _probe_fn(cap: float):
    rng = np.random.default_rng(20240615)
    r = np.concatenate([[1.0, 0.999, 1.001], rng.uniform(0.3, 2.5, _PROBE_SIZE - 3)]).astype(np.float32)
    A = rng.normal(0.0, 1.5, _PROBE_SIZE).astype(np.float32)
    n = rng.uniform(0.0, 1.0, _PROBE_SIZE).astype(np.float32)
    h = rng.uniform(0.5, 4.0, _PROBE_SIZE).astype(np.float32)
    return jax.jit(jax.vmap(lambda enc: encoded_drift(enc, r, A, n, h, cap)))


def fingerprints(programs: Sequence[DriftProgram], max_len: int, cap: float = DEFAULT_CAP,
                 pad_to: int = 0) -> list[str]:
    """Hashes of each program's drift on fixed probe inputs (4 significant digits): programs computing the
    same drift collide. One batched call, padded to ``pad_to`` so it compiles once per run."""
    if not programs:
        return []
    encoded = [encode(p, max_len) for p in programs]
    encoded += [encoded[0]] * max(0, pad_to - len(encoded))
    values = np.asarray(_probe_fn(float(cap))(stack(encoded)), np.float64)[: len(programs)]
    out = []
    for row in values:
        text = ",".join("nan" if not np.isfinite(v) else f"{v:.4g}" for v in row)
        out.append(hashlib.sha256(text.encode()).hexdigest()[:16])
    return out
