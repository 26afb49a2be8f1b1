"""The Bayesian-optimization tuner against the grid at an equal budget, on target tasks, for AdamW and a discovered rule.

    JAX_PLATFORMS=cpu python benchmarks/tuner.py [--tasks mlp_wine_target,...] [--budget 12] [--seeds 2]
        [--fresh-seeds 5] [--bo-repeats 1] [--json out.json]

For every task and optimizer, two tuners spend the same ``--budget`` of (lr, wd) trials, each trial trained with
the same ``--seeds`` tuning seeds (:mod:`discover.shared.transfer`, exactly as ``discover transfer`` tunes):

* **grid**: the default grid (lr multipliers 0.03 .. 100 by wd 0, 0.1: 16 points) cut to the budget
  (:func:`discover.shared.transfer.cut_grid`: 12 -> six lr multipliers 0.03, 0.1, 1, 3, 30, 100 by both wds);
* **bo**: Bayesian optimization (:mod:`discover.shared.tuner`) over the box the default grid spans
  (lr multiplier 0.03 .. 100, wd 1e-4 .. 0.1, log scales), in about four rounds of one trainer call each;
  ``--bo-repeats`` runs with different tuner seeds (their median is reported).

Reported per tuner: the best mean validation loss over the tuning seeds (what the tuner reached; selection-
biased), and the chosen point trained again on ``--fresh-seeds`` fresh seeds (unbiased), with a paired 95%
interval of BO - grid on those seeds. Optimizers: AdamW (``optax.adamw``) and the discovered rule of the README
(Adam without bias correction or epsilon, plus a plain gradient step), run through ``to_optax``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from discover.language.program import parse
from discover.shared import transfer
from discover.shared.scoring import with_steps
from discover.shared.stats import paired
from envs.tasks import get_task

DISCOVERED = """\
def discovered(g, w, m, v, lr, t):
    m = interp(g, m, 0.9)
    v = interp(square(g), v, 0.999)
    u = m / sqrt(v) + g
    update = lr * u
    return update, m, v
"""
DEFAULT_TASKS = "mlp_wine_target,mlp_diabetes_target,mlp_breast_cancer_target,cnn_digits_target"


def tune(task, opt, tuner: str, budget: int, seeds: int, fresh_seeds: int, bo_seed: int = 0) -> dict:
    t0 = time.perf_counter()
    lrs, wds = transfer.DEFAULT_LR_MULTIPLIERS, transfer.DEFAULT_WD_GRID
    if tuner == "grid":
        m, w = transfer.cut_grid(lrs, wds, budget)
        r = transfer.tune_grid(task, opt, m, w, seeds)
    else:
        r = transfer.tune_bo(task, opt, lrs, wds, seeds, budget, bo_seed=bo_seed)
    best = r["best"]
    out = {"trials": r["budget"], "diverged_runs": r["diverged_runs"], "best": None}
    if best is not None:
        fresh = transfer.evaluate_fresh(task, opt, best, fresh_seeds)
        out["best"] = {"lr_multiplier": best["lr_multiplier"], "wd": best["wd"],
                       "tuning_val_loss_mean": best["tuning_val_loss_mean"],
                       "fresh_val_loss_mean": fresh["val_loss_mean"], "fresh_val_loss_se": fresh["val_loss_se"],
                       "fresh_val_loss_seeds": fresh["val_loss_seeds"]}
    out["seconds"] = time.perf_counter() - t0
    return out


def markdown(result: dict) -> str:
    a = result["args"]
    lines = [(f"Budget {a['budget']} (lr, wd) trials per tuner and optimizer, {a['seeds']} tuning seeds per trial; "
              f"chosen point re-trained on {a['fresh_seeds']} fresh seeds; BO: median over {a['bo_repeats']} "
              "tuner seed(s)."), "",
             ("| task | optimizer | grid: best tuning val loss | BO: best tuning val loss | grid: fresh (mean ± s.e.) "
             "| BO: fresh (mean ± s.e.) | BO - grid, paired 95% CI (fresh) | chosen lr x, wd (grid / BO) | seconds "
             "(grid / BO) |"),
             "|---|---|---:|---:|---:|---:|---|---|---:|"]
    for task, per in result["tasks"].items():
        for name, r in per.items():
            g, b = r["grid"]["best"], r["bo_median"]
            if g is None or b is None:
                lines.append(f"| {task} | {name} | diverged | | | | | | |")
                continue
            c = r["bo_vs_grid"]
            ci = f"{c['difference']:+.3g} [{c['ci'][0]:+.3g}, {c['ci'][1]:+.3g}] ({c['verdict']})" if c else "-"
            lines.append(
                f"| {task} | {name} | {g['tuning_val_loss_mean']:.4g} | {b['tuning_val_loss_mean']:.4g} | "
                f"{g['fresh_val_loss_mean']:.4g} ± {g['fresh_val_loss_se']:.2g} | "
                f"{b['fresh_val_loss_mean']:.4g} ± {b['fresh_val_loss_se']:.2g} | {ci} | "
                f"{g['lr_multiplier']:.3g}, {g['wd']:.3g} / {b['lr_multiplier']:.3g}, {b['wd']:.3g} | "
                f"{r['grid']['seconds']:.0f} / {np.median([x['seconds'] for x in r['bo']]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=DEFAULT_TASKS)
    ap.add_argument("--budget", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--fresh-seeds", type=int, default=5)
    ap.add_argument("--bo-repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="train every task this many steps (default: its own)")
    ap.add_argument("--json", type=pathlib.Path, default=None)
    args = ap.parse_args()
    optimizers = [transfer.baseline_optimizer("adamw"), transfer.program_optimizer("discovered", parse(DISCOVERED))]
    result = {"args": vars(args) | {"json": str(args.json)}, "tasks": {}}
    for name in args.tasks.split(","):
        task = with_steps(get_task(name), args.steps)
        result["tasks"][name] = {}
        for opt in optimizers:
            grid = tune(task, opt, "grid", args.budget, args.seeds, args.fresh_seeds)
            bos = [tune(task, opt, "bo", args.budget, args.seeds, args.fresh_seeds, bo_seed=s)
                   for s in range(args.bo_repeats)]
            finite = [b for b in bos if b["best"] is not None]
            median = (sorted(finite, key=lambda b: b["best"]["tuning_val_loss_mean"])[(len(finite) - 1) // 2]["best"]
                      if finite else None)
            comparison = None
            if median is not None and grid["best"] is not None:
                a = np.asarray([np.inf if x is None else x for x in median["fresh_val_loss_seeds"]])
                b = np.asarray([np.inf if x is None else x for x in grid["best"]["fresh_val_loss_seeds"]])
                if np.isfinite(a).all() and np.isfinite(b).all():
                    c = paired(a, b)
                    comparison = {**c.to_json(), "verdict": c.verdict(lower_is_better=True)}
            result["tasks"][name][opt.name] = {"grid": grid, "bo": bos, "bo_median": median, "bo_vs_grid": comparison}
            print(f"{name} {opt.name}: grid {grid['best'] and grid['best']['tuning_val_loss_mean']:.4g} "
                  f"bo {median and median['tuning_val_loss_mean']:.4g}", flush=True)
    print(markdown(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
