"""The gymnax environments the RL-objective search trains on, with PureJaxRL's per-env PPO settings.

``ENV_SPECS[name]`` gives the PPO config a run of that env uses by default, the held-out envs a drift
learned on it is transferred to, and the env's lowest possible return (``return_floor``, for reference).

Returns are normalized per env and horizon by a uniformly random policy and by PPO:
``score(R) = (R - R_random) / (R_ppo - R_random)``, so PPO scores 1 and a policy that learned nothing 0
(``envs.ppo.make_random_policy`` measures R_random exactly as the trainer scores its agents). Where PPO is not
above random beyond noise (:func:`normalizer_defined`), the score is undefined and reported as such.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import NamedTuple

import numpy as np

from discover.infra.errors import InputError
from envs.ppo import PPOConfig

MINATAR = ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar")
CLASSIC = ("CartPole-v1", "Acrobot-v1")

# PureJaxRL's settings: classic control with 4 envs x 128 steps; MinAtar with 64 envs x 128 steps, lr 5e-3.
CLASSIC_PPO = PPOConfig()
MINATAR_PPO = PPOConfig(
    num_envs=64,
    num_steps=128,
    total_timesteps=10_000_000,
    update_epochs=4,
    num_minibatches=8,
    lr=5e-3,
    activation="relu",
)


class EnvSpec(NamedTuple):
    name: str
    ppo: PPOConfig
    return_floor: float
    held_out: tuple[str, ...]


ENV_SPECS: dict[str, EnvSpec] = {
    "CartPole-v1": EnvSpec("CartPole-v1", CLASSIC_PPO, 0.0, ("Acrobot-v1",)),
    "Acrobot-v1": EnvSpec("Acrobot-v1", CLASSIC_PPO, -500.0, ("CartPole-v1",)),
    **{
        name: EnvSpec(name, MINATAR_PPO, 0.0, tuple(other for other in MINATAR if other != name))
        for name in MINATAR
    },
    # bsuite's Catch: short episodes (9 steps, return -1 or +1), classic-control PPO settings; PPO climbs from a
    # random policy's -0.6 to ~0.97 within 1e5 steps, so short lifetimes separate fast learners from slow ones.
    "Catch-bsuite": EnvSpec("Catch-bsuite", CLASSIC_PPO, -1.0, CLASSIC),
}
ENV_NAMES = tuple(ENV_SPECS)


def spec(name: str) -> EnvSpec:
    if name not in ENV_SPECS:
        raise InputError(f"unknown environment {name!r}; supported: {', '.join(ENV_NAMES)}")
    return ENV_SPECS[name]


def _optional_settings(cls: type, name: str) -> type:
    """A dataclass with ``cls``'s fields, each ``Optional`` and defaulting to None (= "the env's default"),
    keeping their bounds/choices/help for config validation."""
    hints = typing.get_type_hints(cls)
    fields = [
        (f.name, hints[f.name] | None, dataclasses.field(default=None, metadata=f.metadata))
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(name, fields, frozen=True)


# The `ppo:` section of an experiment config: any field left out (null) takes the env's default.
PPOSettings = _optional_settings(PPOConfig, "PPOSettings")


def ppo_config(env_name: str, settings=None, **overrides) -> PPOConfig:
    """The env's default PPOConfig, with the non-null fields of ``settings`` and then ``overrides`` applied."""
    config = spec(env_name).ppo
    if settings is not None:
        given = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
        config = dataclasses.replace(config, **{k: v for k, v in given.items() if v is not None})
    return dataclasses.replace(config, **overrides)


def at_horizon(reference: PPOConfig, multiple: float) -> PPOConfig:
    """``reference`` trained for ``multiple`` x its steps (at least one update)."""
    per_update = reference.num_envs * reference.num_steps
    steps = max(per_update, round(reference.total_timesteps * multiple))
    return dataclasses.replace(reference, total_timesteps=steps)


def normalize_return(value, ppo_return: float, random_return: float):
    """(R - R_random) / (R_ppo - R_random); works on floats and arrays. Meaningful only where
    :func:`normalizer_defined` holds (a gap of 0 gives inf/NaN, never a made-up number)."""
    return (value - random_return) / (ppo_return - random_return)


def normalized_runs(returns, ppo_return: float, random_return: float) -> np.ndarray:
    """Per-run scores (:func:`normalize_return`) of ``returns``, a failed run (non-finite return) scoring 0: how
    transfer tables score every method's runs."""
    returns = np.asarray(returns, np.float64)
    return np.where(np.isfinite(returns), normalize_return(returns, ppo_return, random_return), 0.0)


def normalizer_defined(ppo_returns, random_returns) -> bool:
    """Whether PPO is above the random policy beyond noise: the gap of the means exceeds 2 combined standard
    errors (the project's rule for a difference). Needs at least 2 runs of each."""
    ppo = np.asarray(ppo_returns, np.float64)
    rnd = np.asarray(random_returns, np.float64)
    if len(ppo) < 2 or len(rnd) < 2 or not (np.isfinite(ppo).all() and np.isfinite(rnd).all()):
        return False
    se = np.sqrt(ppo.var(ddof=1) / len(ppo) + rnd.var(ddof=1) / len(rnd))
    gap = ppo.mean() - rnd.mean()
    return bool(gap > 0 and gap > 2.0 * se)
