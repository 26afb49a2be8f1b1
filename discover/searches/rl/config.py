"""The RL-objective search's config schema (sections, defaults, help)."""

from __future__ import annotations

import dataclasses

from discover.infra.search_config import BaseSearchConfig, CheckpointSection, redefault
from discover.shared import cbo
from discover.shared.es import STRATEGY_NAMES, strategy_has_optimizer
from envs import rl_envs
from envs.ppo import PPOConfig, validate
from search_spaces.drift import LEARNED_FAMILIES, DriftConfig


# ----------------------------------------------------------------------------------------------------------
# Config schema
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EnvSection:
    name: str = dataclasses.field(
        default="CartPole-v1",
        metadata={"choices": rl_envs.ENV_NAMES,
                  "help": "meta-training env (its held-out envs are the transfer's default; log10(N) is read on it)"},
    )
    extra: list[str] = dataclasses.field(
        default_factory=list,
        metadata={
            "choices": rl_envs.ENV_NAMES,
            "help": "more meta-training envs: each generation draws one (env, lifetime) pair uniformly, and each env "
            "is normalized by its own PPO and random-policy returns; the ppo section applies to every env",
        },
    )

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"extra must name envs other than name and each other, got {list(self.names)}")

    @property
    def names(self) -> tuple[str, ...]:
        """Every meta-training env, ``name`` first."""
        return (self.name, *self.extra)


# Strategies that accumulate perturbations over several ES steps of ONE unrolled inner problem (PES, noise-reuse
# ES): with whole lifetimes trained from scratch every generation their estimate would mix unrelated runs.
TRUNCATED_UNROLL_STRATEGIES = ("PersistentES", "NoiseReuseES")


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
    weight_decay: float = dataclasses.field(
        default=0.0,
        metadata={
            "min": 0.0,
            "help": "decoupled decay of the ES mean toward 0 (AdamW): each generation it shrinks by lr x "
            "weight_decay where the fitness gives no consistent direction. With drift.ppo_init, 0 is PPO's "
            "drift, so this pulls the search toward PPO (Open_ES and other strategies with an optimizer)",
        },
    )
    antithetic: bool = dataclasses.field(default=True, metadata={"help": "mirrored perturbations"})
    rank_shaping: bool = dataclasses.field(default=True, metadata={"help": "centered-rank fitness shaping"})
    generations: int = dataclasses.field(default=256, metadata={"min": 1, "help": "ES generations"})
    train_seeds: int = dataclasses.field(
        default=1,
        metadata={
            "min": 1,
            "help": "training seeds per candidate, the same for every row of a generation (common random numbers)",
            "renamed_from": "seeds_per_member",
        },
    )
    # CBO (strategy: CBO, discover.shared.cbo): its particles start with std `sigma` around the initial drift;
    # `rank_shaping` gives alpha centered ranks in [-0.5, 0.5] to weigh (else the raw fitness).
    cbo_alpha: float = cbo.config_field("alpha")
    cbo_lambda: float = cbo.config_field("lambda")
    cbo_sigma: float = cbo.config_field("sigma")
    cbo_dt: float = cbo.config_field("dt")

    def __post_init__(self) -> None:
        if self.strategy in TRUNCATED_UNROLL_STRATEGIES:
            raise ValueError(
                f"strategy {self.strategy} estimates gradients over truncated lifetimes (one inner training "
                "continued across ES steps); this search trains every lifetime from scratch to its end: use Open_ES"
            )
        if self.weight_decay > 0 and not strategy_has_optimizer(self.strategy):
            raise ValueError(f"weight_decay: strategy {self.strategy} has no optimizer to decay its mean with "
                             "(use Open_ES, or weight_decay 0)")
        if self.antithetic and self.popsize % 2:
            raise ValueError(f"popsize must be even with antithetic sampling, got {self.popsize}")


@dataclasses.dataclass(frozen=True)
class HorizonSection:
    multiples: list[float] = dataclasses.field(
        default_factory=lambda: [1.0],
        metadata={
            "min": 1e-3,
            "max": 1e3,
            "help": "lifetimes meta-trained on, as multiples of ppo.total_timesteps; each generation samples one "
            "(uniformly: log-spaced multiples give log-uniform lifetimes) for all its rows and seeds",
        },
    )

    sample: str = dataclasses.field(
        default="one",
        metadata={
            "choices": ["one", "every"],
            "help": "one: each generation draws one (env, horizon) bucket for all its rows and seeds; every: each "
            "generation trains every row on every bucket (es.train_seeds seeds each) and scores it by the mean of "
            "its normalized returns over the buckets, so every ES step weighs short and long lifetimes alike "
            "(costs the sum of the lifetimes per generation instead of one draw)",
        },
    )

    per_env: dict[str, list[float]] = dataclasses.field(
        default_factory=dict,
        metadata={
            "min": 1e-3,
            "max": 1e3,
            "help": "env -> its own multiples, in place of multiples (e.g. only short lifetimes on an env whose "
            "longer ones PPO already solves: a bucket where every drift scores at PPO's ceiling costs a "
            "generation and gives the ES no signal)",
        },
    )

    def __post_init__(self) -> None:
        for key, multiples in (("multiples", self.multiples),
                               *((f"per_env.{env}", m) for env, m in self.per_env.items())):
            if not multiples:
                raise ValueError(f"{key} must name at least one horizon")
            if len(set(multiples)) != len(multiples):
                raise ValueError(f"{key} must be distinct, got {list(multiples)}")

    def of(self, env: str) -> list[float]:
        """The multiples meta-trained on ``env``."""
        return list(self.per_env.get(env, self.multiples))


@dataclasses.dataclass(frozen=True)
class FitnessSection:
    baseline_seeds: int = dataclasses.field(
        default=16, metadata={"min": 2, "help": "PPO, DPO and random-policy seeds per horizon (the normalizer)"}
    )
    cache_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "where baseline returns are cached; null = <run root>/.rl_baselines"}
    )
    final_evaluation: bool = dataclasses.field(
        default=True,
        metadata={"help": "after the last generation, choose between the final and the best mean on fresh seeds and "
                          "score the chosen one (2 x (popsize + 1) x train_seeds runs per bucket); false: "
                          "best_drift.npz is the final ES mean, unscored (score it with discover transfer)"},
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
    horizon: HorizonSection = dataclasses.field(default_factory=HorizonSection)
    es: ESSection = dataclasses.field(default_factory=ESSection)
    fitness: FitnessSection = dataclasses.field(default_factory=FitnessSection)
    log: LogSection = dataclasses.field(default_factory=LogSection)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.drift.family not in LEARNED_FAMILIES:
            raise ValueError(f"drift.family must be a learned family ({', '.join(LEARNED_FAMILIES)}) to search, "
                             f"got {self.drift.family!r}")
        for env in self.env.names:
            validate(self.ppo_config_of(env))
        unknown = [env for env in self.horizon.per_env if env not in self.env.names]
        if unknown:
            raise ValueError(f"horizon.per_env: {unknown[0]!r} is not a meta-training env "
                             f"(env.name and env.extra: {', '.join(self.env.names)})")

    @property
    def ppo_config(self) -> PPOConfig:
        """The PPO config of ``env.name`` at horizon multiple 1 (``ppo.total_timesteps``)."""
        return self.ppo_config_of(self.env.name)

    def ppo_config_of(self, env: str) -> PPOConfig:
        """The PPO config of one meta-training env at horizon multiple 1: its defaults and the ppo section."""
        return rl_envs.ppo_config(env, self.ppo)

    def ppo_at(self, multiple: float, env: str | None = None) -> PPOConfig:
        """The PPO config at one horizon multiple (at least one update), on ``env`` (default ``env.name``)."""
        return rl_envs.at_horizon(self.ppo_config_of(env or self.env.name), multiple)
