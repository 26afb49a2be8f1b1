"""The task families of envs/tasks.py: model definitions and one ``_build_*`` function per family.

A builder takes the family's keyword parameters and returns the Task fields init/loss/batch/val_loss/
num_steps/lr (+ optional accuracy and ``data_fingerprint``), or instead of the closures a ``program`` and its
``data`` (the supervised families: envs/supervised.py). A builder's ``__name__`` is part of every
task's spec (hence of the tuned-AdamW baseline cache key): do not rename them.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from envs.supervised import accuracy, cross_entropy, supervised_fields
from envs.task_data import (
    CHARLM_VOCAB,
    array_fingerprint,
    charlm_corpus,
    digits_split,
    hash_normal,
    hash_randint,
    split_train_val,
)

# ----------------------------------------------------------------------------------------------- layers


def _dense_init(key, salt: int, fan_in: int, fan_out: int, scale: float = 1.0) -> dict:
    """LeCun-normal weights, zero bias; `salt` tells a model's layers apart."""
    w = hash_normal(key, salt, (fan_in, fan_out)) * jnp.float32(scale / np.sqrt(fan_in))
    return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def _dense_stack_init(key, sizes: list[int], salt: int = 0) -> tuple:
    return tuple(_dense_init(key, salt + i, a, b) for i, (a, b) in enumerate(itertools.pairwise(sizes)))


def _dense(p: dict, x):
    return x @ p["w"] + p["b"]


_cross_entropy, _accuracy = cross_entropy, accuracy


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


def _classifier_fields(apply, init, train_x, train_y, val_x, val_y, *, batch_size, num_steps, lr) -> dict:
    """A classifier `apply(params, x) -> logits`: cross-entropy, with accuracy."""
    return supervised_fields(apply, init, train_x, train_y, val_x, val_y, batch_size=batch_size,
                             num_steps=num_steps, lr=lr, kind="classification")


def _regression_fields(apply, init, train_x, train_y, val_x, val_y, *, batch_size, num_steps, lr) -> dict:
    """A regression `apply(params, x) -> (n, out)`: mean squared error."""
    return supervised_fields(apply, init, train_x, train_y, val_x, val_y, batch_size=batch_size,
                             num_steps=num_steps, lr=lr, kind="regression")


def _build_softmax_digits(*, batch_size, num_steps, lr, num_val, split_seed) -> dict:
    tx, ty, vx, vy = digits_split(num_val, split_seed)

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
    tx, ty, vx, vy = digits_split(num_val, split_seed)
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
    tr, va = split_train_val(len(d.target), num_val, split_seed)
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
    fingerprint = array_fingerprint(train_ids, val_ids)
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


# family -> builder: envs/tasks.py registers each family's proxy / metaval / target versions with these
BUILDERS = {
    "mlp_regression": _build_mlp_regression,
    "softmax_digits": _build_softmax_digits,
    "cnn_digits": _build_cnn_digits,
    "charlm": _build_charlm,
    "transformer_charlm": _build_transformer_charlm,
    "noisy_quadratic": _build_noisy_quadratic,
    "mlp_wine": _build_mlp_wine,
}
