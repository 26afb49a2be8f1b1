"""Saving / loading drifts: npz files with JSON metadata; never pickle."""

from __future__ import annotations

import io
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.rundir import atomic_write_bytes
from search_spaces.drift import DriftConfig, DriftFamily, make_drift


# ----------------------------------------------------------------------------------------------------------
# Saving / loading drifts (npz with JSON metadata; never pickle)
# ----------------------------------------------------------------------------------------------------------
def _path_name(path) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def save_drift(path: str | pathlib.Path, params: Any, meta: dict) -> pathlib.Path:
    """Writes drift parameters as ``param:<tree path>`` arrays plus ``meta`` (JSON text) into one npz."""
    arrays = {
        f"param:{_path_name(p)}": np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.array(json.dumps(meta)), **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return pathlib.Path(path)


def load_drift(path: str | pathlib.Path) -> tuple[DriftFamily, Any, dict]:
    """``(family, params, meta)`` of a drift saved by :func:`save_drift`; ValueError (one line) if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            arrays = {k[len("param:") :]: data[k] for k in data.files if k.startswith("param:")}
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a saved drift ({type(exc).__name__}: {exc})") from None
    family = make_drift(DriftConfig(**meta["drift"]))
    template = family.init(jax.random.PRNGKey(0))
    leaves = []
    for p, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
        name = _path_name(p)
        if name not in arrays or arrays[name].shape != leaf.shape:
            raise ValueError(
                f"{path}: parameter {name} missing or of the wrong shape for drift {meta['drift']}"
            )
        leaves.append(jnp.asarray(arrays[name]))
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
    return family, params, meta
