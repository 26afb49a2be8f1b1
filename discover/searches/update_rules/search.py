"""Update-rule search: regularized evolution over symbolic programs, after the Lion paper.

One generation (:func:`run_generation`): parents are picked by tournament, children are mutated, their dead
code is removed and every child of a round is fingerprinted in one batched call. A child whose fingerprint was
seen reuses the cached fitness and joins the population at once; rounds continue until ``evolution.batch``
novel children are found (or ``evolution.max_rounds``), which are then trained together: ONE population-trainer
call per proxy task, the batch padded to a fixed size so nothing ever recompiles. Each child added kills the
oldest member.

Fitness (lower is better) of a program: for each proxy task, its final validation loss divided by that of
AdamW with a tuned learning rate (``envs.baselines``), averaged over training seeds (the same inits and data as
the reference), the best over ``fitness.lr_multipliers`` (the program's ``lr`` input is AdamW's tuned lr times
the multiplier), then the mean over tasks. AdamW itself scores 1.0. A program whose training diverges or
gives NaN/inf on a task scores ``fitness.worst`` there and is counted.

Funnel: every ``funnel.every`` generations the best distinct programs are scored on the meta-validation tasks;
the hall of fame ranks by that score. ``restart.patience`` restarts the population from the best program when
the hall of fame's best has not improved for that many generations. At the end, the constants of the best
programs are refined with an evosax strategy through the same batched trainer (``refine``).

Run directory outputs: ``config.yaml``, ``references.json`` (the AdamW references used), TensorBoard events,
orbax checkpoints (everything a resume needs: population, ages, fitness caches, hall of fame, the RNG state and
counters), ``best.py`` (the best program, loadable by ``discover export``), ``hall_of_fame.json``,
``results.json``.

Entry points: :class:`UpdateRuleSearch` (driven by :func:`discover.shared.runner.run`) and :func:`run_search`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

from discover.infra.config import load_config
from discover.infra.rundir import RunDir, TBLogger
from discover.searches.update_rules.config import SearchConfig, load_search_config
from discover.searches.update_rules.heldout import heldout_evaluation, largest_task_move
from discover.searches.update_rules.refine import run_refinement
from discover.searches.update_rules.report import hall_markdown, log_generation, write_outputs
from discover.searches.update_rules.state import (
    SearchState,
    _template,
    state_from_checkpoint,
    state_to_checkpoint,
)
from discover.searches.update_rules.steps import (
    SearchContext,
    initial_state,
    load_or_compute_references,
    make_context,
    maybe_restart,
    run_funnel,
    run_generation,
)
from discover.shared import runner
from discover.shared.profile import Profile
from discover.shared.runner import Progress, Summary


@dataclasses.dataclass
class UpdateRuleSummary(Summary):
    best_program: str = ""
    best_fitness: float = float("nan")
    best_metaval: float = float("nan")
    seed_fitness: float = float("nan")
    seed_metaval: float = float("nan")
    children: int = 0
    candidates_scored: int = 0
    cache_hit_rate: float = 0.0
    dead_share: float = 0.0
    invalid: int = 0
    nonfinite: int = 0
    restarts: int = 0
    refinement: list = dataclasses.field(default_factory=list)
    trainer_compiles: int = 0
    heldout: dict | None = None  # robustness, simplify and transfer of the best programs (None: skipped)

    def headline(self) -> list[str]:
        lines = [
            (f"best fitness {self.best_fitness:.4f} (val loss / AdamW tuned over the same lr sweep; < 1 beats "
             f"AdamW), meta-validation {self.best_metaval:.4f}; start programs: {self.seed_fitness:.4f}"),
            (f"cache hit rate {self.cache_hit_rate:.0%}, dead statements {self.dead_share:.0%}, "
             f"{self.candidates_scored} candidates scored"),
        ]
        if self.heldout is None:
            return lines + ["held-out evaluation skipped (heldout.enabled: false)"]
        for f in self.heldout["finalists"]:
            what = "fragile: not a discovery" if f["fragile"] else \
                f"robust; simplified {f['statements'][0]} -> {f['statements'][1]} statements"
            moved = largest_task_move(f.get("per_task") or {})
            most = f"; most on {moved[0]}: {moved[1]:.4f} -> {moved[2]:.4f}" if moved and len(f["per_task"]) > 1 else ""
            lines.append(f"#{f['rank']}: fresh seeds {f['fresh']:.4f} (moved {f['seed_move']:.1%}{most}), constants "
                         f"jittered: moved at most {f['jitter_move']:.1%}: {what}")
        lines += [v["line"] for v in self.heldout["verdicts"]]
        if self.heldout.get("winner"):
            lines.append(f"best.py: {self.heldout['winner']}, the simplified best robust program")
        return lines

    def hparam_metrics(self) -> dict[str, float]:
        return {"best_fitness": self.best_fitness, "best_metaval": self.best_metaval,
                "cache_hit_rate": self.cache_hit_rate}


@dataclasses.dataclass
class RunContext:
    """The search context plus what the run writes into and what refinement reported."""

    search: SearchContext
    run_dir: RunDir
    refinement: list = dataclasses.field(default_factory=list)


class UpdateRuleSearch:
    """The update-rule search as the runner drives it: steps 1..G are generations, step G+1 (when
    ``refine.top_k`` > 0) refines the constants of the best programs."""

    kind: ClassVar[str] = "update_rule"
    config_type: ClassVar[type] = SearchConfig
    # log() only reads the state it is given: each step builds a new one (the RNG, which states share, is not read).
    outputs_in_background: ClassVar[bool] = True

    def __init__(self) -> None:
        self.profile = Profile(enabled=False)

    def load_config(self, path: Any, overrides: Sequence[str] = ()) -> SearchConfig:
        return load_search_config(path, overrides)

    def attach_profile(self, profile: Profile) -> None:
        self.profile = profile

    def prepare(self, config: SearchConfig, run_dir: RunDir, progress: Progress) -> RunContext:
        with self.profile.section("references"):
            references = load_or_compute_references(config, run_dir)
        return RunContext(make_context(config, references, self.profile), run_dir)

    def init(self, ctx: RunContext) -> SearchState:
        return initial_state(ctx.search)

    def start_log(self, tb: TBLogger, state: SearchState, ctx: RunContext) -> None:
        tb.text("programs/seeds", hall_markdown(state.hall), 0)

    def position(self, state: SearchState) -> int:
        return state.generation + int(state.refined)

    def total(self, ctx: RunContext) -> int:
        config = ctx.search.config
        return config.evolution.generations + int(config.refine.top_k > 0)

    def step(self, state: SearchState, ctx: RunContext) -> tuple[SearchState, dict]:
        config = ctx.search.config
        if state.generation >= config.evolution.generations:
            with ctx.search.profile.section("refine"):
                state, ctx.refinement = run_refinement(state, ctx.search)
            return state, {"refined": len(ctx.refinement)}
        state, stats = run_generation(state, ctx.search)
        g = state.generation
        # Without meta-validation tasks the funnel costs nothing: the hall of fame follows every generation.
        if g % config.funnel.every == 0 or g == config.evolution.generations or ctx.search.metaval is None:
            with ctx.search.profile.section("funnel"):
                state, funnel_info = run_funnel(state, ctx.search)
                stats.update(funnel_info)
                state, restarted = maybe_restart(state, ctx.search)
            stats["restarted"] = int(restarted)
        return state, stats

    def log(self, tb: TBLogger, state: SearchState, metrics: dict, seconds: float, ctx: RunContext) -> str:
        config = ctx.search.config
        if "refined" in metrics:
            refined = [e for e in state.hall if e.origin == "refined"]
            if refined:
                tb.text("programs/refined", hall_markdown(refined), state.generation)
            return f"refined the constants of {metrics['refined']} programs"
        scalars = log_generation(tb, state, metrics, seconds, ctx.search)
        if state.generation % config.funnel.every == 0:
            write_outputs(ctx.run_dir, config, state)
        return (f"gen {state.generation}/{config.evolution.generations}  best {scalars['fitness/best']:.4f}  "
                f"hall {state.hall[0].metaval:.4f}  {scalars['speed/candidates_per_s']:.1f} cand/s")

    def save(self, state: SearchState) -> tuple[dict, dict]:
        return state_to_checkpoint(state)

    def restore_like(self, ctx: RunContext) -> dict:
        return _template(ctx.search.config)

    def restore(self, arrays: dict, meta: dict, ctx: RunContext) -> SearchState:
        return state_from_checkpoint(arrays, meta, ctx.search.space)

    def finish(self, state: SearchState, ctx: RunContext, tb: TBLogger) -> UpdateRuleSummary:
        config, search = ctx.search.config, ctx.search
        write_outputs(ctx.run_dir, config, state)
        tb.text("hall_of_fame", hall_markdown(state.hall), state.generation)
        heldout = heldout_evaluation(state, search, ctx.run_dir) if config.heldout.enabled else None
        totals, best = state.totals, state.hall[0]
        return UpdateRuleSummary(
            kind=self.kind, name=config.name, run_dir=str(ctx.run_dir.path), generations_done=state.generation,
            generations=config.evolution.generations,
            files=["best.py", "hall_of_fame.json", "references.json", *(heldout["files"] if heldout else [])],
            best_program=best.program, best_fitness=best.fitness, best_metaval=best.metaval,
            seed_fitness=state.seed_fitness, seed_metaval=state.seed_metaval, children=totals["children"],
            candidates_scored=totals["scored"], cache_hit_rate=totals["hits"] / max(totals["children"], 1),
            dead_share=totals["dead_statements"] / max(totals["statements"], 1), invalid=totals["invalid"],
            nonfinite=totals["nonfinite"], restarts=state.restarts, refinement=ctx.refinement,
            trainer_compiles=search.proxy.compiles() + (search.metaval.compiles() if search.metaval else 0),
            heldout=heldout,
        )


def run_search(config: SearchConfig, run_dir: RunDir, resume: bool = False, progress: Progress | None = None,
               profile: Profile | None = None) -> dict:
    """Runs (or, with ``resume``, continues) an update-rule search in ``run_dir``; the summary as a dict."""
    return runner.run(UpdateRuleSearch(), config, run_dir, resume=resume, progress=progress,
                      profile=profile).to_json()


def resume_config(run_dir: RunDir) -> SearchConfig:
    """The config a run directory was started with (ConfigError if it no longer validates)."""
    return load_config(SearchConfig, run_dir.config_path)
