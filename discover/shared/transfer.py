"""Transfer: discovered update rules against baseline optimizers on larger held-out target tasks.

Every optimizer, program or baseline, gets the same tuning budget: a grid of learning rates (multiples of
each task's nominal lr) x decoupled weight decays, each point trained with the same ``seeds`` (the same
inits and data streams for every optimizer). One optimizer's whole grid x seeds is ONE jitted call of the
population trainer of :mod:`envs.train`: the members are (lr, wd, seed) triples and lr and wd are traced
per-member inputs (the transformation is built inside ``jax.vmap`` from them), so a grid costs one compile.

Programs run through :func:`discover.language.optax_export.to_optax` (the specialized path, on each member's own
parameter pytree, so per-tensor reductions see the real tensors): what is measured is what
``discover export`` gives. Weight decay is applied the same way for every optimizer, decoupled and scaled
by the lr like AdamW's: ``optax.chain(tx(lr), optax.add_decayed_weights(-lr * wd))``, i.e.
``w <- w - lr * wd * w`` on top of the optimizer's own update (a program's own ``0.001 * w`` term, if it
has one, stays: it is part of the program). Baselines ``adamw``, ``lion`` and ``sgdm`` are optax's own
(``optax.adamw``/``optax.lion`` with their weight decay set to 0, so the grid's is the only one;
``optax.sgd(lr, momentum=0.9)``); any other baseline name is a seed program of
:mod:`search_spaces.update_rules`, run like a discovered program.

For each optimizer the reported hyperparameters are the grid point with the lowest mean final validation
loss over the seeds (a point where any seed diverged is excluded); the same seeds give the reported mean
and standard error, so the selection bias is the same for every optimizer. Output in ``out_dir``:
``transfer.md`` (tables and a one-line verdict per task), ``transfer.json`` (every grid point),
``curves_<task>.png`` (training loss at each optimizer's best point, mean +- s.e. over seeds) and
TensorBoard scalars, images and text under ``tb/``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from discover.infra.errors import InputError
from discover.infra.rundir import RunDir, TBLogger, atomic_write_bytes, program_markdown
from discover.language.optax_export import to_optax
from discover.language.program import Program
from discover.shared.scoring import with_steps
from envs import tasks as task_registry
from envs.baselines import reference_keys
from envs.train import make_population_trainer, ravel, task_layout, unravel
from search_spaces.update_rules import SEED_NAMES, seed

DEFAULT_LR_MULTIPLIERS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # SGD-M often wants 30-100x AdamW's lr
DEFAULT_WD_GRID = (0.0, 0.1)
DEFAULT_SEEDS = 3
DEFAULT_BASELINES = ("adamw", "lion", "sgdm")
CURVE_POINTS = 50
SIGNIFICANCE = 2.0  # a difference counts when it exceeds this many combined standard errors


# ----------------------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Optimizer:
    """``make(lr) -> optax transformation`` (lr may be traced); ``program`` for discovered/seed programs."""

    name: str  # the label in tables
    kind: str  # "program" | "baseline"
    make: Callable = dataclasses.field(compare=False, hash=False)
    program: Program | None = None
    source: str = ""  # what it is, in words

    @property
    def reads_h(self) -> bool:
        return self.program is not None and self.program.reads_h


_NATIVE = {
    "adamw": ("AdamW", lambda lr: optax.adamw(lr, weight_decay=0.0), "optax.adamw (b1 0.9, b2 0.999, eps 1e-8)"),
    "lion": ("Lion", lambda lr: optax.lion(lr, weight_decay=0.0), "optax.lion (b1 0.9, b2 0.99)"),
    "sgdm": ("SGD-M", lambda lr: optax.sgd(lr, momentum=0.9), "optax.sgd with momentum 0.9"),
}


def baseline_optimizer(name: str) -> Optimizer:
    """``adamw``, ``lion``, ``sgdm`` (optax's own) or any seed program name."""
    if name in _NATIVE:
        label, make, source = _NATIVE[name]
        return Optimizer(label, "baseline", make, None, source)
    if name in SEED_NAMES:
        program = seed(name)
        return Optimizer(name, "baseline", _program_maker(program), program, f"seed program '{name}' via to_optax")
    known = ", ".join(list(_NATIVE) + [n for n in SEED_NAMES if n not in _NATIVE])
    raise InputError(f"unknown baseline '{name}' (known: {known})")


def _program_maker(program: Program) -> Callable:
    return lambda lr: to_optax(program, lr)


def program_optimizer(name: str, program: Program) -> Optimizer:
    return Optimizer(name, "program", _program_maker(program), program, "discovered program via to_optax")


def with_weight_decay(opt: Optimizer, lr, wd) -> optax.GradientTransformation:
    """The optimizer at (lr, wd): decoupled weight decay ``w <- w - lr * wd * w`` added to its update."""
    return optax.chain(opt.make(lr), optax.add_decayed_weights(-lr * wd))


# ----------------------------------------------------------------------------------------------------------
# One optimizer's grid x seeds in one jitted call
# ----------------------------------------------------------------------------------------------------------
def _update_fn(opt: Optimizer, layout):
    """Population update for the trainer: member p runs ``with_weight_decay(opt, lr_p, wd_p)`` on its own
    parameter pytree (opt_args = the (P,) weight decays)."""

    def one(state, g, w, lr, wd, h):
        tx = with_weight_decay(opt, lr, wd)
        extra = {"h": unravel(layout, h)} if opt.reads_h else {}
        updates, state = tx.update(unravel(layout, g), state, unravel(layout, w), **extra)
        return -ravel(layout, updates), state  # the trainer subtracts its update

    def update_fn(opt_state, g, w, lrs, t, h, wds):
        del t  # the transformations count their own steps
        return jax.vmap(one)(opt_state, g, w, lrs, wds, h)

    return update_fn


def _init_fn(opt: Optimizer, layout):
    tx = with_weight_decay(opt, 1.0, 0.0)  # the state's structure does not depend on lr or wd
    return lambda P, N: jax.vmap(lambda w: tx.init(unravel(layout, w)))(jnp.zeros((P, N), jnp.float32))


@functools.lru_cache(maxsize=32)
def grid_trainer(task: task_registry.Task, opt: Optimizer, curve_every: int):
    layout = task_layout(task)
    return make_population_trainer(task, _update_fn(opt, layout), _init_fn(opt, layout),
                                   needs_hessian=opt.reads_h, curve_every=curve_every)


def curve_every_for(num_steps: int) -> int:
    return max(1, num_steps // CURVE_POINTS)


def run_grid(task: task_registry.Task, opt: Optimizer, lrs: Sequence[float], wds: Sequence[float],
             seeds: int) -> dict[str, np.ndarray]:
    """Final val loss (and accuracy), divergence and training-loss curves for every (lr, wd, seed):
    arrays shaped (len(lrs), len(wds), seeds[, curve points])."""
    L, W, S = len(lrs), len(wds), seeds
    every = curve_every_for(task.num_steps)
    train = grid_trainer(task, opt, every)
    keys = jnp.tile(reference_keys(S), L * W)  # member = (lr, wd, seed), seed fastest: same seeds everywhere
    member_lrs = jnp.asarray(np.repeat(np.asarray(lrs, np.float64), W * S), jnp.float32)
    member_wds = jnp.asarray(np.tile(np.repeat(np.asarray(wds, np.float64), S), L), jnp.float32)
    out = jax.device_get(train(keys, member_lrs, member_wds))
    shape = (L, W, S)
    result = {
        "val_loss": np.asarray(out["val_loss"], np.float64).reshape(shape),
        "diverged": np.asarray(out["diverged"], bool).reshape(shape),
        "curve": np.asarray(out["curve"], np.float64).reshape(shape + (-1,)),
        "curve_steps": (np.arange(np.asarray(out["curve"]).shape[-1]) + 1) * every,
    }
    if "val_accuracy" in out:
        result["val_accuracy"] = np.asarray(out["val_accuracy"], np.float64).reshape(shape)
    return result


# ----------------------------------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------------------------------
def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        return math.inf, math.nan
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


def summarize(grid: dict, lrs: Sequence[float], multipliers: Sequence[float], wds: Sequence[float]) -> dict:
    """The best (lr, wd) by mean val loss over seeds, with mean and standard error there."""
    val = grid["val_loss"]
    ok = np.isfinite(val).all(axis=2)
    mean = np.where(ok, val.mean(axis=2), np.inf)
    summary = {"diverged_runs": int(grid["diverged"].sum()), "runs": int(val.size),
               "mean_val_loss_grid": [[_json_float(x) for x in row] for row in mean]}
    if not np.isfinite(mean).any():
        summary["best"] = None
        return summary
    li, wi = np.unravel_index(int(np.argmin(mean)), mean.shape)
    m, se = _mean_se(val[li, wi])
    best = {"lr": float(lrs[li]), "lr_multiplier": float(multipliers[li]), "wd": float(wds[wi]),
            "val_loss_mean": m, "val_loss_se": se,
            "at_lr_edge": len(lrs) > 1 and li in (0, len(lrs) - 1),
            "val_loss_seeds": [float(x) for x in val[li, wi]]}
    if "val_accuracy" in grid:
        best["accuracy_mean"], best["accuracy_se"] = _mean_se(grid["val_accuracy"][li, wi])
    curve = grid["curve"][li, wi]
    best["curve_steps"] = [int(s) for s in grid["curve_steps"]]
    best["curve_mean"] = [_json_float(x) for x in curve.mean(axis=0)]
    best["curve_se"] = [_json_float(x) for x in (curve.std(axis=0, ddof=1) / math.sqrt(curve.shape[0])
                                                 if curve.shape[0] > 1 else np.zeros(curve.shape[1]))]
    summary["best"] = best
    return summary


def _json_float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _pm(mean: float, se: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "diverged"
    return f"{mean:.{digits}g} ± {se:.2g}"


def verdict(task_name: str, results: Mapping[str, dict], kinds: Mapping[str, str]) -> str:
    """One line: how each program compares with the best baseline (2 combined standard errors)."""
    def best(name):
        return results[name].get("best")

    baselines = [n for n in results if kinds[n] == "baseline" and best(n)]
    programs = [n for n in results if kinds[n] == "program"]
    ranked = sorted((n for n in results if best(n)), key=lambda n: best(n)["val_loss_mean"])
    if not ranked:
        return f"**{task_name}**: every optimizer diverged at every grid point."
    if not programs or not baselines:
        top = ranked[0]
        return f"**{task_name}**: lowest val loss: {top} ({_pm(best(top)['val_loss_mean'], best(top)['val_loss_se'])})."
    ref = min(baselines, key=lambda n: best(n)["val_loss_mean"])
    rb = best(ref)
    parts = []
    for name in programs:
        b = best(name)
        if b is None:
            parts.append(f"{name} diverged at every grid point")
            continue
        diff = b["val_loss_mean"] - rb["val_loss_mean"]
        se = math.sqrt(b["val_loss_se"] ** 2 + rb["val_loss_se"] ** 2)
        rel = diff / abs(rb["val_loss_mean"]) if rb["val_loss_mean"] else math.nan
        if abs(diff) <= SIGNIFICANCE * se:
            word = "ties with"
        else:
            word = "beats" if diff < 0 else "loses to"
        parts.append(f"{name} {word} the best baseline {ref} "
                     f"({_pm(b['val_loss_mean'], b['val_loss_se'])} vs {_pm(rb['val_loss_mean'], rb['val_loss_se'])},"
                     f" {rel:+.1%})")
    return f"**{task_name}**: " + "; ".join(parts) + "."


def task_markdown(task_name: str, info: dict, results: Mapping[str, dict], kinds: Mapping[str, str]) -> str:
    has_acc = any((r.get("best") or {}).get("accuracy_mean") is not None for r in results.values())
    ref = results.get("AdamW", {}).get("best")
    head = ("| optimizer | val loss (mean ± s.e.) | vs AdamW |" + (" val accuracy |" if has_acc else "")
            + " best lr (x nominal) | best wd | diverged runs |")
    intro = (f"{info['steps']} steps, {info['params']} parameters, nominal lr {info['nominal_lr']:g}, "
             f"{info['seeds']} seeds per grid point.")
    lines = [f"### {task_name}", "", intro, "", head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        b = r.get("best")
        label = name + (" (program)" if kinds[name] == "program" else "")
        if b is None:
            cells = [label, "diverged", "-"] + (["-"] if has_acc else []) + ["-", "-"]
        else:
            vs = (f"{b['val_loss_mean'] / ref['val_loss_mean']:.3f}" if ref and math.isfinite(b["val_loss_mean"])
                  else "-")
            lr = f"{b['lr']:.3g} ({b['lr_multiplier']:g})" + (" edge" if b["at_lr_edge"] else "")
            cells = [label, _pm(b["val_loss_mean"], b["val_loss_se"]), vs]
            if has_acc:
                acc = b.get("accuracy_mean")
                cells.append(_pm(acc, b["accuracy_se"], 3) if acc is not None else "-")
            cells += [lr, f"{b['wd']:g}"]
        cells.append(f"{r['diverged_runs']}/{r['runs']}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", verdict(task_name, results, kinds), "", f"![training loss](curves_{task_name}.png)", ""]
    return "\n".join(lines)


def curves_png(task_name: str, results: Mapping[str, dict]) -> bytes:
    """Training loss (mean ± s.e. over seeds) at each optimizer's best grid point, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for name, r in results.items():
        b = r.get("best")
        if b is None:
            continue
        steps = np.asarray(b["curve_steps"])
        mean = np.asarray([np.nan if x is None else x for x in b["curve_mean"]], np.float64)
        se = np.asarray([np.nan if x is None else x for x in b["curve_se"]], np.float64)
        line, = ax.plot(steps, mean, label=f"{name} (lr {b['lr']:.3g}, wd {b['wd']:g})")
        ax.fill_between(steps, mean - se, mean + se, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (window mean)")
    ax.set_title(f"{task_name}: each optimizer at its best (lr, wd)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


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


def run_transfer(programs: Mapping[str, Program], *, tasks: Sequence = ("target",),
                 baselines: Sequence[str] = DEFAULT_BASELINES,
                 lr_grid: Sequence[float] = DEFAULT_LR_MULTIPLIERS, wd_grid: Sequence[float] = DEFAULT_WD_GRID,
                 seeds: int = DEFAULT_SEEDS, steps_override: int | None = None,
                 out_dir: str | os.PathLike | None = None, tb: bool = True, console=None) -> str:
    """Runs ``programs`` (label -> Program) and ``baselines`` on ``tasks`` and writes the report into
    ``out_dir`` (default: a new ``checkpoints/transfer-<time>``); returns the markdown of ``transfer.md``.

    ``lr_grid``: multipliers of each task's nominal lr; ``wd_grid``: decoupled weight decays (the step is
    ``w <- w - lr * wd * w``); ``seeds``: training seeds per grid point; ``steps_override``: train every
    task this many steps instead of its own. ``console``: a rich Console for progress lines."""

    if seeds < 1:
        raise InputError(f"transfer: seeds must be >= 1, got {seeds}")
    multipliers = _check_grid("lr_grid", lr_grid, positive=True)
    wds = _check_grid("wd_grid", wd_grid, positive=False)
    optimizers = [program_optimizer(name, p) for name, p in programs.items()]
    optimizers += [baseline_optimizer(b) for b in dict.fromkeys(baselines)]
    labels = [o.name for o in optimizers]
    if len(set(labels)) != len(labels):
        dup = next(n for n in labels if labels.count(n) > 1)
        raise InputError(f"transfer: two optimizers are called '{dup}' (rename the program)")
    if not optimizers:
        raise InputError("transfer: no programs and no baselines")
    task_list = [with_steps(t, steps_override) for t in resolve_tasks(tasks)]

    if out_dir is None:
        out = RunDir.create(root="checkpoints", name="transfer", config_yaml="# discover transfer\n")
    else:
        out = RunDir(pathlib.Path(out_dir))
        out.path.mkdir(parents=True, exist_ok=True)
    kinds = {o.name: o.kind for o in optimizers}
    report: dict = {
        "settings": {"lr_multipliers": list(multipliers), "wd_grid": list(wds), "seeds": seeds,
                     "steps_override": steps_override, "baselines": list(dict.fromkeys(baselines)),
                     "selection": "lowest mean final val loss over the seeds (grid points with a diverged seed "
                                  "excluded); mean and s.e. reported on the same seeds",
                     "weight_decay": "decoupled: optax.chain(tx(lr), optax.add_decayed_weights(-lr * wd))"},
        "optimizers": {o.name: {"kind": o.kind, "source": o.source,
                                "program": str(o.program) if o.program is not None else None} for o in optimizers},
        "tasks": {},
    }
    sections, verdicts = [], []
    logger = TBLogger(out) if tb else None
    for task in task_list:
        lrs = [task.lr * m for m in multipliers]
        info = {"steps": task.num_steps, "params": task_layout(task).size, "nominal_lr": task.lr, "seeds": seeds,
                "lr_grid": lrs, "kind": task.kind}
        results = {}
        for opt in optimizers:
            t0 = time.time()
            grid = run_grid(task, opt, lrs, wds, seeds)
            results[opt.name] = summarize(grid, lrs, multipliers, wds)
            results[opt.name]["val_loss_grid"] = [[[_json_float(x) for x in row] for row in plane]
                                                  for plane in grid["val_loss"]]
            results[opt.name]["seconds"] = time.time() - t0
            if console is not None:
                b = results[opt.name]["best"]
                shown = _pm(b["val_loss_mean"], b["val_loss_se"]) if b else "diverged"
                console.print(f"{task.name}: {opt.name}: {shown} ({results[opt.name]['seconds']:.0f} s)",
                              highlight=False)
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
    out.write_json("transfer.json", report)
    if logger is not None:
        logger.text("transfer/report", markdown, 0)
        logger.close()
    if console is not None:
        for line in verdicts:
            console.print(line.replace("**", ""), highlight=False)
        console.print(f"wrote {out.file('transfer.md')}", highlight=False)
    return markdown


def _log_task(logger: TBLogger, task, results: Mapping[str, dict], png: pathlib.Path) -> None:
    for name, r in results.items():
        b = r.get("best")
        if b is None:
            continue
        for step, value in zip(b["curve_steps"], b["curve_mean"]):
            if value is not None:
                logger.scalars(step, {f"transfer/{task.name}/train_loss/{name}": value})
        logger.scalars(task.num_steps, {f"transfer/{task.name}/val_loss/{name}": b["val_loss_mean"]})
        if b.get("accuracy_mean") is not None:
            logger.scalars(task.num_steps, {f"transfer/{task.name}/val_accuracy/{name}": b["accuracy_mean"]})
    logger.image_png(f"transfer/curves/{task.name}", png, 0)


def transfer_markdown(report: dict, sections: list[str], verdicts: list[str], optimizers) -> str:
    s = report["settings"]
    lines = [
        "# discover transfer", "",
        (f"Each optimizer: lr = nominal lr x {s['lr_multipliers']}, decoupled weight decay {s['wd_grid']} "
         f"(`w <- w - lr * wd * w`), {s['seeds']} seeds per grid point, all in one vmapped call per optimizer "
         f"and task. Reported: the grid point with the lowest mean final validation loss (same seeds: the same "
         f"selection bias for every optimizer); ± is the standard error over seeds; 'edge' marks a best lr at "
         f"the end of the grid. Programs run through `to_optax` (what `discover export` gives)."), "",
        "## Verdicts", "",
        *[f"- {v}" for v in verdicts], "",
        "## Results", "",
        *sections,
    ]
    progs = [o for o in optimizers if o.program is not None]
    if progs:
        lines += ["## Programs", ""]
        for o in progs:
            lines += [program_markdown(str(o.program), title=f"{o.name} ({o.source})"), ""]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_BASELINES",
    "DEFAULT_LR_MULTIPLIERS",
    "DEFAULT_SEEDS",
    "DEFAULT_WD_GRID",
    "Optimizer",
    "baseline_optimizer",
    "program_optimizer",
    "resolve_tasks",
    "run_grid",
    "run_transfer",
    "summarize",
    "verdict",
    "with_weight_decay",
]
