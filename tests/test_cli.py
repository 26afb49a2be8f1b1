"""The basic `discover` CLI: --help, seeds, show, export; bad input is one line with exit code 2."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from discover import fingerprint, parse, structural_hash, to_optax
from discover.cli import app
from search_spaces.update_rules import SEED_NAMES, seed

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

DEAD = (
    "def rule(g, w, m, lr, t):\n"
    "    m = interp(g, m, 0.9)\n"
    "    junk = exp(w)\n"
    "    return lr * sign(m), m\n"
)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for w in words:
        assert w in lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("seeds", "show", "export"):
        assert command in result.stdout


def test_seeds_lists_every_seed_with_its_state():
    result = invoke("seeds")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 2}
    assert set(SEED_NAMES) <= set(rows)
    assert "m, v" in rows["adam"] and "-" in rows["sgd"].split("│")[3]


def test_show_a_seed_prints_canonical_form_state_and_fingerprint():
    result = invoke("show", "momentum")
    assert result.exit_code == 0, result.output
    prog = seed("momentum")
    assert str(prog).strip() in result.stdout
    assert "state: m" in result.stdout
    assert f"fingerprint: {fingerprint(prog)}" in result.stdout
    assert f"structure: {structural_hash(prog)}" in result.stdout


def test_show_a_file_flattens_and_reports_dead_statements(tmp_path):
    path = tmp_path / "rule.py"
    path.write_text(DEAD)
    result = invoke("show", path)
    assert result.exit_code == 0, result.output
    prog = parse(DEAD)
    assert "_1 = sign(m)" in result.stdout and "update = lr * _1" in result.stdout
    assert f"statements: {len(prog)} (3 live, 1 dead)" in result.stdout
    assert "dead: junk = exp(w)" in result.stdout
    assert f"fingerprint: {fingerprint(prog)}" in result.stdout


def test_show_a_run_directory_reads_its_best_program(tmp_path):
    (tmp_path / "best.py").write_text(DEAD)
    result = invoke("show", tmp_path)
    assert result.exit_code == 0, result.output
    assert "def rule(g, w, m, lr, t):" in result.stdout


BAD = [
    ("undefined", "def f(g, w, lr, t):\n    u = g * zz\n    return u\n", 2, 13, "undefined variable 'zz'"),
    ("syntax", "def f(g, w, lr, t):\n    u = sqrt(g\n    return u\n", 2, 13, "was never closed"),
    ("import", "import os\ndef f(g):\n    return g\n", 1, 1, "import"),
    ("out-of-order", "def f(g, m, v):\n    return g, v, m\n", 2, 5, "out of order"),
    ("null-byte", "def f(g):\n    return g\x00\n", 2, 13, "null byte"),
]


@pytest.mark.parametrize("text,line,col,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_show_a_bad_program_is_one_line_with_its_location(tmp_path, text, line, col, words):
    path = tmp_path / "bad.py"
    path.write_text(text)
    assert_one_line_error(invoke("show", path), f"{path}:{line}:{col}: ", words)


def test_show_an_unknown_name_lists_the_seeds():
    line = assert_one_line_error(invoke("show", "no_such_rule"), "'no_such_rule'", "neither")
    assert all(name in line for name in SEED_NAMES)


def test_show_an_undecodable_file(tmp_path):
    path = tmp_path / "binary.py"
    path.write_bytes(b"\xff\xfe\xfa def f(g):\n")
    assert_one_line_error(invoke("show", path), str(path), "cannot read")


def test_error_messages_are_printed_verbatim(tmp_path):
    # Paths and messages are data, not rich markup: "[red]" must not vanish from the file name.
    path = tmp_path / "bad[red].py"
    path.write_text("def f(g):\n    return q\n")
    assert_one_line_error(invoke("show", path), f"{path}:2:5: ", "undefined variable 'q'")


def test_export_writes_a_module_that_matches_to_optax(tmp_path):
    out = tmp_path / "pkg" / "my_adam.py"
    result = invoke("export", "adam", "-o", out)
    assert result.exit_code == 0, result.output
    assert "my_adam" in result.stdout and not list(out.parent.glob(".*.tmp"))
    source = out.read_text()
    imported = {a.name.split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"jax", "optax", "typing"}, imported

    spec = importlib.util.spec_from_file_location("my_adam", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    params = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(4)}
    grads = {"a": jnp.full((2, 3), 0.5), "b": jnp.linspace(-2.0, 2.0, 4)}
    exported, reference = module.adam(1e-2), to_optax(seed("adam"), 1e-2)
    u1, _ = exported.update(grads, exported.init(params), params)
    u2, _ = reference.update(grads, reference.init(params), params)
    for k in params:
        np.testing.assert_array_equal(np.asarray(u1[k]), np.asarray(u2[k]))
        assert np.all(np.isfinite(np.asarray(u1[k])))


def test_export_of_a_bad_program_writes_nothing(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(g, w, lr, t):\n    u = g.T\n    return u\n")
    out = tmp_path / "out.py"
    assert_one_line_error(invoke("export", bad, "-o", out), f"{bad}:2:9: ", "attribute access")
    assert not out.exists()


def test_export_to_an_unwritable_place_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert_one_line_error(invoke("export", "sgd", "-o", blocker / "out.py"), "cannot write")


def test_a_real_process_reports_a_bad_program_in_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(g, w, lr, t):\n    m = g\n    u = lr * foo(m)\n    return u\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "discover.cli", "show", str(bad)], cwd=REPO, env=env, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{bad}:3:14: " in lines[0] and "unknown op 'foo'" in lines[0]


def test_transfer_command_writes_its_report_and_names_bad_tasks(tmp_path):
    from discover.cli import app

    runner = CliRunner()
    out = tmp_path / "transfer"
    args = ["transfer", "lion", "adam", "--tasks", "noisy_quadratic_proxy", "--steps", "10", "--seeds", "1",
            "--lr-grid", "1", "--wd-grid", "0", "--baselines", "adamw", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = (out / "transfer.md").read_text()
    assert "| lion (program) |" in report and "| AdamW |" in report
    bad = runner.invoke(app, ["transfer", "lion", "--tasks", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown task 'nope'" in bad.output and "Traceback" not in bad.output


def test_transfer_under_a_cosine_schedule_says_so_and_a_bad_schedule_is_one_line(tmp_path):
    from discover.cli import app

    runner = CliRunner()
    out = tmp_path / "transfer"
    args = ["transfer", "adam", "--tasks", "noisy_quadratic_proxy", "--steps", "10", "--seeds", "1", "--lr-grid", "1",
            "--wd-grid", "0", "--baselines", "adamw", "--lr-schedule", "cosine", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "transfer.json").read_text())["settings"]["lr_schedule"] == "cosine"
    assert "same cosine schedule" in (out / "transfer.md").read_text()
    bad = runner.invoke(app, [*args[:-2], "--lr-schedule", "linear", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown lr schedule 'linear'" in bad.output and "Traceback" not in bad.output
    assert len(bad.stderr.strip().splitlines()) == 1


def test_every_command_runs_float32_matmuls_at_full_precision_unless_the_user_chose(monkeypatch):
    # On a GPU, JAX's default precision made the batched interpreter and the exported rule disagree (BENCHMARKS.md).
    import jax

    before = jax.config.jax_default_matmul_precision
    try:
        jax.config.update("jax_default_matmul_precision", None)
        monkeypatch.delenv("JAX_DEFAULT_MATMUL_PRECISION", raising=False)
        assert invoke("seeds").exit_code == 0
        assert jax.config.jax_default_matmul_precision == "highest"
        jax.config.update("jax_default_matmul_precision", "bfloat16")
        monkeypatch.setenv("JAX_DEFAULT_MATMUL_PRECISION", "bfloat16")
        assert invoke("seeds").exit_code == 0
        assert jax.config.jax_default_matmul_precision == "bfloat16"  # the user's choice stands
    finally:
        jax.config.update("jax_default_matmul_precision", before)
