"""The op vocabulary of update-rule programs: ONE definition of each op's numerics.

Both execution paths call the functions below: the batched interpreter (:mod:`discover.language.interpreter`)
and the specialized optax path (:mod:`discover.language.optax_export`), whose exported modules contain the
*source* of these same functions (copied with :func:`inspect.getsource`). So they agree to float32
rounding.

Protected numerics (a program never crashes, whatever it computes):

* ``div(x, y) = x / y`` where ``|y| > 1e-30``, else ``0`` (so ``reciprocal(0) = 0``);
* ``sqrt(x) = sqrt(|x|)``, ``rsqrt(x) = 1 / sqrt(max(|x|, 1e-30))``;
* ``log(x) = log(max(|x|, 1e-30))``, ``log1p(x) = sign(x) log(1 + |x|)`` (odd, defined everywhere);
* ``exp(x) = exp(min(x, 80))``; ``sinh``/``cosh`` clip their argument to ``[-80, 80]``;
* ``pow(x, y) = sign(x) exp(min(y log max(|x|, 1e-30), 80))``;
* ``arcsin(x) = arcsin(clip(x, -1, 1))``, ``clip(x, c) = clip(x, -|c|, |c|)``;
* ``interp(x, y, a) = (1 - a) x + a y`` (optax's EMA form).

Reductions are broadcast back: ``norm rms mean max_abs`` per tensor, ``global_norm`` and
``cosine(x, y)`` over all tensors of the parameter tree. Anything that still overflows becomes
inf/NaN, which the search scores as the worst fitness.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp

TINY = 1e-30
EXP_MAX = 80.0


# --- elementwise ops -------------------------------------------------------------------------------
def copy(x):
    return x


def add(x, y):
    return x + y


def sub(x, y):
    return x - y


def mul(x, y):
    return x * y


def div(x, y):
    ok = jnp.abs(y) > TINY
    return jnp.where(ok, x / jnp.where(ok, y, 1.0), 0.0)


def maximum(x, y):
    return jnp.maximum(x, y)


def minimum(x, y):
    return jnp.minimum(x, y)


def power(x, y):
    return jnp.sign(x) * jnp.exp(jnp.minimum(y * jnp.log(jnp.maximum(jnp.abs(x), TINY)), EXP_MAX))


def interp(x, y, a, one_minus_a=None):
    # A literal `a` has its complement computed in float64 on the host, as optax does with Python floats.
    if one_minus_a is None:
        one_minus_a = 1.0 - a
    return one_minus_a * x + a * y


def clip(x, c):
    c = jnp.abs(c)
    return jnp.clip(x, -c, c)


def neg(x):
    return -x


def absolute(x):
    return jnp.abs(x)


def sign(x):
    return jnp.sign(x)


def square(x):
    return x * x


def sqrt(x):
    return jnp.sqrt(jnp.abs(x))


def rsqrt(x):
    return jax.lax.rsqrt(jnp.maximum(jnp.abs(x), TINY))


def exp(x):
    return jnp.exp(jnp.minimum(x, EXP_MAX))


def log(x):
    return jnp.log(jnp.maximum(jnp.abs(x), TINY))


def log1p(x):
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def tanh(x):
    return jnp.tanh(x)


def arctan(x):
    return jnp.arctan(x)


def arcsin(x):
    return jnp.arcsin(jnp.clip(x, -1.0, 1.0))


def sinh(x):
    return jnp.sinh(jnp.clip(x, -EXP_MAX, EXP_MAX))


def cosh(x):
    return jnp.cosh(jnp.clip(x, -EXP_MAX, EXP_MAX))


def sin(x):
    return jnp.sin(x)


def cos(x):
    return jnp.cos(x)


def erf(x):
    return jax.scipy.special.erf(x)


def relu(x):
    return jnp.maximum(x, 0.0)


def reciprocal(x):
    return div(1.0, x)


# --- reductions: finalizers of the statistics of `tensor_stats` ------------------------------------
# A reduction op is fn(stats) where stats are sums over one tensor (per-tensor ops) or over every
# tensor (global ops). Both paths compute the stats with the same formulas and call these.
def norm(s):
    return jnp.sqrt(s["sumsq"])


def rms(s):
    return jnp.sqrt(s["sumsq"] / s["count"])


def mean(s):
    return s["sum"] / s["count"]


def max_abs(s):
    return s["maxabs"]


def global_norm(s):
    return jnp.sqrt(s["sumsq"])


def cosine(s):
    return div(s["dot"], jnp.sqrt(s["sumsq"]) * jnp.sqrt(s["sumsq_y"]))


def tensor_stats(x, y=None, axis=None):
    """Sums a reduction needs, over `axis` (None: everything)."""
    s = {
        "sumsq": jnp.sum(x * x, axis=axis),
        "sum": jnp.sum(x, axis=axis),
        "count": jnp.asarray(x.size if axis is None else x.shape[axis], jnp.float32),
        "maxabs": jnp.max(jnp.abs(x), axis=axis),
    }
    if y is not None:
        s["dot"] = jnp.sum(x * y, axis=axis)
        s["sumsq_y"] = jnp.sum(y * y, axis=axis)
    return s


def combine_stats(parts: list[dict]) -> dict:
    """Stats of a union of tensors from the stats of each (sums add, maxima max)."""
    out = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        out[k] = jnp.max(jnp.stack(vals), axis=0) if k == "maxabs" else sum(vals[1:], vals[0])
    return out


@dataclasses.dataclass(frozen=True)
class Op:
    """One op of the vocabulary.

    kind: 'elementwise' (fn on broadcastable arrays), 'tensor' (per-tensor reduction, broadcast back),
    'global' (reduction over all tensors, broadcast back); for reductions ``fn`` maps stats to a value.
    ``infix`` is the operator the printer uses ('+', '-', '*', '/'); ``group`` gates the batched
    interpreter's work (ops of one group are computed together, only when some member uses one).
    """

    name: str
    arity: int
    kind: str
    fn: Callable
    group: str
    infix: str | None = None


def _op(name, arity, fn, group, kind="elementwise", infix=None):
    return Op(name=name, arity=arity, kind=kind, fn=fn, group=group, infix=infix)


# The op id of the encoded form is the index in this tuple + 1 (0 is the no-op). Append only.
OPS: tuple[Op, ...] = (
    _op("copy", 1, copy, "linear"),
    _op("add", 2, add, "linear", infix="+"),
    _op("sub", 2, sub, "linear", infix="-"),
    _op("mul", 2, mul, "linear", infix="*"),
    _op("div", 2, div, "div", infix="/"),
    _op("max", 2, maximum, "piecewise"),
    _op("min", 2, minimum, "piecewise"),
    _op("pow", 2, power, "pow"),
    _op("interp", 3, interp, "linear"),
    _op("clip", 2, clip, "piecewise"),
    _op("neg", 1, neg, "linear"),
    _op("abs", 1, absolute, "piecewise"),
    _op("sign", 1, sign, "piecewise"),
    _op("square", 1, square, "linear"),
    _op("sqrt", 1, sqrt, "root"),
    _op("rsqrt", 1, rsqrt, "root"),
    _op("exp", 1, exp, "exp"),
    _op("log", 1, log, "log"),
    _op("log1p", 1, log1p, "log1p"),
    _op("tanh", 1, tanh, "tanh"),
    _op("arctan", 1, arctan, "arctan"),
    _op("arcsin", 1, arcsin, "arcsin"),
    _op("sinh", 1, sinh, "sinh"),
    _op("cosh", 1, cosh, "cosh"),
    _op("sin", 1, sin, "sin"),
    _op("cos", 1, cos, "cos"),
    _op("erf", 1, erf, "erf"),
    _op("relu", 1, relu, "piecewise"),
    _op("reciprocal", 1, reciprocal, "div"),
    _op("norm", 1, norm, "tensor", kind="tensor"),
    _op("rms", 1, rms, "tensor", kind="tensor"),
    _op("mean", 1, mean, "tensor", kind="tensor"),
    _op("max_abs", 1, max_abs, "tensor", kind="tensor"),
    _op("global_norm", 1, global_norm, "global", kind="global"),
    _op("cosine", 2, cosine, "global", kind="global"),
)

OP_BY_NAME: dict[str, Op] = {op.name: op for op in OPS}
OP_ID: dict[str, int] = {op.name: i + 1 for i, op in enumerate(OPS)}
INFIX: dict[str, str] = {op.infix: op.name for op in OPS if op.infix}
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(op.group for op in OPS))


def helper_source(op_names) -> str:
    """Source of the op functions that `op_names` need, for exported modules (one definition)."""
    fns = []
    for name in op_names:
        fn = OP_BY_NAME[name].fn
        if fn is reciprocal:
            fns.append(div)
        fns.append(fn)
    seen, parts = set(), []
    for fn in fns:
        if fn.__name__ not in seen:
            seen.add(fn.__name__)
            parts.append(inspect.getsource(fn))
    return "\n\n".join(parts)
