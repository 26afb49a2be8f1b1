"""Distillation: a closed-form drift program that behaves like a learned drift network (see the package doc).

Steps 1..G are generations of regularized evolution; step G+1 (when ``refine.top_k`` > 0) refines the
constants of the best programs with an evosax strategy. Outputs in the run directory: ``samples.npz`` (the
recorded states the fit uses) and ``reference.json`` (the network's and PPO's returns on the RL check's seeds),
reread on resume; ``distilled_drift.py`` (a module importing only jax: ``drift(ratio, advantage, progress,
log_horizon)``), ``distilled_drift.json`` (the same program in discover's drift language, loaded back without
executing anything by :func:`discover.shared.drift_io.load_distilled`), ``distill.png`` (network against
formula), ``hall_of_fame.json``, ``results.json``, TensorBoard events and orbax checkpoints.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from discover.infra.config import ConfigError, load_config
from discover.infra.rundir import RunDir, TBLogger, atomic_write_bytes, program_markdown
from discover.language.drift_program import formula
from discover.searches.distill.config import DistillConfig
from discover.searches.distill.export import hall_markdown, program_json, python_module
from discover.searches.distill.figures import distill_figure
from discover.searches.distill.fitness import FitScorer, RLCheck
from discover.searches.distill.mutation import DriftSpace, ppo_program
from discover.searches.distill.samples import FIELDS, load_source, make_samples, record, targets
from discover.searches.distill.state import DistillState, from_checkpoint, template, to_checkpoint
from discover.searches.distill.steps import Context, initial_state, run_funnel, run_generation, run_refinement
from discover.shared.drift_io import DISTILLED_JSON
from discover.shared.runner import Progress, Summary

PY_FILE, JSON_FILE, FIGURE_FILE = "distilled_drift.py", DISTILLED_JSON, "distill.png"


@dataclasses.dataclass
class DistillSummary(Summary):
    source: str = ""
    env: str = ""
    best_program: str = ""
    formula: str = ""
    cap: float = 0.0
    fit_error: float = float("nan")
    holdout_error: float = float("nan")
    uniform_share: float = 0.0
    start_fitness: float = float("nan")
    rl_normalized_return: float | None = None
    network_normalized_return: float | None = None
    passed: bool | None = None
    samples: dict = dataclasses.field(default_factory=dict)
    candidates_scored: int = 0
    cache_hit_rate: float = 0.0
    rl_checks: int = 0
    refinement: list = dataclasses.field(default_factory=list)

    def headline(self) -> list[str]:
        where = "on the states PPO visited" if self.uniform_share == 0 else (
            f"on the states PPO visited and on uniform draws, weighted {1 - self.uniform_share:g} : "
            f"{self.uniform_share:g}")
        lines = [f"drift = min(relu(f), {self.cap:g} (r-1)^2), f = {self.formula}",
                 (f"fit error {self.fit_error:.4f}, held-out {self.holdout_error:.4f} (relative mean squared error "
                  f"of the drift plus of d drift/dr against the network {where}; 0 = exact)")]
        if self.rl_normalized_return is not None:
            verdict = "passes" if self.passed else "does not pass"
            lines.append(f"RL check on {self.env} (PPO = 1): formula {self.rl_normalized_return:.3f}, network "
                         f"{self.network_normalized_return:.3f}; the formula {verdict} the check")
        return lines

    def hparam_metrics(self) -> dict[str, float]:
        out = {"fit_error": self.fit_error, "holdout_error": self.holdout_error}
        if self.rl_normalized_return is not None:
            out["rl_normalized_return"] = self.rl_normalized_return
        return out


@dataclasses.dataclass
class RunContext:
    search: Context
    run_dir: RunDir
    reference: dict


def _write_npz(path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _samples_and_reference(config: DistillConfig, source, run_dir: RunDir, progress: Progress) -> tuple[dict, dict]:
    """The run's samples and reference returns: from the run directory on resume, else recorded."""
    if run_dir.file("samples.npz").is_file() and run_dir.file("reference.json").is_file():
        with np.load(run_dir.file("samples.npz"), allow_pickle=False) as data:
            samples = {k: data[k] for k in data.files}
        return samples, run_dir.read_json("reference.json")
    seeds, s = config.funnel.train_seeds, config.samples
    if s.uniform_share >= 1.0 and config.funnel.top_k == 0:  # neither the samples nor an RL check need PPO runs
        states, returns = {name: np.zeros((0,), np.float32) for name in FIELDS}, np.zeros((0,))
    else:
        progress.phase(f"distill {config.name}: recording the states PPO visits ({seeds} runs with the network "
                       "drift)")
        states, returns = record(source, seeds, config.seed)
    samples = make_samples(states, s.fit, s.holdout, s.uniform_share, config.seed)
    reference = {"source": str(source.path), "env": source.env, "total_timesteps": source.ppo.total_timesteps,
                 "log_n": source.log_n, "recorded_states": len(states["r"]),
                 "network_returns": [None if not math.isfinite(x) else float(x) for x in returns]}
    return samples, reference


class DistillSearch:
    """Distillation as the runner drives it."""

    kind: ClassVar[str] = "distill"
    config_type: ClassVar[type] = DistillConfig

    def load_config(self, path: Any, overrides: Sequence[str] = ()) -> DistillConfig:
        config = load_config(DistillConfig, path, overrides)
        if config.source is None:
            raise ConfigError("missing: the drift to distill (`discover distill RUN_DIR_OR_DRIFT` sets it)",
                              source=str(path) if path is not None else "<defaults>", key="source")
        load_source(config.source)  # a one-line DriftFileError / InputError now, before a run directory exists
        return config

    def prepare(self, config: DistillConfig, run_dir: RunDir, progress: Progress) -> RunContext:
        source = load_source(config.source)
        space = DriftSpace(tuple(config.space.ops), config.space.max_len)
        samples, reference = _samples_and_reference(config, source, run_dir, progress)
        common = {"max_len": space.max_len, "cap": config.space.cap, "slope_weight": config.fitness.slope_weight,
                  "parsimony": config.fitness.parsimony, "worst": config.fitness.worst,
                  "batch": config.evolution.batch, "uniform_share": config.samples.uniform_share}
        fit = FitScorer.on(samples, "fit", source, *targets(source, samples, "fit"), **common)
        holdout = FitScorer.on(samples, "holdout", source, *targets(source, samples, "holdout"), **common)
        rl, network_score = None, float("nan")
        if config.funnel.top_k > 0:
            rl = RLCheck(source, config.funnel.train_seeds, config.seed, config.space.cap)
            if "ppo_returns" not in reference:
                progress.phase(f"distill {config.name}: PPO's returns on the RL check's seeds")
                ppo = rl.returns(ppo_program(source.family.config.ppo_clip), space.max_len)
                reference["ppo_returns"] = [None if not math.isfinite(x) else float(x) for x in ppo]
            rl.ppo_return = float(np.mean([np.nan if x is None else x for x in reference["ppo_returns"]]))
            network_score = rl.normalize([np.nan if x is None else x for x in reference["network_returns"]])
            reference["network_normalized_return"] = network_score
        if not run_dir.file("samples.npz").is_file():
            _write_npz(run_dir.file("samples.npz"), samples)
        run_dir.write_json("reference.json", reference)
        ctx = Context(config=config, space=space, source=source, fit=fit, holdout=holdout, rl=rl,
                      network_score=network_score)
        uniform = int(np.sum(samples.get("fit_uniform", 0))) + int(np.sum(samples.get("holdout_uniform", 0)))
        progress.note(f"distilling the {source.describe()}: {len(samples['fit_r'])} fit and "
                      f"{len(samples['holdout_r'])} held-out samples ({uniform} uniform draws; the others of "
                      f"{reference['recorded_states']} states recorded)")
        return RunContext(ctx, run_dir, reference)

    def init(self, ctx: RunContext) -> DistillState:
        return initial_state(ctx.search)

    def start_log(self, tb: TBLogger, state: DistillState, ctx: RunContext) -> None:
        tb.text("distill/start_programs", hall_markdown(state.hall), 0)

    def position(self, state: DistillState) -> int:
        return state.generation + int(state.refined)

    def total(self, ctx: RunContext) -> int:
        config = ctx.search.config
        return config.evolution.generations + int(config.refine.top_k > 0)

    def step(self, state: DistillState, ctx: RunContext) -> tuple[DistillState, dict]:
        config = ctx.search.config
        if state.generation >= config.evolution.generations:
            state, report = run_refinement(state, ctx.search)
            return state, {"refined": len(report)}
        state, stats = run_generation(state, ctx.search)
        g = state.generation
        if g % config.funnel.every == 0 or g == config.evolution.generations or ctx.search.rl is None:
            state, info = run_funnel(state, ctx.search)
            stats.update(info)
        return state, stats

    def log(self, tb: TBLogger, state: DistillState, metrics: dict, seconds: float, ctx: RunContext) -> str:
        config, g = ctx.search.config, state.generation
        if "refined" in metrics:
            tb.text("distill/hall_of_fame", hall_markdown(state.hall), g + 1)
            return f"refined the constants of {metrics['refined']} programs"
        tb.scalars(g, {"fitness/best": metrics["best"], "fitness/median": metrics["median"],
                       "hall/best_fitness": state.hall[0].fitness, "counts/scored": metrics.get("scored", 0),
                       "counts/cache_hits": metrics.get("hits", 0), "counts/invalid": metrics.get("invalid", 0),
                       "counts/rl_checked": metrics.get("rl_checked", 0), "time/generation_s": seconds})
        if g % config.log.text_every == 0 or g == config.evolution.generations:
            tb.text("distill/hall_of_fame", hall_markdown(state.hall), g)
        return f"gen {g}/{config.evolution.generations}  best fit {metrics['best']:.4f}  hall {state.hall[0].fitness:.4f}"

    def save(self, state: DistillState) -> tuple[dict, dict]:
        return to_checkpoint(state)

    def restore_like(self, ctx: RunContext) -> dict:
        return template(ctx.search.config.evolution.population)

    def restore(self, arrays: dict, meta: dict, ctx: RunContext) -> DistillState:
        return from_checkpoint(arrays, meta, ctx.search.space)

    def finish(self, state: DistillState, ctx: RunContext, tb: TBLogger) -> DistillSummary:
        search, run_dir, config = ctx.search, ctx.run_dir, ctx.search.config
        best = state.hall[0]
        program = search.space.parse(best.program)
        cap, source = config.space.cap, search.source
        fit_error, holdout_error = search.fit.error_of(program), search.holdout.error_of(program)
        rl_facts = {"formula_normalized_return": best.rl, "network_normalized_return": search.network_score,
                    "passed": best.passed, "train_seeds": config.funnel.train_seeds}
        facts = {"source": str(source.path), "env": source.env, "total_timesteps": source.ppo.total_timesteps,
                 "log_horizon": source.log_n, "fit_error": fit_error, "holdout_error": holdout_error,
                 "rl_check": rl_facts if search.rl is not None else None}
        about = (f"Distilled from {source.path} ({source.env}, {source.ppo.total_timesteps} steps). Fit error "
                 f"{fit_error:.4g}, held-out {holdout_error:.4g}.")
        if search.rl is not None:
            about += f" RL check: {best.rl:.3f} x PPO (network {search.network_score:.3f})."
        module = python_module(program, cap, about)
        run_dir.write_text(PY_FILE, module)
        run_dir.write_text(JSON_FILE, program_json(program, cap, **facts))
        run_dir.write_json("hall_of_fame.json", [e.to_json() for e in state.hall])
        fig = distill_figure(source, program, cap)
        fig.savefig(run_dir.file(FIGURE_FILE), dpi=80)
        step = self.position(state)
        tb.figure("distill/network_vs_formula", fig, step, close=False)
        tb.text("distill/formula", program_markdown(str(program), "distilled drift program") + "\n\n" +
                program_markdown(module, PY_FILE), step)
        tb.text("distill/hall_of_fame", hall_markdown(state.hall), step)
        totals = state.totals
        return DistillSummary(
            kind=self.kind, name=config.name, run_dir=str(run_dir.path), generations_done=state.generation,
            generations=config.evolution.generations,
            files=[PY_FILE, JSON_FILE, FIGURE_FILE, "hall_of_fame.json", "samples.npz", "reference.json"],
            source=str(source.path), env=source.env, best_program=str(program),
            formula=formula(program), cap=cap, fit_error=fit_error, holdout_error=holdout_error,
            uniform_share=config.samples.uniform_share,
            start_fitness=state.start_fitness, rl_normalized_return=best.rl,
            network_normalized_return=None if search.rl is None else search.network_score, passed=best.passed,
            samples={"fit": len(search.fit.value), "holdout": len(search.holdout.value),
                     "recorded": int(ctx.reference["recorded_states"])},
            candidates_scored=totals["scored"], cache_hit_rate=totals["hits"] / max(totals["children"], 1),
            rl_checks=totals["rl_checks"], refinement=state.refinement)

