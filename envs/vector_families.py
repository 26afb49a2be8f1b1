"""Vector-input task families: MLPs on tabular data and an autoencoder (builders in the style of
envs/task_families.py; data in envs/pool_data.py).

- `_build_pool_mlp`  the proxy pool's one builder (envs/task_pool.py): an MLP of a given width, depth, activation
                     and init scale on one of the pool's datasets (4x4 digits, wine, breast cancer, stdlib text
                     windows, random-teacher classification or regression). Its data (padded to `POOL_ROWS`),
                     activation and init scale are trainer arguments: one compilation per shape bucket.
- target families    `mlp_digits` (deeper MLP on the 8x8 digits), `mlp_breast_cancer`, `mlp_diabetes`
                     (regression), `autoencoder_digits` (8x8 digits through a small code).

A builder's ``__name__`` is part of every task's spec (hence of the tuned-AdamW cache key): do not rename them.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from envs.pool_data import POOL_ROWS, digits_4x4_split, sklearn_split, teacher_split, text_source_split
from envs.supervised import supervised_fields
from envs.task_data import digits_split, hash_normal
from envs.task_families import _dense, _dense_init

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu}

# dataset -> (input dim, output dim: classes or regression outputs, loss); None = chosen by the task (teachers)
POOL_DATASETS = {
    "digits": (16, 10, "classification"),
    "text": (32, 10, "classification"),
    "wine": (13, 3, "classification"),
    "breast_cancer": (30, 2, "classification"),
    "teacher_classification": (None, None, "classification"),
    "teacher_regression": (None, None, "regression"),
}
_POOL_NUM_VAL = {"digits": 400, "wine": 50, "breast_cancer": 100}


def _mlp(sizes, activation: str, init_scale: float = 1.0, salt: int = 0):
    """(init, apply) of an MLP with layer sizes `sizes`, `activation` between layers, linear output; LeCun
    normal weights times `init_scale` (layer i drawn with hash salt `salt + i`)."""
    act = ACTIVATIONS[activation]

    def init(key):
        return tuple(
            _dense_init(key, salt + i, a, b, init_scale) for i, (a, b) in enumerate(itertools.pairwise(sizes))
        )

    def apply(params, x):
        for layer in params[:-1]:
            x = act(_dense(layer, x))
        return _dense(params[-1], x)

    return init, apply


def _fields(loss_kind, apply, init, data, *, batch_size, num_steps, lr, **model) -> dict:
    return supervised_fields(apply, init, *data, batch_size=batch_size, num_steps=num_steps, lr=lr, kind=loss_kind,
                             **model)


@dataclasses.dataclass(frozen=True)
class PoolMLP:
    """The pool's MLP as a hashable model: activation and init scale are its data (`pool_mlp_data`), so pool tasks
    of equal layer sizes share one trainer. Computes what `_mlp(sizes, activation, init_scale)` computes."""

    sizes: tuple[int, ...]

    def init(self, mdata, key):
        return tuple({"w": hash_normal(key, i, (a, b)) * mdata["init_factor"][i], "b": jnp.zeros((b,), jnp.float32)}
                     for i, (a, b) in enumerate(itertools.pairwise(self.sizes)))

    def apply(self, mdata, params, x):
        for layer in params[:-1]:  # the dense layer outside the switch: trains bit for bit as `_mlp` does
            x = jax.lax.switch(mdata["activation"], _ACTIVATION_LIST, _dense(layer, x))
        return _dense(params[-1], x)


_ACTIVATION_LIST = list(ACTIVATIONS.values())


def pool_mlp_data(sizes, activation: str, init_scale: float) -> dict:
    """The activation's index and each layer's init factor (init_scale / sqrt(fan_in), rounded as `_dense_init`)."""
    factors = [np.float32(init_scale / np.sqrt(fan_in)) for fan_in in sizes[:-1]]
    return {"activation": np.int32(list(ACTIVATIONS).index(activation)), "init_factor": np.asarray(factors)}


# ------------------------------------------------------------------------------------------------ pool


def pool_data(dataset: str, in_dim: int, out_dim: int, data_seed: int):
    """(train_x, train_y, val_x, val_y) of a pool dataset; `data_seed` draws the split, windows or teacher."""
    if dataset not in POOL_DATASETS:
        raise ValueError(f"unknown pool dataset '{dataset}' (known: {', '.join(POOL_DATASETS)})")
    if dataset == "digits":
        data = digits_4x4_split(_POOL_NUM_VAL["digits"], data_seed)
    elif dataset == "text":
        data = text_source_split(data_seed)
    elif dataset in ("wine", "breast_cancer"):
        data = sklearn_split(dataset, _POOL_NUM_VAL[dataset], data_seed)
    else:
        data = teacher_split(POOL_DATASETS[dataset][2], in_dim, out_dim, data_seed)
    expected_in, expected_out, _ = POOL_DATASETS[dataset]
    if expected_in is not None and (in_dim, out_dim) != (expected_in, expected_out):
        raise ValueError(
            f"pool dataset '{dataset}' is {expected_in} -> {expected_out}, got {in_dim} -> {out_dim}"
        )
    return data


def _build_pool_mlp(
    *, dataset, in_dim, out_dim, width, depth, activation, init_scale, batch_size, num_steps, lr, data_seed
) -> dict:
    sizes = (in_dim,) + (width,) * depth + (out_dim,)
    data = pool_data(dataset, in_dim, out_dim, data_seed)
    return _fields(POOL_DATASETS[dataset][2], None, None, data, batch_size=batch_size, num_steps=num_steps, lr=lr,
                   model=PoolMLP(sizes), model_data=pool_mlp_data(sizes, activation, init_scale), pad_to=POOL_ROWS)


# --------------------------------------------------------------------------------------------- targets


def _build_mlp_digits(*, hidden, depth, activation, batch_size, num_steps, lr, num_val, split_seed) -> dict:
    """MLP classifier on the 8x8 digits (pixels in [0, 1], as the other digits tasks)."""
    init, apply = _mlp([64] + [hidden] * depth + [10], activation)
    data = digits_split(num_val, split_seed)
    return _fields("classification", apply, init, data, batch_size=batch_size, num_steps=num_steps, lr=lr)


def _build_mlp_breast_cancer(
    *, hidden, depth, activation, batch_size, num_steps, lr, num_val, split_seed
) -> dict:
    init, apply = _mlp([30] + [hidden] * depth + [2], activation)
    data = sklearn_split("breast_cancer", num_val, split_seed)
    return _fields("classification", apply, init, data, batch_size=batch_size, num_steps=num_steps, lr=lr)


def _build_mlp_diabetes(*, hidden, depth, activation, batch_size, num_steps, lr, num_val, split_seed) -> dict:
    """MLP regression of scikit-learn's diabetes progression (standardized) from 10 standardized features."""
    init, apply = _mlp([10] + [hidden] * depth + [1], activation)
    data = sklearn_split("diabetes", num_val, split_seed)
    return _fields("regression", apply, init, data, batch_size=batch_size, num_steps=num_steps, lr=lr)


def _build_autoencoder_digits(
    *, hidden, code, activation, batch_size, num_steps, lr, num_val, split_seed
) -> dict:
    """8x8 digits -> MLP encoder (hidden sizes, `activation`) -> linear code -> mirrored decoder -> 64 pixels;
    mean squared reconstruction error."""
    hidden = list(hidden)
    enc_init, enc = _mlp([64] + hidden + [code], activation)
    dec_init, dec = _mlp([code] + hidden[::-1] + [64], activation, salt=len(hidden) + 1)

    def init(key):
        return {"enc": enc_init(key), "dec": dec_init(key)}

    def apply(params, x):
        return dec(params["dec"], enc(params["enc"], x))

    tx, _, vx, _ = digits_split(num_val, split_seed)
    data = (tx, tx, vx, vx)
    return _fields("regression", apply, init, data, batch_size=batch_size, num_steps=num_steps, lr=lr)


# family -> builder: envs/tasks.py registers the target versions with these
BUILDERS = {
    "mlp_digits": _build_mlp_digits,
    "mlp_breast_cancer": _build_mlp_breast_cancer,
    "mlp_diabetes": _build_mlp_diabetes,
    "autoencoder_digits": _build_autoencoder_digits,
}
