"""The distillation search's steps: the start population, one generation of regularized evolution, the RL
funnel and the constants' refinement with an evosax strategy."""

from __future__ import annotations

import collections
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from discover.language.drift_program import DriftProgram, fingerprints, remove_dead_code
from discover.language.program import ProgramError
from discover.searches.distill.config import DistillConfig
from discover.searches.distill.fitness import FitScorer, RLCheck
from discover.searches.distill.mutation import DriftSpace, fit_taylor, mutate, start_program
from discover.searches.distill.samples import Source
from discover.searches.distill.state import TOTALS, DistillState, HallEntry, Member
from discover.shared.es import make_strategy, strategy_params
from discover.shared.evolution import (
    add_member,
    scale_constants,
    top_distinct,
    tournament,
    update_hall,
)

REFINE_SALT = 7_919


@dataclasses.dataclass
class Context:
    config: DistillConfig
    space: DriftSpace
    source: Source
    fit: FitScorer
    holdout: FitScorer
    rl: RLCheck | None  # None: no RL check (funnel.top_k = 0)
    network_score: float  # the network's normalized return on the RL check's seeds (nan without a check)

    def passes(self, score: float) -> bool:
        """Whether a normalized return reaches ``funnel.min_return`` x the network's."""
        if not math.isfinite(score):
            return False
        net, share = self.network_score, self.config.funnel.min_return
        if not math.isfinite(net):
            return True
        return score >= net - (1.0 - share) * abs(net)


def analyse(programs: list[DriftProgram], ctx: Context) -> tuple[list[DriftProgram], list[str]]:
    """(live programs, fingerprints) in one batched call (padded to the batch: it compiles once)."""
    live = [remove_dead_code(p) for p in programs]
    return live, fingerprints(live, ctx.space.max_len, ctx.config.space.cap, pad_to=ctx.config.evolution.batch)


def initial_state(ctx: Context) -> DistillState:
    """The start programs (cycled to fill the population), scored; the funnel runs once."""
    config = ctx.config
    names = list(dict.fromkeys(config.start_from))
    programs = [start_program(n) for n in names]
    if "taylor" in names:
        programs[names.index("taylor")] = taylor_start(ctx)
    live, fps = analyse(programs, ctx)
    scores = ctx.fit.score(live)
    cache = {fp: float(s) for fp, s in zip(fps, scores)}
    fp_of = dict(zip(names, fps))
    population = [Member(program=programs[names.index(n)], fitness=cache[fp_of[n]], fingerprint=fp_of[n], birth=i)
                  for i, n in enumerate(config.start_from[i % len(config.start_from)]
                                        for i in range(config.evolution.population))]
    totals = dict.fromkeys(TOTALS, 0)
    totals["scored"] = len(set(fps))
    state = DistillState(generation=0, births=len(population), population=population, cache=cache, rl_cache={},
                         hall=[], totals=totals, rng=np.random.default_rng(config.seed),
                         start_fitness=float(min(cache.values())))
    return run_funnel(state, ctx)[0]


def taylor_start(ctx: Context) -> DriftProgram:
    """The ``taylor`` start program fitted to the network's slope on the recorded states (all samples if none
    was recorded), with PPO's drift added for a network trained with ``ppo_init`` when the space has its ops."""
    visited = ctx.fit.visited if ctx.fit.visited.any() else np.ones(len(ctx.fit.value), bool)
    r, a, n, _ = (x[visited] for x in ctx.fit.inputs)
    family = ctx.source.family.config
    if family.ppo_init:
        try:
            return ctx.space.parse(str(fit_taylor(r, a, n, ctx.fit.slope[visited], family.ppo_clip)))
        except ProgramError:  # clip & co. are not in space.ops: the learned part alone
            pass
    return fit_taylor(r, a, n, ctx.fit.slope[visited])


def run_generation(state: DistillState, ctx: Context) -> tuple[DistillState, dict]:
    """Tournament, mutation, analysis; novel children scored together; each child kills the oldest member."""
    evo = ctx.config.evolution
    rng, population, births, cache = state.rng, list(state.population), state.births, dict(state.cache)
    pending: dict[str, DriftProgram] = {}  # fingerprint -> live program to score
    waiting: list[tuple] = []  # (birth, child, fingerprint, parent text, mutation)
    stats = collections.Counter()
    for _ in range(evo.max_rounds):
        need = evo.batch - len(pending)
        if need <= 0:
            break
        made = []
        for _ in range(need):
            parent = tournament(population, rng, evo.tournament)
            child, kind, invalid = mutate(parent.program, rng, ctx.space, evo.mutation, evo.max_tries)
            stats["invalid"] += invalid
            if kind != "none":
                made.append((child, kind, parent))
        live, fps = analyse([c for c, _, _ in made], ctx)
        for (child, kind, parent), lv, fp in zip(made, live, fps):
            stats["children"] += 1
            record = (births, child, fp, str(remove_dead_code(parent.program)), kind)
            births += 1
            if fp in cache:
                stats["hits"] += 1
                population = add_member(population, _member(record, cache[fp]), evo.population)
            else:
                stats["hits"] += fp in pending
                pending.setdefault(fp, lv)
                waiting.append(record)
    if pending:
        scores = ctx.fit.score(list(pending.values()))
        cache.update({fp: float(s) for fp, s in zip(pending, scores)})
        stats["scored"] += len(pending)
        stats["nonfinite"] += int(np.sum(scores >= ctx.config.fitness.worst))
    for record in sorted(waiting, key=lambda r: r[0]):
        population = add_member(population, _member(record, cache[record[2]]), evo.population)
    totals = {k: state.totals.get(k, 0) + stats[k] for k in TOTALS}
    best = min(m.fitness for m in population)
    new = dataclasses.replace(state, generation=state.generation + 1, births=births, population=population,
                              cache=cache, totals=totals, history=[*state.history, best])
    return new, {**stats, "best": best, "median": float(np.median([m.fitness for m in population]))}


def _member(record: tuple, fitness: float) -> Member:
    birth, child, fp, parent, kind = record
    return Member(program=child, fitness=fitness, fingerprint=fp, birth=birth, parent=parent, mutation=kind)


def _rl_entries(candidates: list[tuple[str, DriftProgram, float, str | None, str]], state: DistillState,
                ctx: Context) -> tuple[list[HallEntry], dict, int]:
    """Hall entries for (fingerprint, live program, fitness, parent, origin), RL-checking the new ones."""
    rl_cache, checked = dict(state.rl_cache), 0
    entries = []
    for fp, program, fitness, parent, origin in candidates:
        rl = passed = None
        if ctx.rl is not None:
            if fp not in rl_cache:
                rl_cache[fp] = max(ctx.rl.score(program, ctx.space.max_len), -1e9)
                checked += 1
            rl = rl_cache[fp]
            passed = ctx.passes(rl)
        entries.append(HallEntry(fingerprint=fp, program=str(program), fitness=fitness, generation=state.generation,
                                 rl=rl, passed=passed, parent=parent, origin=origin))
    return entries, rl_cache, checked


def run_funnel(state: DistillState, ctx: Context) -> tuple[DistillState, dict]:
    """The best distinct programs (``funnel.top_k``; the hall's size without an RL check) join the hall of
    fame, RL-checked once each."""
    k = ctx.config.funnel.top_k if ctx.rl is not None else ctx.config.hall_of_fame.size
    top = top_distinct(state.population, k)
    candidates = [(m.fingerprint, remove_dead_code(m.program), m.fitness, m.parent, "evolution") for m in top]
    entries, rl_cache, checked = _rl_entries(candidates, state, ctx)
    totals = {**state.totals, "rl_checks": state.totals.get("rl_checks", 0) + checked}
    hall = update_hall(state.hall, entries, ctx.config.hall_of_fame.size)
    return dataclasses.replace(state, hall=hall, rl_cache=rl_cache, totals=totals), {"rl_checked": checked}


# ----------------------------------------------------------------------------------------------------------
# Constants refined with an evosax strategy (fitness 1, the same batched scorer)
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _refiner(name: str, popsize: int, dim: int, sigma: float, lr: float):
    """``(strategy, params, init, ask, tell)`` with jitted methods: built and compiled once per run and number of
    constants (evosax's methods retrace for every new strategy object)."""
    strategy = make_strategy(name, popsize, jnp.zeros((dim,), jnp.float32), sigma=sigma, lr=lr,
                             antithetic=popsize % 2 == 0, rank_shaping=True)
    params = strategy_params(strategy, sigma)
    return strategy, params, jax.jit(strategy.init), jax.jit(strategy.ask), jax.jit(strategy.tell)


def refine_program(program: DriftProgram, fitness: float, ctx: Context, key: jax.Array) -> tuple[DriftProgram, float]:
    """The best log2 scales of ``program``'s constants an ES finds (``program`` itself if none is better). The
    constants 0, 1 and -1 are structural (the 1 of ``r - 1``) and kept; mutation may still change them. With
    ``refine.tie_equal``, equal constants share one scale (DPO's alpha in ``x / alpha`` and ``alpha tanh``: the
    cancellation that makes its drift third order at r = 1 survives every step)."""
    cfg = ctx.config.refine
    base = np.array(program.constants, np.float64)
    free = np.flatnonzero(~np.isin(base, (0.0, 1.0, -1.0)))
    if len(free) == 0:
        return program, fitness
    # the ES coordinate of each free constant
    coordinate = np.unique(base[free], return_inverse=True)[1] if cfg.tie_equal else np.arange(len(free))
    # padded to a power of two (coordinates that change nothing: free for Open_ES, whose coordinates are
    # independent), so that the ES compiles for a few sizes per run, not for every number of constants
    dim = max(2, 1 << int(coordinate.max()).bit_length())
    popsize = ctx.fit.batch
    strategy, params, init, ask, tell = _refiner(cfg.strategy, popsize, dim, cfg.sigma, cfg.lr)

    def scales(x) -> np.ndarray:  # [rows, dim] -> log2 scales of every constant [rows, all]
        out = np.zeros((len(x), len(base)))
        out[:, free] = np.clip(np.asarray(x, np.float64), -60.0, 60.0)[:, coordinate]
        return out

    def score(log2_scales: np.ndarray) -> np.ndarray:
        return ctx.fit.score_constants(program, (base[None] * 2.0 ** log2_scales).astype(np.float32))

    key, k_init = jax.random.split(key)
    es_state = init(k_init, jnp.zeros((dim,), jnp.float32), params)
    best_x, best_fitness = None, fitness
    for _ in range(cfg.generations):
        key, k_ask, k_tell = jax.random.split(key, 3)
        x, es_state = ask(k_ask, es_state, params)
        rows = scales(x)
        values = score(rows)
        i = int(np.argmin(values))
        if values[i] < best_fitness:
            best_x, best_fitness = rows[i], float(values[i])
        es_state, _ = tell(k_tell, x, jnp.asarray(values, jnp.float32), es_state, params)
    mean = np.repeat(scales(np.asarray(strategy.get_mean(es_state))[None]), popsize, axis=0)
    value = float(score(mean)[0])  # near convergence the mean beats its samples
    if value < best_fitness:
        best_x, best_fitness = mean[0], value
    if best_x is None:
        return program, fitness
    refined = scale_constants(program, best_x)
    return refined, float(ctx.fit.score([refined])[0])


def run_refinement(state: DistillState, ctx: Context) -> tuple[DistillState, list[dict]]:
    """Refines the constants of the hall's best ``refine.top_k`` programs; improved ones join the hall (RL-checked)."""
    report, candidates = [], []
    cache = dict(state.cache)
    for rank, entry in enumerate(state.hall[: ctx.config.refine.top_k]):
        program = ctx.space.parse(entry.program)
        key = jax.random.fold_in(jax.random.key(ctx.config.seed), REFINE_SALT + rank)
        refined, fitness = refine_program(program, entry.fitness, ctx, key)
        report.append({"from": entry.fingerprint, "fitness_before": entry.fitness, "fitness_after": fitness})
        if refined is program or fitness >= entry.fitness:
            continue
        (live,), (fp,) = analyse([refined], ctx)
        cache.setdefault(fp, fitness)
        candidates.append((fp, live, cache[fp], entry.program, "refined"))
    entries, rl_cache, checked = _rl_entries(candidates, state, ctx)
    totals = {**state.totals, "rl_checks": state.totals.get("rl_checks", 0) + checked}
    hall = update_hall(state.hall, entries, ctx.config.hall_of_fame.size)
    return dataclasses.replace(state, hall=hall, cache=cache, rl_cache=rl_cache, totals=totals, refined=True,
                               refinement=report), report
