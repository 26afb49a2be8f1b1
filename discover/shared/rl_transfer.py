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
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.errors import InputError
from discover.infra.rundir import RunDir, RunDirError, TBLogger
from discover.infra.sharding import population_mesh, sharded
from discover.shared import stats
from discover.shared.drift_io import DriftFileError, load_distilled, load_drift
from envs import rl_envs
from envs.ppo import PPOConfig, make_population_lifetime_train, make_random_policy, num_updates
from search_spaces.drift import DriftConfig, make_drift, switch_drift

DEFAULT_HORIZONS = (0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_SEEDS = 16
METHODS = ("PPO", "DPO", "learned")
DISTILLED = "distilled"
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
@functools.lru_cache(maxsize=64)
def _comparison_trainer(env_name: str, ppo: PPOConfig, drift: DriftConfig, max_updates: int,
                        distilled: DistilledDrift | None = None):
    """Sharded trainer over members (method index, params) x one seed each: 0 PPO, 1 DPO, 2 the learned family,
    3 the distilled drift (when given)."""
    fns = [
        make_drift(dataclasses.replace(drift, family="ppo", ppo_init=False)).apply,
        make_drift(dataclasses.replace(drift, family="dpo", ppo_init=False)).apply,
        make_drift(drift).apply,
    ]
    if distilled is not None:
        fns.append(_as_drift_fn(distilled))
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
                  max_updates: int | None = None, distilled: DistilledDrift | None = None) -> dict:
    """Final returns (``seeds`` per method, NaN where training failed) of PPO, DPO, the learned drift (and the
    distilled one) on one env and horizon; every method trains on the same seeds."""
    n = num_updates(ppo)
    methods = METHODS + ((DISTILLED,) if distilled is not None else ())
    # The trainer never reads total_timesteps (its lifetime is n): one compile serves every horizon of an env.
    train = _comparison_trainer(env_name, dataclasses.replace(ppo, total_timesteps=1), drift, max_updates or n,
                                distilled)
    m, members = len(methods), len(methods) * seeds
    index = jnp.repeat(jnp.arange(m), seeds)
    learned = jax.tree.map(lambda x: jnp.broadcast_to(x, (members,) + x.shape), params)
    per_fn = ({}, {}, learned) + (({},) if distilled is not None else ())
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


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _fmt_interval(point: float, ci: Sequence[float]) -> str:
    return f"{_fmt(point)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


UNDEFINED = "PPO ≈ random"


def transfer_table(rows: list[dict], methods: Sequence[str]) -> str:
    challengers = [m for m in methods if m != "PPO"]
    head = ["env", "horizon", "env steps", "random return", "PPO return", *methods,
            *[f"P({m} > PPO)" for m in challengers]]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    for row in rows:
        cells = [row["env"], f"{row['horizon']:g}x", f"{row['total_timesteps']:,}", f"{row['random_return']:.1f}",
                 f"{row['ppo_return']:.1f}"]
        if row["defined"]:
            cells += [_fmt_interval(row[m]["iqm"], row[m]["ci"]) for m in methods]
            cells += [_fmt_interval(row[m]["poi"], row[m]["poi_ci"]) for m in challengers]
        else:
            cells += [UNDEFINED] * len(methods) + ["–"] * len(challengers)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def normalizer_table(rows: list[dict], methods: Sequence[str]) -> str:
    lines = ["| env | horizon | " + " | ".join(methods) + " |",
             "| --- | ---: | " + " | ".join(["---:"] * len(methods)) + " |"]
    for row in rows:
        values = ([_fmt_interval(row[m]["iqm"], row[m]["ci_with_normalizer"]) for m in methods] if row["defined"]
                  else [UNDEFINED] * len(methods))
        lines.append(f"| {row['env']} | {row['horizon']:g}x | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def aggregate_table(aggregates: list[dict], methods: Sequence[str]) -> str:
    lines = ["| cells | count | " + " | ".join(methods) + " |",
             "| --- | ---: | " + " | ".join(["---:"] * len(methods)) + " |"]
    for agg in aggregates:
        values = [_fmt_interval(agg[m]["iqm"], agg[m]["ci"]) for m in methods]
        lines.append(f"| {agg['cells']} | {agg['count']} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def transfer_figure(rows: list[dict], methods: Sequence[str]):
    from matplotlib.figure import Figure

    envs = list(dict.fromkeys(row["env"] for row in rows))
    fig = Figure(figsize=(4.6 * len(envs), 3.8))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.15, top=0.88, wspace=0.3)
    for i, env in enumerate(envs):
        ax = fig.add_subplot(1, len(envs), i + 1)
        mine = [row for row in rows if row["env"] == env and row["defined"]]
        x = np.array([row["horizon"] for row in mine])
        for method in methods:
            iqm = np.array([row[method]["iqm"] for row in mine])
            lo = np.array([row[method]["ci"][0] for row in mine])
            hi = np.array([row[method]["ci"][1] for row in mine])
            ax.errorbar(x, iqm, yerr=[iqm - lo, hi - iqm], marker="o", capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training horizon (x reference)")
        ax.set_ylabel("IQM score (PPO = 1, random = 0)")
        ax.set_title(env, fontsize=10)
        ax.legend(fontsize=8)
    return fig


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
) -> str:
    """Evaluates a learned drift (and optionally a distilled one) against PPO and DPO on ``envs`` x
    ``horizons`` with ``seeds`` seeds per method and cell; writes transfer.md / .json / .png and TensorBoard
    (text + figure) into ``out_dir`` (default: the run directory, or the drift file's folder). Random-policy
    returns are cached in ``cache_dir`` (default: ``.rl_baselines`` beside the output folder). ``seed_offset`` > 0
    trains every method on other seeds (the same table replicated; PPO's own replicate shows how far a method
    equal to PPO moves against another set's normalizer). Returns the markdown.

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
    methods = METHODS + ((DISTILLED,) if distilled is not None else ())
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
            finals = evaluate_cell(env, ppo, family.config, params, seeds, key, max_updates, distilled)
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

    markdown = _markdown(drift_file, meta, " + ".join(trained), train_ppo, seeds, rows, aggregates, methods,
                         seed_offset)
    out = RunDir(target)
    out.write_text("transfer.md", markdown)
    out.write_json("transfer.json", {**_json(drift_file, meta, seeds, rows, aggregates, methods),
                                     "seed_offset": seed_offset})
    fig = transfer_figure(rows, methods)
    fig.savefig(out.file("transfer.png"), dpi=90)
    logger = TBLogger(run if (run is not None and out_dir is None) else out)
    logger.text("transfer/table", markdown, 0)
    logger.figure("transfer/plot", fig, 0, close=False)
    logger.close()
    return markdown


def _markdown(drift_file, meta, train_env, train_ppo, seeds, rows, aggregates, methods, seed_offset=0) -> str:
    trained = meta.get("horizons")
    lifetimes = f", lifetimes {', '.join(f'{m:g}x' for m in trained)}" if trained else ""
    for env, multiples in (meta.get("env_horizons") or {}).items():  # horizon.per_env
        lifetimes += f" ({env}: {', '.join(f'{m:g}x' for m in multiples)})"
    title = (f"Transfer of {drift_file.name} (meta-trained on {train_env}, {train_ppo.total_timesteps:,} steps"
             f"{lifetimes}), {seeds} seeds per method and cell"
             + (f" (seed offset {seed_offset})" if seed_offset else ""))
    changed = changed_ppo_settings(train_env, train_ppo)
    if changed:
        title += "; PPO settings on every env: PureJaxRL's with " + ", ".join(f"{k}={v:g}" if isinstance(v, float)
                                                                           else f"{k}={v}" for k, v in changed.items())
    undefined = sum(not r["defined"] for r in rows)
    notes = [
        ("Score of a run: (R - R_random) / (R_PPO - R_random), with R_PPO the mean of PPO's runs in the same cell "
         "and R_random a uniformly random policy's mean return there. Each cell: IQM over seeds [95% bootstrap "
         "interval]; P(X > PPO): the probability that a run of X beats a run of PPO [95% interval]."),
    ]
    if undefined:
        notes.append(f"{UNDEFINED}: PPO is not above the random policy beyond 2 standard errors there, so no score "
                     f"is defined ({undefined} cell{'s' if undefined > 1 else ''}).")
    failures = sum(r[m]["failures"] for r in rows for m in methods)
    if failures:
        notes.append(f"{failures} run(s) produced NaN/inf and score 0.")
    text = f"### {title}\n\n" + " ".join(notes) + "\n\n" + transfer_table(rows, methods)
    text += ("\nThe same IQMs with intervals that also redraw PPO's runs, the normalizer (a joint bootstrap over "
             "the seeds every method shares): a cell's interval above counts the method's runs only.\n\n"
             + normalizer_table(rows, methods))
    if aggregates:
        text += ("\nAggregate IQM over cells (stratified bootstrap, 95% interval); held-out envs are those other "
                 f"than {train_env}:\n\n" + aggregate_table(aggregates, methods))
    return text


def _json(drift_file, meta, seeds, rows, aggregates, methods) -> dict:
    cells = []
    for row in rows:
        for method in methods:
            entry = row[method]
            cell = {"env": row["env"], "horizon": row["horizon"], "method": method, "seeds": seeds,
                    "defined": row["defined"], "iqm": entry.get("iqm"), "ci": entry.get("ci"),
                    "mean": entry.get("mean"), "total_timesteps": row["total_timesteps"],
                    "held_out": row["held_out"], "ppo_return": row["ppo_return"],
                    "random_return": row["random_return"], "returns": entry["returns"],
                    "failures": entry["failures"]}
            if row["defined"]:
                cell["ci_with_normalizer"] = entry["ci_with_normalizer"]
            if method != "PPO" and row["defined"]:
                cell.update(poi=entry["poi"], poi_ci=entry["poi_ci"])
            cells.append(cell)
    return {"drift": str(drift_file), "meta": meta, "seeds": seeds, "methods": list(methods), "cells": cells,
            "aggregates": aggregates}
