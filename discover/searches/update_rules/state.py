"""The update-rule search's state (host objects) and its checkpoint encoding (JSON meta + arrays)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from discover.searches.update_rules.config import SearchConfig
from discover.shared.evolution import (
    HallEntry,
    Individual,
)

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


def _rng_state_json(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)  # PCG64's 128-bit ints stay exact as text


def _rng_from_json(text: str) -> np.random.Generator:
    state = json.loads(text)
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


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
        "rng": _rng_state_json(state.rng),
        "seed_fitness": state.seed_fitness,
        "seed_metaval": state.seed_metaval,
    }
    return arrays, meta


def state_from_checkpoint(arrays: dict, meta: dict) -> SearchState:
    population = [Individual.from_json(d) for d in meta["population"]]
    # The arrays carry the numbers under the checkpoint's checksum: they win over the JSON copy.
    population = [dataclasses.replace(ind, fitness=float(f), birth=int(b))
                  for ind, f, b in zip(population, arrays["fitness"], arrays["birth"])]
    return SearchState(
        generation=int(meta["generation"]), births=int(meta["births"]), population=population,
        cache={k: float(v) for k, v in meta["cache"].items()},
        metaval_cache={k: float(v) for k, v in meta["metaval_cache"].items()},
        hall=[HallEntry.from_json(d) for d in meta["hall"]], totals={k: int(v) for k, v in meta["totals"].items()},
        best_score=float(meta["best_score"]), best_generation=int(meta["best_generation"]),
        restarts=int(meta["restarts"]), refined=bool(meta["refined"]), rng=_rng_from_json(meta["rng"]),
        seed_fitness=float(meta["seed_fitness"]), seed_metaval=float(meta["seed_metaval"]),
    )


def _template(config: SearchConfig) -> dict:
    P = config.evolution.population
    return {"fitness": np.zeros((P,), np.float64), "birth": np.zeros((P,), np.int64)}
