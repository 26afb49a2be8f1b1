"""Typed YAML experiment configs with errors that name the file, the line and the key.

A config schema is a plain (nested) ``@dataclasses.dataclass`` whose fields all have defaults::

    @dataclasses.dataclass
    class SearchConfig:
        population: int = dataclasses.field(default=64, metadata={"min": 2, "help": "programs alive at once"})
        mutation: str = dataclasses.field(default="point", metadata={"choices": ("point", "insert")})
        lrs: list[float] = dataclasses.field(default_factory=lambda: [1e-3])

    @dataclasses.dataclass
    class Experiment:
        kind: str = dataclasses.field(default="update_rule", metadata={"choices": ("update_rule",)})
        seed: int = 0
        search: SearchConfig = dataclasses.field(default_factory=SearchConfig)

Supported field types: ``int``, ``float`` (an int is accepted; a plain ``1e-3`` too, which YAML 1.1 would
read as a string), ``bool`` (never accepted where an int/float is expected, and vice versa), ``str``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``Optional[X]`` / ``X | None``, ``Literal[...]``,
``typing.Any`` (taken as YAML gives it) and nested dataclasses (``Optional`` ones too). Field metadata:

- ``min`` / ``max``: inclusive bounds, checked on the value, on each element of a list, on each value of a dict;
- ``choices``: allowed values (same rule for lists/dicts), a close miss gets a "did you mean" hint;
- ``help``: one line, written as a comment above the key by :func:`dump_config`.

A schema's ``__post_init__`` may raise ``ValueError`` for cross-field checks; it is reported as a
:class:`ConfigError` pointing at that section.

Public API
----------
- ``ConfigError(message, *, source=None, line=None, key=None)``: ``str()`` is one line,
  ``"<file>:<line>: <key path>: <what is wrong>"``; parts that are unknown are left out
  (``"--set search.population: expected int, got 'abc'"``). The CLI prints it and exits non-zero.
- ``load_config(schema_cls, path=None, overrides=(), text=None) -> schema_cls instance``: reads ``path`` (or
  parses ``text``; ``path`` then only names it in messages), applies ``overrides`` (``"key.sub=value"``, the
  value parsed as YAML, e.g. ``search.lrs=[0.1, 0.01]``) and validates everything against the schema.
- ``config_to_dict(instance) -> dict`` (nested plain dicts/lists), ``flat_config(instance) -> dict``
  (``{"search.population": 64, ...}``, for TensorBoard hparams).
- ``dump_config(instance, comments=True) -> str``: YAML that ``load_config`` reads back to an equal instance.
- ``peek_kind(path_or_text, known=None) -> str``: the top-level ``kind:`` value, so a CLI can pick the schema.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "config_to_dict",
    "dump_config",
    "flat_config",
    "load_config",
    "peek_kind",
]

OVERRIDE_SOURCE = "--set"


class ConfigError(Exception):
    """A user-facing configuration error whose ``str()`` is one line: ``file:line: key.path: what``."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = " ".join(str(message).split())  # one line, whatever the cause said
        self.source = source
        self.line = line
        self.key = key
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = []
        if self.source == OVERRIDE_SOURCE and self.line is None and self.key:
            parts.append(f"{OVERRIDE_SOURCE} {self.key}")  # reads like the command line: --set a.b
        else:
            if self.source:
                parts.append(f"{self.source}:{self.line}" if self.line is not None else self.source)
            if self.key:
                parts.append(self.key)
        parts.append(self.message)
        return ": ".join(parts)


# ----------------------------------------------------------------------------------------------------------
# A YAML tree that remembers where each value came from (a file line or a --set override).


@dataclasses.dataclass(frozen=True)
class _Where:
    source: str
    line: int | None = None


@dataclasses.dataclass
class _Scalar:
    value: Any
    where: _Where
    plain: bool = True  # unquoted in YAML; lets `1e-3` count as a float


@dataclasses.dataclass
class _Seq:
    items: list
    where: _Where


@dataclasses.dataclass
class _Map:
    # key -> (where the key is written, value node); insertion-ordered.
    items: dict
    where: _Where
    # Made up by a `--set a.b.c=...` path: a dict field then keeps its other keys (a section always does).
    synthetic: bool = False


_Node = _Scalar | _Seq | _Map


def _error(where: _Where, key: str | None, message: str) -> ConfigError:
    return ConfigError(message, source=where.source, line=where.line, key=key or None)


def _yaml_error(exc: yaml.YAMLError, source: str, line_offset_known: bool = True) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    what = f"invalid YAML: {context + ', ' if context else ''}{problem}"
    line = mark.line + 1 if (mark is not None and line_offset_known) else None
    return ConfigError(what, source=source, line=line)


def _compose(text: str, source: str, *, file_lines: bool) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, file_lines) from None


_PLAIN_TAGS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")


def _to_tree(node: yaml.Node, source: str, file_lines: bool, key_path: str = "") -> _Node:
    """Turns a composed YAML node into our tree, constructing scalars with the safe constructor."""
    where = _Where(source, node.start_mark.line + 1 if file_lines else None)
    constructor = yaml.constructor.SafeConstructor()
    if isinstance(node, yaml.ScalarNode):
        try:
            value = constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise _error(where, key_path, f"invalid YAML value: {getattr(exc, 'problem', exc)}") from None
        return _Scalar(value, where, plain=node.style is None)
    if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) and node.tag not in _PLAIN_TAGS:
        raise _error(where, key_path, f"invalid YAML value: tag {node.tag!r} is not allowed")
    if isinstance(node, yaml.SequenceNode):
        return _Seq(
            [_to_tree(item, source, file_lines, f"{key_path}[{i}]") for i, item in enumerate(node.value)],
            where,
        )
    if isinstance(node, yaml.MappingNode):
        own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        try:
            constructor.flatten_mapping(node)  # resolves `<<: *anchor` merge keys (merged pairs come first)
        except yaml.YAMLError as exc:
            raise _error(where, key_path, f"invalid YAML merge: {getattr(exc, 'problem', exc)}") from None
        merged = len(node.value) - own
        items: dict = {}
        own_keys: set = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key_where = _Where(source, key_node.start_mark.line + 1 if file_lines else None)
            if not isinstance(key_node, yaml.ScalarNode):
                raise _error(key_where, key_path, "a key must be a plain name, not a list or mapping")
            key = constructor.construct_object(key_node)
            child_path = _join(key_path, key)
            if index >= merged:  # written here (not merged in): may override a merged key, not repeat itself
                if key in own_keys:
                    raise _error(key_where, child_path, "duplicate key (already set above)")
                own_keys.add(key)
            items[key] = (key_where, _to_tree(value_node, source, file_lines, child_path))
        return _Map(items, where)
    raise _error(where, key_path, f"unsupported YAML node {type(node).__name__}")  # pragma: no cover


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _parse_override(raw: str) -> tuple[list[str], _Node]:
    key_text, sep, value_text = raw.partition("=")
    key_text = key_text.strip()
    if not sep or not key_text:
        raise ConfigError(f"expected key.sub=value, got {raw!r}", source=OVERRIDE_SOURCE)
    parts = key_text.split(".")
    if any(not p.strip() for p in parts):
        raise ConfigError(f"malformed key path {key_text!r}", source=OVERRIDE_SOURCE)
    parts = [p.strip() for p in parts]
    where = _Where(OVERRIDE_SOURCE)
    try:
        node = _compose(value_text, OVERRIDE_SOURCE, file_lines=False)
        if node is None:  # `key=` is YAML's empty value: null
            return parts, _Scalar(None, where)
        return parts, _to_tree(node, OVERRIDE_SOURCE, False, key_text)
    except ConfigError as exc:
        raise ConfigError(exc.message, source=OVERRIDE_SOURCE, key=key_text) from None


def _apply_override(root: _Map, parts: list[str], value: _Node) -> None:
    where = _Where(OVERRIDE_SOURCE)
    node = root
    for part in parts[:-1]:
        entry = node.items.get(part)
        if entry is None or not isinstance(entry[1], _Map):
            entry = (where, _Map({}, where, synthetic=True))
            node.items[part] = entry
        node = entry[1]
    node.items[parts[-1]] = (where, value)


# ----------------------------------------------------------------------------------------------------------
# Validation against the dataclass schema.


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)):
            if len(args) != 1:
                raise TypeError(f"config schema: unsupported union {tp!r} (only Optional[X])")
            return True, args[0]
        raise TypeError(f"config schema: unsupported union {tp!r} (only Optional[X])")
    return False, tp


def _type_name(tp: Any) -> str:
    optional, inner = _is_optional(tp)
    if optional:
        return f"{_type_name(inner)} or null"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, tuple) or _is_abc_sequence(origin):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(node: _Node) -> Any:
    """The plain Python value of a subtree (for `Any` fields and error messages)."""
    if isinstance(node, _Scalar):
        return node.value
    if isinstance(node, _Seq):
        return [_plain(i) for i in node.items]
    return {k: _plain(v) for k, (_, v) in node.items.items()}


def _node_desc(node: _Node) -> str:
    if isinstance(node, _Scalar):
        return _show(node.value)
    return "a list" if isinstance(node, _Seq) else "a mapping"


def _suggest(word: str, options: Iterable[str]) -> str:
    options = [str(o) for o in options]
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid: " + ", ".join(options) if options else "no keys are allowed here"


def _check_bounds(value: Any, meta: typing.Mapping, node: _Node, path: str) -> None:
    if value is None:
        return
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and not value >= lo:
        raise _error(node.where, path, f"must be >= {lo}, got {_show(value)}")
    if hi is not None and not value <= hi:
        raise _error(node.where, path, f"must be <= {hi}, got {_show(value)}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        allowed = ", ".join(repr(c) for c in choices)
        raise _error(node.where, path, f"must be one of {allowed}, got {_show(value)}{hint}")


def _convert(
    tp: Any, node: _Node, path: str, meta: typing.Mapping, base: Any = None, key_where: _Where | None = None
) -> Any:
    """Validates ``node`` as type ``tp``; ``base`` is the value it overrides (a section merges onto it).

    ``key_where`` is where the key of this value is written: section-level errors point there.
    """
    optional, inner = _is_optional(tp)
    if isinstance(node, _Scalar) and node.value is None:
        if optional or inner is Any:
            return None
        raise _error(node.where, path, f"expected {_type_name(inner)}, got null")
    tp = inner
    if tp is Any:
        return _plain(node)
    if dataclasses.is_dataclass(tp):
        if not isinstance(node, _Map):
            raise _error(node.where, path, f"expected a mapping of settings, got {_node_desc(node)}")
        return _build(tp, node, path, base if dataclasses.is_dataclass(base) else None, key_where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, tuple) or _is_abc_sequence(origin):
        if not isinstance(node, _Seq):
            raise _error(node.where, path, f"expected {_type_name(tp)}, got {_node_desc(node)}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(node.items):
                raise _error(node.where, path, f"expected a list of {len(args)} items, got {len(node.items)}")
            return tuple(
                _convert(a, item, f"{path}[{i}]", meta) for i, (a, item) in enumerate(zip(args, node.items))
            )
        elem = args[0] if args else Any
        values = [_convert(elem, item, f"{path}[{i}]", meta) for i, item in enumerate(node.items)]
        return tuple(values) if origin is tuple else values
    if origin is dict:
        if not isinstance(node, _Map):
            raise _error(node.where, path, f"expected {_type_name(tp)}, got {_node_desc(node)}")
        key_tp, value_tp = args if args else (Any, Any)
        result = dict(base) if node.synthetic and isinstance(base, dict) else {}
        for key, (written_at, child) in node.items.items():
            child_path = _join(path, key)
            if key_tp is str and not isinstance(key, str):
                raise _error(written_at, child_path, f"keys must be names (str), got {_show(key)}")
            result[key] = _convert(value_tp, child, child_path, meta)
        return result
    if not isinstance(node, _Scalar):
        raise _error(node.where, path, f"expected {_type_name(tp)}, got {_node_desc(node)}")
    value = node.value
    if origin is typing.Literal:
        if value not in args:
            raise _error(node.where, path, f"must be {_type_name(tp)}, got {_show(value)}")
    elif tp is bool:
        if not isinstance(value, bool):
            raise _error(node.where, path, f"expected bool (true/false), got {_show(value)}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(node.where, path, f"expected int, got {_show(value)}")
    elif tp is float:
        if isinstance(value, str) and node.plain:
            value = _float_or_none(value)
            if value is None:
                raise _error(node.where, path, f"expected float, got {_show(node.value)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _error(node.where, path, f"expected float, got {_show(value)}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise _error(node.where, path, f"expected str, got {_show(value)} (quote it to make it text)")
    else:
        raise TypeError(f"config schema: unsupported field type {tp!r} at {path}")
    _check_bounds(value, meta, node, path)
    return value


def _is_abc_sequence(origin: Any) -> bool:
    return origin is collections.abc.Sequence


def _float_or_none(text: str) -> float | None:
    # YAML 1.1 reads `1e-3` (no dot) as a string; accept what Python reads as a number, nothing else.
    try:
        return float(text)
    except ValueError:
        return None


def _fields(cls: type) -> tuple[list[dataclasses.Field], dict[str, Any]]:
    return list(dataclasses.fields(cls)), typing.get_type_hints(cls)


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _build(cls: type, node: _Map, path: str, base: Any = None, anchor: _Where | None = None) -> Any:
    """An instance of ``cls`` from a mapping; keys it does not set keep ``base``'s values (or the defaults)."""
    fields, hints = _fields(cls)
    section_where = anchor or node.where  # where the section's own key is written
    by_name = {f.name: f for f in fields if f.init}
    kwargs = {}
    for key, (key_where, child) in node.items.items():
        child_path = _join(path, key)
        field = by_name.get(key) if isinstance(key, str) else None
        if field is None:
            raise _error(key_where, child_path, f"unknown key; {_suggest(str(key), by_name)}")
        field_base = getattr(base, key) if base is not None else _field_default(field)
        kwargs[key] = _convert(hints[key], child, child_path, field.metadata, field_base, key_where)
    if base is None:
        for name, field in by_name.items():
            no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if name not in kwargs and no_default:
                raise _error(section_where, _join(path, name), "missing required key")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a schema's own __post_init__ cross-field check
        raise _error(section_where, path, str(exc)) from None


# ----------------------------------------------------------------------------------------------------------
# Public entry points.


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a YAML file", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=str(path)) from None


def _source_tree(path: str | os.PathLike | None, text: str | None) -> _Map:
    if text is None and path is None:
        return _Map({}, _Where("<defaults>"))
    source = str(path) if path is not None else "<string>"
    if text is None:
        text = _read(str(path))
    node = _compose(text, source, file_lines=True)
    if node is None:  # an empty file: all defaults
        return _Map({}, _Where(source, 1))
    tree = _to_tree(node, source, True)
    if not isinstance(tree, _Map):
        raise _error(
            tree.where, None, f"expected a mapping of settings at the top level, got {_node_desc(tree)}"
        )
    return tree


def load_config(
    schema_cls: type,
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    text: str | None = None,
) -> Any:
    """Loads, overrides and validates a config; raises :class:`ConfigError` (one line) on any mistake."""
    if not (isinstance(schema_cls, type) and dataclasses.is_dataclass(schema_cls)):
        raise TypeError(f"load_config needs a dataclass schema, got {schema_cls!r}")
    if isinstance(overrides, str):
        overrides = [overrides]
    tree = _source_tree(path, text)
    for raw in overrides:
        parts, value = _parse_override(raw)
        _apply_override(tree, parts, value)
    return _build(schema_cls, tree, "")


def config_to_dict(instance: Any) -> Any:
    """Nested plain ``dict``/``list`` copy of a config instance (tuples become lists)."""
    if dataclasses.is_dataclass(instance) and not isinstance(instance, type):
        return {f.name: config_to_dict(getattr(instance, f.name)) for f in dataclasses.fields(instance)}
    if isinstance(instance, (list, tuple)):
        return [config_to_dict(v) for v in instance]
    if isinstance(instance, dict):
        return {k: config_to_dict(v) for k, v in instance.items()}
    return instance


def flat_config(instance: Any, sep: str = ".") -> dict[str, Any]:
    """``{"search.population": 64, "search.lrs": [0.001], ...}``: nested sections flattened, leaves untouched."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            for k, v in value.items():
                walk(f"{prefix}{sep}{k}" if prefix else k, v)
        else:
            out[prefix] = value

    data = config_to_dict(instance)
    for key, value in data.items():
        walk(key, value)
    return out


def _yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False, allow_unicode=True)
    text = text.strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    elif text.endswith("..."):
        text = text[:-3].rstrip()
    return text


def dump_config(instance: Any, comments: bool = True) -> str:
    """YAML text for a config instance (block style per section, flow style for lists/dicts).

    With ``comments`` each field's ``help`` metadata is written as a ``#`` line above it. The text loads back
    with :func:`load_config` to an instance equal to ``instance``.
    """
    if not (dataclasses.is_dataclass(instance) and not isinstance(instance, type)):
        raise TypeError(f"dump_config needs a dataclass instance, got {instance!r}")
    lines: list[str] = []

    def emit(obj: Any, indent: int) -> None:
        pad = " " * indent
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            help_text = field.metadata.get("help") if comments else None
            if help_text:
                for help_line in str(help_text).splitlines():
                    lines.append(f"{pad}# {help_line}".rstrip())
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                if dataclasses.fields(value):
                    lines.append(f"{pad}{field.name}:")
                    emit(value, indent + 2)
                else:
                    lines.append(f"{pad}{field.name}: {{}}")
            else:
                lines.append(f"{pad}{field.name}: {_yaml_scalar(config_to_dict(value))}")

    emit(instance, 0)
    return "\n".join(lines) + "\n"


def peek_kind(path_or_text: str | os.PathLike, known: Iterable[str] | None = None) -> str:
    """The top-level ``kind:`` of a config file (or of YAML text), e.g. ``"update_rule"`` or ``"rl_objective"``.

    ``path_or_text`` is read as a path when it is a ``PathLike``, names an existing file, or is a single line
    ending in ``.yaml``/``.yml``; otherwise it is YAML text. With ``known``, an unknown kind is an error too.
    """
    text, source = _text_and_source(path_or_text)
    tree = _source_tree(source, text)
    entry = tree.items.get("kind")
    if entry is None:
        allowed = f" (one of {', '.join(map(repr, known))})" if known else ""
        raise _error(tree.where, "kind", f"missing; the config must say which search it is{allowed}")
    node = entry[1]
    if not isinstance(node, _Scalar) or not isinstance(node.value, str):
        raise _error(node.where, "kind", f"expected str, got {_node_desc(node)}")
    if known is not None:
        known = list(known)
        if node.value not in known:
            hint = _suggest(node.value, known)
            raise _error(node.where, "kind", f"unknown kind {node.value!r}; {hint}")
    return node.value


def _text_and_source(path_or_text: str | os.PathLike) -> tuple[str, str]:
    if isinstance(path_or_text, os.PathLike):
        path = os.fspath(path_or_text)
        return _read(path), path
    value = str(path_or_text)
    looks_like_path = "\n" not in value and value.strip().endswith((".yaml", ".yml"))
    if looks_like_path or ("\n" not in value and os.path.isfile(value)):
        return _read(value), value
    return value, "<string>"
