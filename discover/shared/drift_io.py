"""Saving / loading drifts: npz files with JSON metadata; never pickle.

A drift file is an npz (zip) archive holding ``param:<tree path>`` arrays and ``__meta__``, a JSON object
``{"kind": "rl_drift", "drift": {DriftConfig fields}, "env": "<env name>", "ppo": {PPOConfig fields}, ...}``
(``ppo`` and further keys optional, e.g. ``env_ppo``: ``{env: {PPOConfig fields}}`` for further meta-training
envs; :func:`save_drift` adds ``kind``). :func:`load_drift` checks all of it
before anything is built and raises :class:`DriftFileError` (one line naming the file and what is wrong) for
any defect.
"""

from __future__ import annotations

import io
import json
import pathlib
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.config import ConfigError, load_config
from discover.infra.errors import DriftFileError
from discover.infra.rundir import atomic_write_bytes
from discover.language.drift_program import drift_function, parse_drift
from discover.language.program import ProgramError
from envs.ppo import PPOConfig
from envs.rl_envs import ENV_NAMES
from search_spaces.drift import DriftConfig, DriftFamily, make_drift

__all__ = ["DISTILLED_KIND", "DRIFT_KIND", "DriftFileError", "load_distilled", "load_drift", "save_drift"]

DRIFT_KIND = "rl_drift"  # __meta__["kind"] of a drift file
DISTILLED_KIND = "distilled_drift"  # "kind" of the JSON `discover distill` writes beside its formula module
DISTILLED_JSON = "distilled_drift.json"


# ----------------------------------------------------------------------------------------------------------
# Saving / loading drifts (npz with JSON metadata; never pickle)
# ----------------------------------------------------------------------------------------------------------
def _path_name(path) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def save_drift(path: str | pathlib.Path, params: Any, meta: dict) -> pathlib.Path:
    """Writes drift parameters as ``param:<tree path>`` arrays plus ``meta`` (JSON text, ``kind`` added) into
    one npz."""
    arrays = {
        f"param:{_path_name(p)}": np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.array(json.dumps({"kind": DRIFT_KIND, **meta})), **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return pathlib.Path(path)


def _read_archive(path: str | pathlib.Path) -> tuple[str, dict[str, np.ndarray]]:
    """``(__meta__ text, {tree path: array})`` of an npz; DriftFileError for anything else."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise DriftFileError(path, "not a saved drift (a single .npy array, not an npz archive)")
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise DriftFileError(path, "not a saved drift (not an npz archive: no zip header)")
        data = np.load(path, allow_pickle=False)
    except DriftFileError:
        raise
    except IsADirectoryError:
        raise DriftFileError(path, "is a directory, not a drift file") from None
    except FileNotFoundError:
        raise DriftFileError(path, "drift file not found") from None
    except OSError as exc:
        raise DriftFileError(path, f"cannot read: {exc.strerror or exc}") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DriftFileError(path, f"not a saved drift (not an npz archive: {_short(exc)})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # the header said zip: cannot happen, but never a traceback
        raise DriftFileError(path, "not a saved drift (not an npz archive)")
    try:
        with data:
            if "__meta__" not in data.files:
                raise DriftFileError(path, "not a saved drift (a zip archive without __meta__)")
            meta = data["__meta__"]
            if meta.dtype.kind != "U" or meta.shape != ():
                raise DriftFileError(
                    path, f"__meta__ must be JSON text, got a {meta.dtype} array of shape {list(meta.shape)}"
                )
            arrays = {k[len("param:") :]: data[k] for k in data.files if k.startswith("param:")}
            return str(meta), arrays
    except DriftFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DriftFileError(path, f"damaged npz archive ({_short(exc)})") from None


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _section(path: str | pathlib.Path, meta: dict, key: str, schema: type) -> Any:
    """``meta[key]`` checked against a config dataclass (types, bounds, choices, unknown keys)."""
    value = meta[key]
    if not isinstance(value, dict):
        raise DriftFileError(path, f"__meta__ {key}: expected a JSON object, got {type(value).__name__}")
    try:
        return load_config(schema, text=json.dumps(value), overrides=())
    except ConfigError as exc:
        where = f"{key}.{exc.key}" if exc.key else key
        raise DriftFileError(path, f"__meta__ {where}: {exc.message}") from None


def _check_meta(path: str | pathlib.Path, text: str) -> tuple[dict, DriftConfig]:
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DriftFileError(path, f"__meta__ is not JSON ({_short(exc)})") from None
    if not isinstance(meta, dict):
        raise DriftFileError(path, f"__meta__ must be a JSON object, got {type(meta).__name__}")
    if "kind" not in meta:
        raise DriftFileError(path, f"__meta__ has no 'kind' (a drift file has kind {DRIFT_KIND!r})")
    kind = meta["kind"]
    if kind != DRIFT_KIND:
        raise DriftFileError(path, f"__meta__ kind is {_short(repr(kind), 60)}, not a drift ({DRIFT_KIND!r})")
    for key in ("drift", "env"):
        if key not in meta:
            raise DriftFileError(path, f"__meta__ has no {key!r} (not a drift written by discover)")
    config = _section(path, meta, "drift", DriftConfig)
    env = meta["env"]
    if not isinstance(env, str):
        raise DriftFileError(path, f"__meta__ env: expected an environment name, got {type(env).__name__}")
    if env not in ENV_NAMES:
        raise DriftFileError(
            path,
            f"__meta__ env: unknown environment {_short(repr(env), 60)}; supported: {', '.join(ENV_NAMES)}",
        )
    if "ppo" in meta:
        _section(path, meta, "ppo", PPOConfig)
    env_ppo = meta.get("env_ppo", {})
    if not isinstance(env_ppo, dict):
        raise DriftFileError(path, f"__meta__ env_ppo: expected a JSON object, got {type(env_ppo).__name__}")
    for name, ppo in env_ppo.items():
        if name not in ENV_NAMES:
            raise DriftFileError(path, f"__meta__ env_ppo: unknown environment {_short(repr(name), 60)}")
        _section(path, {f"env_ppo.{name}": ppo}, f"env_ppo.{name}", PPOConfig)
    return meta, config


def load_drift(path: str | pathlib.Path) -> tuple[DriftFamily, Any, dict]:
    """``(family, params, meta)`` of a drift saved by :func:`save_drift`; :class:`DriftFileError` (one line,
    naming the file) if it is not one: not an npz, no or bad ``__meta__`` (not JSON, another kind, missing
    or mistyped fields, unknown drift settings), parameters missing, extra or of the wrong shape."""

    text, arrays = _read_archive(path)
    meta, config = _check_meta(path, text)
    family = make_drift(config)
    template = family.init(jax.random.PRNGKey(0))
    leaves, expected = [], set()
    for p, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
        name = _path_name(p)
        expected.add(name)
        array = arrays.get(name)
        if array is None:
            raise DriftFileError(path, f"parameter {name} missing for drift family {config.family!r}")
        if array.shape != leaf.shape or array.dtype.kind != "f":
            raise DriftFileError(
                path,
                f"parameter {name} is {array.dtype}{list(array.shape)}, drift family {config.family!r} "
                f"(hidden_size {config.hidden_size}) needs {leaf.dtype}{list(leaf.shape)}",
            )
        leaves.append(jnp.asarray(array, dtype=leaf.dtype))
    extra = sorted(set(arrays) - expected)
    if extra:
        raise DriftFileError(
            path, f"parameter(s) {', '.join(extra[:3])} are not part of drift family {config.family!r}"
        )
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
    return family, params, meta


# ----------------------------------------------------------------------------------------------------------
# Loading a distilled drift (`discover distill`) without executing anything
# ----------------------------------------------------------------------------------------------------------
def load_distilled(path: str | pathlib.Path):
    """The drift ``discover distill`` wrote, as a jitted ``drift(ratio, advantage, progress, log_horizon)``.

    ``path`` is the ``distilled_drift.json`` (the program in discover's drift language), the
    ``distilled_drift.py`` beside it (its ``.json`` is read, the module is never imported or executed), or
    the distillation's run directory. The program is parsed with ``ast`` and run by the language's evaluator
    (:func:`discover.language.drift_program.drift_function`); :class:`DriftFileError` (one line) for anything
    that is not such a file."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / DISTILLED_JSON
    elif path.suffix == ".py":
        path = path.with_suffix(".json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DriftFileError(path, "distilled drift not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DriftFileError(path, f"cannot read: {_short(exc)}") from None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DriftFileError(path, f"not JSON ({_short(exc)})") from None
    if not isinstance(meta, dict) or meta.get("kind") != DISTILLED_KIND:
        raise DriftFileError(path, f"not a distilled drift (a JSON object with kind {DISTILLED_KIND!r})")
    program, cap = meta.get("program"), meta.get("cap")
    if not isinstance(program, str):
        raise DriftFileError(path, "program: expected the program's text")
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0.0 < cap < float("inf"):
        raise DriftFileError(path, f"cap: expected a positive number, got {_short(repr(cap), 60)}")
    try:
        parsed = parse_drift(program, max_len=10**4)
    except ProgramError as exc:
        raise DriftFileError(path, f"program: {exc}") from None
    return drift_function(parsed, float(cap))
