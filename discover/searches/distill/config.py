"""The distillation search's config schema (sections, defaults, help)."""

from __future__ import annotations

import dataclasses

from discover.infra.search_config import BaseSearchConfig, CheckpointSection, redefault
from discover.language.drift_program import DEFAULT_CAP, DRIFT_OPS, parse_drift
from discover.language.program import ProgramError
from discover.searches.distill.mutation import DEFAULT_WEIGHTS, START_PROGRAMS, start_program
from discover.shared.es import STRATEGY_NAMES

# The ops mutation draws by default: enough for DPO's and PPO's closed forms, few enough to search.
DEFAULT_OPS = ["add", "sub", "mul", "div", "max", "min", "clip", "neg", "abs", "sign", "square", "exp", "log",
               "tanh", "relu"]


@dataclasses.dataclass(frozen=True)
class SpaceSection:
    ops: list[str] = dataclasses.field(
        default_factory=lambda: list(DEFAULT_OPS),
        metadata={"choices": DRIFT_OPS, "help": "ops mutation may draw (elementwise ops of discover's language)"})
    max_len: int = dataclasses.field(default=24, metadata={"min": 1, "max": 64, "help": "most statements"})
    cap: float = dataclasses.field(
        default=DEFAULT_CAP, metadata={"min": 1e-6, "max": 1e6,
                                       "help": "drift = min(relu(f), cap * (r-1)^2): the constraint's parabola"})

    def __post_init__(self) -> None:
        if not self.ops:
            raise ValueError("ops: at least one op is needed")


@dataclasses.dataclass(frozen=True)
class SamplesSection:
    fit: int = dataclasses.field(default=4096, metadata={"min": 16, "help": "samples the fit error is computed on"})
    holdout: int = dataclasses.field(
        default=2048, metadata={"min": 16, "help": "other samples of the same runs: the reported error"})
    uniform_share: float = dataclasses.field(
        default=0.0, metadata={"min": 0.0, "max": 1.0,
                               "help": "share of samples drawn uniformly over r in [0.5, 1.5], A in [-3, 3], "
                                       "n/N in [0, 1] instead of recorded from PPO (1 with funnel.top_k 0: "
                                       "no PPO run at all)"})


@dataclasses.dataclass(frozen=True)
class EvolutionSection:
    population: int = dataclasses.field(default=64, metadata={"min": 2, "help": "programs alive at once"})
    tournament: int = dataclasses.field(default=8, metadata={"min": 1, "help": "tournament size"})
    batch: int = dataclasses.field(
        default=32, metadata={"min": 1, "help": "novel children scored together per generation (fixed shape)"})
    max_rounds: int = dataclasses.field(
        default=4, metadata={"min": 1, "help": "mutation rounds per generation to fill the batch"})
    generations: int = dataclasses.field(default=60, metadata={"min": 0, "help": "generations"})
    mutation: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS), metadata={"min": 0.0, "help": "weight of each mutation"})
    max_tries: int = dataclasses.field(
        default=20, metadata={"min": 1, "help": "re-mutations of an invalid child before giving up"})

    def __post_init__(self) -> None:
        unknown = [k for k in self.mutation if k not in DEFAULT_WEIGHTS]
        if unknown:
            raise ValueError(f"mutation: unknown mutation {unknown[0]!r} (known: {', '.join(DEFAULT_WEIGHTS)})")
        if not any(v > 0 for v in self.mutation.values()):
            raise ValueError("mutation: at least one weight must be > 0")
        if self.tournament > self.population:
            raise ValueError(f"tournament ({self.tournament}) must be <= population ({self.population})")


@dataclasses.dataclass(frozen=True)
class FitnessSection:
    slope_weight: float = dataclasses.field(
        default=1.0, metadata={"min": 0.0, "help": "weight of the d drift / d r error (what the policy gradient "
                                                   "sees) next to the drift's own error"})
    parsimony: float = dataclasses.field(
        default=0.002, metadata={"min": 0.0, "help": "added to the fitness per live statement"})
    worst: float = dataclasses.field(
        default=1000.0, metadata={"min": 1.0, "help": "fitness of a NaN/inf candidate (and the cap)"})


@dataclasses.dataclass(frozen=True)
class FunnelSection:
    top_k: int = dataclasses.field(
        default=3, metadata={"min": 0, "help": "distinct best programs RL-checked per funnel; 0 = no RL check"})
    every: int = dataclasses.field(default=10, metadata={"min": 1, "help": "generations between funnels"})
    train_seeds: int = dataclasses.field(
        default=2, metadata={"min": 1, "help": "PPO runs per RL check (also the runs samples are recorded from)"})
    min_return: float = dataclasses.field(
        default=0.9, metadata={"min": 0.0, "max": 2.0,
                               "help": "a formula passes when its normalized return >= this x the network's"})


@dataclasses.dataclass(frozen=True)
class HallOfFameSection:
    size: int = dataclasses.field(default=8, metadata={"min": 1, "help": "distinct programs kept"})


@dataclasses.dataclass(frozen=True)
class RefineSection:
    top_k: int = dataclasses.field(default=3, metadata={"min": 0, "help": "hall-of-fame programs refined; 0 = off"})
    strategy: str = dataclasses.field(
        default="Open_ES", metadata={"choices": STRATEGY_NAMES, "help": "evosax strategy"})
    tie_equal: bool = dataclasses.field(
        default=True, metadata={"help": "equal constants share one scale (DPO's alpha in x / alpha and alpha tanh)"})
    generations: int = dataclasses.field(default=60, metadata={"min": 1, "help": "ES generations per program"})
    sigma: float = dataclasses.field(
        default=0.2, metadata={"min": 0.0, "help": "std of the log2 scale of each constant"})
    lr: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "help": "ES optimizer lr (Open_ES & co)"})


@dataclasses.dataclass(frozen=True)
class LogSection:
    text_every: int = dataclasses.field(
        default=10, metadata={"min": 1, "help": "generations between top-program texts in TensorBoard"})


@dataclasses.dataclass(frozen=True)
class DistillConfig(BaseSearchConfig):
    kind: str = redefault("kind", "distill", choices=["distill"])
    name: str = redefault("name", "distill")
    checkpoint: CheckpointSection = dataclasses.field(default_factory=lambda: CheckpointSection(every=10))
    source: str | None = dataclasses.field(
        default=None, metadata={"help": "the drift to distill: a drift .npz or an RL-objective run directory "
                                        "(its best_drift.npz); `discover distill SOURCE` sets it"})
    start_from: list[str] = dataclasses.field(
        default_factory=lambda: ["taylor", "ppo", "dpo", "linear"],
        metadata={"choices": list(START_PROGRAMS), "help": "programs the population starts from (cycled); "
                                                           "taylor's constants are fitted to the samples"})
    space: SpaceSection = dataclasses.field(default_factory=SpaceSection)
    samples: SamplesSection = dataclasses.field(default_factory=SamplesSection)
    evolution: EvolutionSection = dataclasses.field(default_factory=EvolutionSection)
    fitness: FitnessSection = dataclasses.field(default_factory=FitnessSection)
    funnel: FunnelSection = dataclasses.field(default_factory=FunnelSection)
    hall_of_fame: HallOfFameSection = dataclasses.field(default_factory=HallOfFameSection)
    refine: RefineSection = dataclasses.field(default_factory=RefineSection)
    log: LogSection = dataclasses.field(default_factory=LogSection)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.start_from:
            raise ValueError("start_from: at least one start program is needed")
        for name in self.start_from:
            try:
                parse_drift(str(start_program(name)), max_len=self.space.max_len, ops=self.space.ops)
            except ProgramError as exc:
                raise ValueError(f"start_from: {name!r} is outside the search space ({exc})") from None
