"""The normalizer of the RL search (PPO, DPO and a random policy at every meta-training horizon, computed once
per env, horizons and PPO config; cached on disk) and the jitted trainers that compile once per (env, PPO
config, drift config, longest horizon) in a process."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.errors import InputError
from discover.infra.rundir import RunDir
from discover.searches.rl.config import RLSearchConfig
from envs import rl_envs
from envs.ppo import (
    PPOConfig,
    make_population_lifetime_train,
    make_random_policy,
    num_updates,
    return_curve,
)
from search_spaces.drift import DriftConfig, make_drift, switch_drift

# Training seeds of the normalizer: fixed, so one cache entry serves every run of an env + PPO config.
BASELINE_SEED = 20240601
RANDOM_SALT = 17  # folded into BASELINE_SEED for the random policy's seeds
BASELINE_VERSION = 3  # bump when the trainer changes what a return means (3: horizons, random policy)


# ----------------------------------------------------------------------------------------------------------
# Pieces that compile once per (env, PPO config, drift config, longest horizon) in a process
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def population_trainer(env_name: str, ppo: PPOConfig, drift: DriftConfig, max_updates: int):
    """Jitted ``train(keys[R, S], drift_params[R, ...], n_updates)`` for one drift family, every horizon up to
    ``max_updates`` updates (cached: tests share compiles)."""
    return make_population_lifetime_train(env_name, ppo, make_drift(drift).apply, max_updates)


@functools.lru_cache(maxsize=16)
def baseline_trainer(env_name: str, ppo: PPOConfig, drift: DriftConfig, max_updates: int):
    """Jitted trainer over PPO and DPO drifts (row 0: PPO, row 1: DPO) in one call."""
    ppo_fn = make_drift(dataclasses.replace(drift, family="ppo", ppo_init=False)).apply
    dpo_fn = make_drift(dataclasses.replace(drift, family="dpo", ppo_init=False)).apply
    return make_population_lifetime_train(env_name, ppo, switch_drift([ppo_fn, dpo_fn]), max_updates)


@functools.lru_cache(maxsize=16)
def random_policy(env_name: str, ppo: PPOConfig, max_updates: int):
    return make_random_policy(env_name, ppo, max_updates)


def horizon_updates(config: RLSearchConfig, env: str | None = None) -> tuple[int, ...]:
    """Updates per lifetime at each multiple meta-trained on ``env`` (default ``env.name``)."""
    return tuple(num_updates(config.ppo_at(m, env)) for m in config.horizon.of(env or config.env.name))


# ----------------------------------------------------------------------------------------------------------
# The normalizer (computed once per env, horizons and PPO config; cached on disk)
# ----------------------------------------------------------------------------------------------------------
def baseline_cache_key(env_name: str, ppo: PPOConfig, drift: DriftConfig, multiples, seeds: int) -> str:
    identity = {
        "version": BASELINE_VERSION,
        "env": env_name,
        "ppo": dataclasses.asdict(ppo),
        "multiples": [float(m) for m in multiples],
        "ppo_clip": drift.ppo_clip,
        "dpo": [drift.dpo_alpha, drift.dpo_beta],
        "seeds": seeds,
        "seed": BASELINE_SEED,
        "backend": jax.default_backend(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _summary(finals: np.ndarray) -> dict:
    finals = np.asarray(finals, np.float64)
    se = float(finals.std(ddof=1) / math.sqrt(len(finals))) if len(finals) > 1 else 0.0
    return {"final_returns": finals.tolist(), "mean": float(finals.mean()), "stderr": se}


def compute_baselines(env_name: str, ppo: PPOConfig, drift: DriftConfig, multiples, seeds: int) -> dict:
    """Per horizon multiple: PPO's and DPO's final returns (per seed) and return curves, the random policy's
    final returns, and whether the normalizer is defined there (PPO above random beyond noise)."""
    configs = [rl_envs.at_horizon(ppo, m) for m in multiples]
    updates = [num_updates(c) for c in configs]
    train = baseline_trainer(env_name, ppo, drift, max(updates))
    run_random = random_policy(env_name, ppo, max(updates))
    keys = jnp.broadcast_to(jax.random.split(jax.random.PRNGKey(BASELINE_SEED), seeds), (2, seeds, 2))
    random_keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(BASELINE_SEED), RANDOM_SALT), seeds)
    horizons = []
    for multiple, config, n in zip(multiples, configs, updates):
        metrics = jax.device_get(train(keys, (jnp.arange(2), ({}, {})), jnp.int32(n)))
        entry = {"multiple": float(multiple), "total_timesteps": config.total_timesteps, "num_updates": n}
        for row, name in enumerate(("ppo", "dpo")):
            entry[name] = _summary(metrics["final_return"][row])
            curve = return_curve({k: metrics[k][row][..., :n] for k in ("return_sum", "episode_count")})
            entry[name]["curve"] = [None if not np.isfinite(v) else float(v) for v in curve]
        entry["random"] = _summary(jax.device_get(run_random(random_keys, jnp.int32(n))))
        entry["defined"] = rl_envs.normalizer_defined(entry["ppo"]["final_returns"], entry["random"]["final_returns"])
        horizons.append(entry)
    return {"env": env_name, "horizons": horizons}


def check_defined(baselines: dict, key: str = "horizon.multiples") -> None:
    """InputError (one line) if PPO is not above random beyond noise at some meta-training horizon: the score
    there would be undefined."""
    bad = [h for h in baselines["horizons"] if not h["defined"]]
    if bad:
        h = bad[0]
        raise InputError(
            f"{key}: on {baselines['env']} at {h['multiple']:g}x ({h['total_timesteps']:,} steps) PPO "
            f"({h['ppo']['mean']:.1f}) is not above a random policy ({h['random']['mean']:.1f}) beyond noise, so "
            "no score is defined there; drop that multiple or lengthen ppo.total_timesteps"
        )


def baselines_file(config: RLSearchConfig, env: str) -> str:
    """``baselines.json`` for ``env.name``; ``baselines-<env>.json`` for each of ``env.extra``."""
    return "baselines.json" if env == config.env.name else f"baselines-{env}.json"


def load_or_compute_baselines(config: RLSearchConfig, run_dir: RunDir, env: str | None = None) -> dict:
    """The baselines of one meta-training env (default ``env.name``): from the run dir (resume), else the shared
    cache, else computed (and cached)."""
    env = env or config.env.name
    name = baselines_file(config, env)
    if run_dir.file(name).is_file():
        return run_dir.read_json(name)
    ppo = config.ppo_config_of(env)
    multiples = config.horizon.of(env)
    key = baseline_cache_key(env, ppo, config.drift, multiples, config.fitness.baseline_seeds)
    cache_dir = (
        pathlib.Path(config.fitness.cache_dir)
        if config.fitness.cache_dir
        else run_dir.path.parent / ".rl_baselines"
    )
    cache_file = cache_dir / f"{key}.json"
    baselines = None
    if cache_file.is_file():
        try:
            baselines = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            baselines = None  # a damaged cache entry is recomputed
    if baselines is None:
        baselines = compute_baselines(env, ppo, config.drift, multiples, config.fitness.baseline_seeds)
        baselines.update(cache_key=key)
        RunDir(cache_dir).write_json(cache_file.name, baselines)
    run_dir.write_json(name, baselines)
    return baselines
