"""A distribution of proxy tasks (the update-rule search's fitness), the meta-validation set, and which task
families each side may use.

Family split (the search must not select on the tasks it reports; tests/test_task_pool.py checks it):

- **pool** (`POOL_FAMILIES`, sampled by `sample_task_pool`): MLPs on vector data, one builder
  (`envs.vector_families._build_pool_mlp`), sampled over the dataset (4x4-pooled digits, wine, breast cancer,
  standard-library text windows classified by source module from their character histogram, random-teacher
  classification and regression), width, depth, activation, batch size, steps and init scale. Family
  `pool_<dataset>`.
- **meta-validation** (`META_VALIDATION_FAMILIES`, fixed: `META_VALIDATION_TASKS`): the registered
  `cnn_digits_metaval`, `charlm_metaval`, `noisy_quadratic_metaval`: convolutions, a sequence model with
  embeddings, a noisy ill-conditioned quadratic; none of them is an MLP on vector data. (The registered
  `mlp_regression_metaval` and `softmax_digits_metaval` are left out: the pool samples their kind of task.)
- **target** (`target_tasks()`: every registered task of kind "target"): never trained on by the search nor by
  the funnel. Their families are not pool families; `cnn_digits_target` and `charlm_target` share a family
  with a meta-validation task (a larger version: more channels / context, longer training), and the MLP
  targets use datasets the pool also uses at proxy scale (wine, breast cancer; digits at 8x8, not 4x4).

Compilations: a pool task's data (padded to `envs.pool_data.POOL_ROWS` rows), activation and init scale are
arguments of its trainer, not constants (envs/supervised.py), so the trainer compiles once per
`shape_signature`: (program: layer sizes, batch size, loss; steps; data shapes). A pool draws `buckets` shape
classes and every task takes one, so a 16-task pool has 5 signatures by default (`shape_buckets`): 5 compilations
per trainer kind (the tuned-AdamW references', the scorer's) instead of 16.

Loss-scale augmentation: `sample_loss_scales` draws factors log-uniform in [1e-3, 1e3] for
`make_population_trainer(..., loss_scale=True)` (envs/train.py), which scales each member's training loss.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from envs.tasks import Task, build_task, get_task, task_names
from envs.train import data_signature, task_program
from envs.vector_families import POOL_DATASETS, _build_pool_mlp

POOL_FAMILIES = tuple(f"pool_{dataset}" for dataset in POOL_DATASETS)
META_VALIDATION_FAMILIES = ("cnn_digits", "charlm", "noisy_quadratic")
META_VALIDATION_TASKS = tuple(f"{family}_metaval" for family in META_VALIDATION_FAMILIES)

# The menus a pool draws from. Shapes (width, depth, batch size, steps) are drawn once per bucket; activation,
# init scale, dataset (within the bucket's input/output shape) and data seed once per task.
WIDTHS = (16, 32)
DEPTHS = (1, 2)
BATCH_SIZES = (16, 64)
STEPS = (100, 150)
ACTIVATIONS = ("relu", "tanh", "gelu")
INIT_SCALES = (0.5, 1.0, 2.0)
POOL_LR = 1e-2  # nominal lr (AdamW's is tuned around it, x0.1 .. x10); measured AdamW best 3e-3 .. 3e-2
POOL_LR_BY_DATASET = {"breast_cancer": 3e-3}  # 469 training rows: overfits within 100 steps at 1e-2
TEACHER_WEIGHT = 0.5  # a teacher dataset is drawn half as often as a real one of the same shape
TEACHER_REGRESSION_DIMS = (16, 4)  # inputs, outputs
LOSS_SCALE_RANGE = (1e-3, 1e3)


def _groups(datasets: Sequence[str]) -> list[tuple[tuple[int, int, str], tuple[str, ...]]]:
    """Shape groups ((in, out, loss), datasets of that shape among `datasets`): one per fixed-shape
    classification dataset with the teacher classification of its shape (the teacher takes the shapes of the
    real datasets in `datasets`, or all of them if there is none), and one for teacher regression."""
    fixed = [d for d in POOL_DATASETS if POOL_DATASETS[d][0] is not None]
    shapes = [d for d in fixed if d in datasets] or fixed
    groups = []
    for d in shapes:
        members = tuple(x for x in (d, "teacher_classification") if x in datasets)
        if members:
            groups.append((POOL_DATASETS[d], members))
    if "teacher_regression" in datasets:
        groups.append(((*TEACHER_REGRESSION_DIMS, "regression"), ("teacher_regression",)))
    return groups


def default_buckets(size: int, families: Sequence[str] = POOL_FAMILIES) -> int:
    """Shape buckets of a pool by default: one per shape group (every dataset appears), at least size / 4."""
    datasets = [f.removeprefix("pool_") for f in families]
    return min(size, max(len(_groups(datasets)), math.ceil(size / 4)))


@functools.cache
def _pool_task(name: str, family: str, params: tuple) -> Task:
    # cached: sampling the same pool again returns the same Task objects (and so reuses their trainers)
    return build_task(name, "proxy", family, _build_pool_mlp, **dict(params))


def sample_task_pool(
    seed: int, size: int, families: Sequence[str] = POOL_FAMILIES, *, buckets: int | None = None
) -> list[Task]:
    """`size` proxy tasks drawn from `families` (a subset of POOL_FAMILIES), deterministic in `seed`.

    Every task has a unique name (`pool<seed>_<i>_<dataset>_<activation>_w<width>d<depth>`) and a spec that
    describes it completely (builder parameters, data fingerprint, code version): the spec keys its tuned-AdamW
    reference (envs.baselines.adamw_reference(task)). `buckets` (default `default_buckets(size, families)`)
    shape classes are drawn, and the tasks spread evenly over them, so at most `buckets` distinct
    `shape_signature`s."""
    families = tuple(families)
    unknown = [f for f in families if f not in POOL_FAMILIES]
    if not families or unknown:
        raise ValueError(f"pool families must be a non-empty subset of {POOL_FAMILIES}, got {families}")
    if size < 1:
        raise ValueError(f"pool size must be >= 1, got {size}")
    datasets = sorted({f.removeprefix("pool_") for f in families}, key=list(POOL_DATASETS).index)
    groups = _groups(datasets)
    buckets = default_buckets(size, families) if buckets is None else buckets
    if not 1 <= buckets <= size:
        raise ValueError(f"buckets must be in [1, size={size}], got {buckets}")
    rng = np.random.default_rng([seed, 0x900C])
    order = rng.permutation(len(groups))
    shapes = []
    for b in range(buckets):
        group = groups[order[b % len(groups)]]
        shape = tuple(int(rng.choice(menu)) for menu in (WIDTHS, DEPTHS, BATCH_SIZES, STEPS))
        shapes.append((group, shape))
    assignment = rng.permutation(np.arange(size) % buckets)
    pool, seen = [], set()
    for i, b in enumerate(assignment):
        ((in_dim, out_dim, _), members), (width, depth, batch_size, num_steps) = shapes[b]
        weights = np.asarray([TEACHER_WEIGHT if m.startswith("teacher") else 1.0 for m in members])
        dataset = str(rng.choice(members, p=weights / weights.sum()))
        activation = str(rng.choice(ACTIVATIONS))
        init_scale = float(rng.choice(INIT_SCALES))
        while True:  # a duplicate would waste a slot (practically never: the data seed has 2**31 values)
            params = {
                "dataset": dataset, "in_dim": in_dim, "out_dim": out_dim, "width": width, "depth": depth,
                "activation": activation, "init_scale": init_scale, "batch_size": batch_size,
                "num_steps": num_steps, "lr": POOL_LR_BY_DATASET.get(dataset, POOL_LR), "data_seed": int(rng.integers(2**31)),
            }  # fmt: skip
            key = tuple(sorted(params.items()))
            if key not in seen:
                break
        seen.add(key)
        name = f"pool{seed}_{i:02d}_{dataset}_{activation}_w{width}d{depth}"
        pool.append(_pool_task(name, f"pool_{dataset}", key))
    return pool


def shape_signature(task: Task) -> tuple:
    """What a task's trainer compiles for besides the update rule: (program, steps, data shapes and dtypes);
    tasks with equal signatures share one compiled trainer (envs.train.task_program)."""
    program, data = task_program(task)
    return program, task.num_steps, data_signature(data)


def bucket_tasks(tasks: Sequence[Task]) -> dict[tuple, list[str]]:
    """Task names grouped by `shape_signature`."""
    out: dict[tuple, list[str]] = {}
    for task in tasks:
        out.setdefault(shape_signature(task), []).append(task.name)
    return out


def shape_buckets(tasks: Sequence[Task]) -> int:
    """How many distinct shape signatures `tasks` have (compilations of each kind of trainer)."""
    return len(bucket_tasks(tasks))


def meta_validation_tasks() -> list[Task]:
    """The fixed meta-validation set (families disjoint from the pool's)."""
    return [get_task(name) for name in META_VALIDATION_TASKS]


def target_tasks() -> list[Task]:
    """Every registered target task (for transfer only)."""
    return [get_task(name) for name in task_names("target")]


def sample_loss_scales(rng: np.random.Generator, shape, low: float = LOSS_SCALE_RANGE[0],
                       high: float = LOSS_SCALE_RANGE[1]) -> np.ndarray:  # fmt: skip
    """float32 factors log-uniform in [low, high] (the loss-scale augmentation; envs/train.py's loss_scale)."""
    if not 0 < low <= high:
        raise ValueError(f"loss scales need 0 < low <= high, got [{low}, {high}]")
    return np.exp(rng.uniform(np.log(low), np.log(high), size=shape)).astype(np.float32)
