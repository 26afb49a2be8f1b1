"""How `discover transfer` tunes each optimizer: the grid cut to a budget or Bayesian optimization over log lr x
log wd (:mod:`discover.shared.tuner`), the point chosen on the tuning seeds and retrained on fresh ones."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from discover.infra.errors import InputError
from discover.language.optax_export import to_optax
from discover.language.program import Program
from discover.shared import tuner as bo_tuner
from discover.shared.transfer_report import json_float, mean_se
from envs import tasks as task_registry
from envs.baselines import reference_keys
from envs.train import make_population_trainer, ravel, task_layout, unravel
from search_spaces.update_rules import PROGRAM_NAMES, SEED_NAMES, seed

REPLICATION_SHIFT = 10_000  # replication seeds start this far after the fresh seeds (transfer --replicate-seeds)
FRESH_SEED_OFFSET = 10_000  # fresh seed s trains with jax.random.key(FRESH_SEED_OFFSET + s); tuning seeds are 0..
BO_SEED = 0  # the BO tuner's seed: the same initial design for every optimizer
BO_WD_ZERO = 1e-3  # a 0 in the wd grid: the BO box reaches down to max(wd_grid) * BO_WD_ZERO
CURVE_POINTS = 50



# ----------------------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Optimizer:
    """``make(lr) -> optax transformation`` (lr may be traced); ``program`` for discovered/seed programs."""

    name: str  # the label in tables
    kind: str  # "program" | "baseline"
    make: Callable = dataclasses.field(compare=False, hash=False)
    program: Program | None = None
    source: str = ""  # what it is, in words

    @property
    def reads_h(self) -> bool:
        return self.program is not None and self.program.reads_h


_NATIVE = {
    "adamw": ("AdamW", lambda lr: optax.adamw(lr, weight_decay=0.0), "optax.adamw (b1 0.9, b2 0.999, eps 1e-8)"),
    "lion": ("Lion", lambda lr: optax.lion(lr, weight_decay=0.0), "optax.lion (b1 0.9, b2 0.99)"),
    "sgdm": ("SGD-M", lambda lr: optax.sgd(lr, momentum=0.9), "optax.sgd with momentum 0.9"),
    # Published optimizers at optax's defaults, their own weight decay 0 (the tuner adds one): a panel of what
    # the field already knows, to measure how far tuned AdamW can be beaten on a set of targets at all.
    "nadamw": ("NAdamW", lambda lr: optax.nadamw(lr, weight_decay=0.0), "optax.nadamw (Nesterov Adam)"),
    "radam": ("RAdam", lambda lr: optax.radam(lr), "optax.radam (rectified Adam)"),
    "amsgrad": ("AMSGrad", lambda lr: optax.amsgrad(lr), "optax.amsgrad"),
    "adan": ("Adan", lambda lr: optax.adan(lr), "optax.adan (b1 0.98, b2 0.92, b3 0.99)"),
    "adopt": ("ADOPT", lambda lr: optax.contrib.adopt(lr), "optax.contrib.adopt (b2 0.9999, eps 1e-6)"),
    "ademamix": ("AdEMAMix", lambda lr: optax.contrib.ademamix(lr),
                 "optax.contrib.ademamix (b3 0.9999, alpha 5, no warm-up of either)"),
    # consistent_rms 0.2 scales Muon's orthogonalized step to AdamW's typical RMS (arXiv 2502.16982), so one lr
    # serves its matrices and the AdamW it runs on every non-2D parameter (biases, conv kernels).
    "muon": ("Muon", lambda lr: optax.contrib.muon(lr, consistent_rms=0.2),
             "optax.contrib.muon on 2-D parameters (Nesterov, 5 Newton-Schulz steps, RMS 0.2), AdamW on the rest"),
}


def baseline_optimizer(name: str) -> Optimizer:
    """optax's own (``adamw``, ``lion``, ``sgdm`` and the panel above), any seed program or shipped discovery by
    name."""
    if name in _NATIVE:
        label, make, source = _NATIVE[name]
        return Optimizer(label, "baseline", make, None, source)
    if name in PROGRAM_NAMES:
        program = seed(name)
        kind = "seed program" if name in SEED_NAMES else "shipped discovery"
        return Optimizer(name, "baseline", _program_maker(program), program, f"{kind} '{name}' via to_optax")
    known = ", ".join(list(_NATIVE) + [n for n in PROGRAM_NAMES if n not in _NATIVE])
    raise InputError(f"unknown baseline '{name}' (known: {known})")


def _program_maker(program: Program) -> Callable:
    return lambda lr: to_optax(program, lr)


def program_optimizer(name: str, program: Program) -> Optimizer:
    return Optimizer(name, "program", _program_maker(program), program, "discovered program via to_optax")


def with_weight_decay(opt: Optimizer, lr, wd) -> optax.GradientTransformation:
    """The optimizer at (lr, wd): decoupled weight decay ``w <- w - lr * wd * w`` added to its update."""
    return optax.chain(opt.make(lr), optax.add_decayed_weights(-lr * wd))


# ----------------------------------------------------------------------------------------------------------
# Training: (lr, wd) points x seeds in one jitted call
# ----------------------------------------------------------------------------------------------------------
def _update_fn(opt: Optimizer, layout):
    """Population update for the trainer: member p runs ``with_weight_decay(opt, lr_p, wd_p)`` on its own
    parameter pytree (opt_args = the (P,) weight decays)."""

    def one(state, g, w, lr, wd, h):
        tx = with_weight_decay(opt, lr, wd)
        extra = {"h": unravel(layout, h)} if opt.reads_h else {}
        updates, state = tx.update(unravel(layout, g), state, unravel(layout, w), **extra)
        return -ravel(layout, updates), state  # the trainer subtracts its update

    def update_fn(opt_state, g, w, lrs, t, h, wds):
        del t  # the transformations count their own steps
        return jax.vmap(one)(opt_state, g, w, lrs, wds, h)

    return update_fn


def _init_fn(opt: Optimizer, layout):
    tx = with_weight_decay(opt, 1.0, 0.0)  # the state's structure does not depend on lr or wd
    return lambda P, N: jax.vmap(lambda w: tx.init(unravel(layout, w)))(jnp.zeros((P, N), jnp.float32))


@functools.lru_cache(maxsize=32)
def grid_trainer(task: task_registry.Task, opt: Optimizer, curve_every: int):
    layout = task_layout(task)
    return make_population_trainer(task, _update_fn(opt, layout), _init_fn(opt, layout),
                                   needs_hessian=opt.reads_h, curve_every=curve_every)


def curve_every_for(num_steps: int) -> int:
    return max(1, num_steps // CURVE_POINTS)


def fresh_keys(n: int, offset: int = FRESH_SEED_OFFSET) -> jax.Array:
    """The report's seeds: ``jax.random.key(offset + s)``, disjoint from the tuning seeds
    (:func:`envs.baselines.reference_keys`, keys 0 .. seeds - 1). Another ``offset`` draws another set: a
    replication on seeds no earlier report used."""
    return reference_keys(n, offset)


def run_points(task: task_registry.Task, opt: Optimizer, lrs: Sequence[float], wds: Sequence[float],
               keys: jax.Array) -> dict[str, np.ndarray]:
    """Final val loss (and accuracy), divergence and training-loss curves of every (lrs[i], wds[i]) point with
    every key, in ONE trainer call: arrays shaped (points, keys[, curve points])."""
    n, S = len(lrs), keys.shape[0]
    if len(wds) != n:
        raise ValueError(f"run_points: {n} lrs but {len(wds)} wds")
    every = curve_every_for(task.num_steps)
    train = grid_trainer(task, opt, every)
    member_keys = jnp.tile(keys, n)  # member = (point, seed), seed fastest: the same seeds at every point
    member_lrs = jnp.asarray(np.repeat(np.asarray(lrs, np.float64), S), jnp.float32)
    member_wds = jnp.asarray(np.repeat(np.asarray(wds, np.float64), S), jnp.float32)
    out = jax.device_get(train(member_keys, member_lrs, member_wds))
    shape = (n, S)
    result = {
        "val_loss": np.asarray(out["val_loss"], np.float64).reshape(shape),
        "diverged": np.asarray(out["diverged"], bool).reshape(shape),
        "curve": np.asarray(out["curve"], np.float64).reshape(shape + (-1,)),
        "curve_steps": (np.arange(np.asarray(out["curve"]).shape[-1]) + 1) * every,
    }
    if "val_accuracy" in out:
        result["val_accuracy"] = np.asarray(out["val_accuracy"], np.float64).reshape(shape)
    return result


def run_grid(task: task_registry.Task, opt: Optimizer, lrs: Sequence[float], wds: Sequence[float],
             seeds: int) -> dict[str, np.ndarray]:
    """:func:`run_points` over the grid ``lrs`` x ``wds`` with the tuning seeds (``reference_keys(seeds)``):
    arrays shaped (len(lrs), len(wds), seeds[, curve points])."""
    L, W = len(lrs), len(wds)
    point_lrs = np.repeat(np.asarray(lrs, np.float64), W)
    point_wds = np.tile(np.asarray(wds, np.float64), L)
    out = run_points(task, opt, point_lrs, point_wds, reference_keys(seeds))
    return {k: (v if k == "curve_steps" else v.reshape((L, W) + v.shape[1:])) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------------
# Tuning: the trials of one optimizer, and the chosen point
# ----------------------------------------------------------------------------------------------------------
def cut_grid(multipliers: Sequence[float], wds: Sequence[float], budget: int | None
             ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The grid a ``budget`` allows: the whole grid without one; else every weight decay and
    ``budget // len(wds)`` lr multipliers spread evenly over the (sorted) lr grid, its ends included (with a
    budget under ``len(wds)``: the lr multiplier nearest 1 and ``budget`` weight decays)."""
    multipliers, wds = tuple(sorted(multipliers)), tuple(sorted(wds))
    if budget is None or budget >= len(multipliers) * len(wds):
        return multipliers, wds

    def spread(values, k):
        return tuple(values[i] for i in np.unique(np.round(np.linspace(0, len(values) - 1, k)).astype(int)))

    if budget < len(wds):
        nearest = min(multipliers, key=lambda m: abs(math.log(m)))
        return (nearest,), spread(wds, budget)
    return spread(multipliers, budget // len(wds)), wds


def _trial_rows(task, lrs_mult: Sequence[float], wds: Sequence[float], val: np.ndarray) -> list[dict]:
    rows = []
    for m, wd, v in zip(lrs_mult, wds, val):
        ok = bool(np.isfinite(v).all())
        rows.append({"lr": float(task.lr * m), "lr_multiplier": float(m), "wd": float(wd),
                     "val_loss_seeds": [json_float(x) for x in v],
                     "val_loss_mean": float(v.mean()) if ok else None})
    return rows


def select(val: np.ndarray) -> int | None:
    """The trial (row of ``val``: trials x seeds) with the lowest mean over seeds, among those where no seed
    diverged; None when every trial diverged somewhere."""
    ok = np.isfinite(val).all(axis=1)
    if not ok.any():
        return None
    return int(np.argmin(np.where(ok, val.mean(axis=1), np.inf)))


def _chosen(trial: dict, val: np.ndarray, at_edge: bool) -> dict:
    m, se = mean_se(val)
    return {"lr": trial["lr"], "lr_multiplier": trial["lr_multiplier"], "wd": trial["wd"], "at_lr_edge": at_edge,
            "tuning_val_loss_mean": m, "tuning_val_loss_se": se, "tuning_val_loss_seeds": [float(x) for x in val]}


def summarize(grid: dict, lrs: Sequence[float], multipliers: Sequence[float], wds: Sequence[float]) -> dict:
    """The grid's chosen point (lowest mean val loss over the tuning seeds, diverged points excluded) with the
    tuning seeds' mean and standard error there (``best``: None when every point diverged)."""
    val = grid["val_loss"]
    L, W, S = val.shape
    flat = val.reshape(L * W, S)
    ok = np.isfinite(val).all(axis=2)
    mean = np.where(ok, val.mean(axis=2), np.inf)
    summary = {"diverged_runs": int(grid["diverged"].sum()), "runs": int(val.size),
               "mean_val_loss_grid": [[json_float(x) for x in row] for row in mean]}
    i = select(flat)
    if i is None:
        summary["best"] = None
        return summary
    li, wi = divmod(i, W)
    trial = {"lr": float(lrs[li]), "lr_multiplier": float(multipliers[li]), "wd": float(wds[wi])}
    summary["best"] = _chosen(trial, flat[i], len(lrs) > 1 and li in (0, len(lrs) - 1))
    return summary


def tune_grid(task, opt: Optimizer, multipliers: Sequence[float], wds: Sequence[float], seeds: int) -> dict:
    lrs = [task.lr * m for m in multipliers]
    grid = run_grid(task, opt, lrs, wds, seeds)
    result = summarize(grid, lrs, multipliers, wds)
    L, W = len(multipliers), len(wds)
    result["trials"] = _trial_rows(task, np.repeat(multipliers, W), np.tile(wds, L),
                                   grid["val_loss"].reshape(L * W, seeds))
    result["val_loss_grid"] = [[[json_float(x) for x in row] for row in plane] for plane in grid["val_loss"]]
    result["budget"] = L * W
    return result


def bo_box(multipliers: Sequence[float], wds: Sequence[float]) -> list[tuple[str, float, float]]:
    """The BO tuner's dimensions (name, log10 low, log10 high); a dimension whose range is one value is fixed."""
    lo, hi = min(multipliers), max(multipliers)
    dims = [("log10_lr_multiplier", math.log10(lo), math.log10(hi))]
    top = max(wds)
    if top > 0:
        bottom = min(wds) if min(wds) > 0 else top * BO_WD_ZERO
        dims.append(("log10_wd", math.log10(bottom), math.log10(top)))
    return dims


def tune_bo(task, opt: Optimizer, multipliers: Sequence[float], wds: Sequence[float], seeds: int,
            budget: int, bo_seed: int = BO_SEED) -> dict:
    """``budget`` trials chosen by Bayesian optimization of log(mean tuning val loss), one trainer call per
    round (:func:`discover.shared.tuner.plan`); ``bo_seed`` seeds the tuner (its design and proposals)."""
    box = bo_box(multipliers, wds)
    free = [d for d in box if d[2] > d[1]]
    fixed_lr = 10.0 ** box[0][1]
    fixed_wd = 10.0 ** box[1][1] if len(box) > 1 else 0.0
    bo = bo_tuner.BayesOpt([(d[1], d[2]) for d in free], seed=bo_seed)
    plan = bo_tuner.plan(budget, bo.dims)
    design = bo.design(plan.init_rounds * plan.batch)
    keys = reference_keys(seeds)
    points, vals, diverged = [], [], 0

    def decode(x):
        named = dict(zip((d[0] for d in free), x))
        mult = 10.0 ** named.get("log10_lr_multiplier", math.log10(fixed_lr))
        wd = 10.0 ** named["log10_wd"] if "log10_wd" in named else fixed_wd
        return float(mult), float(wd)

    for r in range(plan.rounds):
        x = design[r * plan.batch:(r + 1) * plan.batch] if r < plan.init_rounds else bo.ask(plan.batch, initial=False)
        used = plan.last if r == plan.rounds - 1 else plan.batch
        x = x[:used]
        padded = np.concatenate([x, np.repeat(x[:1], plan.batch - used, axis=0)]) if used < plan.batch else x
        decoded = [decode(row) for row in padded]
        out = run_points(task, opt, [task.lr * m for m, _ in decoded], [wd for _, wd in decoded], keys)
        val = out["val_loss"][:used]
        diverged += int(out["diverged"][:used].sum())
        ok = np.isfinite(val).all(axis=1)
        bo.tell(x, np.where(ok, np.log(np.maximum(np.where(ok, val.mean(axis=1), 1.0), 1e-30)), np.inf))
        points += decoded[:used]
        vals.append(val)
    val = np.concatenate(vals)
    mults = [m for m, _ in points]
    result = {"diverged_runs": diverged, "runs": int(val.size),
              "trials": _trial_rows(task, mults, [wd for _, wd in points], val), "budget": len(points),
              "rounds": plan.rounds, "batch": plan.batch}
    i = select(val)
    if i is None:
        result["best"] = None
        return result
    span = box[0][2] - box[0][1]
    at_edge = span > 0 and min(abs(math.log10(mults[i]) - box[0][1]), abs(math.log10(mults[i]) - box[0][2])) \
        < 0.02 * span
    result["best"] = _chosen(result["trials"][i], val[i], at_edge)
    return result


def evaluate_fresh(task, opt: Optimizer, best: dict, fresh_seeds: int, offset: int = FRESH_SEED_OFFSET) -> dict:
    """The chosen point trained on the fresh seeds (keys ``offset + s``, one call): mean, s.e., per-seed values,
    accuracy, curves."""
    out = run_points(task, opt, [best["lr"]], [best["wd"]], fresh_keys(fresh_seeds, offset))
    val = out["val_loss"][0]
    m, se = mean_se(val)
    fresh = {"val_loss_mean": m, "val_loss_se": se, "val_loss_seeds": [json_float(x) for x in val],
             "fresh_diverged": int((~np.isfinite(val)).sum())}
    if "val_accuracy" in out:
        fresh["accuracy_mean"], fresh["accuracy_se"] = mean_se(out["val_accuracy"][0])
    curve = out["curve"][0]
    fresh["curve_steps"] = [int(s) for s in out["curve_steps"]]
    fresh["curve_mean"] = [json_float(x) for x in curve.mean(axis=0)]
    fresh["curve_se"] = [json_float(x) for x in (curve.std(axis=0, ddof=1) / math.sqrt(curve.shape[0])
                                                  if curve.shape[0] > 1 else np.zeros(curve.shape[1]))]
    return fresh
