"""CBO against Open_ES and CMA_ES at an equal number of evaluations: two test functions and one tiny RL search.

    JAX_PLATFORMS=cpu python benchmarks/es_strategies.py [--dim 10] [--popsize 32] [--generations 100]
        [--repeats 10] [--rl] [--rl-popsize 8] [--rl-generations 8] [--json out.json]

* **Functions** (minimized): a shifted sphere ``sum((x - s)^2)`` and a shifted Rastrigin
  ``10 d + sum(z^2 - 10 cos(2 pi z))``, ``z = x - s``, ``s`` a fixed draw from U(-2, 2)^d; every strategy starts
  at 0 with std ``--sigma`` (Open_ES: constant std, Adam lr ``--lr``; CMA_ES: ``std_init``; CBO: the initial
  spread of its particles), centered-rank shaping where the strategy takes it (the project's defaults,
  :func:`discover.shared.es.make_strategy`), ``popsize x generations`` evaluations each. Reported over
  ``--repeats`` independent runs (their seeds 0..): median [25th, 75th percentile] of f at the final mean
  (CBO: its consensus point) and of the best f evaluated. All runs of one strategy are one jitted, vmapped call.
* **RL** (``--rl``): ``experiments/talpo_tiny.yaml`` with ``es.popsize`` / ``es.generations`` set, once per
  strategy (same seed, same evaluations), through the runner as ``discover search`` runs it; reported: the
  search's own final score (the chosen drift's normalized return on fresh seeds, PPO = 1, random = 0, mean ±
  s.e.) and the best ES-mean score seen during the search. One run per strategy: noisy.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from discover.shared.es import make_strategy

STRATEGIES = ("Open_ES", "CMA_ES", "CBO")


def sphere(z):
    return jnp.sum(z * z)


def rastrigin(z):
    return 10.0 * z.shape[-1] + jnp.sum(z * z - 10.0 * jnp.cos(2.0 * jnp.pi * z))


FUNCTIONS = {"sphere": sphere, "rastrigin": rastrigin}


def run_function(name: str, f, dim: int, popsize: int, generations: int, repeats: int, sigma: float, lr: float,
                 shift: np.ndarray) -> dict:
    strategy = make_strategy(name, popsize, jnp.zeros(dim), sigma=sigma, lr=lr, antithetic=True, rank_shaping=True)
    params = strategy.default_params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=sigma)
    target = jnp.asarray(shift, jnp.float32)

    def one(key):
        k0, k1 = jax.random.split(key)
        state = strategy.init(k0, jnp.zeros(dim), params)

        def gen(carry, key):
            state, best = carry
            ka, kt = jax.random.split(key)
            x, state = strategy.ask(ka, state, params)
            fit = jax.vmap(lambda v: f(v - target))(x)
            state, _ = strategy.tell(kt, x, fit, state, params)
            return (state, jnp.minimum(best, jnp.min(fit))), None

        (state, best), _ = jax.lax.scan(gen, (state, jnp.inf), jax.random.split(k1, generations))
        return f(strategy.get_mean(state) - target), best

    t0 = time.perf_counter()
    at_mean, best = jax.device_get(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), repeats)))
    seconds = time.perf_counter() - t0

    def q(v):
        v = np.asarray(v, np.float64)
        return {"median": float(np.median(v)), "q25": float(np.percentile(v, 25)), "q75": float(np.percentile(v, 75)),
                "values": [float(x) for x in v]}

    return {"f_at_mean": q(at_mean), "best_f": q(best), "evaluations": popsize * generations, "seconds": seconds}


def run_rl(name: str, popsize: int, generations: int, out_root: pathlib.Path) -> dict:
    from discover.infra.experiments import resolve_config
    from discover.infra.rundir import new_run_dir
    from discover.searches import get_search
    from discover.shared import runner

    search = get_search("rl_objective")
    config = search.load_config(resolve_config("talpo_tiny"),
                                [f"es.strategy={name}", f"es.popsize={popsize}", f"es.generations={generations}",
                                 "checkpoint.every=1000"])
    run_dir = new_run_dir(config, out_root)
    t0 = time.perf_counter()
    summary = runner.run(search, config, run_dir)
    return {"final_normalized_return": summary.best_drift_normalized_return,
            "final_stderr": summary.best_drift_stderr, "chosen": summary.best_drift_is,
            "best_mean_during_search": summary.best_mean_drift_during_search,
            "evaluations": popsize * generations * config.es.train_seeds, "train_seeds": config.es.train_seeds,
            "fresh_runs_per_horizon": summary.final_eval_runs, "seconds": time.perf_counter() - t0}


def markdown(result: dict) -> str:
    a = result["args"]
    lines = [(f"Functions: {a['dim']}-D, {a['popsize']} x {a['generations']} = {a['popsize'] * a['generations']} "
             f"evaluations per run, {a['repeats']} runs per strategy (median [25th, 75th percentile]); start 0, "
             f"std {a['sigma']}, optimum shifted by U(-2, 2)^{a['dim']}."), "",
             "| function | strategy | f at the final mean | best f evaluated | seconds (all runs) |",
             "|---|---|---:|---:|---:|"]
    for fname, per in result["functions"].items():
        for name, r in per.items():
            fm, fb = r["f_at_mean"], r["best_f"]
            lines.append(f"| {fname} | {name} | {fm['median']:.3g} [{fm['q25']:.3g}, {fm['q75']:.3g}] | "
                         f"{fb['median']:.3g} [{fb['q25']:.3g}, {fb['q75']:.3g}] | {r['seconds']:.1f} |")
    if result.get("rl"):
        lines += ["", (f"RL (talpo_tiny, es.popsize {a['rl_popsize']}, es.generations {a['rl_generations']}; one run "
                      "each): normalized return of the chosen drift on fresh seeds (PPO = 1, random policy = 0)."), "",
                  ("| strategy | final score (mean ± s.e.) | chosen | best ES-mean score during search | evaluations | "
                  "seconds |"), "|---|---:|---|---:|---:|---:|"]
        for name, r in result["rl"].items():
            lines.append(f"| {name} | {r['final_normalized_return']:.3f} ± {r['final_stderr']:.3f} | {r['chosen']} | "
                         f"{r['best_mean_during_search']:.3f} | {r['evaluations']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=10)
    ap.add_argument("--popsize", type=int, default=32)
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--sigma", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    ap.add_argument("--rl", action="store_true", help="also the tiny RL-objective search, once per strategy")
    ap.add_argument("--rl-popsize", type=int, default=8)
    ap.add_argument("--rl-generations", type=int, default=8)
    ap.add_argument("--json", type=pathlib.Path, default=None)
    args = ap.parse_args()
    shift = np.random.default_rng(0).uniform(-2.0, 2.0, args.dim)
    result = {"args": vars(args) | {"json": str(args.json)}, "functions": {},
              "machine": f"{jax.devices()[0].platform}, {platform.processor() or platform.machine()}"}
    for fname, f in FUNCTIONS.items():
        result["functions"][fname] = {name: run_function(name, f, args.dim, args.popsize, args.generations,
                                                         args.repeats, args.sigma, args.lr, shift)
                                      for name in args.strategies}
    if args.rl:
        with tempfile.TemporaryDirectory() as tmp:
            result["rl"] = {name: run_rl(name, args.rl_popsize, args.rl_generations, pathlib.Path(tmp))
                            for name in args.strategies}
    text = markdown(result)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
