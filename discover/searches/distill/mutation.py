"""Start programs and mutations of drift programs (host side; a seeded numpy Generator, checkpointable).

``mutate(program, rng, space)`` applies one of

* ``insert``: a new statement ``x = op(args)`` somewhere (args: names defined there or constants), often
  combined into the output (``f = f + x``) so it is not dead at birth;
* ``wrap``: the output through a unary op, or times / plus a constant;
* ``delete``: remove a statement;
* ``modify_arg``: point an argument at another defined name or a constant;
* ``modify_const``: resample a constant, or scale it by ``2^N(0, 1)`` (half of the time every constant equal
  to it too);
* ``modify_op``: swap an op for another of the same arity,

and returns a valid program of the space (re-parsed), or the parent and ``"none"`` after ``max_tries``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from discover.language.drift_program import INPUTS, DriftProgram, parse_drift
from discover.language.ops import OP_BY_NAME
from discover.language.program import ProgramError, Statement

DEFAULT_WEIGHTS = {"insert": 1.0, "wrap": 0.5, "delete": 1.0, "modify_arg": 1.0, "modify_const": 1.5,
                   "modify_op": 1.0}
COMMON_CONSTANTS = (0.1, 0.2, 0.5, 0.6, 1.0, 2.0, 3.0)
COMBINE_OPS = ("add", "mul", "sub", "max", "min")

_HEAD = "def drift(r, A, progress, log_n):\n"
START_PROGRAMS = {
    # PPO's clipped objective as a drift: relu((r - clip(r, 1 - eps, 1 + eps)) * A).
    "ppo": _HEAD + "    d = r - 1.0\n    return relu((d - clip(d, 0.2)) * A)\n",
    # DPO (Lu et al. 2022), alpha 2, beta 0.6.
    "dpo": _HEAD + ("    x = (r - 1.0) * A\n    up = relu(x - 2.0 * tanh(x / 2.0))\n    y = log(r) * A\n"
                    "    down = relu(y - 0.6 * tanh(y / 0.6))\n    s = sign(A)\n"
                    "    return relu(s) * up + relu(-s) * down\n"),
    "quadratic": _HEAD + "    return 0.5 * square(r - 1.0) * abs(A)\n",
    # An L1 trust region (what a drift network's output near r = 1 looks like: about linear in |r - 1|).
    "linear": _HEAD + "    return 0.5 * abs(r - 1.0) * abs(A)\n",
    "zero": _HEAD + "    return 0.0\n",
}


def _round_sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def taylor_text(coefficients: Sequence[float] = (0.1, 0.1, 0.1, 0.1), offset: float = 1e-4,
                ppo_clip: float | None = None) -> str:
    """``relu((r - 1) * L - offset)``, L linear in [1, A, n/N, A n/N]: the first-order expansion around r = 1 of an
    LPO / TA-LPO network ``relu(net - 1e-4)`` (its features are all about (r - 1) times 1, A, n/N, A n/N there).
    With ``ppo_clip``, plus PPO's drift with that clip (a network trained with ``ppo_init`` adds it)."""
    c = [_round_sig(float(x)) for x in coefficients]
    text = _HEAD + (f"    L = {c[0]!r} + {c[1]!r} * A + {c[2]!r} * progress + {c[3]!r} * A * progress\n"
                    f"    t = relu((r - 1.0) * L - {float(offset)!r})\n")
    if ppo_clip is None:
        return text + "    return t\n"
    return text + f"    d = r - 1.0\n    return t + relu((d - clip(d, {float(ppo_clip)!r})) * A)\n"


START_PROGRAMS["taylor"] = taylor_text()  # its constants are fitted to the samples at the start (fit_taylor)


def fit_taylor(r: np.ndarray, a: np.ndarray, progress: np.ndarray, slope: np.ndarray,
               ppo_clip: float | None = None) -> DriftProgram:
    """The ``taylor`` start program with L fitted (least squares) to the network's slope d drift / d r where
    that is not 0, i.e. where its drift is active; the generic constants when there are too few such states.
    With ``ppo_clip``, PPO's drift is part of the program and its slope is taken off the network's first."""
    r, a, progress = (np.asarray(x, np.float64) for x in (r, a, progress))
    slope = np.asarray(slope, np.float64)
    if ppo_clip is not None:  # d/dr relu((r - clip(r)) A) = A where r is outside the band and (r - clip(r)) A > 0
        outside = np.abs(r - 1.0) > ppo_clip
        slope = slope - np.where(outside & ((r - np.clip(r, 1.0 - ppo_clip, 1.0 + ppo_clip)) * a > 0), a, 0.0)
    generic = parse_drift(taylor_text(ppo_clip=ppo_clip))
    active = np.abs(slope) > 1e-8
    if active.sum() < 8:
        return generic
    features = np.stack([np.ones_like(a), a, progress, a * progress], axis=-1)[active]
    coefficients, *_ = np.linalg.lstsq(features, slope[active], rcond=None)
    if not np.isfinite(coefficients).all():
        return generic
    return parse_drift(taylor_text(coefficients, ppo_clip=ppo_clip))


def start_program(name: str) -> DriftProgram:
    return parse_drift(START_PROGRAMS[name])


def ppo_program(clip_eps: float) -> DriftProgram:
    """PPO's drift with clip ``clip_eps`` (the RL check's normalizer runs it through the same trainer)."""
    return parse_drift(START_PROGRAMS["ppo"].replace("0.2", repr(float(clip_eps))))


@dataclasses.dataclass(frozen=True)
class DriftSpace:
    ops: tuple[str, ...]
    max_len: int

    def parse(self, text: str) -> DriftProgram:
        return parse_drift(text, max_len=self.max_len, ops=self.ops)


def random_constant(rng: np.random.Generator) -> float:
    """A common constant half of the time, else a log-uniform magnitude in [1e-2, 10] (negative 20%)."""
    if rng.random() < 0.5:
        return float(rng.choice(COMMON_CONSTANTS))
    value = 10.0 ** rng.uniform(-2.0, 1.0)
    return _round_sig(value if rng.random() < 0.8 else -value)


def _defined_before(program: DriftProgram, i: int) -> list[str]:
    names = list(INPUTS)
    for st in program.statements[:i]:
        if st.dst not in names:
            names.append(st.dst)
    return names


def _fresh(program: DriftProgram, prefix: str = "x") -> str:
    used = set(INPUTS) | {s.dst for s in program.statements}
    k = 0
    while f"{prefix}{k}" in used:
        k += 1
    return f"{prefix}{k}"


def _random_arg(rng, names, const_prob=0.3):
    if rng.random() < const_prob:
        return random_constant(rng)
    return names[int(rng.integers(len(names)))]


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _output_target(program: DriftProgram) -> str:
    return program.output if program.output not in INPUTS else _fresh(program, "f")


def _insert(program, rng, space):
    i = int(rng.integers(len(program.statements) + 1))
    names = _defined_before(program, i)
    op = OP_BY_NAME[_pick(rng, space.ops)]
    args = tuple(_random_arg(rng, names) for _ in range(op.arity))
    if all(not isinstance(a, str) for a in args):  # keep at least one variable input
        args = (_pick(rng, names),) + args[1:]
    writable = [n for n in names if n not in INPUTS]
    dst = _pick(rng, writable) if writable and rng.random() < 0.3 else _fresh(program)
    statements = program.statements[:i] + (Statement(dst, op.name, args),) + program.statements[i:]
    child = program.replace(statements=statements)
    if dst.startswith("x") and dst not in names and rng.random() < 0.7:  # combine it into the output
        combine = [o for o in COMBINE_OPS if o in space.ops] or ["add"]
        target = _output_target(child)
        child = child.replace(statements=child.statements + (Statement(target, _pick(rng, combine),
                                                                         (child.output, dst)),), output=target)
    return child


def _wrap(program, rng, space):
    target = _output_target(program)
    unary = [o for o in space.ops if OP_BY_NAME[o].arity == 1]
    if unary and rng.random() < 0.6:
        st = Statement(target, _pick(rng, unary), (program.output,))
    else:
        op = _pick(rng, [o for o in ("mul", "add", "max", "min", "clip") if o in space.ops] or ["mul"])
        st = Statement(target, op, (program.output, random_constant(rng)))
    return program.replace(statements=program.statements + (st,), output=target)


def _delete(program, rng, space):
    if not program.statements:
        return None
    i = int(rng.integers(len(program.statements)))
    child = program.replace(statements=program.statements[:i] + program.statements[i + 1:])
    deleted = program.statements[i]
    if deleted.dst == program.output and deleted.dst not in _defined_before(child, len(child.statements)):
        # the output's last definition went: return one of its inputs instead
        names = [a for a in deleted.args if isinstance(a, str)]
        if not names:
            return None
        child = child.replace(output=_pick(rng, names))
    return child


def _modify_arg(program, rng, space):
    if not program.statements:
        return None
    i = int(rng.integers(len(program.statements)))
    st = program.statements[i]
    args = list(st.args)
    args[int(rng.integers(len(args)))] = _random_arg(rng, _defined_before(program, i))
    return _replace(program, i, Statement(st.dst, st.op, tuple(args)))


def _modify_const(program, rng, space):
    spots = [(i, k) for i, st in enumerate(program.statements) for k, a in enumerate(st.args)
             if not isinstance(a, str)]
    if not spots:
        return _modify_arg(program, rng, space)
    i, k = spots[int(rng.integers(len(spots)))]
    old = program.statements[i].args[k]
    new = random_constant(rng) if rng.random() < 0.3 else _round_sig(old * 2.0 ** rng.normal())
    if not math.isfinite(new):
        return None
    if rng.random() < 0.5:  # every constant equal to it, half of the time (DPO's alpha in x / alpha, alpha tanh)
        spots = [(j, m) for j, m in spots if program.statements[j].args[m] == old]
    else:
        spots = [(i, k)]
    for j, m in spots:
        st = program.statements[j]
        program = _replace(program, j, Statement(st.dst, st.op, st.args[:m] + (new,) + st.args[m + 1:]))
    return program


def _modify_op(program, rng, space):
    if not program.statements:
        return None
    i = int(rng.integers(len(program.statements)))
    st = program.statements[i]
    same = [o for o in space.ops if OP_BY_NAME[o].arity == len(st.args) and o != st.op]
    if not same:
        return None
    return _replace(program, i, Statement(st.dst, _pick(rng, same), st.args))


def _replace(program, i, st):
    return program.replace(statements=program.statements[:i] + (st,) + program.statements[i + 1:])


MUTATIONS = {"insert": _insert, "wrap": _wrap, "delete": _delete, "modify_arg": _modify_arg,
             "modify_const": _modify_const, "modify_op": _modify_op}


def mutate(program: DriftProgram, rng: np.random.Generator, space: DriftSpace,
           weights: Mapping[str, float] | None = None, max_tries: int = 20) -> tuple[DriftProgram, str, int]:
    """``(child, mutation, invalid tries)``: a valid child of ``program`` inside ``space`` that differs from it
    (``(program, "none", max_tries)`` when every try failed)."""
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    names = [n for n in MUTATIONS if weights.get(n, 0.0) > 0]
    p = np.array([weights[n] for n in names], np.float64)
    p /= p.sum()
    for tries in range(max_tries):
        kind = names[int(rng.choice(len(names), p=p))]
        child = MUTATIONS[kind](program, rng, space)
        if child is None or child == program:
            continue
        try:
            child = space.parse(str(child))
        except ProgramError:
            continue
        if child != program:
            return child, kind, tries
    return program, "none", max_tries


def random_programs(space: DriftSpace, rng: np.random.Generator, n: int, start: Sequence[DriftProgram],
                    steps: int = 3) -> list[DriftProgram]:
    """``n`` programs, each a few mutations away from one of ``start`` (cycled): for property tests."""
    out = []
    for j in range(n):
        program = start[j % len(start)]
        for _ in range(steps):
            program, _, _ = mutate(program, rng, space)
        out.append(program)
    return out
