"""The RL search's state and one ES generation: propose, train every row x seed in one call, conclude."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from discover.searches.rl.config import RLSearchConfig
from envs import rl_envs
from search_spaces.drift import DriftFamily

# ----------------------------------------------------------------------------------------------------------
# Search state (everything a resume needs; arrays only)
# ----------------------------------------------------------------------------------------------------------
HISTORY_FIELDS = ("mean_drift", "member_best", "member_mean", "member_median", "failures")


class SearchState(NamedTuple):
    es_state: Any
    key: jax.Array
    generation: jax.Array  # generations completed
    best_score: jax.Array  # best normalized return of the ES mean so far
    best_mean: jax.Array  # flat drift parameters of that mean
    best_generation: jax.Array
    history: dict  # field -> [generations] per-generation statistics (NaN until filled)


def _as_arrays(tree: Any) -> Any:
    """Every leaf a strongly typed array, so the state's types never change between generations or across a
    checkpoint restore (weak types would recompile the generation)."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), tree)


def init_search_state(config: RLSearchConfig, strategy, family: DriftFamily) -> SearchState:
    key = jax.random.PRNGKey(config.seed)
    key, k_init, k_es = jax.random.split(key, 3)
    mean = family.init(k_init)
    es_state = _as_arrays(strategy.init(k_es, mean, strategy.default_params))
    flat = es_state.mean
    generations = config.es.generations
    return _as_arrays(
        SearchState(
            es_state=es_state,
            key=key,
            generation=jnp.asarray(0, jnp.int32),
            best_score=jnp.asarray(-jnp.inf, jnp.float32),
            best_mean=flat,
            best_generation=jnp.asarray(-1, jnp.int32),
            history={name: jnp.full((generations,), jnp.nan, jnp.float32) for name in HISTORY_FIELDS},
        )
    )


def _stack_rows(population: Any, extra: Any) -> Any:
    return jax.tree.map(lambda p, e: jnp.concatenate([p, e[None]], axis=0), population, extra)


def propose(state: SearchState, ctx: SearchContext):
    """Ask the ES for a population; rows = population + the ES mean; training keys shared by all rows."""
    key, k_ask, k_train, k_tell = jax.random.split(state.key, 4)
    population, es_state = ctx.strategy.ask(k_ask, state.es_state, ctx.strategy.default_params)
    rows = _stack_rows(population, ctx.strategy.get_mean(es_state))
    seeds = jax.random.split(k_train, ctx.config.es.train_seeds)
    keys = jnp.broadcast_to(seeds, (ctx.rows,) + seeds.shape)  # common random numbers across rows
    return population, es_state, rows, keys, (key, k_tell)


def conclude(
    state: SearchState, ctx: SearchContext, population, es_state, metrics, keys
) -> tuple[SearchState, dict]:
    """Score the rows, tell the ES (fitness = -normalized return), update best/history."""
    key, k_tell = keys
    final = jnp.mean(metrics["final_return"], axis=1)
    ok = jnp.all(metrics["finite"], axis=1) & jnp.isfinite(final)
    score = jnp.where(ok, ctx.normalize(final), -jnp.inf)
    fitness = -score[:-1]  # the engine minimizes; failures get +inf
    evaluated_mean = es_state.mean  # flat; the mean this population was drawn around
    es_state, _ = ctx.strategy.tell(k_tell, population, fitness, es_state, ctx.strategy.default_params)

    g = state.generation
    member = score[:-1]
    finite_member = jnp.where(jnp.isfinite(member), member, jnp.nan)
    stats = {
        "mean_drift": score[-1],
        "member_best": jnp.max(member),
        "member_mean": jnp.nanmean(finite_member),
        "member_median": jnp.nanmedian(finite_member),
        "failures": jnp.sum(~ok[:-1]).astype(jnp.float32),
    }
    improved = score[-1] > state.best_score
    new_state = _as_arrays(
        SearchState(
            es_state=es_state,
            key=key,
            generation=g + 1,
            best_score=jnp.where(improved, score[-1], state.best_score).astype(jnp.float32),
            best_mean=jnp.where(improved, evaluated_mean, state.best_mean),
            best_generation=jnp.where(improved, g, state.best_generation),
            history={k: v.at[g].set(stats[k]) for k, v in state.history.items()},
        )
    )
    curve_of_mean = {k: metrics[k][-1] for k in ("return_sum", "episode_count")}
    return new_state, {**stats, "scores": member, "mean_row": curve_of_mean}


def run_generation(state: SearchState, ctx: SearchContext) -> tuple[SearchState, dict]:
    """One ES generation, a pure function of ``state``: propose, train every row x seed in one call, conclude.
    The trainer is its own compiled function (shared with the final evaluation)."""
    population, es_state, rows, train_keys, keys = ctx.propose_fn(state)
    metrics = ctx.train(train_keys, rows)
    return ctx.conclude_fn(state, population, es_state, metrics, keys)


@dataclasses.dataclass
class SearchContext:
    config: RLSearchConfig
    family: DriftFamily
    strategy: Any
    train: Any
    rows: int
    ppo_return: float
    return_floor: float

    def normalize(self, returns):
        return rl_envs.normalize_return(returns, self.ppo_return, self.return_floor)

    @functools.cached_property
    def propose_fn(self):
        return jax.jit(lambda state: propose(state, self))

    @functools.cached_property
    def conclude_fn(self):
        return jax.jit(lambda *args: conclude(args[0], self, *args[1:]))
