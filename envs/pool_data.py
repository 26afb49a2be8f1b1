"""Data of the vector-input tasks (envs/vector_families.py): the proxy pool's datasets (envs/task_pool.py) and the
vector target tasks. Everything is generated or ships with a package (scikit-learn's toy datasets, the Python
standard library's source files): nothing is downloaded.

Each loader returns (train_x, train_y, val_x, val_y) as NumPy arrays: float32 inputs, int32 class labels or
float32 regression targets of shape (n, out); inputs are standardized with training statistics only.
"""

from __future__ import annotations

import functools
import importlib
import inspect

import numpy as np

from envs.task_data import CHARLM_MODULES, digits_split, encode_text, split_train_val

# Text windows: the source module a window of characters comes from, classified from its character histogram.
TEXT_WINDOW = 128  # characters per example
TEXT_BINS = 32  # the 31 most frequent characters of the corpus, then "any other character"
TEXT_TRAIN_PER_MODULE = 600
TEXT_VAL_PER_MODULE = 60
TEXT_VAL_FRACTION = 0.1  # the last tenth of each module's source is validation text (as envs/task_data.py)
TEACHER_HIDDEN = 32
TEACHER_TRAIN = 4096
TEACHER_VAL = 1024
# (training, validation) rows every pool dataset is padded to (the largest: text's training windows, the teachers'
# validation rows), so that a shape bucket's tasks share one compiled trainer (envs/supervised.py)
POOL_ROWS = (max(TEXT_TRAIN_PER_MODULE * len(CHARLM_MODULES), TEACHER_TRAIN), TEACHER_VAL)


def _standardize(tx: np.ndarray, vx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = tx.mean(0), tx.std(0) + 1e-8
    return ((tx - mean) / std).astype(np.float32), ((vx - mean) / std).astype(np.float32)


def _sklearn(name: str):
    from sklearn import datasets

    return {
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
    }[name]()


@functools.cache
def sklearn_split(name: str, num_val: int, split_seed: int):
    """scikit-learn's wine / breast_cancer (classes, int32) or diabetes (standardized target, (n, 1))."""
    d = _sklearn(name)
    tr, va = split_train_val(len(d.target), num_val, split_seed)
    tx, vx = _standardize(d.data[tr], d.data[va])
    if name == "diabetes":
        y = d.target.astype(np.float64)
        mean, std = y[tr].mean(), y[tr].std()
        y = ((y - mean) / std).astype(np.float32)[:, None]
    else:
        y = d.target.astype(np.int32)
    return tx, y[tr], vx, y[va]


@functools.cache
def digits_4x4_split(num_val: int, split_seed: int):
    """scikit-learn's digits mean-pooled 2x2 to 4x4 images (16 inputs), standardized; 10 classes."""
    tx, ty, vx, vy = digits_split(num_val, split_seed)

    def pool(x):
        return x.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16)

    tx, vx = _standardize(pool(tx), pool(vx))
    return tx, ty, vx, vy


@functools.cache
def _module_texts() -> tuple[np.ndarray, ...]:
    texts = []
    for name in CHARLM_MODULES:
        path = inspect.getsourcefile(importlib.import_module(name))
        if path is None:
            raise RuntimeError(f"text data: no source file for standard-library module '{name}'")
        with open(path, encoding="utf-8") as f:
            texts.append(encode_text(f.read()))
    return tuple(texts)


@functools.cache
def text_source_split(seed: int):
    """Which of the 10 CHARLM_MODULES a window of TEXT_WINDOW characters comes from (10 classes), from its
    histogram over TEXT_BINS character bins (standardized). Training windows are drawn from the first 90% of
    each module's source, validation windows from the last 10%; `seed` draws the windows."""
    texts = _module_texts()
    counts = np.bincount(np.concatenate(texts), minlength=128)
    table = np.full(counts.shape, TEXT_BINS - 1, np.int64)
    table[np.argsort(-counts, kind="stable")[: TEXT_BINS - 1]] = np.arange(TEXT_BINS - 1)
    rng = np.random.default_rng(seed)

    def windows(ids, n, lo, hi):
        starts = rng.integers(lo, hi - TEXT_WINDOW, n)
        bins = table[ids[starts[:, None] + np.arange(TEXT_WINDOW)]]
        return np.stack([np.bincount(row, minlength=TEXT_BINS) for row in bins]) / TEXT_WINDOW

    tx, ty, vx, vy = [], [], [], []
    for label, ids in enumerate(texts):
        cut = int(len(ids) * (1.0 - TEXT_VAL_FRACTION))
        tx.append(windows(ids, TEXT_TRAIN_PER_MODULE, 0, cut))
        vx.append(windows(ids, TEXT_VAL_PER_MODULE, cut, len(ids)))
        ty.append(np.full(TEXT_TRAIN_PER_MODULE, label, np.int32))
        vy.append(np.full(TEXT_VAL_PER_MODULE, label, np.int32))
    tx, vx = _standardize(np.concatenate(tx), np.concatenate(vx))
    return tx, np.concatenate(ty), vx, np.concatenate(vy)


@functools.cache
def teacher_split(task: str, in_dim: int, out_dim: int, seed: int):
    """A random one-hidden-layer tanh teacher on Gaussian inputs. task="classification": labels sampled from
    softmax(3 * standardized teacher logits) (some label noise), out_dim classes; task="regression": the
    teacher's out_dim outputs, each of unit variance, + 0.1 Gaussian noise on the training targets only."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(in_dim, TEACHER_HIDDEN)) * (2.0 / np.sqrt(in_dim))
    b1 = rng.normal(size=(TEACHER_HIDDEN,)) * 0.5
    w2 = rng.normal(size=(TEACHER_HIDDEN, out_dim)) / np.sqrt(TEACHER_HIDDEN)
    x = rng.normal(size=(TEACHER_TRAIN + TEACHER_VAL, in_dim))
    out = np.tanh(x @ w1 + b1) @ w2
    out = (out - out.mean(0)) / (out.std(0) + 1e-8)
    if task == "classification":
        gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, size=out.shape)))
        y = np.argmax(3.0 * out + gumbel, axis=1).astype(np.int32)
    elif task == "regression":
        y = out.astype(np.float32)
        y[:TEACHER_TRAIN] += 0.1 * rng.normal(size=(TEACHER_TRAIN, out_dim)).astype(np.float32)
    else:
        raise ValueError(f"teacher task must be 'classification' or 'regression', got '{task}'")
    x = x.astype(np.float32)
    return x[:TEACHER_TRAIN], y[:TEACHER_TRAIN], x[TEACHER_TRAIN:], y[TEACHER_TRAIN:]
