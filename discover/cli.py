"""The `discover` command line (typer + rich).

Every user error (bad program, bad config, missing file) is printed as ONE line naming the defect
and where it is, with exit code 2 and no traceback; any other exception is a bug and keeps its traceback.

Imports are at the top except for modules that start JAX's backend (the searches, through
:func:`discover.searches.get_search`, and the RL transfer, through gymnax): those are imported inside the
command that runs them, after ``jax.distributed`` may have been initialized. This is the one place where
imports are deferred.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from discover.infra.checkpointing import CheckpointError
from discover.infra.config import ConfigError, config_reference, peek_kind, suggest
from discover.infra.errors import InputError
from discover.infra.experiments import resolve_config
from discover.infra.rundir import RunDir, is_main_process, new_run_dir
from discover.infra.sharding import distributed_section, initialize_distributed
from discover.language.analysis import fingerprint, live_statements, structural_hash
from discover.language.optax_export import export_module
from discover.language.program import ProgramError, parse
from discover.searches import KINDS, get_search
from discover.shared import runner
from discover.shared.profile import Profile, table_rows
from discover.shared.simplify import run_references, run_simplify
from discover.shared.transfer import run_transfer
from search_spaces.update_rules import PROGRAM_NAMES, discovered, seed, seeds

app = typer.Typer(
    name="discover",
    help="Discover learning algorithms: evolve update rules and RL objectives, export them to optax.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MATMUL_PRECISION_ENV = "JAX_DEFAULT_MATMUL_PRECISION"


@app.callback()
def _every_command() -> None:
    # float32 matrix products at full precision unless the user chose otherwise. On a GPU, JAX's default lets
    # them run in reduced-precision passes (TF32 / bf16), and the batched interpreter and the exported optax rule
    # then scored one program 26% apart on an H200 (benchmarks/BENCHMARKS.md, "GPU check"); with "highest" they
    # agree to 1e-7 at the same speed. On the CPU it changes nothing.
    if MATMUL_PRECISION_ENV not in os.environ:
        jax.config.update("jax_default_matmul_precision", "highest")


console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """An error in what the user gave us: printed as one line, exit code 2."""


# The project's own error types for bad input; any other exception is a bug and keeps its traceback.
USER_ERRORS = (UserError, ConfigError, CheckpointError, InputError)


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def load_program(source: str):
    """A program from a file path or a seed name; UserError with file:line:col on any defect."""
    path = Path(source)
    if path.is_dir() and (path / "best.py").exists():
        path = path / "best.py"
    if path.is_file():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read: {e}") from None
        try:
            return parse(text)
        except ProgramError as e:
            where = f"{path}:{e.line}:{e.col}" if e.line is not None else str(path)
            raise UserError(f"{where}: {e.message}") from None
    if source in PROGRAM_NAMES:
        return seed(source)
    raise UserError(f"'{source}' is neither a program file nor a seed (seeds: {', '.join(PROGRAM_NAMES)})")


@app.command("seeds")
def seeds_cmd() -> None:
    """List the baseline seed programs and the shipped discoveries (both can start a search: start_from)."""
    for title, programs in (("baseline seeds", seeds()),
                            ("discovered rules (search_spaces/discovered; header: how found, transfer)", discovered())):
        if not programs:
            continue
        table = Table(title=title)
        for col in ("name", "statements", "state", "reads"):
            table.add_column(col)
        for name, prog in programs.items():
            live = sum(live_statements(prog))
            table.add_row(name, str(live), ", ".join(prog.state) or "-", ", ".join(prog.inputs))
        console.print(table)


@app.command("show")
def show_cmd(program: str = typer.Argument(..., help="a program file (.py) or a seed name")) -> None:
    """Validate a program and print its canonical form, live statements, state and fingerprint."""
    prog = _run(load_program, program)
    console.print(Syntax(str(prog), "python", theme="ansi_dark", line_numbers=False))
    mask = live_statements(prog)
    dead = [str(s) for s, live in zip(prog.statements, mask) if not live]
    console.print(f"statements: {len(prog)} ({sum(mask)} live, {len(dead)} dead)")
    for d in dead:
        console.print(f"  dead: {d}", highlight=False)
    console.print(f"state: {', '.join(prog.state) or '(none)'}")
    console.print(f"inputs: {', '.join(prog.inputs)}")
    console.print(f"fingerprint: {fingerprint(prog)}   structure: {structural_hash(prog)}")


@app.command("export")
def export_cmd(
    program: str = typer.Argument(..., help="a program file, a run directory (its best.py) or a seed name"),
    output: Path = typer.Option(..., "-o", "--output", help="the Python module to write"),
) -> None:
    """Write a standalone optax module (imports only jax and optax) for a program."""
    prog = _run(load_program, program)
    text = export_module(prog)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, output)
    except OSError as e:
        fail(f"{output}: cannot write: {e}")
    console.print(escape(f"wrote {output}: `from {output.stem} import {prog.name}; opt = {prog.name}(1e-3)`"),
                  highlight=False)


@app.command("config")
def config_cmd(kind: str = typer.Argument(..., help=f"the kind of search: {', '.join(KINDS)}")) -> None:
    """List every config key of a search: dotted name, type, default and help."""
    if kind not in KINDS:
        fail(f"unknown kind {kind!r}; {suggest(kind, KINDS)}")
    console.print(config_reference(get_search(kind).config_type), markup=False, highlight=False, soft_wrap=True,
                  end="")


def _run(fn, *args, **kwargs):
    """Run fn, turning user errors (bad program, config, run directory, checkpoint) into one line and exit 2.
    Anything else is a bug and keeps its traceback."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as e:
        fail(str(e))


# --- searches ----------------------------------------------------------------------------------------
def _start_processes(config_path, overrides) -> None:
    """jax.distributed for a multi-process run (config `distributed:` or JAX_* variables); a no-op otherwise."""
    try:
        initialize_distributed(distributed_section(config_path, overrides))
    except ValueError as e:  # initialize_distributed's own one-line messages about the distributed section
        raise UserError(str(e)) from None


class RichProgress:
    """The runner's progress callback drawn with rich (process 0 only)."""

    def __init__(self) -> None:
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                            console=console, transient=False, disable=not is_main_process())
        self.task = None

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def phase(self, description: str) -> None:
        if self.task is None:
            self.task = self.bar.add_task(description, total=None)
        else:
            self.bar.update(self.task, description=description)

    def advance(self, done: int, total: int, description: str) -> None:
        if self.task is None:
            self.task = self.bar.add_task(description, total=total)
        self.bar.update(self.task, completed=done, total=total, description=description)

    def note(self, message: str) -> None:
        if is_main_process():
            self.bar.console.print(message, highlight=False, markup=False, soft_wrap=True)


def _report(summary, run_dir: RunDir) -> None:
    if not is_main_process():
        console.print(f"process {jax.process_index()} of {jax.process_count()}: done; process 0 reports and "
                      f"writes {run_dir.path}", highlight=False, soft_wrap=True)
        return
    console.rule("result")
    if summary.interrupted:
        console.print(f"stopped after step {summary.generations_done} of {summary.generations}: checkpoint saved; "
                      f"continue with `discover resume {run_dir.path}`", highlight=False, markup=False, soft_wrap=True)
        return
    if getattr(summary, "best_program", None):
        console.print(Syntax(summary.best_program, "python", theme="ansi_dark"))
    for line in summary.headline():
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    files = [name for name in summary.files if run_dir.file(name).exists()]
    console.print(f"run directory: {run_dir.path}  ({', '.join(files)})", highlight=False, markup=False, soft_wrap=True)
    console.print(f"TensorBoard: tensorboard --logdir {run_dir.tb_dir}", highlight=False, markup=False, soft_wrap=True)


def _report_profile(report: dict, run_dir: RunDir) -> None:
    steps = report["steps"]
    table = Table(title=f"where the wall time went ({report['run']['wall_s']:.1f} s; {steps['count']} steps: "
                        f"{steps['wall_s']:.1f} s)")
    for col, justify in (("section", "left"), ("seconds", "right"), ("share of run", "right"),
                         ("share of steps", "right"), ("calls", "right")):
        table.add_column(col, justify=justify)
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
    lines = [f"trainer: {report['run']['trainer_share']:.1%} of the run, {steps['trainer_share']:.1%} of the steps"]
    if report["off_thread_s"]:
        lines.append("off the critical path (a worker thread, while the next step computed): "
                     + ", ".join(f"{k} {v:.2f} s" for k, v in report["off_thread_s"].items()))
    lines.append(f"details: {run_dir.file('profile.json')}")
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _run_search(kind: str, config_path, overrides: list[str], run_dir: RunDir | None, out: Path | None,
                profile: bool = False) -> None:
    """Loads the search (after jax.distributed), its config, and runs it; exits 0, or 130 when interrupted."""
    if profile and kind != "update_rule":
        fail(f"--profile: only update-rule searches time their sections (this config's kind is {kind!r})")
    _run(_start_processes, config_path, overrides)  # before any search is imported: importing evosax starts JAX
    search = get_search(kind)
    config = _run(search.load_config, config_path, overrides)
    resume = run_dir is not None
    if run_dir is None:
        run_dir = _run(new_run_dir, config, out)
        if is_main_process():
            console.print(f"run directory: {run_dir.path}", highlight=False, markup=False, soft_wrap=True)
    with RichProgress() as progress:
        summary = _run(runner.run, search, config, run_dir, resume=resume, progress=progress,
                       profile=Profile(enabled=profile))
    _report(summary, run_dir)
    if summary.profile is not None and is_main_process():
        _report_profile(summary.profile, run_dir)
    raise typer.Exit(code=130 if summary.interrupted else 0)


@app.command("search")
def search_cmd(
    config: str | None = typer.Argument(
        None, help="experiment YAML, or a shipped experiment's name (talpo_tiny); default: quickstart"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set evolution.generations=5"),
    out: Path | None = typer.Option(None, "--out", help="parent folder of the run directory (default checkpoints/)"),
    profile: bool = typer.Option(False, "--profile", help="update rules: time each phase of every generation "
                                                          "(training, mutation...): a table and profile.json"),
) -> None:
    """Run a search; the config's `kind:` says which (update_rule, rl_objective, distill)."""
    path = _run(resolve_config, config)
    kind = _run(peek_kind, str(path), KINDS)
    _run_search(kind, path, list(set_), None, out, profile)


@app.command("resume")
def resume_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory written by `discover search`"),
    set_: list[str] = typer.Option(
        [], "--set", help="where it runs now: --set devices=2, --set distributed.coordinator_address=host0:1234"),
    profile: bool = typer.Option(False, "--profile", help="update rules: time each phase of the resumed "
                                                          "generations: a table and profile.json"),
) -> None:
    """Continue a stopped or killed search from its newest good checkpoint."""
    for item in set_:  # what may differ on resume: where it runs, never what it searches
        key = item.split("=", 1)[0].strip()
        if not (key == "devices" or key.startswith("distributed.")):
            fail(f"--set {key}: only devices and distributed.* can change on resume (the search itself runs "
                 f"as recorded in {run_dir / 'config.yaml'})")
    rd = _run(RunDir.open, run_dir)
    kind = _run(peek_kind, str(rd.config_path), KINDS)
    _run_search(kind, rd.config_path, list(set_), rd, None, profile)


@app.command("distill")
def distill_cmd(
    source: Path = typer.Argument(..., help="an RL-objective run directory (its best_drift.npz) or a drift .npz"),
    config: str = typer.Option("distill_cartpole", "--config", help="distill experiment YAML or shipped name"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set evolution.generations=20"),
    out: Path | None = typer.Option(None, "--out", help="parent folder of the run directory (default checkpoints/)"),
) -> None:
    """Distill a learned drift into a closed-form program (.py importing only jax, .json, pictures)."""
    path = _run(resolve_config, config)
    kind = _run(peek_kind, str(path), KINDS)
    if kind != "distill":
        fail(f"{path}: kind is {kind!r}; `discover distill` takes a config of kind 'distill'")
    quoted = "'" + str(source.resolve()).replace("'", "''") + "'"  # a YAML single-quoted string: any path
    _run_search("distill", path, [*set_, f"source={quoted}"], None, out)


# --- simplify and transfer --------------------------------------------------------------------------
def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"{option}: expected comma-separated numbers, got {text!r}")


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


@app.command("simplify")
def simplify_cmd(
    source: str = typer.Argument(..., help="a program file, a seed name, or a search run directory (its best.py)"),
    tolerance: float = typer.Option(0.01, help="keep a change if fitness <= original * (1 + tolerance)"),
    tasks: str | None = typer.Option(None, help="comma-separated tasks (default: the run's meta-validation tasks)"),
    seeds: int | None = typer.Option(None, help="training seeds per task"),
    steps: int | None = typer.Option(None, help="training steps per task (default: the task's own)"),
    out: Path | None = typer.Option(None, "--out", help="report folder (default: the run dir or a new one)"),
) -> None:
    """Shorten a program while its meta-validation fitness stays within a tolerance; report every step."""
    path = Path(source)
    program = source if (path.exists() or path.is_dir()) else _run(load_program, source)
    scoring = {}
    if (path / "config.yaml").is_file():  # a search run directory: score as its meta-validation funnel did
        config = _run(get_search("update_rule").load_config, path / "config.yaml")
        has_funnel = bool(config.funnel.tasks)  # no funnel: the proxy fitness ranked the run's programs
        section = config.funnel if has_funnel else config.fitness
        scoring = {"tasks": list(section.tasks), "steps": section.steps, "seeds": section.train_seeds,
                   "lr_multipliers": list(config.fitness.lr_multipliers), "worst": config.fitness.worst,
                   "reference_cache": config.fitness.reference_cache, "lr_schedule": config.fitness.lr_schedule,
                   "aggregate": config.funnel.aggregate if has_funnel else "mean"}
        if tasks is None and seeds is None and steps is None:  # the run's settings: its saved references hold
            scoring["references"] = _run(run_references, path, "metaval" if has_funnel else "proxy", section.tasks)
    given = {"tasks": _names(tasks), "seeds": seeds, "steps": steps}
    scoring.update({key: value for key, value in given.items() if value is not None})
    result, _steps = _run(run_simplify, program, tolerance=tolerance, out_dir=out, console=console,
                                **scoring)
    console.print(Syntax(str(result), "python", theme="ansi_dark"))


def _is_rl_source(source: str) -> bool:
    path = Path(source)
    if path.suffix == ".npz":
        return True
    if (path / "config.yaml").is_file():
        try:
            return peek_kind(str(path / "config.yaml")) == "rl_objective"
        except ConfigError:  # an unreadable config is reported by whichever path opens it
            return False
    return False


@app.command("transfer")
def transfer_cmd(
    sources: list[str] = typer.Argument(..., help="programs (files, seeds, run dirs) or ONE RL run dir / drift"),
    tasks: str = typer.Option("target", help="update rules: comma-separated target tasks or kinds"),
    baselines: str = typer.Option("adamw,lion,sgdm", help="update rules: baselines to tune alongside: optax's "
                                   "adamw, lion, sgdm, nadamw, radam, amsgrad, adan, adopt, ademamix, muon, or "
                                   "any seed program"),
    lr_grid: str | None = typer.Option(None, help="update rules: lr multipliers, e.g. 0.1,0.3,1,3,10"),
    wd_grid: str | None = typer.Option(None, help="update rules: weight decays, e.g. 0,0.1"),
    envs: str | None = typer.Option(None, help="RL: environments (default: meta-training env + held-out)"),
    horizons: str | None = typer.Option(None, help="RL: multiples of the training horizon, e.g. 0.25,1,4"),
    seeds: int | None = typer.Option(None, help="seeds per configuration (RL default: 16)"),
    distilled: Path | None = typer.Option(None, "--distilled", help="RL: a distilled drift file, a fourth method"),
    time_frozen: bool = typer.Option(False, "--time-frozen", help="RL: also train the learned drift blind to time "
                                     "(n/N and log N held fixed) on the same seeds: does its gain come from time?"),
    steps: int | None = typer.Option(None, help="update rules: training steps per task"),
    lr_schedule: str = typer.Option("constant", help="update rules: every optimizer's lr schedule: constant | cosine"),
    tuner: str = typer.Option("grid", help="update rules: how lr x wd is tuned: grid | bo (Bayesian optimization)"),
    budget: int | None = typer.Option(None, help="update rules: lr x wd trials per optimizer (default: the grid's size)"),
    fresh_seeds: int | None = typer.Option(None, help="update rules: fresh seeds the chosen point is reported on "
                                                      "(default 5)"),
    fresh_seed_offset: int | None = typer.Option(None, help="update rules: the fresh seeds' first key (default "
                                                            "10000); another value replicates a report on new seeds. "
                                                            "RL: > 0 trains every method on other seeds (default 0)"),
    replicate_seeds: int = typer.Option(0, help="update rules: test every verdict that is not a tie again on this "
                                                "many further seeds (0: off)"),
    out: Path | None = typer.Option(None, "--out", help="output folder"),
) -> None:
    """Evaluate discovered algorithms on held-out tasks against tuned baselines (table + plots)."""
    if len(sources) == 1 and _is_rl_source(sources[0]):
        if (tuner != "grid" or budget is not None or fresh_seeds is not None
                or replicate_seeds or lr_schedule != "constant"):
            fail("--tuner, --budget, --fresh-seeds, --replicate-seeds and --lr-schedule are for "
                 "update rules; an RL transfer has no lr x wd to tune")
        from discover.shared import rl_transfer  # deferred: gymnax starts JAX (module doc)

        closed_form = None if distilled is None else _run(rl_transfer.load_distilled, distilled)
        table = _run(rl_transfer.run_rl_transfer, sources[0], _names(envs), _floats(horizons, "--horizons"),
                     rl_transfer.DEFAULT_SEEDS if seeds is None else seeds, out, closed_form,
                     seed_offset=fresh_seed_offset or 0, time_frozen=time_frozen)
    else:
        if distilled is not None:
            fail("--distilled: distilled drifts transfer with ONE RL run directory or drift file (.npz)")
        if time_frozen:
            fail("--time-frozen: a learned drift's time inputs; transfer ONE RL run directory or drift file (.npz)")
        programs = {}
        for src in sources:
            label = Path(src).name if Path(src).is_dir() else Path(src).stem
            programs[label] = _run(load_program, src)
        kwargs = {k: v for k, v in {"lr_grid": _floats(lr_grid, "--lr-grid"), "wd_grid": _floats(wd_grid, "--wd-grid"),
                                    "seeds": seeds, "fresh_seeds": fresh_seeds,
                                    "fresh_seed_offset": fresh_seed_offset}.items() if v is not None}
        table = _run(run_transfer, programs, tasks=_names(tasks), baselines=_names(baselines),
                     steps_override=steps, lr_schedule=lr_schedule, out_dir=out, console=console, tuner=tuner,
                     budget=budget, replicate_seeds=replicate_seeds, **kwargs)
    console.print(table, highlight=False, markup=False)


def main() -> None:
    try:
        code = app(prog_name="discover", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as e:
        if not _is_click_error(e):
            raise
        # One short line instead of the boxed usage text (bad option, missing argument, unknown command).
        if not e.format_message():  # `discover` alone: the help was printed
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "discover"
        err_console.print(f"[bold red]error:[/] {escape(where)}: {escape(e.format_message())} "
                          f"(see '{escape(where)} --help')", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _is_click_error(exc: BaseException) -> bool:
    """A usage error from typer's parser. typer vendors click privately, so its exception classes are
    recognised by name rather than imported from a private module."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


if __name__ == "__main__":
    main()
