"""Drift functions: what the RL-objective search searches over.

A policy update maximises ``r*A - drift(r, A, n/N)`` (mirror learning). A valid drift is non-negative and
vanishes with zero gradient at r = 1, so every drift still improves the policy to first order.

* ``ppo``   fixed: ``relu((r - clip(r, 1-eps, 1+eps)) * A)``; with it the loss is PPO's clipped objective.
* ``dpo``   fixed: Discovered Policy Optimisation's closed form (Lu et al. 2022), alpha 2, beta 0.6.
* ``lpo``   learned: an MLP (tanh, no biases) on ``[r-1, (r-1)^2, log r, (log r)^2]`` and each times A.
* ``talpo`` learned: LPO's 8 inputs, the same 8 times the training progress n/N (16), and optionally the same
            8 times log10(number of updates) (24; the horizon input).
* ``ppo_schedule`` learned: PPO's drift with a clip range and a penalty weight that are functions of the
            training progress n/N (and log10 of the number of updates, with the horizon input):
            ``exp(s) * relu((r - clip(r, 1 - eps, 1 + eps)) * A)``, ``eps = ppo_clip * exp(e)``, ``(s, e)`` from a
            small tanh MLP. Its output layer starts near 0, so search starts at PPO. Noise in its weights moves
            the drift as often toward bolder updates (s < 0, e > 0) as toward more conservative ones, unlike
            ``relu(net)``, which noise only ever raises.

Learned drifts output ``relu(net - 1e-4)``: every feature is 0 at r = 1 and the net has no biases, so
``net = 0`` there, and the small offset keeps both drift and gradient exactly 0 in a neighbourhood of r = 1.
``ppo_init`` adds PPO's drift to the learned one, so search starts near PPO: ``PPO + relu(net - 1e-4)``, a drift
that can only be more conservative than PPO's. With ``signed_residual`` it is ``relu(PPO + net - 1e-4)``: the
learned term can also cancel PPO's penalty outside the clip band (down to 0, the unclipped policy gradient), so
the search can make the update bolder, e.g. early in a short life. Both are non-negative and flat at r = 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from envs.ppo import DriftFn

FAMILIES = ("talpo", "lpo", "ppo_schedule", "ppo", "dpo")
LEARNED_FAMILIES = ("talpo", "lpo", "ppo_schedule")
TIME_FAMILIES = ("talpo", "ppo_schedule")  # the learned families whose drift sees training progress n/N
SCHEDULE_LIMIT = 4.0  # |s|, |e| <= 4: penalty weight and clip range within a factor e^4 ~ 55 of PPO's
OUTPUT_OFFSET = 1e-4


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    family: str = dataclasses.field(
        default="talpo", metadata={"choices": list(FAMILIES), "help": "drift family to search or use"}
    )
    hidden_size: int = dataclasses.field(default=128, metadata={"min": 1, "help": "width of the drift MLP"})
    ppo_init: bool = dataclasses.field(default=False, metadata={"help": "add PPO's drift to the learned one"})
    signed_residual: bool = dataclasses.field(
        default=False,
        metadata={"help": "with ppo_init: relu(PPO + net) instead of PPO + relu(net), so the learned term can also "
                          "lower PPO's drift (relax its clipping), not only raise it"},
    )
    log_horizon_input: bool = dataclasses.field(
        default=False, metadata={"help": "TA-LPO: also feed features x log10(num updates)"}
    )
    init_scale: float = dataclasses.field(
        default=1.0,
        metadata={"min": 0.0, "help": "multiplies the drift MLP's initial weights (ppo_schedule: its output layer only)"},
    )
    ppo_clip: float = dataclasses.field(
        default=0.2, metadata={"min": 0.0, "help": "PPO drift's clip epsilon"}
    )
    dpo_alpha: float = dataclasses.field(default=2.0, metadata={"min": 0.0, "help": "DPO drift's alpha"})
    dpo_beta: float = dataclasses.field(default=0.6, metadata={"min": 0.0, "help": "DPO drift's beta"})

    def __post_init__(self) -> None:  # one check for configs, drift files and direct use alike
        if self.family == "ppo_schedule" and self.ppo_init:
            raise ValueError("ppo_init is for lpo / talpo: ppo_schedule starts at PPO's drift already")


# ----------------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------------
def lpo_features(ratio: jax.Array, advantage: jax.Array) -> jax.Array:
    """The 8 LPO inputs, last axis: [r-1, (r-1)^2, log r, (log r)^2] and each times A. All 0 at r = 1."""
    r1, log_r = ratio - 1.0, jnp.log(ratio)
    base = jnp.stack([r1, r1 * r1, log_r, log_r * log_r], axis=-1)
    return jnp.concatenate([base, base * advantage[..., None]], axis=-1)


def talpo_features(
    ratio: jax.Array, advantage: jax.Array, progress: jax.Array, log_horizon: jax.Array | None = None
) -> jax.Array:
    """TA-LPO inputs: LPO's 8, the same times n/N (16), optionally the same times the log horizon (24)."""
    x = lpo_features(ratio, advantage)
    parts = [x, x * progress]
    if log_horizon is not None:
        parts.append(x * log_horizon)
    return jnp.concatenate(parts, axis=-1)


def schedule_features(progress: jax.Array, log_horizon: jax.Array | None = None) -> jax.Array:
    """``ppo_schedule`` inputs: [n/N], or [n/N, log10 N - 2, n/N (log10 N - 2)] with the horizon input (centred
    at 100 updates, so both stay of order 1)."""
    progress = jnp.asarray(progress, jnp.float32)[..., None]
    if log_horizon is None:
        return progress
    h = jnp.asarray(log_horizon, jnp.float32)[..., None] - 2.0
    h = jnp.broadcast_to(h, progress.shape)
    return jnp.concatenate([progress, h, progress * h], axis=-1)


def num_inputs(config: DriftConfig) -> int:
    if config.family == "lpo":
        return 8
    if config.family == "talpo":
        return 24 if config.log_horizon_input else 16
    if config.family == "ppo_schedule":
        return 3 if config.log_horizon_input else 1
    return 0


# ----------------------------------------------------------------------------------------------------------
# Fixed drifts
# ----------------------------------------------------------------------------------------------------------
def ppo_drift(ratio: jax.Array, advantage: jax.Array, clip_eps: float = 0.2) -> jax.Array:
    """r*A - min(r*A, clip(r)*A) = relu((r - clip(r)) * A): with it, -(r*A - drift) is PPO's clipped loss."""
    return jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)) * advantage)


def dpo_drift(ratio: jax.Array, advantage: jax.Array, alpha: float = 2.0, beta: float = 0.6) -> jax.Array:
    """DPO (Lu et al. 2022): relu((r-1)A - a tanh((r-1)A/a)) for A >= 0, relu(log(r)A - b tanh(log(r)A/b)) else."""
    pos = (ratio - 1.0) * advantage
    neg = jnp.log(ratio) * advantage
    return jnp.where(
        advantage >= 0.0,
        jax.nn.relu(pos - alpha * jnp.tanh(pos / alpha)),
        jax.nn.relu(neg - beta * jnp.tanh(neg / beta)),
    )


# ----------------------------------------------------------------------------------------------------------
# Learned drifts
# ----------------------------------------------------------------------------------------------------------
class DriftMLP(nn.Module):
    """One hidden tanh layer, no biases (so the output is exactly 0 when all inputs are 0)."""

    hidden_size: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.tanh(nn.Dense(self.hidden_size, use_bias=False)(x))
        return nn.Dense(1, use_bias=False)(x)[..., 0]


class ScheduleMLP(nn.Module):
    """``ppo_schedule``'s net: one hidden tanh layer with biases, two outputs (log penalty weight, log clip scale)."""

    hidden_size: int = 16

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.tanh(nn.Dense(self.hidden_size)(x))
        return nn.Dense(2, name="out")(x)


class DriftFamily(NamedTuple):
    """A drift family: ``init(key) -> params`` (an empty dict for fixed drifts) and ``apply`` (a DriftFn)."""

    config: DriftConfig
    init: Callable[[jax.Array], Any]
    apply: DriftFn

    @property
    def learned(self) -> bool:
        return self.config.family in LEARNED_FAMILIES


def make_drift(config: DriftConfig) -> DriftFamily:
    """The drift family a config names; ``apply(params, ratio, advantage, progress, log_horizon)``."""
    if config.family not in FAMILIES:
        raise ValueError(f"unknown drift family {config.family!r}; choose one of {', '.join(FAMILIES)}")

    def ppo(ratio, advantage):
        return ppo_drift(ratio, advantage, config.ppo_clip)

    if config.family == "ppo":
        return DriftFamily(config, lambda key: {}, lambda p, r, a, n, h: ppo(r, a))
    if config.family == "dpo":
        return DriftFamily(
            config, lambda key: {}, lambda p, r, a, n, h: dpo_drift(r, a, config.dpo_alpha, config.dpo_beta)
        )

    if config.family == "ppo_schedule":
        return _schedule_family(config)
    mlp = DriftMLP(config.hidden_size)

    def features(ratio, advantage, progress, log_horizon):
        if config.family == "lpo":
            return lpo_features(ratio, advantage)
        return talpo_features(ratio, advantage, progress, log_horizon if config.log_horizon_input else None)

    def init(key: jax.Array) -> Any:
        params = mlp.init(key, jnp.zeros((1, num_inputs(config)), jnp.float32))
        return jax.tree.map(lambda w: w * config.init_scale, params)

    def apply(params, ratio, advantage, progress, log_horizon):
        progress = jnp.asarray(progress, jnp.float32)
        log_horizon = jnp.asarray(log_horizon, jnp.float32)
        net = mlp.apply(params, features(ratio, advantage, progress, log_horizon)) - OUTPUT_OFFSET
        if config.ppo_init and config.signed_residual:
            return jax.nn.relu(ppo(ratio, advantage) + net)
        drift = jax.nn.relu(net)
        return drift + ppo(ratio, advantage) if config.ppo_init else drift

    return DriftFamily(config, init, apply)


def _schedule_family(config: DriftConfig) -> DriftFamily:
    """``exp(s) * relu((r - clip(r, 1 - eps, 1 + eps)) A)``, ``eps = ppo_clip * exp(e)``: non-negative, and 0 on
    the band around r = 1 (so flat there) for any (s, e). ``init_scale`` scales only the output layer: the hidden
    layer keeps its usual size, so ES perturbations of the output weights move (s, e) from the start."""
    mlp = ScheduleMLP(config.hidden_size)

    def init(key: jax.Array) -> Any:
        params = mlp.init(key, jnp.zeros((1, num_inputs(config)), jnp.float32))
        out = jax.tree.map(lambda w: w * config.init_scale, params["params"]["out"])
        return {"params": {**params["params"], "out": out}}

    def apply(params, ratio, advantage, progress, log_horizon):
        x = schedule_features(progress, log_horizon if config.log_horizon_input else None)
        s, e = jnp.moveaxis(jnp.clip(mlp.apply(params, x), -SCHEDULE_LIMIT, SCHEDULE_LIMIT), -1, 0)
        eps = config.ppo_clip * jnp.exp(e)
        return jnp.exp(s) * jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - eps, 1.0 + eps)) * advantage)

    return DriftFamily(config, init, apply)


def switch_drift(drift_fns: list[DriftFn]) -> DriftFn:
    """One DriftFn over ``(index, params_tuple)`` that runs ``drift_fns[index]``: lets PPO, DPO and a learned
    drift share one compiled (vmapped) trainer. Under vmap, ``lax.switch`` evaluates every branch."""

    def apply(params, ratio, advantage, progress, log_horizon):
        index, per_fn = params

        def branch(i: int):
            return lambda: drift_fns[i](per_fn[i], ratio, advantage, progress, log_horizon)

        return jax.lax.switch(index, [branch(i) for i in range(len(drift_fns))])

    return apply


def drift_surface(
    family: DriftFamily,
    params: Any,
    ratios: jax.Array,
    advantages: jax.Array,
    progress: float,
    log_horizon: float = 2.0,
) -> jax.Array:
    """drift on the grid advantages x ratios (rows A, columns r), for pictures of a drift."""
    r, a = jnp.meshgrid(ratios, advantages)
    return family.apply(params, r, a, jnp.float32(progress), jnp.float32(log_horizon))
