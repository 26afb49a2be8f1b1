"""Configs at the command line: `discover config KIND`, and bad config files are one line with exit code 2."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from discover.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *words) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0]
    return lines[0]


def rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}


def test_config_update_rule_lists_every_key_with_its_default():
    result = invoke("config", "update_rule")
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    assert table["KEY"] == ["KEY", "TYPE", "DEFAULT", "HELP"]
    assert table["evolution.population"][:5] == ["evolution.population", "int,", ">=", "2", "64"]
    assert "programs alive at once" in " ".join(table["evolution.population"])
    assert table["checkpoint.every"][4] == "10"
    assert "(formerly 'seeds')" in " ".join(table["fitness.train_seeds"])
    assert {"start_from", "distributed.num_processes", "refine.strategy", "funnel.train_seeds"} <= set(table)


def test_config_rl_objective_has_its_own_defaults():
    result = invoke("config", "rl_objective")
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    assert table["checkpoint.every"][4] == "5"
    assert table["name"][2] == "talpo"
    assert "(formerly 'seeds_per_member')" in " ".join(table["es.train_seeds"])


def test_config_of_an_unknown_kind_is_one_line():
    line = one_line_error(invoke("config", "rl_objectiv"), "unknown kind 'rl_objectiv'")
    assert "did you mean 'rl_objective'?" in line


def _write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


ALIAS_BOMB = "\n".join(
    ['kind: update_rule', 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
) + "\n"


@pytest.mark.parametrize("text, line, words", [
    ("kind: update_rule\nbase: &b {population: 4}\nevolution: *b\n", 2, "YAML anchors/aliases are not supported"),
    (ALIAS_BOMB, 2, "YAML anchors/aliases are not supported"),
    ("kind: update_rule\nfitness:\n  lr_multipliers: " + "[" * 5000 + "]" * 5000 + "\n", 3,
     "YAML nested deeper than 32 levels"),
], ids=["alias", "billion-laughs", "deep"])
def test_search_refuses_aliases_and_deep_nesting_fast(tmp_path, text, line, words):
    path = _write(tmp_path, text)
    start = time.perf_counter()
    result = invoke("search", path, "--out", tmp_path / "runs")
    assert one_line_error(result) == f"error: {path}:{line}: {words}"
    assert time.perf_counter() - start < 5 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override, words", [
    ("evolution.population=&p 8", "--set evolution.population: YAML anchors/aliases are not supported"),
    ("fitness.lr_multipliers=" + "[" * 100 + "]" * 100, "--set fitness.lr_multipliers: YAML nested deeper"),
])
def test_search_refuses_aliases_and_deep_nesting_in_overrides(tmp_path, override, words):
    path = _write(tmp_path, "kind: update_rule\n")
    one_line_error(invoke("search", path, "--set", override, "--out", tmp_path / "runs"), words)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, expected", [
    ("kind: update_rule\nevolution:\n  populaton: 8\n", "3: evolution.populaton: unknown key; did you mean 'population'?"),
    ("kind: update_rule\nrefine:\n  strategy: CMAES\n", "3: refine.strategy: must be one of "),
    ("kind: rl_objective\nenv:\n  name: Cartpole-v1\n", "3: env.name: must be one of "),
    ("kind: rl_objective\nes:\n  popsize: many\n", "3: es.popsize: expected int, got 'many'"),
])
def test_search_with_a_bad_value_is_one_line_naming_file_line_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    line = one_line_error(invoke("search", path, "--out", tmp_path / "runs"), f"{path}:{expected}")
    if "must be one of" in expected:
        assert "(did you mean 'CMA_ES'?)" in line or "(did you mean 'CartPole-v1'?)" in line
    assert not (tmp_path / "runs").exists()


def test_search_with_old_keys_warns_in_one_line_each_then_checks_the_rest(tmp_path):
    path = _write(tmp_path, "kind: update_rule\nseeds: [adamw]\nfitness:\n  seeds: 2\nevolution:\n  batch: 0\n")
    result = invoke("search", path, "--set", "funnel.seeds=2", "--out", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"warning: {path}:2: 'seeds' is renamed 'start_from'",
        f"warning: {path}:4: 'fitness.seeds' is renamed 'fitness.train_seeds'",
        "warning: --set: 'funnel.seeds' is renamed 'funnel.train_seeds'",
        f"error: {path}:6: evolution.batch: must be >= 1, got 0",
    ]
