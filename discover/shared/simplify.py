"""Simplify a discovered update rule: a shorter program that scores the same.

The rewrites are pure functions of :mod:`discover.language.rewrite`: **folds** (:func:`canonicalize`,
algebraic identities, applied after every change) and **edits** (:func:`candidate_edits`: bypass a
statement, swap an op for a simpler one, round a constant), which change what the program computes. An edit
is kept only when the fitness stays within ``tolerance`` of the original program's, on either side: an edit
that makes the rule much better is a different algorithm, not a simpler way of writing this one. The fitness is
tuned (the best over a sweep of learning-rate multipliers, :data:`discover.shared.scoring.ROBUST_LR_MULTIPLIERS`
by default), so an edit cannot pass by moving the rule's best step size either.

:func:`simplify` is the greedy loop. It takes ``score(programs) -> fitness array`` (lower is better), so
it runs with any scorer: :func:`run_simplify` uses the meta-validation fitness of
:class:`discover.shared.scoring.Scorer` (val loss / tuned AdamW's val loss on meta-validation tasks, with the
settings its caller passes, e.g. those of a search run's config); tests use cheap ones. Each round lists
the edits of the current program, most simplifying first, and scores them ``batch`` at a time (one
batched trainer call per chunk); the first that stays within tolerance is applied. It stops when no
edit does. Every accepted and rejected change is returned as a :class:`Step` with its fitness.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from discover.infra.config import ConfigError
from discover.infra.errors import InputError
from discover.infra.rundir import RunDir, RunDirError, TBLogger, program_markdown
from discover.language.analysis import remove_dead_code, structural_hash
from discover.language.program import Program, ProgramError, parse
from discover.language.rewrite import candidate_edits, canonicalize
from discover.shared.scoring import ROBUST_LR_MULTIPLIERS, Scorer, with_steps
from envs.baselines import adamw_reference
from envs.tasks import get_task, with_lr_schedule

ScoreFn = Callable[[Sequence[Program]], np.ndarray]

DEFAULT_TOLERANCE = 0.01  # relative: keep a change when |fitness - original| <= tolerance * |original|
DEFAULT_BATCH = 16
DEFAULT_METAVAL_TASKS = ("mlp_regression_metaval",)  # when the caller names no tasks
DEFAULT_WORST = 1000.0  # fitness of a diverged candidate (the search config's fitness.worst default)

# ----------------------------------------------------------------------------------------------------------
# The greedy loop
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Step:
    """One change tried: ``fitness_after`` is the fitness of the program with the change."""

    kind: str  # "dead code" | "fold" | "remove" | "op" | "constant"
    description: str
    fitness_before: float
    fitness_after: float
    accepted: bool
    statements_before: int
    statements_after: int
    program: str  # the program with the change (canonical text)

    @property
    def delta(self) -> float:
        return self.fitness_after - self.fitness_before

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "delta": self.delta}


@dataclasses.dataclass(frozen=True)
class SimplifyResult:
    original: Program
    program: Program
    steps: list[Step]
    fitness_original: float
    fitness_final: float
    tolerance: float
    evaluations: int  # programs scored

    @property
    def threshold(self) -> float:
        """The highest fitness a kept change may have."""
        return self.fitness_original + self.tolerance * abs(self.fitness_original)

    @property
    def lower(self) -> float:
        """The lowest fitness a kept change may have."""
        return self.fitness_original - self.tolerance * abs(self.fitness_original)

    def accepts(self, fitness: float) -> bool:
        return within_tolerance(fitness, self.fitness_original, self.tolerance)


def within_tolerance(fitness: float, reference: float, tolerance: float) -> bool:
    """Faithful: ``fitness`` differs from ``reference`` by at most ``tolerance`` (relative), either way."""
    return math.isfinite(fitness) and abs(fitness - reference) <= tolerance * abs(reference)


def _chunks(items: Sequence, size: int):
    for k in range(0, len(items), size):
        yield items[k:k + size]


def simplify(program: Program, score: ScoreFn, *, tolerance: float = DEFAULT_TOLERANCE, batch: int = DEFAULT_BATCH,
             max_rounds: int = 200, on_step: Callable[[Step], None] | None = None) -> SimplifyResult:
    """Greedy simplification of ``program`` (see the module docstring).

    ``score(programs)`` returns one fitness per program (lower is better; it is called with at most
    ``batch`` programs). A change is kept when its fitness is within ``f0 ± tolerance * |f0|``, ``f0`` the
    fitness of the original program, so changes cannot drift away from it one small step at a time."""
    if tolerance < 0 or not math.isfinite(tolerance):
        raise InputError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    steps: list[Step] = []
    cache: dict[str, float] = {}
    evaluations = 0

    def record(step: Step) -> None:
        steps.append(step)
        if on_step is not None:
            on_step(step)

    def fitness_of(programs: Sequence[Program]) -> list[float]:
        nonlocal evaluations
        keys = [structural_hash(p) for p in programs]
        todo = {k: p for k, p in zip(keys, programs) if k not in cache}
        if todo:
            values = np.asarray(score(list(todo.values())), np.float64).reshape(-1)
            if values.shape[0] != len(todo):
                raise ValueError(f"score returned {values.shape[0]} values for {len(todo)} programs")
            evaluations += len(todo)
            cache.update({k: float(v) if np.isfinite(v) else math.inf for k, v in zip(todo, values)})
        return [cache[k] for k in keys]

    live = remove_dead_code(program)
    folded = canonicalize(live)
    f_live, f_folded = fitness_of([live, folded])
    if not math.isfinite(f_live):
        raise InputError("the program's own fitness is not finite (its training diverges): nothing to preserve")
    if len(live) < len(program) or live.params != program.params:
        record(Step("dead code", f"{len(program) - len(live)} dead statement(s) removed (exact: never reach the"
                                 " update)", f_live, f_live, True, len(program), len(live), str(live)))
    current, f_current = live, f_live
    if folded != live:
        ok = within_tolerance(f_folded, f_live, tolerance)
        record(Step("fold", "algebraic identities folded", f_live, f_folded, ok, len(live), len(folded),
                    str(folded)))
        if ok:
            current, f_current = folded, f_folded
    rejected: set[str] = set()  # programs and edits that failed: never tried again
    for _ in range(max_rounds):
        edits = [e for e in candidate_edits(current)
                 if structural_hash(e.program) not in rejected and e.key not in rejected]
        accepted = None
        for chunk in _chunks(edits, batch):
            values = fitness_of([e.program for e in chunk])
            for edit, f in zip(chunk, values):
                if within_tolerance(f, f_live, tolerance):
                    accepted = (edit, f)
                    break
                rejected.update((structural_hash(edit.program), edit.key))
                record(Step(edit.kind, edit.description, f_current, f, False, len(current), len(edit.program),
                            str(edit.program)))
            if accepted:
                break
        if accepted is None:
            break
        edit, f = accepted
        record(Step(edit.kind, edit.description, f_current, f, True, len(current), len(edit.program),
                    str(edit.program)))
        current, f_current = edit.program, f
    return SimplifyResult(original=program, program=current, steps=steps, fitness_original=f_live,
                          fitness_final=f_current, tolerance=tolerance, evaluations=evaluations)


# ----------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.5g}" if math.isfinite(x) else "inf"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def steps_markdown_table(steps: Sequence[Step]) -> str:
    lines = ["| # | kind | change | fitness before | fitness after | delta | statements | kept |",
             "|---|---|---|---|---|---|---|---|"]
    for n, s in enumerate(steps, 1):
        delta = f"{s.delta:+.3g}" if math.isfinite(s.delta) else "inf"
        lines.append(f"| {n} | {s.kind} | {_cell(s.description)} | {_fmt(s.fitness_before)} | "
                     f"{_fmt(s.fitness_after)} | {delta} | {s.statements_before} -> {s.statements_after} | "
                     f"{'yes' if s.accepted else 'no'} |")
    return "\n".join(lines)


def report_markdown(result: SimplifyResult, scoring: str) -> str:
    kept = sum(s.accepted for s in result.steps)
    parts = [
        "# discover simplify",
        "",
        (f"Scored on: {scoring}. Fitness = validation loss / tuned AdamW's (lower is better). A change is kept "
         f"when its fitness stays within {_fmt(result.fitness_original)} x (1 ± {result.tolerance:g}) = "
         f"[{_fmt(result.lower)}, {_fmt(result.threshold)}]: simpler, not different."),
        "",
        (f"**{len(result.original)} -> {len(result.program)} statements**, fitness "
         f"{_fmt(result.fitness_original)} -> {_fmt(result.fitness_final)}; {kept} change(s) kept, "
         f"{len(result.steps) - kept} rejected, {result.evaluations} programs scored."),
        "",
        program_markdown(str(result.original), title="Original"),
        "",
        program_markdown(str(result.program), title="Simplified"),
        "",
        "### Steps",
        "",
        steps_markdown_table(result.steps),
        "",
    ]
    return "\n".join(parts)



# ----------------------------------------------------------------------------------------------------------
# Entry point: meta-validation scoring, run directories
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScoringSetup:
    """How programs are scored: the Scorer's settings on meta-validation tasks."""

    tasks: tuple = DEFAULT_METAVAL_TASKS  # task names or envs.tasks.Task objects
    steps: int | None = None  # training steps per task; None = each task's own
    seeds: int = 1
    lr_multipliers: tuple[float, ...] = ROBUST_LR_MULTIPLIERS
    worst: float = DEFAULT_WORST
    reference_cache: pathlib.Path | None = None  # AdamW reference cache; None = checkpoints/.baselines.json
    references: dict | None = None  # precomputed AdamW references by task name (for these steps and seeds)
    lr_schedule: str = "constant"  # every task's lr schedule (envs.tasks.LR_SCHEDULES)
    aggregate: str = "mean"  # per-task scores -> fitness (discover.shared.scoring.AGGREGATES)

    def describe(self) -> str:
        names = ", ".join(t if isinstance(t, str) else t.name for t in self.tasks)
        steps = "" if self.steps is None else f", {self.steps} steps"
        schedule = "" if self.lr_schedule == "constant" else f", {self.lr_schedule} lr schedule"
        worst = "" if self.aggregate == "mean" else ", fitness = the worst task's"
        return (f"meta-validation tasks {names}{steps}, {self.seeds} seed(s), lr = tuned AdamW lr x "
                f"{list(self.lr_multipliers)}{schedule}{worst}")


def _load_program_file(path: pathlib.Path) -> Program:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read: {err}", source=str(path)) from None
    try:
        return parse(text, max_len=10**6)
    except ProgramError as err:
        raise ConfigError(err.message, source=str(path), line=err.line) from None


def resolve_source(source) -> tuple[Program, RunDir | None]:
    """``source``: a Program, a program file or a search run directory (its ``best.py``)."""
    if isinstance(source, Program):
        return source, None
    path = pathlib.Path(source)
    if path.is_dir():
        run = RunDir.open(path)
        best = run.file("best.py")
        if not best.is_file():
            raise RunDirError("run has no best.py yet (has the search written its outputs?)", source=str(path))
        return _load_program_file(best), run
    if path.is_file():
        return _load_program_file(path), None
    raise RunDirError("no such program file or run directory", source=str(path))



def run_references(run_dir: str | os.PathLike, section: str, tasks: Sequence[str]) -> dict | None:
    """The AdamW references a search run saved (``references.json``: its ``proxy`` or ``metaval`` section) for
    ``tasks``; None when the file or any task is missing. Valid only with the run's own steps and seeds."""
    run = RunDir.open(run_dir)
    if not run.file("references.json").is_file():
        return None
    saved = run.read_json("references.json").get(section, {})
    return {name: saved[name] for name in tasks} if all(name in saved for name in tasks) else None


def scoring_setup(run: RunDir | None = None, *, tasks: Sequence | None = None, seeds: int | None = None,
                  steps: int | None = None, lr_multipliers: Sequence[float] | None = None,
                  worst: float = DEFAULT_WORST, reference_cache: str | os.PathLike | None = None,
                  references: Mapping | None = None, lr_schedule: str = "constant",
                  aggregate: str = "mean") -> ScoringSetup:
    """The settings the caller gave, the defaults for the others; a run directory's AdamW references are
    cached beside it (``<run root>/.baselines.json``), as its search did, unless ``reference_cache`` says."""
    if reference_cache is None and run is not None:
        reference_cache = run.path.parent / ".baselines.json"
    return ScoringSetup(
        tasks=tuple(DEFAULT_METAVAL_TASKS if tasks is None else tasks),
        steps=steps,
        seeds=1 if seeds is None else seeds,
        lr_multipliers=tuple(ROBUST_LR_MULTIPLIERS if lr_multipliers is None else lr_multipliers),
        worst=worst,
        reference_cache=pathlib.Path(reference_cache) if reference_cache is not None else None,
        references=dict(references) if references else None,
        lr_schedule=lr_schedule,
        aggregate=aggregate,
    )


def make_score_fn(setup: ScoringSetup, program: Program, batch: int) -> ScoreFn:
    """The meta-validation fitness of :class:`discover.shared.scoring.Scorer` as ``score(programs)``."""
    if setup.seeds < 1:
        raise InputError(f"seeds must be >= 1, got {setup.seeds}")
    tasks = [with_lr_schedule(with_steps(get_task(t) if isinstance(t, str) else t, setup.steps), setup.lr_schedule)
             for t in setup.tasks]
    if not tasks:
        raise InputError("at least one meta-validation task is needed")
    refs = dict(setup.references or {})
    cache = setup.reference_cache or pathlib.Path("checkpoints") / ".baselines.json"
    for task in tasks:
        if task.name not in refs:
            refs[task.name] = adamw_reference(task, seeds=setup.seeds, cache_path=cache)
    scorer = Scorer(tasks=tasks, references=refs, train_seeds=setup.seeds, lr_multipliers=setup.lr_multipliers,
                    worst=setup.worst, batch=batch, max_len=max(8, len(program)),
                    n_state=max(1, len(program.state)), needs_hessian=program.reads_h, aggregate=setup.aggregate)
    return score_fn(scorer)


def score_fn(scorer: Scorer) -> ScoreFn:
    """``score(programs)`` of a Scorer for :func:`simplify`: a diverged candidate (worst fitness on some task)
    scores inf, so it is never an acceptable simplification."""

    def score(programs):
        scores = scorer.score(programs)
        return np.where(scores.nonfinite | (scores.fitness >= scorer.worst), np.inf, scores.fitness)

    return score


def simplified_program_text(result: SimplifyResult, origin: str, scoring: str) -> str:
    header = [
        (f"# Simplified by `discover simplify` from {origin}: {len(result.original)} -> "
         f"{len(result.program)} statements."),
        (f"# Fitness (val loss / tuned AdamW's, lower is better) {_fmt(result.fitness_original)} -> "
         f"{_fmt(result.fitness_final)} (tolerance {result.tolerance:g})."),
        f"# Scored on: {scoring}.",
    ]
    return "\n".join(header) + "\n" + str(result.program)



def run_simplify(source, *, tolerance: float = DEFAULT_TOLERANCE, tasks: Sequence | None = None,
                 seeds: int | None = None, steps: int | None = None,
                 lr_multipliers: Sequence[float] | None = None, worst: float = DEFAULT_WORST,
                 references: Mapping | None = None, batch: int = DEFAULT_BATCH, max_rounds: int = 200,
                 reference_cache: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                 tb: bool = True, console=None, score: ScoreFn | None = None,
                 lr_schedule: str = "constant", aggregate: str = "mean") -> tuple[Program, list[Step]]:
    """Simplify a program (a Program, a program file, or a search run directory's ``best.py``) and write
    ``simplify.md``, ``simplify.json`` and ``simplified.py`` into ``out_dir`` (default: the run directory,
    else a new ``checkpoints/simplify-<time>``), plus TensorBoard text/scalars under its ``tb/`` (``tb``).

    Scoring (unless ``score`` is given): the meta-validation fitness of :class:`discover.shared.scoring.Scorer`
    on ``tasks`` (names or Task objects; default ``mlp_regression_metaval``), ``steps`` training steps
    (default: each task's own), ``seeds`` seeds (default 1), lr = tuned AdamW lr x ``lr_multipliers``
    (default [1.0]) moved by ``lr_schedule``, diverged = ``worst``, tasks combined by ``aggregate``.
    ``references``: AdamW references by task name already computed for these tasks, steps and seeds (others are
    computed, cached in ``reference_cache``). This module reads no search config: to score like a search run
    did, the caller passes its settings (``discover simplify RUN_DIR`` passes the run's meta-validation funnel
    and its saved references). ``console``: a rich Console for the step table. Bad input raises
    :class:`discover.infra.config.ConfigError` (one line)."""
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ConfigError(f"must be a finite number >= 0, got {tolerance}", key="tolerance")
    for key, value in (("batch", batch), ("seeds", seeds), ("steps", steps)):
        if value is not None and value < 1:
            raise ConfigError(f"must be >= 1, got {value}", key=key)
    if lr_multipliers is not None and not len(lr_multipliers):
        raise ConfigError("at least one multiplier is needed", key="lr_multipliers")
    program, run = resolve_source(source)
    setup = scoring_setup(run, tasks=tasks, seeds=seeds, steps=steps, lr_multipliers=lr_multipliers, worst=worst,
                          reference_cache=reference_cache, references=references, lr_schedule=lr_schedule,
                          aggregate=aggregate)
    scoring = setup.describe() if score is None else "the given scorer"
    if score is None:
        try:
            score = make_score_fn(setup, program, batch)
        except InputError as err:  # e.g. an unknown task name
            raise ConfigError(str(err), key="tasks") from None
    try:
        result = simplify(program, score, tolerance=tolerance, batch=batch, max_rounds=max_rounds)
    except InputError as err:
        raise ConfigError(f"{err} ({scoring})", source=None if isinstance(source, Program) else str(source)) from None
    if out_dir is not None:
        out = RunDir(pathlib.Path(out_dir))
    elif run is not None:
        out = run
    else:
        out = RunDir.create(root="checkpoints", name="simplify", config_yaml=f"# discover simplify\n"
                            f"tolerance: {tolerance}\n")
    origin = str(run.path) if run is not None else (str(source) if not isinstance(source, Program)
                                                     else f"program '{program.name}'")
    markdown = report_markdown(result, scoring)
    out.write_text("simplify.md", markdown)
    out.write_text("simplified.py", simplified_program_text(result, origin, scoring))
    out.write_json("simplify.json", {
        "source": origin, "scoring": scoring, "tolerance": tolerance, "threshold": result.threshold, "lower": result.lower,
        "fitness_original": result.fitness_original, "fitness_final": result.fitness_final,
        "statements_original": len(result.original), "statements_final": len(result.program),
        "evaluations": result.evaluations, "original": str(result.original), "simplified": str(result.program),
        "steps": [s.to_json() for s in result.steps],
    })
    if tb:
        with TBLogger(out) as logger:
            logger.text("simplify/report", markdown, 0)
            accepted = [s for s in result.steps if s.accepted]
            logger.scalars(0, {"simplify/fitness": result.fitness_original,
                               "simplify/statements": len(result.original)})
            for n, s in enumerate(accepted, 1):
                logger.scalars(n, {"simplify/fitness": s.fitness_after, "simplify/statements": s.statements_after})
    if console is not None:  # anything with print(text, highlight=...): the CLI passes a rich Console
        console.print(f"simplify: {len(result.original)} -> {len(result.program)} statements, fitness "
                      f"{_fmt(result.fitness_original)} -> {_fmt(result.fitness_final)}", highlight=False)
        console.print(steps_markdown_table(result.steps), highlight=False, markup=False)
        console.print(f"wrote {out.file('simplify.md')} and {out.file('simplified.py')}", highlight=False)
    return result.program, result.steps


__all__ = [
    "ScoringSetup",
    "SimplifyResult",
    "Step",
    "make_score_fn",
    "run_references",
    "run_simplify",
    "score_fn",
    "scoring_setup",
    "simplify",
]
