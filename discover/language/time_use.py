"""Where a program may read the step count ``t``: anywhere, or only inside bias corrections tied to their EMA.

A search that may use ``t`` freely builds step-size schedules into its rules (a warm-up by dividing the second
moment by ``0.999^t``, a decay by ``1 + 0.9^t``), and fixed-schedule proxies reward them; tuned baselines then
tie or beat them on held-out tasks. With ``space.time: bias_corrections`` the only use of ``t`` a program may
make is Adam's: ``S / (1 - pow(b, t))``, where ``S`` is a state variable just updated by ``S = interp(x, S, b)``
with the same ``b``. Mutations may still change an EMA's ``b``: :func:`tie_bias_corrections` then moves its
correction's base along, so the pair stays an exact debiasing.
"""

from __future__ import annotations

import dataclasses

from discover.language.program import Program, Statement


@dataclasses.dataclass(frozen=True)
class _Correction:
    """A ``q = pow(c, t)`` statement and what reads it: ``r = 1 - q`` statements, each read only as a divisor of
    an EMA state just updated (the ``interp`` statements' indices); ``problem`` says where the pattern breaks."""

    pow_index: int
    emas: tuple[int, ...]  # the interp statement of each division
    problem: str = ""  # empty: every use is a bias correction


def _uses(program: Program) -> tuple[list[tuple], dict[tuple, list[tuple[int, int]]], set[tuple]]:
    """(definition read by each statement argument, uses per definition, definitions read after the step).
    A definition is ``("in", name)`` for a parameter or ``("st", i)`` for statement ``i``."""
    current = {name: ("in", name) for name in program.params}
    read: list[tuple] = []
    uses: dict[tuple, list[tuple[int, int]]] = {}
    for i, st in enumerate(program.statements):
        defs = tuple(current.get(a) if isinstance(a, str) else None for a in st.args)
        read.append(defs)
        for k, d in enumerate(defs):
            if d is not None:
                uses.setdefault(d, []).append((i, k))
        current[st.dst] = ("st", i)
    outputs = {current[program.update]} | {current[s] for s in program.state}
    return read, uses, outputs


def _corrections(program: Program) -> tuple[list[_Correction], list[str]]:
    """Every ``pow(c, t)`` with what reads it, and the reads of ``t`` that are not such a ``pow``."""
    read, uses, outputs = _uses(program)
    state = set(program.state)
    stray, found = [], []
    for i, st in enumerate(program.statements):
        if ("in", "t") not in read[i]:
            continue
        if not (st.op == "pow" and len(st.args) == 2 and st.args[1] == "t" and isinstance(st.args[0], float)):
            stray.append(f"statement {i + 1} ({st}) reads t outside a bias correction 1 - pow(b, t)")
            continue
        q = ("st", i)
        emas: list[int] = []
        problem = ""
        if q in outputs:
            problem = f"statement {i + 1} ({st}) is returned"
        for j, k in uses.get(q, []):
            sub = program.statements[j]
            if not (sub.op == "sub" and k == 1 and sub.args[0] == 1.0):
                problem = problem or f"statement {j + 1} ({sub}) uses pow(b, t) other than as 1 - pow(b, t)"
                continue
            r = ("st", j)
            if r in outputs:
                problem = problem or f"statement {j + 1} ({sub}) is returned"
            for n, pos in uses.get(r, []):
                div = program.statements[n]
                numerator = read[n][0] if div.args else None
                ema = program.statements[numerator[1]] if numerator and numerator[0] == "st" else None
                if not (div.op == "div" and pos == 1 and ema is not None and ema.op == "interp"
                        and ema.dst in state and ema.args[1] == ema.dst and isinstance(ema.args[2], float)):
                    problem = problem or (f"statement {n + 1} ({div}) uses 1 - pow(b, t) other than to divide a "
                                          "state just updated by interp")
                    continue
                emas.append(numerator[1])
        found.append(_Correction(i, tuple(emas), problem))
    return found, stray


def time_problems(program: Program) -> list[str]:
    """Why ``program`` reads ``t`` other than through bias corrections tied to their EMA (empty: it does not)."""
    corrections, stray = _corrections(program)
    problems = list(stray)
    for c in corrections:
        st = program.statements[c.pow_index]
        if c.problem:
            problems.append(c.problem)
            continue
        betas = {program.statements[e].args[2] for e in c.emas}
        if betas != {st.args[0]}:
            problems.append(f"statement {c.pow_index + 1} ({st}) corrects an EMA of rate "
                            f"{', '.join(map(str, sorted(betas))) or 'none'}, not {st.args[0]}")
    return problems


def tie_bias_corrections(program: Program) -> Program:
    """``program`` with each bias correction's base set to the rate of the EMA it divides (where it divides
    EMAs of one rate); everything else unchanged."""
    statements = list(program.statements)
    corrections, _ = _corrections(program)
    for c in corrections:
        if c.problem or not c.emas:
            continue
        betas = {program.statements[e].args[2] for e in c.emas}
        st = statements[c.pow_index]
        if len(betas) == 1 and st.args[0] not in betas:
            statements[c.pow_index] = Statement(st.dst, st.op, (betas.pop(), st.args[1]))
    statements = tuple(statements)
    return program if statements == program.statements else program.replace(statements=statements)
