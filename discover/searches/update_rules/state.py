"""The update-rule search's state (host objects) and its checkpoint encoding (JSON meta + arrays)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from discover.infra.checkpointing import CheckpointError, rng_from_json, rng_to_json
from discover.language.program import Program, ProgramError, parse
from discover.searches.update_rules.config import SearchConfig
from discover.shared.evolution import (
    HallEntry,
    Individual,
)
from search_spaces.update_rules import UpdateRuleSpace

CHECKPOINT_FORMAT = 1
# ----------------------------------------------------------------------------------------------------------
# Search state (host objects; saved as JSON meta + arrays in orbax checkpoints)
# ----------------------------------------------------------------------------------------------------------
TOTALS = ("children", "hits", "scored", "invalid", "nonfinite", "dead_statements", "statements")


@dataclasses.dataclass
class SearchState:
    generation: int  # generations completed
    births: int  # children (and seeds) created so far: the age counter
    population: list[Individual]
    cache: dict[str, float]  # fingerprint -> proxy fitness
    metaval_cache: dict[str, float]  # fingerprint -> meta-validation fitness
    hall: list[HallEntry]
    totals: dict[str, int]
    best_score: float  # best hall-of-fame score so far (for restarts)
    best_generation: int
    restarts: int
    refined: bool
    rng: np.random.Generator
    seed_fitness: float = math.inf  # best fitness among the seed programs
    seed_metaval: float = math.inf
    lr_choice: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # fp -> multiplier per proxy task
    metaval_lr: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # fp -> per meta-validation task


def state_to_checkpoint(state: SearchState) -> tuple[dict, dict]:
    arrays = {
        "fitness": np.array([i.fitness for i in state.population], np.float64),
        "birth": np.array([i.birth for i in state.population], np.int64),
    }
    meta = {
        "format": CHECKPOINT_FORMAT,
        "generation": state.generation,
        "births": state.births,
        "population": [i.to_json() for i in state.population],
        "cache": state.cache,
        "metaval_cache": state.metaval_cache,
        "hall": [e.to_json() for e in state.hall],
        "totals": state.totals,
        "best_score": state.best_score,
        "best_generation": state.best_generation,
        "restarts": state.restarts,
        "refined": state.refined,
        "rng": rng_to_json(state.rng),
        "seed_fitness": state.seed_fitness,
        "seed_metaval": state.seed_metaval,
        "lr_choice": state.lr_choice,
        "metaval_lr": state.metaval_lr,
    }
    return arrays, meta


def _checked_program(text: object, where: str, space: UpdateRuleSpace) -> Program:
    """``text`` parsed and inside ``space``; CheckpointError naming ``where`` otherwise."""
    try:
        program = parse(text, max_len=10**6)  # any length parses: the space's limit is checked below
    except ProgramError as exc:
        raise CheckpointError(f"{where}: program does not parse ({exc})") from None
    problems = space.problems(program)
    if problems:
        raise CheckpointError(f"{where}: program is outside the run's search space ({'; '.join(problems)})")
    return program


def state_from_checkpoint(
    arrays: dict, meta: dict, space: UpdateRuleSpace, step: int | None = None
) -> SearchState:
    """The search state a checkpoint holds. Every program in it (population and hall of fame) must parse and
    lie inside ``space`` (the run's search space): CheckpointError (one line, naming the checkpoint step and
    the program) otherwise, as for any other malformed field. ``step`` defaults to the step the runner saves
    this state under (generations done, plus one once refined)."""
    if step is None:
        try:
            step = int(meta["generation"]) + int(bool(meta["refined"]))
        except (KeyError, TypeError, ValueError):
            step = None
    where = f"checkpoint step {step}" if step is not None else "checkpoint"
    try:
        population_json, hall_json = list(meta["population"]), list(meta["hall"])
        for i, d in enumerate(population_json):
            _checked_program(d["program"], f"{where}: population[{i}]", space)
        for i, d in enumerate(hall_json):
            _checked_program(d["program"], f"{where}: hall of fame[{i}]", space)
        population = [Individual.from_json(d) for d in population_json]
        if len(population) != len(arrays["fitness"]) or len(population) != len(arrays["birth"]):
            raise ValueError(f"{len(population)} programs but {len(arrays['fitness'])} fitness values")
        # The arrays carry the numbers under the checkpoint's checksum: they win over the JSON copy.
        population = [dataclasses.replace(ind, fitness=float(f), birth=int(b))
                      for ind, f, b in zip(population, arrays["fitness"], arrays["birth"])]
        return SearchState(
            generation=int(meta["generation"]), births=int(meta["births"]), population=population,
            cache={k: float(v) for k, v in meta["cache"].items()},
            metaval_cache={k: float(v) for k, v in meta["metaval_cache"].items()},
            hall=[HallEntry.from_json(d) for d in hall_json],
            totals={k: int(v) for k, v in meta["totals"].items()},
            best_score=float(meta["best_score"]), best_generation=int(meta["best_generation"]),
            restarts=int(meta["restarts"]), refined=bool(meta["refined"]), rng=rng_from_json(meta["rng"]),
            seed_fitness=float(meta["seed_fitness"]), seed_metaval=float(meta["seed_metaval"]),
            lr_choice={k: [float(x) for x in v] for k, v in meta.get("lr_choice", {}).items()},
            metaval_lr={k: [float(x) for x in v] for k, v in meta.get("metaval_lr", {}).items()},
        )
    except CheckpointError as exc:
        if str(exc).startswith(where):
            raise
        raise CheckpointError(f"{where}: {exc}") from None
    except KeyError as exc:
        raise CheckpointError(
            f"{where}: search state has no {exc.args[0]!r} (saved by another version?)"
        ) from None
    except (AttributeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: search state is malformed ({type(exc).__name__}: {exc})") from None


def _template(config: SearchConfig) -> dict:
    P = config.evolution.population
    return {"fitness": np.zeros((P,), np.float64), "birth": np.zeros((P,), np.int64)}
