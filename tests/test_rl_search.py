"""RL-objective search: config validation, a tiny end-to-end search over two lifetimes, one compile for every
horizon, TensorBoard, exact resume after SIGKILL, saved drifts and transfer."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from discover.infra.config import ConfigError, dump_config, load_config
from discover.infra.rundir import RunDir
from discover.searches.rl.config import RLSearchConfig
from discover.searches.rl.search import RLObjectiveSearch, run_rl_search
from discover.shared.drift_io import DriftFileError, load_drift, save_drift
from discover.shared.rl_transfer import default_envs, meta_training_envs, reference_ppo_config
from discover.shared.runner import CompileCounter, NullProgress, search_result
from envs import rl_envs
from search_spaces.drift import DriftConfig, make_drift

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "talpo_tiny.yaml"


def _tiny_config(root: pathlib.Path) -> RLSearchConfig:
    # A shared baseline cache: the killed child process reuses the parent's PPO/DPO normalizer.
    return load_config(RLSearchConfig, TINY, [f"fitness.cache_dir={root / 'baseline-cache'}"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl-search")
    config = _tiny_config(root)
    run = RunDir.create(root, "full", dump_config(config))
    summary = run_rl_search(config, run)
    return root, config, run, summary


# ----------------------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize(
    "name", ["talpo_tiny.yaml", "talpo_cartpole.yaml", "talpo_cpu_hour.yaml", "talpo_cpu_hour_catch.yaml",
             "talpo_minatar.yaml", "talpo_schedule_cartpole.yaml", "talpo_schedule_bound.yaml",
             "talpo_schedule_minatar_cpu.yaml"]
)
def test_shipped_configs_load(name):
    config = load_config(RLSearchConfig, REPO / "experiments" / name)
    assert config.kind == "rl_objective"
    assert config.drift.family == ("ppo_schedule" if "schedule" in name else "talpo")
    assert config.ppo_config.total_timesteps > 0
    # The YAML the run directory stores reads back to the same config.
    assert load_config(RLSearchConfig, text=dump_config(config)) == config


def test_minatar_config_uses_purejaxrl_minatar_settings():
    config = load_config(RLSearchConfig, REPO / "experiments" / "talpo_minatar.yaml")
    assert config.env.name == "SpaceInvaders-MinAtar"
    assert (config.ppo_config.num_envs, config.ppo_config.num_steps, config.ppo_config.lr) == (64, 128, 5e-3)
    assert config.es.popsize == 64


@pytest.mark.parametrize(
    "override, expected",
    [
        ("es.popsize=5", "es: popsize must be even"),
        ("drift.family=ppo", "drift.family must be a learned family"),
        ("drift={family: ppo_schedule, ppo_init: true}", "ppo_schedule starts at PPO's drift already"),
        ("ppo.num_minibatches=3", "must be divisible by num_minibatches"),
        ("env.name=Cartpole-v1", "did you mean 'CartPole-v1'"),
        ("es.strategy=OpenES", "did you mean 'Open_ES'"),
        ("es.sigmaa=0.1", "unknown key"),
        ("horizon.multiples=[]", "at least one horizon"),
        ("es.strategy=PersistentES", "truncated lifetimes"),
        ("horizon.multiples=[1,1]", "distinct"),
        ("horizon.multiples=[0]", "horizon.multiples"),
        ("env.extra=[CartPole-v1]", "extra must name envs other than name"),
        ("env.extra=[Catch]", "env.extra[0]: must be one of"),
        ("horizon.per_env={Acrobot-v1: [1]}", "horizon.per_env: 'Acrobot-v1' is not a meta-training env"),
        ("horizon.per_env={CartPole-v1: []}", "per_env.CartPole-v1 must name at least one horizon"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(RLSearchConfig, TINY, [override])
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_transfer_reference_horizons():
    cartpole = rl_envs.ppo_config("CartPole-v1", total_timesteps=100_000)
    # Same fraction (1/5) of each env's standard budget on a held-out env; its own PPO settings.
    acrobot = reference_ppo_config("Acrobot-v1", "CartPole-v1", cartpole)
    assert acrobot.total_timesteps == 100_000
    space = rl_envs.ppo_config("SpaceInvaders-MinAtar")
    assert (
        reference_ppo_config("Breakout-MinAtar", "SpaceInvaders-MinAtar", space).total_timesteps == 10_000_000
    )
    assert reference_ppo_config("CartPole-v1", "CartPole-v1", cartpole) == cartpole
    assert acrobot == rl_envs.ppo_config("Acrobot-v1", total_timesteps=100_000)


def test_transfer_carries_changed_ppo_settings_to_held_out_envs():
    # A drift meta-trained at a larger lr (where PPO's clip binds) is compared with PPO at that lr everywhere;
    # settings the config left at its env's defaults stay the held-out env's own.
    bold = rl_envs.ppo_config("CartPole-v1", total_timesteps=100_000, lr=2.5e-3, update_epochs=8)
    acrobot = reference_ppo_config("Acrobot-v1", "CartPole-v1", bold)
    assert (acrobot.lr, acrobot.update_epochs, acrobot.total_timesteps) == (2.5e-3, 8, 100_000)
    space = rl_envs.ppo_config("SpaceInvaders-MinAtar", lr=1e-3)
    breakout = reference_ppo_config("Breakout-MinAtar", "SpaceInvaders-MinAtar", space)
    assert breakout == rl_envs.ppo_config("Breakout-MinAtar", lr=1e-3)


@pytest.mark.parametrize("family_name", ["talpo", "ppo_schedule"])
def test_saved_drift_round_trip(tmp_path, family_name):
    config = DriftConfig(family=family_name, hidden_size=8, log_horizon_input=True)
    family = make_drift(config)
    params = family.init(jax.random.PRNGKey(0))
    path = save_drift(tmp_path / "d.npz", params, {"drift": config.__dict__, "env": "CartPole-v1"})
    loaded_family, loaded, meta = load_drift(path)
    assert loaded_family.config == config and meta["env"] == "CartPole-v1"
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DriftFileError, match="not a saved drift"):
        load_drift(tmp_path / "junk.npz")
    base = {"drift": config.__dict__, "env": "CartPole-v1"}
    for env_ppo, message in (({"Pong": {}}, "env_ppo: unknown environment 'Pong'"),
                             ({"Catch-bsuite": {"lr": "fast"}}, "env_ppo.Catch-bsuite.lr"),
                             ([], "env_ppo: expected a JSON object")):
        bad = save_drift(tmp_path / "bad.npz", params, {**base, "env_ppo": env_ppo})
        with pytest.raises(DriftFileError, match=re.escape(message)) as info:
            load_drift(bad)
        assert "\n" not in str(info.value) and "bad.npz" in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# A tiny end-to-end search


def test_tiny_search_over_the_ppo_schedule_family(tiny_run, tmp_path):
    """The PPO-schedule family searches end to end: its ES moves the schedule, the chosen drift reloads as it."""
    root = tiny_run[0]  # its PPO / DPO / random normalizer is cached there and does not depend on the family
    config = load_config(RLSearchConfig, TINY, [f"fitness.cache_dir={root / 'baseline-cache'}",
                                                 "drift.family=ppo_schedule", "es.generations=2", "es.sigma=0.1"])
    run = RunDir.create(tmp_path, "schedule", dump_config(config))
    summary = run_rl_search(config, run)
    assert summary["generations_done"] == 2
    family, params, _ = load_drift(run.file("final_drift.npz"))
    assert family.config == config.drift
    start = family.init(jax.random.PRNGKey(config.seed))
    moved = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(start))]
    assert max(moved) > 1e-3
    assert np.isfinite(run.read_json("results.json")["best_drift_normalized_return"])


def test_tiny_search_writes_results(tiny_run):
    _, config, run, summary = tiny_run
    assert summary["generations_done"] == config.es.generations and not summary["interrupted"]
    results = run.read_json("results.json")
    history = results["history"]["mean_drift"]
    assert len(history) == config.es.generations and all(np.isfinite(history))
    assert np.isfinite(results["best_drift_normalized_return"])
    # The chosen drift won the selection seeds; its reported score comes from other fresh seeds.
    selection = results["selection"]
    winner = "best" if selection["best"] > selection["final"] else "final"
    assert results["best_drift_is"] == ("best-during-search mean" if winner == "best" else "final mean")
    runs = (config.es.popsize + 1) * config.es.train_seeds
    assert np.isfinite(results["best_drift_stderr"]) and results["final_eval_runs"] == runs
    # Scores are normalized per horizon by PPO (1) and the random policy (0); the headline averages horizons.
    baselines = run.read_json("baselines.json")
    assert [h["multiple"] for h in baselines["horizons"]] == config.horizon.multiples
    dpo = [np.mean([(r - h["random"]["mean"]) / (h["ppo"]["mean"] - h["random"]["mean"])
                    for r in h["dpo"]["final_returns"]]) for h in baselines["horizons"]]
    assert results["dpo_normalized_return"] == pytest.approx(np.mean(dpo))
    assert results["ppo_normalized_return"] == pytest.approx(1.0)
    learned = results["per_horizon"]["learned"]
    assert list(learned) == ["1", "2"]
    assert results["best_drift_normalized_return"] == pytest.approx(np.mean([v["mean"] for v in learned.values()]))
    assert sorted(results["files"]) == sorted(["baselines.json", "best_drift.npz", "final_drift.npz", "drift.png",
                                               "results.json"])
    assert all(run.file(name).is_file() for name in results["files"])
    for h in baselines["horizons"]:
        assert len(h["ppo"]["final_returns"]) == len(h["random"]["final_returns"]) == config.fitness.baseline_seeds
        assert h["defined"] and h["ppo"]["mean"] == pytest.approx(results["ppo_returns"][f"{h['multiple']:g}"])
        assert h["num_updates"] == round(16 * h["multiple"])
    assert set(results["history"]["horizon"]) <= set(config.horizon.multiples)
    family, _, meta = load_drift(run.file("best_drift.npz"))
    assert family.config == config.drift and meta["env"] == "CartPole-v1"
    assert meta["horizons"] == config.horizon.multiples and meta["es"]["train_seeds"] == config.es.train_seeds
    assert run.file("drift.png").stat().st_size > 0


def test_tiny_search_tensorboard(tiny_run):
    from tensorboard.backend.event_processing import event_accumulator

    _, config, run, _ = tiny_run
    acc = event_accumulator.EventAccumulator(str(run.tb_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    steps = [e.step for e in acc.Scalars("es/normalized_return_mean_drift")]
    assert steps == list(range(1, config.es.generations + 1))
    assert "es/sigma" in tags["scalars"] and "baseline_curve/ppo_return" in tags["scalars"]
    for image in ("drift/learned_vs_ppo_dpo", "returns/curves", "drift/best", "drift/initial"):
        assert image in tags["images"], image
    assert "es/member_normalized_return" in tags["histograms"]


def test_one_compile_for_every_horizon(tiny_run):
    """Generations at different horizons reuse one compiled trainer: a horizon is data, not a shape."""
    root, config, _, _ = tiny_run
    search = RLObjectiveSearch()
    ctx = search.prepare(config, RunDir.create(root, "compiles", dump_config(config)), NullProgress())
    state = search.init(ctx)
    rows = jax.tree.map(lambda x: np.broadcast_to(x, (ctx.search.rows,) + x.shape),
                        ctx.search.strategy.get_mean(state.es_state))
    keys = jax.random.split(jax.random.PRNGKey(0), ctx.search.rows * 2).reshape(ctx.search.rows, 2, 2)
    longest = max(ctx.search.horizon_updates)
    counts, episodes = [], []
    for n in ctx.search.horizon_updates:
        metrics = ctx.search.train_rows(keys, rows, n)
        counts.append(CompileCounter.count)
        count = np.asarray(metrics["episode_count"])
        assert count.shape == (ctx.search.rows, 2, longest)
        assert (count[..., n:] == 0).all() and count[..., :n].sum() > 0  # trained for n updates, not longer
        episodes.append(count.sum())
    assert counts[-1] == counts[0], "a new horizon recompiled the trainer"
    assert episodes[1] > episodes[0]
    assert ctx.search.trains[0].compiles() == 1


def test_cma_es_starts_at_the_configured_sigma(tiny_run):
    """evosax's CMA-ES reads its initial std from its params (default 1.0), not its constructor: es.sigma must
    reach it, or a drift network starts from noise 30x the configured scale."""
    root, config, _, _ = tiny_run
    config = load_config(RLSearchConfig, TINY, [f"fitness.cache_dir={root / 'baseline-cache'}",
                                                "es.strategy=CMA_ES", "es.sigma=0.02"])
    search = RLObjectiveSearch()
    ctx = search.prepare(config, RunDir.create(root, "cma", dump_config(config)), NullProgress())
    state = search.init(ctx)
    assert float(state.es_state.std) == pytest.approx(0.02)
    population, _ = ctx.search.strategy.ask(jax.random.PRNGKey(1), state.es_state, ctx.search.es_params)
    mean = ctx.search.strategy.get_mean(state.es_state)
    spread = np.std(np.concatenate([np.ravel(p - m) for p, m in zip(jax.tree.leaves(population),
                                                                       jax.tree.leaves(mean))]))
    assert 0.01 < spread < 0.04


class _SigtermAfterFirstGeneration(NullProgress):
    """A progress stand-in that sends this process SIGTERM once the first generation is reported."""

    def advance(self, done, total, description):
        if done:
            signal.raise_signal(signal.SIGTERM)


def test_sigterm_checkpoints_stops_and_resumes_identically(tiny_run):
    root, config, full_run, _ = tiny_run
    run = RunDir.create(root, "sigterm", dump_config(config))
    stopped = run_rl_search(config, run, progress=_SigtermAfterFirstGeneration())
    assert stopped["interrupted"] and stopped["generations_done"] == 1
    assert not run.file("results.json").is_file()
    resumed = run_rl_search(config, RunDir.open(run.path), resume=True)
    assert resumed["resumed_from"] == 1 and not resumed["interrupted"]
    assert search_result(run.read_json("results.json")) == search_result(full_run.read_json("results.json"))


CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from discover.infra.config import load_config
from discover.infra.rundir import RunDir
from discover.searches.rl.config import RLSearchConfig
from discover.searches.rl.search import RLObjectiveSearch, run_rl_search
from discover.shared.runner import NullProgress

class SlowProgress(NullProgress):  # gives the parent time to SIGKILL us between checkpoints
    def advance(self, *args, **kwargs):
        time.sleep(1.5)

config = load_config(RLSearchConfig, {config!r}, [{override!r}])
run_rl_search(config, RunDir.open({run!r}), progress=SlowProgress())
"""


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tiny_run):
    root, config, full_run, _ = tiny_run
    run = RunDir.create(root, "killed", dump_config(config))
    script = CHILD.format(
        repo=str(REPO),
        config=str(TINY),
        override=f"fitness.cache_dir={root / 'baseline-cache'}",
        run=str(run.path),
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not (run.checkpoint_dir / "1" / "commit_success.txt").is_file():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "child never checkpointed"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not run.file("results.json").is_file()  # it really died before finishing

    summary = run_rl_search(config, RunDir.open(run.path), resume=True)
    assert summary["resumed_from"] is not None and 1 <= summary["resumed_from"] < config.es.generations
    resumed, full = run.read_json("results.json"), full_run.read_json("results.json")
    assert search_result(resumed) == search_result(full)
    for name in ("best_drift.npz", "final_drift.npz"):
        with np.load(run.file(name)) as a, np.load(full_run.file(name)) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])


# ----------------------------------------------------------------------------------------------------------
# Several meta-training envs


@pytest.fixture(scope="module")
def two_env_run(tmp_path_factory):
    """The tiny search meta-trained on CartPole at 1x and 2x and on Catch at 1x only (horizon.per_env; 4096 steps at
    1x, where PPO is above random on Catch)."""
    root = tmp_path_factory.mktemp("rl-two-envs")
    config = load_config(RLSearchConfig, TINY, [f"fitness.cache_dir={root / 'cache'}", "env.extra=[Catch-bsuite]",
                                                "ppo.total_timesteps=4096", "horizon.per_env={Catch-bsuite: [1]}"])
    run = RunDir.create(root, "two", dump_config(config))
    return root, config, run, run_rl_search(config, run)


@pytest.mark.slow
def test_two_envs_are_each_normalized_on_their_own_scale(two_env_run):
    _, config, run, summary = two_env_run
    results = run.read_json("results.json")
    assert results["envs"] == ["CartPole-v1", "Catch-bsuite"] and summary["generations_done"] == config.es.generations
    labels = ["CartPole-v1 1", "CartPole-v1 2", "Catch-bsuite 1"]
    assert list(results["per_horizon"]["learned"]) == labels
    assert results["best_drift_normalized_return"] == pytest.approx(
        np.mean([v["mean"] for v in results["per_horizon"]["learned"].values()]))
    for env, name in (("CartPole-v1", "baselines.json"), ("Catch-bsuite", "baselines-Catch-bsuite.json")):
        assert name in results["files"]
        baselines = run.read_json(name)
        assert baselines["env"] == env
        for h in baselines["horizons"]:
            label = f"{env} {h['multiple']:g}"
            assert results["ppo_returns"][label] == pytest.approx(h["ppo"]["mean"])
            assert results["random_returns"][label] == pytest.approx(h["random"]["mean"])
            assert results["per_horizon"]["ppo"][label]["mean"] == pytest.approx(1.0)  # PPO = 1 on each env
    # Catch's returns lie in [-1, 1], CartPole's in the hundreds: one shared scale would drown Catch.
    assert results["ppo_returns"]["Catch-bsuite 1"] <= 1.0 and results["ppo_returns"]["CartPole-v1 2"] > 100.0
    assert set(results["history"]["env"]) <= {0.0, 1.0}
    _, _, meta = load_drift(run.file("best_drift.npz"))
    assert meta["env"] == "CartPole-v1" and list(meta["env_ppo"]) == ["Catch-bsuite"]
    assert meta["env_ppo"]["Catch-bsuite"] == meta["ppo"]  # both classic control: the same PPO settings
    # discover transfer's default: both meta-training envs, then CartPole's held-out env; only that one is held out
    assert default_envs(meta) == ["CartPole-v1", "Catch-bsuite", "Acrobot-v1"]
    assert list(meta_training_envs(meta)) == ["CartPole-v1", "Catch-bsuite"]


@pytest.mark.slow
def test_generations_draw_every_env_and_horizon_one_compile_per_env(two_env_run):
    root, config, _, _ = two_env_run
    search = RLObjectiveSearch()
    ctx = search.prepare(config, RunDir.create(root, "buckets", dump_config(config)), NullProgress())
    state = search.init(ctx)
    assert ctx.search.bucket_env == (0, 0, 1) and ctx.search.multiples == (1.0, 2.0, 1.0)
    drawn = set()
    for i in range(24):
        *_, (_, _, bucket) = ctx.search.propose_fn(state._replace(key=jax.random.PRNGKey(i)))
        drawn.add(int(bucket))
    assert drawn == {0, 1, 2}
    rows = jax.tree.map(lambda x: np.broadcast_to(x, (ctx.search.rows,) + x.shape),
                        ctx.search.strategy.get_mean(state.es_state))
    keys = jax.random.split(jax.random.PRNGKey(0), ctx.search.rows * 2).reshape(ctx.search.rows, 2, 2)
    for bucket, n in enumerate(ctx.search.horizon_updates):
        metrics = ctx.search.train_rows(keys, rows, n, env=ctx.search.bucket_env[bucket])
        assert np.asarray(metrics["episode_count"])[..., :n].sum() > 0
    assert [train.compiles() for train in ctx.search.trains] == [1, 1]


@pytest.mark.slow
def test_an_env_with_its_own_lifetimes_gets_only_those_buckets(two_env_run):
    """horizon.per_env: Catch meta-trained at 1x only, CartPole at 1x and 2x: three buckets, each with its own
    env's baselines at its own multiple, all drawn."""
    root, config, _, _ = two_env_run
    run = RunDir.create(root, "per-env", dump_config(config))
    search = RLObjectiveSearch()
    ctx = search.prepare(config, run, NullProgress())
    assert ctx.search.bucket_env == (0, 0, 1) and ctx.search.multiples == (1.0, 2.0, 1.0)
    assert [ctx.search.label(k) for k in range(3)] == ["CartPole-v1 1", "CartPole-v1 2", "Catch-bsuite 1"]
    assert [h["multiple"] for h in run.read_json("baselines-Catch-bsuite.json")["horizons"]] == [1.0]
    assert [h["multiple"] for h in run.read_json("baselines.json")["horizons"]] == [1.0, 2.0]
    catch = ctx.baseline_entry(2)
    assert catch["multiple"] == 1.0 and catch["ppo"]["mean"] <= 1.0  # Catch's returns, not CartPole's
    assert ctx.baseline_entry(1)["multiple"] == 2.0 and ctx.baseline_entry(1)["ppo"]["mean"] > 100.0
    state = search.init(ctx)
    drawn = {int(ctx.search.propose_fn(state._replace(key=jax.random.PRNGKey(i)))[-1][-1]) for i in range(24)}
    assert drawn == {0, 1, 2}


def test_the_headline_names_the_buckets_when_an_env_has_its_own_lifetimes():
    from discover.searches.rl.search import RLSummary

    per = {label: {"mean": 1.0, "stderr": 0.0} for label in ("CartPole-v1 1", "CartPole-v1 2", "Catch-bsuite 1")}
    summary = RLSummary(kind="rl_objective", name="t", run_dir="r", generations_done=1, generations=1,
                        env="CartPole-v1", envs=["CartPole-v1", "Catch-bsuite"], total_timesteps=4096,
                        horizons=[1.0, 2.0], per_horizon={"learned": per})
    assert "averaged over its 3 (env, horizon) buckets, on lifetimes 1x, 2x of 4,096 steps" in summary.headline()[0]
    full = dict(per, **{"Catch-bsuite 2": {"mean": 1.0, "stderr": 0.0}})
    summary.per_horizon = {"learned": full}
    assert "averaged over horizons 1x, 2x of 4,096 steps" in summary.headline()[0]


def test_every_bucket_each_generation_scores_rows_by_their_mean_normalized_return(tiny_run):
    """horizon.sample: every trains every row at every lifetime (one trainer call per bucket, the same seeds) and
    scores a row by the mean over buckets of its return normalized on that bucket; default draws one bucket."""
    root, _, _, _ = tiny_run
    config = load_config(RLSearchConfig, TINY, [f"fitness.cache_dir={root / 'baseline-cache'}", "horizon.sample=every"])
    search = RLObjectiveSearch()
    ctx = search.prepare(config, RunDir.create(root, "every", dump_config(config)), NullProgress())
    sc = ctx.search
    calls = []

    def fake_train_rows(keys, params, n_updates, env=0):  # row i returns 10 * (i + 1) + n_updates on every seed
        calls.append((int(n_updates), np.asarray(keys).copy()))
        rows, seeds = keys.shape[:2]
        final = np.broadcast_to(10.0 * np.arange(1, rows + 1)[:, None] + n_updates, (rows, seeds)).astype(np.float32)
        zeros = np.zeros((rows, seeds, max(sc.horizon_updates)), np.float32)
        return {"final_return": final, "finite": np.ones((rows, seeds), bool), "return_sum": zeros,
                "episode_count": zeros}

    sc.train_rows = fake_train_rows
    state, info = search.step(search.init(ctx), ctx)
    assert [n for n, _ in calls] == list(sc.horizon_updates)  # every bucket, in order
    assert all(np.array_equal(calls[0][1], k) for _, k in calls)  # the same training seeds at every bucket
    rows = np.arange(1, sc.rows + 1)
    expected = np.mean([(10.0 * rows + n - sc.random_returns[k]) / (sc.ppo_returns[k] - sc.random_returns[k])
                        for k, n in enumerate(sc.horizon_updates)], axis=0)
    np.testing.assert_allclose(info["scores"], expected[:-1], rtol=1e-5)
    assert float(info["mean_drift"]) == pytest.approx(expected[-1], rel=1e-5)
    assert float(state.history["horizon"][0]) == 0.0  # 0 = every bucket
    assert search.log(_NullTB(), state, info, 1.0, ctx).endswith("mean over every env and lifetime")
    # the default draws one bucket per generation
    calls.clear()
    config = load_config(RLSearchConfig, TINY, [f"fitness.cache_dir={root / 'baseline-cache'}"])
    ctx = search.prepare(config, RunDir.create(root, "one", dump_config(config)), NullProgress())
    ctx.search.train_rows = fake_train_rows
    state, info = search.step(search.init(ctx), ctx)
    assert len(calls) == 1 and float(state.history["horizon"][0]) in sc.multiples


class _NullTB:
    def scalars(self, *args, **kwargs):
        pass

    def histogram(self, *args, **kwargs):
        pass

    def figure(self, *args, **kwargs):
        import matplotlib.pyplot as plt

        plt.close(args[1])


def test_final_drift_is_written_before_the_final_evaluation_which_can_be_skipped(tiny_run):
    """final_drift.npz is on disk before the final evaluation starts (a run stopped there keeps it), and with
    fitness.final_evaluation false no training runs after the last generation: best_drift.npz is the final ES
    mean, unscored, and the headline says so."""
    root, _, _, _ = tiny_run
    search = RLObjectiveSearch()
    calls = []

    def prepared(name, *overrides):
        config = load_config(RLSearchConfig, TINY, [f"fitness.cache_dir={root / 'baseline-cache'}", "es.generations=1",
                                                     *overrides])
        ctx = search.prepare(config, RunDir.create(root, name, dump_config(config)), NullProgress())
        rows_n = ctx.search.rows

        def fake_train_rows(keys, params, n_updates, env=0):
            calls.append(name)
            if ctx.run_dir.file("final_drift.npz").exists():
                raise KeyboardInterrupt  # the final evaluation: stopped here
            seeds = keys.shape[1]
            zeros = np.zeros((rows_n, seeds, max(ctx.search.horizon_updates)), np.float32)
            final = np.broadcast_to(np.arange(rows_n, dtype=np.float32)[:, None] * 10.0, (rows_n, seeds))
            return {"final_return": final, "finite": np.ones((rows_n, seeds), bool), "return_sum": zeros,
                    "episode_count": zeros}

        ctx.search.train_rows = fake_train_rows
        state, _ = search.step(search.init(ctx), ctx)
        return ctx, state

    ctx, state = prepared("stopped")
    with pytest.raises(KeyboardInterrupt):
        search.finish(state, ctx, _NullTB())
    assert calls == ["stopped", "stopped"]  # the generation, then the final evaluation's first call
    mean = ctx.search.strategy.get_mean(state.es_state)
    _, params, _ = load_drift(ctx.run_dir.file("final_drift.npz"))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mean)))
    assert not ctx.run_dir.file("best_drift.npz").exists()

    ctx, state = prepared("skipped", "fitness.final_evaluation=false")
    summary = search.finish(state, ctx, _NullTB())
    assert calls[2:] == ["skipped"]  # only the generation trained
    mean = ctx.search.strategy.get_mean(state.es_state)
    for name in ("final_drift.npz", "best_drift.npz"):
        _, params, meta = load_drift(ctx.run_dir.file(name))
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mean)))
    assert "normalized_return" not in meta and "not re-evaluated" in meta["chosen"]
    assert summary.final_eval_runs == 0 and not np.isfinite(summary.best_drift_normalized_return)
    assert "not scored here (fitness.final_evaluation: false)" in "\n".join(summary.headline())
    assert set(summary.hparam_metrics()) == {"dpo_normalized_return"}
