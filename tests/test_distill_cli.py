"""`discover distill`: a tiny run end to end (files, the safe loader, TensorBoard, resume), and bad input as one
line with exit code 2."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from discover.cli import app
from discover.infra.config import load_config
from discover.searches.rl.config import RLSearchConfig
from discover.shared.drift_io import load_distilled, save_drift
from discover.shared.runner import search_result
from search_spaces.drift import make_drift

REPO = Path(__file__).resolve().parents[1]
TALPO_TINY = REPO / "experiments" / "talpo_tiny.yaml"
cli = CliRunner()


def invoke(*args):
    return cli.invoke(app, [str(a) for a in args])


def one_line_error(result, *words) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _run_dir_of(output: str) -> Path:
    return Path(re.search(r"^run directory: (\S+)$", output, re.MULTILINE).group(1))


@pytest.fixture(scope="module")
def rl_run_dir(tmp_path_factory) -> Path:
    """A stand-in for an RL-objective run directory: a small TA-LPO network (random weights, large enough to
    matter) in best_drift.npz, on talpo_tiny's PPO setting."""
    folder = tmp_path_factory.mktemp("talpo-run")
    config = load_config(RLSearchConfig, TALPO_TINY)
    drift = dataclasses.replace(config.drift, init_scale=3.0)
    params = make_drift(drift).init(jax.random.PRNGKey(1))
    save_drift(folder / "best_drift.npz", params, {"drift": dataclasses.asdict(drift), "env": "CartPole-v1",
                                                   "ppo": dataclasses.asdict(config.ppo_config)})
    return folder


def test_tiny_distillation_writes_the_formula_and_its_pictures_and_resumes(rl_run_dir, tmp_path):
    """One tiny run end to end (one test, so that parallel workers do not each repeat it)."""
    result = invoke("distill", rl_run_dir, "--config", "distill_tiny", "--out", tmp_path,
                    "--set", "evolution.generations=2")
    assert result.exit_code == 0, result.output
    run = _run_dir_of(result.stdout)
    for name in ("distilled_drift.py", "distilled_drift.json", "distill.png", "hall_of_fame.json", "samples.npz",
                 "reference.json", "results.json", "config.yaml"):
        assert (run / name).is_file(), name
    assert "drift = min(relu(f)" in result.stdout and "RL check on CartPole-v1" in result.stdout
    results = json.loads((run / "results.json").read_text())
    assert results["kind"] == "distill" and results["source"] == str((rl_run_dir / "best_drift.npz").resolve())
    assert results["rl_checks"] >= 1 and np.isfinite(results["holdout_error"])
    assert results["samples"]["recorded"] > 0  # the states of real PPO runs with the network
    module = (run / "distilled_drift.py").read_text()
    assert [line for line in module.splitlines() if line.startswith(("import", "from"))] == [
        "import jax", "import jax.numpy as jnp"]
    drift = load_distilled(run / "distilled_drift.py")
    r = np.linspace(0.5, 1.5, 11, dtype=np.float32)
    values = np.asarray(drift(r, 1.0, 0.5, 1.0))
    assert values[5] == 0.0 and np.all(values >= 0.0)
    assert list((run / "tb").glob("events.out.tfevents.*"))

    # resuming the finished run rereads its samples and reference returns and reproduces its result
    result = invoke("resume", run)
    assert result.exit_code == 0, result.output
    assert search_result(json.loads((run / "results.json").read_text())) == search_result(results)


def test_bad_input_is_one_line_with_exit_code_2(tmp_path, rl_run_dir):
    one_line_error(invoke("distill", tmp_path / "missing"), "no such drift file or run directory")
    one_line_error(invoke("distill", tmp_path), "not an RL-objective run directory (no best_drift.npz)")
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    one_line_error(invoke("distill", text), "not a saved drift")
    one_line_error(invoke("distill", rl_run_dir, "--config", "distill_tiny", "--set", "evolution.generationz=3"),
                   "unknown key")
    one_line_error(invoke("distill", rl_run_dir, "--config", "distill_tiny", "--set", "space.ops=[norm]"),
                   "space.ops[0]")
    one_line_error(invoke("distill", rl_run_dir, "--config", "talpo_tiny"), "kind is 'rl_objective'")
    one_line_error(invoke("distill", rl_run_dir, "--config", "no_such_experiment"), "no shipped experiment")
    one_line_error(invoke("search", "distill_tiny"), "source: missing")
    assert not list(Path("checkpoints").glob("distill-tiny-*"))  # nothing was created for bad input
