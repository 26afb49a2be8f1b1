"""Typed YAML experiment configs, checked by pydantic, with errors that name the file, the line and the key.

A schema is a (nested, frozen) dataclass with defaults. Field metadata: ``min`` / ``max`` (inclusive; on each
list element / dict value too), ``choices`` (may be a lazy registry, read at load time), ``help`` and
``renamed_from`` (an old key, still read with a one-line ``warning:`` on stderr); ``__post_init__`` may raise
``ValueError`` for cross-field checks. A ``pydantic.TypeAdapter`` over a mirror of the schema (strict
scalars, bounds, choices, ``extra="forbid"``) checks a file plus its ``--set`` overrides; its errors are
mapped back to YAML lines. Anchors/aliases and nesting deeper than ``MAX_DEPTH`` are refused. Every
``ConfigError`` is one line: ``<file>:<line>: <key>: <what>`` or ``--set <key>: <what>``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import pydantic
import yaml
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

__all__ = ["ConfigError", "config_reference", "config_to_dict", "dump_config", "flat_config", "load_config",
           "peek_kind", "suggest"]

OVERRIDE_SOURCE = "--set"
MAX_DEPTH = 32  # lists/mappings nested deeper than this are refused
_SEQUENCES = (list, tuple, collections.abc.Sequence)


class ConfigError(Exception):
    """A user-facing configuration error whose ``str()`` is one line: ``file:line: key.path: what``."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None, key: str | None = None):
        self.message = " ".join(str(message).split())  # one line, whatever the cause said
        self.source, self.line, self.key = source, line, key
        super().__init__(self.message)

    def __str__(self) -> str:
        if self.source == OVERRIDE_SOURCE and self.line is None and self.key:
            parts = [f"{OVERRIDE_SOURCE} {self.key}"]  # reads like the command line: --set a.b
        else:
            parts = [f"{self.source}:{self.line}" if self.line is not None else self.source, self.key]
        return ": ".join(p for p in [*parts, self.message] if p)


_Where = collections.namedtuple("_Where", "source line", defaults=(None,))  # a file line, or --set


@dataclasses.dataclass
class _Node:
    """A YAML value: a scalar, a list of nodes, or a dict key -> (where the key is written, node)."""

    value: Any
    where: _Where
    synthetic: bool = False  # a mapping made up by `--set a.b.c=...`: a dict field keeps its other keys
    renamed: dict = dataclasses.field(default_factory=dict)  # mapping key -> the old name it is written as


def _error(where: _Where, key: str | None, message: str) -> ConfigError:
    return ConfigError(message, source=where.source, line=where.line, key=key or None)


# YAML 1.1 reads `1e-3` (no dot) as text; read it as a float (and write such text quoted).
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases and nesting deeper than MAX_DEPTH while composing."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigError("YAML anchors/aliases are not supported", line=event.start_mark.line + 1)
        nested = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if nested and self._depth >= MAX_DEPTH:
            raise ConfigError(f"YAML nested deeper than {MAX_DEPTH} levels", line=event.start_mark.line + 1)
        self._depth += nested
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= nested


_Dumper = type("_Dumper", (yaml.SafeDumper,), {})
for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


def _compose(text: str, source: str, *, file_lines: bool) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except ConfigError as exc:  # refused by _Loader
        raise ConfigError(exc.message, source=source, line=exc.line if file_lines else None) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        context = getattr(exc, "context", None)
        what = f"invalid YAML: {context + ', ' if context else ''}{getattr(exc, 'problem', None) or exc}"
        raise ConfigError(what, source=source, line=mark.line + 1 if mark and file_lines else None) from None


def _to_tree(node: yaml.Node, source: str, file_lines: bool, key_path: str = "") -> _Node:
    """Our tree of a composed YAML node, scalars built by the safe constructor."""
    where = _Where(source, node.start_mark.line + 1 if file_lines else None)
    constructor = yaml.constructor.SafeConstructor()
    if isinstance(node, yaml.ScalarNode):
        try:
            return _Node(constructor.construct_object(node), where)
        except yaml.YAMLError as exc:
            raise _error(where, key_path, f"invalid YAML value: {getattr(exc, 'problem', exc)}") from None
    if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
        raise _error(where, key_path, f"invalid YAML value: tag {node.tag!r} is not allowed")
    if isinstance(node, yaml.SequenceNode):
        return _Node([_to_tree(v, source, file_lines, f"{key_path}[{i}]") for i, v in enumerate(node.value)], where)
    items: dict = {}
    for key_node, value_node in node.value:
        key_where = _Where(source, key_node.start_mark.line + 1 if file_lines else None)
        if not isinstance(key_node, yaml.ScalarNode):
            raise _error(key_where, key_path, "a key must be a plain name, not a list or mapping")
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise _error(key_where, key_path, "YAML merge keys (<<) are not supported")
        key = constructor.construct_object(key_node)
        if key in items:
            raise _error(key_where, _join(key_path, key), "duplicate key (already set above)")
        items[key] = (key_where, _to_tree(value_node, source, file_lines, _join(key_path, key)))
    return _Node(items, where)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _parse_override(raw: str) -> _Node:
    """``key.sub=value`` as a tree: synthetic mappings down to the value (parsed as YAML)."""
    key_text, sep, value_text = raw.partition("=")
    key_text = key_text.strip()
    if not sep or not key_text:
        raise ConfigError(f"expected key.sub=value, got {raw!r}", source=OVERRIDE_SOURCE)
    parts = [p.strip() for p in key_text.split(".")]
    if not all(parts):
        raise ConfigError(f"malformed key path {key_text!r}", source=OVERRIDE_SOURCE)
    where = _Where(OVERRIDE_SOURCE)
    try:
        node = _compose(value_text, OVERRIDE_SOURCE, file_lines=False)
        tree = _Node(None, where) if node is None else _to_tree(node, OVERRIDE_SOURCE, False, key_text)  # `k=`
    except ConfigError as exc:
        raise ConfigError(exc.message, source=OVERRIDE_SOURCE, key=key_text) from None
    for part in reversed(parts):
        tree = _Node({part: (where, tree)}, where, synthetic=True)
    return tree


def _merge(node: _Node, patch: _Node) -> None:
    """Sets the keys of ``patch`` (an override's synthetic mappings down to its value) in ``node``."""
    for key, (where, child) in patch.value.items():
        node.renamed.pop(key, None)
        node.renamed.update({key: patch.renamed[key]} if key in patch.renamed else {})
        if child.synthetic and key in node.value and isinstance(node.value[key][1].value, dict):
            _merge(node.value[key][1], child)
        else:
            node.value[key] = (where, child)


def _unoptional(tp: Any) -> tuple[bool, Any]:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()
    if args and (len(args) != 2 or type(None) not in args):
        raise TypeError(f"config schema: unsupported union {tp!r} (only Optional[X])")
    return (True, next(a for a in args if a is not type(None))) if args else (False, tp)


def _type_name(tp: Any) -> str:
    optional, tp = _unoptional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if optional:
        return f"{_type_name(tp)} or null"
    if origin in _SEQUENCES:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "mapping"
    return "any value" if tp is Any else getattr(tp, "__name__", str(tp))


_hints = functools.lru_cache(maxsize=256)(typing.get_type_hints)


def _section(tp: Any) -> type | None:
    """The dataclass a field of type ``tp`` (``X`` or ``X | None``) holds, else None."""
    tp = _unoptional(tp)[1]
    return tp if dataclasses.is_dataclass(tp) else None


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _rename_keys(cls: type, node: _Node, path: str) -> None:
    """Moves keys written under a field's ``renamed_from`` name to its name (with a warning), in place."""
    for field in dataclasses.fields(cls):
        old = field.metadata.get("renamed_from")
        if old is not None and old in node.value:
            key_where = node.value[old][0]
            if field.name in node.value:
                raise _error(key_where, _join(path, old),
                             f"'{old}' is the old name of '{field.name}'; set only '{field.name}'")
            at = f"{key_where.source}:{key_where.line}" if key_where.line is not None else key_where.source
            print(f"warning: {at}: '{_join(path, old)}' is renamed '{_join(path, field.name)}'", file=sys.stderr)
            node.value = {(field.name if k == old else k): v for k, v in node.value.items()}
            node.renamed[field.name] = old
        sub, entry = _section(_hints(cls)[field.name]), node.value.get(field.name)
        if sub is not None and entry is not None and isinstance(entry[1].value, dict):
            _rename_keys(sub, entry[1], _join(path, node.renamed.get(field.name, field.name)))


def _check_choice(choices: Sequence, value: Any) -> Any:
    if value not in list(choices):  # a lazy registry is read now, not when the schema was imported
        raise PydanticCustomError("choice", "not one of the allowed values")
    return value


def _mirror(tp: Any, meta: typing.Mapping) -> Any:
    """The pydantic type that checks a value of schema type ``tp`` with field metadata ``meta``."""
    optional, tp = _unoptional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        out = _mirror_section(tp)
    elif origin in _SEQUENCES:
        if origin is tuple and args and args[1:] != (Ellipsis,):
            raise TypeError(f"config schema: unsupported field type {tp!r} (use tuple[X, ...])")
        out = (tuple[_mirror(args[0], meta), ...] if origin is tuple
               else list[_mirror(args[0] if args else Any, meta)])
    elif origin is dict:
        out = dict[_mirror((args or (Any,))[0], {}), _mirror(args[1] if args else Any, meta)]
    elif tp in (bool, int, float, str):
        bounds = {name: meta[key] for key, name in (("min", "ge"), ("max", "le")) if key in meta}
        check = pydantic.AfterValidator(functools.partial(_check_choice, meta.get("choices")))
        choices = [check] if meta.get("choices") is not None else []
        out = Annotated[(tp, pydantic.Strict(), *([pydantic.Field(**bounds)] if bounds else []), *choices)]
    elif origin is typing.Literal or tp is Any:
        out = tp
    else:
        raise TypeError(f"config schema: unsupported field type {tp!r}")
    return out | None if optional else out


@functools.lru_cache(maxsize=256)
def _mirror_section(cls: type) -> type:
    hints = _hints(cls)
    fields = {f.name: _mirror(hints[f.name], f.metadata) for f in dataclasses.fields(cls) if f.init}
    mirror = TypedDict(f"{cls.__name__}Keys", fields, total=False)  # keys not given keep their defaults
    # a schema may set its own, e.g. `__pydantic_config__ = {"extra": "ignore"}` to read one section of a file
    mirror.__pydantic_config__ = pydantic.ConfigDict({"extra": "forbid", **getattr(cls, "__pydantic_config__", {})})
    return mirror


_adapter = functools.lru_cache(maxsize=64)(lambda cls: pydantic.TypeAdapter(_mirror_section(cls)))


def _locate(cls: type, root: _Node, loc: Sequence) -> tuple[_Where, _Where | None, str, Any, typing.Mapping]:
    """For a pydantic ``loc``: where its value and its key are written, its path as the user wrote it, and
    its schema type and field metadata (the type is the parent dataclass for an unknown key)."""
    node, key_where, path, tp, meta = root, None, "", cls, {}
    for part in loc:
        tp = _unoptional(tp)[1]
        origin, args = typing.get_origin(tp), typing.get_args(tp) or (Any, Any)
        field = next((f for f in dataclasses.fields(tp) if f.name == part), None) if _section(tp) else None
        if field is not None:
            tp, meta = _hints(tp)[part], field.metadata
        elif origin in _SEQUENCES or origin is dict:
            tp = args[0] if origin in _SEQUENCES or part == "[key]" else args[1]
        if isinstance(node.value, dict) and part in node.value:
            path = _join(path, node.renamed.get(part, part))
            key_where, node = node.value[part]
        elif isinstance(node.value, list) and isinstance(part, int) and part < len(node.value):
            key_where, node, path = None, node.value[part], f"{path}[{part}]"
        elif part != "[key]":
            path = _join(path, part)
    return node.where, key_where, path, _unoptional(tp)[1], meta


def _show(value: Any) -> str:
    if value is None or isinstance(value, (bool, list, dict)):
        return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else _yaml_scalar(value)
    return repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."


def suggest(word: Any, options: Iterable[Any]) -> str:
    """``"did you mean 'x'?"`` for a close match among ``options``, else the list of valid ones."""
    options = [str(o) for o in options]
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid: " + ", ".join(options) if options else "no keys are allowed here"


def _message(error: dict, tp: Any, meta: typing.Mapping) -> str:
    """One line for a pydantic error at a value of schema type ``tp`` (field metadata ``meta``)."""
    loc, kind, got = error["loc"], error["type"], f"got {_show(error['input'])}"
    if kind in ("extra_forbidden", "invalid_key"):  # tp: the dataclass of the section
        return f"unknown key; {suggest(loc[-1], [f.name for f in dataclasses.fields(tp) if f.init])}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"must be {'>=' if kind[0] == 'g' else '<='} {meta['min' if kind[0] == 'g' else 'max']}, {got}"
    if kind in ("choice", "literal_error"):
        allowed = list(meta["choices"]) if kind == "choice" else typing.get_args(tp)
        close = difflib.get_close_matches(str(error["input"]), [str(c) for c in allowed], n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close and kind == "choice" else ""
        return f"must be one of {', '.join(repr(c) for c in allowed)}, {got}{hint}"
    if loc[-1:] == ("[key]",):
        return f"keys must be names (str), {got}"
    if dataclasses.is_dataclass(tp):
        return f"expected a mapping of settings, {got}"
    if tp is str:
        return f"expected str, {got} (quote it to make it text)"
    return f"expected {'bool (true/false)' if tp is bool else _type_name(tp)}, {got}"


def _plain(node: _Node) -> Any:
    if isinstance(node.value, list):
        return [_plain(i) for i in node.value]
    return {k: _plain(v) for k, (_, v) in node.value.items()} if isinstance(node.value, dict) else node.value


def _validate(cls: type, tree: _Node) -> dict:
    """The tree's values checked by pydantic; on errors, the first one (by line) as a ConfigError."""
    try:
        return _adapter(cls).validate_python(_plain(tree))
    except pydantic.ValidationError as exc:
        found = []
        for n, error in enumerate(exc.errors(include_url=False)):
            where, key_where, path, tp, meta = _locate(cls, tree, error["loc"])
            if error["type"] in ("extra_forbidden", "invalid_key") or error["loc"][-1:] == ("[key]",):
                where = key_where or where  # a bad key: its own line
            found.append((where.line is None, where.line or 0, n, _error(where, path, _message(error, tp, meta))))
        raise min(found, key=lambda t: t[:3])[3] from None


def _build(cls: type, node: _Node, data: dict, path: str, base: Any, anchor: _Where | None) -> Any:
    """An instance of ``cls`` from validated ``data``; keys it does not set keep ``base``'s values (or the
    defaults). ``anchor`` is where the section's key is written: cross-field errors point there."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        key_where, child = node.value[key]
        field_base = getattr(base, key) if base is not None else _field_default(fields[key])
        sub = _section(_hints(cls)[key])
        if sub is not None and value is not None:
            value = _build(sub, child, value, _join(path, node.renamed.get(key, key)),
                           field_base if isinstance(field_base, sub) else None, key_where)
        elif child.synthetic and isinstance(field_base, dict):
            value = {**field_base, **value}
        kwargs[key] = value
    for name, field in fields.items() if base is None else ():
        if name not in kwargs and field.default is dataclasses.MISSING is field.default_factory:
            raise _error(anchor or node.where, _join(path, name), "missing required key")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a schema's own __post_init__ cross-field check
        raise _error(anchor or node.where, path, str(exc)) from None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        what = {FileNotFoundError: "file not found", IsADirectoryError: "is a directory, not a YAML file",
                UnicodeDecodeError: "is not UTF-8 text"}.get(type(exc))
        raise ConfigError(what or f"cannot read: {getattr(exc, 'strerror', None) or exc}", source=path) from None


def _source_tree(path: str | os.PathLike | None, text: str | None) -> _Node:
    if text is None and path is None:
        return _Node({}, _Where("<defaults>"))
    source = str(path) if path is not None else "<string>"
    node = _compose(_read(source) if text is None else text, source, file_lines=True)
    tree = _Node({}, _Where(source, 1)) if node is None else _to_tree(node, source, True)  # empty: defaults
    if not isinstance(tree.value, dict):
        raise _error(tree.where, None, f"expected a mapping of settings at the top level, got {_show(_plain(tree))}")
    return tree


def load_config(schema_cls: type, path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                text: str | None = None) -> Any:
    """Reads ``path`` (or parses ``text``; ``path`` then only names it in messages), applies ``overrides``
    (``"key.sub=value"``, the value parsed as YAML, e.g. ``search.lrs=[0.1, 0.01]``) and validates it all
    against the schema; raises :class:`ConfigError` (one line) on any mistake."""
    tree = _source_tree(path, text)
    _rename_keys(schema_cls, tree, "")
    for raw in [overrides] if isinstance(overrides, str) else overrides:
        patch = _parse_override(raw)
        _rename_keys(schema_cls, patch, "")
        _merge(tree, patch)
    return _build(schema_cls, tree, _validate(schema_cls, tree), "", None, None)


def config_to_dict(instance: Any) -> Any:
    """Nested plain ``dict``/``list`` copy of a config instance (tuples become lists)."""
    if dataclasses.is_dataclass(instance) and not isinstance(instance, type):
        return {f.name: config_to_dict(getattr(instance, f.name)) for f in dataclasses.fields(instance)}
    if isinstance(instance, (list, tuple)):
        return [config_to_dict(v) for v in instance]
    return {k: config_to_dict(v) for k, v in instance.items()} if isinstance(instance, dict) else instance


def flat_config(instance: Any, sep: str = ".") -> dict[str, Any]:
    """``{"search.population": 64, "search.lrs": [0.001], ...}``: nested sections flattened, leaves untouched."""

    def walk(prefix: str, value: Any) -> dict[str, Any]:
        if isinstance(value, dict) and (value or not prefix) and all(isinstance(k, str) for k in value):
            return {flat: v for k, sub in value.items()
                    for flat, v in walk(f"{prefix}{sep}{k}" if prefix else k, sub).items()}
        return {prefix: value}

    return walk("", config_to_dict(instance))


def _yaml_scalar(value: Any) -> str:
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=math.inf, sort_keys=False,
                     allow_unicode=True).strip()
    return text[:-3].rstrip() if text.endswith("...") else text


def dump_config(instance: Any, comments: bool = True) -> str:
    """YAML text for a config instance (block style per section, flow style for lists/dicts), each field's
    ``help`` a ``#`` line above it with ``comments``; :func:`load_config` reads it back to an equal instance."""
    lines: list[str] = []

    def emit(obj: Any, pad: str) -> None:
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if comments:
                lines.extend(f"{pad}# {h}".rstrip() for h in str(field.metadata.get("help", "")).splitlines())
            if dataclasses.is_dataclass(value) and dataclasses.fields(value):
                lines.append(f"{pad}{field.name}:")
                emit(value, pad + "  ")
            else:
                lines.append(f"{pad}{field.name}: {_yaml_scalar(config_to_dict(value))}")  # {} for an empty one

    emit(instance, "")
    return "\n".join(lines) + "\n"


def config_reference(schema_cls: type) -> str:
    """Every key of a schema (dotted), its type (with bounds), default and help: an aligned table."""
    rows = [("KEY", "TYPE", "DEFAULT", "HELP")]

    def walk(cls: type, obj: Any, prefix: str) -> None:
        for field in dataclasses.fields(cls):
            key, tp, meta = _join(prefix, field.name), _hints(cls)[field.name], field.metadata
            value = getattr(obj, field.name) if obj is not None else _field_default(field)
            sub, shown = _section(tp), _yaml_scalar(config_to_dict(value))
            kind = ("section" if value is not None else "section or null") if sub else _type_name(tp)
            kind += "".join(f", {op} {meta[b]}" for b, op in (("min", ">="), ("max", "<=")) if b in meta)
            notes = [meta.get("help", ""), f"(formerly '{meta['renamed_from']}')" if "renamed_from" in meta else "",
                     f"[one of: {', '.join(map(str, meta['choices']))}]" if meta.get("choices") is not None else ""]
            if sub is None or value is None or notes[0]:  # a section: a row for its help or its null default
                rows.append((key, kind, "" if sub and value is not None else shown, " ".join(filter(None, notes))))
            if sub is not None:
                walk(sub, value, key)  # a null section: its class defaults

    walk(schema_cls, None, "")
    widths = [max(len(r[i]) for r in rows if len(r[i]) <= 32) for i in range(3)]  # a longer cell sticks out
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[3]]).rstrip() for r in rows) + "\n"


def _peek(path_or_text: str | os.PathLike) -> _Node:
    """The tree of a file (a ``PathLike``, an existing file, or one line ending in .yaml/.yml) or YAML text."""
    value = os.fspath(path_or_text) if isinstance(path_or_text, os.PathLike) else str(path_or_text)
    one_line_path = "\n" not in value and (value.strip().endswith((".yaml", ".yml")) or os.path.isfile(value))
    if isinstance(path_or_text, os.PathLike) or one_line_path:
        return _source_tree(value, None)
    return _source_tree("<string>", value)


def peek_kind(path_or_text: str | os.PathLike, known: Iterable[str] | None = None) -> str:
    """The top-level ``kind:`` (e.g. ``"update_rule"``) of a config file or YAML text (see :func:`_peek`);
    with ``known``, an unknown kind is an error too."""
    tree = _peek(path_or_text)
    if "kind" not in tree.value:
        allowed = f" (one of {', '.join(map(repr, known))})" if known else ""
        raise _error(tree.where, "kind", f"missing; the config must say which search it is{allowed}")
    node = tree.value["kind"][1]
    if not isinstance(node.value, str):
        raise _error(node.where, "kind", f"expected str, got {_show(_plain(node))}")
    if known is not None and node.value not in list(known):
        raise _error(node.where, "kind", f"unknown kind {node.value!r}; {suggest(node.value, list(known))}")
    return node.value
