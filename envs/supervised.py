"""Supervised tasks whose data are an argument of their trainer, not constants baked into it.

A supervised task is a `Supervised` program (hashable: the model, the batch size, the loss) plus its data (a dict
of arrays, `Task.data`). envs/train.py compiles one trainer per program and data shapes, so tasks with equal
programs and equally shaped data share one compilation: the proxy pool (envs/task_pool.py) pads its datasets to
`POOL_ROWS` rows and keeps activation and init scale in the data (envs/vector_families.py), so each of its shape
buckets compiles once. A model given as closures (`ClosureModel`) is equal only to itself: one trainer per task.

Padding never changes what is trained on: minibatch indices are drawn below the true row count `rows` (the same
indices as without padding), and padded validation rows are masked out of the mean.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from envs.task_data import array_fingerprint, hash_randint


def cross_entropy_rows(logits, labels):
    # log_softmax subtracts the largest logit before anything else. logsumexp(z) - z_y (optax's form too) does
    # not: with logits near 1e30 (a rule that blows the weights up) both terms round to the same float and the
    # loss reads 0, a perfect score.
    return -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[..., None], -1)[..., 0]


def cross_entropy(logits, labels):
    return jnp.mean(cross_entropy_rows(logits, labels))


def accuracy_rows(logits, labels):
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def accuracy(logits, labels):
    return jnp.mean(accuracy_rows(logits, labels))


def squared_error_rows(pred, target):
    return jnp.square(pred - target)


def mean_squared_error(pred, target):
    return jnp.mean(jnp.square(pred - target))


# loss kind -> (mean over a batch, per row); METRICS likewise (the task's accuracy)
LOSSES = {"classification": (cross_entropy, cross_entropy_rows),
          "regression": (mean_squared_error, squared_error_rows)}
METRICS = {"classification": (accuracy, accuracy_rows)}


@dataclasses.dataclass(frozen=True, eq=False)
class ClosureModel:
    """A model as `init(key)` and `apply(params, x)` closures (no model data); equal only to itself."""

    init_fn: Callable
    apply_fn: Callable

    def init(self, mdata, key):
        return self.init_fn(key)

    def apply(self, mdata, params, x):
        return self.apply_fn(params, x)


@dataclasses.dataclass(frozen=True)
class Supervised:
    """Minibatches drawn with replacement from the training rows; the `kind` of loss ("classification":
    cross-entropy, with accuracy; "regression": mean squared error) on them and on the validation rows. `masked`:
    the data are padded and carry `val_mask` and `val_count`. `model` (hashable) has init(mdata, key) and
    apply(mdata, params, x), mdata = data["model"]. Methods take the data first (a program: see envs/train.py)."""

    model: object
    batch_size: int
    kind: str
    masked: bool = False

    @property
    def has_accuracy(self) -> bool:
        return self.kind in METRICS

    def init(self, data, key):
        return self.model.init(data["model"], key)

    def batch(self, data, key, step):
        idx = hash_randint(key, step, (self.batch_size,), data["rows"])
        return {"x": jnp.asarray(data["train_x"])[idx], "y": jnp.asarray(data["train_y"])[idx]}

    def loss(self, data, params, b):
        return LOSSES[self.kind][0](self.model.apply(data["model"], params, b["x"]), b["y"])

    def _validate(self, data, params, fns):
        mean, per_row = fns
        pred = self.model.apply(data["model"], params, jnp.asarray(data["val_x"]))
        val_y = jnp.asarray(data["val_y"])
        if not self.masked:
            return mean(pred, val_y)
        rows = per_row(pred, val_y)
        rows = rows.reshape(rows.shape[0], -1)
        kept = jnp.where(jnp.asarray(data["val_mask"])[:, None], rows, 0.0)
        return jnp.sum(kept) / (data["val_count"] * rows.shape[1])

    def val_loss(self, data, params):
        return self._validate(data, params, LOSSES[self.kind])

    def accuracy(self, data, params):
        return self._validate(data, params, METRICS[self.kind])


def _pad(a: np.ndarray, rows: int) -> np.ndarray:
    if a.shape[0] > rows:
        raise ValueError(f"supervised data: {a.shape[0]} rows do not fit the padded size {rows}")
    return np.concatenate([a, np.zeros((rows - a.shape[0],) + a.shape[1:], a.dtype)])


def supervised_data(train_x, train_y, val_x, val_y, model_data=(), pad_to: tuple[int, int] | None = None) -> dict:
    """The data of a `Supervised` task (NumPy arrays); `pad_to` = (training rows, validation rows)."""
    arrays = [np.asarray(a) for a in (train_x, train_y, val_x, val_y)]
    data = {"train_x": arrays[0], "train_y": arrays[1], "val_x": arrays[2], "val_y": arrays[3],
            "rows": np.int32(len(arrays[0])), "model": model_data}
    if pad_to is not None:
        data |= {"train_x": _pad(arrays[0], pad_to[0]), "train_y": _pad(arrays[1], pad_to[0]),
                 "val_x": _pad(arrays[2], pad_to[1]), "val_y": _pad(arrays[3], pad_to[1]),
                 "val_mask": np.arange(pad_to[1]) < len(arrays[2]), "val_count": np.float32(len(arrays[2]))}
    return data


def supervised_fields(apply, init, train_x, train_y, val_x, val_y, *, batch_size, num_steps, lr, kind,
                      model=None, model_data=(), pad_to: tuple[int, int] | None = None) -> dict:
    """Task fields (a `Supervised` program and its data) for `apply(params, x) -> predictions` trained with the
    `kind` of loss ("classification" or "regression") on minibatches sampled with replacement from (train_x,
    train_y), validated on (val_x, val_y). A hashable `model` (with its `model_data`) replaces the closures
    `init`/`apply`: tasks with equal models share a trainer."""
    fingerprint = array_fingerprint(train_x, train_y, val_x, val_y)  # of the unpadded data: specs unchanged
    model = ClosureModel(init, apply) if model is None else model
    program = Supervised(model, batch_size, kind, masked=pad_to is not None)
    return {"program": program, "data": supervised_data(train_x, train_y, val_x, val_y, model_data, pad_to),
            "num_steps": num_steps, "lr": lr, "data_fingerprint": fingerprint}


def program_fields(program, data) -> dict:
    """The Task closures init/loss/batch/val_loss/accuracy of `program` bound to `data` (as constants)."""
    return {
        "init": functools.partial(program.init, data),
        "loss": functools.partial(program.loss, data),
        "batch": functools.partial(program.batch, data),
        "val_loss": functools.partial(program.val_loss, data),
        "accuracy": functools.partial(program.accuracy, data) if program.has_accuracy else None,
    }
