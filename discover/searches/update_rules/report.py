"""What the update-rule search writes: TensorBoard scalars and texts, best.py, hall_of_fame.json."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from discover.infra.rundir import RunDir, TBLogger, program_markdown
from discover.language.program import parse
from discover.searches.update_rules.config import SearchConfig
from discover.searches.update_rules.state import SearchState
from discover.searches.update_rules.steps import SearchContext
from discover.shared.evolution import (
    HallEntry,
    live_text,
    program_diff,
    top_distinct,
)


# Logging and outputs
# ----------------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.5g}"


def top_programs_markdown(state: SearchState, k: int) -> str:
    """The ``k`` best distinct programs of the population: code, fitness, and the diff against the parent."""
    parts = []
    for rank, ind in enumerate(top_distinct(state.population, k), 1):
        live = live_text(ind.program)
        metaval = state.metaval_cache.get(ind.fingerprint)
        extra = [f"fitness {_fmt(ind.fitness)}" + (f", meta-validation {_fmt(metaval)}" if metaval is not None else "")
                 + f", mutation `{ind.mutation}`, born {ind.birth}"]
        diff = program_diff(ind.parent, live)
        if diff:
            extra.append(f"diff against the parent:\n\n```diff\n{diff}\n```")
        parts.append(program_markdown(live, title=f"#{rank}", extra="\n\n".join(extra)))
    return "\n\n".join(parts)


def _multipliers(values: Sequence[float] | None) -> str:
    return "?" if not values else ", ".join(f"{m:g}x" for m in values)


def _geomean(values: Sequence[float] | None) -> float:
    finite = [m for m in values or () if np.isfinite(m) and m > 0]
    return float(np.exp(np.mean(np.log(finite)))) if finite else float("nan")


def hall_markdown(hall: Sequence[HallEntry]) -> str:
    parts = []
    for rank, e in enumerate(hall, 1):
        extra = (f"meta-validation {_fmt(e.metaval)}, proxy {_fmt(e.fitness)}, generation {e.generation}, "
                 f"{e.origin}; best lr = tuned AdamW lr x {_multipliers(e.lr_multipliers)}")
        diff = program_diff(e.parent, e.program)
        if diff:
            extra += f"\n\ndiff against the parent:\n\n```diff\n{diff}\n```"
        parts.append(program_markdown(e.program, title=f"#{rank}", extra=extra))
    return "\n\n".join(parts)


def log_generation(tb: TBLogger, state: SearchState, stats: dict, seconds: float, ctx: SearchContext) -> dict:
    g = state.generation
    fitness = np.array([i.fitness for i in state.population])
    children = max(stats.get("children", 0), 1)
    totals = state.totals
    scalars = {
        "fitness/best": fitness.min(),
        "fitness/median": np.median(fitness),
        "fitness/hall_of_fame_best": state.hall[0].fitness,
        "fitness/metaval_best": state.hall[0].metaval,
        "cache/hit_rate": stats.get("hits", 0) / children,
        "cache/hit_rate_total": totals["hits"] / max(totals["children"], 1),
        "cache/size": len(state.cache),
        "children/count": stats.get("children", 0),
        "children/scored": stats.get("scored", 0),
        "children/invalid": stats.get("invalid", 0),
        "children/nonfinite": stats.get("nonfinite", 0),
        "children/dead_share": stats.get("dead_statements", 0) / max(stats.get("statements", 0), 1),
        "population/distinct": len({i.fingerprint for i in state.population}),
        "lr/hall_best_multiplier": _geomean(state.hall[0].lr_multipliers),
        "search/restarts": state.restarts,
        "speed/candidates_per_s": stats.get("scored", 0) / max(seconds, 1e-9),
        "speed/children_per_s": stats.get("children", 0) / max(seconds, 1e-9),
        "speed/generation_s": seconds,
    }
    tb.scalars(g, scalars)
    tb.histogram("fitness/population", fitness[fitness < ctx.config.fitness.worst], g)  # failures: children/*
    chosen = [_geomean(state.lr_choice.get(i.fingerprint)) for i in state.population]
    chosen = np.log10([m for m in chosen if np.isfinite(m)])
    if chosen.size:
        tb.histogram("lr/population_log10_multiplier", chosen, g)
    if g % ctx.config.log.text_every == 0 or g == ctx.config.evolution.generations:
        tb.text("programs/top", top_programs_markdown(state, ctx.config.log.top_programs), g)
        tb.text("programs/best", hall_markdown(state.hall[:1]), g)
    return scalars


def proxy_description(config: SearchConfig) -> str:
    """The proxy tasks in words, for file headers."""
    fitness = config.fitness
    tasks = (f"a pool of {fitness.pool} tasks sampled from envs.task_pool (seed {config.seed})" if fitness.pool
             else ", ".join(fitness.tasks))
    extra = [f"{fitness.per_generation} per generation"] if fitness.per_generation else []
    if fitness.loss_scale_range:
        extra.append(f"loss rescaled by a factor in {fitness.loss_scale_range}")
    if fitness.lr_schedule != "constant":
        extra.append(f"every task and optimizer under a {fitness.lr_schedule} lr schedule")
    return tasks + (f" ({'; '.join(extra)})" if extra else "")


def metaval_description(config: SearchConfig) -> str:
    """The meta-validation tasks in words, with how their scores combine, for file headers."""
    if not config.funnel.tasks:
        return "-"
    worst = " (fitness: the worst task's)" if config.funnel.aggregate == "worst" else ""
    return ", ".join(config.funnel.tasks) + worst


def best_program_text(config: SearchConfig, entry: HallEntry) -> str:
    program = parse(entry.program, max_len=10**6).replace(name="discovered")
    header = [
        (f"# Discovered by `discover search` (run '{config.name}', seed {config.seed}, "
         f"generation {entry.generation}, {entry.origin})."),
        (f"# Fitness (val loss / tuned AdamW's, lower is better): proxy {_fmt(entry.fitness)}, "
         f"meta-validation {_fmt(entry.metaval)}."),
        f"# Best lr per task: tuned AdamW lr x {_multipliers(entry.lr_multipliers)}.",
        f"# Proxy tasks: {proxy_description(config)}; meta-validation: {metaval_description(config)}.",
    ]
    return "\n".join(header) + "\n" + str(program)


def write_outputs(run_dir: RunDir, config: SearchConfig, state: SearchState) -> None:
    run_dir.write_text("best.py", best_program_text(config, state.hall[0]))
    run_dir.write_json("hall_of_fame.json", {
        "ranked_by": (("meta-validation fitness" + (" (worst task)" if config.funnel.aggregate == "worst" else ""))
                      if config.funnel.tasks else "proxy fitness"),
        "entries": [e.to_json() for e in state.hall],
    })
