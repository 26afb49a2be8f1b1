"""Update-rule programs: a restricted Python function, parsed with `ast` (never eval/exec/pickle).

A program reads the inputs ``g`` (gradient), ``w`` (parameter), ``lr`` (learning rate), ``t`` (step,
from 1) and, where the search space turns it on, ``h`` (a diagonal Hessian estimate), plus its state
variables (every other parameter of the function; they start at zero). It returns
``update, *state`` with the state in the order of the parameters; the caller does ``w <- w - update``::

    def adamw(g, w, m, v, lr, t):
        m = interp(g, m, 0.9)
        g2 = square(g)
        v = interp(g2, v, 0.999)
        mh = m / (1.0 - pow(0.9, t))
        ...
        return update, m, v

The canonical form has one op per statement; nested expressions are flattened by :func:`parse` into
fresh temporaries ``_1, _2, ...``; ``str(program)`` prints the canonical form and round-trips.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re

from discover.language.ops import INFIX, OP_BY_NAME

INPUTS = ("g", "w", "lr", "t", "h")
MAX_LEN = 32  # default bound on the number of statements
FLOAT32_MAX = 3.4028234663852886e38

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}
_INFIX_OF = {v: k for k, v in INFIX.items()}


class ProgramError(ValueError):
    """Any defect of a program's text, with its line and (1-based) column."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        self.message, self.line, self.col = message, line, col
        where = f"line {line}:{col}: " if line is not None else ""
        super().__init__(where + message)


Arg = "str | float"


@dataclasses.dataclass(frozen=True)
class Statement:
    """``dst = op(*args)``; an arg is a variable name (str) or a float constant."""

    dst: str
    op: str
    args: tuple

    def __str__(self) -> str:
        a = [_fmt(x) for x in self.args]
        if self.op == "copy":
            return f"{self.dst} = {a[0]}"
        if self.op == "neg" and isinstance(self.args[0], str):  # `-2.0` would re-parse as a constant
            return f"{self.dst} = -{a[0]}"
        if self.op in _INFIX_OF:
            return f"{self.dst} = {a[0]} {_INFIX_OF[self.op]} {a[1]}"
        return f"{self.dst} = {self.op}({', '.join(a)})"


def backward_live(statements, outputs) -> tuple[list[bool], set[str]]:
    """(whether each statement's value reaches a name in ``outputs`` at the end, the names read at entry):
    one backward pass over straight-line ``dst = op(args)`` statements, names possibly reassigned."""
    needed, live = set(outputs), [False] * len(statements)
    for i in range(len(statements) - 1, -1, -1):
        st = statements[i]
        if st.dst in needed:
            live[i] = True
            needed.discard(st.dst)
            needed |= {a for a in st.args if isinstance(a, str)}
    return live, needed


def _fmt(x) -> str:
    return x if isinstance(x, str) else repr(float(x))


@dataclasses.dataclass(frozen=True)
class Program:
    """A parsed, validated update rule: ``name(params) -> (returns[0], *state)``."""

    name: str
    params: tuple[str, ...]
    statements: tuple[Statement, ...]
    update: str  # the variable returned as the update

    @property
    def state(self) -> tuple[str, ...]:
        return tuple(p for p in self.params if p not in INPUTS)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(p for p in self.params if p in INPUTS)

    @property
    def reads_h(self) -> bool:
        return any("h" in s.args for s in self.statements) or self.update == "h"

    @property
    def constants(self) -> tuple[float, ...]:
        return tuple(a for s in self.statements for a in s.args if not isinstance(a, str))

    def __len__(self) -> int:
        return len(self.statements)

    def __str__(self) -> str:
        lines = [f"def {self.name}({', '.join(self.params)}):"]
        lines += [f"    {s}" for s in self.statements]
        lines.append(f"    return {', '.join((self.update,) + self.state)}")
        return "\n".join(lines) + "\n"

    def replace(self, **kw) -> Program:
        return dataclasses.replace(self, **kw)


# --- parsing ---------------------------------------------------------------------------------------
def _err(node, message) -> ProgramError:
    return ProgramError(message, getattr(node, "lineno", None), getattr(node, "col_offset", -1) + 1)


class _Flattener:
    """Turns one function body into canonical statements (one op each)."""

    def __init__(self, used_names: set[str]):
        self.used = set(used_names)
        self.counter = 0
        self.out: list[tuple[Statement, ast.AST]] = []

    def fresh(self) -> str:
        while True:
            self.counter += 1
            name = f"_{self.counter}"
            if name not in self.used:
                self.used.add(name)
                return name

    def constant(self, node) -> float | None:
        """A literal number (possibly negated), or None."""
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                kind = "strings" if isinstance(v, str) else f"{type(v).__name__} constants"
                raise _err(node, f"{kind} are not allowed in programs")
            try:
                v = float(v)
            except OverflowError:  # an integer literal beyond float range
                raise _err(node, "non-finite constant: integer literal too large for a float") from None
            if not math.isfinite(v):
                raise _err(node, f"non-finite constant {node.value!r}")
            if abs(v) > FLOAT32_MAX:  # programs run in float32: this would be inf there
                raise _err(node, f"non-finite constant {node.value!r} (beyond the float32 range)")
            return v
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.constant(node.operand)
            if inner is not None:
                return -inner if isinstance(node.op, ast.USub) else inner
        return None

    def operand(self, node):
        """An argument: a name, a constant, or a nested expression written to a temporary."""
        c = self.constant(node)
        if c is not None:
            return c
        if isinstance(node, ast.Name):
            return node.id
        return self.emit(None, node)

    def emit(self, dst: str | None, node) -> str:
        op, args = self.expression(node)  # nested temporaries first, so they number in order
        dst = dst or self.fresh()
        self.out.append((Statement(dst, op, tuple(args)), node))
        return dst

    def expression(self, node) -> tuple[str, list]:
        c = self.constant(node)
        if c is not None:
            return "copy", [c]
        if isinstance(node, ast.Name):
            return "copy", [node.id]
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise _err(node, f"operator {type(node.op).__name__} is not allowed (use + - * / **)")
            return _BINOPS[type(node.op)], [self.operand(node.left), self.operand(node.right)]
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return "neg", [self.operand(node.operand)]
            if isinstance(node.op, ast.UAdd):
                return "copy", [self.operand(node.operand)]
            raise _err(node, f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise _err(node, "only plain op calls like sqrt(x) are allowed (no attributes)")
            name = node.func.id
            if name not in OP_BY_NAME:
                raise _err(node.func, f"unknown op '{name}'")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise _err(node, f"op '{name}' takes positional arguments only")
            arity = OP_BY_NAME[name].arity
            if len(node.args) != arity:
                raise _err(node, f"op '{name}' takes {arity} argument(s), got {len(node.args)}")
            return name, [self.operand(a) for a in node.args]
        raise _err(node, f"{_describe(node)} is not allowed in programs")


def _describe(node) -> str:
    names = {
        ast.Attribute: "attribute access", ast.Subscript: "subscripting", ast.Lambda: "lambda",
        ast.IfExp: "a conditional expression", ast.Compare: "a comparison", ast.BoolOp: "a boolean operator",
        ast.Tuple: "a tuple", ast.List: "a list", ast.Dict: "a dict", ast.Set: "a set",
        ast.ListComp: "a comprehension", ast.GeneratorExp: "a generator", ast.JoinedStr: "an f-string",
        ast.For: "a loop", ast.While: "a loop", ast.If: "an if statement", ast.Import: "an import",
        ast.ImportFrom: "an import", ast.With: "a with statement", ast.Try: "a try statement",
        ast.FunctionDef: "a nested function", ast.ClassDef: "a class", ast.Global: "global",
        ast.Nonlocal: "nonlocal", ast.Expr: "an expression statement", ast.Delete: "del",
        ast.Assert: "assert", ast.Raise: "raise", ast.AnnAssign: "an annotated assignment",
        ast.NamedExpr: "the walrus operator", ast.Await: "await", ast.Yield: "yield",
    }
    return names.get(type(node), type(node).__name__)


# CPython before 3.11.8 / 3.12.1 (gh-106905) can raise a spurious SystemError "AST constructor recursion depth
# mismatch" from ast.parse when another thread runs Python code meanwhile (a search's background checkpoint and
# TensorBoard threads): it killed an update-rule search at generation 20. The text is fine; parsing again works.
AST_PARSE_TRIES = 3


def parse_python(text: str) -> ast.Module:
    """``ast.parse(text)``, tried again on CPython's spurious SystemError (gh-106905)."""
    for attempt in range(AST_PARSE_TRIES):
        try:
            return ast.parse(text)
        except SystemError:
            if attempt == AST_PARSE_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def parse(text: str, *, max_len: int = MAX_LEN, allow_h: bool = True) -> Program:
    """Parse and validate a program; raises :class:`ProgramError` (with line:col) for every defect."""
    if not isinstance(text, str):
        raise ProgramError(f"program text must be a string, got {type(text).__name__}")
    try:
        tree = parse_python(text)
    except SyntaxError as e:
        if e.lineno is None:  # null bytes: the parser gives no location
            raise _bad_character(text) from None
        raise ProgramError(f"syntax error: {e.msg}", e.lineno, max(e.offset or 1, 1)) from None
    except ValueError:  # lone surrogates (null bytes on some Python versions): no location either
        raise _bad_character(text) from None
    except (MemoryError, RecursionError):  # absurd nesting (e.g. thousands of chained operators)
        lines = _lines(text)
        longest = max(range(len(lines)), key=lambda k: len(lines[k]))
        raise ProgramError("expression nested too deeply", longest + 1, 1) from None
    try:
        return _parse_tree(tree, max_len=max_len, allow_h=allow_h)
    except ProgramError as e:  # ast columns count UTF-8 bytes; report characters
        raise _in_characters(e, text) from None


def _bad_character(text: str) -> ProgramError:
    i = next((i for i, ch in enumerate(text) if ch == "\0" or "\ud800" <= ch <= "\udfff"), None)
    if i is None:
        return ProgramError("cannot parse program as Python source", 1, 1)
    what = "a null byte" if text[i] == "\0" else f"character U+{ord(text[i]):04X}"
    return ProgramError(f"{what} is not allowed in programs", *_line_col(text, i))


def _lines(text: str) -> list[str]:
    return re.split(r"\r\n|\r|\n", text)  # the line breaks of Python's tokenizer (not str.splitlines)


def _line_col(text: str, index: int) -> tuple[int, int]:
    before = _lines(text[:index])
    return len(before), len(before[-1]) + 1


def _in_characters(e: ProgramError, text: str) -> ProgramError:
    lines = _lines(text)
    if e.line is None or e.col is None or not 1 <= e.line <= len(lines):
        return e
    prefix = lines[e.line - 1].encode("utf-8", "surrogatepass")[: e.col - 1]
    return ProgramError(e.message, e.line, len(prefix.decode("utf-8", "ignore")) + 1)


def _parse_tree(tree: ast.Module, *, max_len: int, allow_h: bool) -> Program:
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    others = [n for n in tree.body if not isinstance(n, ast.FunctionDef)]
    if others:
        raise _err(others[0], f"{_describe(others[0])} outside the function is not allowed")
    if not funcs:
        raise ProgramError("no function found: a program is one `def name(g, w, ..., lr, t):`", 1, 1)
    if len(funcs) > 1:
        raise _err(funcs[1], "a program is exactly one function; found several")
    fn = funcs[0]
    try:
        return _parse_function(fn, max_len=max_len, allow_h=allow_h)
    except RecursionError:
        raise _err(fn, "expression nested too deeply") from None


def _parse_function(fn: ast.FunctionDef, *, max_len: int, allow_h: bool) -> Program:
    a = fn.args
    if fn.decorator_list:
        raise _err(fn.decorator_list[0], "decorators are not allowed")
    if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults or a.kw_defaults:
        raise _err(fn, "parameters must be plain names (no defaults, *args, **kwargs or keyword-only)")
    if fn.returns is not None or any(p.annotation is not None for p in a.args):
        raise _err(fn, "annotations are not allowed")
    params = [p.arg for p in a.args]
    for p in a.args:
        if p.arg in OP_BY_NAME:
            raise _err(p, f"parameter '{p.arg}' has the name of an op")
        if p.arg == "h" and not allow_h:
            raise _err(p, "input 'h' (Hessian estimate) is not available in this search space")
    if len(set(params)) != len(params):
        raise _err(fn, "duplicate parameter names")
    if not fn.body or not isinstance(fn.body[-1], ast.Return):
        last = fn.body[-1] if fn.body else fn
        raise _err(last, "missing return: a program ends with `return update, *state`")

    assigned = {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)}
    flat = _Flattener(set(params) | assigned)
    for node in fn.body[:-1]:
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                raise _err(node, "assign to exactly one plain variable name per statement")
            _check_target(node.targets[0], params)
            flat.emit(node.targets[0].id, node.value)
        elif isinstance(node, ast.AugAssign):
            if not isinstance(node.target, ast.Name) or type(node.op) not in _BINOPS:
                raise _err(node, "augmented assignment must be `x += expr` (+ - * / **) on a name")
            _check_target(node.target, params)
            rhs = ast.BinOp(left=ast.Name(id=node.target.id, ctx=ast.Load()), op=node.op, right=node.value)
            ast.copy_location(rhs, node)
            ast.copy_location(rhs.left, node.target)
            flat.emit(node.target.id, rhs)
        elif isinstance(node, ast.Return):
            raise _err(node, "return must be the last statement")
        else:
            raise _err(node, f"{_describe(node)} is not allowed in programs")

    ret = fn.body[-1]
    state = [p for p in params if p not in INPUTS]
    items = ret.value.elts if isinstance(ret.value, ast.Tuple) else ([ret.value] if ret.value else [])
    if not items:
        raise _err(ret, "malformed return: expected `return update, *state`")
    names = []
    for i, item in enumerate(items[1:]):
        if not isinstance(item, ast.Name):
            raise _err(item, "state in the return must be plain names")
        names.append(item.id)
    if names != state:
        for s in state:
            if s not in names:
                raise _err(ret, f"state '{s}' is not returned (return update, {', '.join(state)})")
        extra = [n for n in names if n not in state]
        if extra:
            raise _err(ret, f"'{extra[0]}' is returned but is not a state parameter")
        raise _err(ret, f"state returned out of order: expected return update, {', '.join(state)}")
    first = items[0]
    if isinstance(first, ast.Name):
        update = first.id
    else:
        update = "update" if "update" not in flat.used else flat.fresh()
        flat.used.add(update)
        flat.emit(update, first)

    statements = [s for s, _ in flat.out]
    _check_definitions(flat.out, params, update, ret)
    if len(statements) > max_len:
        node = flat.out[max_len][1]
        raise _err(node, f"program has {len(statements)} statements; the limit is {max_len}")
    return Program(name=fn.name, params=tuple(params), statements=tuple(statements), update=update)


def _check_target(target: ast.Name, params) -> None:
    if target.id in OP_BY_NAME:
        raise _err(target, f"cannot assign to '{target.id}': it is an op name")
    if target.id in INPUTS:
        raise _err(target, f"cannot assign to the input '{target.id}'")


def _check_definitions(stmts, params, update, ret) -> None:
    defined = set(params)
    for s, node in stmts:
        for a in s.args:
            if isinstance(a, str) and a not in defined:
                raise _err(_find_name(node, a), _undefined(a))
        defined.add(s.dst)
    if update not in defined:
        raise _err(ret, _undefined(update))


def _undefined(name: str) -> str:
    if name in INPUTS:
        return f"input '{name}' is used but is not a parameter of the function"
    return f"undefined variable '{name}'"


def _find_name(node, name):
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id == name:
            return n
    return node
