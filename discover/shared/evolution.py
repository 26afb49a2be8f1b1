"""Regularized evolution over update-rule programs: the population logic, host side.

The population is a list of :class:`Individual` in birth order (oldest first). Each generation picks
parents by tournament, mutates them (:func:`discover.language.mutation.mutate`), removes dead code, and
fingerprints every child in one batched call; a child whose fingerprint is known reuses its fitness,
the others are scored together (see :mod:`discover.searches.update_rules.search`). Adding a child kills the oldest member.

Everything random draws from one ``numpy.random.Generator`` whose state is checkpointed, so a run
resumed from a checkpoint repeats exactly what an uninterrupted run does.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from discover.language.analysis import fingerprints, live_statements, remove_dead_code
from discover.language.mutation import mutate
from discover.language.program import Program, Statement, parse


@dataclasses.dataclass(frozen=True)
class Individual:
    """One member (a population is a list of them in birth order). ``program`` keeps its dead code (a neutral reservoir for later mutations); its fitness
    is that of ``remove_dead_code(program)``, whose functional fingerprint is ``fingerprint``."""

    program: Program
    fitness: float
    fingerprint: str
    birth: int  # creation counter: smaller is older
    parent: str | None = None  # live code of the parent (for the diff shown in TensorBoard)
    mutation: str = "seed"

    def to_json(self) -> dict:
        return {"program": str(self.program), "fitness": self.fitness, "fingerprint": self.fingerprint,
                "birth": self.birth, "parent": self.parent, "mutation": self.mutation}

    @classmethod
    def from_json(cls, d: Mapping) -> Individual:
        return cls(program=parse(d["program"], max_len=10**6), fitness=float(d["fitness"]),
                   fingerprint=d["fingerprint"], birth=int(d["birth"]), parent=d.get("parent"),
                   mutation=d.get("mutation", "seed"))


@dataclasses.dataclass(frozen=True)
class Child:
    """A freshly mutated program with what the analysis found out about it."""

    program: Program  # as mutated
    live: Program  # dead code removed: what is fingerprinted and scored
    fingerprint: str
    parent: Program
    mutation: str
    dead: int  # dead statements in `program`


# ----------------------------------------------------------------------------------------------------------
# Selection and replacement


def tournament(population: Sequence[Individual], rng: np.random.Generator, size: int) -> Individual:
    """The fittest of ``size`` members drawn without replacement (ties: the younger one)."""
    idx = rng.choice(len(population), size=min(size, len(population)), replace=False)
    return min((population[int(i)] for i in idx), key=lambda ind: (ind.fitness, -ind.birth))


def add_member(population: list[Individual], child: Individual, capacity: int) -> list[Individual]:
    """Adds ``child`` to ``population`` (a list kept in birth order, changed in place and returned) and removes
    the oldest members beyond ``capacity``."""
    bisect.insort(population, child, key=lambda ind: ind.birth)
    del population[: max(0, len(population) - capacity)]
    return population


# ----------------------------------------------------------------------------------------------------------
# Children


def make_child(parent: Program, rng: np.random.Generator, space, weights: Mapping[str, float],
               max_tries: int) -> tuple[Program, str, int]:
    """``(child, mutation, invalid)``: a child of ``parent`` inside ``space``; a mutation that fails (gives
    the parent back or leaves the space) is counted in ``invalid`` and re-mutated, up to ``max_tries``."""
    invalid = 0
    canonical = getattr(space, "canonical", None)  # e.g. bias corrections follow their EMA's rate
    for _ in range(max_tries):
        child, kind = mutate(parent, rng, space, weights, max_tries=1)  # each failed try is counted here
        child = canonical(child) if canonical is not None else child
        if child != parent and kind != "none" and space.admits(child):
            return child, kind, invalid
        invalid += 1
    return parent, "none", invalid


def analyse(programs: Sequence[Program], max_len: int, n_state: int, pad_to: int) -> tuple[list[Program], list[str], list[int]]:
    """(live programs, fingerprints, dead statement counts) with ONE batched fingerprint call; the batch is
    padded to ``pad_to`` so the fingerprint function compiles once per run."""
    live, dead = dead_code(programs)
    return live, batch_fingerprints(live, max_len, n_state, pad_to), dead


def dead_code(programs: Sequence[Program]) -> tuple[list[Program], list[int]]:
    """(live programs, dead statement counts): the static half of :func:`analyse`."""
    return [remove_dead_code(p) for p in programs], [len(p) - sum(live_statements(p)) for p in programs]


def batch_fingerprints(live: Sequence[Program], max_len: int, n_state: int, pad_to: int) -> list[str]:
    """Fingerprints of ``live`` in one call padded to ``pad_to``: the batched half of :func:`analyse`."""
    if not live:
        return []
    padded = list(live) + [live[0]] * max(0, pad_to - len(live))
    return fingerprints(padded, max_len, n_state)[: len(live)]


# ----------------------------------------------------------------------------------------------------------
# Hall of fame


@dataclasses.dataclass(frozen=True)
class HallEntry:
    """A distinct program that went through the funnel: ranked by ``metaval`` (then ``fitness``)."""

    fingerprint: str
    program: str  # live code
    fitness: float  # proxy fitness
    metaval: float  # meta-validation fitness (the proxy fitness when the funnel has no tasks)
    generation: int
    parent: str | None = None
    origin: str = "evolution"  # or "refined"
    # The lr multiplier (x tuned AdamW's lr) each task's score was reached with: meta-validation tasks, or the
    # proxy tasks when the funnel has none. None where unknown (checkpoints of older runs).
    lr_multipliers: list[float] | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> HallEntry:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    @property
    def rank_key(self) -> tuple:
        return (self.metaval, self.fitness, self.fingerprint)


def update_hall(hall: Sequence[HallEntry], new: Sequence[HallEntry], size: int) -> list[HallEntry]:
    """The ``size`` best distinct entries of both (an entry already present keeps its first record)."""
    by_fp = {e.fingerprint: e for e in hall}
    for e in new:
        by_fp.setdefault(e.fingerprint, e)
    return sorted(by_fp.values(), key=lambda e: e.rank_key)[:size]


def top_distinct(population: Sequence[Individual], k: int) -> list[Individual]:
    """The ``k`` fittest members with distinct fingerprints (ties: the younger one)."""
    out, seen = [], set()
    for ind in sorted(population, key=lambda i: (i.fitness, -i.birth)):
        if ind.fingerprint not in seen:
            seen.add(ind.fingerprint)
            out.append(ind)
            if len(out) == k:
                break
    return out


def program_diff(parent: str | None, child: str) -> str:
    """A unified diff of two program texts ('' when there is no parent)."""
    if parent is None:
        return ""
    lines = difflib.unified_diff(parent.splitlines(), child.splitlines(), "parent", "child", lineterm="", n=1)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Constants (for refinement by an evolution strategy)


def constant_slots(program: Program) -> list[tuple[int, int, bool]]:
    """``(statement, argument, is_rate)`` of every constant; ``is_rate``: an ``interp`` rate in (0, 1)."""
    slots = []
    for i, st in enumerate(program.statements):
        for k, a in enumerate(st.args):
            if not isinstance(a, str):
                slots.append((i, k, st.op == "interp" and k == 2 and 0.0 < a < 1.0))
    return slots


def scale_constants(program: Program, log2_scales: Sequence[float], rates: Sequence[bool] | None = None) -> Program:
    """Each constant ``c`` scaled by ``2^x`` (an interp rate ``a`` keeps below 1: ``1 - (1 - a) 2^x``; ``rates``
    says which constants count as rates, by default the interp rates of :func:`constant_slots`)."""
    slots = constant_slots(program)
    if len(slots) != len(log2_scales):
        raise ValueError(f"{len(log2_scales)} scales for {len(slots)} constants")
    if rates is not None:
        slots = [(i, k, bool(r)) for (i, k, _), r in zip(slots, rates)]
    statements = list(program.statements)
    for (i, k, is_rate), x in zip(slots, log2_scales):
        st = statements[i]
        c = st.args[k]
        factor = 2.0 ** float(np.clip(x, -60.0, 60.0))
        value = 1.0 - (1.0 - c) * factor if is_rate else c * factor
        # the shortest decimal of its float32 value: what the interpreter computes with, printed briefly
        value = float(str(np.float32(value))) if math.isfinite(value) else c
        args = st.args[:k] + (value,) + st.args[k + 1:]
        statements[i] = Statement(st.dst, st.op, args)
    return program.replace(statements=tuple(statements))


def live_text(program: Program) -> str:
    """The program's text without its dead code (what the hall of fame and reports show)."""
    return str(remove_dead_code(program))
