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
    from discover.program import ProgramError, parse

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
    from discover.analysis import live_statements
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
    from discover.analysis import fingerprint, live_statements, structural_hash

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
    from discover.optax_export import export_module

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
    """Run fn, turning user errors into one line and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        fail(str(e))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
