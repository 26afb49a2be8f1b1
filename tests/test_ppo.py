"""The PPO-style inner loop: PPO equivalence of the drift form, truncation bootstrapping, learning, MinAtar."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import rl_envs
from envs.ppo import (
    PPOConfig,
    Transition,
    compute_gae,
    make_population_train,
    make_train,
    num_updates,
    orthogonal,
)
from search_spaces.drift import DriftConfig, make_drift, switch_drift
from tests.benchmark_scripts import load_benchmark

TINY = PPOConfig(
    num_envs=2, num_steps=16, total_timesteps=32 * 12, update_epochs=2, num_minibatches=2, hidden_size=16
)


def _reversing_drift(params, ratio, advantage, progress, log_horizon):
    return 2.0 * ratio * advantage  # r*A - drift = -r*A: the policy step goes the other way


# Row 0: PPO's drift; row 1: a drift unlike it. One compiled population trainer serves every test below.
SWITCHED = switch_drift([make_drift(DriftConfig(family="ppo")).apply, _reversing_drift])
SEED_KEYS = jax.random.split(jax.random.PRNGKey(4), 2)


@pytest.fixture(scope="module")
def runs():
    """Plain PPO (PureJaxRL's clipped surrogate, one agent per call) for two seeds, and the mirror-learning
    population trainer over (PPO's drift, another drift) x the same two seeds in one vmapped call."""
    plain_train = jax.jit(make_train("CartPole-v1", TINY, None))
    plain = [jax.device_get(plain_train(key, {})) for key in SEED_KEYS]
    keys = jnp.broadcast_to(SEED_KEYS, (2,) + SEED_KEYS.shape)
    population = make_population_train("CartPole-v1", TINY, SWITCHED)(keys, (jnp.arange(2), ({}, {})))
    return plain, jax.device_get(population)


def test_ppo_drift_reproduces_plain_ppo_training(runs):
    """Row 0 of the population (PPO's drift, vmapped) trains what plain single-agent PPO trains, per seed."""
    plain, population = runs
    assert population["final_return"].shape == (2, 2)
    for seed in range(2):
        expected = plain[seed]
        assert expected["return_sum"].shape == (num_updates(TINY),)
        assert expected["episode_count"].sum() > 0  # episodes did finish: the comparison saw real returns
        # The two losses differ only by float rounding: the same episodes, the same final network.
        np.testing.assert_array_equal(population["episode_count"][0, seed], expected["episode_count"])
        np.testing.assert_allclose(population["return_sum"][0, seed], expected["return_sum"], rtol=1e-6)
        np.testing.assert_allclose(population["param_norm"][0, seed], expected["param_norm"], rtol=1e-6)
        assert bool(population["finite"][0, seed]) and bool(expected["finite"])
    # Different seeds really are different runs.
    assert not np.allclose(plain[0]["param_norm"], plain[1]["param_norm"], rtol=1e-6)


def test_a_different_drift_trains_differently(runs):
    """Guards the equivalence test above against a trainer that ignores the drift."""
    plain, population = runs
    for seed in range(2):
        # 1e-6 is far above the PPO rows' difference (0 here) and far below this one's (~1e-4).
        assert not np.allclose(population["param_norm"][1, seed], plain[seed]["param_norm"], rtol=1e-6)


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (400, 64), (64, 2)])
def test_orthogonal_init(shape):
    w = np.asarray(orthogonal(2.0)(jax.random.PRNGKey(0), shape)) / 2.0
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, np.eye(min(shape)), atol=2e-5)


def test_trainer_uses_no_lapack():
    """Batched LAPACK calls deadlock XLA:CPU's thread pool in jaxlib 0.10 (see envs.ppo.orthogonal)."""
    keys = jnp.broadcast_to(SEED_KEYS, (2,) + SEED_KEYS.shape)
    lowered = make_population_train("CartPole-v1", TINY, SWITCHED).lower(keys, (jnp.arange(2), ({}, {})))
    assert "lapack" not in lowered.as_text().lower()


def _transition(rewards, values, terminated, truncated):
    t = len(rewards)

    def col(x):  # time x 1 env
        return jnp.asarray(x, jnp.float32)[:, None]

    return Transition(
        obs=jnp.zeros((t, 1, 1)),
        action=jnp.zeros((t, 1), jnp.int32),
        log_prob=jnp.zeros((t, 1)),
        value=col(values),
        reward=col(rewards),
        terminated=col(terminated),
        done=col(np.logical_or(terminated, truncated)),
        final_obs=jnp.zeros((t, 1, 1)),
    )


def test_gae_bootstraps_truncation_but_not_termination():
    gamma, lam = 0.9, 1.0
    rewards, values = [1.0, 1.0], [0.0, 0.0]
    final_values = jnp.array([[0.0], [10.0]])  # V of the post-step observation; step 1 ends the episode
    truncated, _ = compute_gae(_transition(rewards, values, [0, 0], [0, 1]), final_values, gamma, lam)
    terminated, _ = compute_gae(_transition(rewards, values, [0, 1], [0, 0]), final_values, gamma, lam)
    # Truncated: the cut-off state's value counts. Terminated: nothing after the end.
    np.testing.assert_allclose(truncated[:, 0], [1 + 0.9 * (1 + 0.9 * 10), 1 + 0.9 * 10], rtol=1e-6)
    np.testing.assert_allclose(terminated[:, 0], [1 + 0.9 * 1, 1], rtol=1e-6)


def test_gae_does_not_leak_across_episodes():
    final_values = jnp.array([[5.0], [7.0]])
    adv, targets = compute_gae(_transition([0.0, 3.0], [1.0, 2.0], [1, 0], [0, 0]), final_values, 0.5, 0.5)
    np.testing.assert_allclose(adv[:, 0], [0.0 - 1.0, 3.0 + 0.5 * 7.0 - 2.0], rtol=1e-6)
    np.testing.assert_allclose(targets, adv + jnp.array([[1.0], [2.0]]), rtol=1e-6)


@pytest.mark.slow
def test_plain_ppo_learns_cartpole():
    config = dataclasses.replace(rl_envs.ppo_config("CartPole-v1"), total_timesteps=100_000)
    out = jax.jit(make_train("CartPole-v1", config, None))(jax.random.PRNGKey(0), {})
    assert float(out["final_return"]) > 150.0  # a random policy scores ~22


@pytest.mark.slow
def test_minatar_trainer_runs():
    config = rl_envs.ppo_config(
        "Breakout-MinAtar",
        num_envs=4,
        num_steps=32,
        total_timesteps=4 * 32 * 4,
        num_minibatches=2,
        hidden_size=16,
    )
    out = jax.jit(make_train("Breakout-MinAtar", config, make_drift(DriftConfig(family="dpo")).apply))(
        jax.random.PRNGKey(0), {}
    )
    assert out["return_sum"].shape == (4,)
    assert bool(out["finite"]) and np.isfinite(float(out["final_return"]))


def test_env_registry():
    assert rl_envs.ppo_config("SpaceInvaders-MinAtar").num_envs == 64
    assert rl_envs.ppo_config("SpaceInvaders-MinAtar").lr == 5e-3
    assert rl_envs.ppo_config("CartPole-v1").num_envs == 4
    settings = rl_envs.PPOSettings(lr=1e-3)
    assert rl_envs.ppo_config("Breakout-MinAtar", settings).lr == 1e-3
    assert rl_envs.ppo_config("Breakout-MinAtar", settings).num_envs == 64  # unset fields: the env's default
    assert "Acrobot-v1" in rl_envs.spec("CartPole-v1").held_out
    assert rl_envs.normalize_return(-250.0, -100.0, -500.0) == pytest.approx(250.0 / 400.0)
    with pytest.raises(ValueError, match="unknown environment"):
        rl_envs.spec("Pong")


def test_clip_activity_measures_whether_the_clip_binds():
    # benchmarks/clip_activity.py: at lr 0 no ratio leaves 1, so the clip never binds and removing it changes no
    # run; at a large lr it does both. Only samples outside the band can be penalized.
    clip_activity = load_benchmark("clip_activity")
    small = dataclasses.replace(TINY, total_timesteps=32 * 6, update_epochs=1, hidden_size=8)
    idle = clip_activity.measure("CartPole-v1", dataclasses.replace(small, lr=0.0), seeds=2)
    assert idle["outside"] == idle["penalized"] == 0.0 and idle["identical"] == 2 and idle["diff"] == 0.0
    bold = clip_activity.measure("CartPole-v1", dataclasses.replace(small, lr=0.05, anneal_lr=False), seeds=2)
    assert 0.0 < bold["penalized"] <= bold["outside"] < 1.0
