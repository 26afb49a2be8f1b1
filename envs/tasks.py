"""Training tasks that update-rule candidates are judged on.

A `Task` is a small, vmappable training problem: `init(key) -> params` for ONE member, a training `loss`, a
deterministic data stream `batch(key, step)`, a step budget, a held-out `val_loss` and a nominal `lr`. Every
task's data is generated or ships with a package (scikit-learn's digits / wine, the Python standard library's
own source files), so nothing is downloaded.

Families (each built by one `_build_*` function of envs/task_families.py from keyword parameters; the data
and the hash random numbers are in envs/task_data.py):

- `mlp_regression`   tanh MLP fitting a fixed random tanh "teacher" on generated Gaussian inputs.
- `softmax_digits`   linear softmax classifier on scikit-learn's 8x8 digits.
- `cnn_digits`       3x3 convolutions (patch extraction + matmul, not `lax.conv`: much faster vmapped on
                     XLA:CPU) + 2x2 mean pool + dense, on the digits (1 conv in the proxy, 2 beyond).
- `charlm`           character-level LM (flax linen): embeddings of a short context -> tanh MLP -> next char,
                     on standard-library source text.
- `transformer_charlm`  causal transformer char-LM (flax linen) on the same text (target task).
- `noisy_quadratic`  rotated ill-conditioned quadratic with gradient noise whose covariance is proportional to
                     the Hessian (the "noisy quadratic model").
- `mlp_wine`         MLP classifier on scikit-learn's wine data (target task).
- `mlp_digits`, `mlp_breast_cancer`, `mlp_diabetes` (regression), `autoencoder_digits`: MLP target tasks
                     (envs/vector_families.py, data in envs/pool_data.py).

The proxy pool (envs/task_pool.py: `sample_task_pool`) samples further, unregistered proxy tasks (`build_task`),
and fixes which families meta-validation uses.

Kinds: `proxy` (tiny, used inside the search), `metaval` (more steps, wider: the meta-validation funnel) and
`target` (larger held-out tasks where transfer is reported). `register_task` adds more.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from discover.infra.errors import InputError
from envs.supervised import program_fields
from envs.task_data import (
    CHARLM_ALPHABET,
    CHARLM_MODULES,
    CHARLM_VOCAB,
    charlm_corpus,
    hash_bits,
    hash_normal,
    hash_randint,
)
from envs.task_families import BUILDERS, hash_normal_init
from envs.vector_families import BUILDERS as VECTOR_BUILDERS

KINDS = ("proxy", "metaval", "target")
# How a task's learning rate moves over training: each step's lr is the member's lr times the schedule's factor
# (envs/train.py). "cosine" decays it to 0 over num_steps (optax.cosine_decay_schedule), as most training recipes
# do; comparing optimizers under it keeps a rule from winning by building a decay into its step.
LR_SCHEDULES = ("constant", "cosine")

# Bump when a task's code changes what it computes: it is part of every task's `spec`, hence of the
# tuned-AdamW baseline cache key (envs/baselines.py).
TASK_CODE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Task:
    name: str  # e.g. "mlp_regression_proxy"
    init: Callable  # init(key) -> params pytree of ONE member (float32)
    loss: Callable  # loss(params, batch) -> scalar training loss
    batch: Callable  # batch(key, step) -> batch pytree (data stream; deterministic in key/step)
    val_loss: Callable  # val_loss(params) -> scalar validation loss (held-out data), lower is better
    num_steps: int
    lr: float  # the nominal learning rate given to programs as the `lr` input (~ AdamW's best lr here)
    accuracy: Callable | None = None  # accuracy(params) -> scalar val accuracy where it applies
    kind: str = "proxy"  # one of KINDS
    family: str = ""  # e.g. "mlp_regression": proxy / metaval / target versions share it
    spec: str = "{}"  # canonical JSON of the definition parameters + a data fingerprint (keys caches)
    # When set, what envs/train.py compiles: `program` (hashable, data-free: see envs/train.py) with `data` as a
    # trainer argument, so tasks of equal programs and data shapes share one compilation; the closures above are
    # the program bound to the data. None: the closures are compiled, data and all, once per task.
    program: Any = None
    data: Any = dataclasses.field(default=(), compare=False, repr=False)
    lr_schedule: str = "constant"  # one of LR_SCHEDULES; "constant" is left out of `spec` (old cache keys hold)

    @property
    def fingerprint(self) -> str:
        """Short hash of `spec`: changes whenever the task's definition or its data changes."""
        return hashlib.sha256(self.spec.encode()).hexdigest()[:16]


def with_lr_schedule(task: Task, schedule: str) -> Task:
    """``task`` trained under the lr schedule ``schedule`` (its spec says so, hence its reference-cache key)."""
    if schedule not in LR_SCHEDULES:
        raise InputError(f"unknown lr schedule '{schedule}' (known: {', '.join(LR_SCHEDULES)})")
    if schedule == task.lr_schedule:
        return task
    spec = json.loads(task.spec)
    spec.pop("lr_schedule", None)
    if schedule != "constant":
        spec["lr_schedule"] = schedule
    return dataclasses.replace(task, lr_schedule=schedule, spec=json.dumps(spec, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class _Entry:
    kind: str
    family: str
    builder: Callable[..., dict]
    params: tuple[tuple[str, Any], ...]


_REGISTRY: dict[str, _Entry] = {}


def register_task(name: str, kind: str, family: str, builder: Callable[..., dict], **params) -> None:
    """Registers `name`; `builder(**params)` returns the Task fields init/loss/batch/val_loss/num_steps/lr
    (+ optional accuracy and `data_fingerprint`; or `program` and `data` instead of the closures), built lazily on
    the first `get_task(name)`."""
    if kind not in KINDS:
        raise ValueError(f"task '{name}': kind must be one of {KINDS}, got '{kind}'")
    if name in _REGISTRY:
        raise ValueError(f"task '{name}' is already registered")
    _REGISTRY[name] = _Entry(kind, family, builder, tuple(sorted(params.items())))


def task_names(kind: str | None = None) -> list[str]:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown task kind '{kind}' (known: {', '.join(KINDS)})")
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def task_family(name: str) -> str:
    """The family of a registered task (without building it)."""
    if name not in _REGISTRY:
        raise InputError(f"unknown task '{name}' (known: {', '.join(task_names())})")
    return _REGISTRY[name].family


@functools.cache
def get_task(name: str) -> Task:
    """The task called `name`; cached so that every caller shares the same closures (and jit caches)."""
    if name not in _REGISTRY:
        raise InputError(f"unknown task '{name}' (known: {', '.join(task_names())})")
    entry = _REGISTRY[name]
    return build_task(name, entry.kind, entry.family, entry.builder, **dict(entry.params))


def build_task(name: str, kind: str, family: str, builder: Callable[..., dict], **params) -> Task:
    """A Task from `builder(**params)` with its spec (name, kind, family, builder's name, params, data
    fingerprint, TASK_CODE_VERSION), without registering it (`get_task` builds registered tasks with it; the
    proxy pool of envs/task_pool.py builds its sampled tasks with it)."""
    if kind not in KINDS:
        raise ValueError(f"task '{name}': kind must be one of {KINDS}, got '{kind}'")
    params = dict(sorted(params.items()))
    fields = dict(builder(**params))
    if "program" in fields:
        fields |= program_fields(fields["program"], fields["data"])
    data_fingerprint = fields.pop("data_fingerprint", "")
    spec = json.dumps(
        {
            "name": name,
            "kind": kind,
            "family": family,
            "builder": builder.__name__,
            "params": params,
            "data": data_fingerprint,
            "code_version": TASK_CODE_VERSION,
        },
        sort_keys=True,
    )
    return Task(name=name, kind=kind, family=family, spec=spec, **fields)


# ------------------------------------------------------------------------------------------- registry

_DIGITS_SPLIT = {"num_val": 400, "split_seed": 0}
_CHARLM_VAL = {"val_windows": 1024}

register_task(
    "mlp_regression_proxy", "proxy", "mlp_regression", BUILDERS["mlp_regression"],
    in_dim=8, hidden=32, depth=2, teacher_hidden=32, noise=0.1, batch_size=64, num_steps=150, lr=3e-2,
    val_size=512, data_seed=0,
)  # fmt: skip
register_task(
    "mlp_regression_metaval", "metaval", "mlp_regression", BUILDERS["mlp_regression"],
    in_dim=8, hidden=64, depth=2, teacher_hidden=32, noise=0.1, batch_size=64, num_steps=600, lr=1e-2,
    val_size=1024, data_seed=0,
)  # fmt: skip
register_task(
    "softmax_digits_proxy", "proxy", "softmax_digits", BUILDERS["softmax_digits"],
    batch_size=64, num_steps=150, lr=2e-1, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "softmax_digits_metaval", "metaval", "softmax_digits", BUILDERS["softmax_digits"],
    batch_size=64, num_steps=600, lr=1e-1, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "cnn_digits_proxy", "proxy", "cnn_digits", BUILDERS["cnn_digits"],
    channels=(8,), dense_hidden=0, batch_size=32, num_steps=150, lr=5e-2, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "cnn_digits_metaval", "metaval", "cnn_digits", BUILDERS["cnn_digits"],
    channels=(8, 16), dense_hidden=0, batch_size=32, num_steps=600, lr=1e-2, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "cnn_digits_target", "target", "cnn_digits", BUILDERS["cnn_digits"],
    channels=(16, 32), dense_hidden=64, batch_size=64, num_steps=1500, lr=1e-3, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "charlm_proxy", "proxy", "charlm", BUILDERS["charlm"],
    context=8, embed=8, hidden=32, batch_size=64, num_steps=200, lr=1e-2, **_CHARLM_VAL,
)  # fmt: skip
register_task(
    "charlm_metaval", "metaval", "charlm", BUILDERS["charlm"],
    context=16, embed=16, hidden=64, batch_size=64, num_steps=800, lr=3e-3, **_CHARLM_VAL,
)  # fmt: skip
register_task(
    "transformer_charlm_target", "target", "transformer_charlm", BUILDERS["transformer_charlm"],
    context=32, d_model=32, heads=2, layers=2, batch_size=16, num_steps=1000, lr=3e-3, **_CHARLM_VAL,
)  # fmt: skip
register_task(
    "noisy_quadratic_proxy", "proxy", "noisy_quadratic", BUILDERS["noisy_quadratic"],
    dim=32, condition=1e3, noise=0.1, init_scale=1.0, num_steps=150, lr=1e-1, data_seed=0,
)  # fmt: skip
register_task(
    "noisy_quadratic_metaval", "metaval", "noisy_quadratic", BUILDERS["noisy_quadratic"],
    dim=64, condition=1e3, noise=0.1, init_scale=1.0, num_steps=600, lr=3e-2, data_seed=0,
)  # fmt: skip
register_task(
    "mlp_wine_target", "target", "mlp_wine", BUILDERS["mlp_wine"],
    hidden=64, depth=2, batch_size=32, num_steps=1000, lr=3e-4, num_val=50, split_seed=0,
)  # fmt: skip
# More target tasks (envs/vector_families.py, and a larger MLP char-LM), for transfer only.
register_task(
    "mlp_digits_target", "target", "mlp_digits", VECTOR_BUILDERS["mlp_digits"],
    hidden=128, depth=3, activation="relu", batch_size=64, num_steps=1000, lr=1e-3, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "mlp_breast_cancer_target", "target", "mlp_breast_cancer", VECTOR_BUILDERS["mlp_breast_cancer"],
    hidden=64, depth=2, activation="tanh", batch_size=32, num_steps=800, lr=3e-4, num_val=100, split_seed=0,
)  # fmt: skip
register_task(
    "mlp_diabetes_target", "target", "mlp_diabetes", VECTOR_BUILDERS["mlp_diabetes"],
    hidden=32, depth=1, activation="tanh", batch_size=32, num_steps=500, lr=1e-3, num_val=92, split_seed=0,
)  # fmt: skip
register_task(
    "autoencoder_digits_target", "target", "autoencoder_digits", VECTOR_BUILDERS["autoencoder_digits"],
    hidden=(64, 32), code=8, activation="relu", batch_size=64, num_steps=1500, lr=3e-3, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "charlm_target", "target", "charlm", BUILDERS["charlm"],
    context=16, embed=16, hidden=128, batch_size=64, num_steps=1000, lr=3e-3, **_CHARLM_VAL,
)  # fmt: skip


__all__ = [
    "CHARLM_ALPHABET",
    "CHARLM_MODULES",
    "CHARLM_VOCAB",
    "KINDS",
    "TASK_CODE_VERSION",
    "Task",
    "build_task",
    "charlm_corpus",
    "get_task",
    "hash_bits",
    "hash_normal",
    "hash_normal_init",
    "hash_randint",
    "register_task",
    "task_names",
]
