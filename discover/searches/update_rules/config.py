"""The update-rule search's config schema (sections, defaults, help) and its loader."""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import pathlib
from collections.abc import Sequence

from discover.infra.config import load_config
from discover.infra.experiments import default_config_path
from discover.infra.search_config import BaseSearchConfig, redefault
from discover.language.mutation import DEFAULT_WEIGHTS
from discover.language.ops import OP_BY_NAME
from discover.shared import cbo
from discover.shared.es import STRATEGY_NAMES
from discover.shared.scoring import AGGREGATES, ROBUST_LR_MULTIPLIERS
from envs import tasks as task_registry
from search_spaces.update_rules import PROGRAM_NAMES, TIME_USES, UpdateRuleSpace, seed


# ----------------------------------------------------------------------------------------------------------
# Config schema
# ----------------------------------------------------------------------------------------------------------
class _RegisteredTasks(collections.abc.Sequence):
    """The names of the registered tasks, read when a config is checked (tasks may be registered late)."""

    def __getitem__(self, i):
        return task_registry.task_names()[i]

    def __len__(self) -> int:
        return len(task_registry.task_names())


@dataclasses.dataclass(frozen=True)
class SpaceSection:
    ops: list[str] | None = dataclasses.field(
        default=None, metadata={"choices": OP_BY_NAME, "help": "ops mutation may draw; null = every op"})
    max_len: int = dataclasses.field(default=16, metadata={"min": 1, "max": 256, "help": "most statements"})
    n_state: int = dataclasses.field(default=4, metadata={"min": 0, "max": 16, "help": "most state variables"})
    allow_h: bool = dataclasses.field(
        default=False, metadata={"help": "programs may read a Hutchinson diagonal-Hessian estimate h (slower)"})

    time: str = dataclasses.field(
        default="free", metadata={"choices": list(TIME_USES), "help": "where programs may read the step count t: "
                                  "free, or bias_corrections (only as Adam's S / (1 - pow(b, t)) of an EMA S of "
                                  "rate b, so a rule cannot build a step-size schedule of its own from t)"})

    def space(self) -> UpdateRuleSpace:
        kw = {} if self.ops is None else {"ops": tuple(self.ops)}
        return UpdateRuleSpace(max_len=self.max_len, n_state=self.n_state, allow_h=self.allow_h, time=self.time,
                               **kw)


@dataclasses.dataclass(frozen=True)
class EvolutionSection:
    population: int = dataclasses.field(default=64, metadata={"min": 2, "help": "programs alive at once"})
    tournament: int = dataclasses.field(default=8, metadata={"min": 1, "help": "tournament size"})
    batch: int = dataclasses.field(
        default=32, metadata={"min": 1, "help": "novel children trained together per generation (fixed shape)"})
    max_rounds: int = dataclasses.field(
        default=4, metadata={"min": 1, "help": "mutation rounds per generation to fill the batch with novel children"})
    generations: int = dataclasses.field(default=100, metadata={"min": 0, "help": "generations"})
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
    tasks: list[str] = dataclasses.field(
        default_factory=lambda: ["mlp_regression_proxy"],
        metadata={"choices": _RegisteredTasks(), "help": "proxy tasks a candidate trains on (envs.tasks); "
                                                         "ignored when pool > 0"})
    pool: int = dataclasses.field(
        default=0, metadata={"min": 0, "max": 256, "help": "sample this many proxy tasks from the task "
                                                           "distribution of envs.task_pool (seeded by seed); "
                                                           "0 = use tasks"})
    per_generation: int = dataclasses.field(
        default=0, metadata={"min": 0, "help": "proxy tasks each generation scores its children on, rotating "
                                               "through the pool or task list; 0 = all of them"})
    loss_scale_range: list[float] | None = dataclasses.field(
        default=None, metadata={"min": 1e-9, "max": 1e9, "help": "[low, high]: each generation rescales each "
                                                                 "task's training loss (and gradients) by a factor "
                                                                 "log-uniform in it; null = no augmentation"})
    steps: int | None = dataclasses.field(
        default=None, metadata={"min": 1, "help": "training steps per task; null = each task's own"})
    train_seeds: int = dataclasses.field(
        default=1, metadata={"min": 1, "help": "training seeds per candidate", "renamed_from": "seeds"})
    lr_multipliers: list[float] = dataclasses.field(
        default_factory=lambda: list(ROBUST_LR_MULTIPLIERS),
        metadata={"min": 1e-6, "max": 1e6, "help": "lr input = tuned AdamW lr x each; a candidate keeps its best "
                                                   "(and AdamW's reference is its best over the same sweep)"})
    lr_schedule: str = dataclasses.field(
        default="constant", metadata={"choices": task_registry.LR_SCHEDULES,
                                      "help": "lr schedule of every task of the run (proxy, meta-validation, "
                                              "held-out targets) and every optimizer on it, AdamW included"})
    worst: float = dataclasses.field(
        default=1000.0, metadata={"min": 1.0, "help": "fitness of a diverged / NaN candidate (and the cap)"})
    reference_cache: str | None = dataclasses.field(
        default=None, metadata={"help": "AdamW reference cache file; null = <run root>/.baselines.json"})

    def __post_init__(self) -> None:
        if not self.tasks and not self.pool:
            raise ValueError("tasks: at least one proxy task is needed (or a pool)")
        if self.loss_scale_range is not None and (len(self.loss_scale_range) != 2
                                                  or self.loss_scale_range[0] > self.loss_scale_range[1]):
            raise ValueError(f"loss_scale_range: expected [low, high] with low <= high, got {self.loss_scale_range}")
        if not self.lr_multipliers:
            raise ValueError("lr_multipliers: at least one multiplier is needed")


@dataclasses.dataclass(frozen=True)
class FunnelSection:
    tasks: list[str] = dataclasses.field(
        default_factory=list,
        metadata={"choices": _RegisteredTasks(), "help": "meta-validation tasks; [] = rank by proxy fitness"})
    steps: int | None = dataclasses.field(
        default=None, metadata={"min": 1, "help": "training steps per task; null = each task's own"})
    every: int = dataclasses.field(default=10, metadata={"min": 1, "help": "generations between funnels"})
    top_k: int = dataclasses.field(default=4, metadata={"min": 1, "help": "distinct programs re-scored"})
    train_seeds: int = dataclasses.field(
        default=1, metadata={"min": 1, "help": "training seeds on meta-validation", "renamed_from": "seeds"})
    aggregate: str = dataclasses.field(
        default="mean", metadata={"choices": AGGREGATES,
                                  "help": "a program's meta-validation fitness over its tasks: the mean, or its worst "
                                          "task (a gain on one task cannot hide a loss on another); the hall, the "
                                          "robustness check and simplify all use it"})


@dataclasses.dataclass(frozen=True)
class HallOfFameSection:
    size: int = dataclasses.field(default=10, metadata={"min": 1, "help": "distinct programs kept"})


@dataclasses.dataclass(frozen=True)
class RestartSection:
    patience: int = dataclasses.field(
        default=0, metadata={"min": 0, "help": "restart from the best after this many generations without "
                                               "improvement; 0 = never"})


@dataclasses.dataclass(frozen=True)
class RefineSection:
    top_k: int = dataclasses.field(default=0, metadata={"min": 0, "help": "hall-of-fame programs refined; 0 = off"})
    strategy: str = dataclasses.field(
        default="CMA_ES", metadata={"choices": STRATEGY_NAMES, "help": "evosax strategy"})
    generations: int = dataclasses.field(default=10, metadata={"min": 1, "help": "ES generations per program"})
    sigma: float = dataclasses.field(
        default=0.5, metadata={"min": 0.0, "help": "initial std of the log2 scale of each constant"})
    lr: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "help": "ES optimizer lr (Open_ES & co)"})
    # CBO (strategy: CBO, discover.shared.cbo): particles start with std `sigma` around scale 1; alpha weighs
    # the centered ranks of their fitness.
    cbo_alpha: float = cbo.config_field("alpha")
    cbo_lambda: float = cbo.config_field("lambda")
    cbo_sigma: float = cbo.config_field("sigma")
    cbo_dt: float = cbo.config_field("dt")


@dataclasses.dataclass(frozen=True)
class HeldoutSection:
    enabled: bool = dataclasses.field(
        default=True, metadata={"help": "when the search ends: robustness check, faithful simplify and transfer of "
                                        "the best programs to held-out target tasks (false: skip, for quick runs)"})
    top_k: int = dataclasses.field(
        default=2, metadata={"min": 1, "help": "best hall-of-fame programs (by meta-validation) checked"})
    train_seeds: int = dataclasses.field(
        default=2, metadata={"min": 1, "help": "fresh training seeds of the robustness check"})
    jitter: float = dataclasses.field(
        default=0.01, metadata={"min": 0.0, "max": 0.5, "help": "relative jitter of every constant"})
    jitters: int = dataclasses.field(default=4, metadata={"min": 1, "help": "jittered copies scored per program"})
    fragility: float = dataclasses.field(
        default=0.05, metadata={"min": 0.0, "help": "a program whose fitness moves by more than this (relative) "
                                                    "under jitter or fresh seeds is fragile: not a discovery"})
    tolerance: float = dataclasses.field(
        default=0.01, metadata={"min": 0.0, "help": "simplify: an edit keeps the fitness within this (relative)"})
    targets: list[str] = dataclasses.field(
        default_factory=list,
        metadata={"choices": _RegisteredTasks(), "help": "target tasks the simplified winner is transferred to, "
                                                         "against tuned baselines; [] = no transfer"})
    baselines: list[str] = dataclasses.field(
        default_factory=lambda: ["adamw"], metadata={"help": "optimizers tuned alongside on the targets"})
    seeds: int = dataclasses.field(
        default=5, metadata={"min": 2, "help": "fresh training seeds per optimizer on each target"})
    replicate_seeds: int = dataclasses.field(
        default=10, metadata={"min": 0, "help": "every verdict on a target that is not a tie is tested again on this "
                                                "many further seeds; only a verdict both tests give is confirmed "
                                                "(0: off; 1 is refused)"})

    def __post_init__(self):
        if self.replicate_seeds == 1:
            raise ValueError("replicate_seeds: 0 (off) or >= 2 (a paired interval needs two seeds), got 1")


@dataclasses.dataclass(frozen=True)
class LogSection:
    text_every: int = dataclasses.field(
        default=10, metadata={"min": 1, "help": "generations between top-program texts in TensorBoard"})
    top_programs: int = dataclasses.field(default=3, metadata={"min": 1, "help": "programs in each text"})


@dataclasses.dataclass(frozen=True)
class SearchConfig(BaseSearchConfig):
    kind: str = redefault("kind", "update_rule", choices=["update_rule"])
    start_from: list[str] = dataclasses.field(
        default_factory=lambda: ["adamw"],
        metadata={"choices": PROGRAM_NAMES, "help": "seeds or shipped discoveries the population starts from (cycled)",
                  "renamed_from": "seeds"})
    space: SpaceSection = dataclasses.field(default_factory=SpaceSection)
    evolution: EvolutionSection = dataclasses.field(default_factory=EvolutionSection)
    fitness: FitnessSection = dataclasses.field(default_factory=FitnessSection)
    funnel: FunnelSection = dataclasses.field(default_factory=FunnelSection)
    hall_of_fame: HallOfFameSection = dataclasses.field(default_factory=HallOfFameSection)
    restart: RestartSection = dataclasses.field(default_factory=RestartSection)
    refine: RefineSection = dataclasses.field(default_factory=RefineSection)
    heldout: HeldoutSection = dataclasses.field(default_factory=HeldoutSection)
    log: LogSection = dataclasses.field(default_factory=LogSection)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.start_from:
            raise ValueError("start_from: at least one seed program is needed")
        space = self.space.space()
        for name in self.start_from:
            problems = space.problems(seed(name))
            if problems:
                raise ValueError(f"start_from: {name!r} is outside the search space ({'; '.join(problems)})")


def load_search_config(path: str | pathlib.Path | None = None, overrides: Sequence[str] = ()) -> SearchConfig:
    """The validated config of ``path`` (``experiments/quickstart.yaml`` when None) with ``--set`` overrides;
    raises :class:`discover.infra.config.ConfigError` (one line: file, line, key, what is wrong)."""
    if path is None:
        path = default_config_path()
    return load_config(SearchConfig, path, overrides)
