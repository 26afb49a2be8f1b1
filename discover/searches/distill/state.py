"""The distillation search's state (host objects) and its checkpoint encoding (JSON meta + arrays)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from discover.infra.checkpointing import CheckpointError, rng_from_json, rng_to_json
from discover.language.drift_program import DriftProgram
from discover.language.program import ProgramError
from discover.searches.distill.mutation import DriftSpace

CHECKPOINT_FORMAT = 1
TOTALS = ("children", "hits", "scored", "invalid", "nonfinite", "rl_checks")


@dataclasses.dataclass(frozen=True)
class Member:
    """One program of the population (kept with its dead code); ``fitness`` is that of its live code."""

    program: DriftProgram
    fitness: float
    fingerprint: str
    birth: int
    parent: str | None = None
    mutation: str = "start"

    def to_json(self) -> dict:
        return {"program": str(self.program), "fitness": self.fitness, "fingerprint": self.fingerprint,
                "birth": self.birth, "parent": self.parent, "mutation": self.mutation}


@dataclasses.dataclass(frozen=True)
class HallEntry:
    """A distinct program that went through the funnel. ``rl``: its normalized return (None: not checked);
    ``passed``: whether that reached ``funnel.min_return`` x the network's (None: no RL check)."""

    fingerprint: str
    program: str  # live code
    fitness: float
    generation: int
    rl: float | None = None
    passed: bool | None = None
    parent: str | None = None
    origin: str = "evolution"  # or "refined"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> HallEntry:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    @property
    def rank_key(self) -> tuple:
        """Formulas that pass the RL check (or are not checked) first, by fitness; then failures, by return."""
        if self.passed is False:
            rl = self.rl if self.rl is not None and math.isfinite(self.rl) else -math.inf
            return (1, -rl, self.fitness, self.fingerprint)
        return (0, self.fitness, 0.0, self.fingerprint)


@dataclasses.dataclass
class DistillState:
    generation: int  # generations completed
    births: int
    population: list[Member]
    cache: dict[str, float]  # fingerprint -> fitness 1
    rl_cache: dict[str, float]  # fingerprint -> normalized return
    hall: list[HallEntry]
    totals: dict[str, int]
    rng: np.random.Generator
    refined: bool = False
    start_fitness: float = math.inf  # best fitness among the start programs
    history: list[float] = dataclasses.field(default_factory=list)  # best fitness per generation
    refinement: list[dict] = dataclasses.field(default_factory=list)  # what refinement reported


def to_checkpoint(state: DistillState) -> tuple[dict, dict]:
    arrays = {"fitness": np.array([m.fitness for m in state.population], np.float64),
              "birth": np.array([m.birth for m in state.population], np.int64)}
    meta = {"format": CHECKPOINT_FORMAT, "generation": state.generation, "births": state.births,
            "population": [m.to_json() for m in state.population], "cache": state.cache,
            "rl_cache": state.rl_cache, "hall": [e.to_json() for e in state.hall], "totals": state.totals,
            "rng": rng_to_json(state.rng), "refined": state.refined, "start_fitness": state.start_fitness,
            "history": state.history, "refinement": state.refinement}
    return arrays, meta


def from_checkpoint(arrays: dict, meta: dict, space: DriftSpace) -> DistillState:
    """The state a checkpoint holds; every program must parse inside ``space`` (CheckpointError otherwise)."""
    where = f"checkpoint step {meta.get('generation', '?')}"
    try:
        population = []
        for d, f, b in zip(meta["population"], arrays["fitness"], arrays["birth"], strict=True):
            population.append(Member(program=space.parse(d["program"]), fitness=float(f), fingerprint=d["fingerprint"],
                                     birth=int(b), parent=d.get("parent"), mutation=d.get("mutation", "start")))
        for d in meta["hall"]:
            space.parse(d["program"])
        return DistillState(
            generation=int(meta["generation"]), births=int(meta["births"]), population=population,
            cache={k: float(v) for k, v in meta["cache"].items()},
            rl_cache={k: float(v) for k, v in meta["rl_cache"].items()},
            hall=[HallEntry.from_json(d) for d in meta["hall"]], totals={k: int(v) for k, v in meta["totals"].items()},
            rng=rng_from_json(meta["rng"]), refined=bool(meta["refined"]), start_fitness=float(meta["start_fitness"]),
            history=[float(x) for x in meta["history"]], refinement=list(meta.get("refinement", [])))
    except ProgramError as exc:
        raise CheckpointError(f"{where}: a program does not parse in this run's space ({exc})") from None
    except KeyError as exc:
        raise CheckpointError(f"{where}: search state has no {exc.args[0]!r} (saved by another version?)") from None
    except (AttributeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: search state is malformed ({type(exc).__name__}: {exc})") from None


def template(population: int) -> dict:
    return {"fitness": np.zeros((population,), np.float64), "birth": np.zeros((population,), np.int64)}
