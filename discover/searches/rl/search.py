"""RL-objective search: evolution strategies over a drift network (LPO / TA-LPO).

One generation: a training horizon is drawn from ``horizon.multiples`` (uniformly; log-spaced multiples make
lifetimes log-uniform; ``horizon.per_env`` gives an env its own), with several meta-training envs
(``env.extra``) an (env, horizon) pair; the ES proposes
``popsize`` drift-parameter vectors; every one of them, and the ES mean as one extra row, trains
``es.train_seeds`` PPO-style agents from scratch for that horizon (``envs.ppo``, all rows x seeds in one jitted
call compiled once per env for every horizon, the same training seeds for every row); a row's score is its mean
final return normalized on that env and horizon by PPO's and a random policy's (``envs.rl_envs.normalize_return``:
PPO = 1, random = 0); fitness = -score (the engine minimizes; Open_ES shapes it to centred ranks), a row whose
training produced NaN/inf gets fitness +inf and is counted. With ``horizon.sample: every`` a generation trains
every row at every bucket instead of one drawn bucket, and a row's score is the mean of its normalized returns
over the buckets.

Outputs in the run directory: ``baselines.json`` (PPO, DPO and the random policy at every horizon; one
``baselines-<env>.json`` more per extra env), ``best_drift.npz`` and ``final_drift.npz`` (drift parameters with
their config as JSON; no pickle), ``drift.png``, ``results.json``, TensorBoard events (ES statistics, return
curves, pictures of the drift over (r, A) at n/N = 0, 0.5, 1 next to PPO's and DPO's) and orbax checkpoints of the
whole search state (resume is exact).

After the last generation ``final_drift.npz`` (the final ES mean) is written; then, unless
``fitness.final_evaluation`` is false, the final ES mean and the best-scoring mean are re-evaluated on fresh seeds
at every env and horizon (one population-sized call per bucket, half the rows each) and the better one on average
is chosen;
the chosen drift is then scored again on another set of fresh seeds (a second call per bucket), and that score is
the one reported: selection and report never share seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from discover.infra.config import load_config
from discover.infra.rundir import RunDir, TBLogger
from discover.infra.sharding import population_mesh, sharded
from discover.searches.rl.baselines import (
    baselines_file,
    check_defined,
    horizon_updates,
    load_or_compute_baselines,
    population_trainer,
)
from discover.searches.rl.config import RLSearchConfig
from discover.searches.rl.figures import curves_figure, drift_figure
from discover.searches.rl.steps import (
    SearchContext,
    SearchState,
    generation_buckets,
    init_search_state,
    run_generation,
)
from discover.shared import runner
from discover.shared.drift_io import save_drift
from discover.shared.es import cbo_options, make_strategy
from discover.shared.runner import Progress, Summary
from envs.ppo import log_horizon, return_curve
from search_spaces.drift import make_drift

SELECT_SALT = 1_000_003  # folds the run seed into fresh seeds that choose between the final and best means
REPORT_SALT = 2_000_029  # ... and into other fresh seeds that score the chosen drift


def _mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if len(values) < 2 or not np.isfinite(values).all():
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def _over_horizons(per_horizon: dict[str, dict]) -> tuple[float, float]:
    """The mean over horizons of per-horizon means, with its standard error (independent runs per horizon)."""
    means = [v["mean"] for v in per_horizon.values()]
    ses = [v["stderr"] for v in per_horizon.values()]
    return float(np.mean(means)), float(math.sqrt(sum(se * se for se in ses)) / len(ses))


@dataclasses.dataclass
class RLSummary(Summary):
    env: str = ""
    envs: list = dataclasses.field(default_factory=list)  # every meta-training env, env first
    total_timesteps: int = 0
    horizons: list = dataclasses.field(default_factory=list)  # multiples of total_timesteps meta-trained on
    ppo_returns: dict = dataclasses.field(default_factory=dict)  # bucket label -> PPO's mean return
    random_returns: dict = dataclasses.field(default_factory=dict)  # bucket label -> the random policy's
    ppo_normalized_return: float = 1.0
    ppo_stderr: float = float("nan")
    dpo_normalized_return: float = float("nan")
    dpo_stderr: float = float("nan")
    best_mean_drift_during_search: float = float("nan")
    best_generation: int = 0
    best_drift_normalized_return: float = float("nan")
    best_drift_stderr: float = float("nan")
    best_drift_is: str = ""
    # method -> bucket label -> {mean, stderr}; a label is the multiple ("0.5"), "<env> <multiple>" with several envs
    per_horizon: dict = dataclasses.field(default_factory=dict)
    final_eval_runs: int = 0  # fresh runs of the chosen drift per horizon
    selection: dict = dataclasses.field(default_factory=dict)
    history: dict = dataclasses.field(default_factory=dict)

    def headline(self) -> list[str]:
        learned = self.per_horizon.get("learned", {})
        envs = self.envs or [self.env]
        every = [f"{m:g}" if len(envs) == 1 else f"{env} {m:g}" for env in envs for m in self.horizons]
        lifetimes = ", ".join(f"{m:g}x" for m in self.horizons)
        horizons = f"horizons {lifetimes}"
        if learned and list(learned) != every:  # horizon.per_env: some env has its own lifetimes
            horizons = f"its {len(learned)} (env, horizon) buckets, on lifetimes {lifetimes}"
        per = "  ".join(f"{m}x {v['mean']:.3f}" for m, v in learned.items())
        return [
            (f"normalized return on {' + '.join(self.envs or [self.env])} (PPO = 1, random policy = 0; mean ± "
             f"standard error, averaged over {horizons} of {self.total_timesteps:,} steps):"),
            (f"  learned drift ({self.best_drift_is}): {self.best_drift_normalized_return:.3f} ± "
             f"{self.best_drift_stderr:.3f}  ({self.final_eval_runs} fresh runs per horizon, seeds not used to "
             "choose it)") if self.final_eval_runs else
            f"  learned drift ({self.best_drift_is}): not scored here (fitness.final_evaluation: false)",
            *([f"    per horizon: {per}"] if len(learned) > 1 else []),
            (f"  PPO: {self.ppo_normalized_return:.3f} ± {self.ppo_stderr:.3f}   "
             f"DPO: {self.dpo_normalized_return:.3f} ± {self.dpo_stderr:.3f}  (baseline seeds)"),
            "  held-out envs and horizons, with confidence intervals: discover transfer RUN",
        ]

    def hparam_metrics(self) -> dict[str, float]:
        metrics = {"best_drift_normalized_return": self.best_drift_normalized_return,
                   "dpo_normalized_return": self.dpo_normalized_return}
        return {k: v for k, v in metrics.items() if math.isfinite(v)}  # unscored: fitness.final_evaluation false


@dataclasses.dataclass
class RunContext:
    search: SearchContext
    run_dir: RunDir
    baselines: list[dict]  # per meta-training env, in the order of env.names

    @property
    def config(self) -> RLSearchConfig:
        return self.search.config

    @property
    def horizon(self) -> jax.Array:
        return log_horizon(self.config.ppo_config)

    @property
    def steps_per_update(self) -> int:
        ppo = self.config.ppo_config
        return ppo.num_envs * ppo.num_steps

    @property
    def reference_bucket(self) -> int:
        return reference_bucket(self.search)

    def baseline_entry(self, bucket: int) -> dict:
        """The baselines (PPO, DPO, random policy) of one bucket's env and horizon."""
        env = self.search.bucket_env[bucket]
        return self.baselines[env]["horizons"][self.search.bucket_env[:bucket].count(env)]

    def baseline_curves(self, bucket: int | None = None) -> dict[str, np.ndarray]:
        entry = self.baseline_entry(self.reference_bucket if bucket is None else bucket)
        return {name.upper(): np.array(entry[name]["curve"], np.float64) for name in ("ppo", "dpo")}


def reference_bucket(ctx: SearchContext) -> int:
    """The bucket of ``env.name`` closest to multiple 1 (on a log scale): what curves and pictures show."""
    return int(np.argmin([abs(math.log(m)) if e == 0 else math.inf for m, e in zip(ctx.multiples, ctx.bucket_env)]))


def _drift_meta(config: RLSearchConfig, **extra) -> dict:
    return {
        "kind": "rl_drift",
        "drift": dataclasses.asdict(config.drift),
        "env": config.env.name,
        "ppo": dataclasses.asdict(config.ppo_config),
        # the further meta-training envs with their PPO settings (discover transfer scores them as trained on)
        "env_ppo": {env: dataclasses.asdict(config.ppo_config_of(env)) for env in config.env.extra},
        "horizons": [float(m) for m in config.horizon.multiples],
        # envs meta-trained on other lifetimes than "horizons" (horizon.per_env)
        "env_horizons": {env: [float(m) for m in ms] for env, ms in config.horizon.per_env.items()},
        "es": dataclasses.asdict(config.es),
        "seed": config.seed,
        **extra,
    }


def _evaluate(ctx: SearchContext, rows: Any, salt: int, bucket: int) -> dict:
    """Trains every row on its own fresh seeds (folded from the run seed, ``salt`` and the bucket) at bucket
    ``bucket`` (an env and horizon) with that env's compiled trainer; per-run normalized returns
    ``[rows, seeds]`` (-inf where training failed) and the raw metrics."""
    train_seeds = ctx.config.es.train_seeds
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(ctx.config.seed), salt), bucket)
    keys = jax.random.split(key, ctx.rows * train_seeds)
    keys = keys.reshape((ctx.rows, train_seeds) + keys.shape[1:])
    metrics = jax.device_get(ctx.train_rows(keys, rows, ctx.horizon_updates[bucket], env=ctx.bucket_env[bucket]))
    finals = np.asarray(metrics["final_return"], np.float64)
    finite = np.asarray(metrics["finite"])
    normalized = np.asarray(ctx.normalize(finals, bucket), np.float64)
    return {"per_run": np.where(finite, normalized, -np.inf), "metrics": metrics}


def final_evaluation(state: SearchState, ctx: SearchContext) -> dict:
    """Chooses between the final ES mean and the best-scoring mean on one set of fresh seeds at every bucket (env
    and horizon; half the rows each; the higher mean over buckets wins), then scores the chosen one on another
    set (every row, every bucket), reusing the compiled trainers."""
    final_params = ctx.strategy.get_mean(state.es_state)
    _, unravel = ravel_pytree(final_params)
    best_params = unravel(state.best_mean)
    half = (ctx.rows + 1) // 2
    pick = np.arange(ctx.rows) >= half
    both = jax.tree.map(lambda f, b: jnp.where(jnp.asarray(pick).reshape((-1,) + (1,) * f.ndim), b[None], f[None]),
                        final_params, best_params)
    buckets = range(len(ctx.multiples))
    selection = [_evaluate(ctx, both, SELECT_SALT, k)["per_run"] for k in buckets]
    scores = {"final": float(np.mean([s[~pick].mean() for s in selection])),
              "best": float(np.mean([s[pick].mean() for s in selection]))}
    winner = "best" if scores["best"] > scores["final"] else "final"
    chosen = {"final": final_params, "best": best_params}[winner]
    rows = jax.tree.map(lambda x: jnp.broadcast_to(x[None], (ctx.rows,) + x.shape), chosen)
    per_horizon, curve = {}, None
    for k in buckets:
        report = _evaluate(ctx, rows, REPORT_SALT, k)
        mean, stderr = _mean_and_stderr(report["per_run"].ravel())
        per_horizon[ctx.label(k)] = {"mean": mean, "stderr": stderr}
        if k == reference_bucket(ctx):
            n = ctx.horizon_updates[k]
            curve = return_curve({name: report["metrics"][name][..., :n] for name in ("return_sum", "episode_count")})
    mean, stderr = _over_horizons(per_horizon)
    return {"winner": winner, "params": chosen, "final_params": final_params, "selection": scores,
            "normalized_return": mean, "stderr": stderr, "per_horizon": per_horizon,
            "runs": ctx.rows * ctx.config.es.train_seeds, "curve": curve}


def _unevaluated(final_params: Any) -> dict:
    """``final_evaluation``'s result when it is skipped: the final ES mean, with no score."""
    nan = float("nan")
    return {"winner": "final mean, not re-evaluated", "params": final_params, "final_params": final_params,
            "selection": {}, "normalized_return": nan, "stderr": nan, "per_horizon": {}, "runs": 0, "curve": None}


def _baseline_scores(ctx: RunContext) -> dict[str, dict[str, dict]]:
    """PPO's and DPO's normalized returns per bucket on the baseline seeds (PPO = 1 by construction)."""
    out: dict[str, dict[str, dict]] = {"ppo": {}, "dpo": {}}
    for k in range(len(ctx.search.multiples)):
        entry = ctx.baseline_entry(k)
        for name, scores in out.items():
            values = np.asarray(ctx.search.normalize(np.asarray(entry[name]["final_returns"]), k), np.float64)
            mean, se = _mean_and_stderr(values)
            scores[ctx.search.label(k)] = {"mean": mean, "stderr": se}
    return out


class RLObjectiveSearch:
    """The RL-objective search as the runner drives it: one step is one ES generation."""

    kind: ClassVar[str] = "rl_objective"
    config_type: ClassVar[type] = RLSearchConfig

    def load_config(self, path: Any, overrides: Sequence[str] = ()) -> RLSearchConfig:
        return load_config(RLSearchConfig, path, overrides)

    def prepare(self, config: RLSearchConfig, run_dir: RunDir, progress: Progress) -> RunContext:
        family = make_drift(config.drift)
        es = config.es
        strategy = make_strategy(es.strategy, es.popsize, family.init(jax.random.PRNGKey(0)), sigma=es.sigma,
                                 lr=es.lr, antithetic=es.antithetic, rank_shaping=es.rank_shaping,
                                 cbo=cbo_options(es), weight_decay=es.weight_decay)
        envs = config.env.names
        progress.phase(f"rl_objective {config.name}: PPO/DPO/random normalizer on {', '.join(envs)}")
        baselines = [load_or_compute_baselines(config, run_dir, env) for env in envs]
        for env, entry in zip(envs, baselines):
            check_defined(entry, f"horizon.per_env.{env}" if env in config.horizon.per_env else "horizon.multiples")
        updates = [horizon_updates(config, env) for env in envs]
        mesh = population_mesh(config.devices)
        horizons = [h for entry in baselines for h in entry["horizons"]]  # bucket order: env by env
        ctx = SearchContext(
            config=config, family=family, strategy=strategy,
            trains=tuple(sharded(population_trainer(env, config.ppo_config_of(env), config.drift, max(n)), mesh)
                         for env, n in zip(envs, updates)),
            rows=config.es.popsize + 1, multiples=tuple(float(m) for env in envs for m in config.horizon.of(env)),
            horizon_updates=tuple(u for n in updates for u in n), ppo_returns=tuple(h["ppo"]["mean"] for h in horizons),
            random_returns=tuple(h["random"]["mean"] for h in horizons),
            bucket_env=tuple(e for e, env in enumerate(envs) for _ in config.horizon.of(env)),
        )
        return RunContext(ctx, run_dir, baselines)

    def init(self, ctx: RunContext) -> SearchState:
        return init_search_state(ctx.config, ctx.search.strategy, ctx.search.family)

    def start_log(self, tb: TBLogger, state: SearchState, ctx: RunContext) -> None:
        k = ctx.reference_bucket
        entry = ctx.baseline_entry(k)
        tb.scalars(0, {"baseline/ppo_return": entry["ppo"]["mean"], "baseline/random_return": entry["random"]["mean"],
                       "baseline/dpo_normalized_return": float(ctx.search.normalize(entry["dpo"]["mean"], k))})
        for name in ("ppo", "dpo"):
            for u, value in enumerate(entry[name]["curve"]):
                if value is not None:
                    tb.scalars((u + 1) * ctx.steps_per_update, {f"baseline_curve/{name}_return": value})
        mean = ctx.search.strategy.get_mean(state.es_state)
        tb.figure("drift/initial", drift_figure(ctx.search.family, mean, ctx.horizon, "initial"), 0, close=False)

    def position(self, state: SearchState) -> int:
        return int(state.generation)

    def total(self, ctx: RunContext) -> int:
        return ctx.config.es.generations

    def step(self, state: SearchState, ctx: RunContext) -> tuple[SearchState, dict]:
        state, info = run_generation(state, ctx.search)
        return state, jax.device_get(info)

    def log(self, tb: TBLogger, state: SearchState, info: dict, seconds: float, ctx: RunContext) -> str:
        config, g, es_state = ctx.config, int(state.generation), state.es_state
        bucket = int(info["bucket"])  # the bucket trained on (horizon.sample: every: the first of them)
        buckets = generation_buckets(ctx.search, bucket)
        every = len(buckets) > 1
        env_steps = sum(ctx.search.horizon_updates[k] for k in buckets) * ctx.steps_per_update
        env = ctx.search.env_name(bucket)
        tb.scalars(g, {
            **({} if every else {"es/horizon_multiple": ctx.search.multiples[bucket]}),
            **({"es/env_index": ctx.search.bucket_env[bucket]} if len(ctx.search.trains) > 1 and not every else {}),
            "es/normalized_return_mean_drift": info["mean_drift"],
            "es/normalized_return_best_member": info["member_best"],
            "es/normalized_return_member_mean": info["member_mean"],
            "es/best_mean_drift_so_far": state.best_score,
            "es/failures": info["failures"],
            "es/sigma": float(np.mean(np.asarray(getattr(es_state, "std", np.nan)))),
            "es/mean_norm": float(jnp.linalg.norm(es_state.mean)),
            "time/generation_s": seconds,
            "time/env_steps_per_s": ctx.search.rows * config.es.train_seeds * env_steps / max(seconds, 1e-9),
        })
        scores = np.asarray(info["scores"], np.float64)
        tb.histogram("es/member_normalized_return", scores[np.isfinite(scores)], g)  # failures: es/failures
        if g % config.log.plot_every == 0 or g == config.es.generations:
            mean = ctx.search.strategy.get_mean(es_state)
            tb.figure("drift/learned_vs_ppo_dpo", drift_figure(ctx.search.family, mean, ctx.horizon, f"gen {g}"), g,
                      close=False)
            n = ctx.search.horizon_updates[bucket]
            mean_curve = return_curve({k: np.asarray(v)[..., :n] for k, v in info["mean_row"].items()})
            curves = {"ES mean drift": mean_curve, **ctx.baseline_curves(bucket)}
            title = f"{env} at {ctx.search.multiples[bucket]:g}x, gen {g}"
            tb.figure("returns/curves", curves_figure(curves, ctx.steps_per_update, title), g, close=False)
        if every:
            return f"RL search: mean drift {float(info['mean_drift']):.3f} x PPO, mean over every env and lifetime"
        return (f"RL search {env}: mean drift {float(info['mean_drift']):.3f} x PPO "
                f"at {ctx.search.multiples[bucket]:g}x")

    def save(self, state: SearchState) -> tuple[SearchState, dict]:
        return state, {"generation": int(state.generation)}

    def restore_like(self, ctx: RunContext) -> SearchState:
        return jax.eval_shape(lambda: init_search_state(ctx.config, ctx.search.strategy, ctx.search.family))

    def restore(self, arrays: SearchState, meta: dict, ctx: RunContext) -> SearchState:
        return arrays

    def finish(self, state: SearchState, ctx: RunContext, tb: TBLogger) -> RLSummary:
        config, run_dir = ctx.config, ctx.run_dir
        log_h = float(ctx.horizon)
        # Written before the final evaluation, which can cost as much as the last generations: a run stopped
        # there still leaves its final ES mean.
        final_params = ctx.search.strategy.get_mean(state.es_state)
        save_drift(run_dir.file("final_drift.npz"), final_params, _drift_meta(config, log_horizon=log_h))
        if config.fitness.final_evaluation:
            final = final_evaluation(state, ctx.search)
            chosen = {"normalized_return": final["normalized_return"], "chosen": final["winner"]}
        else:
            final = _unevaluated(final_params)
            chosen = {"chosen": "final (not re-evaluated: fitness.final_evaluation false)"}
        baseline_scores = _baseline_scores(ctx)
        ppo_mean, ppo_se = _over_horizons(baseline_scores["ppo"])
        dpo_mean, dpo_se = _over_horizons(baseline_scores["dpo"])
        save_drift(run_dir.file("best_drift.npz"), final["params"], _drift_meta(config, log_horizon=log_h, **chosen))
        fig = drift_figure(ctx.search.family, final["params"], ctx.horizon, "learned")
        fig.savefig(run_dir.file("drift.png"), dpi=90)
        tb.figure("drift/best", fig, config.es.generations, close=False)
        learned_curve = {} if final["curve"] is None else {"learned (best drift)": final["curve"]}
        curves = {**learned_curve, **ctx.baseline_curves()}
        tb.figure("returns/best_vs_baselines", curves_figure(curves, ctx.steps_per_update, config.env.name),
                  config.es.generations, close=False)
        labels = [ctx.search.label(k) for k in range(len(ctx.search.multiples))]
        entries = [ctx.baseline_entry(k) for k in range(len(labels))]
        return RLSummary(
            kind=self.kind, name=config.name, run_dir=str(run_dir.path), generations_done=int(state.generation),
            generations=config.es.generations,
            files=[*(baselines_file(config, env) for env in config.env.names), "best_drift.npz", "final_drift.npz",
                   "drift.png"],
            env=config.env.name, envs=list(config.env.names), total_timesteps=config.ppo_config.total_timesteps,
            horizons=[float(m) for m in config.horizon.multiples],
            ppo_returns={label: h["ppo"]["mean"] for label, h in zip(labels, entries)},
            random_returns={label: h["random"]["mean"] for label, h in zip(labels, entries)},
            ppo_normalized_return=ppo_mean, ppo_stderr=ppo_se,
            dpo_normalized_return=dpo_mean, dpo_stderr=dpo_se,
            best_mean_drift_during_search=float(state.best_score), best_generation=int(state.best_generation) + 1,
            best_drift_normalized_return=final["normalized_return"], best_drift_stderr=final["stderr"],
            best_drift_is={"best": "best-during-search mean", "final": "final mean"}.get(final["winner"], final["winner"]),
            per_horizon={"learned": final["per_horizon"], **baseline_scores},
            final_eval_runs=final["runs"], selection=final["selection"],
            history={k: [None if not np.isfinite(x) else float(x) for x in np.asarray(v)]
                     for k, v in state.history.items()},
        )


def run_rl_search(config: RLSearchConfig, run_dir: RunDir, resume: bool = False, progress=None) -> dict:
    """Runs (or resumes) the ES search in ``run_dir``; the summary as a dict (see :class:`RLSummary`)."""
    return runner.run(RLObjectiveSearch(), config, run_dir, resume=resume, progress=progress).to_json()
