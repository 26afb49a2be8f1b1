"""Optimizer-agnostic population trainer: P members, each training its own copy of a task's model with its
own update rule, in one jitted call.

Members' parameters live as one flat float32 matrix `w` of shape (P, N) (each member's pytree raveled leaf
by leaf, see `FlatLayout`); the update rule sees flat (P, N) gradients and parameters and returns the update,
the trainer does `w <- w - update`. The encoded programs travel as the traced `opt_args` argument, so a new
population of programs never recompiles: one compile per (task, P, N). A task with a `program` passes its data as
an argument too: one compile per (program, steps, data shapes, P), shared by tasks that differ only in data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from envs.task_data import hash_bits
from envs.tasks import LR_SCHEDULES, Task

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


@dataclasses.dataclass(frozen=True)
class ClosureProgram:
    """A task given as closures (its data baked in) in the program form: equal only for the same closures."""

    init_fn: Callable
    loss_fn: Callable
    batch_fn: Callable
    val_loss_fn: Callable
    accuracy_fn: Callable | None

    @property
    def has_accuracy(self) -> bool:
        return self.accuracy_fn is not None

    def init(self, data, key):
        return self.init_fn(key)

    def loss(self, data, params, batch):
        return self.loss_fn(params, batch)

    def batch(self, data, key, step):
        return self.batch_fn(key, step)

    def val_loss(self, data, params):
        return self.val_loss_fn(params)

    def accuracy(self, data, params):
        return self.accuracy_fn(params)


def task_program(task: Task) -> tuple[Any, Any]:
    """(program, data) of a task: what its trainer compiles and what it passes as an argument. A program has
    init(data, key), loss(data, params, batch), batch(data, key, step), val_loss(data, params), has_accuracy and
    accuracy(data, params); equal programs with the same num_steps and data shapes share one compilation."""
    if task.program is not None:
        return task.program, task.data
    return ClosureProgram(task.init, task.loss, task.batch, task.val_loss, task.accuracy), ()


# The name of JAX's backend-compile event (jax.monitoring's public listener API; the constant itself is private;
# the runner's compile counter listens for it too).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
# glibc keeps what XLA frees after compiling a trainer (100-150 MB of LLVM's working memory, spread over the
# compile threads' arenas) and grows the next compile on top of it: returning it to the system after every
# compile that took a while keeps a peak RSS near what is held plus one compile (quickstart: -140 MB).
TRIM_AFTER_COMPILES_OVER_S = 0.1


@functools.cache
def trim_memory_after_compiles() -> bool:
    """Installs (once) a listener returning freed heap memory to the system after every XLA compilation longer
    than TRIM_AFTER_COMPILES_OVER_S (glibc's malloc_trim; nothing elsewhere). True if installed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]

    def listener(name, duration, *_args, **_kwargs):
        if name == BACKEND_COMPILE_EVENT and duration > TRIM_AFTER_COMPILES_OVER_S:
            trim(0)

    jax.monitoring.register_event_duration_secs_listener(listener)
    return True


CACHE_SIZE = 64  # trainers kept in each cache below (the oldest is dropped first)
_TRAINERS: dict[tuple, Any] = {}  # make_population_trainer's, by (update_fn, task, init_opt_state, options)
_CORES: dict[tuple, Any] = {}  # the jitted cores, by (update_fn, program, num_steps, layout, init_opt_state, options)


def _cached(cache: dict, key: tuple, make: Callable):
    if key not in cache:
        while len(cache) >= CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = make()
    return cache[key]


def clear_trainers(update_fn: UpdateFn | None = None) -> None:
    """Forgets the trainers of `update_fn` (every trainer when None): their compiled code is freed once nobody
    holds them (`jax.clear_caches` also drops what JAX keeps of them)."""
    for cache in (_TRAINERS, _CORES):
        for key in [k for k in cache if update_fn is None or k[0] is update_fn]:
            del cache[key]


def data_signature(data) -> tuple:
    """(shape, dtype) of every leaf of a task's data: with the program and steps, what its trainer compiles for."""
    return tuple((np.shape(x), np.result_type(x).str) for x in jax.tree.leaves(data))


class TaskTrainer:
    """A task's trainer: `core(data, *args)` (shared by every task of the same program and shapes) with the
    task's data bound; `.core` and `.data` for callers that pass the data themselves (the sharded scorer)."""

    def __init__(self, core: Callable, data: Any):
        self.core, self.data = core, data

    def __call__(self, *args):
        return self.core(self.data, *args)

    def lower(self, *args):
        return self.core.lower(self.data, *args)


def make_population_trainer(
    task: Task,
    update_fn: UpdateFn,
    init_opt_state: InitOptState,
    *,
    needs_hessian: bool = False,
    hessian_every: int = 10,
    curve_every: int = 0,
    loss_scale: bool = False,
    val_points: int = 1,
) -> TaskTrainer:
    """Returns train(keys: (P,2) raw or (P,) typed keys, lrs: (P,), opt_args[, loss_scales: (P,)]) -> dict
    with
      'val_loss': (P,) final validation loss; +inf for members that diverged (non-finite train loss or params
                  at any step) or whose final validation loss is non-finite,
      'train_loss': (P,) mean training loss over the last max(1, num_steps // 10) steps (+inf if diverged),
      'diverged': (P,) bool,
      'val_accuracy': (P,) where the task has an accuracy,
      'curve': (P, num_steps // curve_every) mean training loss per window, when curve_every > 0,
      'val_loss_window': (P,) when val_points > 1, the mean validation loss after val_points steps spaced
                  max(1, (num_steps // 10) // val_points) apart, the last step included (+inf where 'val_loss'
                  is): an average over late iterates, less sensitive to where the last step happened to land.
    Member p initializes from fold_in(keys[p], 0) and draws its data stream from fold_in(keys[p], 1) (give
    all programs the same keys for a fair comparison; Hutchinson probes use fold_in(keys[p], 2)). `opt_args`
    (any pytree) is passed untouched to update_fn: new values of the same shapes reuse the compiled code.
    With needs_hessian, update_fn's `h` is the Hutchinson diagonal-Hessian estimate z * (H z) (Rademacher z)
    on the current batch, refreshed at steps 1, 1 + hessian_every, ... and held in between; otherwise None.
    With loss_scale, train takes a fourth argument loss_scales: (P,) positive factors: member p trains on
    loss_scales[p] * loss, i.e. update_fn sees its gradient (and Hessian estimate) multiplied by that factor
    (the re-parameterization augmentation of Celo2: a scale-invariant rule is unaffected); the reported losses
    ('val_loss', 'train_loss', 'curve') stay unscaled. New scales never recompile.
    Under the task's `lr_schedule` (envs.tasks.LR_SCHEDULES), update_fn's lr at step i is lrs * lr_factor(i).
    Cached: the same (task, update_fn, init_opt_state, options) returns the same trainer; its jitted `core` takes
    the task's data first and is shared with every task of the same program and num_steps (`task_program`).
    """
    if hessian_every < 1:
        raise ValueError(f"hessian_every must be >= 1, got {hessian_every}")
    if curve_every < 0 or (curve_every > 0 and curve_every > task.num_steps):
        raise ValueError(f"curve_every must be in [0, num_steps={task.num_steps}], got {curve_every}")
    if val_points < 1:
        raise ValueError(f"val_points must be >= 1, got {val_points}")
    trim_memory_after_compiles()
    options = (init_opt_state, needs_hessian, hessian_every, curve_every, loss_scale, val_points, task.lr_schedule)

    def make():
        program, data = task_program(task)
        core = _cached(_CORES, (update_fn, program, task.num_steps, task_layout(task), *options),
                       lambda: _data_trainer(program, task.num_steps, task_layout(task), update_fn, *options))
        return TaskTrainer(core, data)

    return _cached(_TRAINERS, (update_fn, task, *options), make)


def lr_factor(schedule: str, num_steps: int) -> Callable[[jax.Array], jax.Array]:
    """step index -> the factor on the lr at that step under ``schedule`` (envs.tasks.LR_SCHEDULES)."""
    if schedule == "constant":
        return optax.constant_schedule(1.0)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(1.0, num_steps)
    raise ValueError(f"unknown lr schedule '{schedule}' (known: {', '.join(LR_SCHEDULES)})")


def _data_trainer(program, num_steps: int, layout: FlatLayout, update_fn: UpdateFn, init_opt_state: InitOptState,
                  needs_hessian: bool, hessian_every: int, curve_every: int, loss_scale: bool, val_points: int = 1,
                  lr_schedule: str = "constant"):
    """The jitted train(data, keys, lrs, opt_args[, loss_scales]) of `make_population_trainer`."""
    factor = lr_factor(lr_schedule, num_steps)
    last_window = max(1, num_steps // 10)
    # val_points evaluations spaced `stride` steps apart, ending at the last step (the first no earlier than step 0)
    stride = max(1, last_window // val_points)
    first_eval = max(0, num_steps - 1 - stride * (val_points - 1))

    def train(data, keys, lrs, opt_args, loss_scales=None):
        def member_loss(w, batch):
            return program.loss(data, unravel(layout, w), batch)

        value_and_grad = jax.vmap(jax.value_and_grad(member_loss))
        batch_fn = jax.vmap(lambda key, i: program.batch(data, key, i), in_axes=(0, None))

        def hutchinson(w, batch, key):
            return hutchinson_diagonal(member_loss, w, batch, key)

        keys = as_typed_keys(keys)
        num_members = keys.shape[0]
        init_keys, data_keys, hess_keys = (
            jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys) for i in range(3)
        )
        w = jax.vmap(lambda k: ravel(layout, program.init(data, k)))(init_keys)
        lrs = jnp.broadcast_to(jnp.asarray(lrs, jnp.float32), (num_members,))
        opt_state = init_opt_state(num_members, layout.size)
        h = jnp.zeros_like(w) if needs_hessian else None
        diverged = jnp.zeros((num_members,), bool)
        scales = None if loss_scales is None else jnp.asarray(loss_scales, jnp.float32).reshape(num_members, 1)

        def member_val(w):
            return jax.vmap(lambda v: program.val_loss(data, unravel(layout, v)))(w)

        def step(carry, i):
            w, opt_state, h, diverged, val_sum = carry
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
            step_lrs = lrs if lr_schedule == "constant" else lrs * factor(i)
            update, opt_state = update_fn(opt_state, g, w, step_lrs, t, h, opt_args)
            w_new = w - update
            # Divergence guard: a member whose loss or params go non-finite is frozen (no NaN/inf arithmetic
            # in later steps) and reported as +inf from then on.
            diverged = diverged | ~jnp.isfinite(loss) | ~jnp.all(jnp.isfinite(w_new), axis=1)
            w = jnp.where(diverged[:, None], w, w_new)
            if val_points > 1:
                evaluate = (i >= first_eval) & ((num_steps - 1 - i) % stride == 0)
                val_sum = val_sum + jax.lax.cond(evaluate, member_val, lambda v: jnp.zeros((num_members,)), w)
            return (w, opt_state, h, diverged, val_sum), jnp.where(diverged, jnp.inf, loss)

        val_sum = jnp.zeros((num_members,), jnp.float32)
        (w, _, _, diverged, val_sum), losses = jax.lax.scan(
            step, (w, opt_state, h, diverged, val_sum), jnp.arange(num_steps, dtype=jnp.int32)
        )
        params = jax.vmap(lambda v: unravel(layout, v))(w)
        val = jax.vmap(lambda p: program.val_loss(data, p))(params)
        val = jnp.where(diverged | ~jnp.isfinite(val), jnp.inf, val)
        out = {
            "val_loss": val,
            "train_loss": jnp.mean(losses[-last_window:], axis=0),
            "diverged": diverged,
        }
        if program.has_accuracy:
            out["val_accuracy"] = jnp.where(diverged, 0.0, jax.vmap(lambda p: program.accuracy(data, p))(params))
        if val_points > 1:
            points = len(range(num_steps - 1, first_eval - 1, -stride))
            window = val_sum / points
            out["val_loss_window"] = jnp.where(~jnp.isfinite(val) | ~jnp.isfinite(window), jnp.inf, window)
        if curve_every:
            windows = num_steps // curve_every
            out["curve"] = (
                losses[: windows * curve_every].reshape(windows, curve_every, num_members).mean(1).T
            )
        return out

    if loss_scale:
        return jax.jit(lambda data, keys, lrs, opt_args, loss_scales: train(data, keys, lrs, opt_args, loss_scales))
    return jax.jit(lambda data, keys, lrs, opt_args: train(data, keys, lrs, opt_args))




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
