"""The drift to distill and the states it is fitted on.

:func:`load_source` reads a drift file (or an RL-objective run directory's ``best_drift.npz``) and the PPO
setting it was learned in (env, PPO config, horizon). :func:`record` trains PPO with that drift on its own env
for its own horizon (``funnel.train_seeds`` runs) and records, through a host callback inside the jitted
trainer, every ``(r, A, n/N)`` the policy loss evaluates the drift at: the ratios PPO actually visits (from
exactly 1 at each rollout's first minibatch to the edge of what the drift lets it reach), the normalized
advantages it sees and the progress. The same runs give the network's own final returns, the RL check's
reference. :func:`make_samples` splits those states into a fit set and a held-out set (optionally mixed with
uniform draws over r in [0.5, 1.5], A in [-3, 3], n/N in [0, 1]) and computes the network's drift and its
derivative d drift / d r on them.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.errors import DriftFileError, InputError
from discover.shared.drift_io import load_drift
from envs import rl_envs
from envs.ppo import PPOConfig, log_horizon, make_train
from search_spaces.drift import DriftFamily

RUN_DRIFT = "best_drift.npz"
CHECK_SALT = 31_337  # folds the run seed into the seeds of the recording runs and of every RL check
SAMPLE_SALT = 271_828
FIELDS = ("r", "A", "progress")


@dataclasses.dataclass
class Source:
    path: pathlib.Path  # the drift file
    family: DriftFamily
    params: Any
    env: str
    ppo: PPOConfig
    log_n: float  # log10 of the number of updates: the horizon input

    def describe(self) -> str:
        return (f"{self.family.config.family} drift {self.path} ({self.env}, {self.ppo.total_timesteps} steps, "
                f"log10 updates {self.log_n:.2f})")


def drift_path(source: str | pathlib.Path) -> pathlib.Path:
    """The drift file ``source`` names: itself, or a run directory's ``best_drift.npz``."""
    path = pathlib.Path(source)
    if path.is_dir():
        if not (path / RUN_DRIFT).is_file():
            raise InputError(f"{path}: not an RL-objective run directory (no {RUN_DRIFT}); give a run directory of "
                             "`discover search` with an rl_objective config, or a drift .npz")
        return path / RUN_DRIFT
    if not path.exists():
        raise DriftFileError(path, "no such drift file or run directory")
    return path


def load_source(source: str | pathlib.Path) -> Source:
    """The drift and its PPO setting; DriftFileError / InputError (one line) for anything else."""
    path = drift_path(source)
    family, params, meta = load_drift(path)
    env = meta["env"]
    ppo = rl_envs.ppo_config(env) if "ppo" not in meta else PPOConfig(**meta["ppo"])
    return Source(path=path, family=family, params=params, env=env, ppo=ppo, log_n=float(log_horizon(ppo)))


def check_keys(seed: int, seeds: int) -> jax.Array:
    """The PPO seeds of the recording runs and of every RL check (the same for every drift compared)."""
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), CHECK_SALT), seeds)


def record(source: Source, seeds: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({r, A, progress}: every state the drift was evaluated at, final returns per seed)`` of PPO trained
    with the source drift (the runs of :func:`check_keys`)."""
    chunks: list[tuple[np.ndarray, ...]] = []

    def keep(r, a, n):
        r = np.asarray(r, np.float32)
        chunks.append((r.ravel(), np.asarray(a, np.float32).ravel(),
                       np.broadcast_to(np.asarray(n, np.float32), r.shape).ravel()))

    def recording_drift(params, r, a, n, h):
        jax.debug.callback(keep, r, a, n)
        return source.family.apply(params, r, a, n, h)

    train = jax.jit(jax.vmap(make_train(source.env, source.ppo, recording_drift), in_axes=(0, None)))
    metrics = jax.device_get(train(check_keys(seed, seeds), source.params))
    jax.effects_barrier()
    states = {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(FIELDS)}
    ok = np.isfinite(states["r"]) & np.isfinite(states["A"]) & (states["r"] > 0)
    states = {k: v[ok] for k, v in states.items()}
    order = np.lexsort((states["A"], states["r"], states["progress"]))  # callback order does not matter
    returns = np.where(np.asarray(metrics["finite"]), np.asarray(metrics["final_return"], np.float64), np.nan)
    return {k: v[order] for k, v in states.items()}, returns


def _uniform(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"r": rng.uniform(0.5, 1.5, n).astype(np.float32), "A": rng.uniform(-3.0, 3.0, n).astype(np.float32),
            "progress": rng.uniform(0.0, 1.0, n).astype(np.float32)}


def make_samples(states: dict[str, np.ndarray], fit: int, holdout: int, uniform_share: float,
                 seed: int) -> dict[str, np.ndarray]:
    """``fit_<field>`` and ``holdout_<field>`` arrays: disjoint draws from the recorded states (fewer when
    fewer were recorded), each with ``uniform_share`` of uniform draws; ``fit_uniform`` / ``holdout_uniform``
    mark those (the fit error weighs the two groups separately)."""
    rng = np.random.default_rng([seed, SAMPLE_SALT])
    n_states = len(states["r"])
    wanted = [round(n * (1.0 - uniform_share)) for n in (fit, holdout)]
    if n_states < sum(wanted):  # a tiny run: split what there is in the same proportion
        wanted = [n_states * w // max(sum(wanted), 1) for w in wanted]
    if uniform_share < 1.0 and min(wanted) < 1:
        raise InputError(f"the PPO runs recorded only {n_states} states: too few to fit and hold out")
    perm = rng.permutation(n_states)
    out, start = {}, 0
    for part, n_total, n_rec in zip(("fit", "holdout"), (fit, holdout), wanted):
        take = perm[start:start + n_rec]
        start += n_rec
        extra = _uniform(rng, max(0, n_total - n_rec) if uniform_share > 0 else 0)
        for name in FIELDS:
            out[f"{part}_{name}"] = np.concatenate([states[name][take], extra[name]]).astype(np.float32)
        out[f"{part}_uniform"] = np.arange(len(out[f"{part}_r"])) >= len(take)
    return out


def targets(source: Source, samples: dict[str, np.ndarray], part: str) -> tuple[np.ndarray, np.ndarray]:
    """The network's drift and d drift / d r on one part of the samples."""
    r, a, n = (jnp.asarray(samples[f"{part}_{name}"]) for name in FIELDS)
    return network_value_and_slope(source, r, a, n)


def network_value_and_slope(source: Source, r, a, n) -> tuple[np.ndarray, np.ndarray]:
    """The network's drift and d drift / d r per sample (one sample at a time under vmap: the drift
    families take a scalar progress, as the PPO loss gives them)."""

    def one(rr, aa, nn):
        drift = lambda x: source.family.apply(source.params, x, aa, nn, jnp.float32(source.log_n))
        return jax.jvp(drift, (rr,), (jnp.ones_like(rr),))

    value, slope = jax.jit(jax.vmap(one))(jnp.asarray(r, jnp.float32), jnp.asarray(a, jnp.float32),
                                          jnp.asarray(n, jnp.float32))
    return np.asarray(value, np.float32), np.asarray(slope, np.float32)
