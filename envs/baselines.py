"""Tuned-AdamW reference losses: the denominator of every update-rule fitness.

A program's fitness on a task is its final validation loss divided by that of AdamW with its learning rate
tuned on the same task (below 1.0: better than AdamW). The reference is computed once per (task definition,
lr grid, seeds, jax version, backend) and cached in a JSON file written atomically.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from envs.tasks import Task, get_task
from envs.train import adamw_init_opt_state, adamw_update_fn, make_population_trainer

DEFAULT_CACHE_PATH = Path("checkpoints") / ".baselines.json"
# Default lr grid: the task's nominal lr times these (log-spaced over two decades, centred on it).
DEFAULT_LR_MULTIPLIERS = (0.1, 0.316, 1.0, 3.16, 10.0)


def reference_keys(seeds: int, first: int = 0) -> jax.Array:
    """The member keys the reference is trained with: jax.random.key(s) for s in range(seeds). A search that
    evaluates programs with these keys compares them with AdamW on exactly the same inits and data. ``first``
    shifts them to other, disjoint seeds (``first``, ``first`` + 1, ...): fresh seeds for a report."""
    return jnp.stack([jax.random.key(first + s) for s in range(seeds)])


def _cache_key(task: Task, lr_grid: Sequence[float], seeds: int) -> str:
    grid = ",".join(f"{lr:.6g}" for lr in lr_grid)
    backend = jax.default_backend()
    return f"{task.name}|{task.fingerprint}|jax={jax.__version__}|{backend}|lrs={grid}|seeds={seeds}"


def _read_cache(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        warnings.warn(
            f"{path}: unreadable baselines cache ({err}); recomputing and overwriting it", stacklevel=3
        )
        return {}
    if not isinstance(data, dict):
        warnings.warn(
            f"{path}: baselines cache is not a JSON object; recomputing and overwriting it", stacklevel=3
        )
        return {}
    return data


def _write_atomically(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive lock on a side file so concurrent processes don't drop each other's entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic replace still keeps the file valid
        yield
        return
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tune_adamw(task: Task, lr_grid: Sequence[float], seeds: int) -> dict:
    """Trains AdamW at every (lr, seed) in ONE vmapped population call; best lr by mean val loss."""
    lr_grid = [float(lr) for lr in lr_grid]
    train = make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state)
    keys = jnp.tile(reference_keys(seeds), len(lr_grid))  # member = (lr index, seed): lr-major
    lrs = jnp.repeat(jnp.asarray(lr_grid, jnp.float32), seeds)
    val = np.asarray(train(keys, lrs, None)["val_loss"], np.float64).reshape(len(lr_grid), seeds)
    mean = np.where(np.isfinite(val).all(axis=1), val.mean(axis=1), np.inf)
    best = int(np.argmin(mean))
    if not np.isfinite(mean[best]):
        raise RuntimeError(f"task '{task.name}': AdamW diverged at every lr of the grid {lr_grid}")
    return {
        "val_loss": float(mean[best]),
        "lr": lr_grid[best],
        "val_loss_std": float(val[best].std()),
        "lr_grid": lr_grid,
        "val_loss_per_lr": [float(m) if math.isfinite(m) else None for m in mean],
        "best_at_grid_edge": best in (0, len(lr_grid) - 1),
        "seeds": seeds,
    }


def adamw_reference(
    task_name: str | Task,
    *,
    lr_grid: Sequence[float] | None = None,
    seeds: int = 2,
    cache_path: str | os.PathLike | None = None,
) -> dict:
    """Tuned-AdamW reference of a task: dict(val_loss, lr, val_loss_std, lr_grid, val_loss_per_lr,
    best_at_grid_edge, seeds, task, fingerprint).

    lr_grid defaults to task.lr * DEFAULT_LR_MULTIPLIERS; members use `reference_keys(seeds)`. Cached in
    `cache_path` (default checkpoints/.baselines.json, relative to the working directory) under the task name,
    the hash of its definition, the lr grid, the seeds, the jax version and the backend."""
    task = task_name if isinstance(task_name, Task) else get_task(task_name)
    if seeds < 1:
        raise ValueError(f"adamw_reference: seeds must be >= 1, got {seeds}")
    grid = tuple(task.lr * m for m in DEFAULT_LR_MULTIPLIERS) if lr_grid is None else tuple(lr_grid)
    if not grid or any(not (lr > 0 and math.isfinite(lr)) for lr in grid):
        raise ValueError(f"adamw_reference: lr_grid must be positive finite learning rates, got {grid}")
    path = Path(DEFAULT_CACHE_PATH if cache_path is None else cache_path)
    key = _cache_key(task, grid, seeds)
    cached = _read_cache(path).get(key)
    if cached is not None:
        return cached
    result = {**tune_adamw(task, grid, seeds), "task": task.name, "fingerprint": task.fingerprint}
    with _locked(path):
        data = _read_cache(path)  # re-read under the lock: another process may have added entries
        data[key] = result
        _write_atomically(path, data)
    return result


def relative_loss(val_loss, reference_val_loss: float):
    """Fitness of val losses against a reference (lower is better; < 1 beats AdamW); non-finite -> +inf."""
    val_loss = jnp.asarray(val_loss, jnp.float32)
    ratio = val_loss / jnp.float32(reference_val_loss)
    return jnp.where(jnp.isfinite(ratio), ratio, jnp.inf)
