"""One generation of regularized evolution, the meta-validation funnel and restarts (see the package doc)."""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import math
import warnings

import numpy as np

from discover.infra.rundir import RunDir
from discover.language.analysis import remove_dead_code
from discover.language.program import parse
from discover.searches.update_rules.config import SearchConfig
from discover.searches.update_rules.state import TOTALS, SearchState
from discover.shared.evolution import (
    HallEntry,
    Individual,
    add_member,
    analyse,
    batch_fingerprints,
    dead_code,
    live_text,
    make_child,
    top_distinct,
    tournament,
    update_hall,
)
from discover.shared.profile import Profile
from discover.shared.scoring import Scorer, chosen_multipliers, compute_references, with_steps
from envs import tasks as task_registry
from envs.task_pool import sample_loss_scales, sample_task_pool
from search_spaces.update_rules import UpdateRuleSpace, seed

LOSS_SCALE_SALT = 0x5CA1E


def proxy_tasks(config: SearchConfig) -> list[task_registry.Task]:
    """The proxy tasks: a pool sampled from envs.task_pool (seeded by the run's seed, so a resume samples the
    same), or the named tasks; trained ``fitness.steps`` steps when given."""
    fitness = config.fitness
    tasks = sample_task_pool(config.seed, fitness.pool) if fitness.pool else \
        [task_registry.get_task(n) for n in fitness.tasks]
    return [task_registry.with_lr_schedule(with_steps(t, fitness.steps), fitness.lr_schedule) for t in tasks]


def funnel_tasks(config: SearchConfig) -> list[task_registry.Task]:
    """The meta-validation tasks, trained ``funnel.steps`` steps when given, under the run's lr schedule."""
    return [task_registry.with_lr_schedule(with_steps(task_registry.get_task(n), config.funnel.steps),
                                           config.fitness.lr_schedule) for n in config.funnel.tasks]


def generation_tasks(config: SearchConfig, n_tasks: int, generation: int) -> tuple[list[int], list[float]]:
    """The proxy tasks generation ``generation`` scores its children on (``fitness.per_generation`` of them,
    rotating through the list) and each one's loss scale (log-uniform in ``fitness.loss_scale_range``, drawn
    from the run's seed and the generation: a resumed run draws the same)."""
    k = min(config.fitness.per_generation or n_tasks, n_tasks)
    indices = [(generation * k + i) % n_tasks for i in range(k)]
    scale_range = config.fitness.loss_scale_range
    if scale_range is None:
        return indices, [1.0] * k
    rng = np.random.default_rng([config.seed, generation, LOSS_SCALE_SALT])
    return indices, [float(x) for x in sample_loss_scales(rng, (k,), *scale_range)]


def load_or_compute_references(config: SearchConfig, run_dir: RunDir) -> dict:
    """The AdamW references of the run (from the run directory on resume, so a resume uses the same numbers)."""
    if run_dir.file("references.json").is_file():
        return run_dir.read_json("references.json")
    cache = config.fitness.reference_cache or (run_dir.path.parent / ".baselines.json")
    refs = {
        "proxy": compute_references(proxy_tasks(config), None, config.fitness.train_seeds, cache),
        "metaval": compute_references(funnel_tasks(config), None, config.funnel.train_seeds, cache),
    }
    run_dir.write_json("references.json", refs)
    return refs
# ----------------------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SearchContext:
    config: SearchConfig
    space: UpdateRuleSpace
    proxy: Scorer
    metaval: Scorer | None  # None: the funnel ranks by proxy fitness
    profile: Profile = dataclasses.field(default_factory=lambda: Profile(enabled=False))  # --profile

    @property
    def max_len(self) -> int:
        return self.space.max_len

    @property
    def n_state(self) -> int:
        return max(1, self.space.n_state)


def _scorer_settings(config: SearchConfig) -> dict:
    """What the proxy and meta-validation scorers of a run share."""
    space = config.space.space()
    return {"worst": config.fitness.worst, "max_len": space.max_len, "n_state": max(1, space.n_state),
            "needs_hessian": space.allow_h, "devices": config.devices,
            "lr_multipliers": tuple(config.fitness.lr_multipliers)}


def metaval_scorer(config: SearchConfig, references: dict) -> Scorer | None:
    """The run's meta-validation scorer against its saved references (before AdamW is swept: ``make_context``);
    None without funnel tasks."""
    if not config.funnel.tasks:
        return None
    return Scorer(tasks=funnel_tasks(config), references=references["metaval"], train_seeds=config.funnel.train_seeds,
                  batch=config.funnel.top_k, aggregate=config.funnel.aggregate, **_scorer_settings(config))


def make_context(config: SearchConfig, references: dict, profile: Profile | None = None) -> SearchContext:
    proxy = Scorer(tasks=proxy_tasks(config), references=references["proxy"],
                   train_seeds=config.fitness.train_seeds, batch=config.evolution.batch,
                   loss_scale=config.fitness.loss_scale_range is not None, **_scorer_settings(config))
    profile = profile or Profile(enabled=False)
    with profile.section("training"):  # AdamW over the sweep: the first call of each task's trainer
        proxy = swept_against_adamw(proxy)
    metaval = metaval_scorer(config, references)
    if metaval is not None:
        with profile.section("training"):
            metaval = swept_against_adamw(metaval)
    return SearchContext(config=config, space=config.space.space(), proxy=proxy, metaval=metaval, profile=profile)




def initial_state(ctx: SearchContext) -> SearchState:
    """The seed population (seeds cycled), scored; the funnel runs once on it."""
    config = ctx.config
    P = config.evolution.population
    names = list(dict.fromkeys(config.start_from))
    with ctx.profile.section("fingerprint"):
        live, fps, _ = analyse([seed(n) for n in names], ctx.max_len, ctx.n_state, pad_to=config.evolution.batch)
    fp_of = dict(zip(names, fps))
    unique = list(dict.fromkeys(fps))
    tasks, scales = generation_tasks(config, len(ctx.proxy.tasks), 0)
    with ctx.profile.section("training"):
        scores = ctx.proxy.score([live[fps.index(fp)] for fp in unique], tasks, scales)
    cache = {fp: float(f) for fp, f in zip(unique, scores.fitness)}
    lr_choice = dict(zip(unique, chosen_multipliers(scores)))
    chosen = [config.start_from[i % len(config.start_from)] for i in range(P)]
    population = [Individual(seed(n), cache[fp_of[n]], fp_of[n], birth=i) for i, n in enumerate(chosen)]
    totals = dict.fromkeys(TOTALS, 0)
    totals["scored"] = len(unique)
    totals["nonfinite"] = int(scores.nonfinite.sum())
    state = SearchState(
        generation=0, births=P, population=population, cache=cache, metaval_cache={}, hall=[], totals=totals,
        best_score=math.inf, best_generation=0, restarts=0, refined=False,
        rng=np.random.default_rng(config.seed), seed_fitness=float(min(cache.values())), lr_choice=lr_choice,
    )
    state, _ = run_funnel(state, ctx)
    state.seed_metaval = min(e.metaval for e in state.hall)
    state.best_score = state.hall[0].metaval
    return state


def swept_against_adamw(scorer: Scorer) -> Scorer:
    """``scorer`` compared with AdamW tuned over its own lr sweep (when AdamW fits the search space's encoding:
    otherwise with the cached tuned reference alone)."""
    adamw = seed("adamw")
    if len(adamw) > scorer.max_len or len(adamw.state) > scorer.n_state:
        return scorer
    swept = scorer.swept(adamw)
    if scorer.first_seed == 0:  # the cached reference was trained on these seeds: they must agree
        _check_references(swept)
    return swept


def _check_references(scorer: Scorer) -> None:
    """The references are AdamW's best over the sweep (:meth:`Scorer.swept`). At multiplier 1.0 AdamW must give
    the cached tuned reference's own val loss (same trainer, seeds and lr): any other value means the cached
    reference does not describe the task (e.g. a stale cache entry), so say so."""
    for task in scorer.tasks:
        ref = scorer.references[task.name]
        at_1x, cached = ref.get("val_loss_at_1x"), ref["tuned_val_loss"]
        if at_1x is not None and abs(at_1x - cached) > 1e-3 * abs(cached):
            warnings.warn(
                f"AdamW at its tuned lr gives val loss {at_1x:.6g} on {task.name}, its cached reference says "
                f"{cached:.6g}: the reference cache (fitness.reference_cache) may be stale (a task changed "
                "without envs.tasks.TASK_CODE_VERSION being bumped: delete the cache file to recompute it), or "
                "the task's training amplifies float rounding (fitness compares with AdamW tuned over the same "
                "sweep through the same interpreter either way)",
                stacklevel=3)


def run_generation(state: SearchState, ctx: SearchContext) -> tuple[SearchState, dict]:
    """One generation (see the module docstring); returns the new state and its statistics."""
    evo, section = ctx.config.evolution, ctx.profile.section
    rng = state.rng
    with section("cache"):
        population, births, cache = list(state.population), state.births, dict(state.cache)
        lr_choice = dict(state.lr_choice)
    pending: dict[str, tuple] = {}  # fingerprint -> first novel child (scored below)
    waiting: list[tuple] = []  # (birth, child, kind, parent live text, fingerprint) joining after scoring
    stats = collections.Counter()
    for _ in range(evo.max_rounds):
        need = evo.batch - len(pending)
        if need <= 0:
            break
        made = []
        with section("mutation"):
            for _ in range(need):
                parent = tournament(population, rng, evo.tournament)
                child, kind, invalid = make_child(parent.program, rng, ctx.space, evo.mutation, evo.max_tries)
                stats["invalid"] += invalid
                made.append((child, kind, live_text(parent.program)))
            live, dead = dead_code([c for c, _, _ in made])
        with section("fingerprint"):
            fps = batch_fingerprints(live, ctx.max_len, ctx.n_state, evo.batch)
        with section("cache"):
            for (child, kind, parent_text), lv, fp, d in zip(made, live, fps, dead):
                stats["children"] += 1
                stats["dead_statements"] += d
                stats["statements"] += len(child)
                record = (births, child, kind, parent_text, fp)
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
        tasks, scales = generation_tasks(ctx.config, len(ctx.proxy.tasks), state.generation + 1)
        with section("training"):
            scores = ctx.proxy.score([lv for _, lv in pending.values()], tasks, scales)
        for fp, f, row in zip(pending, scores.fitness, chosen_multipliers(scores)):
            cache[fp] = float(f)
            lr_choice[fp] = row
        stats["scored"] += len(pending)
        stats["nonfinite"] += int(scores.nonfinite.sum())
    with section("cache"):
        for record in sorted(waiting, key=lambda r: r[0]):
            population = add_member(population, _individual(record, cache[record[4]]), evo.population)
    totals = {k: state.totals.get(k, 0) + stats[k] for k in TOTALS}
    new = dataclasses.replace(state, generation=state.generation + 1, births=births, population=population,
                              cache=cache, totals=totals, lr_choice=lr_choice)
    return new, dict(stats)


def _individual(record: tuple, fitness: float) -> Individual:
    birth, child, kind, parent_text, fp = record
    return Individual(child, fitness, fp, birth=birth, parent=parent_text, mutation=kind)


def run_funnel(state: SearchState, ctx: SearchContext) -> tuple[SearchState, dict]:
    """The best distinct programs go to meta-validation (those not scored there yet); the hall of fame is
    updated and ranked by meta-validation fitness (by proxy fitness when the funnel has no tasks)."""
    top = top_distinct(state.population, ctx.config.funnel.top_k)
    metaval_cache, metaval_lr = dict(state.metaval_cache), dict(state.metaval_lr)
    new = [ind for ind in top if ind.fingerprint not in metaval_cache]
    nonfinite = 0
    if new:
        if ctx.metaval is not None:
            programs = [remove_dead_code(i.program) for i in new]
            with ctx.profile.section("training"):
                scores = ctx.metaval.score(programs)
            values, nonfinite = scores.fitness, int(scores.nonfinite.sum())
            metaval_lr.update({i.fingerprint: row for i, row in zip(new, chosen_multipliers(scores))})
        else:
            values = [i.fitness for i in new]
        metaval_cache.update({i.fingerprint: float(v) for i, v in zip(new, values)})
    chosen = metaval_lr if ctx.metaval is not None else state.lr_choice
    entries = [HallEntry(fingerprint=i.fingerprint, program=live_text(i.program), fitness=i.fitness,
                         metaval=metaval_cache[i.fingerprint], generation=state.generation, parent=i.parent,
                         lr_multipliers=chosen.get(i.fingerprint))
               for i in top]
    hall = update_hall(state.hall, entries, ctx.config.hall_of_fame.size)
    new_state = dataclasses.replace(state, metaval_cache=metaval_cache, metaval_lr=metaval_lr, hall=hall)
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
