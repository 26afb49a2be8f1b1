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
more population-sized call); the better of the two becomes ``best_drift.npz`` and its score is reported.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.checkpointing import Checkpointer, GracefulExit
from discover.infra.config import config_to_dict, dump_config, flat_config
from discover.infra.rundir import RunDir, TBLogger
from discover.infra.sharding import population_mesh, sharded
from discover.searches.rl.baselines import load_or_compute_baselines, population_trainer
from discover.searches.rl.config import RLSearchConfig
from discover.searches.rl.figures import curves_figure, drift_figure
from discover.searches.rl.steps import SearchContext, SearchState, init_search_state, run_generation
from discover.shared.drift_io import save_drift
from discover.shared.es import make_strategy
from envs import rl_envs
from envs.ppo import log_horizon, return_curve
from search_spaces.drift import DriftFamily, make_drift

FINAL_EVAL_SALT = 1_000_003  # folds the run seed into fresh seeds for the final re-evaluation










# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------
def _state_template(config: RLSearchConfig, strategy, family: DriftFamily) -> SearchState:
    return jax.eval_shape(lambda: init_search_state(config, strategy, family))


def _drift_meta(config: RLSearchConfig, **extra) -> dict:
    return {
        "kind": "rl_drift",
        "drift": dataclasses.asdict(config.drift),
        "env": config.env.name,
        "ppo": dataclasses.asdict(config.ppo_config),
        **extra,
    }


def _final_evaluation(state: SearchState, ctx: SearchContext) -> dict:
    """Re-evaluates the final ES mean and the best-scoring mean on fresh seeds, reusing the compiled trainer:
    the first half of the rows trains the final mean, the rest the best one, each row on its own seeds."""
    strategy = ctx.strategy
    final_params = strategy.get_mean(state.es_state)
    best_params = strategy._unravel_solution(state.best_mean)
    half = (ctx.rows + 1) // 2
    pick = jnp.arange(ctx.rows) >= half
    rows = jax.tree.map(
        lambda f, b: jnp.where(pick.reshape((-1,) + (1,) * f.ndim), b[None], f[None]),
        final_params,
        best_params,
    )
    eval_key = jax.random.fold_in(jax.random.PRNGKey(ctx.config.seed), FINAL_EVAL_SALT)
    keys = jax.random.split(eval_key, ctx.rows * ctx.config.es.seeds_per_member)
    keys = keys.reshape((ctx.rows, ctx.config.es.seeds_per_member) + keys.shape[1:])
    metrics = jax.device_get(ctx.train(keys, rows))
    finals = np.asarray(metrics["final_return"], np.float64)
    finite = np.asarray(metrics["finite"]).all(axis=1)
    per_row = np.where(finite, np.asarray(ctx.normalize(finals.mean(axis=1))), -np.inf)
    out = {}
    for name, sel in (("final", ~np.asarray(pick)), ("best", np.asarray(pick))):
        vals = per_row[sel]
        out[name] = {
            "normalized_return": float(vals.mean()),
            "stderr": float(vals.std(ddof=1) / math.sqrt(len(vals)))
            if len(vals) > 1 and np.isfinite(vals).all()
            else 0.0,
            "runs": int(sel.sum() * ctx.config.es.seeds_per_member),
            "curve": return_curve({k: metrics[k][sel] for k in ("return_sum", "episode_count")}),
        }
    out["params"] = {"final": final_params, "best": best_params}
    return out


def run_rl_search(config: RLSearchConfig, run_dir: RunDir, resume: bool = False, progress=None) -> dict:
    """Runs (or resumes) the ES search; writes drifts, results.json, TensorBoard and checkpoints into run_dir.

    Returns a summary dict. Stops early (after checkpointing) on SIGINT/SIGTERM; ``summary["interrupted"]``.
    """
    started = time.time()
    ppo = config.ppo_config
    env_spec = rl_envs.spec(config.env.name)
    family = make_drift(config.drift)
    strategy = make_strategy(config.es.strategy, config.es.popsize, family.init(jax.random.PRNGKey(0)),
                             sigma=config.es.sigma, lr=config.es.lr, antithetic=config.es.antithetic,
                             rank_shaping=config.es.rank_shaping)
    baseline_task = progress.add_task("PPO/DPO normalizer", total=None) if progress is not None else None
    baselines = load_or_compute_baselines(config, run_dir)
    if progress is not None:
        progress.update(baseline_task, total=1, completed=1)
    rows = config.es.popsize + 1
    ctx = SearchContext(
        config=config,
        family=family,
        strategy=strategy,
        train=sharded(population_trainer(config.env.name, ppo, config.drift), population_mesh(config.devices)),
        rows=rows,
        ppo_return=baselines["ppo"]["mean"],
        return_floor=env_spec.return_floor,
    )
    horizon = log_horizon(ppo)
    steps_per_update = ppo.num_envs * ppo.num_steps
    generations = config.es.generations

    checkpointer = Checkpointer(run_dir.checkpoint_dir, max_to_keep=config.checkpoint.max_to_keep)
    state = None
    if resume and checkpointer.latest_step() is not None:
        _, state, _ = checkpointer.restore(_state_template(config, strategy, family))
    resumed_from = int(state.generation) if state is not None else None
    if state is None:
        state = init_search_state(config, strategy, family)

    tb = TBLogger(run_dir)
    dpo_score = float(ctx.normalize(baselines["dpo"]["mean"]))
    if resumed_from is None:
        tb.text("config", "```yaml\n" + dump_config(config) + "```", 0)
        tb.scalars(
            0, {"baseline/ppo_return": baselines["ppo"]["mean"], "baseline/dpo_normalized_return": dpo_score}
        )
        for name in ("ppo", "dpo"):
            for u, value in enumerate(baselines[name]["curve"]):
                if value is not None:
                    tb.scalars((u + 1) * steps_per_update, {f"baseline_curve/{name}_return": value})
        tb.figure(
            "drift/initial",
            drift_figure(family, strategy.get_mean(state.es_state), horizon, "initial"),
            0,
            close=False,
        )

    task = None
    if progress is not None:
        task = progress.add_task(
            f"RL search {config.env.name}", total=generations, completed=int(state.generation)
        )

    interrupted = False
    with GracefulExit(notice=False) as stop:
        while int(state.generation) < generations:
            t0 = time.time()
            state, info = run_generation(state, ctx)
            info = jax.device_get(info)
            g = int(state.generation)
            seconds = time.time() - t0
            es_state = state.es_state
            std = np.asarray(getattr(es_state, "std", np.nan))
            tb.scalars(
                g,
                {
                    "es/normalized_return_mean_drift": info["mean_drift"],
                    "es/normalized_return_best_member": info["member_best"],
                    "es/normalized_return_member_mean": info["member_mean"],
                    "es/best_mean_drift_so_far": state.best_score,
                    "es/failures": info["failures"],
                    "es/sigma": float(np.mean(std)),
                    "es/mean_norm": float(jnp.linalg.norm(es_state.mean)),
                    "time/generation_s": seconds,
                    "time/env_steps_per_s": rows
                    * config.es.seeds_per_member
                    * ppo.total_timesteps
                    / max(seconds, 1e-9),
                },
            )
            tb.histogram("es/member_normalized_return", info["scores"], g)
            if g % config.log.plot_every == 0 or g == generations:
                mean_params = strategy.get_mean(es_state)
                tb.figure(
                    "drift/learned_vs_ppo_dpo",
                    drift_figure(family, mean_params, horizon, f"gen {g}"),
                    g,
                    close=False,
                )
                curves = {
                    "ES mean drift": return_curve(info["mean_row"]),
                    "PPO": np.array(baselines["ppo"]["curve"], np.float64),
                    "DPO": np.array(baselines["dpo"]["curve"], np.float64),
                }
                tb.figure(
                    "returns/curves",
                    curves_figure(curves, steps_per_update, f"{config.env.name}, gen {g}"),
                    g,
                    close=False,
                )
            if progress is not None:
                progress.update(
                    task,
                    advance=1,
                    description=f"RL search {config.env.name}: mean drift {float(info['mean_drift']):.3f} x PPO",
                )
            if g % config.checkpoint.every == 0 or g == generations or stop.requested:
                checkpointer.save(g, state, {"generation": g})
            if stop.requested and g < generations:
                interrupted = True
                break
    checkpointer.wait()
    checkpointer.close()

    summary = {
        "env": config.env.name,
        "total_timesteps": ppo.total_timesteps,
        "generations_done": int(state.generation),
        "generations": generations,
        "ppo_return": baselines["ppo"]["mean"],
        "dpo_normalized_return": dpo_score,
        "best_mean_drift_during_search": float(state.best_score),
        "best_generation": int(state.best_generation) + 1,
        "history": {
            k: [None if not np.isfinite(x) else float(x) for x in np.asarray(v)]
            for k, v in state.history.items()
        },
    }
    if not interrupted:
        final = _final_evaluation(state, ctx)
        winner = (
            "best" if final["best"]["normalized_return"] > final["final"]["normalized_return"] else "final"
        )
        summary.update(
            {
                "final_drift_normalized_return": final["final"]["normalized_return"],
                "final_drift_stderr": final["final"]["stderr"],
                "best_drift_normalized_return": final[winner]["normalized_return"],
                "best_drift_stderr": final[winner]["stderr"],
                "best_drift_is": "best-during-search mean" if winner == "best" else "final mean",
                "final_eval_runs": final[winner]["runs"],
            }
        )
        log_h = float(horizon)
        save_drift(
            run_dir.file("final_drift.npz"),
            final["params"]["final"],
            _drift_meta(config, log_horizon=log_h, normalized_return=final["final"]["normalized_return"]),
        )
        save_drift(
            run_dir.file("best_drift.npz"),
            final["params"][winner],
            _drift_meta(config, log_horizon=log_h, normalized_return=final[winner]["normalized_return"]),
        )
        fig = drift_figure(family, final["params"][winner], horizon, "learned")
        fig.savefig(run_dir.file("drift.png"), dpi=90)
        tb.figure("drift/best", fig, generations, close=False)
        curves = {
            "learned (best drift)": final[winner]["curve"],
            "PPO": np.array(baselines["ppo"]["curve"], np.float64),
            "DPO": np.array(baselines["dpo"]["curve"], np.float64),
        }
        tb.figure(
            "returns/best_vs_baselines",
            curves_figure(curves, steps_per_update, config.env.name),
            generations,
            close=False,
        )
        tb.hparams(
            flat_config(config),
            {
                "best_drift_normalized_return": summary["best_drift_normalized_return"],
                "dpo_normalized_return": dpo_score,
            },
        )
        run_dir.write_json("results.json", {"config": config_to_dict(config), **summary})
    tb.close()
    summary.update(
        interrupted=interrupted,
        resumed_from=resumed_from,
        wall_time_s=time.time() - started,
        run_dir=str(run_dir.path),
    )
    return summary
