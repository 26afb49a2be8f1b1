"""Update-rule search: regularized evolution over symbolic programs, after the Lion paper.

One generation (:func:`run_generation`): parents are picked by tournament, children are mutated, their dead
code is removed and every child of a round is fingerprinted in one batched call. A child whose fingerprint was
seen reuses the cached fitness and joins the population at once; rounds continue until ``evolution.batch``
novel children are found (or ``evolution.max_rounds``), which are then trained together: ONE population-trainer
call per proxy task, the batch padded to a fixed size so nothing ever recompiles. Each child added kills the
oldest member.

Fitness (lower is better) of a program: for each proxy task, its final validation loss divided by that of
AdamW with a tuned learning rate (``envs.baselines``), averaged over training seeds (the same inits and data as
the reference), the best over ``fitness.lr_multipliers`` (the program's ``lr`` input is AdamW's tuned lr times
the multiplier), then the mean over tasks. AdamW itself scores 1.0. A program whose training diverges or
gives NaN/inf on a task scores ``fitness.worst`` there and is counted.

Funnel: every ``funnel.every`` generations the best distinct programs are scored on the meta-validation tasks;
the hall of fame ranks by that score. ``restart.patience`` restarts the population from the best program when
the hall of fame's best has not improved for that many generations. At the end, the constants of the best
programs are refined with an evosax strategy through the same batched trainer (``refine``).

Run directory outputs: ``config.yaml``, ``references.json`` (the AdamW references used), TensorBoard events,
orbax checkpoints (everything a resume needs: population, ages, fitness caches, hall of fame, the RNG state and
counters), ``best.py`` (the best program, loadable by ``discover export``), ``hall_of_fame.json``,
``results.json``.

Entry points: :func:`load_search_config` and :func:`run_search`.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import functools
import json
import math
import pathlib
import resource
import time
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from discover.infra.checkpointing import Checkpointer, GracefulExit
from discover.infra.config import ConfigError, config_to_dict, dump_config, flat_config, load_config
from discover.infra.rundir import RunDir, TBLogger, new_run_dir, program_markdown
from discover.infra.sharding import DistributedSection, check_devices, population_mesh, sharded
from discover.language import interpreter
from discover.language.analysis import remove_dead_code
from discover.language.mutation import DEFAULT_WEIGHTS
from discover.language.ops import OP_BY_NAME
from discover.language.program import Program, parse
from discover.shared.evolution import (
    HallEntry,
    Individual,
    add_member,
    analyse,
    constant_slots,
    make_child,
    program_diff,
    scale_constants,
    top_distinct,
    tournament,
    update_hall,
)
from envs import tasks as task_registry
from envs.baselines import adamw_reference, reference_keys
from envs.train import make_population_trainer, task_layout
from search_spaces.update_rules import SEED_NAMES, UpdateRuleSpace, seed

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
QUICKSTART = REPO_ROOT / "experiments" / "quickstart.yaml"
CHECKPOINT_FORMAT = 1


# ----------------------------------------------------------------------------------------------------------
# Config schema
# ----------------------------------------------------------------------------------------------------------
class _RegisteredTasks(collections.abc.Sequence):
    """The names of the registered tasks, read when a config is checked (tasks may be registered late)."""

    def __getitem__(self, i):
        return task_registry.task_names()[i]

    def __len__(self) -> int:
        return len(task_registry.task_names())


def _strategies() -> list[str]:
    from evosax.algorithms import distribution_based_algorithms

    return sorted(distribution_based_algorithms)


@dataclasses.dataclass(frozen=True)
class SpaceSection:
    ops: list[str] | None = dataclasses.field(
        default=None, metadata={"choices": list(OP_BY_NAME), "help": "ops mutation may draw; null = every op"})
    max_len: int = dataclasses.field(default=16, metadata={"min": 1, "max": 256, "help": "most statements"})
    n_state: int = dataclasses.field(default=4, metadata={"min": 0, "max": 16, "help": "most state variables"})
    allow_h: bool = dataclasses.field(
        default=False, metadata={"help": "programs may read a Hutchinson diagonal-Hessian estimate h (slower)"})

    def space(self) -> UpdateRuleSpace:
        kw = {} if self.ops is None else {"ops": tuple(self.ops)}
        return UpdateRuleSpace(max_len=self.max_len, n_state=self.n_state, allow_h=self.allow_h, **kw)


@dataclasses.dataclass(frozen=True)
class EvolutionSection:
    population: int = dataclasses.field(default=64, metadata={"min": 2, "help": "programs alive at once"})
    tournament: int = dataclasses.field(default=8, metadata={"min": 1, "help": "tournament size"})
    batch: int = dataclasses.field(
        default=32, metadata={"min": 1, "help": "novel children trained together per generation (fixed shape)"})
    max_rounds: int = dataclasses.field(
        default=4, metadata={"min": 1, "help": "mutation rounds per generation to fill the batch with novel children"})
    generations: int = dataclasses.field(default=100, metadata={"min": 0, "help": "generations"})
    mutation: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS), metadata={"min": 0.0, "help": "weight of each mutation"})
    max_tries: int = dataclasses.field(
        default=20, metadata={"min": 1, "help": "re-mutations of an invalid child before giving up"})

    def __post_init__(self) -> None:
        unknown = [k for k in self.mutation if k not in DEFAULT_WEIGHTS]
        if unknown:
            raise ValueError(f"mutation: unknown mutation {unknown[0]!r} (known: {', '.join(DEFAULT_WEIGHTS)})")
        if not any(v > 0 for v in self.mutation.values()):
            raise ValueError("mutation: at least one weight must be > 0")
        if self.tournament > self.population:
            raise ValueError(f"tournament ({self.tournament}) must be <= population ({self.population})")


@dataclasses.dataclass(frozen=True)
class FitnessSection:
    tasks: list[str] = dataclasses.field(
        default_factory=lambda: ["mlp_regression_proxy"],
        metadata={"choices": _RegisteredTasks(), "help": "proxy tasks a candidate trains on (envs.tasks)"})
    steps: int | None = dataclasses.field(
        default=None, metadata={"min": 1, "help": "training steps per task; null = each task's own"})
    seeds: int = dataclasses.field(default=1, metadata={"min": 1, "help": "training seeds per candidate"})
    lr_multipliers: list[float] = dataclasses.field(
        default_factory=lambda: [1.0],
        metadata={"min": 1e-6, "max": 1e6, "help": "lr input = tuned AdamW lr x each; a candidate keeps its best"})
    worst: float = dataclasses.field(
        default=1000.0, metadata={"min": 1.0, "help": "fitness of a diverged / NaN candidate (and the cap)"})
    reference_cache: str | None = dataclasses.field(
        default=None, metadata={"help": "AdamW reference cache file; null = <run root>/.baselines.json"})

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks: at least one proxy task is needed")
        if not self.lr_multipliers:
            raise ValueError("lr_multipliers: at least one multiplier is needed")


@dataclasses.dataclass(frozen=True)
class FunnelSection:
    tasks: list[str] = dataclasses.field(
        default_factory=list,
        metadata={"choices": _RegisteredTasks(), "help": "meta-validation tasks; [] = rank by proxy fitness"})
    steps: int | None = dataclasses.field(
        default=None, metadata={"min": 1, "help": "training steps per task; null = each task's own"})
    every: int = dataclasses.field(default=10, metadata={"min": 1, "help": "generations between funnels"})
    top_k: int = dataclasses.field(default=4, metadata={"min": 1, "help": "distinct programs re-scored"})
    seeds: int = dataclasses.field(default=1, metadata={"min": 1, "help": "training seeds on meta-validation"})


@dataclasses.dataclass(frozen=True)
class HallOfFameSection:
    size: int = dataclasses.field(default=10, metadata={"min": 1, "help": "distinct programs kept"})


@dataclasses.dataclass(frozen=True)
class RestartSection:
    patience: int = dataclasses.field(
        default=0, metadata={"min": 0, "help": "restart from the best after this many generations without "
                                               "improvement; 0 = never"})


@dataclasses.dataclass(frozen=True)
class RefineSection:
    top_k: int = dataclasses.field(default=0, metadata={"min": 0, "help": "hall-of-fame programs refined; 0 = off"})
    strategy: str = dataclasses.field(
        default="CMA_ES", metadata={"choices": _strategies(), "help": "evosax strategy"})
    generations: int = dataclasses.field(default=10, metadata={"min": 1, "help": "ES generations per program"})
    sigma: float = dataclasses.field(
        default=0.5, metadata={"min": 0.0, "help": "initial std of the log2 scale of each constant"})
    lr: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "help": "ES optimizer lr (Open_ES & co)"})


@dataclasses.dataclass(frozen=True)
class LogSection:
    text_every: int = dataclasses.field(
        default=10, metadata={"min": 1, "help": "generations between top-program texts in TensorBoard"})
    top_programs: int = dataclasses.field(default=3, metadata={"min": 1, "help": "programs in each text"})


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    every: int = dataclasses.field(default=10, metadata={"min": 1, "help": "generations between checkpoints"})
    max_to_keep: int = dataclasses.field(default=3, metadata={"min": 1, "help": "checkpoints kept"})


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    kind: str = dataclasses.field(default="update_rule", metadata={"choices": ["update_rule"]})
    name: str = dataclasses.field(default="search", metadata={"help": "run name (run directory prefix)"})
    seed: int = dataclasses.field(default=0, metadata={"min": 0, "help": "seed of the whole search"})
    seeds: list[str] = dataclasses.field(
        default_factory=lambda: ["adamw"],
        metadata={"choices": list(SEED_NAMES), "help": "programs the population starts from (cycled)"})
    space: SpaceSection = dataclasses.field(default_factory=SpaceSection)
    evolution: EvolutionSection = dataclasses.field(default_factory=EvolutionSection)
    fitness: FitnessSection = dataclasses.field(default_factory=FitnessSection)
    funnel: FunnelSection = dataclasses.field(default_factory=FunnelSection)
    hall_of_fame: HallOfFameSection = dataclasses.field(default_factory=HallOfFameSection)
    restart: RestartSection = dataclasses.field(default_factory=RestartSection)
    refine: RefineSection = dataclasses.field(default_factory=RefineSection)
    log: LogSection = dataclasses.field(default_factory=LogSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    devices: Any = dataclasses.field(
        default="all", metadata={"help": "devices the population is sharded over: all or a number"})
    distributed: DistributedSection = dataclasses.field(default_factory=DistributedSection)

    def __post_init__(self) -> None:
        check_devices(self.devices)
        if not self.seeds:
            raise ValueError("seeds: at least one seed program is needed")
        space = self.space.space()
        for name in self.seeds:
            problems = space.problems(seed(name))
            if problems:
                raise ValueError(f"seeds: {name!r} is outside the search space ({'; '.join(problems)})")


def load_search_config(path: str | pathlib.Path | None = None, overrides: Sequence[str] = ()) -> SearchConfig:
    """The validated config of ``path`` (``experiments/quickstart.yaml`` when None) with ``--set`` overrides;
    raises :class:`discover.infra.config.ConfigError` (one line: file, line, key, what is wrong)."""
    if path is None:
        path = QUICKSTART if QUICKSTART.is_file() else None
    return load_config(SearchConfig, path, overrides)


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
def interpreted_trainer(task: task_registry.Task, max_len: int, n_state: int, needs_hessian: bool):
    """The jitted population trainer of ``task`` running encoded programs (shared by every run in a process)."""
    update_fn = interpreter.population_update_fn(task_layout(task).segments)
    init = interpreter.population_init_fn(max_len, n_state)
    return make_population_trainer(task, update_fn, init, needs_hessian=needs_hessian)


class Scores(NamedTuple):
    fitness: np.ndarray  # (n,) mean over tasks of the relative loss, non-finite -> worst
    per_task: np.ndarray  # (n, T)
    nonfinite: np.ndarray  # (n,) bool: worst on some task because training diverged / gave NaN


def aggregate(val_loss: np.ndarray, reference: float, worst: float) -> tuple[np.ndarray, np.ndarray]:
    """Relative loss per candidate from val losses (n, lr multipliers, seeds): mean over seeds, best over
    multipliers, non-finite -> ``worst``, capped at ``worst``. Returns (relative loss, non-finite flag)."""
    ratio = np.asarray(val_loss, np.float64) / float(reference)
    per_lr = np.where(np.isfinite(ratio).all(axis=2), ratio.mean(axis=2), np.inf)
    best = per_lr.min(axis=1)
    bad = ~np.isfinite(best)
    return np.where(bad, worst, np.minimum(best, worst)), bad


@dataclasses.dataclass
class Scorer:
    """Scores programs on a list of tasks, ``batch`` candidates per trainer call (padded: fixed shapes)."""

    tasks: list[task_registry.Task]
    references: dict[str, dict]  # task name -> adamw_reference(...)
    seeds: int
    lr_multipliers: tuple[float, ...]
    worst: float
    batch: int
    max_len: int
    n_state: int
    needs_hessian: bool = False
    devices: Any = 1  # the population axis is sharded over this many devices ("all" or N)

    @property
    def members_per_candidate(self) -> int:
        return len(self.lr_multipliers) * self.seeds

    @functools.cached_property
    def _mesh(self):
        return population_mesh(self.devices)

    def trainer(self, task):
        return sharded(interpreted_trainer(task, self.max_len, self.n_state, self.needs_hessian), self._mesh)

    @functools.cached_property
    def _keys(self):
        return jnp.tile(reference_keys(self.seeds), self.batch * len(self.lr_multipliers))

    def _lrs(self, task) -> jax.Array:
        base = self.references[task.name]["lr"]
        per_candidate = np.repeat(np.asarray(self.lr_multipliers, np.float64) * base, self.seeds)
        return jnp.asarray(np.tile(per_candidate, self.batch), jnp.float32)

    def score(self, programs: Sequence[Program]) -> Scores:
        if not programs:
            empty = np.zeros((0,), np.float64)
            return Scores(empty, np.zeros((0, len(self.tasks))), np.zeros((0,), bool))
        parts = [self._score_chunk(programs[i:i + self.batch]) for i in range(0, len(programs), self.batch)]
        return Scores(*(np.concatenate(x) for x in zip(*parts)))

    def _score_chunk(self, programs: Sequence[Program]) -> Scores:
        n, repeat = len(programs), self.members_per_candidate
        padded = list(programs) + [programs[-1]] * (self.batch - n)
        enc = interpreter.encode(padded, self.max_len, self.n_state)
        enc = jax.tree.map(lambda x: jnp.repeat(x, repeat, axis=0), enc)
        per_task, bad = [], np.zeros((n,), bool)
        outs = [self.trainer(task).dispatch(self._keys, self._lrs(task), enc) for task in self.tasks]  # all first
        for task, out in zip(self.tasks, (o.result() for o in outs)):
            val = np.asarray(out["val_loss"], np.float64).reshape(self.batch, len(self.lr_multipliers), self.seeds)
            rel, nonfinite = aggregate(val[:n], self.references[task.name]["val_loss"], self.worst)
            per_task.append(rel)
            bad |= nonfinite
        per_task = np.stack(per_task, axis=1)
        return Scores(per_task.mean(axis=1), per_task, bad)

    def compiles(self) -> int:
        return sum(self.trainer(t)._cache_size() for t in self.tasks)


def compute_references(task_names: Sequence[str], steps: int | None, seeds: int, cache_path) -> dict[str, dict]:
    return {name: adamw_reference(with_steps(task_registry.get_task(name), steps), seeds=seeds,
                                  cache_path=cache_path) for name in task_names}


def load_or_compute_references(config: SearchConfig, run_dir: RunDir) -> dict:
    """The AdamW references of the run (from the run directory on resume, so a resume uses the same numbers)."""
    if run_dir.file("references.json").is_file():
        return run_dir.read_json("references.json")
    cache = config.fitness.reference_cache or (run_dir.path.parent / ".baselines.json")
    refs = {
        "proxy": compute_references(config.fitness.tasks, config.fitness.steps, config.fitness.seeds, cache),
        "metaval": compute_references(config.funnel.tasks, config.funnel.steps, config.funnel.seeds, cache),
    }
    run_dir.write_json("references.json", refs)
    return refs


# ----------------------------------------------------------------------------------------------------------
# Search state (host objects; saved as JSON meta + arrays in orbax checkpoints)
# ----------------------------------------------------------------------------------------------------------
TOTALS = ("children", "hits", "scored", "invalid", "nonfinite", "dead_statements", "statements")


@dataclasses.dataclass
class SearchState:
    generation: int  # generations completed
    births: int  # children (and seeds) created so far: the age counter
    population: list[Individual]
    cache: dict[str, float]  # fingerprint -> proxy fitness
    metaval_cache: dict[str, float]  # fingerprint -> meta-validation fitness
    hall: list[HallEntry]
    totals: dict[str, int]
    best_score: float  # best hall-of-fame score so far (for restarts)
    best_generation: int
    restarts: int
    refined: bool
    rng: np.random.Generator
    seed_fitness: float = math.inf  # best fitness among the seed programs
    seed_metaval: float = math.inf


def _rng_state_json(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)  # PCG64's 128-bit ints stay exact as text


def _rng_from_json(text: str) -> np.random.Generator:
    state = json.loads(text)
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


def state_to_checkpoint(state: SearchState) -> tuple[dict, dict]:
    arrays = {
        "fitness": np.array([i.fitness for i in state.population], np.float64),
        "birth": np.array([i.birth for i in state.population], np.int64),
    }
    meta = {
        "format": CHECKPOINT_FORMAT,
        "generation": state.generation,
        "births": state.births,
        "population": [i.to_json() for i in state.population],
        "cache": state.cache,
        "metaval_cache": state.metaval_cache,
        "hall": [e.to_json() for e in state.hall],
        "totals": state.totals,
        "best_score": state.best_score,
        "best_generation": state.best_generation,
        "restarts": state.restarts,
        "refined": state.refined,
        "rng": _rng_state_json(state.rng),
        "seed_fitness": state.seed_fitness,
        "seed_metaval": state.seed_metaval,
    }
    return arrays, meta


def state_from_checkpoint(arrays: dict, meta: dict) -> SearchState:
    population = [Individual.from_json(d) for d in meta["population"]]
    # The arrays carry the numbers under the checkpoint's checksum: they win over the JSON copy.
    population = [dataclasses.replace(ind, fitness=float(f), birth=int(b))
                  for ind, f, b in zip(population, arrays["fitness"], arrays["birth"])]
    return SearchState(
        generation=int(meta["generation"]), births=int(meta["births"]), population=population,
        cache={k: float(v) for k, v in meta["cache"].items()},
        metaval_cache={k: float(v) for k, v in meta["metaval_cache"].items()},
        hall=[HallEntry.from_json(d) for d in meta["hall"]], totals={k: int(v) for k, v in meta["totals"].items()},
        best_score=float(meta["best_score"]), best_generation=int(meta["best_generation"]),
        restarts=int(meta["restarts"]), refined=bool(meta["refined"]), rng=_rng_from_json(meta["rng"]),
        seed_fitness=float(meta["seed_fitness"]), seed_metaval=float(meta["seed_metaval"]),
    )


def _template(config: SearchConfig) -> dict:
    P = config.evolution.population
    return {"fitness": np.zeros((P,), np.float64), "birth": np.zeros((P,), np.int64)}


# ----------------------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SearchContext:
    config: SearchConfig
    space: UpdateRuleSpace
    proxy: Scorer
    metaval: Scorer | None  # None: the funnel ranks by proxy fitness

    @property
    def max_len(self) -> int:
        return self.space.max_len

    @property
    def n_state(self) -> int:
        return max(1, self.space.n_state)


def make_context(config: SearchConfig, references: dict) -> SearchContext:
    space = config.space.space()
    common = {"worst": config.fitness.worst, "max_len": space.max_len, "n_state": max(1, space.n_state),
              "needs_hessian": space.allow_h, "devices": config.devices,
              "lr_multipliers": tuple(config.fitness.lr_multipliers)}
    proxy = Scorer(tasks=[with_steps(task_registry.get_task(n), config.fitness.steps) for n in config.fitness.tasks],
                   references=references["proxy"], seeds=config.fitness.seeds, batch=config.evolution.batch, **common)
    metaval = None
    if config.funnel.tasks:
        metaval = Scorer(tasks=[with_steps(task_registry.get_task(n), config.funnel.steps) for n in config.funnel.tasks],
                         references=references["metaval"], seeds=config.funnel.seeds, batch=config.funnel.top_k,
                         **common)
    return SearchContext(config=config, space=space, proxy=proxy, metaval=metaval)


def _live_text(program: Program) -> str:
    return str(remove_dead_code(program))


def initial_state(ctx: SearchContext) -> SearchState:
    """The seed population (seeds cycled), scored; the funnel runs once on it."""
    config = ctx.config
    P = config.evolution.population
    names = list(dict.fromkeys(config.seeds))
    live, fps, _ = analyse([seed(n) for n in names], ctx.max_len, ctx.n_state, pad_to=config.evolution.batch)
    fp_of = dict(zip(names, fps))
    unique = list(dict.fromkeys(fps))
    scores = ctx.proxy.score([live[fps.index(fp)] for fp in unique])
    cache = {fp: float(f) for fp, f in zip(unique, scores.fitness)}
    if "adamw" in fp_of:
        _check_adamw_reference(ctx, scores.per_task[unique.index(fp_of["adamw"])])
    chosen = [config.seeds[i % len(config.seeds)] for i in range(P)]
    population = [Individual(seed(n), cache[fp_of[n]], fp_of[n], birth=i) for i, n in enumerate(chosen)]
    totals = dict.fromkeys(TOTALS, 0)
    totals["scored"] = len(unique)
    totals["nonfinite"] = int(scores.nonfinite.sum())
    state = SearchState(
        generation=0, births=P, population=population, cache=cache, metaval_cache={}, hall=[], totals=totals,
        best_score=math.inf, best_generation=0, restarts=0, refined=False,
        rng=np.random.default_rng(config.seed), seed_fitness=float(min(cache.values())),
    )
    state, _ = run_funnel(state, ctx)
    state.seed_metaval = min(e.metaval for e in state.hall)
    state.best_score = state.hall[0].metaval
    return state


def _check_adamw_reference(ctx: SearchContext, per_task: np.ndarray) -> None:
    """The AdamW seed is optax's AdamW: against its own tuned reference it scores 1.0 (with multiplier 1.0). Any
    other value means the reference does not describe the task (e.g. a stale cache entry): say so."""
    multipliers = ctx.config.fitness.lr_multipliers
    if 1.0 not in multipliers:
        return
    for task, value in zip(ctx.proxy.tasks, per_task):
        stale = value > 1.0 + 1e-3 or (len(multipliers) == 1 and value < 1.0 - 1e-3)
        if stale:
            warnings.warn(
                f"the AdamW seed scores {value:.4f} on {task.name} against its tuned-AdamW reference (expected 1.0):"
                " the reference cache (fitness.reference_cache) may be stale, e.g. a task changed without"
                " envs.tasks.TASK_CODE_VERSION being bumped; delete the cache file to recompute it", stacklevel=3)


def run_generation(state: SearchState, ctx: SearchContext) -> tuple[SearchState, dict]:
    """One generation (see the module docstring); returns the new state and its statistics."""
    evo = ctx.config.evolution
    rng = state.rng
    population, births, cache = list(state.population), state.births, dict(state.cache)
    pending: dict[str, tuple] = {}  # fingerprint -> first novel child (scored below)
    waiting: list[tuple] = []  # (birth, child, kind, parent live text, fingerprint) joining after scoring
    stats = collections.Counter()
    for _ in range(evo.max_rounds):
        need = evo.batch - len(pending)
        if need <= 0:
            break
        made = []
        for _ in range(need):
            parent = tournament(population, rng, evo.tournament)
            child, kind, invalid = make_child(parent.program, rng, ctx.space, evo.mutation, evo.max_tries)
            stats["invalid"] += invalid
            made.append((child, kind, parent))
        live, fps, dead = analyse([c for c, _, _ in made], ctx.max_len, ctx.n_state, pad_to=evo.batch)
        for (child, kind, parent), lv, fp, d in zip(made, live, fps, dead):
            stats["children"] += 1
            stats["dead_statements"] += d
            stats["statements"] += len(child)
            record = (births, child, kind, _live_text(parent.program), fp)
            births += 1
            if fp in cache:
                stats["hits"] += 1
                population = add_member(population, _individual(record, cache[fp]), evo.population)
            elif fp in pending:
                stats["hits"] += 1  # a twin of a child in this batch: it reuses that child's score
                waiting.append(record)
            else:
                pending[fp] = (record, lv)
                waiting.append(record)
    if pending:
        scores = ctx.proxy.score([lv for _, lv in pending.values()])
        for fp, f in zip(pending, scores.fitness):
            cache[fp] = float(f)
        stats["scored"] += len(pending)
        stats["nonfinite"] += int(scores.nonfinite.sum())
    for record in sorted(waiting, key=lambda r: r[0]):
        population = add_member(population, _individual(record, cache[record[4]]), evo.population)
    totals = {k: state.totals.get(k, 0) + stats[k] for k in TOTALS}
    new = dataclasses.replace(state, generation=state.generation + 1, births=births, population=population,
                              cache=cache, totals=totals)
    return new, dict(stats)


def _individual(record: tuple, fitness: float) -> Individual:
    birth, child, kind, parent_text, fp = record
    return Individual(child, fitness, fp, birth=birth, parent=parent_text, mutation=kind)


def run_funnel(state: SearchState, ctx: SearchContext) -> tuple[SearchState, dict]:
    """The best distinct programs go to meta-validation (those not scored there yet); the hall of fame is
    updated and ranked by meta-validation fitness (by proxy fitness when the funnel has no tasks)."""
    top = top_distinct(state.population, ctx.config.funnel.top_k)
    metaval_cache = dict(state.metaval_cache)
    new = [ind for ind in top if ind.fingerprint not in metaval_cache]
    nonfinite = 0
    if new:
        if ctx.metaval is not None:
            scores = ctx.metaval.score([remove_dead_code(i.program) for i in new])
            values, nonfinite = scores.fitness, int(scores.nonfinite.sum())
        else:
            values = [i.fitness for i in new]
        metaval_cache.update({i.fingerprint: float(v) for i, v in zip(new, values)})
    entries = [HallEntry(fingerprint=i.fingerprint, program=_live_text(i.program), fitness=i.fitness,
                         metaval=metaval_cache[i.fingerprint], generation=state.generation, parent=i.parent)
               for i in top]
    hall = update_hall(state.hall, entries, ctx.config.hall_of_fame.size)
    new_state = dataclasses.replace(state, metaval_cache=metaval_cache, hall=hall)
    return new_state, {"rescored": len(new), "metaval_nonfinite": nonfinite}


def maybe_restart(state: SearchState, ctx: SearchContext) -> tuple[SearchState, bool]:
    """Tracks the hall of fame's best; after ``restart.patience`` generations without improvement the whole
    population becomes copies of the best program (fresh ages)."""
    best = state.hall[0].metaval
    if best < state.best_score:
        return dataclasses.replace(state, best_score=best, best_generation=state.generation), False
    patience = ctx.config.restart.patience
    if not patience or state.generation - state.best_generation < patience:
        return state, False
    entry = state.hall[0]
    program = parse(entry.program, max_len=10**6)
    P = ctx.config.evolution.population
    population = [Individual(program, entry.fitness, entry.fingerprint, birth=state.births + i, mutation="restart")
                  for i in range(P)]
    cache = {**state.cache, entry.fingerprint: entry.fitness}
    return dataclasses.replace(state, population=population, births=state.births + P, cache=cache,
                               best_generation=state.generation, restarts=state.restarts + 1), True


# ----------------------------------------------------------------------------------------------------------
# Constant refinement with an evosax strategy
# ----------------------------------------------------------------------------------------------------------
REFINE_SALT = 7_919


def _strategy(cfg: RefineSection, popsize: int, dim: int):
    """An evosax strategy over ``dim`` log2 scales (the RL search's factory; std set to ``cfg.sigma``)."""
    from discover.searches.rl.search import ESSection, make_strategy  # late: pulls in the RL stack

    es = ESSection(strategy=cfg.strategy, popsize=popsize, sigma=cfg.sigma, lr=cfg.lr,
                   antithetic=popsize % 2 == 0, rank_shaping=True)
    strategy = make_strategy(es, jnp.zeros((dim,), jnp.float32))
    params = strategy.default_params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=cfg.sigma)
    return strategy, params


def refine_program(program: Program, fitness: float, ctx: SearchContext, key: jax.Array) -> tuple[Program, float]:
    """The best constants an ES finds for ``program`` on the proxy tasks (``program`` itself if none is better)."""
    cfg = ctx.config.refine
    dim = len(constant_slots(program))
    if dim == 0:
        return program, fitness
    popsize = ctx.proxy.batch
    strategy, params = _strategy(cfg, popsize, dim)
    ask, tell = strategy.ask, strategy.tell  # eager: a few generations cost less than compiling them
    key, k_init = jax.random.split(key)
    es_state = strategy.init(k_init, jnp.zeros((dim,), jnp.float32), params)
    best, best_fitness = program, fitness
    for _ in range(cfg.generations):
        key, k_ask, k_tell = jax.random.split(key, 3)
        x, es_state = ask(k_ask, es_state, params)
        candidates = [scale_constants(program, row) for row in np.asarray(x, np.float64)]
        scores = ctx.proxy.score(candidates).fitness
        i = int(np.argmin(scores))
        if scores[i] < best_fitness:
            best, best_fitness = candidates[i], float(scores[i])
        es_state, _ = tell(k_tell, x, jnp.asarray(scores, jnp.float32), es_state, params)
    return best, best_fitness


def run_refinement(state: SearchState, ctx: SearchContext) -> tuple[SearchState, list[dict]]:
    """Refines the constants of the hall of fame's best ``refine.top_k`` programs; improved ones join it."""
    cfg = ctx.config.refine
    report, entries = [], []
    cache, metaval_cache = dict(state.cache), dict(state.metaval_cache)
    for rank, entry in enumerate(state.hall[: cfg.top_k]):
        program = parse(entry.program, max_len=10**6)
        key = jax.random.fold_in(jax.random.key(ctx.config.seed), REFINE_SALT + rank)
        refined, fitness = refine_program(program, entry.fitness, ctx, key)
        report.append({"from": entry.fingerprint, "fitness_before": entry.fitness, "fitness_after": fitness})
        if refined is program:
            continue
        _, (fp,), _ = analyse([refined], ctx.max_len, ctx.n_state, pad_to=ctx.config.evolution.batch)
        cache.setdefault(fp, fitness)
        if fp not in metaval_cache:
            metaval_cache[fp] = float(ctx.metaval.score([refined]).fitness[0]) if ctx.metaval else fitness
        entries.append(HallEntry(fingerprint=fp, program=str(refined), fitness=cache[fp], metaval=metaval_cache[fp],
                                 generation=state.generation, parent=entry.program, origin="refined"))
        report[-1]["metaval_after"] = metaval_cache[fp]
    hall = update_hall(state.hall, entries, ctx.config.hall_of_fame.size)
    return dataclasses.replace(state, hall=hall, cache=cache, metaval_cache=metaval_cache, refined=True), report


# ----------------------------------------------------------------------------------------------------------
# Logging and outputs
# ----------------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.5g}"


def top_programs_markdown(state: SearchState, k: int) -> str:
    """The ``k`` best distinct programs of the population: code, fitness, and the diff against the parent."""
    parts = []
    for rank, ind in enumerate(top_distinct(state.population, k), 1):
        live = _live_text(ind.program)
        metaval = state.metaval_cache.get(ind.fingerprint)
        extra = [f"fitness {_fmt(ind.fitness)}" + (f", meta-validation {_fmt(metaval)}" if metaval is not None else "")
                 + f", mutation `{ind.mutation}`, born {ind.birth}"]
        diff = program_diff(ind.parent, live)
        if diff:
            extra.append(f"diff against the parent:\n\n```diff\n{diff}\n```")
        parts.append(program_markdown(live, title=f"#{rank}", extra="\n\n".join(extra)))
    return "\n\n".join(parts)


def hall_markdown(hall: Sequence[HallEntry]) -> str:
    parts = []
    for rank, e in enumerate(hall, 1):
        extra = f"meta-validation {_fmt(e.metaval)}, proxy {_fmt(e.fitness)}, generation {e.generation}, {e.origin}"
        diff = program_diff(e.parent, e.program)
        if diff:
            extra += f"\n\ndiff against the parent:\n\n```diff\n{diff}\n```"
        parts.append(program_markdown(e.program, title=f"#{rank}", extra=extra))
    return "\n\n".join(parts)


def log_generation(tb: TBLogger, state: SearchState, stats: dict, seconds: float, ctx: SearchContext) -> dict:
    g = state.generation
    fitness = np.array([i.fitness for i in state.population])
    children = max(stats.get("children", 0), 1)
    totals = state.totals
    scalars = {
        "fitness/best": fitness.min(),
        "fitness/median": np.median(fitness),
        "fitness/hall_of_fame_best": state.hall[0].fitness,
        "fitness/metaval_best": state.hall[0].metaval,
        "cache/hit_rate": stats.get("hits", 0) / children,
        "cache/hit_rate_total": totals["hits"] / max(totals["children"], 1),
        "cache/size": len(state.cache),
        "children/count": stats.get("children", 0),
        "children/scored": stats.get("scored", 0),
        "children/invalid": stats.get("invalid", 0),
        "children/nonfinite": stats.get("nonfinite", 0),
        "children/dead_share": stats.get("dead_statements", 0) / max(stats.get("statements", 0), 1),
        "population/distinct": len({i.fingerprint for i in state.population}),
        "search/restarts": state.restarts,
        "speed/candidates_per_s": stats.get("scored", 0) / max(seconds, 1e-9),
        "speed/children_per_s": stats.get("children", 0) / max(seconds, 1e-9),
        "speed/generation_s": seconds,
    }
    tb.scalars(g, scalars)
    tb.histogram("fitness/population", fitness[fitness < ctx.config.fitness.worst], g)
    if g % ctx.config.log.text_every == 0 or g == ctx.config.evolution.generations:
        tb.text("programs/top", top_programs_markdown(state, ctx.config.log.top_programs), g)
        tb.text("programs/best", hall_markdown(state.hall[:1]), g)
    return scalars


def best_program_text(config: SearchConfig, entry: HallEntry) -> str:
    program = parse(entry.program, max_len=10**6).replace(name="discovered")
    header = [
        (f"# Discovered by `discover search` (run '{config.name}', seed {config.seed}, "
         f"generation {entry.generation}, {entry.origin})."),
        (f"# Fitness (val loss / tuned AdamW's, lower is better): proxy {_fmt(entry.fitness)}, "
         f"meta-validation {_fmt(entry.metaval)}."),
        f"# Proxy tasks: {', '.join(config.fitness.tasks)}; meta-validation: {', '.join(config.funnel.tasks) or '-'}.",
    ]
    return "\n".join(header) + "\n" + str(program)


def write_outputs(run_dir: RunDir, config: SearchConfig, state: SearchState) -> None:
    run_dir.write_text("best.py", best_program_text(config, state.hall[0]))
    run_dir.write_json("hall_of_fame.json", {
        "ranked_by": "meta-validation fitness" if config.funnel.tasks else "proxy fitness",
        "entries": [e.to_json() for e in state.hall],
    })


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------
class _CompileCounter:
    """Counts XLA compilations (JAX's backend-compile events) while active."""

    count = 0
    _installed = False

    @classmethod
    def install(cls) -> None:
        if not cls._installed:
            from jax._src import dispatch

            event = getattr(dispatch, "BACKEND_COMPILE_EVENT", "/jax/core/compile/backend_compile_duration")

            def listener(name, *_args, **_kw):
                if name == event:
                    cls.count += 1

            jax.monitoring.register_event_duration_secs_listener(listener)
            cls._installed = True


def _save(checkpointer: Checkpointer, step: int, state: SearchState) -> None:
    arrays, meta = state_to_checkpoint(state)
    checkpointer.save(step, arrays, meta)


def run_search(config: SearchConfig, run_dir: RunDir, resume: bool = False, progress: Any = None) -> dict:
    """Runs (or, with ``resume``, continues from the newest readable checkpoint) an update-rule search, writing
    into ``run_dir``. ``progress``: an optional ``rich.progress.Progress``. SIGINT/SIGTERM checkpoint and stop
    after the current generation (``summary["interrupted"]``). Returns a summary dict."""
    started = time.time()
    _CompileCounter.install()
    compiles_before = _CompileCounter.count
    evo = config.evolution
    task = None
    if progress is not None:
        task = progress.add_task(f"search {config.name}: AdamW references, compilation", total=evo.generations)
    references = load_or_compute_references(config, run_dir)
    ctx = make_context(config, references)

    checkpointer = Checkpointer(run_dir.checkpoint_dir, max_to_keep=config.checkpoint.max_to_keep)
    state, resumed_from = None, None
    if resume and checkpointer.latest_step() is not None:
        _, arrays, meta = checkpointer.restore(_template(config))
        state = state_from_checkpoint(arrays, meta)
        resumed_from = state.generation

    tb = TBLogger(run_dir, purge_step=None if resumed_from is None else resumed_from + 1)
    if state is None:
        tb.text("config", "```yaml\n" + dump_config(config) + "```", 0)
        state = initial_state(ctx)
        tb.text("programs/seeds", hall_markdown(state.hall), 0)
        _save(checkpointer, 0, state)

    if progress is not None:
        progress.update(task, completed=state.generation, description=f"search {config.name}")

    interrupted = False
    last = {}
    with GracefulExit(notice=True) as stop:
        while state.generation < evo.generations:
            t0 = time.time()
            state, stats = run_generation(state, ctx)
            g = state.generation
            # Without meta-validation tasks the funnel costs nothing: the hall of fame follows every generation.
            if g % config.funnel.every == 0 or g == evo.generations or ctx.metaval is None:
                state, funnel_info = run_funnel(state, ctx)
                stats.update(funnel_info)
                state, restarted = maybe_restart(state, ctx)
                stats["restarted"] = int(restarted)
            seconds = time.time() - t0
            last = log_generation(tb, state, stats, seconds, ctx)
            if progress is not None:
                progress.update(task, advance=1, description=(
                    f"gen {g}/{evo.generations}  best {last['fitness/best']:.4f}  "
                    f"hall {state.hall[0].metaval:.4f}  {last['speed/candidates_per_s']:.1f} cand/s"))
            if g % config.checkpoint.every == 0 or g == evo.generations or stop.requested:
                _save(checkpointer, g, state)
            if g % config.funnel.every == 0:
                write_outputs(run_dir, config, state)
            if stop.requested and g < evo.generations:
                interrupted = True
                break

        refinement = []
        if not interrupted and not state.refined and config.refine.top_k > 0:
            state, refinement = run_refinement(state, ctx)
            refined = [e for e in state.hall if e.origin == "refined"]
            if refined:
                tb.text("programs/refined", hall_markdown(refined), state.generation)
            _save(checkpointer, evo.generations + 1, state)
    checkpointer.close()

    totals = state.totals
    best = state.hall[0]
    summary = {
        "name": config.name,
        "generations_done": state.generation,
        "generations": evo.generations,
        "best_fitness": best.fitness,
        "best_metaval": best.metaval,
        "best_program": best.program,
        "seed_fitness": state.seed_fitness,
        "seed_metaval": state.seed_metaval,
        "children": totals["children"],
        "candidates_scored": totals["scored"],
        "cache_hit_rate": totals["hits"] / max(totals["children"], 1),
        "dead_share": totals["dead_statements"] / max(totals["statements"], 1),
        "invalid": totals["invalid"],
        "nonfinite": totals["nonfinite"],
        "restarts": state.restarts,
        "refinement": refinement,
        "trainer_compiles": ctx.proxy.compiles() + (ctx.metaval.compiles() if ctx.metaval else 0),
        "xla_compiles_this_run": _CompileCounter.count - compiles_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if not interrupted:
        write_outputs(run_dir, config, state)
        tb.text("hall_of_fame", hall_markdown(state.hall), state.generation)
        tb.hparams(flat_config(config), {"best_fitness": best.fitness, "best_metaval": best.metaval,
                                         "cache_hit_rate": summary["cache_hit_rate"]})
    tb.close()
    summary.update(interrupted=interrupted, resumed_from=resumed_from, wall_time_s=time.time() - started,
                   run_dir=str(run_dir.path))
    if not interrupted:
        run_dir.write_json("results.json", {"config": config_to_dict(config), **summary})
    return summary


def resume_config(run_dir: RunDir) -> SearchConfig:
    """The config a run directory was started with (ConfigError if it no longer validates)."""
    return load_config(SearchConfig, run_dir.config_path)


__all__ = [
    "ConfigError",
    "Scorer",
    "SearchConfig",
    "aggregate",
    "initial_state",
    "load_search_config",
    "new_run_dir",
    "resume_config",
    "run_funnel",
    "run_generation",
    "run_search",
]
