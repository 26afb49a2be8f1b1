"""Optimizer-agnostic population trainer: P members, each training its own copy of a task's model with its
own update rule, in one jitted call.

Members' parameters live as one flat float32 matrix `w` of shape (P, N) (each member's pytree raveled leaf
by leaf, see `FlatLayout`); the update rule sees flat (P, N) gradients and parameters and returns the update,
the trainer does `w <- w - update`. The encoded programs travel as the traced `opt_args` argument, so a new
population of programs never recompiles: one compile per (task, P, N).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from envs.task_data import hash_bits
from envs.tasks import Task

# update_fn(opt_state, g, w, lr, t, h, opt_args) -> (update, opt_state); arrays (P, N) but lr (P,) and t ().
UpdateFn = Callable[..., tuple[jax.Array, Any]]
InitOptState = Callable[[int, int], Any]


class FlatLayout(NamedTuple):
    """Static description of ONE member's params flattened to a vector of `size` float32 values."""

    size: int  # N
    segments: tuple[tuple[int, int], ...]  # (start, length) per leaf, in ravel order (per-tensor reductions)
    shapes: tuple[tuple[int, ...], ...]  # each leaf's shape, in ravel order
    treedef: Any  # jax.tree_util.PyTreeDef of the params pytree


def flat_layout(params) -> FlatLayout:
    """Layout of `params` (arrays or jax.ShapeDtypeStructs) of one member; leaves in jax.tree order."""
    leaves, treedef = jax.tree.flatten(params)
    shapes, segments, start = [], [], 0
    for leaf in leaves:
        if leaf.dtype != jnp.float32:
            raise ValueError(
                f"flat_layout: every parameter must be float32, got a {leaf.dtype} leaf {leaf.shape}"
            )
        shape = tuple(int(d) for d in leaf.shape)
        length = math.prod(shape)
        shapes.append(shape)
        segments.append((start, length))
        start += length
    return FlatLayout(size=start, segments=tuple(segments), shapes=tuple(shapes), treedef=treedef)


def ravel(layout: FlatLayout, params) -> jax.Array:
    """One member's params -> (N,) vector."""
    leaves = jax.tree.leaves(params)
    return jnp.concatenate([jnp.reshape(leaf, (-1,)) for leaf in leaves]) if leaves else jnp.zeros((0,))


def unravel(layout: FlatLayout, vec: jax.Array):
    """(N,) vector -> one member's params pytree."""
    leaves = [vec[s : s + n].reshape(shape) for (s, n), shape in zip(layout.segments, layout.shapes)]
    return jax.tree.unflatten(layout.treedef, leaves)


def task_layout(task: Task) -> FlatLayout:
    """The flat layout of one member of `task` (from shapes only; nothing is computed)."""
    return flat_layout(jax.eval_shape(task.init, jax.random.key(0)))


def segment_ids(layout: FlatLayout) -> np.ndarray:
    """(N,) int32: which leaf each flat coordinate belongs to (for `jax.ops.segment_sum`-style reductions)."""
    return np.repeat(np.arange(len(layout.segments), dtype=np.int32), [n for _, n in layout.segments])


def as_typed_keys(keys) -> jax.Array:
    """(P,) typed PRNG keys from typed keys or raw (P, 2) uint32 key data."""
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        return keys
    return jax.random.wrap_key_data(keys.astype(jnp.uint32))


def hutchinson_diagonal(loss_fn, w, batch, key) -> jax.Array:
    """z * (H z), Rademacher z: an unbiased estimate of the diagonal of the Hessian of loss_fn(., batch) at
    the flat params w of one member; H z is a Hessian-vector product (forward-over-reverse)."""
    z = 1.0 - 2.0 * (hash_bits(key, 0, w.shape) & 1).astype(jnp.float32)
    _, hz = jax.jvp(lambda v: jax.grad(loss_fn)(v, batch), (w,), (z,))
    return z * hz


@functools.lru_cache(maxsize=64)
def make_population_trainer(
    task: Task,
    update_fn: UpdateFn,
    init_opt_state: InitOptState,
    *,
    needs_hessian: bool = False,
    hessian_every: int = 10,
    curve_every: int = 0,
    loss_scale: bool = False,
):
    """Returns jitted train(keys: (P,2) raw or (P,) typed keys, lrs: (P,), opt_args[, loss_scales: (P,)]) -> dict
    with
      'val_loss': (P,) final validation loss; +inf for members that diverged (non-finite train loss or params
                  at any step) or whose final validation loss is non-finite,
      'train_loss': (P,) mean training loss over the last max(1, num_steps // 10) steps (+inf if diverged),
      'diverged': (P,) bool,
      'val_accuracy': (P,) where the task has an accuracy,
      'curve': (P, num_steps // curve_every) mean training loss per window, when curve_every > 0.
    Member p initializes from fold_in(keys[p], 0) and draws its data stream from fold_in(keys[p], 1) (give
    all programs the same keys for a fair comparison; Hutchinson probes use fold_in(keys[p], 2)). `opt_args`
    (any pytree) is passed untouched to update_fn: new values of the same shapes reuse the compiled code.
    With needs_hessian, update_fn's `h` is the Hutchinson diagonal-Hessian estimate z * (H z) (Rademacher z)
    on the current batch, refreshed at steps 1, 1 + hessian_every, ... and held in between; otherwise None.
    With loss_scale, train takes a fourth argument loss_scales: (P,) positive factors: member p trains on
    loss_scales[p] * loss, i.e. update_fn sees its gradient (and Hessian estimate) multiplied by that factor
    (the re-parameterization augmentation of Celo2: a scale-invariant rule is unaffected); the reported losses
    ('val_loss', 'train_loss', 'curve') stay unscaled. New scales never recompile.
    Cached: the same (task, update_fn, init_opt_state, options) returns the same jitted function.
    """
    if hessian_every < 1:
        raise ValueError(f"hessian_every must be >= 1, got {hessian_every}")
    if curve_every < 0 or (curve_every > 0 and curve_every > task.num_steps):
        raise ValueError(f"curve_every must be in [0, num_steps={task.num_steps}], got {curve_every}")
    layout = task_layout(task)
    num_steps = task.num_steps
    last_window = max(1, num_steps // 10)

    def member_loss(w, batch):
        return task.loss(unravel(layout, w), batch)

    value_and_grad = jax.vmap(jax.value_and_grad(member_loss))
    batch_fn = jax.vmap(task.batch, in_axes=(0, None))

    def hutchinson(w, batch, key):
        return hutchinson_diagonal(member_loss, w, batch, key)

    def train(keys, lrs, opt_args, loss_scales=None):
        keys = as_typed_keys(keys)
        num_members = keys.shape[0]
        init_keys, data_keys, hess_keys = (
            jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys) for i in range(3)
        )
        w = jax.vmap(lambda k: ravel(layout, task.init(k)))(init_keys)
        lrs = jnp.broadcast_to(jnp.asarray(lrs, jnp.float32), (num_members,))
        opt_state = init_opt_state(num_members, layout.size)
        h = jnp.zeros_like(w) if needs_hessian else None
        diverged = jnp.zeros((num_members,), bool)
        scales = None if loss_scales is None else jnp.asarray(loss_scales, jnp.float32).reshape(num_members, 1)

        def step(carry, i):
            w, opt_state, h, diverged = carry
            batch = batch_fn(data_keys, i)
            loss, g = value_and_grad(w, batch)
            if needs_hessian:
                step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(hess_keys)

                def fresh():
                    estimate = jax.vmap(hutchinson)(w, batch, step_keys)
                    return estimate if scales is None else estimate * scales  # Hessian of scale * loss

                h = jax.lax.cond(i % hessian_every == 0, fresh, lambda: h)
            if scales is not None:
                g = g * scales  # the gradient of scale * loss; `loss` (reported) stays unscaled
            t = (i + 1).astype(jnp.float32)
            update, opt_state = update_fn(opt_state, g, w, lrs, t, h, opt_args)
            w_new = w - update
            # Divergence guard: a member whose loss or params go non-finite is frozen (no NaN/inf arithmetic
            # in later steps) and reported as +inf from then on.
            diverged = diverged | ~jnp.isfinite(loss) | ~jnp.all(jnp.isfinite(w_new), axis=1)
            w = jnp.where(diverged[:, None], w, w_new)
            return (w, opt_state, h, diverged), jnp.where(diverged, jnp.inf, loss)

        (w, _, _, diverged), losses = jax.lax.scan(
            step, (w, opt_state, h, diverged), jnp.arange(num_steps, dtype=jnp.int32)
        )
        params = jax.vmap(lambda v: unravel(layout, v))(w)
        val = jax.vmap(task.val_loss)(params)
        val = jnp.where(diverged | ~jnp.isfinite(val), jnp.inf, val)
        out = {
            "val_loss": val,
            "train_loss": jnp.mean(losses[-last_window:], axis=0),
            "diverged": diverged,
        }
        if task.accuracy is not None:
            out["val_accuracy"] = jnp.where(diverged, 0.0, jax.vmap(task.accuracy)(params))
        if curve_every:
            windows = num_steps // curve_every
            out["curve"] = (
                losses[: windows * curve_every].reshape(windows, curve_every, num_members).mean(1).T
            )
        return out

    if loss_scale:
        return jax.jit(lambda keys, lrs, opt_args, loss_scales: train(keys, lrs, opt_args, loss_scales))
    return jax.jit(lambda keys, lrs, opt_args: train(keys, lrs, opt_args))


# ------------------------------------------------------------------------------------------ AdamW (optax)


@functools.cache
def adamw_update_fn(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, wd: float = 1e-4) -> UpdateFn:
    """`optax.adamw` vmapped over members in the flat (P, N) form, learning rate per member.

    optax.adamw(learning_rate=1.0) returns -(adam_direction + wd * w); scaling it by the member's lr is
    exactly optax.adamw(learning_rate=lr) (decoupled weight decay scaled by lr, as in optax). The state is
    `adamw_init_opt_state(P, N)`."""
    tx = optax.adamw(learning_rate=1.0, b1=b1, b2=b2, eps=eps, weight_decay=wd)

    def update_fn(opt_state, g, w, lr, t, h, opt_args):
        updates, opt_state = jax.vmap(tx.update)(g, opt_state, w)
        return -lr[:, None] * updates, opt_state

    return update_fn


def adamw_init_opt_state(num_members: int, size: int):
    """Opt state of `adamw_update_fn` for P members of N params (identical for every b1/b2/eps/wd)."""
    tx = optax.adamw(learning_rate=1.0)
    return jax.vmap(tx.init)(jnp.zeros((num_members, size), jnp.float32))
