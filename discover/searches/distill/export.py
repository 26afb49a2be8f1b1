"""What a distillation writes: the formula as a standalone Python module (importing only jax), the same
program as JSON text in discover's drift language (what :func:`discover.shared.drift_io.load_distilled` reads
back without executing anything), and markdown for TensorBoard.

The module holds the source of the op functions of :mod:`discover.language.ops` and of
:func:`discover.language.drift_program.constrain` (one definition each, copied with ``inspect.getsource``), so
it computes what the search measured, to float32 rounding.
"""

from __future__ import annotations

import inspect
import json
import math

from discover.language import ops
from discover.language.drift_program import (
    INPUTS,
    DriftProgram,
    constrain,
    formula,
    parse_drift,
    remove_dead_code,
)
from discover.shared.drift_io import DISTILLED_KIND

FORMAT = 1


def _value(arg) -> str:
    return arg if arg in INPUTS else (f"v_{arg}" if isinstance(arg, str) else f"jnp.float32({float(arg)!r})")


def python_module(program: DriftProgram, cap: float, about: str = "") -> str:
    """A module defining ``drift(ratio, advantage, progress, log_horizon)``; imports only jax."""
    program = remove_dead_code(program)
    used = sorted({st.op for st in program.statements} - {"copy"})
    body = []
    for st in program.statements:
        call = _value(st.args[0]) if st.op == "copy" else \
            f"{ops.OP_BY_NAME[st.op].fn.__name__}({', '.join(_value(a) for a in st.args)})"
        body.append(f"    {_value(st.dst)} = {call}")
    body.append(f"    return {_value(program.output)}")
    doc = "\n".join(line.rstrip() for line in about.strip().splitlines())
    helpers = ops.helper_source(used) + "\n\n" if used else ""
    return f'''"""A drift distilled by `discover distill` (generated; the program is in the .json beside this file).

drift = min(relu(f), {cap!r} * (r - 1)^2), exactly 0 at r = 1, where

    f = {formula(program)}

{doc}
"""

import jax
import jax.numpy as jnp

TINY = {ops.TINY!r}
EXP_MAX = {ops.EXP_MAX!r}
CAP = {float(cap)!r}


{helpers}{inspect.getsource(constrain)}

def raw(r, A, progress, log_n):
{chr(10).join(body)}


def drift(ratio, advantage, progress, log_horizon):
    """The distilled drift (float32, broadcasting): ratio r, advantage A, progress n/N, log10 horizon."""
    r, A, n, h = (jnp.asarray(x, jnp.float32) for x in (ratio, advantage, progress, log_horizon))
    r, A, n, h = jnp.broadcast_arrays(r, A, n, h)
    return constrain(lambda rs: raw(rs, A, n, h), r, jnp.float32(CAP))
'''


def program_json(program: DriftProgram, cap: float, **facts) -> str:
    """The program's text in discover's drift language with the constraint's cap and ``facts`` (JSON)."""
    program = remove_dead_code(program)
    body = {"kind": DISTILLED_KIND, "format": FORMAT, "program": str(program), "cap": float(cap),
            "formula": formula(program), **facts}
    return json.dumps(_finite(body), indent=2, allow_nan=False) + "\n"


def _finite(obj):
    """JSON-safe: NaN / inf become null, NumPy scalars plain numbers."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def hall_markdown(hall, limit: int | None = None) -> str:
    rows = ["| # | fitness | RL (PPO = 1) | passed | origin | f |", "|---|---|---|---|---|---|"]
    for i, e in enumerate(hall[:limit]):
        rl = "-" if e.rl is None else f"{e.rl:.3f}"
        passed = "-" if e.passed is None else ("yes" if e.passed else "no")
        f = formula(parse_drift(e.program, max_len=10**6)).replace("|", "\\|")
        rows.append(f"| {i + 1} | {e.fitness:.4g} | {rl} | {passed} | {e.origin} | `{f}` |")
    return "\n".join(rows)

