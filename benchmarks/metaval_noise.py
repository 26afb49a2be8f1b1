"""How noisy is a meta-validation task's fitness, and how often does seed noise alone fail the robustness check?

    JAX_PLATFORMS=cpu python benchmarks/metaval_noise.py [--seeds 16] [--programs adamw,lion_search_adamw_retuned]
        [--tasks cnn_digits_metaval,charlm_metaval,noisy_quadratic_metaval] [--draws 4000] [--val-points 8]
        [--lr-schedule cosine] [--json out.json]

The held-out check of an update-rule search (``heldout``) scores each finalist again on fresh training seeds and
calls it fragile when its meta-validation fitness moves by more than ``heldout.fragility`` (5%). That threshold
means something only if a program that is NOT fragile stays within it, i.e. if the fitness itself is less noisy
than 5% at the number of seeds used.

Per task, every program (AdamW first) trains on ``--seeds`` fresh seeds at every multiplier of the robust lr sweep
(``discover.shared.scoring.ROBUST_LR_MULTIPLIERS``), one population-trainer call per task. Each keeps the
multiplier whose mean over all seeds is best (fixed from then on: a slight underestimate of the noise, since the
search re-picks it on every seed set). Reported:

* AdamW's per-seed coefficient of variation of the validation loss;
* per program, the k-seed fitness (its mean val loss / AdamW's mean on the same k seeds, as the search computes
  it) and the move between two disjoint k-seed sets, ``|f1 / f2 - 1|``, over ``--draws`` random splits of the
  seeds: its median and how often it exceeds 5%. A program with no fragility at all would still be flagged
  that often by seed noise alone, when its score on that task alone moved.

The fitness the check compares is the mean over the funnel's tasks, so a noisy task's move is diluted by the
number of tasks; the per-task figures here say which task the moves come from.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from discover.language import interpreter
from discover.shared.scoring import ROBUST_LR_MULTIPLIERS, Scorer, compute_references, interpreted_trainer
from envs.task_pool import META_VALIDATION_TASKS
from envs.tasks import LR_SCHEDULES, get_task, with_lr_schedule
from search_spaces.update_rules import seed

FRESH_FIRST_SEED = 7_000  # seeds no reference, search or held-out check uses
FRAGILITY = 0.05


def per_seed_losses(task_name: str, programs: list, seeds: int, max_len: int, n_state: int, cache,
                    val_points: int, lr_schedule: str = "constant") -> dict:
    """``{"val_loss", "train_loss"[, "val_loss_window"]}``, each ``[programs, lr multipliers, seeds]``, on fresh
    seeds (one trainer call; train_loss: the mean minibatch loss over the last 10% of steps; val_loss_window: the
    validation loss averaged over ``val_points`` late iterates, ``envs.train.make_population_trainer``); every
    optimizer, AdamW included, trains under ``lr_schedule``."""
    task = with_lr_schedule(get_task(task_name), lr_schedule)
    references = compute_references([task], None, 1, cache)  # only the nominal tuned lr is read
    scorer = Scorer(tasks=[task], references=references, train_seeds=seeds, lr_multipliers=ROBUST_LR_MULTIPLIERS,
                    worst=1e9, batch=len(programs), max_len=max_len, n_state=n_state, first_seed=FRESH_FIRST_SEED)
    enc = interpreter.encode(programs, max_len, n_state)
    enc = jax.tree.map(lambda x: jnp.repeat(x, scorer.members_per_candidate, axis=0), enc)
    trainer = interpreted_trainer(task, max_len, n_state, needs_hessian=False, val_points=val_points)
    out = trainer.core(*scorer._call_args(task, enc))
    shape = (len(programs), len(ROBUST_LR_MULTIPLIERS), seeds)
    metrics = ("val_loss", "train_loss") + (("val_loss_window",) if val_points > 1 else ())
    return {k: np.asarray(out[k], np.float64).reshape(shape) for k in metrics}


def split_moves(program: np.ndarray, adamw: np.ndarray, k: int, draws: int, rng) -> np.ndarray:
    """``|f1 / f2 - 1|`` for ``draws`` random pairs of disjoint k-seed sets (f: mean loss ratio on a set)."""
    n = len(program)
    moves = np.empty(draws)
    for i in range(draws):
        order = rng.permutation(n)
        a, b = order[:k], order[k:2 * k]
        f1 = program[a].mean() / adamw[a].mean()
        f2 = program[b].mean() / adamw[b].mean()
        moves[i] = abs(f1 / f2 - 1)
    return moves


def noise(val: np.ndarray, names: list[str], ks: list[int], draws: int, rng, metric: str) -> dict:
    """The noise report of one metric (see the module doc), printed and returned."""
    means = np.where(np.isfinite(val).all(axis=2), val.mean(axis=2), np.inf)
    best = means.argmin(axis=1)
    at_best = val[np.arange(len(names)), best]  # [programs, seeds]
    adamw = at_best[0]
    entry = {"adamw_cv": float(adamw.std(ddof=1) / adamw.mean()), "adamw_mean": float(adamw.mean()), "programs": {}}
    print(f"  [{metric}] AdamW at {ROBUST_LR_MULTIPLIERS[best[0]]:g}x: {adamw.mean():.4g}, per-seed CV "
          f"{entry['adamw_cv']:.1%}")
    for i, name in enumerate(names[1:], start=1):
        ratio = at_best[i] / adamw
        row = {"multiplier": float(ROBUST_LR_MULTIPLIERS[best[i]]), "fitness": float(at_best[i].mean() / adamw.mean()),
               "per_seed_ratio_sd": float(ratio.std(ddof=1)), "moves": {}}
        print(f"  [{metric}] {name} at {row['multiplier']:g}x: fitness {row['fitness']:.4f} on all seeds; per-seed "
              f"ratio SD {row['per_seed_ratio_sd']:.3f}")
        for k in ks:
            moves = split_moves(at_best[i], adamw, k, draws, rng)
            row["moves"][k] = {"median": float(np.median(moves)), "over_5pct": float((moves > FRAGILITY).mean())}
            print(f"    {k} seed(s) per score: median move {np.median(moves):.1%}, moves > 5% in "
                  f"{(moves > FRAGILITY).mean():.0%} of splits")
        entry["programs"][name] = row
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(META_VALIDATION_TASKS))
    parser.add_argument("--programs", default="adamw,lion_search_adamw_retuned")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--max-len", type=int, default=24)
    parser.add_argument("--n-state", type=int, default=4)
    parser.add_argument("--cache", default="checkpoints/.baselines.json")
    parser.add_argument("--val-points", type=int, default=1,
                        help="also report the validation loss averaged over this many late iterates")
    parser.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES,
                        help="every optimizer, AdamW included, trains under this lr schedule")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    names = [n for n in args.programs.split(",") if n]
    if names[0] != "adamw":
        names = ["adamw", *names]
    programs = [seed(n) for n in names]
    rng = np.random.default_rng(0)
    ks = [k for k in (1, 2, 3, 5, 8) if 2 * k <= args.seeds]
    report = {"seeds": args.seeds, "lr_schedule": args.lr_schedule, "multipliers": list(ROBUST_LR_MULTIPLIERS),
              "tasks": {}}
    for task in args.tasks.split(","):
        started = time.perf_counter()
        losses = per_seed_losses(task, programs, args.seeds, args.max_len, args.n_state, args.cache,
                                 args.val_points, args.lr_schedule)
        seconds = time.perf_counter() - started
        print(f"\n{task}  ({args.seeds} fresh seeds x {len(ROBUST_LR_MULTIPLIERS)} lr multipliers x "
              f"{len(programs)} programs in {seconds:.0f} s)")
        report["tasks"][task] = {"seconds": seconds,
                                 **{metric: noise(val, names, ks, args.draws, rng, metric)
                                    for metric, val in losses.items()}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
