"""Evolution strategies by name: evosax's distribution-based strategies, built one way for every search.

One list of names (:data:`STRATEGY_NAMES`, read when a config is checked) and one factory
(:func:`make_strategy`) serve the RL-objective ES and the update-rule constant refinement. Besides evosax's
own, ``CBO`` (consensus-based optimization, :mod:`discover.shared.cbo`) has the same interface.
"""

from __future__ import annotations

import collections.abc
import inspect
from typing import Any

import optax
from evosax.algorithms import distribution_based_algorithms
from evosax.core.fitness_shaping import (
    centered_rank_fitness_shaping_fn,
    identity_fitness_shaping_fn,
    weights_fitness_shaping_fn,
)

from discover.shared import cbo as cbo_module

# Strategies of this project with evosax's interface, chosen by name like evosax's own.
EXTRA_STRATEGIES = {"CBO": cbo_module.CBO}
CBO_OPTIONS = ("alpha", "lambda", "sigma", "dt")  # config fields cbo_<option> (ESSection, RefineSection)


class _StrategyNames(collections.abc.Sequence):
    """The names of the strategies a config may choose, read when the config is checked."""

    def _names(self) -> list[str]:
        return sorted({*distribution_based_algorithms, *EXTRA_STRATEGIES})

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())


STRATEGY_NAMES = _StrategyNames()


def cbo_options(section: Any) -> dict[str, float]:
    """The CBO hyperparameters of a config section with ``cbo_alpha`` ... fields, for ``make_strategy(cbo=...)``."""
    return {k: float(getattr(section, f"cbo_{k}")) for k in CBO_OPTIONS if hasattr(section, f"cbo_{k}")}


def strategy_params(strategy: Any, sigma: float) -> Any:
    """``strategy``'s default params with its initial std set to ``sigma`` where it has one (CMA-ES, SNES, ...
    read ``std_init`` from their params, not from the constructor: evosax's default is 1.0)."""
    params = strategy.default_params
    return params.replace(std_init=sigma) if hasattr(params, "std_init") else params


def strategy_has_optimizer(name: str) -> bool:
    """Whether evosax strategy ``name`` moves its mean with an optax optimizer (Open_ES, ...), which
    :func:`make_strategy`'s ``lr`` and ``weight_decay`` configure."""
    cls = distribution_based_algorithms.get(name)
    return cls is not None and "optimizer" in inspect.signature(cls.__init__).parameters


def make_strategy(name: str, popsize: int, template: Any, *, sigma: float, lr: float, antithetic: bool,
                  rank_shaping: bool, cbo: dict[str, float] | None = None, weight_decay: float = 0.0):
    """The evosax strategy ``name`` over solutions shaped like ``template``. Open_ES gets antithetic sampling,
    centered ranks, Adam(lr) and a constant std schedule (sigma); other strategies get those arguments where
    they take them, except that a strategy whose fitness shaping is its recombination weights (CMA_ES, SNES,
    ...: evosax's ``weights_fitness_shaping_fn``) keeps it, rank-based already; their std starts at ``sigma`` only
    with :func:`strategy_params`. ``weight_decay`` > 0: AdamW(lr, weight_decay) in place of Adam, a decoupled
    pull of the mean toward 0 (ValueError for a strategy without an optimizer, CBO included). ``CBO``: particles
    drawn with std ``sigma`` around the initial mean, centered ranks as fitness shaping when ``rank_shaping``, and
    ``cbo`` = {alpha, lambda, sigma, dt} (the defaults of :mod:`discover.shared.cbo` for any left out; see
    :func:`cbo_options`)."""
    if weight_decay > 0 and not strategy_has_optimizer(name):
        raise ValueError(f"make_strategy: {name} has no optimizer, so weight_decay {weight_decay} cannot apply")
    if name in EXTRA_STRATEGIES:
        options = dict(cbo or {})
        unknown = set(options) - set(CBO_OPTIONS)
        if unknown:
            raise ValueError(f"make_strategy: unknown CBO option(s) {sorted(unknown)}; known: {list(CBO_OPTIONS)}")
        shaping = centered_rank_fitness_shaping_fn if rank_shaping else identity_fitness_shaping_fn
        renamed = {"lambda": "drift", "sigma": "noise"}
        return EXTRA_STRATEGIES[name](population_size=popsize, solution=template, std_init=sigma,
                                      fitness_shaping_fn=shaping,
                                      **{renamed.get(k, k): v for k, v in options.items()})
    cls = distribution_based_algorithms[name]
    accepted = inspect.signature(cls.__init__).parameters
    offered = {
        # Adam alone when there is no decay, so earlier runs keep their optimizer state and bits
        "optimizer": optax.adamw(lr, weight_decay=weight_decay) if weight_decay > 0 else optax.adam(lr),
        "std_schedule": optax.constant_schedule(sigma),
        "use_antithetic_sampling": antithetic,
        "fitness_shaping_fn": centered_rank_fitness_shaping_fn if rank_shaping else identity_fitness_shaping_fn,
    }
    kwargs = {k: v for k, v in offered.items() if k in accepted}
    if accepted["fitness_shaping_fn"].default is weights_fitness_shaping_fn:
        # CMA-ES, SNES, xNES & co: their shaping IS their recombination weights (fitness -> weights by rank,
        # already rank-based); centered ranks in its place would weight the best members negatively.
        kwargs.pop("fitness_shaping_fn")
    return cls(population_size=popsize, solution=template, **kwargs)
