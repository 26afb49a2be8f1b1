"""`discover search` / `discover resume` through the one runner: result blocks, resume notices, and errors that
are (or are not) the user's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discover.cli import app
from discover.infra.config import dump_config, load_config
from discover.infra.rundir import RunDir
from discover.searches.update_rules.config import SearchConfig
from discover.searches.update_rules.search import UpdateRuleSearch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "search_tiny.yaml"
TALPO_TINY = REPO / "experiments" / "talpo_tiny.yaml"
cli = CliRunner()


def invoke(*args):
    return cli.invoke(app, [str(a) for a in args])


def _one_line_error(result, *words) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0]
    return lines[0]


def _run_dir_of(output: str) -> Path:
    return Path(re.search(r"^run directory: (\S+)$", output, re.MULTILINE).group(1))


@pytest.fixture(scope="module")
def tiny_update_rule_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ur")
    result = invoke("search", TINY, "--out", root, "--set", "evolution.generations=2", "--set", "refine.top_k=0",
                    "--set", f"fitness.reference_cache={root / 'refs.json'}")
    assert result.exit_code == 0, result.output
    return result, _run_dir_of(result.stdout)


def test_update_rule_result_block_names_the_files_it_wrote(tiny_update_rule_run):
    result, run = tiny_update_rule_run
    listed = re.search(r"run directory: \S+  \((.*)\)", result.stdout).group(1).split(", ")
    assert set(listed) == {"best.py", "hall_of_fame.json", "references.json", "results.json"}
    assert all((run / name).is_file() for name in listed)
    assert "best fitness" in result.stdout and "meta-validation" in result.stdout


def _died_before_its_last_checkpoint(run: Path, tmp_path: Path) -> tuple[Path, list[int]]:
    """A copy of ``run`` as if it had died before its last checkpoint (no results.json): (copy, checkpoint steps
    of the original run)."""
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    (copy / "results.json").unlink()
    steps = sorted(int(p.name) for p in (copy / "ckpt").iterdir() if p.name.isdigit())
    shutil.rmtree(copy / "ckpt" / str(steps[-1]))
    return copy, steps


def test_resume_says_where_it_continues_from(tiny_update_rule_run, tmp_path):
    _, run = tiny_update_rule_run
    copy, steps = _died_before_its_last_checkpoint(run, tmp_path)
    result = invoke("resume", copy)
    assert result.exit_code == 0, result.output
    assert f"resuming from checkpoint {steps[-2]}" in result.stdout
    assert f"(step {steps[-2]} of {steps[-1]} done)" in result.stdout
    assert (copy / "hall_of_fame.json").read_text() == (run / "hall_of_fame.json").read_text()


def test_resume_of_a_run_without_checkpoint_is_one_line(tmp_path):
    config = load_config(SearchConfig, TINY)
    run = RunDir.create(tmp_path, "never-started", dump_config(config))
    line = _one_line_error(invoke("resume", run.path), "no checkpoint to resume from")
    assert str(run.path) in line
    assert sorted(p.name for p in run.path.iterdir()) == ["ckpt", "config.yaml"] or \
        sorted(p.name for p in run.path.iterdir()) == ["config.yaml"]


def test_an_internal_value_error_is_a_bug_not_bad_input(tmp_path, monkeypatch):
    def broken(self, config, run_dir, progress):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(UpdateRuleSearch, "prepare", broken)
    result = invoke("search", TINY, "--out", tmp_path, "--set", "evolution.generations=1")
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)  # not dressed up as a one-line user error


def test_an_unknown_lr_schedule_in_a_config_is_one_line_naming_the_key(tmp_path):
    result = invoke("search", TINY, "--out", tmp_path, "--set", "fitness.lr_schedule=linear")
    _one_line_error(result, "fitness.lr_schedule", "linear")
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("args, words", [
    (["search", "--bogus"], ["discover search", "--bogus"]),
    (["bogus"], ["bogus"]),
    (["resume"], ["discover resume", "run_dir"]),
])
def test_usage_errors_are_one_short_line(args, words):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "discover.cli", *args], capture_output=True, text=True, env=env, check=False,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert all(w in lines[0] for w in words) and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_rl_result_block_shows_learned_ppo_and_dpo_with_errors(tmp_path):
    result = invoke("search", TALPO_TINY, "--out", tmp_path, "--set", "es.generations=1",
                    "--set", f"fitness.cache_dir={tmp_path / 'cache'}")
    assert result.exit_code == 0, result.output
    out = result.stdout
    number = r"-?\d+\.\d{3}"
    learned = re.search(rf"learned drift \(.*\): ({number}) ± ({number}|nan)", out)
    ppo = re.search(rf"PPO: ({number}) ± ({number}|nan)", out)
    dpo = re.search(rf"DPO: ({number}) ± ({number}|nan)", out)
    assert learned and ppo and dpo, out
    run = _run_dir_of(out)
    results = json.loads((run / "results.json").read_text())
    assert float(learned.group(1)) == pytest.approx(results["best_drift_normalized_return"], abs=5e-4)
    assert float(dpo.group(1)) == pytest.approx(results["dpo_normalized_return"], abs=5e-4)
    assert float(ppo.group(1)) == pytest.approx(1.0, abs=5e-4)  # PPO normalized by its own mean
    listed = re.search(r"run directory: \S+  \((.*)\)", out).group(1).split(", ")
    assert "best.py" not in listed and "hall_of_fame.json" not in listed
    assert all((run / name).is_file() for name in listed) and "best_drift.npz" in listed


@pytest.mark.slow
def test_an_extra_env_where_ppo_learns_nothing_is_one_line(tmp_path):
    """Catch in 512 steps: PPO is not above a random policy there, so no score is defined on that env."""
    line = _one_line_error(invoke("search", TALPO_TINY, "--out", tmp_path, "--set", "env.extra=[Catch-bsuite]",
                                  "--set", f"fitness.cache_dir={tmp_path / 'cache'}"),
                           "horizon.multiples", "on Catch-bsuite at 1x", "not above a random policy")
    assert "CartPole" not in line
    # The normalizers computed before the refusal (CartPole and Catch) stay in the shared cache for the next run.
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_profile_splits_the_wall_time_only_when_asked(tiny_update_rule_run, tmp_path):
    _, plain = tiny_update_rule_run
    assert not (plain / "profile.json").exists()
    result = invoke("search", TINY, "--out", tmp_path, "--profile", "--set", "evolution.generations=2",
                    "--set", "refine.top_k=0", "--set", f"fitness.reference_cache={plain.parent / 'refs.json'}")
    assert result.exit_code == 0, result.output
    run = _run_dir_of(result.stdout)
    report = json.loads((run / "profile.json").read_text())
    for view in ("run", "steps"):
        sections = report[view]["sections"]
        assert sum(s["share"] for s in sections.values()) == pytest.approx(1.0, abs=1e-3)
        assert sum(s["seconds"] for s in sections.values()) == pytest.approx(report[view]["wall_s"], rel=1e-3)
    steps = report["steps"]["sections"]
    assert {"training", "mutation", "fingerprint", "cache", "funnel", "checkpoint", "other"} <= set(steps)
    assert {"tensorboard", "checkpoint"} <= set(report["off_thread_s"])  # written while the next step computed
    assert report["steps"]["count"] == 2 and [s["step"] for s in report["per_step"]] == [1, 2]
    assert "where the wall time went" in result.stdout and "trainer:" in result.stdout
    assert "profile.json" in re.search(r"run directory: \S+  \((.*)\)", result.stdout).group(1).split(", ")
    assert "profile" not in json.loads((run / "results.json").read_text())
    # Timing the search does not change it.
    assert (run / "hall_of_fame.json").read_text() == (plain / "hall_of_fame.json").read_text()


def test_profile_of_another_kind_of_search_is_one_line(tmp_path):
    _one_line_error(invoke("search", TALPO_TINY, "--out", tmp_path, "--profile"), "--profile", "rl_objective")
    assert not any(tmp_path.iterdir())


def test_resume_profiles_the_steps_it_runs(tiny_update_rule_run, tmp_path):
    _, run = tiny_update_rule_run
    copy, steps = _died_before_its_last_checkpoint(run, tmp_path)
    result = invoke("resume", copy, "--profile")
    assert result.exit_code == 0, result.output
    report = json.loads((copy / "profile.json").read_text())
    assert [s["step"] for s in report["per_step"]] == list(range(steps[-2] + 1, steps[-1] + 1))
    assert "checkpoint" in report["run"]["sections"]  # the restore
    assert (copy / "hall_of_fame.json").read_text() == (run / "hall_of_fame.json").read_text()
