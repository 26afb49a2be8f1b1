"""Consensus-based optimization (CBO) as an evosax-compatible strategy.

Riedl, Klock, Geldhauser & Fornasier 2023, "Gradient is All You Need?" (after Pinnau et al. 2017 and, for
the anisotropic noise, Carrillo et al. 2021). ``P`` particles ``x_i`` move towards a consensus point

    v_alpha = sum_i x_i exp(-alpha f(x_i)) / sum_i exp(-alpha f(x_i))

by an Euler-Maruyama step of the CBO dynamics, with drift ``-lambda (x_i - v_alpha)`` and anisotropic
(per-coordinate) noise ``sigma |x_i - v_alpha| xi``:

    x_i <- x_i - lambda dt (x_i - v_alpha) + sigma sqrt(dt) |x_i - v_alpha| * xi_i,   xi_i ~ N(0, I).

The weights are a softmax of ``-alpha f`` (``jax.nn.softmax`` subtracts the maximum: the log-sum-exp form), so
any ``alpha`` and any scale of ``f`` stay finite; a particle whose fitness is NaN or +inf gets weight 0, and if
every particle failed the consensus is their plain mean.

The strategy has evosax's interface (:class:`evosax.algorithms.distribution_based.base.DistributionBasedAlgorithm`):
``init(key, mean, params)`` (particles drawn ``mean + std_init * N(0, I)``), ``ask(key, state, params) ->
(population, state)`` (the particles, unravelled like the solution template), ``tell(key, population,
fitness, state, params) -> (state, metrics)`` (lower fitness is better), ``get_mean(state)`` (the consensus
point) and a pytree state (a flax dataclass of arrays: ``mean`` = the consensus point, flat, as evosax keeps
it; ``particles``; ``std`` = the particles' RMS distance to the consensus, for logs). ``fitness_shaping_fn``
is applied before the weights, as in every evosax strategy: with centered ranks (``rank_shaping``) ``alpha``
weighs ranks in [-0.5, 0.5] and the dynamics no longer depend on the scale of ``f``; with the identity it
weighs ``f`` itself (the paper's formula).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from evosax.algorithms.distribution_based import base as evosax_base
from evosax.core.fitness_shaping import identity_fitness_shaping_fn
from flax import struct

# Defaults (also the config's). In continuous time anisotropic noise lets the particles concentrate when
# 2 lambda > sigma^2 (here 2 > 1.5625). Chosen among dt 0.1-1, sigma 0.5-1.25, alpha 10-100 (centered
# ranks) on a shifted 10-D sphere and Rastrigin with 32 particles and 100 generations
# (benchmarks/es_strategies.py): smaller dt or sigma collapsed the particles before they reached the optimum.
DEFAULT_ALPHA = 30.0
DEFAULT_LAMBDA = 1.0
DEFAULT_SIGMA = 1.25
DEFAULT_DT = 0.5

# Each option as a config field ``cbo_<option>`` (discover.shared.es.CBO_OPTIONS): default, bounds and help,
# written once for every config section that can run CBO.
_FIELDS = {
    "alpha": (DEFAULT_ALPHA, {"min": 0.0, "help": "CBO: inverse temperature of the consensus weights"}),
    "lambda": (DEFAULT_LAMBDA, {"min": 0.0, "help": "CBO: drift towards the consensus point"}),
    "sigma": (DEFAULT_SIGMA, {"min": 0.0, "help": "CBO: anisotropic noise, times |x - consensus|"}),
    "dt": (DEFAULT_DT, {"min": 1e-6, "max": 10.0, "help": "CBO: Euler-Maruyama step"}),
}


def config_field(option: str):
    """A new ``dataclasses.field`` for the config key ``cbo_<option>``."""
    default, metadata = _FIELDS[option]
    return dataclasses.field(default=default, metadata=dict(metadata))


@struct.dataclass
class State(evosax_base.State):
    mean: jax.Array  # the consensus point v_alpha (flat); the initial mean until the first tell
    particles: jax.Array  # (P, D): the population the next ask returns
    std: jax.Array  # RMS distance of the particles to the consensus (a scalar, for logs)


@struct.dataclass
class Params(evosax_base.Params):
    std_init: float = 1.0  # spread of the initial particles around the initial mean
    alpha: float = DEFAULT_ALPHA  # inverse temperature of the consensus weights
    drift: float = DEFAULT_LAMBDA  # lambda
    noise: float = DEFAULT_SIGMA  # sigma
    dt: float = DEFAULT_DT  # Euler-Maruyama step


def consensus(population: jax.Array, fitness: jax.Array, alpha) -> jax.Array:
    """v_alpha of ``population`` (P, D) under ``fitness`` (P,): softmax(-alpha f) weights (log-sum-exp stable);
    non-finite fitness gets weight 0, and all non-finite gives the plain mean."""
    ok = jnp.isfinite(fitness)
    big = jnp.finfo(population.dtype).max  # -alpha f clipped to finite values: all-overflowing weights stay defined
    logits = jnp.where(ok, jnp.clip(-alpha * jnp.where(ok, fitness, 0.0), -big, big), -jnp.inf)
    any_ok = jnp.any(ok)
    weights = jax.nn.softmax(jnp.where(any_ok, logits, 0.0))
    return weights @ population


class CBO(evosax_base.DistributionBasedAlgorithm):
    """Consensus-based optimization with anisotropic noise (see the module docstring)."""

    def __init__(
        self,
        population_size: int,
        solution,
        std_init: float = 1.0,
        alpha: float = DEFAULT_ALPHA,
        drift: float = DEFAULT_LAMBDA,
        noise: float = DEFAULT_SIGMA,
        dt: float = DEFAULT_DT,
        fitness_shaping_fn: Callable = identity_fitness_shaping_fn,
        metrics_fn: Callable = evosax_base.metrics_fn,
    ):
        if population_size < 2:
            raise ValueError(f"CBO needs at least 2 particles, got {population_size}")
        for name, value in (("std_init", std_init), ("alpha", alpha), ("drift", drift), ("noise", noise)):
            if not value >= 0:
                raise ValueError(f"CBO: {name} must be >= 0, got {value}")
        if not dt > 0:
            raise ValueError(f"CBO: dt must be > 0, got {dt}")
        super().__init__(population_size, solution, fitness_shaping_fn, metrics_fn)
        self._params = Params(std_init=float(std_init), alpha=float(alpha), drift=float(drift), noise=float(noise),
                              dt=float(dt))

    @property
    def _default_params(self) -> Params:
        return self._params

    @partial(jax.jit, static_argnames=("self",))
    def init(self, key: jax.Array, mean, params: Params) -> State:
        flat = self._ravel_solution(mean)
        z = jax.random.normal(key, (self.population_size, self.num_dims), flat.dtype)
        return State(
            mean=flat,
            particles=flat + params.std_init * z,
            std=jnp.asarray(params.std_init, flat.dtype),
            best_solution=jnp.full((self.num_dims,), jnp.nan, flat.dtype),
            best_fitness=jnp.inf,
            generation_counter=0,
        )

    def _init(self, key: jax.Array, params: Params) -> State:  # evosax's hook; init above does the work
        raise NotImplementedError("CBO.init(key, mean, params) draws the particles around the mean")

    def _ask(self, key: jax.Array, state: State, params: Params):
        return state.particles, state

    def _tell(self, key: jax.Array, population: jax.Array, fitness: jax.Array, state: State, params: Params) -> State:
        v = consensus(population, fitness, params.alpha)
        diff = population - v
        xi = jax.random.normal(key, population.shape, population.dtype)
        moved = population - params.drift * params.dt * diff + params.noise * jnp.sqrt(params.dt) * jnp.abs(diff) * xi
        return state.replace(mean=v, particles=moved, std=jnp.sqrt(jnp.mean(diff * diff)))


__all__ = ["CBO", "DEFAULT_ALPHA", "DEFAULT_DT", "DEFAULT_LAMBDA", "DEFAULT_SIGMA", "Params", "State", "consensus"]
