"""Transfer of a learned drift: held-out environments and other training horizons, against PPO and DPO.

For every (env, horizon) cell, PPO, DPO, the learned drift (and a distilled drift, when given) train ``seeds``
agents each on the same training seeds, all in one sharded call (the drifts share one compiled trainer through
``switch_drift``, and one trainer serves every horizon of an env: ``envs.ppo.make_lifetime_train``).

Score of a run: ``(R - R_random) / (R_PPO - R_random)`` (``envs.rl_envs.normalize_return``), with R_PPO the
mean of PPO's runs in the same cell and R_random a uniformly random policy's mean return at the same env and
horizon (``envs.ppo.make_random_policy``, cached in ``.rl_baselines``). Where PPO is not above random beyond
noise (``envs.rl_envs.normalizer_defined``) the cell has no score: the table says so, the JSON has nulls. A
run whose training produced NaN/inf scores 0 (the random policy's level) and is counted.

Per cell and method: the interquartile mean (IQM) over seeds with a 95% bootstrap interval (rliable's
stratified bootstrap, one stratum; ``discover.shared.stats``), the mean, and the probability of improvement
over PPO. Aggregates: the IQM over all held-out cells (envs other than the meta-training envs) and over all
cells, with stratified-bootstrap intervals.

Horizons are multiples of a reference horizon per env: on the meta-training env it is the meta-training
horizon (on each of several meta-training envs, the PPO settings it was trained with); on a held-out env it is the
same fraction of that env's standard (PureJaxRL) budget, e.g. a drift
meta-trained on CartPole for 1e5 of its standard 5e5 steps is tested on Acrobot at 0.2 x 5e5 = 1e5 x h.
A held-out env uses its own PureJaxRL PPO settings, except those the meta-training config changed from its env's
defaults (besides the budget): these hold on every env.

A *distilled* drift (a closed form of the learned one) enters as a callable ``drift(ratio, advantage,
progress, log_horizon)`` (:class:`DistilledDrift`); a file is turned into one only by the loader installed in
:data:`DISTILLED_LOADER` (nothing here executes a user's file).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import pathlib
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.errors import InputError
from discover.infra.rundir import RunDir, RunDirError, TBLogger
from discover.infra.sharding import population_mesh, sharded
from discover.shared import stats
from discover.shared.drift_io import DriftFileError, load_distilled, load_drift
from discover.shared.rl_transfer_report import json_report, markdown_report, transfer_figure
from envs import rl_envs
from envs.ppo import PPOConfig, log_horizon, make_population_lifetime_train, make_random_policy, num_updates
from search_spaces.drift import TIME_FAMILIES, DriftConfig, make_drift, switch_drift

DEFAULT_HORIZONS = (0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_SEEDS = 16
METHODS = ("PPO", "DPO", "learned")
DISTILLED = "distilled"
FROZEN = "frozen"  # the learned drift with its time inputs held fixed (--time-frozen)
FROZEN_PROGRESS = 0.5  # n/N the frozen drift always sees (mid-training); log N: the meta-training lifetime's
TRANSFER_SEED = 7
RANDOM_SEED = 11  # seeds of the random policy (independent of the trained agents')
RANDOM_VERSION = 1  # bump when what a random-policy return means changes


# ----------------------------------------------------------------------------------------------------------
# The distilled-drift hook
# ----------------------------------------------------------------------------------------------------------
class DistilledDrift(Protocol):
    """A distilled drift: ``drift(ratio, advantage, progress, log_horizon) -> penalty`` (jax arrays in, an
    array of ratio's shape out; progress is n/N, log_horizon log10 of the number of updates)."""

    def __call__(self, ratio: jax.Array, advantage: jax.Array, progress: jax.Array,
                 log_horizon: jax.Array) -> jax.Array: ...


# The loader slot for ``--distilled FILE``: a function from a file path to a DistilledDrift that must not execute
# the file (e.g. parse and validate it first). None: ``--distilled`` is refused with a one-line error.
DISTILLED_LOADER: Callable[[pathlib.Path], DistilledDrift] | None = load_distilled


def load_distilled(path: str | pathlib.Path) -> DistilledDrift:
    """The distilled drift in ``path``, through :data:`DISTILLED_LOADER`; InputError (one line) without one."""
    path = pathlib.Path(path)
    if DISTILLED_LOADER is None:
        raise InputError(f"{path}: no loader for distilled drift files is installed "
                         "(discover.shared.rl_transfer.DISTILLED_LOADER)")
    if not path.exists():
        raise InputError(f"{path}: no such distilled drift file or run directory")
    return DISTILLED_LOADER(path)


def _as_drift_fn(distilled: DistilledDrift):
    def apply(params, ratio, advantage, progress, log_horizon):
        return jnp.asarray(distilled(ratio, advantage, progress, log_horizon), ratio.dtype)

    return apply


# ----------------------------------------------------------------------------------------------------------
# Trainers (one compile per env: every horizon up to the longest)
# ----------------------------------------------------------------------------------------------------------
def frozen_in_time(apply, progress: float, log_n: float):
    """``apply`` blind to time: it always sees ``progress`` as n/N and ``log_n`` as log10 N, whatever the run's.
    Against the drift itself on the same seeds this tests whether its gain comes from using time."""

    def frozen(params, ratio, advantage, _progress, _log_horizon):
        return apply(params, ratio, advantage, jnp.float32(progress), jnp.float32(log_n))

    return frozen


def _methods(distilled, frozen_time) -> tuple[str, ...]:
    return METHODS + ((DISTILLED,) if distilled is not None else ()) + ((FROZEN,) if frozen_time is not None else ())


@functools.lru_cache(maxsize=64)
def _comparison_trainer(env_name: str, ppo: PPOConfig, drift: DriftConfig, max_updates: int,
                        distilled: DistilledDrift | None = None, frozen_time: tuple[float, float] | None = None):
    """Sharded trainer over members (method index, params) x one seed each, in :func:`_methods`' order: PPO, DPO,
    the learned family, then the distilled drift and the learned one frozen in time (when asked for)."""
    learned = make_drift(drift).apply
    fns = [
        make_drift(dataclasses.replace(drift, family="ppo", ppo_init=False)).apply,
        make_drift(dataclasses.replace(drift, family="dpo", ppo_init=False)).apply,
        learned,
    ]
    if distilled is not None:
        fns.append(_as_drift_fn(distilled))
    if frozen_time is not None:
        fns.append(frozen_in_time(learned, *frozen_time))
    train = make_population_lifetime_train(env_name, ppo, switch_drift(fns), max_updates)
    return sharded(train, population_mesh("all"))


@functools.lru_cache(maxsize=16)
def _random_policy(env_name: str, ppo: PPOConfig, max_updates: int):
    return make_random_policy(env_name, ppo, max_updates)


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
    return dataclasses.replace(default, total_timesteps=max(1, round(default.total_timesteps * fraction)),
                               **changed_ppo_settings(train_env, train_ppo))


def changed_ppo_settings(train_env: str, train_ppo: PPOConfig) -> dict[str, Any]:
    """The PPO settings (besides the budget) a meta-training config changed from its env's PureJaxRL defaults.
    They hold on every env of a transfer: the drift was learned for that regime (say a larger lr, where PPO's
    clip binds), and PPO is compared in it."""
    default = rl_envs.spec(train_env).ppo
    return {f.name: getattr(train_ppo, f.name) for f in dataclasses.fields(PPOConfig)
            if f.name != "total_timesteps" and getattr(train_ppo, f.name) != getattr(default, f.name)}


def meta_training_envs(meta: dict) -> dict[str, PPOConfig]:
    """Every env a drift was meta-trained on (``env`` first, then ``env_ppo``'s), with its PPO settings."""
    return {meta["env"]: PPOConfig(**meta["ppo"]),
            **{env: PPOConfig(**ppo) for env, ppo in meta.get("env_ppo", {}).items()}}


def default_envs(meta: dict) -> list[str]:
    """What ``discover transfer`` evaluates without ``--envs``: the meta-training envs, then the held-out envs of
    ``env`` that none of them is."""
    trained = meta_training_envs(meta)
    return [*trained, *(env for env in rl_envs.spec(meta["env"]).held_out if env not in trained)]


def _at_horizon(reference: PPOConfig, multiple: float) -> PPOConfig:
    return rl_envs.at_horizon(reference, multiple)


def evaluate_cell(env_name: str, ppo: PPOConfig, drift: DriftConfig, params: Any, seeds: int, key,
                  max_updates: int | None = None, distilled: DistilledDrift | None = None,
                  frozen_time: tuple[float, float] | None = None) -> dict:
    """Final returns (``seeds`` per method, NaN where training failed) of PPO, DPO, the learned drift (and the
    distilled one, and the learned one frozen at ``frozen_time`` = (n/N, log10 N)) on one env and horizon; every
    method trains on the same seeds."""
    n = num_updates(ppo)
    methods = _methods(distilled, frozen_time)
    # The trainer never reads total_timesteps (its lifetime is n): one compile serves every horizon of an env.
    train = _comparison_trainer(env_name, dataclasses.replace(ppo, total_timesteps=1), drift, max_updates or n,
                                distilled, frozen_time)
    m, members = len(methods), len(methods) * seeds
    index = jnp.repeat(jnp.arange(m), seeds)
    learned = jax.tree.map(lambda x: jnp.broadcast_to(x, (members,) + x.shape), params)
    per_fn = ({}, {}, learned) + (({},) if distilled is not None else ()) + ((learned,) if frozen_time is not None
                                                                           else ())
    seed_keys = jnp.tile(jax.random.split(key, seeds), (m, 1))[:, None]
    metrics = train(seed_keys, (index, per_fn), jnp.full((members,), n, jnp.int32))
    finals = np.asarray(metrics["final_return"], np.float64).reshape(m, seeds)
    finals = np.where(np.asarray(metrics["finite"]).reshape(m, seeds), finals, np.nan)
    return {name: finals[i] for i, name in enumerate(methods)}


def random_returns(env_name: str, ppo: PPOConfig, seeds: int, cache_dir: pathlib.Path | None,
                   max_updates: int | None = None) -> np.ndarray:
    """A uniformly random policy's final returns (``seeds`` runs) at this env and horizon, cached as JSON."""
    identity = {"version": RANDOM_VERSION, "env": env_name, "ppo": dataclasses.asdict(ppo), "seeds": seeds,
                "seed": RANDOM_SEED, "backend": jax.default_backend()}
    name = "random-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20] + ".json"
    if cache_dir is not None and (cache_dir / name).is_file():
        try:
            return np.asarray(json.loads((cache_dir / name).read_text())["final_returns"], np.float64)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry is recomputed
    n = num_updates(ppo)
    run = _random_policy(env_name, dataclasses.replace(ppo, total_timesteps=1), max_updates or n)
    finals = np.asarray(jax.device_get(run(jax.random.split(jax.random.PRNGKey(RANDOM_SEED), seeds), jnp.int32(n))),
                        np.float64)
    if cache_dir is not None:
        RunDir(cache_dir).write_json(name, {**identity, "final_returns": finals.tolist()})
    return finals


# ----------------------------------------------------------------------------------------------------------
# Statistics of a cell and of aggregates
# ----------------------------------------------------------------------------------------------------------
def _seed_of(*parts: Any) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8], 16)


def normalized_scores(finals: dict[str, np.ndarray], random: np.ndarray) -> tuple[bool, dict[str, np.ndarray]]:
    """Whether the cell's normalizer is defined, and every method's per-seed scores (failed runs score 0)."""
    ppo = finals["PPO"]
    defined = rl_envs.normalizer_defined(ppo[np.isfinite(ppo)], random)
    if not defined:
        return False, {}
    ppo_mean, random_mean = float(np.nanmean(ppo)), float(np.mean(random))
    return True, {m: rl_envs.normalized_runs(v, ppo_mean, random_mean) for m, v in finals.items()}


def iqm_with_normalizer(returns, ppo_returns, random_return: float, seed: int = 0,
                        n_resamples: int = stats.N_RESAMPLES) -> tuple[float, tuple[float, float]]:
    """The IQM of a method's scores (the table's rule, rl_envs.normalized_runs: a failed run scores 0) against
    PPO's mean over the same seeds, with an interval that redraws each seed's pair of runs, so PPO's 16-run mean,
    the normalizer, is uncertain in it as it is in fact. PPO's failed runs leave its mean."""

    def statistic(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return stats.iqm(rl_envs.normalized_runs(a, np.nanmean(b), random_return))

    return stats.paired_bootstrap(returns, ppo_returns, statistic, n_resamples=n_resamples, seed=seed)


def cell_statistics(scores: np.ndarray, ppo_scores: np.ndarray | None, seed: int) -> dict:
    """IQM with its 95% bootstrap interval, the mean, and P(method > PPO) with its interval."""
    point, ci = stats.stratified_bootstrap([scores], seed=seed)
    out = {"iqm": point, "ci": [ci[0], ci[1]], "mean": float(np.mean(scores))}
    if ppo_scores is not None:
        p, p_ci = stats.probability_of_improvement(scores, ppo_scores, seed=seed + 1)
        out.update(poi=p, poi_ci=[p_ci[0], p_ci[1]])
    return out


# ----------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------
def _check_arguments(envs, horizons, seeds) -> tuple[list[str] | None, list[float]]:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"--seeds must be a whole number >= 1, got {seeds!r}")
    if envs is not None:
        envs = list(envs)
        if not envs:
            raise InputError("--envs names no environment")
        for env in envs:
            rl_envs.spec(env)  # one clear error for an unknown env before any training
    if horizons is None:
        horizons = list(DEFAULT_HORIZONS)
    horizons = [float(h) for h in horizons]
    if not horizons:
        raise InputError("--horizons names no horizon")
    bad = [h for h in horizons if not (math.isfinite(h) and h > 0)]
    if bad:
        raise InputError(f"--horizons must be positive multiples of the reference horizon, got {bad[0]:g}")
    return envs, horizons


def run_rl_transfer(
    run_dir_or_drift_path: str | pathlib.Path,
    envs: list[str] | None = None,
    horizons: list[float] | None = None,
    seeds: int = DEFAULT_SEEDS,
    out_dir: str | pathlib.Path | None = None,
    distilled: DistilledDrift | None = None,
    cache_dir: str | pathlib.Path | None = None,
    seed_offset: int = 0,
    time_frozen: bool = False,
) -> str:
    """Evaluates a learned drift (and optionally a distilled one) against PPO and DPO on ``envs`` x
    ``horizons`` with ``seeds`` seeds per method and cell; writes transfer.md / .json / .png and TensorBoard
    (text + figure) into ``out_dir`` (default: the run directory, or the drift file's folder). Random-policy
    returns are cached in ``cache_dir`` (default: ``.rl_baselines`` beside the output folder). ``seed_offset`` > 0
    trains every method on other seeds (the same table replicated; PPO's own replicate shows how far a method
    equal to PPO moves against another set's normalizer). ``time_frozen`` adds the learned drift blind to time
    (:func:`frozen_in_time` at n/N = 0.5 and the meta-training lifetime's log N) and, per cell, the learned drift's
    paired difference from it. Returns the markdown.

    ``transfer.json``: ``{"cells": [{"env", "horizon", "method", "iqm", "ci": [lo, hi], "mean", "seeds",
    "defined", ...}], "aggregates": [...], ...}``; a cell whose normalizer is undefined has nulls."""
    envs, horizons = _check_arguments(envs, horizons, seeds)
    drift_file, run = _resolve_source(run_dir_or_drift_path)
    family, params, meta = load_drift(drift_file)  # DriftFileError (one line) for anything but a drift
    if "ppo" not in meta:
        raise DriftFileError(drift_file, "__meta__ has no 'ppo' (the PPO settings the drift was trained with)")
    train_env = meta["env"]
    train_ppo = PPOConfig(**meta["ppo"])
    trained = meta_training_envs(meta)
    envs = envs or default_envs(meta)
    frozen_time = None
    if time_frozen:
        if family.config.family not in TIME_FAMILIES:
            raise DriftFileError(drift_file, f"--time-frozen needs a drift with time inputs "
                                             f"({' or '.join(TIME_FAMILIES)}); this one is {family.config.family!r}")
        frozen_time = (FROZEN_PROGRESS, log_horizon(train_ppo))
    methods = _methods(distilled, frozen_time)
    target = (
        pathlib.Path(out_dir) if out_dir is not None else (run.path if run is not None else drift_file.parent)
    )
    cache = pathlib.Path(cache_dir) if cache_dir is not None else target.resolve().parent / ".rl_baselines"

    rows = []
    if isinstance(seed_offset, bool) or not isinstance(seed_offset, int) or seed_offset < 0:
        raise InputError(f"--fresh-seed-offset must be a whole number >= 0, got {seed_offset!r}")
    base_key = jax.random.PRNGKey(TRANSFER_SEED)
    if seed_offset:  # 0 keeps the seeds every earlier table used
        base_key = jax.random.fold_in(base_key, seed_offset)
    for e, env in enumerate(envs):
        reference = trained.get(env) or reference_ppo_config(env, train_env, train_ppo)
        configs = [_at_horizon(reference, multiple) for multiple in horizons]
        max_updates = max(num_updates(c) for c in configs)
        for h, (multiple, ppo) in enumerate(zip(horizons, configs)):
            key = jax.random.fold_in(jax.random.fold_in(base_key, e), h)
            finals = evaluate_cell(env, ppo, family.config, params, seeds, key, max_updates, distilled, frozen_time)
            random = random_returns(env, ppo, seeds, cache, max_updates)
            defined, scores = normalized_scores(finals, random)
            row = {"env": env, "horizon": multiple, "total_timesteps": ppo.total_timesteps,
                   "ppo_return": float(np.nanmean(finals["PPO"])), "random_return": float(np.mean(random)),
                   "defined": defined, "held_out": env not in trained, "seeds": seeds}
            for i, method in enumerate(methods):
                entry = {"returns": [None if not np.isfinite(x) else float(x) for x in finals[method]],
                         "failures": int(np.sum(~np.isfinite(finals[method])))}
                if defined:
                    entry["scores"] = scores[method].tolist()
                    entry.update(cell_statistics(scores[method], None if method == "PPO" else scores["PPO"],
                                                 _seed_of(env, multiple, i)))
                    # the same IQM with PPO's 16-run mean redrawn too (benchmarks/rl_placebo.py: it moves ~10%)
                    entry["ci_with_normalizer"] = list(iqm_with_normalizer(
                        finals[method], finals["PPO"], float(np.mean(random)), seed=_seed_of(env, multiple, i, "n"))[1])
                row[method] = entry
            if frozen_time is not None and defined:  # the paired test of time use: same seeds, same normalizer
                paired = stats.paired(scores["learned"], scores[FROZEN])
                row["learned"]["vs_frozen"] = {**paired.to_json(), "verdict": paired.verdict(lower_is_better=False)}
            rows.append(row)

    aggregates = []
    for label, chosen in (("held-out envs", [r for r in rows if r["held_out"]]), ("all cells", rows)):
        usable = [r for r in chosen if r["defined"]]
        if not usable:
            continue
        agg = {"cells": label, "count": len(usable), "undefined": len(chosen) - len(usable)}
        for i, method in enumerate(methods):
            point, ci = stats.stratified_bootstrap([r[method]["scores"] for r in usable], seed=_seed_of(label, i))
            agg[method] = {"iqm": point, "ci": [ci[0], ci[1]]}
        aggregates.append(agg)

    markdown = markdown_report(drift_file, meta, " + ".join(trained), train_ppo, seeds, rows, aggregates, methods,
                               changed_ppo_settings(train_env, train_ppo), seed_offset, frozen_time)
    out = RunDir(target)
    out.write_text("transfer.md", markdown)
    out.write_json("transfer.json", {**json_report(drift_file, meta, seeds, rows, aggregates, methods, frozen_time),
                                     "seed_offset": seed_offset})
    fig = transfer_figure(rows, methods)
    fig.savefig(out.file("transfer.png"), dpi=90)
    logger = TBLogger(run if (run is not None and out_dir is None) else out)
    logger.text("transfer/table", markdown, 0)
    logger.figure("transfer/plot", fig, 0, close=False)
    logger.close()
    return markdown
