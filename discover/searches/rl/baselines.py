"""The PPO / DPO normalizer of the RL search (computed once per env, horizon and PPO config; cached on disk)
and the jitted trainers that compile once per (env, PPO config, drift config) in a process."""

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

from discover.infra.rundir import RunDir
from discover.searches.rl.config import RLSearchConfig
from envs.ppo import PPOConfig, make_population_train, return_curve
from search_spaces.drift import DriftConfig, make_drift, switch_drift

# Training seeds of the PPO/DPO normalizer: fixed, so one cache entry serves every run of an env + PPO config.
BASELINE_SEED = 20240601
BASELINE_VERSION = 2  # bump when the trainer changes what a return means
# ----------------------------------------------------------------------------------------------------------
# Pieces that compile once per (env, PPO config, drift config) in a process
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def population_trainer(env_name: str, ppo: PPOConfig, drift: DriftConfig):
    """Jitted ``train(keys[R, S], drift_params[R, ...])`` for one drift family (cached: tests share compiles)."""
    return make_population_train(env_name, ppo, make_drift(drift).apply)


@functools.lru_cache(maxsize=16)
def baseline_trainer(env_name: str, ppo: PPOConfig, drift: DriftConfig):
    """Jitted trainer over PPO and DPO drifts (row 0: PPO, row 1: DPO) in one call."""
    ppo_fn = make_drift(dataclasses.replace(drift, family="ppo")).apply
    dpo_fn = make_drift(dataclasses.replace(drift, family="dpo")).apply
    return make_population_train(env_name, ppo, switch_drift([ppo_fn, dpo_fn]))


# ----------------------------------------------------------------------------------------------------------
# The PPO / DPO normalizer (computed once per env, horizon and PPO config; cached on disk)
# ----------------------------------------------------------------------------------------------------------
def baseline_cache_key(env_name: str, ppo: PPOConfig, drift: DriftConfig, seeds: int) -> str:
    identity = {
        "version": BASELINE_VERSION,
        "env": env_name,
        "ppo": dataclasses.asdict(ppo),
        "ppo_clip": drift.ppo_clip,
        "dpo": [drift.dpo_alpha, drift.dpo_beta],
        "seeds": seeds,
        "seed": BASELINE_SEED,
        "backend": jax.default_backend(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def compute_baselines(env_name: str, ppo: PPOConfig, drift: DriftConfig, seeds: int) -> dict:
    """PPO's and DPO's final returns (per seed) and return curves on this env and horizon."""
    train = baseline_trainer(env_name, ppo, drift)
    keys = jnp.broadcast_to(jax.random.split(jax.random.PRNGKey(BASELINE_SEED), seeds), (2, seeds, 2))
    metrics = jax.device_get(train(keys, (jnp.arange(2), ({}, {}))))
    out = {}
    for row, name in enumerate(("ppo", "dpo")):
        finals = np.asarray(metrics["final_return"][row], np.float64)
        out[name] = {
            "final_returns": finals.tolist(),
            "mean": float(finals.mean()),
            "stderr": float(finals.std(ddof=1) / math.sqrt(seeds)) if seeds > 1 else 0.0,
            "curve": [
                None if not np.isfinite(v) else float(v)
                for v in return_curve({k: metrics[k][row] for k in ("return_sum", "episode_count")})
            ],
        }
    return out


def load_or_compute_baselines(config: RLSearchConfig, run_dir: RunDir) -> dict:
    """The run's baselines: from the run dir (resume), else the shared cache, else computed (and cached)."""
    if run_dir.file("baselines.json").is_file():
        return run_dir.read_json("baselines.json")
    ppo = config.ppo_config
    key = baseline_cache_key(config.env.name, ppo, config.drift, config.fitness.baseline_seeds)
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
        baselines = compute_baselines(config.env.name, ppo, config.drift, config.fitness.baseline_seeds)
        baselines.update(env=config.env.name, total_timesteps=ppo.total_timesteps, cache_key=key)
        RunDir(cache_dir).write_json(cache_file.name, baselines)
    run_dir.write_json("baselines.json", baselines)
    return baselines
