"""Program rewrites: pure ``Program -> Program`` functions that make an update rule shorter (no scoring, no I/O).

* **Complexity** (:func:`complexity`) says what "simpler" means: fewer statements, then cheaper ops, then
  shorter constants.
* **Folds** (:func:`canonicalize`) are algebraic identities that hold up to float32 rounding and the
  protected numerics' edge cases: dead code, constant statements evaluated (``1.0 - 0.9``), ``x * 1``,
  ``x + 0``, ``x / abs(x) -> sign(x)``, ``sqrt(square(x)) -> abs(x)``, ``sign(arctan(x)) -> sign(x)``,
  ``interp(x, x, a) -> x``, copy propagation, a state variable that is never written (always 0)...
* **Edits** (:func:`candidate_edits`) change what the program computes: bypass a statement
  (``x = op(a, b) -> x = a``, which is how ``arcsin(x) -> x`` or "drop ``+ 0.001 * w``" happen), swap an
  op for a simpler one (``tanh -> sign``, ``pow(x, 0.49) -> sqrt(x)``), round a constant
  (``0.899 -> 0.9``, ``0.9987 -> 0.999``, ``1e-8 -> 0``). Each edit is returned canonicalized and simpler
  than its program; whether it is kept is for a scorer to say (``discover simplify``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Sequence

import numpy as np

from discover.language import ops
from discover.language.analysis import remove_dead_code, structural_hash
from discover.language.program import Program, ProgramError, Statement, parse

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


def _scaled(st: Statement | None) -> tuple[float, str] | None:
    """``(c, x)`` when ``st`` computes ``c * x`` (a constant times a name)."""
    if st is None or st.op != "mul":
        return None
    for c, x in ((st.args[0], st.args[1]), (st.args[1], st.args[0])):
        if _is_const(c) and _is_name(x):
            return float(c), x
    return None


def _as_interp(stmts: Sequence[Statement], i: int) -> Statement | None:
    """``c*x + (1-c)*y`` written long-hand (an exponential moving average) as ``interp(y, x, c)``."""
    st = stmts[i]
    left, right = (_scaled(_inner(stmts, i, arg)) for arg in st.args)
    if left is None or right is None or abs(left[0] + right[0] - 1.0) > 1e-6 or left[1] == right[1]:
        return None
    (c, x), (_, y) = left, right
    return _stmt(st.dst, "interp", y, x, c)  # interp(y, x, c) = (1 - c) * y + c * x


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
        mixed = _as_interp(stmts, i)
        if mixed is not None:
            return mixed
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


__all__ = [
    "Edit",
    "candidate_edits",
    "canonicalize",
    "coalesce_copies",
    "complexity",
    "constant_cost",
    "drop_self_copies",
    "fold_constant_statements",
    "fold_identities",
    "fold_unwritten_state",
    "identity_fold",
    "op_cost",
    "propagate_copies",
    "renumber_temporaries",
    "rounded_constants",
    "single_assignment",
]
