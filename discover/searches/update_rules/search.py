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

Entry points: :func:`load_search_config` and :func:`run_search`.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import jax

from discover.infra.checkpointing import Checkpointer, GracefulExit
from discover.infra.config import config_to_dict, dump_config, flat_config, load_config
from discover.infra.rundir import RunDir, TBLogger
from discover.searches.update_rules.config import SearchConfig
from discover.searches.update_rules.refine import run_refinement
from discover.searches.update_rules.report import hall_markdown, log_generation, write_outputs
from discover.searches.update_rules.state import (
    SearchState,
    _template,
    state_from_checkpoint,
    state_to_checkpoint,
)
from discover.searches.update_rules.steps import (
    initial_state,
    load_or_compute_references,
    make_context,
    maybe_restart,
    run_funnel,
    run_generation,
)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------
class _CompileCounter:
    """Counts XLA compilations (JAX's backend-compile events) while active."""

    count = 0
    _installed = False

    @classmethod
    def install(cls) -> None:
        if not cls._installed:
            from jax._src import dispatch

            event = getattr(dispatch, "BACKEND_COMPILE_EVENT", "/jax/core/compile/backend_compile_duration")

            def listener(name, *_args, **_kw):
                if name == event:
                    cls.count += 1

            jax.monitoring.register_event_duration_secs_listener(listener)
            cls._installed = True


def _save(checkpointer: Checkpointer, step: int, state: SearchState) -> None:
    arrays, meta = state_to_checkpoint(state)
    checkpointer.save(step, arrays, meta)


def run_search(config: SearchConfig, run_dir: RunDir, resume: bool = False, progress: Any = None) -> dict:
    """Runs (or, with ``resume``, continues from the newest readable checkpoint) an update-rule search, writing
    into ``run_dir``. ``progress``: an optional ``rich.progress.Progress``. SIGINT/SIGTERM checkpoint and stop
    after the current generation (``summary["interrupted"]``). Returns a summary dict."""
    started = time.time()
    _CompileCounter.install()
    compiles_before = _CompileCounter.count
    evo = config.evolution
    task = None
    if progress is not None:
        task = progress.add_task(f"search {config.name}: AdamW references, compilation", total=evo.generations)
    references = load_or_compute_references(config, run_dir)
    ctx = make_context(config, references)

    checkpointer = Checkpointer(run_dir.checkpoint_dir, max_to_keep=config.checkpoint.max_to_keep)
    state, resumed_from = None, None
    if resume and checkpointer.latest_step() is not None:
        _, arrays, meta = checkpointer.restore(_template(config))
        state = state_from_checkpoint(arrays, meta)
        resumed_from = state.generation

    tb = TBLogger(run_dir, purge_step=None if resumed_from is None else resumed_from + 1)
    if state is None:
        tb.text("config", "```yaml\n" + dump_config(config) + "```", 0)
        state = initial_state(ctx)
        tb.text("programs/seeds", hall_markdown(state.hall), 0)
        _save(checkpointer, 0, state)

    if progress is not None:
        progress.update(task, completed=state.generation, description=f"search {config.name}")

    interrupted = False
    last = {}
    with GracefulExit(notice=True) as stop:
        while state.generation < evo.generations:
            t0 = time.time()
            state, stats = run_generation(state, ctx)
            g = state.generation
            # Without meta-validation tasks the funnel costs nothing: the hall of fame follows every generation.
            if g % config.funnel.every == 0 or g == evo.generations or ctx.metaval is None:
                state, funnel_info = run_funnel(state, ctx)
                stats.update(funnel_info)
                state, restarted = maybe_restart(state, ctx)
                stats["restarted"] = int(restarted)
            seconds = time.time() - t0
            last = log_generation(tb, state, stats, seconds, ctx)
            if progress is not None:
                progress.update(task, advance=1, description=(
                    f"gen {g}/{evo.generations}  best {last['fitness/best']:.4f}  "
                    f"hall {state.hall[0].metaval:.4f}  {last['speed/candidates_per_s']:.1f} cand/s"))
            if g % config.checkpoint.every == 0 or g == evo.generations or stop.requested:
                _save(checkpointer, g, state)
            if g % config.funnel.every == 0:
                write_outputs(run_dir, config, state)
            if stop.requested and g < evo.generations:
                interrupted = True
                break

        refinement = []
        if not interrupted and not state.refined and config.refine.top_k > 0:
            state, refinement = run_refinement(state, ctx)
            refined = [e for e in state.hall if e.origin == "refined"]
            if refined:
                tb.text("programs/refined", hall_markdown(refined), state.generation)
            _save(checkpointer, evo.generations + 1, state)
    checkpointer.close()

    totals = state.totals
    best = state.hall[0]
    summary = {
        "name": config.name,
        "generations_done": state.generation,
        "generations": evo.generations,
        "best_fitness": best.fitness,
        "best_metaval": best.metaval,
        "best_program": best.program,
        "seed_fitness": state.seed_fitness,
        "seed_metaval": state.seed_metaval,
        "children": totals["children"],
        "candidates_scored": totals["scored"],
        "cache_hit_rate": totals["hits"] / max(totals["children"], 1),
        "dead_share": totals["dead_statements"] / max(totals["statements"], 1),
        "invalid": totals["invalid"],
        "nonfinite": totals["nonfinite"],
        "restarts": state.restarts,
        "refinement": refinement,
        "trainer_compiles": ctx.proxy.compiles() + (ctx.metaval.compiles() if ctx.metaval else 0),
        "xla_compiles_this_run": _CompileCounter.count - compiles_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if not interrupted:
        write_outputs(run_dir, config, state)
        tb.text("hall_of_fame", hall_markdown(state.hall), state.generation)
        tb.hparams(flat_config(config), {"best_fitness": best.fitness, "best_metaval": best.metaval,
                                         "cache_hit_rate": summary["cache_hit_rate"]})
    tb.close()
    summary.update(interrupted=interrupted, resumed_from=resumed_from, wall_time_s=time.time() - started,
                   run_dir=str(run_dir.path))
    if not interrupted:
        run_dir.write_json("results.json", {"config": config_to_dict(config), **summary})
    return summary


def resume_config(run_dir: RunDir) -> SearchConfig:
    """The config a run directory was started with (ConfigError if it no longer validates)."""
    return load_config(SearchConfig, run_dir.config_path)


