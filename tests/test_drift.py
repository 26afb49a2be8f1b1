"""Drift functions: the mirror-learning constraints, the LPO/TA-LPO inputs, PPO and DPO closed forms."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.ppo import clipped_policy_loss, mirror_policy_loss
from search_spaces.drift import (
    DriftConfig,
    dpo_drift,
    lpo_features,
    make_drift,
    num_inputs,
    ppo_drift,
    switch_drift,
    talpo_features,
)

LEARNED = [
    DriftConfig(family="lpo"),
    DriftConfig(family="talpo"),
    DriftConfig(family="talpo", log_horizon_input=True),
    DriftConfig(family="talpo", ppo_init=True),
    DriftConfig(family="talpo", ppo_init=True, signed_residual=True, init_scale=5.0),
    DriftConfig(family="lpo", init_scale=5.0),  # large weights: the net is far from 0 away from r = 1
    DriftConfig(family="ppo_schedule", hidden_size=16, init_scale=5.0),
    DriftConfig(family="ppo_schedule", hidden_size=16, init_scale=5.0, log_horizon_input=True),
]
ALL = LEARNED + [DriftConfig(family="ppo"), DriftConfig(family="dpo")]


def _rows(seed, n=256):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    ratio = jnp.exp(0.8 * jax.random.normal(k1, (n,)))
    advantage = 2.0 * jax.random.normal(k2, (n,))
    progress = jax.random.uniform(k3, (n,))
    return ratio, advantage, progress


def test_feature_counts_and_values():
    ratio, advantage = jnp.array([2.0]), jnp.array([3.0])
    x = lpo_features(ratio, advantage)
    log2 = np.log(2.0)
    np.testing.assert_allclose(x[0], [1, 1, log2, log2**2, 3, 3, 3 * log2, 3 * log2**2], rtol=1e-6)
    t = talpo_features(ratio, advantage, jnp.float32(0.25))
    np.testing.assert_allclose(t[0, 8:], 0.25 * np.asarray(x[0]), rtol=1e-6)
    assert talpo_features(ratio, advantage, 0.5, jnp.float32(2.0)).shape == (1, 24)
    assert [num_inputs(c) for c in LEARNED[:3]] == [8, 16, 24]
    assert [num_inputs(c) for c in LEARNED[-2:]] == [1, 3]


@pytest.mark.parametrize(
    "config", ALL, ids=lambda c: f"{c.family}-h{int(c.log_horizon_input)}-p{int(c.ppo_init)}-s{int(c.signed_residual)}"
)
def test_drift_nonnegative_and_flat_at_ratio_one(config):
    family = make_drift(config)
    params = family.init(jax.random.PRNGKey(3))
    ratio, advantage, progress = _rows(0)

    def drift(r, a, n):
        return family.apply(params, r, a, n, jnp.float32(2.3))

    @jax.jit
    def check(ratio, advantage, progress):
        ones = jnp.ones_like(ratio)
        # r's float32 neighbours of 1: the 1e-4 offset keeps a flat neighbourhood, not only the point.
        near = jnp.where(advantage > 0, jnp.nextafter(1.0, 2.0), jnp.nextafter(1.0, 0.0)).astype(jnp.float32)
        return (
            jax.vmap(drift)(ratio, advantage, progress),
            jax.vmap(drift)(ones, advantage, progress),
            jax.vmap(jax.grad(drift))(ones, advantage, progress),
            jax.vmap(drift)(near, advantage, progress),
        )

    values, at_one, grad_at_one, near_one = check(ratio, advantage, progress)
    assert values.shape == ratio.shape
    assert bool(jnp.all(values >= 0.0))
    np.testing.assert_array_equal(at_one, 0.0)
    np.testing.assert_array_equal(grad_at_one, 0.0)
    if config.family == "dpo":  # DPO is smooth: ~x^3 near r = 1, not exactly flat
        assert float(jnp.max(near_one)) < 1e-12
    else:
        np.testing.assert_array_equal(near_one, 0.0)


def test_learned_drift_depends_on_inputs_and_progress():
    family = make_drift(DriftConfig(family="talpo", init_scale=3.0))
    params = family.init(jax.random.PRNGKey(0))
    ratio, advantage, _ = _rows(1)
    early = family.apply(params, ratio, advantage, jnp.float32(0.0), jnp.float32(2.0))
    late = family.apply(params, ratio, advantage, jnp.float32(1.0), jnp.float32(2.0))
    assert float(jnp.max(early)) > 0.0
    assert not np.allclose(early, late)  # the temporally aware part is wired in
    lpo = make_drift(DriftConfig(family="lpo", init_scale=3.0))
    p = lpo.init(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(
        lpo.apply(p, ratio, advantage, 0.0, 2.0), lpo.apply(p, ratio, advantage, 1.0, 2.0)
    )


def _mirror(lp, advantage, clip):
    r = jnp.exp(lp)
    return mirror_policy_loss(r, advantage, ppo_drift(r, advantage, clip))


def _clipped(lp, advantage, clip):
    return clipped_policy_loss(jnp.exp(lp), advantage, clip)


_both = jax.jit(
    lambda lp, a, c: (jax.value_and_grad(_mirror)(lp, a, c), jax.value_and_grad(_clipped)(lp, a, c))
)


@settings(max_examples=60, deadline=None)
@given(
    log_ratio=st.lists(st.floats(-2.0, 2.0), min_size=4, max_size=4),
    advantage=st.lists(st.floats(-5.0, 5.0), min_size=4, max_size=4),
    clip=st.sampled_from([0.1, 0.2, 0.3]),
)
def test_ppo_drift_gives_the_clipped_objective(log_ratio, advantage, clip):
    """-(r*A - relu((r - clip(r)) A)) equals -min(r*A, clip(r)*A) in value and in gradient w.r.t. log pi."""
    lp, a = jnp.array(log_ratio, jnp.float32), jnp.array(advantage, jnp.float32)
    (mirror, mirror_grad), (clipped, clipped_grad) = _both(lp, a, jnp.float32(clip))
    np.testing.assert_allclose(mirror, clipped, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mirror_grad, clipped_grad, rtol=1e-5, atol=1e-6)


def test_ppo_drift_zero_inside_trust_region():
    ratio = jnp.array([0.85, 1.0, 1.15, 1.3, 0.7, 1.3, 0.7])
    advantage = jnp.array([1.0, -2.0, -1.0, 1.0, -1.0, -1.0, 1.0])
    np.testing.assert_allclose(ppo_drift(ratio, advantage, 0.2), [0, 0, 0, 0.1, 0.1, 0, 0], atol=1e-6)


def test_dpo_closed_form():
    alpha, beta = 2.0, 0.6
    r, a = jnp.array([1.5, 0.5]), jnp.array([2.0, -1.0])
    x_pos = 0.5 * 2.0
    x_neg = np.log(0.5) * -1.0
    expected = [x_pos - alpha * np.tanh(x_pos / alpha), x_neg - beta * np.tanh(x_neg / beta)]
    np.testing.assert_allclose(dpo_drift(r, a, alpha, beta), expected, rtol=1e-5)
    # Uses (r-1)A for A >= 0 and log(r)A for A < 0: the two branches differ for the same |A|.
    assert float(dpo_drift(jnp.array(1.8), jnp.array(1.0))) != float(
        dpo_drift(jnp.array(1.8), jnp.array(-1.0))
    )


def test_switch_drift_selects_per_row():
    fns = [make_drift(DriftConfig(family=f)).apply for f in ("ppo", "dpo")]
    ratio, advantage, _ = _rows(2)
    both = switch_drift(fns)
    out = jax.vmap(lambda i: both((i, ({}, {})), ratio, advantage, 0.0, 2.0))(jnp.arange(2))
    np.testing.assert_allclose(out[0], ppo_drift(ratio, advantage, 0.2), rtol=1e-6)
    np.testing.assert_allclose(out[1], dpo_drift(ratio, advantage), rtol=1e-6)


def test_unknown_family_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown drift family 'trpo'"):
        make_drift(dataclasses.replace(DriftConfig(), family="trpo"))


def _apply_rows(family, params, ratio, advantage, progress, log_horizon=2.0):
    """The drift per row (each row its own n/N)."""
    return jax.vmap(lambda r, a, n: family.apply(params, r, a, n, jnp.float32(log_horizon)))(ratio, advantage, progress)


def test_signed_residual_can_relax_ppo_and_plain_ppo_init_cannot():
    ratio, advantage, progress = _rows(4, 1024)
    ppo = ppo_drift(ratio, advantage)
    out = {}
    for signed in (False, True):
        family = make_drift(DriftConfig(family="talpo", ppo_init=True, signed_residual=signed, init_scale=3.0))
        params = family.init(jax.random.PRNGKey(1))
        out[signed] = _apply_rows(family, params, ratio, advantage, progress)
    assert bool(jnp.all(out[False] >= ppo))  # PPO + relu(net): never bolder than PPO
    below = out[True] < ppo - 1e-3
    assert int(jnp.sum(below)) > 10  # relu(PPO + net): the net can cancel part of PPO's penalty
    assert bool(jnp.all(out[True] >= 0.0))
    # A small net starts at PPO either way (the search's warm start).
    small = make_drift(DriftConfig(family="talpo", ppo_init=True, signed_residual=True, init_scale=1e-3))
    near = _apply_rows(small, small.init(jax.random.PRNGKey(1)), ratio, advantage, progress)
    np.testing.assert_allclose(near, ppo, atol=0.05)


def _excess_over_ppo(family, params, ratio, advantage, progress):
    return float(jnp.mean(_apply_rows(family, params, ratio, advantage, progress) - ppo_drift(ratio, advantage)))


@pytest.mark.parametrize("config, low, high", [
    # relu(net) on top of PPO: weight noise can only add penalty, never remove it (a ratchet toward caution).
    (DriftConfig(family="talpo", ppo_init=True, log_horizon_input=True, init_scale=0.1), 0, 0),
    # PPO's drift with a scaled penalty and clip range: noise makes it bolder about as often as more cautious.
    (DriftConfig(family="ppo_schedule", hidden_size=16, init_scale=0.1, log_horizon_input=True), 5, 15),
])
def test_weight_noise_moves_the_drift_both_ways_only_for_ppo_schedule(config, low, high):
    family = make_drift(config)
    start = family.init(jax.random.PRNGKey(0))
    ratio, advantage, progress = _rows(5, 4096)
    ratio = jnp.exp(0.3 * jnp.log(ratio))  # log r ~ N(0, 0.24): mostly near the clip band, as PPO's updates are
    bolder = 0
    for draw in range(20):
        keys = jax.random.split(jax.random.PRNGKey(100 + draw), len(jax.tree.leaves(start)))
        noisy = jax.tree.unflatten(jax.tree.structure(start), [
            w + 0.2 * jax.random.normal(k, w.shape) for k, w in zip(keys, jax.tree.leaves(start))])
        bolder += _excess_over_ppo(family, noisy, ratio, advantage, progress) < 0.0
    assert low <= bolder <= high
