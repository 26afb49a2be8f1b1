"""What search_spaces/discovered ships: update rules usable as seeds, and the learned drift's distilled form."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
from typer.testing import CliRunner

from discover.cli import app
from discover.shared.drift_io import load_distilled, load_drift
from search_spaces.update_rules import (
    DISCOVERED_NAMES,
    SEED_NAMES,
    UpdateRuleSpace,
    discovered,
    seed,
    seed_text,
)

FOLDER = importlib.resources.files("search_spaces").joinpath("discovered")


def test_shipped_rules_are_listed_and_parse_into_the_default_space():
    names = sorted(f.name[:-3] for f in FOLDER.iterdir() if f.name.endswith(".py") and "drift" not in f.name)
    assert names and list(DISCOVERED_NAMES) == names
    assert not set(DISCOVERED_NAMES) & set(SEED_NAMES)
    space = UpdateRuleSpace()
    for name, program in discovered().items():
        assert program is seed(name)  # usable wherever a seed is (start_from, show, export, transfer)
        assert space.problems(program) == []
        header = seed_text(name).split("def ")[0]
        for word in ("Config:", "Command:", "Date:", "tuned AdamW"):  # how it was found, and what it earned
            assert word in header, (name, word)


def test_discover_seeds_lists_the_shipped_rules_and_show_reads_one():
    runner = CliRunner()
    listed = runner.invoke(app, ["seeds"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    for name in DISCOVERED_NAMES:
        assert name in listed.output
    shown = runner.invoke(app, ["show", DISCOVERED_NAMES[0]], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "fingerprint" in shown.output


def test_a_shipped_rule_starts_a_search_config():
    from discover.infra.experiments import resolve_config
    from discover.searches.update_rules.config import load_search_config

    config = load_search_config(resolve_config("search_tiny"), [f"start_from=[{DISCOVERED_NAMES[0]}]"])
    assert config.start_from == [DISCOVERED_NAMES[0]]


@pytest.mark.parametrize("name", ["talpo_cartpole_distilled_drift.py", "talpo_schedule_cartpole_distilled_drift.py"])
def test_the_shipped_distilled_drifts_obey_the_drift_constraints(name):
    drift = load_distilled(FOLDER.joinpath(name))
    r = np.linspace(0.5, 1.5, 101, dtype=np.float32)[:, None, None]
    A = np.linspace(-3.0, 3.0, 13, dtype=np.float32)[None, :, None]
    progress = np.linspace(0.0, 1.0, 5, dtype=np.float32)[None, None, :]
    r, A, progress = np.broadcast_arrays(r, A, progress)
    values = np.asarray(drift(r, A, progress, np.full_like(r, 2.29)))
    assert np.all(np.isfinite(values)) and np.all(values >= 0.0)
    at_one = np.asarray(drift(np.ones(5, np.float32), np.linspace(-3, 3, 5, dtype=np.float32),
                              np.full(5, 0.5, np.float32), np.full(5, 2.29, np.float32)))
    np.testing.assert_array_equal(at_one, 0.0)
    eps = np.float32(1e-3)  # zero slope at r = 1: the drift is O((r - 1)^2) there
    near = np.asarray(drift(np.full(5, 1 + eps, np.float32), np.linspace(-3, 3, 5, dtype=np.float32),
                            np.full(5, 0.5, np.float32), np.full(5, 2.29, np.float32)))
    assert np.all(near <= 1e4 * eps**2 * 1.01)


@pytest.mark.parametrize("name", [f"talpo{family}_cartpole_{what}" for family in ("", "_schedule")
                                  for what in ("drift.npz", "distilled_drift.json", "transfer.json", "transfer.md")])
def test_rl_discoveries_are_shipped(name):
    assert FOLDER.joinpath(name).is_file()


def test_the_shipped_schedule_drift_is_a_ppo_schedule():
    """PPO's drift with a learned penalty weight and clip range: 0 on a band around r = 1, not PPO's outside."""
    from search_spaces.drift import ppo_drift

    family, params, meta = load_drift(FOLDER.joinpath("talpo_schedule_cartpole_drift.npz"))
    assert family.config.family == "ppo_schedule" and meta["env"] == "CartPole-v1"
    r = np.linspace(0.5, 1.5, 201, dtype=np.float32)
    for a in (-2.0, 1.0):
        A = np.full_like(r, a)
        for progress in (0.0, 1.0):
            values = np.asarray(family.apply(params, r, A, np.float32(progress), np.float32(2.29)))
            assert np.all(values >= 0.0)
            assert np.all(values[np.abs(r - 1.0) < 0.05] == 0.0)
            assert not np.allclose(values, np.asarray(ppo_drift(r, A)), atol=1e-3)  # a schedule, not PPO
