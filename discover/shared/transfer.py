"""Transfer: discovered update rules against baseline optimizers on larger held-out target tasks.

Every optimizer, program or baseline, gets the same tuning budget: the same number of (learning rate, decoupled
weight decay) points, chosen by the same tuner, each point trained with the same tuning ``seeds`` (the same
inits and data streams for every optimizer). Two tuners:

* ``grid``: a grid of learning rates (multiples of each task's nominal lr) x weight decays; with a ``budget``
  smaller than the grid, every weight decay and ``budget // len(wd_grid)`` learning rates spread evenly over
  the lr grid (its ends included). The whole grid x seeds is ONE jitted call of the population trainer.
* ``bo``: Bayesian optimization (:mod:`discover.shared.tuner`: a Matern-5/2 Gaussian process, expected
  improvement, kriging-believer batches) of log(mean tuning val loss) over log10(lr multiplier) in
  [log10 min(lr_grid), log10 max(lr_grid)] and log10(wd) in [log10 min(wd_grid), log10 max(wd_grid)], where a 0
  in the wd grid becomes max(wd_grid) / 1000 (a decay a thousand times smaller: nearly none). ``budget`` trials
  in about four rounds, each round ONE trainer call (batch x seeds members); the first rounds are a Latin
  hypercube, the same for every optimizer (the tuner's seed is fixed).

The trainer's members are (lr, wd, seed) triples and lr and wd are traced per-member inputs (the transformation
is built inside ``jax.vmap`` from them), so a new set of points reuses the compiled call.

Selection and report are separate (no selection bias in the reported numbers): the chosen point is the trial
with the lowest mean final validation loss over the tuning seeds (a trial where any seed diverged is excluded),
and it is then trained again on ``fresh_seeds`` NEW seeds (keys ``FRESH_SEED_OFFSET + s``, never used for
tuning), one more vmapped call per optimizer. Every reported number (mean, standard error, curves, accuracy)
comes from the fresh seeds, and every verdict is a paired comparison on them: the fresh seeds are the same for
every optimizer, so a program and a baseline are compared seed by seed (:func:`discover.shared.stats.paired`,
the 95% t-interval of the mean per-seed difference): ``beats`` / ``loses to`` when the interval excludes 0,
``ties with`` otherwise.

Programs run through :func:`discover.language.optax_export.to_optax` (the specialized path, on each member's own
parameter pytree, so per-tensor reductions see the real tensors): what is measured is what
``discover export`` gives. Weight decay is applied the same way for every optimizer, decoupled and scaled
by the lr like AdamW's: ``optax.chain(tx(lr), optax.add_decayed_weights(-lr * wd))``, i.e.
``w <- w - lr * wd * w`` on top of the optimizer's own update (a program's own ``0.001 * w`` term, if it
has one, stays: it is part of the program). Baselines ``adamw``, ``lion`` and ``sgdm`` are optax's own
(``optax.adamw``/``optax.lion`` with their weight decay set to 0, so the tuner's is the only one;
``optax.sgd(lr, momentum=0.9)``); any other baseline name is a seed program of
:mod:`search_spaces.update_rules`, run like a discovered program.

Output in ``out_dir``: ``transfer.md`` (tables and a one-line verdict per task), ``transfer.json`` (every trial,
the chosen points, the fresh-seed values and the paired comparisons), ``curves_<task>.png`` (training loss at
each optimizer's chosen point, mean +- s.e. over the fresh seeds) and TensorBoard scalars, images and text
under ``tb/``.
"""

from __future__ import annotations

import math
import os
import pathlib
import time
from collections.abc import Mapping, Sequence

from discover.infra.errors import InputError
from discover.infra.rundir import RunDir, TBLogger, atomic_write_bytes
from discover.language.program import Program
from discover.shared.scoring import with_steps
from discover.shared.stats import CONFIDENCE
from discover.shared.transfer_report import (
    compare,
    curves_png,
    plus_minus,
    strict_json,
    task_markdown,
    transfer_markdown,
    verdict,
)
from discover.shared.transfer_tuning import (
    FRESH_SEED_OFFSET,
    REPLICATION_SHIFT,
    Optimizer,
    baseline_optimizer,
    bo_box,
    curve_every_for,
    cut_grid,
    evaluate_fresh,
    fresh_keys,
    program_optimizer,
    run_grid,
    run_points,
    select,
    summarize,
    tune_bo,
    tune_grid,
    with_weight_decay,
)
from envs import tasks as task_registry
from envs.train import task_layout

DEFAULT_LR_MULTIPLIERS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # SGD-M often wants 30-100x AdamW's lr
DEFAULT_WD_GRID = (0.0, 0.1)
DEFAULT_SEEDS = 3  # tuning seeds per trial
DEFAULT_FRESH_SEEDS = 5  # seeds of the report, at the chosen point
DEFAULT_BASELINES = ("adamw", "lion", "sgdm")
TUNERS = ("grid", "bo")


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------
def resolve_tasks(tasks: Sequence) -> list[task_registry.Task]:
    """Task names, task kinds ('target' = every target task) or Task objects; duplicates dropped."""
    out: dict[str, task_registry.Task] = {}
    for t in tasks:
        if isinstance(t, task_registry.Task):
            out.setdefault(t.name, t)
        elif t in task_registry.KINDS:
            for name in task_registry.task_names(t):
                out.setdefault(name, task_registry.get_task(name))
        else:
            out.setdefault(t, task_registry.get_task(t))  # ValueError naming the known tasks
    if not out:
        raise InputError("transfer: no tasks")
    return list(out.values())


def _check_grid(name: str, values: Sequence[float], positive: bool) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if not values:
        raise InputError(f"transfer: {name} must not be empty")
    bad = [v for v in values if not math.isfinite(v) or (v <= 0 if positive else v < 0)]
    if bad:
        raise InputError(f"transfer: {name} must be {'> 0' if positive else '>= 0'} and finite, got {bad[0]}")
    return values


def check_tuning(tuner: str, budget: int | None, multipliers: Sequence[float], wds: Sequence[float],
                 seeds: int, fresh_seeds: int, fresh_seed_offset: int = FRESH_SEED_OFFSET,
                 replicate_seeds: int = 0) -> int:
    """Validates the tuning settings (InputError naming the defect); returns the trials per optimizer."""
    if tuner not in TUNERS:
        raise InputError(f"transfer: unknown tuner {tuner!r} (known: {', '.join(TUNERS)})")
    if seeds < 1:
        raise InputError(f"transfer: seeds must be >= 1, got {seeds}")
    if seeds > fresh_seed_offset:
        raise InputError(f"transfer: seeds must be <= the fresh seed offset {fresh_seed_offset} (the fresh seeds "
                         f"start there; tuning seeds are 0 .. seeds - 1), got {seeds}")
    if fresh_seeds < 2:
        raise InputError(f"transfer: fresh_seeds must be >= 2 (a paired interval needs two seeds), got {fresh_seeds}")
    if replicate_seeds and replicate_seeds < 2:
        raise InputError(f"transfer: replicate_seeds must be 0 (off) or >= 2, got {replicate_seeds}")
    if budget is not None and budget < 1:
        raise InputError(f"transfer: budget must be >= 1 trial, got {budget}")
    size = len(multipliers) * len(wds)
    if tuner == "grid":
        if budget is not None and budget > size:
            raise InputError(f"transfer: budget {budget} exceeds the grid's {len(multipliers)} x {len(wds)} = {size} "
                             f"points (a larger lr_grid/wd_grid, or tuner 'bo')")
        lrs, w = cut_grid(multipliers, wds, budget)
        return len(lrs) * len(w)
    if all(lo == hi for _, lo, hi in bo_box(multipliers, wds)):
        raise InputError("transfer: tuner 'bo' has nothing to tune (lr_grid and wd_grid span one point)")
    return size if budget is None else budget


def run_transfer(programs: Mapping[str, Program], *, tasks: Sequence = ("target",),
                 baselines: Sequence[str] = DEFAULT_BASELINES,
                 lr_grid: Sequence[float] = DEFAULT_LR_MULTIPLIERS, wd_grid: Sequence[float] = DEFAULT_WD_GRID,
                 seeds: int = DEFAULT_SEEDS, fresh_seeds: int = DEFAULT_FRESH_SEEDS, tuner: str = "grid",
                 budget: int | None = None, steps_override: int | None = None, lr_schedule: str = "constant",
                 fresh_seed_offset: int = FRESH_SEED_OFFSET, replicate_seeds: int = 0,
                 out_dir: str | os.PathLike | None = None, tb: bool = True, console=None) -> str:
    """Runs ``programs`` (label -> Program) and ``baselines`` on ``tasks`` and writes the report into
    ``out_dir`` (default: a new ``checkpoints/transfer-<time>``); returns the markdown of ``transfer.md``.

    ``lr_grid``: multipliers of each task's nominal lr; ``wd_grid``: decoupled weight decays (the step is
    ``w <- w - lr * wd * w``); with ``tuner='bo'`` they bound the box searched. ``budget``: (lr, wd) trials per
    optimizer (default: the grid's size). ``seeds``: tuning seeds per trial; ``fresh_seeds``: seeds of the
    report at each chosen point, keys ``fresh_seed_offset + s`` (another offset replicates a report on new
    seeds; the tuning, on seeds 0 .. seeds - 1, chooses the same points); ``replicate_seeds`` > 0: every program
    vs baseline verdict that is not a tie is tested again, both at their chosen points, on that many further seeds
    (keys ``fresh_seed_offset + REPLICATION_SHIFT + s``) and marked confirmed when the second verdict agrees (a
    guard against the chance wins of many comparisons); ``steps_override``: train every task this many steps
    instead of its own; ``lr_schedule``: every optimizer's lr moves under it on every task
    (envs.tasks.LR_SCHEDULES). ``console``: a rich Console for progress lines."""

    multipliers = _check_grid("lr_grid", lr_grid, positive=True)
    wds = _check_grid("wd_grid", wd_grid, positive=False)
    trials = check_tuning(tuner, budget, multipliers, wds, seeds, fresh_seeds, fresh_seed_offset, replicate_seeds)
    grid_mults, grid_wds = cut_grid(multipliers, wds, budget) if tuner == "grid" else (multipliers, wds)
    optimizers = [program_optimizer(name, p) for name, p in programs.items()]
    optimizers += [baseline_optimizer(b) for b in dict.fromkeys(baselines)]
    labels = [o.name for o in optimizers]
    if len(set(labels)) != len(labels):
        dup = next(n for n in labels if labels.count(n) > 1)
        raise InputError(f"transfer: two optimizers are called '{dup}' (rename the program)")
    if not optimizers:
        raise InputError("transfer: no programs and no baselines")
    task_list = [task_registry.with_lr_schedule(with_steps(t, steps_override), lr_schedule)
                 for t in resolve_tasks(tasks)]

    if out_dir is None:
        out = RunDir.create(root="checkpoints", name="transfer", config_yaml="# discover transfer\n")
    else:
        out = RunDir(pathlib.Path(out_dir))
        out.path.mkdir(parents=True, exist_ok=True)
    kinds = {o.name: o.kind for o in optimizers}
    report: dict = {
        "settings": {"tuner": tuner, "budget": trials, "lr_multipliers": list(grid_mults), "wd_grid": list(grid_wds),
                     "seeds": seeds, "fresh_seeds": fresh_seeds, "fresh_seed_offset": fresh_seed_offset,
                     "replicate_seeds": replicate_seeds,
                     "replication_seed_offset": fresh_seed_offset + REPLICATION_SHIFT if replicate_seeds else None,
                     "steps_override": steps_override, "lr_schedule": lr_schedule,
                     "baselines": list(dict.fromkeys(baselines)),
                     "selection": "lowest mean final val loss over the tuning seeds (trials with a diverged seed "
                                  "excluded); everything reported is measured again on the fresh seeds",
                     "verdict": f"paired t-interval ({CONFIDENCE:.0%}) of the mean per-seed difference on the fresh "
                                "seeds (discover.shared.stats.paired); a run diverged on a fresh seed loses",
                     "weight_decay": "decoupled: optax.chain(tx(lr), optax.add_decayed_weights(-lr * wd))"},
        "optimizers": {o.name: {"kind": o.kind, "source": o.source,
                                "program": str(o.program) if o.program is not None else None} for o in optimizers},
        "tasks": {},
    }
    if tuner == "bo":
        report["settings"]["bo_box"] = [{"name": n, "low": lo, "high": hi} for n, lo, hi in bo_box(multipliers, wds)]
        report["settings"]["bo"] = ("scikit-learn GaussianProcessRegressor, constant x Matern(nu=2.5) + white noise, "
                                    "expected improvement, kriging-believer batches; target log(mean tuning val loss)")
    sections, verdicts = [], []
    logger = TBLogger(out) if tb else None
    for task in task_list:
        info = {"steps": task.num_steps, "params": task_layout(task).size, "nominal_lr": task.lr, "seeds": seeds,
                "fresh_seeds": fresh_seeds, "tuner": tuner, "budget": trials, "kind": task.kind}
        if tuner == "grid":
            info["lr_grid"] = [task.lr * m for m in grid_mults]
        results = {}
        for opt in optimizers:
            t0 = time.time()
            if tuner == "grid":
                r = tune_grid(task, opt, grid_mults, grid_wds, seeds)
            else:
                r = tune_bo(task, opt, multipliers, wds, seeds, trials)
            if r["best"] is not None:
                r["best"].update(evaluate_fresh(task, opt, r["best"], fresh_seeds, fresh_seed_offset))
            r["seconds"] = time.time() - t0
            results[opt.name] = r
            if console is not None:
                b = r["best"]
                shown = (f"{plus_minus(b['val_loss_mean'], b['val_loss_se'])} on {fresh_seeds} fresh seeds at lr "
                         f"{b['lr']:.3g}, wd {b['wd']:.3g}" if b else "diverged at every tuning point")
                console.print(f"{task.name}: {opt.name}: {shown} ({r['budget']} trials, {r['seconds']:.0f} s)",
                              highlight=False)
        for name, r in results.items():  # every program against every baseline, paired on the fresh seeds
            if kinds[name] == "program" and r["best"] is not None:
                r["paired"] = {other: compare(r["best"], o["best"]) for other, o in results.items()
                               if kinds[other] == "baseline" and o["best"] is not None}
        if replicate_seeds:
            replicate(task, optimizers, results, replicate_seeds, fresh_seed_offset + REPLICATION_SHIFT)
        png = out.file(f"curves_{task.name}.png")
        if out.is_main_process:
            atomic_write_bytes(png, curves_png(task.name, results))
        sections.append(task_markdown(task.name, info, results, kinds))
        line = verdict(task.name, results, kinds)
        verdicts.append(line)
        report["tasks"][task.name] = {**info, "optimizers": results, "verdict": line}
        if logger is not None:
            _log_task(logger, task, results, png)
    markdown = transfer_markdown(report, sections, verdicts, optimizers)
    out.write_text("transfer.md", markdown)
    out.write_json("transfer.json", strict_json(report))
    if logger is not None:
        logger.text("transfer/report", markdown, 0)
        logger.close()
    if console is not None:
        for line in verdicts:
            console.print(line.replace("**", ""), highlight=False)
        console.print(f"wrote {out.file('transfer.md')}", highlight=False)
    return markdown


def replicate(task, optimizers: Sequence, results: Mapping[str, dict], n: int, offset: int) -> None:
    """Adds ``replication`` to every non-tie paired comparison of ``results``: program and baseline retrained at
    their chosen points on ``n`` new seeds (keys ``offset + s``), compared again, ``confirmed`` when the verdict
    is the same. Each optimizer is retrained once per task, however many comparisons it is in."""
    by_name = {o.name: o for o in optimizers}
    again: dict[str, dict] = {}

    def retrained(name: str) -> dict:
        if name not in again:
            best = results[name]["best"]
            again[name] = {**best, **evaluate_fresh(task, by_name[name], best, n, offset)}
        return again[name]

    for name, r in results.items():
        for other, c in r.get("paired", {}).items():
            if c["verdict"] != "tie":
                rep = compare(retrained(name), retrained(other))
                c["replication"] = {**rep, "seed_offset": offset, "confirmed": rep["verdict"] == c["verdict"]}


def _log_task(logger: TBLogger, task, results: Mapping[str, dict], png: pathlib.Path) -> None:
    for name, r in results.items():
        b = r.get("best")
        if b is None:
            continue
        for step, value in zip(b["curve_steps"], b["curve_mean"]):
            if value is not None:
                logger.scalars(step, {f"transfer/{task.name}/train_loss/{name}": value})
        if math.isfinite(b["val_loss_mean"]):
            logger.scalars(task.num_steps, {f"transfer/{task.name}/val_loss/{name}": b["val_loss_mean"]})
        if b.get("accuracy_mean") is not None and math.isfinite(b["accuracy_mean"]):
            logger.scalars(task.num_steps, {f"transfer/{task.name}/val_accuracy/{name}": b["accuracy_mean"]})
    logger.image_png(f"transfer/curves/{task.name}", png, 0)

__all__ = [
    "DEFAULT_BASELINES",
    "DEFAULT_FRESH_SEEDS",
    "DEFAULT_LR_MULTIPLIERS",
    "DEFAULT_SEEDS",
    "DEFAULT_WD_GRID",
    "FRESH_SEED_OFFSET",
    "TUNERS",
    "Optimizer",
    "baseline_optimizer",
    "bo_box",
    "check_tuning",
    "compare",
    "curve_every_for",
    "cut_grid",
    "evaluate_fresh",
    "fresh_keys",
    "program_optimizer",
    "resolve_tasks",
    "run_grid",
    "run_points",
    "run_transfer",
    "select",
    "summarize",
    "tune_bo",
    "tune_grid",
    "verdict",
    "with_weight_decay",
]
