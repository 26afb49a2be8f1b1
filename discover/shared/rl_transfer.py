"""Transfer of a learned drift: held-out environments and other training horizons, against PPO and DPO.

For every (env, horizon) the learned drift, PPO's and DPO's train ``seeds`` agents each, all in one jitted
call (the three drifts share one compiled trainer through ``switch_drift``; every method sees the same
training seeds). Returns are normalized by PPO's mean on the same env and horizon
(``envs.rl_envs.normalize_return``), so PPO's column is 1 up to its own seed spread.

Horizons are multiples of a reference horizon per env: on the meta-training env it is the meta-training
horizon; on a held-out env it is the same fraction of that env's standard (PureJaxRL) budget, e.g. a drift
meta-trained on CartPole for 1e5 of its standard 5e5 steps is tested on Acrobot at 0.2 x 5e5 = 1e5 x h.
A held-out env uses its own PureJaxRL PPO settings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.errors import InputError
from discover.infra.rundir import RunDir, RunDirError, TBLogger
from discover.shared.drift_io import DriftFileError, load_drift
from envs import rl_envs
from envs.ppo import PPOConfig, make_population_train
from search_spaces.drift import DriftConfig, make_drift, switch_drift

DEFAULT_HORIZONS = (0.25, 0.5, 1.0, 2.0, 4.0)
METHODS = ("PPO", "DPO", "learned")
TRANSFER_SEED = 7


@functools.lru_cache(maxsize=64)
def _comparison_trainer(env_name: str, ppo: PPOConfig, drift: DriftConfig):
    """Jitted trainer over rows (0: PPO, 1: DPO, 2: the learned family) x seeds."""
    fns = [
        make_drift(dataclasses.replace(drift, family="ppo", ppo_init=False)).apply,
        make_drift(dataclasses.replace(drift, family="dpo", ppo_init=False)).apply,
        make_drift(drift).apply,
    ]
    return make_population_train(env_name, ppo, switch_drift(fns))


def _resolve_source(source: str | pathlib.Path) -> tuple[pathlib.Path, RunDir | None]:
    path = pathlib.Path(source)
    if path.is_dir():
        run = RunDir.open(path)
        drift_file = run.file("best_drift.npz")
        if not drift_file.is_file():
            raise RunDirError("run has no best_drift.npz yet (has the search finished?)", source=str(path))
        return drift_file, run
    if not path.is_file():
        raise RunDirError("no such run directory or drift file", source=str(path))
    return path, None


def reference_ppo_config(env_name: str, train_env: str, train_ppo: PPOConfig) -> PPOConfig:
    """The PPO config at horizon multiple 1 on ``env_name`` (see the module docstring)."""
    if env_name == train_env:
        return train_ppo
    fraction = train_ppo.total_timesteps / rl_envs.spec(train_env).ppo.total_timesteps
    default = rl_envs.spec(env_name).ppo
    return dataclasses.replace(default, total_timesteps=max(1, round(default.total_timesteps * fraction)))


def _at_horizon(reference: PPOConfig, multiple: float) -> PPOConfig:
    per_update = reference.num_envs * reference.num_steps
    return dataclasses.replace(
        reference, total_timesteps=max(per_update, round(reference.total_timesteps * multiple))
    )


def evaluate_cell(env_name: str, ppo: PPOConfig, drift: DriftConfig, params: Any, seeds: int, key) -> dict:
    """Final returns (seeds per method) of PPO, DPO and the learned drift on one env and horizon."""
    train = _comparison_trainer(env_name, ppo, drift)
    learned = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(METHODS),) + x.shape), params)
    seed_keys = jnp.broadcast_to(jax.random.split(key, seeds), (len(METHODS), seeds, 2))
    metrics = jax.device_get(train(seed_keys, (jnp.arange(len(METHODS)), ({}, {}, learned))))
    finals = np.asarray(metrics["final_return"], np.float64)
    finals = np.where(np.asarray(metrics["finite"]), finals, np.nan)
    return {name: finals[i] for i, name in enumerate(METHODS)}


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if np.isnan(values).any():
        return float("nan"), float("nan")
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), se


def transfer_table(rows: list[dict]) -> str:
    lines = [
        "| env | horizon | env steps | PPO return | PPO | DPO | learned |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['se']:.3f}" for m in METHODS]
        lines.append(
            f"| {row['env']} | {row['horizon']:g}x | {row['total_timesteps']:,} | {row['ppo_return']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def transfer_figure(rows: list[dict]):
    from matplotlib.figure import Figure

    envs = list(dict.fromkeys(row["env"] for row in rows))
    fig = Figure(figsize=(4.6 * len(envs), 3.8))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.15, top=0.88, wspace=0.3)
    for i, env in enumerate(envs):
        ax = fig.add_subplot(1, len(envs), i + 1)
        mine = [row for row in rows if row["env"] == env]
        x = np.array([row["horizon"] for row in mine])
        for method in METHODS:
            ax.errorbar(
                x,
                [row[method]["mean"] for row in mine],
                yerr=[row[method]["se"] for row in mine],
                marker="o",
                capsize=3,
                label=method,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training horizon (x reference)")
        ax.set_ylabel("return normalized by PPO")
        ax.set_title(env, fontsize=10)
        ax.legend(fontsize=8)
    return fig


def run_rl_transfer(
    run_dir_or_drift_path: str | pathlib.Path,
    envs: list[str] | None = None,
    horizons: list[float] | None = None,
    seeds: int = 4,
    out_dir: str | pathlib.Path | None = None,
) -> str:
    """Evaluates a learned drift against PPO and DPO; writes transfer.md / .json / .png and TensorBoard
    (text + figure) into ``out_dir`` (default: the run directory, or the drift file's folder). Returns the
    markdown table."""

    drift_file, run = _resolve_source(run_dir_or_drift_path)
    family, params, meta = load_drift(drift_file)  # DriftFileError (one line) for anything but a drift
    if "ppo" not in meta:
        raise DriftFileError(drift_file, "__meta__ has no 'ppo' (the PPO settings the drift was trained with)")
    if seeds < 1:
        raise InputError(f"seeds must be >= 1, got {seeds}")
    train_env = meta["env"]
    train_ppo = PPOConfig(**meta["ppo"])
    envs = list(envs) if envs else [train_env, *rl_envs.spec(train_env).held_out]
    for env in envs:
        rl_envs.spec(env)  # one clear error for an unknown env before any training
    horizons = [float(h) for h in (horizons or DEFAULT_HORIZONS)]
    if any(h <= 0 for h in horizons):
        raise InputError(f"horizons must be positive multiples, got {horizons}")

    rows = []
    base_key = jax.random.PRNGKey(TRANSFER_SEED)
    for e, env in enumerate(envs):
        reference = reference_ppo_config(env, train_env, train_ppo)
        floor = rl_envs.spec(env).return_floor
        for h, multiple in enumerate(horizons):
            ppo = _at_horizon(reference, multiple)
            key = jax.random.fold_in(jax.random.fold_in(base_key, e), h)
            finals = evaluate_cell(env, ppo, family.config, params, seeds, key)
            ppo_mean = float(np.nanmean(finals["PPO"]))
            row = {
                "env": env,
                "horizon": multiple,
                "total_timesteps": ppo.total_timesteps,
                "ppo_return": ppo_mean,
            }
            for method in METHODS:
                normalized = rl_envs.normalize_return(finals[method], ppo_mean, floor)
                mean, se = _mean_se(normalized)
                row[method] = {"mean": mean, "se": se, "returns": finals[method].tolist()}
            rows.append(row)

    table = transfer_table(rows)
    title = f"Transfer of {drift_file.name} (meta-trained on {train_env}, {train_ppo.total_timesteps:,} steps), {seeds} seeds"
    markdown = f"### {title}\n\nMean ± standard error of the return normalized by PPO's on the same env and horizon.\n\n{table}"
    target = (
        pathlib.Path(out_dir) if out_dir is not None else (run.path if run is not None else drift_file.parent)
    )
    out = RunDir(target)
    out.write_text("transfer.md", markdown)
    out.write_json("transfer.json", {"drift": str(drift_file), "meta": meta, "seeds": seeds, "rows": rows})
    fig = transfer_figure(rows)
    fig.savefig(out.file("transfer.png"), dpi=90)
    logger = TBLogger(run if (run is not None and out_dir is None) else out)
    logger.text("transfer/table", markdown, 0)
    logger.figure("transfer/plot", fig, 0, close=False)
    logger.close()
    return markdown
