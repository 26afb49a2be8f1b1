"""The gymnax environments the RL-objective search trains on, with PureJaxRL's per-env PPO settings.

``ENV_SPECS[name]`` gives the PPO config a run of that env uses by default, the held-out envs a drift
learned on it is transferred to, and the return floor used by normalization:
``normalized(R) = (R - floor) / (R_ppo - floor)``, so PPO scores 1 and a policy that learned nothing 0.
The floor is 0 for envs whose returns are non-negative (then this is R / R_ppo) and -500 for Acrobot-v1,
whose returns are negative (-500 = never reached the goal in the 500-step limit).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import NamedTuple

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


def normalize_return(value, ppo_return: float, return_floor: float):
    """(R - floor) / (R_ppo - floor); works on floats and arrays."""
    scale = ppo_return - return_floor
    if abs(scale) < 1e-8:
        scale = 1e-8  # PPO learned nothing: any progress is "infinitely" better; avoid dividing by 0
    return (value - return_floor) / scale
