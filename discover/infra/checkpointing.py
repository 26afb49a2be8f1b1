"""Search-state checkpoints with orbax, a fallback over damaged steps, and graceful Ctrl-C / SIGTERM.

Each saved step is an orbax Composite of two items:

- ``arrays``: a pytree of arrays (JAX, NumPy, Python scalars, new-style typed PRNG keys), saved with
  ``StandardSave``. Leaves are stored flat, so any pytree (dicts, NamedTuples, flax structs) works; the
  structure comes back from the ``arrays_like`` given to :meth:`Checkpointer.restore`.
- ``meta``: a JSON-able dict (counters, the fitness cache as lists, the hall of fame as program text...),
  saved with ``JsonSave``. NumPy/JAX scalars and arrays in it are turned into numbers and lists; tuples
  into lists; keys must be strings.

Alongside ``meta`` each step records the arrays' signature (key path, shape, dtype of every leaf), a
SHA-256 of their bytes and a SHA-256 of the JSON record itself (``meta``, signature and array digest), so a
restore can tell a damaged step (file truncated or deleted, no commit marker, array bytes or JSON content that
do not match) from a caller asking for a different structure. Steps written before the JSON was covered
(format 1) are still read, with only their arrays checked.

Public API
----------
- ``CheckpointError``: one-line error (no readable step, structure mismatch, unsavable value).
- ``CheckpointFallbackWarning(UserWarning)``: issued (one line, naming the step) when a damaged step is
  skipped.
- ``Checkpointer(directory, max_to_keep=3, *, async_save=True, read_only=False)``:
  ``save(step, arrays, meta, force=False) -> bool`` (asynchronous; returns False when orbax's policy skips the
  step or the step already exists), ``wait()``, ``close()``, ``all_steps()``, ``latest_step() -> int | None``
  (newest step with a commit marker), ``restore(arrays_like, step=None) -> (step, arrays, meta)``.
  With ``step=None`` the newest readable step is restored; damaged newer steps are reported with a
  ``CheckpointFallbackWarning`` and (unless ``read_only``) renamed to ``corrupt-<step>-<time>`` so that a
  resumed search can save that step number again. An explicit ``step`` never falls back.
  Restored leaves have exactly the dtype/shape of ``arrays_like``'s leaves and its kinds: a ``jax.Array``
  leaf comes back as a ``jax.Array`` on the same sharding, a NumPy leaf as NumPy, a Python scalar as the same
  Python type, a typed PRNG key as a typed key of the same implementation. ``arrays_like`` may hold
  ``jax.ShapeDtypeStruct`` leaves (restored as ``jax.Array``, except 64-bit dtypes when JAX runs without
  ``jax_enable_x64``: those stay NumPy so no value is narrowed).
  Also a context manager (``close()`` on exit, which waits for pending saves).
- ``rng_to_json(rng) -> str`` and ``rng_from_json(text) -> np.random.Generator``: a NumPy generator's
  exact state as JSON text (for ``meta``). Only NumPy's own bit generators are rebuilt (PCG64, PCG64DXSM,
  MT19937, Philox, SFC64); any other name or a malformed state is a :class:`CheckpointError`.
- ``pack_key(key) -> uint32 array`` (``jax.random.key_data`` of a typed key; raw keys pass through) and
  ``unpack_key(data, impl=None) -> typed key`` (``jax.random.wrap_key_data``), for code that keeps raw key
  data in its state. ``Checkpointer`` already does this for typed keys found in ``arrays``.

(``GracefulExit``, the SIGINT/SIGTERM handling around a search loop, is in :mod:`discover.infra.signals`; the
orbax log filtering in :mod:`discover.infra.orbax_logs`.)

Multi-process runs: every process must call ``save``/``restore`` (orbax coordinates them); the integrity
digest is only recorded when all leaves are fully addressable from each process.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import pathlib
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from discover.infra.orbax_logs import forget_damaged, quiet_orbax

__all__ = [
    "CheckpointError",
    "CheckpointFallbackWarning",
    "Checkpointer",
    "pack_key",
    "rng_from_json",
    "rng_to_json",
    "unpack_key",
]

logger = logging.getLogger(__name__)

_FORMAT = 2  # 2: the record carries "meta_digest" (a digest of the JSON itself)
_READABLE_FORMATS = (1, 2)  # 1: only the arrays are covered by a digest
_COMMIT_MARKER = "commit_success.txt"  # written by orbax as the last act of every committed step
_EMPTY = "empty"  # orbax refuses an empty item: a tree without leaves is saved as one placeholder byte


class CheckpointError(Exception):
    """A checkpoint problem the user must act on; ``str()`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class CheckpointFallbackWarning(UserWarning):
    """A damaged checkpoint step was skipped in favour of an older one."""


class _Damaged(Exception):
    """A step that cannot be read back exactly (internal: triggers the fallback)."""


# ----------------------------------------------------------------------------------------------------------
# PRNG keys


def _is_typed_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def pack_key(key: Any) -> jax.Array:
    """Raw ``uint32`` key data: ``jax.random.key_data`` of a typed key; a raw (legacy) key as it is."""
    return jax.random.key_data(key) if _is_typed_key(key) else jax.numpy.asarray(key)


def unpack_key(data: Any, impl: Any = None) -> jax.Array:
    """A typed key from raw data (``jax.random.wrap_key_data``; ``impl`` defaults to JAX's default)."""
    return jax.random.wrap_key_data(jax.numpy.asarray(data), impl=impl)


def _key_impl(leaf: Any) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        # jax.random.key_impl only takes a key value: ask it about the traced stand-in of the abstract key.
        found = []
        jax.eval_shape(lambda key: found.append(jax.random.key_impl(key)), leaf)
        return found[0]
    return jax.random.key_impl(leaf)


# ----------------------------------------------------------------------------------------------------------
# NumPy generators as JSON

_BIT_GENERATORS = {
    name: getattr(np.random, name) for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
}


def _rng_json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):  # MT19937, Philox, SFC64 keep parts of their state in arrays
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def rng_to_json(rng: np.random.Generator) -> str:
    """The exact state of ``rng`` as JSON text (128-bit integers stay exact); see :func:`rng_from_json`."""
    name = type(rng.bit_generator).__name__
    if name not in _BIT_GENERATORS:
        raise CheckpointError(
            f"cannot checkpoint a generator on {name}; use one of {', '.join(_BIT_GENERATORS)}"
        )
    return json.dumps(rng.bit_generator.state, default=_rng_json_default)


def rng_from_json(text: str) -> np.random.Generator:
    """A generator in the state :func:`rng_to_json` wrote; CheckpointError for anything else (only NumPy's
    own bit generators are built, whatever name the text gives)."""
    try:
        state = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"random generator state is not JSON ({exc})") from None
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if not isinstance(name, str) or name not in _BIT_GENERATORS:
        shown = name if isinstance(name, str) else type(state).__name__
        raise CheckpointError(
            f"random generator state names bit generator {shown[:60]!r}; known: {', '.join(_BIT_GENERATORS)}"
        )
    bit_generator = _BIT_GENERATORS[name]()
    try:
        bit_generator.state = state
    except (LookupError, AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(
            f"random generator state for {name} is malformed ({_one_line(exc, 100)})"
        ) from None
    return np.random.Generator(bit_generator)


# ----------------------------------------------------------------------------------------------------------
# Leaf bookkeeping: what is saved, and the signature a restore is checked against


def _leaf_kind(leaf: Any) -> str:
    if _is_typed_key(leaf):
        return "key"
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        return "jax"
    if isinstance(leaf, (np.ndarray, np.generic)):
        return "numpy"
    if isinstance(leaf, (bool, int, float, complex)):
        return "python"
    return "unsupported"


def _flatten(tree: Any) -> tuple[list[str], list[Any], Any]:
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [jax.tree_util.keystr(path) or "<root>" for path, _ in with_paths]
    return paths, [leaf for _, leaf in with_paths], treedef


def _shape_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of what is stored for ``leaf`` (key data for typed keys)."""
    if _is_typed_key(leaf):
        abstract = jax.eval_shape(jax.random.key_data, leaf)
        return tuple(abstract.shape), np.dtype(abstract.dtype)
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    array = np.asarray(leaf)
    return tuple(array.shape), array.dtype


def _signature(paths: list[str], leaves: list[Any]) -> list[list]:
    signature = []
    for path, leaf in zip(paths, leaves):
        kind = _leaf_kind(leaf)
        if kind == "unsupported":
            raise CheckpointError(
                f"arrays{path if path != '<root>' else ''}: cannot checkpoint a {type(leaf).__name__} as an array"
                " (put it in meta)"
            )
        shape, dtype = _shape_dtype(leaf)
        signature.append([path, list(shape), dtype.name, "key" if kind == "key" else "array"])
    return signature


def _fully_addressable(x: Any) -> bool:
    return not isinstance(x, jax.Array) or x.is_fully_addressable


def _digest(signature: list[list], host_arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for (path, shape, dtype, _), array in zip(signature, host_arrays):
        h.update(f"{path}|{shape}|{dtype}|".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _meta_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 of a step's JSON record (everything but ``meta_digest``) in a canonical form: a JSON value and
    the same value read back from disk give the same text (sorted keys, floats by their shortest repr)."""
    body = {k: v for k, v in record.items() if k != "meta_digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _jsonable(obj: Any, path: str = "meta") -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        if _is_typed_key(obj):
            raise CheckpointError(f"{path}: a PRNG key belongs in arrays, not in meta")
        return np.asarray(obj).tolist()
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: keys must be str for JSON, got {k!r}")
            out[k] = _jsonable(v, f"{path}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    raise CheckpointError(f"{path}: cannot write a {type(obj).__name__} as JSON")


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------------


class Checkpointer:
    """Saves and restores ``(arrays, meta)`` per step under ``directory`` (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        max_to_keep: int | None = 3,
        *,
        async_save: bool = True,
        read_only: bool = False,
    ) -> None:
        self.directory = pathlib.Path(directory).absolute()  # orbax wants absolute paths
        self.read_only = read_only
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"{self.directory}: checkpoint directory not found")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("arrays", "meta"))

    # -- saving ---------------------------------------------------------------------------------------------

    def save(
        self, step: int, arrays: Any, meta: Mapping[str, Any] | None = None, force: bool = False
    ) -> bool:
        """Starts saving ``step`` in the background; False if orbax's policy skips it or it already exists."""
        if self.read_only:
            raise CheckpointError(f"{self.directory}: opened read-only, cannot save")
        step = int(step)
        if step < 0:
            raise CheckpointError(f"checkpoint step must be >= 0, got {step}")
        if step in self._manager.all_steps():
            logger.debug("checkpoint step %d already exists in %s; not saved again", step, self.directory)
            return False
        paths, leaves, _ = _flatten(arrays)
        signature = _signature(paths, leaves)
        stored = [jax.random.key_data(x) if _is_typed_key(x) else x for x in leaves]
        stored = [x if isinstance(x, jax.Array) else np.asarray(x) for x in stored]
        if jax.process_count() > 1:
            # orbax refuses process-local jax.Arrays across processes; every process holds the same values,
            # saved as NumPy (written by process 0). Global arrays stay as they are.
            stored = [np.asarray(x) if _fully_addressable(x) else x for x in stored]
        digest = None
        if all(_fully_addressable(x) for x in stored):
            digest = _digest(signature, [np.asarray(jax.device_get(x)) for x in stored])
        # Zero-size leaves have no bytes to store (orbax refuses them); the signature alone restores them.
        items = {f"{i:06d}": x for i, x in enumerate(stored) if x.size > 0}
        if not items:
            items = {_EMPTY: np.zeros((1,), np.uint8)}
        wrapped_meta = {
            "format": _FORMAT,
            "signature": signature,
            "digest": digest,
            "user": _jsonable(dict(meta or {})),
        }
        wrapped_meta["meta_digest"] = _meta_digest(wrapped_meta)
        return bool(
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    arrays=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(wrapped_meta)
                ),
                force=force,
            )
        )

    def wait(self) -> None:
        """Blocks until pending background saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspecting -----------------------------------------------------------------------------------------

    def _step_dir(self, step: int) -> pathlib.Path:
        return self.directory / str(step)  # orbax's default step naming: no prefix, no padding

    def all_steps(self) -> list[int]:
        """Every step orbax lists (after pending saves finish), oldest first."""
        self.wait()
        self._manager.reload()
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest step that has a commit marker (its contents are only checked by :meth:`restore`)."""
        committed = [s for s in self.all_steps() if (self._step_dir(s) / _COMMIT_MARKER).is_file()]
        return committed[-1] if committed else None

    # -- restoring ------------------------------------------------------------------------------------------

    def restore(self, arrays_like: Any, step: int | None = None) -> tuple[int, Any, dict]:
        """``(step, arrays, meta)`` of ``step`` or of the newest readable step (see the module docstring)."""
        steps = self.all_steps()
        if step is not None:
            step = int(step)
            if step not in steps:
                have = ", ".join(map(str, steps)) or "none"
                raise CheckpointError(f"{self.directory}: no checkpoint step {step} (steps: {have})")
            try:
                with quiet_orbax():
                    return self._restore_step(step, arrays_like)
            except _Damaged as exc:
                forget_damaged(self._step_dir(step))
                raise CheckpointError(
                    f"{self._step_dir(step)}: checkpoint step {step} is damaged: {exc}"
                ) from None
        if not steps:
            raise CheckpointError(f"{self.directory}: no checkpoint to restore")
        problems, notices, restored = [], [], None
        with quiet_orbax() as quiet:
            for candidate in reversed(steps):
                try:
                    restored = self._restore_step(candidate, arrays_like)
                    break
                except _Damaged as exc:
                    quiet.drop = True
                    forget_damaged(self._step_dir(candidate))
                    problems.append(f"step {candidate}: {exc}")
                    older = [s for s in steps if s < candidate]
                    then = f"falling back to step {older[-1]}" if older else "no older step left"
                    notices.append(
                        f"checkpoint step {candidate} in {self.directory} is damaged ({exc}); {then}"
                    )
                    self._quarantine(candidate)
        for notice in notices:  # after the quiet block, which holds orbax's log records back
            warnings.warn(notice, CheckpointFallbackWarning, stacklevel=2)
        if restored is None:
            raise CheckpointError(f"{self.directory}: no readable checkpoint ({'; '.join(problems)})")
        return restored

    def _quarantine(self, step: int) -> None:
        """Renames a damaged step out of orbax's sight so a resumed run can write that step again."""
        if self.read_only or jax.process_index() != 0:
            return
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = self.directory / f"corrupt-{step}-{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = self.directory / f"corrupt-{step}-{stamp}-{n}"
        try:
            os.replace(self._step_dir(step), target)
        except OSError as exc:
            logger.warning("could not move damaged checkpoint step %d aside: %s", step, exc)
        self._manager.reload()

    def _read_meta(self, step: int) -> dict:
        if not (self._step_dir(step) / _COMMIT_MARKER).is_file():
            raise _Damaged("no commit marker: the save did not finish")
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = restored["meta"]
        except Exception as exc:  # noqa: BLE001 - any failure to read means the step is damaged
            raise _Damaged(f"meta unreadable: {_one_line(exc)}") from None
        required = {"format", "signature", "digest", "user"}
        if not isinstance(meta, dict) or not required <= meta.keys():
            raise _Damaged("meta is not a discover checkpoint record")
        if meta["format"] not in _READABLE_FORMATS:
            raise CheckpointError(
                f"{self._step_dir(step)}: checkpoint format {meta['format']!r}, this version reads "
                f"{', '.join(map(str, _READABLE_FORMATS))}"
            )
        if "meta_digest" in meta or meta["format"] != 1:  # format 1 records carry none
            recorded = meta.get("meta_digest")
            try:
                matches = recorded == _meta_digest(meta)
            except (TypeError, ValueError):  # cannot happen for JSON read back, but never a traceback
                matches = False
            if not matches:
                raise _Damaged("meta does not match its recorded checksum")
        return meta

    def _restore_step(self, step: int, arrays_like: Any) -> tuple[int, Any, dict]:
        meta = self._read_meta(step)
        paths, like_leaves, treedef = _flatten(arrays_like)
        expected = _signature(paths, like_leaves)
        _check_signature(self._step_dir(step), meta["signature"], expected)

        targets = {}
        for i, leaf in enumerate(like_leaves):
            shape, dtype = _shape_dtype(leaf)
            if int(np.prod(shape)) == 0:
                continue
            sharding = leaf.sharding if _leaf_kind(leaf) == "jax" else None
            if jax.process_count() > 1 and isinstance(leaf, jax.Array) and leaf.is_fully_addressable:
                sharding = None  # saved as NumPy (see save); _like puts it back on the leaf's device
            targets[f"{i:06d}"] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
        if not targets:
            targets = {_EMPTY: jax.ShapeDtypeStruct((1,), np.uint8)}
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(targets))
            )["arrays"]
        except Exception as exc:  # noqa: BLE001 - truncated/missing files surface as many error types
            raise _Damaged(f"arrays unreadable: {_one_line(exc)}") from None

        host = []
        for i, leaf in enumerate(like_leaves):
            shape, dtype = _shape_dtype(leaf)
            value = restored.get(f"{i:06d}") if int(np.prod(shape)) else np.zeros(shape, dtype)
            if value is None:
                raise _Damaged(f"arrays{paths[i]} missing")
            if not _fully_addressable(value):
                from jax.experimental import multihost_utils

                value = multihost_utils.process_allgather(value, tiled=True)
            value = np.asarray(jax.device_get(value))
            if value.shape != shape or value.dtype != dtype:
                raise _Damaged(f"arrays{paths[i]} came back as {value.dtype}{list(value.shape)}")
            host.append(value)
        if meta["digest"] is not None and _digest(expected, host) != meta["digest"]:
            raise _Damaged("array bytes do not match the recorded checksum")
        leaves = [_like(leaf, value) for leaf, value in zip(like_leaves, host)]
        return step, jax.tree_util.tree_unflatten(treedef, leaves), meta["user"]


def _check_signature(where: pathlib.Path, saved: list, expected: list) -> None:
    """Raises CheckpointError (no fallback: every step would disagree) when the structures differ."""
    saved = [list(x) for x in saved]
    if saved == expected:
        return
    saved_by_path = {s[0]: s for s in saved}
    expected_by_path = {e[0]: e for e in expected}
    for path, exp in expected_by_path.items():
        got = saved_by_path.get(path)
        if got is None:
            raise CheckpointError(
                f"{where}: checkpoint has no arrays{path} (structure differs from the run's)"
            )
        if got != exp:
            raise CheckpointError(
                f"{where}: arrays{path} is {got[2]}{got[1]} in the checkpoint, the run expects {exp[2]}{exp[1]}"
            )
    extra = [p for p in saved_by_path if p not in expected_by_path]
    raise CheckpointError(
        f"{where}: checkpoint holds arrays the run does not expect ({', '.join(extra[:3]) or 'order differs'})"
    )


def _like(leaf: Any, value: np.ndarray) -> Any:
    """``value`` in the same kind as ``leaf``: jax.Array (same sharding), NumPy, Python scalar or typed key."""
    kind = _leaf_kind(leaf)
    if kind == "key":
        key = jax.random.wrap_key_data(jax.numpy.asarray(value), impl=_key_impl(leaf))
        sharding = getattr(leaf, "sharding", None)
        return jax.device_put(key, sharding) if sharding is not None else key
    if kind == "jax":
        if jax.dtypes.canonicalize_dtype(value.dtype) != value.dtype:
            return value  # e.g. int64 without jax_enable_x64: a jax.Array would silently narrow it
        sharding = getattr(leaf, "sharding", None)
        return jax.device_put(value, sharding) if sharding is not None else jax.numpy.asarray(value)
    if kind == "python":
        return type(leaf)(value.item())
    if isinstance(leaf, np.generic):
        return value.reshape(()).astype(leaf.dtype)[()]
    return value
