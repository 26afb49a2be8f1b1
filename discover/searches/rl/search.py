"""RL-objective search: evolution strategies over a drift network (LPO / TA-LPO).

One generation: the ES proposes ``popsize`` drift-parameter vectors; every one of them, and the ES mean as one
extra row, trains PPO-style agents from scratch (``envs.ppo``, all rows x seeds in one jitted call, the same
training seeds for every row); a row's score is its mean final return normalized by PPO's on the same env and
horizon (``envs.rl_envs.normalize_return``: PPO = 1); fitness = -score (the engine minimizes), a row whose
training produced NaN/inf gets fitness +inf and is counted.

Outputs in the run directory: ``baselines.json`` (PPO and DPO on this env and horizon), ``best_drift.npz`` and
``final_drift.npz`` (drift parameters with their config as JSON; no pickle), ``drift.png``, ``results.json``,
TensorBoard events (ES statistics, return curves, pictures of the drift over (r, A) at n/N = 0, 0.5, 1 next to
PPO's and DPO's) and orbax checkpoints of the whole search state (resume is exact).

After the last generation the final ES mean and the best-scoring mean are re-evaluated on fresh seeds (one
population-sized call) and the better one is chosen; the chosen drift is then scored again on another set of
fresh seeds (a second call), and that score is the one reported: selection and report never share seeds.
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
from discover.searches.rl.baselines import load_or_compute_baselines, population_trainer
from discover.searches.rl.config import RLSearchConfig
from discover.searches.rl.figures import curves_figure, drift_figure
from discover.searches.rl.steps import SearchContext, SearchState, init_search_state, run_generation
from discover.shared import runner
from discover.shared.drift_io import save_drift
from discover.shared.es import make_strategy
from discover.shared.runner import Progress, Summary
from envs import rl_envs
from envs.ppo import log_horizon, return_curve
from search_spaces.drift import make_drift

SELECT_SALT = 1_000_003  # folds the run seed into fresh seeds that choose between the final and best means
REPORT_SALT = 2_000_029  # ... and into other fresh seeds that score the chosen drift


def _mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if len(values) < 2 or not np.isfinite(values).all():
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


@dataclasses.dataclass
class RLSummary(Summary):
    env: str = ""
    total_timesteps: int = 0
    ppo_return: float = float("nan")
    ppo_normalized_return: float = 1.0
    ppo_stderr: float = float("nan")
    dpo_normalized_return: float = float("nan")
    dpo_stderr: float = float("nan")
    best_mean_drift_during_search: float = float("nan")
    best_generation: int = 0
    best_drift_normalized_return: float = float("nan")
    best_drift_stderr: float = float("nan")
    best_drift_is: str = ""
    final_eval_runs: int = 0
    selection: dict = dataclasses.field(default_factory=dict)
    history: dict = dataclasses.field(default_factory=dict)

    def headline(self) -> list[str]:
        runs = f"{self.final_eval_runs} fresh runs"
        return [
            f"normalized return on {self.env} (PPO = 1, the env's return floor = 0; mean ± standard error):",
            (f"  learned drift ({self.best_drift_is}): {self.best_drift_normalized_return:.3f} ± "
            f"{self.best_drift_stderr:.3f}  ({runs}, seeds not used to choose it)"),
            (f"  PPO: {self.ppo_normalized_return:.3f} ± {self.ppo_stderr:.3f}   "
            f"DPO: {self.dpo_normalized_return:.3f} ± {self.dpo_stderr:.3f}  (baseline seeds)"),
        ]

    def hparam_metrics(self) -> dict[str, float]:
        return {"best_drift_normalized_return": self.best_drift_normalized_return,
                "dpo_normalized_return": self.dpo_normalized_return}


@dataclasses.dataclass
class RunContext:
    search: SearchContext
    run_dir: RunDir
    baselines: dict

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

    def baseline_curves(self) -> dict[str, np.ndarray]:
        return {name.upper(): np.array(self.baselines[name]["curve"], np.float64) for name in ("ppo", "dpo")}


def _drift_meta(config: RLSearchConfig, **extra) -> dict:
    return {
        "kind": "rl_drift",
        "drift": dataclasses.asdict(config.drift),
        "env": config.env.name,
        "ppo": dataclasses.asdict(config.ppo_config),
        **extra,
    }


def _evaluate(ctx: SearchContext, rows: Any, salt: int) -> dict:
    """Trains every row on its own fresh seeds (folded from the run seed and ``salt``) with the compiled
    trainer; per-row normalized returns (-inf where training failed) and the raw metrics."""
    train_seeds = ctx.config.es.train_seeds
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(ctx.config.seed), salt), ctx.rows * train_seeds)
    metrics = jax.device_get(ctx.train(keys.reshape((ctx.rows, train_seeds) + keys.shape[1:]), rows))
    finals = np.asarray(metrics["final_return"], np.float64)
    finite = np.asarray(metrics["finite"]).all(axis=1)
    return {"per_row": np.where(finite, np.asarray(ctx.normalize(finals.mean(axis=1))), -np.inf),
            "metrics": metrics}


def final_evaluation(state: SearchState, ctx: SearchContext) -> dict:
    """Chooses between the final ES mean and the best-scoring mean on one set of fresh seeds (half the rows
    each), then scores the chosen one on another set (every row), reusing the compiled trainer."""
    final_params = ctx.strategy.get_mean(state.es_state)
    _, unravel = ravel_pytree(final_params)
    best_params = unravel(state.best_mean)
    half = (ctx.rows + 1) // 2
    pick = np.arange(ctx.rows) >= half
    both = jax.tree.map(lambda f, b: jnp.where(jnp.asarray(pick).reshape((-1,) + (1,) * f.ndim), b[None], f[None]),
                        final_params, best_params)
    selection = _evaluate(ctx, both, SELECT_SALT)["per_row"]
    scores = {"final": float(selection[~pick].mean()), "best": float(selection[pick].mean())}
    winner = "best" if scores["best"] > scores["final"] else "final"
    chosen = {"final": final_params, "best": best_params}[winner]
    rows = jax.tree.map(lambda x: jnp.broadcast_to(x[None], (ctx.rows,) + x.shape), chosen)
    report = _evaluate(ctx, rows, REPORT_SALT)
    mean, stderr = _mean_and_stderr(report["per_row"])
    curve = return_curve({k: report["metrics"][k] for k in ("return_sum", "episode_count")})
    return {"winner": winner, "params": chosen, "final_params": final_params, "selection": scores,
            "normalized_return": mean, "stderr": stderr, "runs": ctx.rows * ctx.config.es.train_seeds,
            "curve": curve}


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
                                 lr=es.lr, antithetic=es.antithetic, rank_shaping=es.rank_shaping)
        progress.phase(f"rl_objective {config.name}: PPO/DPO normalizer on {config.env.name}")
        baselines = load_or_compute_baselines(config, run_dir)
        ctx = SearchContext(
            config=config, family=family, strategy=strategy,
            train=sharded(population_trainer(config.env.name, config.ppo_config, config.drift),
                          population_mesh(config.devices)),
            rows=config.es.popsize + 1, ppo_return=baselines["ppo"]["mean"],
            return_floor=rl_envs.spec(config.env.name).return_floor,
        )
        return RunContext(ctx, run_dir, baselines)

    def init(self, ctx: RunContext) -> SearchState:
        return init_search_state(ctx.config, ctx.search.strategy, ctx.search.family)

    def start_log(self, tb: TBLogger, state: SearchState, ctx: RunContext) -> None:
        baselines = ctx.baselines
        tb.scalars(0, {"baseline/ppo_return": baselines["ppo"]["mean"],
                       "baseline/dpo_normalized_return": float(ctx.search.normalize(baselines["dpo"]["mean"]))})
        for name in ("ppo", "dpo"):
            for u, value in enumerate(baselines[name]["curve"]):
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
        tb.scalars(g, {
            "es/normalized_return_mean_drift": info["mean_drift"],
            "es/normalized_return_best_member": info["member_best"],
            "es/normalized_return_member_mean": info["member_mean"],
            "es/best_mean_drift_so_far": state.best_score,
            "es/failures": info["failures"],
            "es/sigma": float(np.mean(np.asarray(getattr(es_state, "std", np.nan)))),
            "es/mean_norm": float(jnp.linalg.norm(es_state.mean)),
            "time/generation_s": seconds,
            "time/env_steps_per_s": ctx.search.rows * config.es.train_seeds * config.ppo_config.total_timesteps
            / max(seconds, 1e-9),
        })
        scores = np.asarray(info["scores"], np.float64)
        tb.histogram("es/member_normalized_return", scores[np.isfinite(scores)], g)  # failures: es/failures
        if g % config.log.plot_every == 0 or g == config.es.generations:
            mean = ctx.search.strategy.get_mean(es_state)
            tb.figure("drift/learned_vs_ppo_dpo", drift_figure(ctx.search.family, mean, ctx.horizon, f"gen {g}"), g,
                      close=False)
            curves = {"ES mean drift": return_curve(info["mean_row"]), **ctx.baseline_curves()}
            tb.figure("returns/curves", curves_figure(curves, ctx.steps_per_update, f"{config.env.name}, gen {g}"),
                      g, close=False)
        return f"RL search {config.env.name}: mean drift {float(info['mean_drift']):.3f} x PPO"

    def save(self, state: SearchState) -> tuple[SearchState, dict]:
        return state, {"generation": int(state.generation)}

    def restore_like(self, ctx: RunContext) -> SearchState:
        return jax.eval_shape(lambda: init_search_state(ctx.config, ctx.search.strategy, ctx.search.family))

    def restore(self, arrays: SearchState, meta: dict, ctx: RunContext) -> SearchState:
        return arrays

    def finish(self, state: SearchState, ctx: RunContext, tb: TBLogger) -> RLSummary:
        config, run_dir, baselines = ctx.config, ctx.run_dir, ctx.baselines
        final = final_evaluation(state, ctx.search)
        log_h = float(ctx.horizon)
        normalized = {name: np.asarray(ctx.search.normalize(np.asarray(baselines[name]["final_returns"])))
                      for name in ("ppo", "dpo")}
        ppo_mean, ppo_se = _mean_and_stderr(normalized["ppo"])
        dpo_mean, dpo_se = _mean_and_stderr(normalized["dpo"])
        save_drift(run_dir.file("final_drift.npz"), final["final_params"], _drift_meta(config, log_horizon=log_h))
        save_drift(run_dir.file("best_drift.npz"), final["params"],
                   _drift_meta(config, log_horizon=log_h, normalized_return=final["normalized_return"]))
        fig = drift_figure(ctx.search.family, final["params"], ctx.horizon, "learned")
        fig.savefig(run_dir.file("drift.png"), dpi=90)
        tb.figure("drift/best", fig, config.es.generations, close=False)
        curves = {"learned (best drift)": final["curve"], **ctx.baseline_curves()}
        tb.figure("returns/best_vs_baselines", curves_figure(curves, ctx.steps_per_update, config.env.name),
                  config.es.generations, close=False)
        return RLSummary(
            kind=self.kind, name=config.name, run_dir=str(run_dir.path), generations_done=int(state.generation),
            generations=config.es.generations,
            files=["baselines.json", "best_drift.npz", "final_drift.npz", "drift.png"],
            env=config.env.name, total_timesteps=config.ppo_config.total_timesteps,
            ppo_return=baselines["ppo"]["mean"], ppo_normalized_return=ppo_mean, ppo_stderr=ppo_se,
            dpo_normalized_return=dpo_mean, dpo_stderr=dpo_se,
            best_mean_drift_during_search=float(state.best_score), best_generation=int(state.best_generation) + 1,
            best_drift_normalized_return=final["normalized_return"], best_drift_stderr=final["stderr"],
            best_drift_is="best-during-search mean" if final["winner"] == "best" else "final mean",
            final_eval_runs=final["runs"], selection=final["selection"],
            history={k: [None if not np.isfinite(x) else float(x) for x in np.asarray(v)]
                     for k, v in state.history.items()},
        )


def run_rl_search(config: RLSearchConfig, run_dir: RunDir, resume: bool = False, progress=None) -> dict:
    """Runs (or resumes) the ES search in ``run_dir``; the summary as a dict (see :class:`RLSummary`)."""
    return runner.run(RLObjectiveSearch(), config, run_dir, resume=resume, progress=progress).to_json()
