"""The `discover` command line (typer + rich).

Every user error (bad program, bad config, missing file) is printed as ONE line naming the defect
and where it is, with exit code 2 and no traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

app = typer.Typer(
    name="discover",
    help="Discover learning algorithms: evolve update rules and RL objectives, export them to optax.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """An error in what the user gave us: printed as one line, exit code 2."""


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def load_program(source: str):
    """A program from a file path or a seed name; UserError with file:line:col on any defect."""
    from discover.language.program import ProgramError, parse

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
    from search_spaces.update_rules import SEED_NAMES, seed

    if source in SEED_NAMES:
        return seed(source)
    raise UserError(f"'{source}' is neither a program file nor a seed (seeds: {', '.join(SEED_NAMES)})")


@app.command("seeds")
def seeds_cmd() -> None:
    """List the baseline seed programs."""
    from discover.language.analysis import live_statements
    from search_spaces.update_rules import seeds

    table = Table(title="baseline seeds")
    for col in ("name", "statements", "state", "reads"):
        table.add_column(col)
    for name, prog in seeds().items():
        live = sum(live_statements(prog))
        table.add_row(name, str(live), ", ".join(prog.state) or "-", ", ".join(prog.inputs))
    console.print(table)


@app.command("show")
def show_cmd(program: str = typer.Argument(..., help="a program file (.py) or a seed name")) -> None:
    """Validate a program and print its canonical form, live statements, state and fingerprint."""
    from discover.language.analysis import fingerprint, live_statements, structural_hash

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
    from discover.language.optax_export import export_module

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


def _run(fn, *args, **kwargs):
    """Run fn, turning user errors (bad program, config, run directory) into one line and exit code 2."""
    from discover.infra.checkpointing import CheckpointError
    from discover.infra.config import ConfigError

    try:
        return fn(*args, **kwargs)
    except (UserError, ConfigError, CheckpointError) as e:
        fail(str(e))


# --- searches ----------------------------------------------------------------------------------------
def _searches(kind: str):
    """(load_config(path, overrides), new_run_dir(config, out), run(config, run_dir, resume, progress))."""
    if kind == "update_rule":
        from discover.searches.update_rules import search

        return search.load_search_config, search.new_run_dir, search.run_search
    from discover.infra.config import load_config
    from discover.infra.rundir import new_run_dir
    from discover.searches.rl import search as rl_search

    def load(path, overrides):
        return load_config(rl_search.RLSearchConfig, path, overrides)

    return load, new_run_dir, rl_search.run_rl_search


def _start_processes(config_path, overrides) -> None:
    """jax.distributed for a multi-process run (config `distributed:` or JAX_* variables); a no-op otherwise."""
    from discover.infra.sharding import distributed_section, initialize_distributed

    try:
        initialize_distributed(distributed_section(config_path, overrides))
    except ValueError as e:
        raise UserError(str(e)) from None


def _is_primary() -> bool:
    """True unless this is process 1.. of a multi-process run (those work silently; process 0 reports)."""
    from discover.infra.sharding import is_primary

    return is_primary()


def _progress():
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    console=console, transient=False, disable=not _is_primary())


def _report(summary: dict, run_dir) -> None:
    if not _is_primary():
        import jax

        console.print(f"process {jax.process_index()} of {jax.process_count()}: done; process 0 reports and "
                      f"writes {run_dir.path}", highlight=False)
        return
    console.rule("result")
    if summary.get("interrupted"):
        console.print(f"stopped after generation {summary.get('generations_done', '?')}: checkpoint saved; "
                      f"continue with `discover resume {run_dir.path}`", highlight=False)
    if "best_program" in summary:
        console.print(Syntax(summary["best_program"], "python", theme="ansi_dark"))
        console.print(f"best fitness {summary['best_fitness']:.4f} (val loss / tuned AdamW; < 1 beats AdamW), "
                      f"meta-validation {summary['best_metaval']:.4f}; seeds: {summary['seed_fitness']:.4f}",
                      highlight=False)
        console.print(f"cache hit rate {summary['cache_hit_rate']:.0%}, dead statements "
                      f"{summary['dead_share']:.0%}, {summary['candidates_scored']} candidates scored",
                      highlight=False)
    for key in ("best_normalized_return", "ppo_normalized_return", "dpo_normalized_return"):
        if key in summary:
            console.print(f"{key.replace('_', ' ')}: {summary[key]:.3f}", highlight=False)
    console.print(f"run directory: {run_dir.path}  (best.py, hall_of_fame.json, results.json)", highlight=False)
    console.print(f"TensorBoard: tensorboard --logdir {run_dir.tb_dir}", highlight=False)


@app.command("search")
def search_cmd(
    config: Path | None = typer.Argument(None, help="experiment YAML (default: experiments/quickstart.yaml)"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set evolution.generations=5"),
    out: Path | None = typer.Option(None, "--out", help="parent folder of the run directory (default checkpoints/)"),
) -> None:
    """Run a search: update rules (kind: update_rule) or an RL objective (kind: rl_objective)."""
    from discover.infra.config import peek_kind

    kind = "update_rule" if config is None else _run(peek_kind, str(config), ("update_rule", "rl_objective"))
    _run(_start_processes, config, list(set_))  # before the searches are imported (evosax starts JAX)
    load, new_run_dir, run = _searches(kind)
    cfg = _run(load, config, list(set_))
    run_dir = _run(new_run_dir, cfg, out)
    if _is_primary():
        console.print(f"run directory: {run_dir.path}", highlight=False)
    with _progress() as progress:
        summary = _run(run, cfg, run_dir, False, progress)
    _report(summary, run_dir)
    raise typer.Exit(code=130 if summary.get("interrupted") else 0)


@app.command("resume")
def resume_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory written by `discover search`"),
    set_: list[str] = typer.Option(
        [], "--set", help="where it runs now: --set devices=2, --set distributed.coordinator_address=host0:1234"),
) -> None:
    """Continue a stopped or killed search from its newest good checkpoint."""
    from discover.infra.config import peek_kind
    from discover.infra.rundir import RunDir

    for item in set_:  # what may differ on resume: where it runs, never what it searches
        key = item.split("=", 1)[0].strip()
        if not (key == "devices" or key.startswith("distributed.")):
            fail(f"--set {key}: only devices and distributed.* can change on resume (the search itself runs "
                 f"as recorded in {run_dir / 'config.yaml'})")
    rd = _run(RunDir.open, run_dir)
    kind = _run(peek_kind, str(rd.config_path), ("update_rule", "rl_objective"))
    _run(_start_processes, rd.config_path, list(set_))
    load, _, run = _searches(kind)
    cfg = _run(load, rd.config_path, list(set_))
    with _progress() as progress:
        summary = _run(run, cfg, rd, True, progress)
    _report(summary, rd)
    raise typer.Exit(code=130 if summary.get("interrupted") else 0)


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


def _user_call(fn, *args, **kwargs):
    """Like _run, and the entry points' ValueErrors for bad arguments are user errors too."""
    try:
        return _run(fn, *args, **kwargs)
    except ValueError as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


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
    from discover.shared.simplify import run_simplify

    path = Path(source)
    program = source if (path.exists() or path.is_dir()) else _run(load_program, source)
    result, _steps = _user_call(run_simplify, program, tolerance=tolerance, tasks=_names(tasks), seeds=seeds,
                                steps=steps, out_dir=out, console=console)
    console.print(Syntax(str(result), "python", theme="ansi_dark"))


def _is_rl_source(source: str) -> bool:
    path = Path(source)
    if path.suffix == ".npz":
        return True
    if (path / "config.yaml").is_file():
        from discover.infra.config import ConfigError, peek_kind

        try:
            return peek_kind(str(path / "config.yaml")) == "rl_objective"
        except ConfigError:  # an unreadable config is reported by whichever path opens it
            return False
    return False


@app.command("transfer")
def transfer_cmd(
    sources: list[str] = typer.Argument(..., help="programs (files, seeds, run dirs) or ONE RL run dir / drift"),
    tasks: str = typer.Option("target", help="update rules: comma-separated target tasks or kinds"),
    baselines: str = typer.Option("adamw,lion,sgdm", help="update rules: baselines to tune alongside"),
    lr_grid: str | None = typer.Option(None, help="update rules: lr multipliers, e.g. 0.1,0.3,1,3,10"),
    wd_grid: str | None = typer.Option(None, help="update rules: weight decays, e.g. 0,0.1"),
    envs: str | None = typer.Option(None, help="RL: environments (default: meta-training env + held-out)"),
    horizons: str | None = typer.Option(None, help="RL: multiples of the training horizon, e.g. 0.25,1,4"),
    seeds: int | None = typer.Option(None, help="seeds per configuration"),
    steps: int | None = typer.Option(None, help="update rules: training steps per task"),
    out: Path | None = typer.Option(None, "--out", help="output folder"),
) -> None:
    """Evaluate discovered algorithms on held-out tasks against tuned baselines (table + plots)."""
    if len(sources) == 1 and _is_rl_source(sources[0]):
        from discover.shared.rl_transfer import run_rl_transfer

        table = _user_call(run_rl_transfer, sources[0], _names(envs), _floats(horizons, "--horizons"),
                           seeds or 4, out)
    else:
        from discover.shared.transfer import run_transfer

        programs = {}
        for src in sources:
            label = Path(src).name if Path(src).is_dir() else Path(src).stem
            programs[label] = _run(load_program, src)
        kwargs = {k: v for k, v in {"lr_grid": _floats(lr_grid, "--lr-grid"), "wd_grid": _floats(wd_grid, "--wd-grid"),
                                    "seeds": seeds}.items() if v is not None}
        table = _user_call(run_transfer, programs, tasks=_names(tasks), baselines=_names(baselines),
                           steps_override=steps, out_dir=out, console=console, **kwargs)
    console.print(table, highlight=False, markup=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
