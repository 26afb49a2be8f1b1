"""What a search's best programs are worth outside the proxies, checked when the search ends (``heldout``).

1. **Robustness.** Each of the ``heldout.top_k`` best programs (by meta-validation) is scored again on FRESH
   training seeds (seeds no reference and no search score used; AdamW's reference is re-tuned on them), and
   ``heldout.jitters`` copies with every constant jittered by ``heldout.jitter`` (relative) are scored on the
   same seeds. A program whose fitness moves by more than ``heldout.fragility`` either way is *fragile*: it has
   found a point of the proxies, not an algorithm, and is not reported as a discovery. Each finalist's
   per-task scores on the search's seeds and the fresh ones are kept (``per_task``), so a move can be traced to
   the task that made it (a meta-validation task whose own AdamW training is chaotic, for one).
2. **Faithful simplify.** Each robust program is simplified with the meta-validation fitness (the same lr
   sweep), every edit kept only while the fitness stays within ``heldout.tolerance``.
3. **Transfer.** The simplified programs are trained on the held-out ``heldout.targets`` against tuned
   baselines (:func:`discover.shared.transfer.run_transfer`: hyperparameters chosen on some seeds, reported on
   fresh ones, paired 95% verdicts), written under ``transfer/`` in the run directory. A verdict on a target of
   a meta-validation task's family (``charlm_target`` with ``charlm_metaval`` in ``funnel.tasks``) says that it
   is not out of sample: the funnel chose the finalists on that family.

The run's ``best.py`` becomes the simplified winner (the best robust program), named after the run.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from discover.infra.rundir import RunDir
from discover.language.program import Program, parse
from discover.searches.update_rules.config import HeldoutSection, SearchConfig
from discover.searches.update_rules.report import metaval_description, proxy_description
from discover.searches.update_rules.state import SearchState
from discover.searches.update_rules.steps import SearchContext, swept_against_adamw
from discover.shared.evolution import HallEntry, constant_slots, scale_constants
from discover.shared.scoring import release_trainers
from discover.shared.simplify import score_fn, simplify
from discover.shared.transfer import run_transfer
from discover.shared.transfer_report import replication_note
from envs.tasks import task_family, task_names

FRESH_SEED = 10_007  # first training seed of the robustness check: far from the references' seeds 0, 1, ...
JITTER_SALT = 31_337
SIMPLIFY_BATCH = 16


@dataclasses.dataclass
class Finalist:
    rank: int  # in the hall of fame, from 1
    entry: HallEntry
    fresh: float  # meta-validation fitness on fresh seeds
    jittered: list[float]  # the same, constants jittered
    seed_move: float  # |fresh / metaval - 1|
    jitter_move: float  # max |jittered / fresh - 1|
    fragile: bool
    # meta-validation task -> [fitness on the search's seeds, on the fresh seeds]: where a move comes from
    per_task: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    simplified: str | None = None  # the simplified program's text (robust finalists only)
    simplified_fitness: float | None = None
    statements: tuple[int, int] | None = None  # before, after simplify

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["entry"] = self.entry.fingerprint
        out["program"] = self.entry.program
        return out


def _relative_move(value: float, reference: float) -> float:
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return math.inf
    return abs(value / reference - 1.0)


def is_structural(c: float) -> bool:
    """An exact algebraic constant (an integer or a unit fraction: the 1 of ``1 - b^t``, a 2, a 0.5) rather
    than a tuned one: jittering it changes the formula, not its tuning (``1 - 0.999^t`` with 0.99 for 1 is
    negative at t = 1), so the robustness check leaves it alone."""
    c = float(c)
    return c == round(c) or (c != 0.0 and 1.0 / c == round(1.0 / c))


def jittered_copies(program: Program, cfg: HeldoutSection, rng: np.random.Generator) -> list[Program]:
    """``cfg.jitters`` copies of ``program``, each tuned constant scaled by 1 ± ``cfg.jitter`` (signs at random; an
    interp rate ``a`` has its ``1 - a`` scaled, so it stays a rate); structural constants are kept."""
    slots = constant_slots(program)
    values = [float(program.statements[i].args[k]) for i, k, _ in slots]
    tuned = np.array([not is_structural(c) for c in values], bool)
    # A decay-like constant in (0.5, 1) (an interp rate, the base of a bias correction 1 - b^t) has its 1 - c
    # jittered: 0.999 x 1.01 would cross 1.
    rates = [is_rate or 0.5 < c < 1.0 for (_, _, is_rate), c in zip(slots, values)]
    if not tuned.any():
        return []
    return [scale_constants(program, np.log2(1.0 + cfg.jitter * tuned * rng.choice([-1.0, 1.0], len(slots))), rates)
            for _ in range(cfg.jitters)]


def check_robustness(hall: list[HallEntry], ctx: SearchContext, cfg: HeldoutSection, seed: int) -> list[Finalist]:
    """Scores the ``cfg.top_k`` best entries and their jittered copies on fresh seeds (see the module doc)."""
    base = ctx.metaval if ctx.metaval is not None else ctx.proxy
    # padded to simplify's rows (SIMPLIFY_BATCH x base.train_seeds) where they divide: one compilation for both
    rows, batch = SIMPLIFY_BATCH * base.train_seeds, cfg.jitters + 1
    batch = max(batch, rows // cfg.train_seeds) if rows % cfg.train_seeds == 0 else batch
    with ctx.profile.section("training"):
        scorer = swept_against_adamw(dataclasses.replace(base, train_seeds=cfg.train_seeds, first_seed=FRESH_SEED,
                                                         batch=batch))
    rng = np.random.default_rng([seed, JITTER_SALT])
    entries = hall[: cfg.top_k]
    programs = [parse(e.program, max_len=10**6) for e in entries]
    with ctx.profile.section("training"):  # per task on the search's own seeds (the hall keeps only the mean)
        searched = base.score(programs).per_task
    finalists = []
    for rank, (entry, program, on_search_seeds) in enumerate(zip(entries, programs, searched), 1):
        copies = jittered_copies(program, cfg, rng)
        with ctx.profile.section("training"):
            scores = scorer.score([program, *copies])
        fitness = np.where(scores.nonfinite, np.inf, scores.fitness)
        fresh, jittered = float(fitness[0]), [float(x) for x in fitness[1:]]
        seed_move = _relative_move(fresh, entry.metaval)
        jitter_move = max((_relative_move(j, fresh) for j in jittered), default=0.0)
        fragile = not math.isfinite(fresh) or seed_move > cfg.fragility or jitter_move > cfg.fragility
        per_task = {task.name: [float(a), float(b)]
                    for task, a, b in zip(base.tasks, on_search_seeds, scores.per_task[0])}
        finalists.append(Finalist(rank, entry, fresh, jittered, seed_move, jitter_move, fragile, per_task))
    return finalists


def largest_task_move(per_task: dict[str, list[float]]) -> tuple[str, float, float] | None:
    """The meta-validation task whose fitness moved most between the search's seeds and the fresh ones:
    ``(task, on search seeds, on fresh seeds)``; None without per-task scores."""
    if not per_task:
        return None
    task = max(per_task, key=lambda t: _relative_move(per_task[t][1], per_task[t][0]))
    return task, *per_task[task]


def simplify_finalists(finalists: list[Finalist], ctx: SearchContext, cfg: HeldoutSection) -> None:
    """Simplifies the robust finalists in place with the meta-validation fitness (reference seeds, lr sweep)."""
    base = ctx.metaval if ctx.metaval is not None else ctx.proxy
    untimed = score_fn(dataclasses.replace(base, batch=SIMPLIFY_BATCH))

    def score(programs):
        with ctx.profile.section("training"):
            return untimed(programs)
    for f in finalists:
        if f.fragile:
            continue
        program = parse(f.entry.program, max_len=10**6)
        result = simplify(program, score, tolerance=cfg.tolerance, batch=SIMPLIFY_BATCH)
        f.simplified, f.simplified_fitness = str(result.program), result.fitness_final
        f.statements = (len(result.original), len(result.program))


def program_name(config: SearchConfig, rank: int) -> str:
    """A Python identifier naming the run's rank-th discovery, e.g. ``quickstart_1``."""
    slug = re.sub(r"\W+", "_", config.name).strip("_").lower() or "discovered"
    if slug[0].isdigit():
        slug = f"rule_{slug}"
    return f"{slug}_{rank}"


def winner_text(config: SearchConfig, finalist: Finalist, transfer_lines: list[str]) -> str:
    program = parse(finalist.simplified, max_len=10**6).replace(name=program_name(config, finalist.rank))
    e = finalist.entry
    header = [
        (f"# Discovered by `discover search` (run '{config.name}', seed {config.seed}, generation {e.generation}), "
         f"simplified faithfully ({finalist.statements[0]} -> {finalist.statements[1]} statements)."),
        (f"# Fitness (val loss / AdamW tuned over the same lr sweep, lower is better): proxy {e.fitness:.5g}, "
         f"meta-validation {e.metaval:.5g}, on fresh seeds {finalist.fresh:.5g}; constants jittered by "
         f"{config.heldout.jitter:g}: moves at most {finalist.jitter_move:.2%}."),
        f"# Proxy tasks: {proxy_description(config)}; meta-validation: {metaval_description(config)}.",
        *(f"# {line}" for line in transfer_lines),
    ]
    return "\n".join(header) + "\n" + str(program)


def heldout_evaluation(state: SearchState, ctx: SearchContext, run_dir: RunDir) -> dict:
    """Robustness, simplify and transfer of the best programs; writes ``heldout.json``, ``transfer/`` and (when
    a robust program exists) ``best.py`` as the simplified winner. Returns what ``results.json`` records."""
    config, cfg = ctx.config, ctx.config.heldout
    release_trainers()  # the search's own trainers are not called again (other shapes here): free their memory
    finalists = check_robustness(state.hall, ctx, cfg, config.seed)
    simplify_finalists(finalists, ctx, cfg)
    robust = [f for f in finalists if not f.fragile]
    report: dict = {"finalists": [f.to_json() for f in finalists], "transfer": None, "verdicts": []}
    files = ["heldout.json"]
    if robust and cfg.targets:
        programs = {program_name(config, f.rank): parse(f.simplified, max_len=10**6) for f in robust}
        with ctx.profile.section("transfer"):  # lr x wd tuning and fresh-seed training of every optimizer, report
            run_transfer(programs, tasks=cfg.targets, baselines=cfg.baselines, seeds=cfg.seeds,
                         replicate_seeds=cfg.replicate_seeds,
                         lr_schedule=config.fitness.lr_schedule, out_dir=run_dir.path / "transfer", tb=False,
                         console=None)
        report["transfer"] = "transfer/transfer.json"
        report["verdicts"] = transfer_verdicts(run_dir, list(programs), config.funnel.tasks)
        files += ["transfer/transfer.md", "transfer/transfer.json"]
    if robust:
        lines = [v["line"] for v in report["verdicts"] if v["program"] == program_name(config, robust[0].rank)]
        run_dir.write_text("best.py", winner_text(config, robust[0], lines))
        report["winner"] = program_name(config, robust[0].rank)
    run_dir.write_json("heldout.json", report)
    report["files"] = files
    return report


def selected_on(target: str, metaval_tasks) -> str | None:
    """The meta-validation task of ``target``'s family, if any: the funnel chose the finalists on that family, so
    a verdict there is not out of sample (e.g. ``charlm_target`` and ``charlm_metaval``)."""
    known = set(task_names())
    if target not in known:
        return None  # a task that is not registered has no family to share
    family = task_family(target)
    return next((t for t in metaval_tasks if t in known and task_family(t) == family), None)


def transfer_verdicts(run_dir: RunDir, programs: list[str], metaval_tasks=()) -> list[dict]:
    """One entry per (program, target, baseline) from the transfer report: better / worse / tie at 95% (paired
    on the fresh seeds), with the ratio of mean validation losses; ``selected_on`` names the meta-validation task
    (of ``metaval_tasks``) whose family the target shares, and the line says so."""
    data = run_dir.read_json("transfer/transfer.json")
    out = []
    for task, result in data.get("tasks", {}).items():
        same_family = selected_on(task, metaval_tasks)
        note = f" [the family of meta-validation's {same_family}: not out of sample]" if same_family else ""
        for name in programs:
            for baseline, c in result["optimizers"].get(name, {}).get("paired", {}).items():
                verdict = {"better": "beats", "worse": "loses to", "tie": "ties with"}[c["verdict"]]
                confirmed = (c.get("replication") or {}).get("confirmed")  # None: not tested again
                if c["mean_a"] is None or c["mean_b"] is None:  # a run diverged on a fresh seed
                    out.append({"task": task, "program": name, "baseline": baseline, "verdict": c["verdict"],
                                "ratio": None, "ci": None, "selected_on": same_family,
                                "confirmed": confirmed,
                                "line": f"{task}: {name} {verdict} tuned {baseline} (a run diverged"
                                        f"{replication_note(c)}){note}"})
                    continue
                ratio = c["mean_a"] / c["mean_b"] if c["mean_b"] else float("inf")
                lo, hi = c["ci"]
                out.append({"task": task, "program": name, "baseline": baseline, "verdict": c["verdict"],
                            "ratio": ratio, "ci": [lo, hi], "selected_on": same_family,
                            "confirmed": confirmed,
                            "line": f"{task}: {name} {verdict} tuned {baseline} (val loss x{ratio:.3f}; paired "
                                    f"95% CI of the difference [{lo:+.3g}, {hi:+.3g}], {c['n']} fresh seeds"
                                    f"{replication_note(c)}){note}"})
    return out
