"""Constant refinement of the best programs with an evosax strategy, through the same batched trainer."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from discover.language.program import Program, parse
from discover.searches.update_rules.config import RefineSection
from discover.searches.update_rules.state import SearchState
from discover.searches.update_rules.steps import SearchContext
from discover.shared.es import cbo_options, make_strategy, strategy_params
from discover.shared.evolution import (
    HallEntry,
    analyse,
    constant_slots,
    scale_constants,
    update_hall,
)
from discover.shared.scoring import chosen_multipliers

# ----------------------------------------------------------------------------------------------------------
# Constant refinement with an evosax strategy
# ----------------------------------------------------------------------------------------------------------
REFINE_SALT = 7_919


def _strategy(cfg: RefineSection, popsize: int, dim: int):
    """An evosax strategy (or CBO, with ``cfg.cbo_*``) over ``dim`` log2 scales (std set to ``cfg.sigma``)."""
    strategy = make_strategy(cfg.strategy, popsize, jnp.zeros((dim,), jnp.float32), sigma=cfg.sigma, lr=cfg.lr,
                             antithetic=popsize % 2 == 0, rank_shaping=True, cbo=cbo_options(cfg))
    return strategy, strategy_params(strategy, cfg.sigma)


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
        # canonical: a bias correction's base follows its EMA's scaled rate (space.time: bias_corrections)
        candidates = [ctx.space.canonical(scale_constants(program, row)) for row in np.asarray(x, np.float64)]
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
    cache, metaval_cache, metaval_lr = dict(state.cache), dict(state.metaval_cache), dict(state.metaval_lr)
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
            if ctx.metaval is not None:
                scores = ctx.metaval.score([refined])
                metaval_cache[fp] = float(scores.fitness[0])
                metaval_lr[fp] = chosen_multipliers(scores)[0]
            else:
                metaval_cache[fp] = fitness
        entries.append(HallEntry(fingerprint=fp, program=str(refined), fitness=cache[fp], metaval=metaval_cache[fp],
                                 generation=state.generation, parent=entry.program, origin="refined",
                                 lr_multipliers=metaval_lr.get(fp)))
        report[-1]["metaval_after"] = metaval_cache[fp]
    hall = update_hall(state.hall, entries, ctx.config.hall_of_fame.size)
    return dataclasses.replace(state, hall=hall, cache=cache, metaval_cache=metaval_cache, metaval_lr=metaval_lr,
                               refined=True), report


# ----------------------------------------------------------------------------------------------------------
