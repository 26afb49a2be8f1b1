"""Scoring update-rule programs: one population-trainer call per task for a whole (padded) batch.

Fitness (lower is better): per task, final validation loss / tuned AdamW's, mean over training seeds, best over
learning-rate multipliers, then the mean over tasks (or the worst task, ``Scorer.aggregate``); non-finite ->
``worst``. Shared by the update-rule search,
simplify and transfer."""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.errors import InputError
from discover.infra.sharding import population_mesh, sharded
from discover.language import interpreter
from discover.language.program import Program
from envs import tasks as task_registry
from envs.baselines import adamw_reference, reference_keys
from envs.train import (
    TaskTrainer,
    adamw_update_fn,
    clear_trainers,
    data_signature,
    make_population_trainer,
    task_layout,
    task_program,
)


# ----------------------------------------------------------------------------------------------------------
# Scoring: one population-trainer call per task for a whole (padded) batch
# ----------------------------------------------------------------------------------------------------------
def with_steps(task: task_registry.Task, steps: int | None) -> task_registry.Task:
    """``task`` trained for ``steps`` steps (its spec, hence its reference-cache key, says so)."""
    if steps is None or steps == task.num_steps:
        return task
    spec = json.dumps({**json.loads(task.spec), "num_steps": steps}, sort_keys=True)
    return dataclasses.replace(task, num_steps=steps, spec=spec)


@functools.lru_cache(maxsize=64)
def _interpreter(segments: tuple, max_len: int, n_state: int):
    # one update_fn per layout: tasks of one program and layout then share one compiled trainer
    return interpreter.population_update_fn(segments), interpreter.population_init_fn(max_len, n_state)


def interpreted_trainer(task: task_registry.Task, max_len: int, n_state: int, needs_hessian: bool,
                        loss_scale: bool = False, val_points: int = 1) -> TaskTrainer:
    """The population trainer of ``task`` running encoded programs (shared by every run in a process; its jitted
    ``core`` by every task of the same program, steps and data shapes: ``envs.train.task_program``); with
    ``loss_scale`` it takes a fourth argument, each member's training-loss factor; with ``val_points`` > 1 it
    also reports ``val_loss_window`` (``envs.train.make_population_trainer``)."""
    update_fn, init = _interpreter(task_layout(task).segments, max_len, n_state)
    return make_population_trainer(task, update_fn, init, needs_hessian=needs_hessian, loss_scale=loss_scale,
                                   val_points=val_points)


def release_trainers() -> None:
    """Frees every compiled population trainer of this process (~50 MB each with the interpreter; a search's
    proxy and funnel trainers once the search is over); whatever is called later compiles again."""
    clear_trainers()
    _interpreter.cache_clear()
    sharded.cache_clear()
    jax.clear_caches()
    gc.collect()


# The learning-rate sweep of the robust fitness: a candidate's lr is tuned AdamW's times each of these and it
# keeps its best. Powers of two from 1/32 (sign-based rules want 3-10x smaller steps than AdamW) to 4: doubling
# or halving a rule's step maps the sweep onto itself, so a rule cannot score better by rescaling its step (a
# coarser grid, e.g. 0.03, 0.1, 0.3, 1, 3, let `2 * adamw` beat AdamW by 30% on the noisy quadratic).
ROBUST_LR_MULTIPLIERS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0)
# How a candidate's per-task scores combine into its fitness: "mean" over tasks, or its "worst" task (the largest
# relative loss: a gain on one task cannot hide a loss on another).
AGGREGATES = ("mean", "worst")


class Scores(NamedTuple):
    fitness: np.ndarray  # (n,) mean (or worst, Scorer.aggregate) over tasks of the relative loss, non-finite -> worst
    per_task: np.ndarray  # (n, T)
    nonfinite: np.ndarray  # (n,) bool: worst on some task because training diverged / gave NaN
    multiplier: np.ndarray | None = None  # (n, T) the lr multiplier each score was reached with (NaN: none)


def aggregate(val_loss: np.ndarray, reference: float, worst: float) -> tuple[np.ndarray, np.ndarray]:
    """Relative loss per candidate from val losses (n, lr multipliers, seeds): mean over seeds, best over
    multipliers, non-finite -> ``worst``, capped at ``worst``. Returns (relative loss, non-finite flag)."""
    ratio = np.asarray(val_loss, np.float64) / float(reference)
    per_lr = np.where(np.isfinite(ratio).all(axis=2), ratio.mean(axis=2), np.inf)
    best = per_lr.min(axis=1)
    bad = ~np.isfinite(best)
    return np.where(bad, worst, np.minimum(best, worst)), bad


def chosen_multipliers(scores: Scores) -> list[list[float] | None]:
    """Per candidate, the lr multiplier each task's score was reached with (None where the scorer did not say)."""
    if scores.multiplier is None:
        return [None] * len(scores.fitness)
    return [[float(m) for m in row] for row in scores.multiplier]


def chosen_lr_index(val_loss: np.ndarray) -> np.ndarray:
    """Per candidate, the index of the lr multiplier whose seed-mean val loss is best (-1: none finite)."""
    val = np.asarray(val_loss, np.float64)
    per_lr = np.where(np.isfinite(val).all(axis=2), val.mean(axis=2), np.inf)
    return np.where(np.isfinite(per_lr).any(axis=1), np.argmin(per_lr, axis=1), -1)


@dataclasses.dataclass
class Scorer:
    """Scores programs on a list of tasks, ``batch`` candidates per trainer call (padded: fixed shapes)."""

    tasks: list[task_registry.Task]
    references: dict[str, dict]  # task name -> adamw_reference(...)
    train_seeds: int
    lr_multipliers: tuple[float, ...]
    worst: float
    batch: int
    max_len: int
    n_state: int
    needs_hessian: bool = False
    devices: Any = 1  # the population axis is sharded over this many devices ("all" or N)
    first_seed: int = 0  # training seeds first_seed, first_seed + 1, ...: 0 is the references' own seeds
    loss_scale: bool = False  # score(..., loss_scales=) may rescale each task's training loss (augmentation)
    aggregate: str = "mean"  # per-task scores -> fitness: AGGREGATES

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")

    @property
    def members_per_candidate(self) -> int:
        return len(self.lr_multipliers) * self.train_seeds

    @functools.cached_property
    def _mesh(self):
        return population_mesh(self.devices)

    def trainer(self, task):
        """The sharded trainer of ``task``; its first argument is the task's data (``_call_args``)."""
        trainer = interpreted_trainer(task, self.max_len, self.n_state, self.needs_hessian, self.loss_scale)
        return sharded(trainer.core, self._mesh, replicated=1)

    @functools.cached_property
    def _shapes(self) -> set:
        return set()  # (program, steps, data shapes, rows) of every trainer call this scorer made: one compile each

    def _call_args(self, task, enc, scale: float = 1.0) -> tuple:
        program, data = task_program(task)
        self._shapes.add((program, task.num_steps, data_signature(data), len(self._keys)))
        args = (data, self._keys, self._lrs(task), enc)
        if self.loss_scale:  # every member of the call trains on the same rescaled loss
            args += (jnp.full((self.batch * self.members_per_candidate,), scale, jnp.float32),)
        return args

    @functools.cached_property
    def _keys(self):
        return jnp.tile(reference_keys(self.train_seeds, self.first_seed), self.batch * len(self.lr_multipliers))

    def _lrs(self, task) -> jax.Array:
        base = self.references[task.name]["lr"]
        per_candidate = np.repeat(np.asarray(self.lr_multipliers, np.float64) * base, self.train_seeds)
        return jnp.asarray(np.tile(per_candidate, self.batch), jnp.float32)

    def score(self, programs: Sequence[Program], tasks: Sequence[int] | None = None,
              loss_scales: Sequence[float] | None = None) -> Scores:
        """Scores on ``self.tasks`` (or the ones at indices ``tasks``), each task's training loss multiplied by
        its ``loss_scales`` entry (needs ``loss_scale=True``; the validation loss is never rescaled)."""
        chosen = list(self.tasks) if tasks is None else [self.tasks[i] for i in tasks]
        scales = [1.0] * len(chosen) if loss_scales is None else [float(s) for s in loss_scales]
        if len(scales) != len(chosen) or (not self.loss_scale and any(s != 1.0 for s in scales)):
            raise ValueError(f"loss_scales: {len(scales)} factors for {len(chosen)} tasks (loss_scale="
                             f"{self.loss_scale})")
        if not programs:
            empty = np.zeros((0,), np.float64)
            none = np.zeros((0, len(chosen)))
            return Scores(empty, none, np.zeros((0,), bool), none)
        parts = [self._score_chunk(programs[i:i + self.batch], chosen, scales)
                 for i in range(0, len(programs), self.batch)]
        return Scores(*(np.concatenate(x) for x in zip(*parts)))

    def _score_chunk(self, programs: Sequence[Program], tasks: Sequence, scales: Sequence[float]) -> Scores:
        n, repeat = len(programs), self.members_per_candidate
        padded = list(programs) + [programs[-1]] * (self.batch - n)
        enc = interpreter.encode(padded, self.max_len, self.n_state)
        enc = jax.tree.map(lambda x: jnp.repeat(x, repeat, axis=0), enc)
        per_task, chosen, bad = [], [], np.zeros((n,), bool)
        multipliers = np.append(np.asarray(self.lr_multipliers, np.float64), np.nan)  # index -1: none
        outs = [self.trainer(task).dispatch(*self._call_args(task, enc, scale))  # every task first, then results
                for task, scale in zip(tasks, scales)]
        for task, out in zip(tasks, (o.result() for o in outs)):
            val = np.asarray(out["val_loss"], np.float64)
            val = val.reshape(self.batch, len(self.lr_multipliers), self.train_seeds)
            rel, nonfinite = aggregate(val[:n], self.references[task.name]["val_loss"], self.worst)
            per_task.append(rel)
            chosen.append(multipliers[chosen_lr_index(val[:n])])
            bad |= nonfinite
        per_task = np.stack(per_task, axis=1)
        fitness = per_task.mean(axis=1) if self.aggregate == "mean" else per_task.max(axis=1)
        return Scores(fitness, per_task, bad, np.stack(chosen, axis=1))

    def swept(self, program: Program) -> Scorer:
        """This scorer with each task's reference replaced by ``program``'s own best seed-mean val loss over the
        same sweep and seeds (AdamW tuned over the sweep it is compared on: it then scores exactly 1.0)."""
        enc = interpreter.encode([program] * self.batch, self.max_len, self.n_state)
        enc = jax.tree.map(lambda x: jnp.repeat(x, self.members_per_candidate, axis=0), enc)
        references = {}
        for task in self.tasks:
            out = self.trainer(task)(*self._call_args(task, enc))
            val = np.asarray(out["val_loss"], np.float64)[: self.members_per_candidate]
            val = val.reshape(len(self.lr_multipliers), self.train_seeds)
            per_lr = np.where(np.isfinite(val).all(axis=1), val.mean(axis=1), np.inf)
            if not np.isfinite(per_lr).any():
                raise InputError(f"{program.name} diverges on {task.name} at every lr of the sweep: no reference")
            at = dict(zip(self.lr_multipliers, per_lr))
            references[task.name] = {**self.references[task.name], "val_loss": float(per_lr.min()),
                                     "lr_multiplier": float(self.lr_multipliers[int(np.argmin(per_lr))]),
                                     "tuned_val_loss": self.references[task.name]["val_loss"],
                                     "val_loss_at_1x": float(at[1.0]) if 1.0 in at else None}
        return dataclasses.replace(self, references=references)

    def compiles(self) -> int:
        """Trainer compilations this scorer needed (one per task program, steps, data shapes and call shape: pool
        tasks of one shape bucket share one; a process compiles each once, whichever scorer asks first)."""
        return len(self._shapes)


def compute_references(tasks: Sequence, steps: int | None, seeds: int, cache_path) -> dict[str, dict]:
    """Tuned-AdamW references of ``tasks`` (registered names or Task objects), by task name."""
    tasks = [task_registry.get_task(t) if isinstance(t, str) else t for t in tasks]
    references = {task.name: adamw_reference(with_steps(task, steps), seeds=seeds, cache_path=cache_path)
                  for task in tasks}
    clear_trainers(adamw_update_fn())  # AdamW's trainers are not called again (the sweep runs the interpreter)
    return references
