"""The RL search's state and one ES generation: propose (a horizon, a population, shared training seeds), train
every row x seed in one call per bucket trained on (one drawn bucket, or every bucket with ``horizon.sample:
every``), conclude (normalize, tell the ES, track the best mean)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from discover.searches.rl.config import RLSearchConfig
from discover.shared.es import strategy_params
from envs import rl_envs
from search_spaces.drift import DriftFamily

# ----------------------------------------------------------------------------------------------------------
# Search state (everything a resume needs; arrays only)
# ----------------------------------------------------------------------------------------------------------
HISTORY_FIELDS = ("mean_drift", "member_best", "member_mean", "member_median", "failures", "horizon", "env")


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
    es_state = _as_arrays(strategy.init(k_es, mean, strategy_params(strategy, config.es.sigma)))
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
    """Sample this generation's bucket, an (env, horizon) pair (uniformly; one env: one of ``horizon.multiples``);
    ask the ES for a population;
    rows = population + the ES mean; the same training keys and horizon for every row (common random numbers:
    antithetic pairs and the mean are compared on the same seeds)."""
    key, k_ask, k_train, k_tell, k_horizon = jax.random.split(state.key, 5)
    bucket = jax.random.randint(k_horizon, (), 0, len(ctx.multiples))
    population, es_state = ctx.strategy.ask(k_ask, state.es_state, ctx.es_params)
    rows = _stack_rows(population, ctx.strategy.get_mean(es_state))
    seeds = jax.random.split(k_train, ctx.config.es.train_seeds)
    keys = jnp.broadcast_to(seeds, (ctx.rows,) + seeds.shape)  # common random numbers across rows
    return population, es_state, rows, keys, (key, k_tell, bucket)


def conclude(
    state: SearchState, ctx: SearchContext, population, es_state, metrics, buckets, keys
) -> tuple[SearchState, dict]:
    """Score the rows, tell the ES (fitness = -score), update best/history. ``metrics`` are ``[rows, B, seeds]``,
    trained on the ``B`` buckets ``buckets``; a row's score is the mean over those buckets of its mean return
    over seeds normalized by PPO and the random policy on that bucket's env and horizon (one bucket: that
    score), and a row that failed anywhere scores -inf."""
    key, k_tell, bucket = keys
    final = jnp.mean(metrics["final_return"], axis=-1)  # [rows, B]
    ok = jnp.all(metrics["finite"], axis=(1, 2)) & jnp.all(jnp.isfinite(final), axis=1)
    score = jnp.where(ok, jnp.mean(ctx.normalize(final, buckets[None, :]), axis=1), -jnp.inf)
    every = buckets.shape[0] > 1  # horizon.sample: every (static under jit)
    fitness = -score[:-1]  # the engine minimizes; failures get +inf
    evaluated_mean = es_state.mean  # flat; the mean this population was drawn around
    es_state, _ = ctx.strategy.tell(k_tell, population, fitness, es_state, ctx.es_params)

    g = state.generation
    member = score[:-1]
    finite_member = jnp.where(jnp.isfinite(member), member, jnp.nan)
    stats = {
        "mean_drift": score[-1],
        "member_best": jnp.max(member),
        "member_mean": jnp.nanmean(finite_member),
        "member_median": jnp.nanmedian(finite_member),
        "failures": jnp.sum(~ok[:-1]).astype(jnp.float32),
        # the multiple trained on; 0 = every bucket (horizon.sample: every)
        "horizon": jnp.float32(0.0) if every else jnp.asarray(ctx.multiples, jnp.float32)[bucket],
        "env": jnp.float32(-1.0) if every else jnp.asarray(ctx.bucket_env, jnp.float32)[bucket],  # env.names index
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
    curve_of_mean = {k: metrics[k][-1, 0] for k in ("return_sum", "episode_count")}  # the first bucket's
    return new_state, {**stats, "scores": member, "mean_row": curve_of_mean, "bucket": buckets[0]}


def generation_buckets(ctx: SearchContext, drawn: int) -> list[int]:
    """The buckets a generation trains on: the drawn one, or every one (``horizon.sample: every``; with one
    bucket the two are the same)."""
    return list(range(len(ctx.multiples))) if ctx.config.horizon.sample == "every" else [drawn]


def run_generation(state: SearchState, ctx: SearchContext) -> tuple[SearchState, dict]:
    """One ES generation, a pure function of ``state``: propose, train every row x seed in one call per bucket
    (the same seeds at every bucket), conclude. The trainer is its own compiled function per env (shared with
    the final evaluation)."""
    population, es_state, rows, train_keys, keys = ctx.propose_fn(state)
    buckets = generation_buckets(ctx, int(keys[2]))
    runs = [ctx.train_rows(train_keys, rows, ctx.horizon_updates[k], env=ctx.bucket_env[k]) for k in buckets]
    metrics = {name: np.stack([run[name] for run in runs], axis=1) for name in runs[0]}  # [rows, B, seeds, ...]
    return ctx.conclude_fn(state, population, es_state, metrics, np.asarray(buckets, np.int32), keys)


@dataclasses.dataclass
class SearchContext:
    """What a generation needs besides the state. A bucket k is one (env, horizon) pair, env by env in the order
    of ``env.names`` (one env: bucket k is ``horizon.multiples[k]``); per bucket: its env, horizon multiple,
    number of updates, and PPO's and the random policy's mean returns (the normalizer, defined at every bucket)."""

    config: RLSearchConfig
    family: DriftFamily
    strategy: Any
    trains: tuple  # per env: sharded train(keys[P, 1], params[P, ...], n_updates[P]) -> metrics[P, 1, ...]
    rows: int
    multiples: tuple[float, ...]
    horizon_updates: tuple[int, ...]
    ppo_returns: tuple[float, ...]
    random_returns: tuple[float, ...]
    bucket_env: tuple[int, ...]  # index into config.env.names

    def env_name(self, bucket: int) -> str:
        return self.config.env.names[self.bucket_env[bucket]]

    def label(self, bucket: int) -> str:
        """How results name a bucket: its multiple (``"0.5"``), after its env when there are several."""
        multiple = f"{self.multiples[bucket]:g}"
        return multiple if len(self.config.env.names) == 1 else f"{self.env_name(bucket)} {multiple}"

    @property
    def es_params(self) -> Any:
        """The strategy's params, its std starting at es.sigma (CMA-ES & co: :func:`strategy_params`)."""
        return strategy_params(self.strategy, self.config.es.sigma)

    def train_rows(self, keys: jax.Array, params: Any, n_updates, env: int = 0) -> dict:
        """Trains ``params[R]`` x ``keys[R, S]`` for ``n_updates`` on env ``env`` (an index into ``env.names``)
        and returns metrics ``[R, S, ...]``. Every
        (row, seed) pair is one member of the sharded trainer's population, so seeds fill chunks and devices
        as rows do: S seeds cost S x the training rows, not padding."""
        rows, seeds = keys.shape[:2]
        flat_keys = jnp.reshape(keys, (rows * seeds, 1) + keys.shape[2:])
        flat_params = jax.tree.map(lambda x: jnp.repeat(x, seeds, axis=0), params)
        metrics = self.trains[env](flat_keys, flat_params, jnp.full((rows * seeds,), n_updates, jnp.int32))
        return jax.tree.map(lambda x: np.reshape(x, (rows, seeds) + x.shape[2:]), metrics)

    def normalize(self, returns, bucket):
        """Returns at horizon bucket ``bucket`` (an int or a traced index) -> PPO = 1, random policy = 0."""
        ppo = jnp.asarray(self.ppo_returns, jnp.float32)[bucket]
        rnd = jnp.asarray(self.random_returns, jnp.float32)[bucket]
        return rl_envs.normalize_return(returns, ppo, rnd)

    @functools.cached_property
    def propose_fn(self):
        return jax.jit(lambda state: propose(state, self))

    @functools.cached_property
    def conclude_fn(self):
        return jax.jit(lambda *args: conclude(args[0], self, *args[1:]))
