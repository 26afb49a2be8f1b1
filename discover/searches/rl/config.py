"""The RL-objective search's config schema (sections, defaults, help)."""

from __future__ import annotations

import dataclasses

from discover.infra.search_config import BaseSearchConfig, CheckpointSection, redefault
from discover.shared.es import STRATEGY_NAMES
from envs import rl_envs
from envs.ppo import PPOConfig, validate
from search_spaces.drift import DriftConfig


# ----------------------------------------------------------------------------------------------------------
# Config schema
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EnvSection:
    name: str = dataclasses.field(
        default="CartPole-v1", metadata={"choices": rl_envs.ENV_NAMES, "help": "meta-training env"}
    )


@dataclasses.dataclass(frozen=True)
class ESSection:
    strategy: str = dataclasses.field(
        default="Open_ES",
        metadata={"choices": STRATEGY_NAMES, "help": "evosax distribution-based strategy"},
    )
    popsize: int = dataclasses.field(
        default=64, metadata={"min": 2, "help": "drift candidates per generation"}
    )
    sigma: float = dataclasses.field(default=0.03, metadata={"min": 0.0, "help": "perturbation std"})
    lr: float = dataclasses.field(default=0.03, metadata={"min": 0.0, "help": "Adam lr on the ES mean"})
    antithetic: bool = dataclasses.field(default=True, metadata={"help": "mirrored perturbations"})
    rank_shaping: bool = dataclasses.field(default=True, metadata={"help": "centered-rank fitness shaping"})
    generations: int = dataclasses.field(default=256, metadata={"min": 1, "help": "ES generations"})
    train_seeds: int = dataclasses.field(
        default=1,
        metadata={"min": 1, "help": "training seeds averaged per candidate", "renamed_from": "seeds_per_member"},
    )

    def __post_init__(self) -> None:
        if self.antithetic and self.popsize % 2:
            raise ValueError(f"popsize must be even with antithetic sampling, got {self.popsize}")


@dataclasses.dataclass(frozen=True)
class FitnessSection:
    baseline_seeds: int = dataclasses.field(
        default=16, metadata={"min": 1, "help": "PPO (and DPO) seeds for the normalizer"}
    )
    cache_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "where baseline returns are cached; null = <run root>/.rl_baselines"}
    )
    final_eval_rows: int | None = dataclasses.field(
        default=None,
        metadata={
            "min": 2,
            "help": "rows of the final re-evaluation of best/final drift; null = popsize + 1",
        },
    )


@dataclasses.dataclass(frozen=True)
class LogSection:
    plot_every: int = dataclasses.field(
        default=10, metadata={"min": 1, "help": "generations between drift pictures / return curves"}
    )


@dataclasses.dataclass(frozen=True)
class RLSearchConfig(BaseSearchConfig):
    kind: str = redefault("kind", "rl_objective", choices=["rl_objective"])
    name: str = redefault("name", "talpo")
    checkpoint: CheckpointSection = dataclasses.field(default_factory=lambda: CheckpointSection(every=5))
    env: EnvSection = dataclasses.field(default_factory=EnvSection)
    ppo: rl_envs.PPOSettings = dataclasses.field(
        default_factory=rl_envs.PPOSettings,
        metadata={"help": "inner-loop PPO settings; a null field takes the env's PureJaxRL default"},
    )
    drift: DriftConfig = dataclasses.field(default_factory=DriftConfig)
    es: ESSection = dataclasses.field(default_factory=ESSection)
    fitness: FitnessSection = dataclasses.field(default_factory=FitnessSection)
    log: LogSection = dataclasses.field(default_factory=LogSection)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.drift.family not in ("lpo", "talpo"):
            raise ValueError(
                f"drift.family must be a learned family (lpo or talpo) to search, got {self.drift.family!r}"
            )
        validate(self.ppo_config)

    @property
    def ppo_config(self) -> PPOConfig:
        return rl_envs.ppo_config(self.env.name, self.ppo)
