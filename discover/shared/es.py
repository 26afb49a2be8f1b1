"""Evolution strategies by name: evosax's distribution-based strategies, built one way for every search.

One list of names (:data:`STRATEGY_NAMES`, read when a config is checked) and one factory
(:func:`make_strategy`) serve the RL-objective ES and the update-rule constant refinement.
"""

from __future__ import annotations

import collections.abc
import inspect
from typing import Any

import optax
from evosax.algorithms import distribution_based_algorithms
from evosax.core.fitness_shaping import centered_rank_fitness_shaping_fn, identity_fitness_shaping_fn


class _StrategyNames(collections.abc.Sequence):
    """The names of the strategies a config may choose, read when the config is checked."""

    def _names(self) -> list[str]:
        return sorted(distribution_based_algorithms)

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())


STRATEGY_NAMES = _StrategyNames()


def make_strategy(name: str, popsize: int, template: Any, *, sigma: float, lr: float, antithetic: bool,
                  rank_shaping: bool):
    """The evosax strategy ``name`` over solutions shaped like ``template``. Open_ES gets antithetic sampling,
    centered ranks, Adam(lr) and a constant std schedule (sigma); other strategies get those arguments where
    they take them."""
    cls = distribution_based_algorithms[name]
    accepted = inspect.signature(cls.__init__).parameters
    offered = {
        "optimizer": optax.adam(lr),
        "std_schedule": optax.constant_schedule(sigma),
        "use_antithetic_sampling": antithetic,
        "fitness_shaping_fn": centered_rank_fitness_shaping_fn if rank_shaping else identity_fitness_shaping_fn,
    }
    kwargs = {k: v for k, v in offered.items() if k in accepted}
    return cls(population_size=popsize, solution=template, **kwargs)
