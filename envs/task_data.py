"""Data for the training tasks (envs/tasks.py): counter-based hash random numbers, scikit-learn's digits split,
the standard-library source text of the char-LMs, and array fingerprints (part of each task's spec).

Everything is generated or ships with a package: nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np

# Counter-based hash random numbers for data streams and inits. Each jax.random (threefry) call site costs
# ~0.5-1 s of XLA:CPU compile time (measured: a vmapped jax.random.normal compiled in 0.9-1.3 s, this
# generator in 0.05 s) and the population trainer compiles once per task, so the tasks' own randomness uses
# this instead: the "lowbias32" integer hash (an avalanche mixer) of a counter, keyed by the PRNG key's data
# and an integer stream id (e.g. the step). Deterministic in (key, stream, position); fine for sampling
# minibatch indices and Gaussian noise, not meant for cryptography.
_GOLDEN = 0x9E3779B9


def _mix32(x):
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def hash_bits(key, stream, shape) -> jax.Array:
    """uint32 random bits of `shape` for (typed PRNG key, integer stream id), e.g. stream = step."""
    words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    seed_a = _mix32(jnp.asarray(stream, jnp.uint32) * jnp.uint32(_GOLDEN) + jnp.uint32(0x2545F491))
    for word in words:
        seed_a = _mix32(seed_a ^ word)
    seed_b = _mix32(seed_a ^ jnp.uint32(0x68E31DA4))
    counter = jnp.arange(math.prod(shape), dtype=jnp.uint32)
    return _mix32(_mix32(counter + seed_a) ^ seed_b).reshape(shape)


def hash_randint(key, stream, shape, maxval) -> jax.Array:
    """int32 uniform in [0, maxval) (modulo bias < maxval / 2**32); maxval may be traced."""
    return (hash_bits(key, stream, shape) % jnp.asarray(maxval, jnp.uint32)).astype(jnp.int32)


def hash_normal(key, stream, shape) -> jax.Array:
    """float32 standard normal samples (Box-Muller on 24-bit uniforms)."""
    bits = hash_bits(key, stream, (2, math.prod(shape)))
    u1 = ((bits[0] >> 8) + 1).astype(jnp.float32) * jnp.float32(2.0**-24)  # (0, 1]
    u2 = (bits[1] >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)  # [0, 1)
    return (jnp.sqrt(-2.0 * jnp.log(u1)) * jnp.cos(jnp.float32(2 * np.pi) * u2)).reshape(shape)


def array_fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def split_train_val(num: int, num_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(num)
    return perm[num_val:], perm[:num_val]


# ----------------------------------------------------------------------------------------------- digits


@functools.cache
def digits_split(num_val: int, seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    tr, va = split_train_val(len(y), num_val, seed)
    return x[tr], y[tr], x[va], y[va]


# -------------------------------------------------------------------------------------------- char LMs

# Source files of these standard-library modules are the corpus: on every machine, no download.
CHARLM_MODULES = (
    "os",
    "json",
    "json.decoder",
    "json.encoder",
    "argparse",
    "textwrap",
    "string",
    "functools",
    "dataclasses",
    "collections",
)
# Vocabulary: index 0 = any other character, then newline and printable ASCII.
CHARLM_ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
CHARLM_VOCAB = 1 + len(CHARLM_ALPHABET)


def encode_text(text: str) -> np.ndarray:
    table = np.zeros(128, np.int32)  # ASCII lookup; anything else -> 0
    for i, ch in enumerate(CHARLM_ALPHABET):
        table[ord(ch)] = i + 1
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    return np.where(codes < 128, table[np.minimum(codes, 127)], 0).astype(np.int32)


@functools.cache
def charlm_corpus(val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train_ids, val_ids): each module's source is split into its first (1-val_fraction) for training and
    its last val_fraction for validation, concatenated in CHARLM_MODULES order."""
    train, val = [], []
    for name in CHARLM_MODULES:
        module = importlib.import_module(name)
        path = inspect.getsourcefile(module)
        if path is None:
            raise RuntimeError(f"char-LM corpus: no source file for standard-library module '{name}'")
        with open(path, encoding="utf-8") as f:
            ids = encode_text(f.read())
        cut = int(len(ids) * (1.0 - val_fraction))
        train.append(ids[:cut])
        val.append(ids[cut:])
    return np.concatenate(train), np.concatenate(val)
