"""Simplify a discovered update rule: a shorter program that scores the same.

Two kinds of change, both small pure functions over :class:`~discover.language.program.Program`:

* **Folds** (:func:`canonicalize`) are algebraic identities that hold up to float32 rounding and the
  protected numerics' edge cases: dead code, constant statements evaluated (``1.0 - 0.9``), ``x * 1``,
  ``x + 0``, ``x / abs(x) -> sign(x)``, ``sqrt(square(x)) -> abs(x)``, ``sign(arctan(x)) -> sign(x)``,
  ``interp(x, x, a) -> x``, copy propagation, a state variable that is never written (always 0)...
  They are applied after every change.
* **Edits** (:func:`candidate_edits`) change what the program computes: bypass a statement
  (``x = op(a, b) -> x = a``, which is how ``arcsin(x) -> x`` or "drop ``+ 0.001 * w``" happen), swap an
  op for a simpler one (``tanh -> sign``, ``pow(x, 0.49) -> sqrt(x)``), round a constant
  (``0.899 -> 0.9``, ``0.9987 -> 0.999``, ``1e-8 -> 0``). An edit is kept only when the fitness stays
  within ``tolerance`` of the original program's.

:func:`simplify` is the greedy loop. It takes ``score(programs) -> fitness array`` (lower is better), so
it runs with any scorer: :func:`run_simplify` uses the meta-validation scorer of :mod:`discover.searches.update_rules.search`
(val loss / tuned AdamW's val loss on the meta-validation tasks); tests use cheap ones. Each round lists
the edits of the current program, most simplifying first, and scores them ``batch`` at a time (one
batched trainer call per chunk); the first that stays within tolerance is applied. It stops when no
edit does. Every accepted and rejected change is returned as a :class:`Step` with its fitness.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
from collections.abc import Callable, Sequence

import numpy as np

from discover.infra.config import ConfigError
from discover.infra.rundir import RunDir, RunDirError, TBLogger, program_markdown
from discover.language import ops
from discover.language.analysis import remove_dead_code, structural_hash
from discover.language.program import Program, ProgramError, Statement, parse

ScoreFn = Callable[[Sequence[Program]], np.ndarray]

DEFAULT_TOLERANCE = 0.01  # relative: keep a change when fitness <= original * (1 + tolerance)
DEFAULT_BATCH = 16
DEFAULT_METAVAL_TASKS = ("mlp_regression_metaval",)  # when the program does not come from a run directory

# ----------------------------------------------------------------------------------------------------------
# Complexity: what "simpler" means. Compared as a tuple: fewer statements, then cheaper ops, then shorter
# constants. Every edit must lower it, so the greedy loop terminates.
# ----------------------------------------------------------------------------------------------------------
_OP_COST = {"copy": 0, "add": 1, "sub": 1, "mul": 1, "neg": 1, "abs": 1, "sign": 1, "relu": 1, "max": 1,
            "min": 1, "clip": 1, "square": 1, "interp": 2, "div": 2, "reciprocal": 2, "sqrt": 2, "rsqrt": 2}
_DEFAULT_OP_COST = 3  # transcendental functions, pow and reductions


def op_cost(name: str) -> int:
    return _OP_COST.get(name, _DEFAULT_OP_COST)


def _significant_digits(x: float) -> int:
    mantissa = f"{abs(x):.12g}".split("e")[0].replace(".", "").lstrip("0").rstrip("0")
    return len(mantissa)


def constant_cost(c: float) -> int:
    """Digits needed to write ``c`` (or ``1 - c``, so 0.999 costs like 0.001): 0 for 0 and 1."""
    c = float(c)
    if c == 0.0 or c == 1.0:
        return 0
    return min(_significant_digits(c), _significant_digits(1.0 - c))


def complexity(program: Program) -> tuple[int, int, int]:
    return (len(program.statements), sum(op_cost(s.op) for s in program.statements),
            sum(constant_cost(c) for c in program.constants))


# ----------------------------------------------------------------------------------------------------------
# Small helpers over statements
# ----------------------------------------------------------------------------------------------------------
def _is_name(a) -> bool:
    return isinstance(a, str)


def _is_const(a, value: float | None = None) -> bool:
    return not isinstance(a, str) and (value is None or float(a) == value)


def _reaching_def(stmts: Sequence[Statement], i: int, name: str) -> int | None:
    """Index of the statement whose value ``name`` holds just before statement ``i`` (None: a parameter)."""
    for j in range(i - 1, -1, -1):
        if stmts[j].dst == name:
            return j
    return None


def _written_between(stmts: Sequence[Statement], name: str, lo: int, hi: int) -> bool:
    return any(stmts[k].dst == name for k in range(lo + 1, hi))


def _inner(stmts: Sequence[Statement], i: int, arg) -> Statement | None:
    """The statement defining ``arg`` as read by statement ``i``, when its own arguments still hold the same
    values at ``i`` (so an identity may look through it)."""
    if not _is_name(arg):
        return None
    j = _reaching_def(stmts, i, arg)
    if j is None:
        return None
    d = stmts[j]
    if d.dst in d.args:  # reads the previous value of its own target: not available at i
        return None
    if any(_is_name(a) and _written_between(stmts, a, j, i) for a in d.args):
        return None
    return d


def _stmt(dst: str, op: str, *args) -> Statement:
    return Statement(dst, op, tuple(args))


# ----------------------------------------------------------------------------------------------------------
# Folds: identities, constant evaluation, copy propagation
# ----------------------------------------------------------------------------------------------------------
# f(x) with sign(f(x)) == sign(x)
_SIGN_PRESERVING = {"copy", "tanh", "arctan", "arcsin", "sinh", "erf", "log1p", "sign"}
# ops whose result is never negative (abs/relu of them is the identity)
_NONNEGATIVE = {"abs", "square", "sqrt", "rsqrt", "exp", "cosh", "relu", "norm", "rms", "max_abs", "global_norm"}


def identity_fold(stmts: Sequence[Statement], i: int) -> Statement | None:
    """Statement ``i`` rewritten by an algebraic identity, or None."""
    st = stmts[i]
    op, a = st.op, st.args
    dst = st.dst
    inner0 = _inner(stmts, i, a[0])
    if op == "mul":
        for x, y in ((a[0], a[1]), (a[1], a[0])):
            if _is_const(y, 1.0):
                return _stmt(dst, "copy", x)
            if _is_const(y, 0.0):
                return _stmt(dst, "copy", 0.0)
            if _is_const(y, -1.0):
                return _stmt(dst, "neg", x)
    elif op == "add":
        for x, y in ((a[0], a[1]), (a[1], a[0])):
            if _is_const(y, 0.0):
                return _stmt(dst, "copy", x)
    elif op == "sub":
        if _is_const(a[1], 0.0):
            return _stmt(dst, "copy", a[0])
        if _is_const(a[0], 0.0):
            return _stmt(dst, "neg", a[1])
        if _is_name(a[0]) and a[0] == a[1]:
            return _stmt(dst, "copy", 0.0)
    elif op == "div":
        if _is_const(a[1], 1.0):
            return _stmt(dst, "copy", a[0])
        if _is_const(a[1], -1.0):
            return _stmt(dst, "neg", a[0])
        if _is_const(a[0], 0.0) or _is_const(a[1], 0.0):  # protected division: x / 0 = 0
            return _stmt(dst, "copy", 0.0)
        inner1 = _inner(stmts, i, a[1])
        if inner1 is not None and inner1.op == "abs" and inner1.args[0] == a[0] and _is_name(a[0]):
            return _stmt(dst, "sign", a[0])  # m / abs(m)
        if inner0 is not None and inner0.op == "abs" and inner0.args[0] == a[1] and _is_name(a[1]):
            return _stmt(dst, "sign", a[1])  # abs(m) / m
    elif op == "pow":
        if _is_const(a[1], 1.0):
            return _stmt(dst, "copy", a[0])
        if _is_const(a[1], 0.0):
            return _stmt(dst, "sign", a[0])  # sign(x) * exp(0)
    elif op in ("max", "min"):
        if _is_name(a[0]) and a[0] == a[1]:
            return _stmt(dst, "copy", a[0])
        if op == "max":
            for x, y in ((a[0], a[1]), (a[1], a[0])):
                if _is_const(y, 0.0) and _is_name(x):
                    return _stmt(dst, "relu", x)
    elif op == "interp":
        if a[0] == a[1] and _is_name(a[0]):
            return _stmt(dst, "copy", a[0])
        if _is_const(a[2], 0.0):
            return _stmt(dst, "copy", a[0])
        if _is_const(a[2], 1.0):
            return _stmt(dst, "copy", a[1])
    elif op == "clip":
        if _is_const(a[1], 0.0):
            return _stmt(dst, "copy", 0.0)
    elif op == "neg":
        if inner0 is not None and inner0.op == "neg":
            return _stmt(dst, "copy", inner0.args[0])
    elif op == "abs":
        if inner0 is not None and inner0.op in ("abs", "neg") and _is_name(inner0.args[0]):
            return _stmt(dst, "abs", inner0.args[0])
        if inner0 is not None and inner0.op in _NONNEGATIVE:
            return _stmt(dst, "copy", a[0])
    elif op == "relu":
        if inner0 is not None and (inner0.op in _NONNEGATIVE or inner0.op == "relu"):
            return _stmt(dst, "copy", a[0])
    elif op == "sign":
        if inner0 is not None:
            x = inner0.args[0]
            if inner0.op in _SIGN_PRESERVING and _is_name(x) and inner0.op != "copy":
                return _stmt(dst, "sign", x)
            if inner0.op == "pow" and _is_name(x):
                return _stmt(dst, "sign", x)  # pow keeps the sign of its base
            if inner0.op == "mul":
                for x, y in ((inner0.args[0], inner0.args[1]), (inner0.args[1], inner0.args[0])):
                    if _is_name(x) and _is_const(y) and float(y) > 0:
                        return _stmt(dst, "sign", x)
            if inner0.op == "div" and _is_name(x) and _is_const(inner0.args[1]) and float(inner0.args[1]) > 0:
                return _stmt(dst, "sign", x)
    elif op == "square":
        if inner0 is not None and inner0.op == "sqrt" and _is_name(inner0.args[0]):
            return _stmt(dst, "abs", inner0.args[0])
        if inner0 is not None and inner0.op in ("neg", "abs") and _is_name(inner0.args[0]):
            return _stmt(dst, "square", inner0.args[0])
    elif op == "sqrt" and inner0 is not None and inner0.op == "square" and _is_name(inner0.args[0]):
        return _stmt(dst, "abs", inner0.args[0])
    return None


def fold_identities(program: Program) -> Program:
    stmts = list(program.statements)
    for i in range(len(stmts)):
        new = identity_fold(stmts, i)
        if new is not None and new != stmts[i]:
            stmts[i] = new
    return program.replace(statements=tuple(stmts))


def _evaluate(st: Statement) -> float | None:
    """The value of an elementwise statement whose arguments are all constants (float32, as programs run)."""
    op = ops.OP_BY_NAME[st.op]
    if op.kind != "elementwise" or st.op == "copy":
        return None
    args = [np.float32(a) for a in st.args]
    with np.errstate(all="ignore"):  # an overflow gives inf: not folded
        if st.op == "interp":
            value = op.fn(*args, np.float32(1.0 - float(st.args[2])))
        else:
            value = op.fn(*args)
        value = float(np.asarray(value, np.float32))
    return value if math.isfinite(value) else None


def fold_constant_statements(program: Program) -> Program:
    stmts = []
    for st in program.statements:
        if st.op != "copy" and all(_is_const(a) for a in st.args):
            value = _evaluate(st)
            if value is not None:
                st = _stmt(st.dst, "copy", _short(value))
        stmts.append(st)
    return program.replace(statements=tuple(stmts))


def _short(value: float) -> float:
    """The shortest decimal with the same float32 value (1 - 0.9 in float32 prints as 0.1)."""
    return float(str(np.float32(value)))


def propagate_copies(program: Program) -> Program:
    """Reads of ``x`` after ``x = y`` (or ``x = 0.5``) read ``y`` (the constant) while neither changes."""
    stmts = list(program.statements)
    for i, st in enumerate(stmts):
        if st.op != "copy" or st.args[0] == st.dst:
            continue
        x, src = st.dst, st.args[0]
        for j in range(i + 1, len(stmts)):
            s = stmts[j]
            if x in s.args:
                stmts[j] = Statement(s.dst, s.op, tuple(src if a == x else a for a in s.args))
            if s.dst == x or (_is_name(src) and s.dst == src):
                break
    return program.replace(statements=tuple(stmts))


def drop_self_copies(program: Program) -> Program:
    return program.replace(statements=tuple(s for s in program.statements
                                            if not (s.op == "copy" and s.args[0] == s.dst)))


def coalesce_copies(program: Program) -> Program:
    """``y = f(...); ...; x = y`` with ``y`` a temporary used only there becomes ``x = f(...)``."""
    stmts = list(program.statements)
    changed = True
    while changed:
        changed = False
        for i, st in enumerate(stmts):
            y = st.args[0] if st.op == "copy" else None
            if not _is_name(y) or y == st.dst or y in program.params or y == program.update:
                continue
            j = _reaching_def(stmts, i, y)
            if j is None or sum(s.dst == y for s in stmts) != 1:
                continue
            if sum(a == y for s in stmts for a in s.args) != 1:
                continue
            x = st.dst
            if any(stmts[k].dst == x or x in stmts[k].args for k in range(j + 1, i)):
                continue
            stmts[j] = Statement(x, stmts[j].op, stmts[j].args)
            del stmts[i]
            changed = True
            break
    return program.replace(statements=tuple(stmts))


def fold_unwritten_state(program: Program) -> Program:
    """A state variable no statement writes stays at its initial value 0: read it as 0.0."""
    written = {s.dst for s in program.statements}
    frozen = [s for s in program.state if s not in written and s != program.update]
    if not frozen:
        return program
    stmts = tuple(Statement(s.dst, s.op, tuple(0.0 if a in frozen else a for a in s.args))
                  for s in program.statements)
    return program.replace(statements=stmts, params=tuple(p for p in program.params if p not in frozen))


def renumber_temporaries(program: Program) -> Program:
    """Temporaries ``_k`` renumbered ``_1, _2, ...`` in order of definition (names only)."""
    temps = [s.dst for s in program.statements if re.fullmatch(r"_\d+", s.dst)]
    mapping = {old: f"_{k}" for k, old in enumerate(dict.fromkeys(temps), 1)}
    if all(k == v for k, v in mapping.items()):
        return program
    rename = lambda a: mapping.get(a, a) if _is_name(a) else a
    stmts = tuple(Statement(rename(s.dst), s.op, tuple(rename(a) for a in s.args)) for s in program.statements)
    return program.replace(statements=stmts, update=rename(program.update))


def single_assignment(program: Program) -> Program:
    """Every value gets its own name: a variable assigned more than once keeps its name only for its last
    assignment (what the return and later reads see); earlier ones become fresh temporaries, so identities
    can look through them (``c = interp(g, m, 0.9); c = arctan(c); d = sign(c)``)."""
    stmts = list(program.statements)
    last = {s.dst: i for i, s in enumerate(stmts)}
    if all(last[s.dst] == i for i, s in enumerate(stmts)):
        return program
    used = set(program.params) | {s.dst for s in stmts}
    counter = 0

    def fresh() -> str:
        nonlocal counter
        while True:
            counter += 1
            if f"_{counter}" not in used:
                used.add(f"_{counter}")
                return f"_{counter}"

    current: dict[str, str] = {}  # name -> the name its current value has
    out = []
    for i, st in enumerate(stmts):
        args = tuple(current.get(a, a) if _is_name(a) else a for a in st.args)
        dst = st.dst if last[st.dst] == i else fresh()
        current[st.dst] = dst
        out.append(Statement(dst, st.op, args))
    return program.replace(statements=tuple(out))


# coalescing runs before propagation so that `u = _3` renames _3 to u rather than dropping the name u
_FOLD_PASSES = (single_assignment, fold_constant_statements, fold_identities, drop_self_copies, coalesce_copies,
                propagate_copies, fold_unwritten_state, remove_dead_code)


def canonicalize(program: Program) -> Program:
    """Every fold applied until nothing changes, then temporaries renumbered."""
    for _ in range(100):
        before = program
        for fold in _FOLD_PASSES:
            program = fold(program)
        if program == before:
            break
    return renumber_temporaries(program)


# ----------------------------------------------------------------------------------------------------------
# Edits: changes that need scoring
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Edit:
    kind: str  # "remove" | "op" | "constant"
    description: str  # e.g. "`c = arcsin(x)` -> `c = x`"
    program: Program  # canonicalized result
    key: str = ""  # what changed, blind to variable names: an edit rejected once is not tried again


def _value_keys(program: Program) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Name-blind keys of values: (keys after the last statement, keys visible before each statement)."""
    env = {name: name for name in program.params}  # inputs and state at entry are their own names
    before = []
    for st in program.statements:
        before.append(dict(env))
        env[st.dst] = _hash_key((st.op,) + tuple(env[a] if _is_name(a) else repr(float(a)) for a in st.args))
    return env, before


def _hash_key(parts) -> str:
    import hashlib

    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def _edit_key(before: dict[str, str], old: Statement, new: Statement | None) -> str:
    def expr(st):
        return (st.op,) + tuple(before[a] if _is_name(a) else repr(float(a)) for a in st.args)

    return _hash_key((expr(old), "deleted" if new is None else expr(new)))


_SATURATING_ODD = ("tanh", "arctan", "erf")  # ~ sign for large inputs
_POW_AS_UNARY = {1.0: "copy", 0.0: "sign", 2.0: "square", 0.5: "sqrt", -0.5: "rsqrt", -1.0: "reciprocal"}


def _with_statement(program: Program, i: int, new: Statement | None) -> Program:
    stmts = list(program.statements)
    if new is None:
        del stmts[i]
    else:
        stmts[i] = new
    return program.replace(statements=tuple(stmts))


def _statement_edits(program: Program, i: int) -> list[tuple[str, Statement | None]]:
    st = program.statements[i]
    out: list[tuple[str, Statement | None]] = []
    if st.op == "copy":
        out.append(("remove", None))  # e.g. a state variable that would then keep its previous value
    else:
        for a in dict.fromkeys(st.args):
            out.append(("remove", _stmt(st.dst, "copy", a)))
    if st.op in _SATURATING_ODD:
        out.append(("op", _stmt(st.dst, "sign", st.args[0])))
    if st.op == "pow" and _is_const(st.args[1]):
        nearest = min(_POW_AS_UNARY, key=lambda k: abs(k - float(st.args[1])))
        if abs(nearest - float(st.args[1])) <= 0.25:
            out.append(("op", _stmt(st.dst, _POW_AS_UNARY[nearest], st.args[0])))
    for k, a in enumerate(st.args):
        if _is_const(a):
            for value in rounded_constants(float(a)):
                args = st.args[:k] + (value,) + st.args[k + 1:]
                out.append(("constant", Statement(st.dst, st.op, args)))
    return out


def rounded_constants(c: float) -> list[float]:
    """Shorter constants near ``c``: fewer significant digits of ``c`` or of ``1 - c``, and 0."""
    values = []
    for digits in range(1, _significant_digits(c)):
        values.append(float(f"{c:.{digits}g}"))
    if 0.0 < c < 1.0:
        for digits in range(1, _significant_digits(1.0 - c)):
            values.append(float(f"{1.0 - float(f'{1.0 - c:.{digits}g}'):.12g}"))
    values.append(0.0)
    cost = constant_cost(c)
    return [v for v in dict.fromkeys(values) if v != c and constant_cost(v) < cost]


def _valid(program: Program) -> bool:
    try:
        parse(str(program), max_len=10**6)
    except ProgramError:
        return False
    return True


def candidate_edits(program: Program) -> list[Edit]:
    """Every edit of ``program`` that makes it simpler, most simplifying first (duplicates dropped)."""
    current = complexity(program)
    _, visible = _value_keys(program)
    edits = []
    for i, st in enumerate(program.statements):
        for kind, new in _statement_edits(program, i):
            raw = _with_statement(program, i, new)
            if not _valid(raw):
                continue
            result = canonicalize(raw)
            if complexity(result) >= current or not _valid(result):
                continue
            after = "(removed)" if new is None else f"`{new}`"
            edits.append(Edit(kind, f"`{st}` -> {after}", result, _edit_key(visible[i], st, new)))
    order = {"remove": 0, "op": 1, "constant": 2}
    edits.sort(key=lambda e: (complexity(e.program), order[e.kind]))
    seen, unique = set(), []
    for e in edits:  # equal results: the simplest description (a removal rather than a rounding to 0) is kept
        key = structural_hash(e.program)
        if key not in seen:
            seen.add(key)
            unique.append(e)
    return unique


# ----------------------------------------------------------------------------------------------------------
# The greedy loop
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Step:
    """One change tried: ``fitness_after`` is the fitness of the program with the change."""

    kind: str  # "dead code" | "fold" | "remove" | "op" | "constant"
    description: str
    fitness_before: float
    fitness_after: float
    accepted: bool
    statements_before: int
    statements_after: int
    program: str  # the program with the change (canonical text)

    @property
    def delta(self) -> float:
        return self.fitness_after - self.fitness_before

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "delta": self.delta}


@dataclasses.dataclass(frozen=True)
class SimplifyResult:
    original: Program
    program: Program
    steps: list[Step]
    fitness_original: float
    fitness_final: float
    tolerance: float
    evaluations: int  # programs scored

    @property
    def threshold(self) -> float:
        return acceptance_threshold(self.fitness_original, self.tolerance)


def acceptance_threshold(reference: float, tolerance: float) -> float:
    return reference + tolerance * abs(reference)


def _chunks(items: Sequence, size: int):
    for k in range(0, len(items), size):
        yield items[k:k + size]


def simplify(program: Program, score: ScoreFn, *, tolerance: float = DEFAULT_TOLERANCE, batch: int = DEFAULT_BATCH,
             max_rounds: int = 200, on_step: Callable[[Step], None] | None = None) -> SimplifyResult:
    """Greedy simplification of ``program`` (see the module docstring).

    ``score(programs)`` returns one fitness per program (lower is better; it is called with at most
    ``batch`` programs). A change is kept when its fitness is at most ``f0 + tolerance * |f0|``, ``f0`` the
    fitness of the original program, so changes cannot drift away from it one small step at a time."""
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    steps: list[Step] = []
    cache: dict[str, float] = {}
    evaluations = 0

    def record(step: Step) -> None:
        steps.append(step)
        if on_step is not None:
            on_step(step)

    def fitness_of(programs: Sequence[Program]) -> list[float]:
        nonlocal evaluations
        keys = [structural_hash(p) for p in programs]
        todo = {k: p for k, p in zip(keys, programs) if k not in cache}
        if todo:
            values = np.asarray(score(list(todo.values())), np.float64).reshape(-1)
            if values.shape[0] != len(todo):
                raise ValueError(f"score returned {values.shape[0]} values for {len(todo)} programs")
            evaluations += len(todo)
            cache.update({k: float(v) if np.isfinite(v) else math.inf for k, v in zip(todo, values)})
        return [cache[k] for k in keys]

    live = remove_dead_code(program)
    folded = canonicalize(live)
    f_live, f_folded = fitness_of([live, folded])
    if not math.isfinite(f_live):
        raise ValueError("the program's own fitness is not finite (its training diverges): nothing to preserve")
    threshold = acceptance_threshold(f_live, tolerance)
    if len(live) < len(program) or live.params != program.params:
        record(Step("dead code", f"{len(program) - len(live)} dead statement(s) removed (exact: never reach the"
                                 " update)", f_live, f_live, True, len(program), len(live), str(live)))
    current, f_current = live, f_live
    if folded != live:
        ok = f_folded <= threshold
        record(Step("fold", "algebraic identities folded", f_live, f_folded, ok, len(live), len(folded),
                    str(folded)))
        if ok:
            current, f_current = folded, f_folded
    rejected: set[str] = set()  # programs and edits that failed: never tried again
    for _ in range(max_rounds):
        edits = [e for e in candidate_edits(current)
                 if structural_hash(e.program) not in rejected and e.key not in rejected]
        accepted = None
        for chunk in _chunks(edits, batch):
            values = fitness_of([e.program for e in chunk])
            for edit, f in zip(chunk, values):
                if f <= threshold:
                    accepted = (edit, f)
                    break
                rejected.update((structural_hash(edit.program), edit.key))
                record(Step(edit.kind, edit.description, f_current, f, False, len(current), len(edit.program),
                            str(edit.program)))
            if accepted:
                break
        if accepted is None:
            break
        edit, f = accepted
        record(Step(edit.kind, edit.description, f_current, f, True, len(current), len(edit.program),
                    str(edit.program)))
        current, f_current = edit.program, f
    return SimplifyResult(original=program, program=current, steps=steps, fitness_original=f_live,
                          fitness_final=f_current, tolerance=tolerance, evaluations=evaluations)


# ----------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.5g}" if math.isfinite(x) else "inf"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def steps_markdown_table(steps: Sequence[Step]) -> str:
    lines = ["| # | kind | change | fitness before | fitness after | delta | statements | kept |",
             "|---|---|---|---|---|---|---|---|"]
    for n, s in enumerate(steps, 1):
        delta = f"{s.delta:+.3g}" if math.isfinite(s.delta) else "inf"
        lines.append(f"| {n} | {s.kind} | {_cell(s.description)} | {_fmt(s.fitness_before)} | "
                     f"{_fmt(s.fitness_after)} | {delta} | {s.statements_before} -> {s.statements_after} | "
                     f"{'yes' if s.accepted else 'no'} |")
    return "\n".join(lines)


def report_markdown(result: SimplifyResult, scoring: str) -> str:
    kept = sum(s.accepted for s in result.steps)
    parts = [
        "# discover simplify",
        "",
        (f"Scored on: {scoring}. Fitness = validation loss / tuned AdamW's (lower is better). A change is kept "
         f"when fitness <= {_fmt(result.fitness_original)} x (1 + {result.tolerance:g}) = "
         f"{_fmt(result.threshold)}."),
        "",
        (f"**{len(result.original)} -> {len(result.program)} statements**, fitness "
         f"{_fmt(result.fitness_original)} -> {_fmt(result.fitness_final)}; {kept} change(s) kept, "
         f"{len(result.steps) - kept} rejected, {result.evaluations} programs scored."),
        "",
        program_markdown(str(result.original), title="Original"),
        "",
        program_markdown(str(result.program), title="Simplified"),
        "",
        "### Steps",
        "",
        steps_markdown_table(result.steps),
        "",
    ]
    return "\n".join(parts)


def console_table(result: SimplifyResult):
    from rich.table import Table

    table = Table(title=f"simplify: {len(result.original)} -> {len(result.program)} statements, fitness "
                        f"{_fmt(result.fitness_original)} -> {_fmt(result.fitness_final)}")
    for col in ("#", "kind", "change", "fitness", "delta", "kept"):
        table.add_column(col)
    for n, s in enumerate(result.steps, 1):
        delta = f"{s.delta:+.3g}" if math.isfinite(s.delta) else "inf"
        table.add_row(str(n), s.kind, s.description, _fmt(s.fitness_after), delta,
                      "[green]yes[/]" if s.accepted else "[red]no[/]")
    return table


# ----------------------------------------------------------------------------------------------------------
# Entry point: meta-validation scoring, run directories
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScoringSetup:
    """How programs are scored: the search's Scorer settings on meta-validation tasks."""

    tasks: tuple  # task names or envs.tasks.Task objects
    steps: int | None
    seeds: int
    lr_multipliers: tuple[float, ...]
    worst: float
    reference_cache: pathlib.Path | None
    references: dict | None = None  # precomputed AdamW references by task name (from a run directory)

    def describe(self) -> str:
        names = ", ".join(t if isinstance(t, str) else t.name for t in self.tasks)
        steps = "" if self.steps is None else f", {self.steps} steps"
        return (f"meta-validation tasks {names}{steps}, {self.seeds} seed(s), lr = tuned AdamW lr x "
                f"{list(self.lr_multipliers)}")


def _load_program_file(path: pathlib.Path) -> Program:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read: {err}", source=str(path)) from None
    try:
        return parse(text, max_len=10**6)
    except ProgramError as err:
        raise ConfigError(err.message, source=str(path), line=err.line) from None


def resolve_source(source) -> tuple[Program, RunDir | None]:
    """``source``: a Program, a program file or a search run directory (its ``best.py``)."""
    if isinstance(source, Program):
        return source, None
    path = pathlib.Path(source)
    if path.is_dir():
        run = RunDir.open(path)
        best = run.file("best.py")
        if not best.is_file():
            raise RunDirError("run has no best.py yet (has the search written its outputs?)", source=str(path))
        return _load_program_file(best), run
    if path.is_file():
        return _load_program_file(path), None
    raise RunDirError("no such program file or run directory", source=str(path))


def scoring_setup(run: RunDir | None, *, tasks=None, seeds=None, steps=None, lr_multipliers=None,
                  reference_cache=None) -> ScoringSetup:
    """Meta-validation settings: the run's funnel (its references reused when unchanged), else defaults;
    explicit arguments win."""
    worst, refs, cache = 1000.0, None, reference_cache
    run_tasks, run_steps, run_seeds, run_lrs = list(DEFAULT_METAVAL_TASKS), None, 1, (1.0,)
    if run is not None:
        from discover.searches.update_rules.search import resume_config

        config = resume_config(run)
        funnel = config.funnel
        run_tasks = list(funnel.tasks) or list(config.fitness.tasks)
        run_steps = funnel.steps if funnel.tasks else config.fitness.steps
        run_seeds = funnel.seeds if funnel.tasks else config.fitness.seeds
        run_lrs = tuple(config.fitness.lr_multipliers)
        worst = config.fitness.worst
        cache = cache or config.fitness.reference_cache or (run.path.parent / ".baselines.json")
        unchanged = tasks is None and seeds is None and steps is None
        if unchanged and run.file("references.json").is_file():
            saved = run.read_json("references.json").get("metaval" if funnel.tasks else "proxy", {})
            if all(name in saved for name in run_tasks):
                refs = {name: saved[name] for name in run_tasks}
    return ScoringSetup(
        tasks=tuple(run_tasks if tasks is None else tasks),
        steps=run_steps if steps is None else steps,
        seeds=run_seeds if seeds is None else seeds,
        lr_multipliers=tuple(run_lrs if lr_multipliers is None else lr_multipliers),
        worst=worst,
        reference_cache=pathlib.Path(cache) if cache is not None else None,
        references=refs,
    )


def make_score_fn(setup: ScoringSetup, program: Program, batch: int) -> ScoreFn:
    """The meta-validation fitness of :mod:`discover.searches.update_rules.search` (its Scorer) as ``score(programs)``."""
    from discover.searches.update_rules import search
    from envs import tasks as task_registry
    from envs.baselines import adamw_reference

    if setup.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {setup.seeds}")
    tasks = [search.with_steps(task_registry.get_task(t) if isinstance(t, str) else t, setup.steps)
             for t in setup.tasks]
    if not tasks:
        raise ValueError("at least one meta-validation task is needed")
    refs = dict(setup.references or {})
    cache = setup.reference_cache or pathlib.Path("checkpoints") / ".baselines.json"
    for task in tasks:
        if task.name not in refs:
            refs[task.name] = adamw_reference(task, seeds=setup.seeds, cache_path=cache)
    scorer = search.Scorer(tasks=tasks, references=refs, seeds=setup.seeds, lr_multipliers=setup.lr_multipliers,
                           worst=setup.worst, batch=batch, max_len=max(8, len(program)),
                           n_state=max(1, len(program.state)), needs_hessian=program.reads_h)

    def score(programs):
        scores = scorer.score(programs)
        # a diverged candidate (worst fitness on some task) is never an acceptable simplification
        return np.where(scores.nonfinite | (scores.fitness >= setup.worst), np.inf, scores.fitness)

    return score


def simplified_program_text(result: SimplifyResult, origin: str, scoring: str) -> str:
    header = [
        (f"# Simplified by `discover simplify` from {origin}: {len(result.original)} -> "
         f"{len(result.program)} statements."),
        (f"# Fitness (val loss / tuned AdamW's, lower is better) {_fmt(result.fitness_original)} -> "
         f"{_fmt(result.fitness_final)} (tolerance {result.tolerance:g})."),
        f"# Scored on: {scoring}.",
    ]
    return "\n".join(header) + "\n" + str(result.program)


def run_simplify(source, *, tolerance: float = DEFAULT_TOLERANCE, tasks: Sequence | None = None,
                 seeds: int | None = None, steps: int | None = None,
                 lr_multipliers: Sequence[float] | None = None, batch: int = DEFAULT_BATCH,
                 max_rounds: int = 200, reference_cache: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None, tb: bool = True, console=None,
                 score: ScoreFn | None = None) -> tuple[Program, list[Step]]:
    """Simplify a program (a Program, a program file, or a search run directory's ``best.py``) and write
    ``simplify.md``, ``simplify.json`` and ``simplified.py`` into ``out_dir`` (default: the run directory,
    else a new ``checkpoints/simplify-<time>``), plus TensorBoard text/scalars under its ``tb/`` (``tb``).

    Scoring (unless ``score`` is given): the meta-validation fitness of :mod:`discover.searches.update_rules.search` on ``tasks``
    (names or Task objects; default: the run's funnel tasks, else ``mlp_regression_metaval``), ``steps``
    training steps (default: the run's / each task's), ``seeds`` seeds, lr = tuned AdamW lr x
    ``lr_multipliers``. ``console``: a rich Console for the step table. Bad input raises
    :class:`discover.infra.config.ConfigError` (one line)."""
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ConfigError(f"must be a finite number >= 0, got {tolerance}", key="tolerance")
    for key, value in (("batch", batch), ("seeds", seeds), ("steps", steps)):
        if value is not None and value < 1:
            raise ConfigError(f"must be >= 1, got {value}", key=key)
    program, run = resolve_source(source)
    setup = scoring_setup(run, tasks=tasks, seeds=seeds, steps=steps, lr_multipliers=lr_multipliers,
                          reference_cache=reference_cache)
    scoring = setup.describe() if score is None else "the given scorer"
    if score is None:
        try:
            score = make_score_fn(setup, program, batch)
        except ValueError as err:  # e.g. an unknown task name
            raise ConfigError(str(err), key="tasks") from None
    try:
        result = simplify(program, score, tolerance=tolerance, batch=batch, max_rounds=max_rounds)
    except ValueError as err:
        raise ConfigError(f"{err} ({scoring})", source=None if isinstance(source, Program) else str(source)) from None
    if out_dir is not None:
        out = RunDir(pathlib.Path(out_dir))
    elif run is not None:
        out = run
    else:
        out = RunDir.create(root="checkpoints", name="simplify", config_yaml=f"# discover simplify\n"
                            f"tolerance: {tolerance}\n")
    origin = str(run.path) if run is not None else (str(source) if not isinstance(source, Program)
                                                     else f"program '{program.name}'")
    markdown = report_markdown(result, scoring)
    out.write_text("simplify.md", markdown)
    out.write_text("simplified.py", simplified_program_text(result, origin, scoring))
    out.write_json("simplify.json", {
        "source": origin, "scoring": scoring, "tolerance": tolerance, "threshold": result.threshold,
        "fitness_original": result.fitness_original, "fitness_final": result.fitness_final,
        "statements_original": len(result.original), "statements_final": len(result.program),
        "evaluations": result.evaluations, "original": str(result.original), "simplified": str(result.program),
        "steps": [s.to_json() for s in result.steps],
    })
    if tb:
        with TBLogger(out) as logger:
            logger.text("simplify/report", markdown, 0)
            accepted = [s for s in result.steps if s.accepted]
            logger.scalars(0, {"simplify/fitness": result.fitness_original,
                               "simplify/statements": len(result.original)})
            for n, s in enumerate(accepted, 1):
                logger.scalars(n, {"simplify/fitness": s.fitness_after, "simplify/statements": s.statements_after})
    if console is not None:
        console.print(console_table(result))
        console.print(f"wrote {out.file('simplify.md')} and {out.file('simplified.py')}", highlight=False)
    return result.program, result.steps


__all__ = [
    "Edit",
    "ScoringSetup",
    "SimplifyResult",
    "Step",
    "candidate_edits",
    "canonicalize",
    "coalesce_copies",
    "complexity",
    "fold_constant_statements",
    "fold_identities",
    "fold_unwritten_state",
    "identity_fold",
    "propagate_copies",
    "remove_dead_code",
    "rounded_constants",
    "run_simplify",
    "simplify",
]
