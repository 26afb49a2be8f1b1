"""Training tasks that update-rule candidates are judged on.

A `Task` is a small, vmappable training problem: `init(key) -> params` for ONE member, a training `loss`, a
deterministic data stream `batch(key, step)`, a step budget, a held-out `val_loss` and a nominal `lr`. Every
task's data is generated or ships with a package (scikit-learn's digits / wine, the Python standard library's
own source files), so nothing is downloaded.

Families (each built by one `_build_*` function from keyword parameters):

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

Kinds: `proxy` (tiny, used inside the search), `metaval` (more steps, wider: the meta-validation funnel) and
`target` (larger held-out tasks where transfer is reported). `register_task` adds more.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("proxy", "metaval", "target")

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

    @property
    def fingerprint(self) -> str:
        """Short hash of `spec`: changes whenever the task's definition or its data changes."""
        return hashlib.sha256(self.spec.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class _Entry:
    kind: str
    family: str
    builder: Callable[..., dict]
    params: tuple[tuple[str, Any], ...]


_REGISTRY: dict[str, _Entry] = {}


def register_task(name: str, kind: str, family: str, builder: Callable[..., dict], **params) -> None:
    """Registers `name`; `builder(**params)` returns the Task fields init/loss/batch/val_loss/num_steps/lr
    (+ optional accuracy and `data_fingerprint`), built lazily on the first `get_task(name)`."""
    if kind not in KINDS:
        raise ValueError(f"task '{name}': kind must be one of {KINDS}, got '{kind}'")
    if name in _REGISTRY:
        raise ValueError(f"task '{name}' is already registered")
    _REGISTRY[name] = _Entry(kind, family, builder, tuple(sorted(params.items())))


def task_names(kind: str | None = None) -> list[str]:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown task kind '{kind}' (known: {', '.join(KINDS)})")
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


@functools.cache
def get_task(name: str) -> Task:
    """The task called `name`; cached so that every caller shares the same closures (and jit caches)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task '{name}' (known: {', '.join(task_names())})")
    entry = _REGISTRY[name]
    fields = dict(entry.builder(**dict(entry.params)))
    data_fingerprint = fields.pop("data_fingerprint", "")
    spec = json.dumps(
        {
            "name": name,
            "kind": entry.kind,
            "family": entry.family,
            "builder": entry.builder.__name__,
            "params": dict(entry.params),
            "data": data_fingerprint,
            "code_version": TASK_CODE_VERSION,
        },
        sort_keys=True,
    )
    return Task(name=name, kind=entry.kind, family=entry.family, spec=spec, **fields)


# ----------------------------------------------------------------------------------------------- helpers


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


def hash_randint(key, stream, shape, maxval: int) -> jax.Array:
    """int32 uniform in [0, maxval) (modulo bias < maxval / 2**32)."""
    return (hash_bits(key, stream, shape) % jnp.uint32(maxval)).astype(jnp.int32)


def hash_normal(key, stream, shape) -> jax.Array:
    """float32 standard normal samples (Box-Muller on 24-bit uniforms)."""
    bits = hash_bits(key, stream, (2, math.prod(shape)))
    u1 = ((bits[0] >> 8) + 1).astype(jnp.float32) * jnp.float32(2.0**-24)  # (0, 1]
    u2 = (bits[1] >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)  # [0, 1)
    return (jnp.sqrt(-2.0 * jnp.log(u1)) * jnp.cos(jnp.float32(2 * np.pi) * u2)).reshape(shape)


def _dense_init(key, salt: int, fan_in: int, fan_out: int, scale: float = 1.0) -> dict:
    """LeCun-normal weights, zero bias; `salt` tells a model's layers apart."""
    w = hash_normal(key, salt, (fan_in, fan_out)) * jnp.float32(scale / np.sqrt(fan_in))
    return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def _dense_stack_init(key, sizes: list[int], salt: int = 0) -> tuple:
    return tuple(_dense_init(key, salt + i, a, b) for i, (a, b) in enumerate(itertools.pairwise(sizes)))


def _dense(p: dict, x):
    return x @ p["w"] + p["b"]


def _cross_entropy(logits, labels):
    return jnp.mean(
        jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[..., None], -1)[..., 0]
    )


def _accuracy(logits, labels):
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def _array_fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _split_train_val(num: int, num_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(num)
    return perm[num_val:], perm[:num_val]


# ------------------------------------------------------------------------------------------ mlp_regression


def _build_mlp_regression(
    *, in_dim, hidden, depth, teacher_hidden, noise, batch_size, num_steps, lr, val_size, data_seed
) -> dict:
    rng = np.random.default_rng(data_seed)
    t_w1 = rng.normal(size=(in_dim, teacher_hidden)) / np.sqrt(in_dim) * 2.0
    t_b1 = rng.normal(size=(teacher_hidden,)) * 0.5
    t_w2 = rng.normal(size=(teacher_hidden, 1)) / np.sqrt(teacher_hidden)

    def teacher_np(x):
        return np.tanh(x @ t_w1 + t_b1) @ t_w2

    y_scale = float(np.std(teacher_np(rng.normal(size=(8192, in_dim)))))  # targets of unit variance
    t_w1, t_b1, t_w2 = (jnp.asarray(a, jnp.float32) for a in (t_w1, t_b1, t_w2 / y_scale))
    val_x = rng.normal(size=(val_size, in_dim)).astype(np.float32)
    val_y = jnp.asarray(teacher_np(val_x) / y_scale, jnp.float32)[:, 0]
    val_x = jnp.asarray(val_x)

    sizes = [in_dim] + [hidden] * depth + [1]

    def init(key):
        return _dense_stack_init(key, sizes)

    def apply(params, x):
        for layer in params[:-1]:
            x = jnp.tanh(_dense(layer, x))
        return _dense(params[-1], x)[:, 0]

    def batch(key, step):
        z = hash_normal(key, step, (batch_size, in_dim + 1))
        x = z[:, :in_dim]
        y = (jnp.tanh(x @ t_w1 + t_b1) @ t_w2)[:, 0] + noise * z[:, in_dim]
        return {"x": x, "y": y}

    def loss(params, b):
        return jnp.mean(jnp.square(apply(params, b["x"]) - b["y"]))

    def val_loss(params):  # noiseless targets: how well the function was learnt
        return jnp.mean(jnp.square(apply(params, val_x) - val_y))

    return {
        "init": init,
        "loss": loss,
        "batch": batch,
        "val_loss": val_loss,
        "num_steps": num_steps,
        "lr": lr,
    }


# ----------------------------------------------------------------------------------------------- digits


@functools.cache
def _digits(num_val: int, seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    tr, va = _split_train_val(len(y), num_val, seed)
    return x[tr], y[tr], x[va], y[va]


def _classifier_fields(apply, init, train_x, train_y, val_x, val_y, *, batch_size, num_steps, lr) -> dict:
    """Task fields for a classifier `apply(params, x) -> logits` trained on minibatches sampled with
    replacement from (train_x, train_y); validated on (val_x, val_y)."""
    fingerprint = _array_fingerprint(train_x, train_y, val_x, val_y)
    train_x, train_y = jnp.asarray(train_x), jnp.asarray(train_y)
    val_x, val_y = jnp.asarray(val_x), jnp.asarray(val_y)
    n = train_x.shape[0]

    def batch(key, step):
        idx = hash_randint(key, step, (batch_size,), n)
        return {"x": train_x[idx], "y": train_y[idx]}

    def loss(params, b):
        return _cross_entropy(apply(params, b["x"]), b["y"])

    def val_loss(params):
        return _cross_entropy(apply(params, val_x), val_y)

    def accuracy(params):
        return _accuracy(apply(params, val_x), val_y)

    return {
        "init": init,
        "loss": loss,
        "batch": batch,
        "val_loss": val_loss,
        "accuracy": accuracy,
        "num_steps": num_steps,
        "lr": lr,
        "data_fingerprint": fingerprint,
    }


def _build_softmax_digits(*, batch_size, num_steps, lr, num_val, split_seed) -> dict:
    tx, ty, vx, vy = _digits(num_val, split_seed)

    def init(key):
        return _dense_init(key, 0, 64, 10)

    return _classifier_fields(_dense, init, tx, ty, vx, vy, batch_size=batch_size, num_steps=num_steps, lr=lr)


def _conv3x3_valid(x, p):
    """3x3 'valid' convolution of x (B, H, W, C) as patch extraction + one matmul with w (9*C, C_out)."""
    h, w = x.shape[1] - 2, x.shape[2] - 2
    patches = jnp.concatenate([x[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], axis=-1)
    return patches @ p["w"] + p["b"]


def _build_cnn_digits(*, channels, dense_hidden, batch_size, num_steps, lr, num_val, split_seed) -> dict:
    """len(channels) 3x3 'valid' conv layers (ReLU) on the 8x8 digits, 2x2 mean pool, optional dense hidden
    layer, softmax over 10 classes."""
    tx, ty, vx, vy = _digits(num_val, split_seed)
    side = 8 - 2 * len(channels)
    if side < 2:
        raise ValueError(f"cnn_digits: at most 3 conv layers fit an 8x8 image, got channels={channels}")
    pooled = (side // 2) ** 2 * channels[-1]
    dense_sizes = [pooled] + ([dense_hidden] if dense_hidden else []) + [10]
    conv_sizes = list(zip((1,) + tuple(channels[:-1]), channels))

    def init(key):
        return {
            "conv": tuple(_dense_init(key, i, 9 * a, b) for i, (a, b) in enumerate(conv_sizes)),
            "dense": _dense_stack_init(key, dense_sizes, salt=len(conv_sizes)),
        }

    def apply(params, x):
        n = x.shape[0]
        x = x.reshape(n, 8, 8, 1)
        for layer in params["conv"]:
            x = jax.nn.relu(_conv3x3_valid(x, layer))
        half = side // 2
        x = x.reshape(n, half, 2, half, 2, channels[-1]).mean(axis=(2, 4)).reshape(n, pooled)
        for layer in params["dense"][:-1]:
            x = jax.nn.relu(_dense(layer, x))
        return _dense(params["dense"][-1], x)

    return _classifier_fields(apply, init, tx, ty, vx, vy, batch_size=batch_size, num_steps=num_steps, lr=lr)


# ------------------------------------------------------------------------------------------------- wine


def _build_mlp_wine(*, hidden, depth, batch_size, num_steps, lr, num_val, split_seed) -> dict:
    from sklearn.datasets import load_wine

    d = load_wine()
    tr, va = _split_train_val(len(d.target), num_val, split_seed)
    mean, std = d.data[tr].mean(0), d.data[tr].std(0) + 1e-8  # standardize with train statistics only
    x = ((d.data - mean) / std).astype(np.float32)
    y = d.target.astype(np.int32)
    sizes = [x.shape[1]] + [hidden] * depth + [3]

    def init(key):
        return _dense_stack_init(key, sizes)

    def apply(params, h):
        for layer in params[:-1]:
            h = jax.nn.relu(_dense(layer, h))
        return _dense(params[-1], h)

    return _classifier_fields(
        apply, init, x[tr], y[tr], x[va], y[va], batch_size=batch_size, num_steps=num_steps, lr=lr
    )


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


def _encode_text(text: str) -> np.ndarray:
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
            ids = _encode_text(f.read())
        cut = int(len(ids) * (1.0 - val_fraction))
        train.append(ids[:cut])
        val.append(ids[cut:])
    return np.concatenate(train), np.concatenate(val)


def hash_normal_init(stddev: float | None = None):
    """Flax initializer drawing from `hash_normal` (cheap to compile); stddev None = LeCun 1/sqrt(fan_in),
    fan_in = shape[0] (flax hands DenseGeneral kernels over flattened to 2-D)."""

    def init(key, shape, dtype=jnp.float32):
        std = 1.0 / np.sqrt(shape[0]) if stddev is None else stddev
        return (hash_normal(key, 0, tuple(shape)) * jnp.float32(std)).astype(dtype)

    return init


_LECUN = hash_normal_init()


class MLPCharLM(nn.Module):
    """Embeds `context` characters, concatenates them, one tanh hidden layer, logits of the next one."""

    vocab: int
    embed: int
    hidden: int

    @nn.compact
    def __call__(self, ctx):  # (B, context) int -> (B, vocab)
        e = nn.Embed(self.vocab, self.embed, embedding_init=hash_normal_init(1.0))(ctx)
        h = jnp.tanh(nn.Dense(self.hidden, kernel_init=_LECUN)(e.reshape(e.shape[0], -1)))
        return nn.Dense(self.vocab, kernel_init=_LECUN)(h)


class TransformerCharLM(nn.Module):
    """Pre-LayerNorm causal transformer; logits for every position."""

    vocab: int
    context: int
    d_model: int
    heads: int
    layers: int

    @nn.compact
    def __call__(self, x):  # (B, T) int -> (B, T, vocab)
        h = nn.Embed(self.vocab, self.d_model, embedding_init=hash_normal_init(0.02))(x)
        pos = self.param("pos", hash_normal_init(0.02), (self.context, self.d_model))
        h = h + pos[: x.shape[1]]
        mask = nn.make_causal_mask(x)
        for _ in range(self.layers):
            a = nn.LayerNorm()(h)
            h = h + nn.MultiHeadDotProductAttention(
                num_heads=self.heads, qkv_features=self.d_model, kernel_init=_LECUN
            )(a, a, mask=mask)
            m = nn.LayerNorm()(h)
            up = nn.Dense(4 * self.d_model, kernel_init=_LECUN)(m)
            h = h + nn.Dense(self.d_model, kernel_init=_LECUN)(jax.nn.gelu(up))
        return nn.Dense(self.vocab, kernel_init=_LECUN)(nn.LayerNorm()(h))


def _charlm_fields(module, *, context, predict_all, batch_size, num_steps, lr, val_windows) -> dict:
    """Windows of context+1 characters: inputs are the first `context`; the target is the next character
    (`predict_all=False`) or the next character at every position (`predict_all=True`)."""
    train_ids, val_ids = charlm_corpus()
    fingerprint = _array_fingerprint(train_ids, val_ids)
    offsets = np.arange(context + 1)
    starts = np.linspace(0, len(val_ids) - context - 1, val_windows).astype(np.int64)  # evenly spread
    val_win = jnp.asarray(val_ids[starts[:, None] + offsets])
    train_ids = jnp.asarray(train_ids)
    n_starts = train_ids.shape[0] - context - 1

    def split(win):
        return (win[:, :-1], win[:, 1:]) if predict_all else (win[:, :-1], win[:, -1])

    def init(key):
        return module.init(key, jnp.zeros((1, context), jnp.int32))["params"]

    def apply(params, x):
        return module.apply({"params": params}, x)

    def batch(key, step):
        starts = hash_randint(key, step, (batch_size,), n_starts)
        return {"win": train_ids[starts[:, None] + offsets]}

    def loss(params, b):
        x, y = split(b["win"])
        return _cross_entropy(apply(params, x), y)

    def val_loss(params):  # nats per character
        x, y = split(val_win)
        return _cross_entropy(apply(params, x), y)

    def accuracy(params):
        x, y = split(val_win)
        return _accuracy(apply(params, x), y)

    return {
        "init": init,
        "loss": loss,
        "batch": batch,
        "val_loss": val_loss,
        "accuracy": accuracy,
        "num_steps": num_steps,
        "lr": lr,
        "data_fingerprint": fingerprint,
    }


def _build_charlm(*, context, embed, hidden, batch_size, num_steps, lr, val_windows) -> dict:
    module = MLPCharLM(vocab=CHARLM_VOCAB, embed=embed, hidden=hidden)
    return _charlm_fields(
        module,
        context=context,
        predict_all=False,
        batch_size=batch_size,
        num_steps=num_steps,
        lr=lr,
        val_windows=val_windows,
    )


def _build_transformer_charlm(
    *, context, d_model, heads, layers, batch_size, num_steps, lr, val_windows
) -> dict:
    module = TransformerCharLM(
        vocab=CHARLM_VOCAB, context=context, d_model=d_model, heads=heads, layers=layers
    )
    return _charlm_fields(
        module,
        context=context,
        predict_all=True,
        batch_size=batch_size,
        num_steps=num_steps,
        lr=lr,
        val_windows=val_windows,
    )


# -------------------------------------------------------------------------------------- noisy quadratic


def _build_noisy_quadratic(*, dim, condition, noise, init_scale, num_steps, lr, data_seed) -> dict:
    """loss(w; c) = 0.5 (w - c)^T H (w - c), H = Q diag(h) Q^T with eigenvalues log-spaced in
    [1/condition, 1] and a fixed random rotation Q (so per-coordinate preconditioning cannot simply undo
    the conditioning). c = noise * Q diag(h^-1/2) z makes the gradient noise covariance noise^2 * H.
    Validation loss is the exact excess loss 0.5 w^T H w (minimum 0)."""
    rng = np.random.default_rng(data_seed)
    eig = np.logspace(0.0, -np.log10(condition), dim)
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    q = q * np.sign(np.diag(r))  # unique Haar-distributed rotation
    hess = jnp.asarray((q * eig) @ q.T, jnp.float32)
    noise_map = jnp.asarray(q / np.sqrt(eig), jnp.float32)  # z -> Q diag(h^-1/2) z

    def init(key):
        return {"w": init_scale * hash_normal(key, 0, (dim,))}

    def batch(key, step):
        z = hash_normal(key, step, (dim,))
        return {"c": noise * (noise_map @ z)}

    def loss(params, b):
        d = params["w"] - b["c"]
        return 0.5 * d @ (hess @ d)

    def val_loss(params):
        w = params["w"]
        return 0.5 * w @ (hess @ w)

    return {
        "init": init,
        "loss": loss,
        "batch": batch,
        "val_loss": val_loss,
        "num_steps": num_steps,
        "lr": lr,
    }


# ------------------------------------------------------------------------------------------- registry

_DIGITS_SPLIT = {"num_val": 400, "split_seed": 0}
_CHARLM_VAL = {"val_windows": 1024}

register_task(
    "mlp_regression_proxy", "proxy", "mlp_regression", _build_mlp_regression,
    in_dim=8, hidden=32, depth=2, teacher_hidden=32, noise=0.1, batch_size=64, num_steps=150, lr=3e-2,
    val_size=512, data_seed=0,
)  # fmt: skip
register_task(
    "mlp_regression_metaval", "metaval", "mlp_regression", _build_mlp_regression,
    in_dim=8, hidden=64, depth=2, teacher_hidden=32, noise=0.1, batch_size=64, num_steps=600, lr=1e-2,
    val_size=1024, data_seed=0,
)  # fmt: skip
register_task(
    "softmax_digits_proxy", "proxy", "softmax_digits", _build_softmax_digits,
    batch_size=64, num_steps=150, lr=2e-1, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "softmax_digits_metaval", "metaval", "softmax_digits", _build_softmax_digits,
    batch_size=64, num_steps=600, lr=1e-1, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "cnn_digits_proxy", "proxy", "cnn_digits", _build_cnn_digits,
    channels=(8,), dense_hidden=0, batch_size=32, num_steps=150, lr=5e-2, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "cnn_digits_metaval", "metaval", "cnn_digits", _build_cnn_digits,
    channels=(8, 16), dense_hidden=0, batch_size=32, num_steps=600, lr=1e-2, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "cnn_digits_target", "target", "cnn_digits", _build_cnn_digits,
    channels=(16, 32), dense_hidden=64, batch_size=64, num_steps=1500, lr=1e-3, **_DIGITS_SPLIT,
)  # fmt: skip
register_task(
    "charlm_proxy", "proxy", "charlm", _build_charlm,
    context=8, embed=8, hidden=32, batch_size=64, num_steps=200, lr=1e-2, **_CHARLM_VAL,
)  # fmt: skip
register_task(
    "charlm_metaval", "metaval", "charlm", _build_charlm,
    context=16, embed=16, hidden=64, batch_size=64, num_steps=800, lr=3e-3, **_CHARLM_VAL,
)  # fmt: skip
register_task(
    "transformer_charlm_target", "target", "transformer_charlm", _build_transformer_charlm,
    context=32, d_model=32, heads=2, layers=2, batch_size=16, num_steps=1000, lr=3e-3, **_CHARLM_VAL,
)  # fmt: skip
register_task(
    "noisy_quadratic_proxy", "proxy", "noisy_quadratic", _build_noisy_quadratic,
    dim=32, condition=1e3, noise=0.1, init_scale=1.0, num_steps=150, lr=1e-1, data_seed=0,
)  # fmt: skip
register_task(
    "noisy_quadratic_metaval", "metaval", "noisy_quadratic", _build_noisy_quadratic,
    dim=64, condition=1e3, noise=0.1, init_scale=1.0, num_steps=600, lr=3e-2, data_seed=0,
)  # fmt: skip
register_task(
    "mlp_wine_target", "target", "mlp_wine", _build_mlp_wine,
    hidden=64, depth=2, batch_size=32, num_steps=1000, lr=3e-4, num_val=50, split_seed=0,
)  # fmt: skip
