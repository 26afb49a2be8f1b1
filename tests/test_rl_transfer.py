"""RL transfer: the normalization (PPO = 1, a random policy = 0) is defined only where PPO is above random and
flagged elsewhere; per-cell IQM with bootstrap intervals; transfer.json matches the table; a distilled drift
enters through its hook; --time-frozen pairs the learned drift with itself blind to time; bad arguments are one line with exit 2."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from discover.cli import app
from discover.infra.errors import InputError
from discover.shared import rl_transfer, rl_transfer_report, stats
from discover.shared.drift_io import save_drift
from envs import rl_envs
from envs.ppo import PPOConfig
from search_spaces.drift import DriftConfig, make_drift
from tests.benchmark_scripts import load_benchmark

runner = CliRunner()
# A tiny CartPole trainer (16 updates at 1x) on which PPO is above a random policy beyond noise at 2x.
TINY_PPO = PPOConfig(num_envs=2, num_steps=16, total_timesteps=512, update_epochs=1, num_minibatches=2,
                     hidden_size=8, lr=0.01, final_window=0.25)


@pytest.fixture(scope="module")
def tiny_drift(tmp_path_factory) -> pathlib.Path:
    config = DriftConfig(family="talpo", hidden_size=8, log_horizon_input=True, init_scale=0.1)
    params = make_drift(config).init(jax.random.PRNGKey(0))
    meta = {"drift": dataclasses.asdict(config), "env": "CartPole-v1", "ppo": dataclasses.asdict(TINY_PPO),
            "horizons": [1.0, 2.0]}
    return save_drift(tmp_path_factory.mktemp("drift") / "tiny_drift.npz", params, meta)


# ----------------------------------------------------------------------------------------------------------
# Normalization


def test_normalization_maps_random_to_0_and_ppo_to_1():
    assert rl_envs.normalize_return(-100.0, -100.0, -500.0) == pytest.approx(1.0)
    assert rl_envs.normalize_return(-500.0, -100.0, -500.0) == pytest.approx(0.0)
    assert rl_envs.normalize_return(np.array([22.0, 122.0]), 222.0, 22.0) == pytest.approx([0.0, 0.5])


def test_normalizer_flags_ppo_at_the_floor():
    """Acrobot at 0.25x: PPO at -493.8, the random policy at about -495 with similar spread: no score."""
    rng = np.random.default_rng(0)
    random = -495.0 + rng.normal(0, 5.0, 16)
    near_floor = -493.8 + rng.normal(0, 8.0, 16)
    assert not rl_envs.normalizer_defined(near_floor, random)
    assert not rl_envs.normalizer_defined(random - 50.0, random)  # below random
    assert not rl_envs.normalizer_defined([-400.0], random)  # one run: no spread to judge by
    assert rl_envs.normalizer_defined(-150.0 + rng.normal(0, 20.0, 16), random)

    finals = {"PPO": near_floor, "DPO": near_floor + 1.0, "learned": near_floor - 1.0}
    defined, scores = rl_transfer.normalized_scores(finals, random)
    assert not defined and scores == {}
    clear = {"PPO": -150.0 + rng.normal(0, 20.0, 16), "learned": np.full(16, np.nan)}
    defined, scores = rl_transfer.normalized_scores(clear, random)
    assert defined and np.mean(scores["PPO"]) == pytest.approx(1.0)
    assert (scores["learned"] == 0.0).all()  # failed runs score the random policy's level


def test_cell_statistics_iqm_interval_and_probability_of_improvement():
    rng = np.random.default_rng(1)
    ppo = 1.0 + rng.normal(0, 0.1, 16)
    better = ppo + 0.5
    cell = rl_transfer.cell_statistics(better, ppo, seed=3)
    assert cell["ci"][0] <= cell["iqm"] <= cell["ci"][1]
    assert cell["ci"][0] > np.max(ppo) - 0.3
    assert cell["poi"] > 0.9 and cell["poi_ci"][0] > 0.5
    same = rl_transfer.cell_statistics(ppo, ppo, seed=3)
    assert same["poi"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------------------
# End to end: transfer.json matches the table


def _table_rows(markdown: str) -> list[list[str]]:
    rows = []
    for line in markdown.splitlines():
        if line.startswith(("| CartPole-v1 |", "| Acrobot-v1 |")):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _distilled(ratio, advantage, progress, log_horizon):
    """A closed-form drift of the signature the distill search writes (PPO-like, tightening with progress)."""
    eps = 0.2 * (1.0 - 0.5 * progress)
    return jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - eps, 1.0 + eps)) * advantage)


def test_the_interval_with_the_normalizer_scores_runs_as_the_table_does():
    # A failed run scores 0 (rl_envs.normalized_runs); PPO's failed runs leave its mean; the point is the cell's IQM.
    returns, ppo = [np.nan, 100.0, 100.0, 100.0, 60.0], [np.nan, 60.0, 60.0, 60.0, 60.0]
    point, (lo, hi) = rl_transfer.iqm_with_normalizer(returns, ppo, 20.0, n_resamples=200)
    assert point == pytest.approx(stats.iqm([0.0, 2.0, 2.0, 2.0, 1.0]))
    assert lo <= point <= hi and lo >= 0.0


@pytest.mark.slow
def test_transfer_json_matches_table(tiny_drift, tmp_path):
    out = tmp_path / "out"
    markdown = rl_transfer.run_rl_transfer(tiny_drift, envs=["CartPole-v1"], horizons=[1.0, 2.0], seeds=16,
                                           out_dir=out, distilled=_distilled, cache_dir=tmp_path / "cache")
    report = json.loads((out / "transfer.json").read_text())
    assert (out / "transfer.md").read_text() == markdown and (out / "transfer.png").stat().st_size > 0
    methods = ["PPO", "DPO", "learned", "distilled"]
    assert report["methods"] == methods and report["seeds"] == 16
    cells = {(c["env"], c["horizon"], c["method"]): c for c in report["cells"]}
    assert len(cells) == 2 * 4
    for cell in report["cells"]:
        assert set(cell) >= {"env", "horizon", "method", "iqm", "ci", "mean", "seeds"}
        assert cell["seeds"] == 16 and len(cell["returns"]) == 16
    main_table, normalizer_part = markdown.split("The same IQMs with intervals that also redraw PPO's runs")
    rows = _table_rows(main_table)
    assert [r[1] for r in rows] == ["1x", "2x"]
    normalizer_rows = _table_rows(normalizer_part.split("Aggregate IQM")[0])
    assert [r[1] for r in normalizer_rows] == ["1x", "2x"]
    for row in normalizer_rows:  # the same IQMs, intervals with the normalizer redrawn
        horizon = float(row[1].rstrip("x"))
        for i, method in enumerate(methods):
            cell = cells[("CartPole-v1", horizon, method)]
            if cell["defined"]:
                point, lo, hi = (float(x) for x in re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", row[2 + i]).groups())
                assert (point, lo, hi) == pytest.approx((cell["iqm"], *cell["ci_with_normalizer"]), abs=5e-4)
                assert lo <= point <= hi
    defined = 0
    for row in rows:
        horizon = float(row[1].rstrip("x"))
        assert row[2] == f"{cells[('CartPole-v1', horizon, 'PPO')]['total_timesteps']:,}"
        for i, method in enumerate(methods):
            cell = cells[("CartPole-v1", horizon, method)]
            text = row[5 + i]
            if not cell["defined"]:
                assert text == rl_transfer_report.UNDEFINED and cell["iqm"] is None and cell["ci"] is None
                continue
            point, lo, hi = (float(x) for x in re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", text).groups())
            assert (point, lo, hi) == pytest.approx((cell["iqm"], *cell["ci"]), abs=5e-4)
            assert lo <= point <= hi
            if method != "PPO":
                p = float(row[9 + i - 1].split(" ")[0])
                assert p == pytest.approx(cell["poi"], abs=5e-4)
        defined += cells[("CartPole-v1", horizon, "PPO")]["defined"]
    assert defined >= 1  # at 2x PPO is above random here: numbers were compared, not only flags
    assert cells[("CartPole-v1", 2.0, "PPO")]["mean"] == pytest.approx(1.0)
    # The random policy's returns were cached for the next transfer.
    assert len(list((tmp_path / "cache").glob("random-*.json"))) == 2
    agg = {a["cells"]: a for a in report["aggregates"]}
    assert "held-out envs" not in agg and agg["all cells"]["count"] == defined
    assert "Aggregate IQM" in markdown


# ----------------------------------------------------------------------------------------------------------
# The distilled hook and bad input at the CLI


def one_line_error(result, *words) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_distilled_loader_slot(monkeypatch, tmp_path):
    drift_file = tmp_path / "distilled.py"
    drift_file.write_text("def drift(ratio, advantage, progress, log_horizon): ...\n")
    assert rl_transfer.DISTILLED_LOADER is not None  # distill's safe loader (it never executes the file)
    with pytest.raises(InputError):  # a .py alone, without its JSON program, is not loaded
        rl_transfer.load_distilled(drift_file)
    monkeypatch.setattr(rl_transfer, "DISTILLED_LOADER", None)
    with pytest.raises(InputError, match="no loader for distilled drift files"):
        rl_transfer.load_distilled(drift_file)
    seen = []
    monkeypatch.setattr(rl_transfer, "DISTILLED_LOADER", lambda path: seen.append(path) or _distilled)
    assert rl_transfer.load_distilled(drift_file) is _distilled and seen == [drift_file]
    with pytest.raises(InputError, match="no such distilled drift file or run directory"):
        rl_transfer.load_distilled(tmp_path / "missing.py")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--envs", "Pong-v0"], ["unknown environment 'Pong-v0'"]),
        (["--envs", ","], ["--envs names no environment"]),
        (["--horizons", "0"], ["--horizons must be positive", "got 0"]),
        (["--horizons", "1,-2"], ["--horizons must be positive", "got -2"]),
        (["--horizons", "nan"], ["--horizons must be positive"]),
        (["--horizons", "a,b"], ["--horizons: expected comma-separated numbers"]),
        (["--seeds", "0"], ["--seeds must be a whole number >= 1, got 0"]),
        (["--distilled", "nope.py"], ["nope.py"]),
        (["--fresh-seed-offset", "-1"], ["--fresh-seed-offset must be a whole number >= 0, got -1"]),
    ],
    ids=["unknown-env", "no-env", "zero-horizon", "negative-horizon", "nan-horizon", "not-numbers", "no-seeds",
         "distilled-missing", "negative-seed-offset"],
)
def test_transfer_bad_arguments_are_one_line(tiny_drift, tmp_path, args, words):
    out = tmp_path / "out"
    result = runner.invoke(app, ["transfer", str(tiny_drift), "--out", str(out), *args])
    one_line_error(result, *words)
    assert not out.exists()  # refused before any training or output


def test_transfer_refuses_a_file_that_is_not_a_drift(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    result = runner.invoke(app, ["transfer", str(junk), "--envs", "CartPole-v1", "--out", str(tmp_path / "o")])
    one_line_error(result, str(junk), "not a saved drift")


def test_a_seed_offset_replicates_the_table_on_other_seeds(tiny_drift, tmp_path):
    """--fresh-seed-offset K > 0 trains every method on other seeds; 0 (the default) keeps the earlier seeds."""
    def transfer(out, *extra):
        result = runner.invoke(app, ["transfer", str(tiny_drift), "--envs", "CartPole-v1", "--horizons", "2",
                                     "--seeds", "16", "--out", str(tmp_path / out), *extra])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / out / "transfer.json").read_text())
        return report, {c["method"]: c["returns"] for c in report["cells"]}

    default, returns = transfer("default")
    zero, returns_zero = transfer("zero", "--fresh-seed-offset", "0")
    other, returns_other = transfer("other", "--fresh-seed-offset", "1")
    assert returns_zero == returns and default["seed_offset"] == zero["seed_offset"] == 0
    assert other["seed_offset"] == 1 and all(returns_other[m] != returns[m] for m in returns)
    assert "(seed offset 1)" in (tmp_path / "other" / "transfer.md").read_text()
    # benchmarks/rl_placebo.py: PPO's runs of one table normalized by another's PPO. On the same seeds the placebo
    # is PPO's own cell; on other seeds it moves.
    rl_placebo = load_benchmark("rl_placebo")
    same = rl_placebo.placebo(default, zero)
    ppo = next(c for c in default["cells"] if c["method"] == "PPO")
    assert ppo["defined"]  # 16 seeds at 2x: PPO is above random here (the tiny trainer's comment)
    assert same["rows"][0]["placebo_iqm"] == pytest.approx(ppo["iqm"], rel=1e-9)
    moved = rl_placebo.placebo(default, other)["rows"][0]
    assert moved["placebo_iqm"] != pytest.approx(ppo["iqm"], rel=1e-9)
    assert moved["ppo_return_b"] == pytest.approx(np.mean(returns_other["PPO"]))


# ----------------------------------------------------------------------------------------------------------
# --time-frozen: the learned drift against itself blind to time


def test_a_frozen_drift_ignores_the_runs_time():
    config = DriftConfig(family="ppo_schedule", hidden_size=4, log_horizon_input=True, init_scale=1.0)
    family = make_drift(config)
    params = family.init(jax.random.PRNGKey(3))
    frozen = rl_transfer.frozen_in_time(family.apply, 0.5, 1.5)
    r, a = jnp.linspace(0.5, 1.5, 11), jnp.linspace(-2.0, 2.0, 11)
    at_fixed = family.apply(params, r, a, jnp.float32(0.5), jnp.float32(1.5))
    for progress, log_n in ((0.0, 0.5), (1.0, 3.0), (0.5, 1.5)):
        assert jnp.array_equal(frozen(params, r, a, jnp.float32(progress), jnp.float32(log_n)), at_fixed)
    assert not jnp.array_equal(family.apply(params, r, a, jnp.float32(0.0), jnp.float32(0.5)), at_fixed)


def _schedule_drift(path: pathlib.Path, time_weight: float) -> pathlib.Path:
    """A ppo_schedule drift whose clip range, 0.2 exp(-4 + sum tanh(time_weight n/N)), depends on n/N through
    ``time_weight`` only (0: constant in time)."""
    config = DriftConfig(family="ppo_schedule", hidden_size=4, log_horizon_input=True, init_scale=1.0)
    params = jax.tree.map(np.asarray, make_drift(config).init(jax.random.PRNGKey(0)))
    hidden = np.zeros_like(params["params"]["Dense_0"]["kernel"])
    hidden[0, :] = time_weight  # the n/N input
    params["params"]["Dense_0"]["kernel"] = hidden
    params["params"]["Dense_0"]["bias"] = np.zeros_like(params["params"]["Dense_0"]["bias"])
    params["params"]["out"]["kernel"] = np.tile(np.array([[0.0, 1.0]], np.float32), (4, 1))  # log clip scale
    params["params"]["out"]["bias"] = np.array([0.0, -4.0], np.float32)  # clip 0.2 e^-4 at n/N = 0: it binds
    meta = {"drift": dataclasses.asdict(config), "env": "CartPole-v1", "ppo": dataclasses.asdict(TINY_PPO)}
    return save_drift(path, params, meta)


def test_time_frozen_transfer_pairs_the_drift_with_its_time_blind_twin(tmp_path):
    constant = _schedule_drift(tmp_path / "constant_drift.npz", 0.0)
    timed = _schedule_drift(tmp_path / "timed_drift.npz", 3.0)
    args = ["--envs", "CartPole-v1", "--horizons", "2", "--seeds", "16", "--time-frozen"]
    result = runner.invoke(app, ["transfer", str(constant), "--out", str(tmp_path / "c"), *args])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "c" / "transfer.json").read_text())
    assert report["methods"] == ["PPO", "DPO", "learned", "frozen"]
    assert report["frozen_time"] == {"progress": 0.5, "log_horizon": pytest.approx(np.log10(16))}
    cells = {c["method"]: c for c in report["cells"]}
    assert cells["frozen"]["returns"] == cells["learned"]["returns"]  # no time use: the same training, run for run
    assert cells["learned"]["vs_frozen"]["difference"] == 0.0 and cells["learned"]["vs_frozen"]["verdict"] == "tie"
    markdown = (tmp_path / "c" / "transfer.md").read_text()
    assert "frozen: the learned drift blind to time" in markdown
    frozen_rows = _table_rows(markdown.split("Does the learned drift use time?")[1].split("Aggregate IQM")[0])
    assert frozen_rows == [["CartPole-v1", "2x", "+0.000 [+0.000, +0.000]", "tie"]]

    # A drift whose clip moves with n/N trains differently from its frozen twin, on the very same seeds.
    rl_transfer.run_rl_transfer(timed, envs=["CartPole-v1"], horizons=[2.0], seeds=16, out_dir=tmp_path / "t",
                                cache_dir=tmp_path / ".rl_baselines", time_frozen=True)
    timed_cells = {c["method"]: c for c in json.loads((tmp_path / "t" / "transfer.json").read_text())["cells"]}
    assert timed_cells["PPO"]["returns"] == cells["PPO"]["returns"]
    assert timed_cells["frozen"]["returns"] != timed_cells["learned"]["returns"]
    d = timed_cells["learned"]["vs_frozen"]
    assert d["ci"][0] <= d["difference"] <= d["ci"][1]
    assert d["difference"] == pytest.approx(timed_cells["learned"]["mean"] - timed_cells["frozen"]["mean"])


def test_time_frozen_is_refused_where_there_is_no_time_input(tmp_path):
    config = DriftConfig(family="lpo", hidden_size=4)
    meta = {"drift": dataclasses.asdict(config), "env": "CartPole-v1", "ppo": dataclasses.asdict(TINY_PPO)}
    lpo = save_drift(tmp_path / "lpo_drift.npz", make_drift(config).init(jax.random.PRNGKey(0)), meta)
    out = tmp_path / "out"
    result = runner.invoke(app, ["transfer", str(lpo), "--envs", "CartPole-v1", "--time-frozen", "--out", str(out)])
    one_line_error(result, "lpo_drift.npz", "--time-frozen needs a drift with time inputs", "'lpo'")
    assert not out.exists()
    result = runner.invoke(app, ["transfer", "adam", "--time-frozen", "--out", str(out)])
    one_line_error(result, "--time-frozen", "ONE RL run directory or drift file")
    assert not out.exists()
