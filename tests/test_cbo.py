"""CBO (discover.shared.cbo): the paper's formula, evosax's interface, selection by name, and two test functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from discover.infra.config import ConfigError, load_config
from discover.searches.rl.config import RLSearchConfig
from discover.searches.update_rules.config import RefineSection, SearchConfig
from discover.searches.update_rules.refine import _strategy
from discover.shared import cbo
from discover.shared.es import STRATEGY_NAMES, cbo_options, make_strategy


def _written_out_consensus(x, f, alpha):
    """v_alpha = sum x_i exp(-alpha f_i) / sum exp(-alpha f_i), in float64, exactly as written."""
    w = np.exp(-alpha * np.asarray(f, np.float64))
    return (w[:, None] * np.asarray(x, np.float64)).sum(0) / w.sum()


def test_consensus_is_the_written_formula_and_stays_finite():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype(np.float32)
    f = rng.uniform(0.0, 3.0, 16).astype(np.float32)
    got = np.asarray(cbo.consensus(jnp.asarray(x), jnp.asarray(f), 2.0))
    np.testing.assert_allclose(got, _written_out_consensus(x, f, 2.0), rtol=1e-5, atol=1e-6)
    # alpha large / fitness large: exp(-alpha f) underflows to 0 everywhere when written out; the log-sum-exp
    # weights give the best particle (and nothing non-finite)
    big = np.asarray(cbo.consensus(jnp.asarray(x), jnp.asarray(f + 1e4), 1e6))
    np.testing.assert_allclose(big, x[np.argmin(f)], rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(cbo.consensus(jnp.asarray(x), jnp.asarray(f * 1e30), 1e30))))
    # failed evaluations (NaN, +inf) get weight 0; all failed: the plain mean
    bad = f.copy()
    bad[:4] = [np.nan, np.inf, np.nan, np.inf]
    got = np.asarray(cbo.consensus(jnp.asarray(x), jnp.asarray(bad), 2.0))
    np.testing.assert_allclose(got, _written_out_consensus(x[4:], f[4:], 2.0), rtol=1e-5, atol=1e-6)
    allbad = np.asarray(cbo.consensus(jnp.asarray(x), jnp.full(16, jnp.inf), 2.0))
    np.testing.assert_allclose(allbad, x.mean(0), rtol=1e-5, atol=1e-6)


def test_one_tell_is_the_euler_maruyama_step_of_the_paper():
    """x_i <- x_i - lambda dt (x_i - v) + sigma sqrt(dt) |x_i - v| xi_i, with xi drawn from tell's key."""
    P, D = 8, 3
    alpha, lam, sig, dt = 3.0, 0.7, 0.9, 0.2
    strategy = make_strategy("CBO", P, jnp.zeros(D), sigma=0.5, lr=0.0, antithetic=False, rank_shaping=False,
                             cbo={"alpha": alpha, "lambda": lam, "sigma": sig, "dt": dt})
    params = strategy.default_params
    assert (params.alpha, params.drift, params.noise, params.dt, params.std_init) == (alpha, lam, sig, dt, 0.5)
    mean0 = jnp.array([1.0, -2.0, 0.5])
    state = strategy.init(jax.random.key(0), mean0, params)
    x, state = strategy.ask(jax.random.key(1), state, params)
    np.testing.assert_allclose(np.asarray(x).mean(0), np.asarray(mean0), atol=1.0)  # drawn around the mean
    assert np.asarray(x).std() > 0.2
    f = jnp.sum(jnp.square(x), axis=1)
    k_tell = jax.random.key(2)
    state, _ = strategy.tell(k_tell, x, f, state, params)
    x64, v = np.asarray(x, np.float64), _written_out_consensus(x, f, alpha)
    xi = np.asarray(jax.random.normal(k_tell, (P, D), jnp.float32), np.float64)
    want = x64 - lam * dt * (x64 - v) + sig * np.sqrt(dt) * np.abs(x64 - v) * xi
    np.testing.assert_allclose(np.asarray(state.particles), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.mean), v, rtol=1e-5, atol=1e-6)  # the mean IS the consensus
    np.testing.assert_allclose(float(state.std), np.sqrt(np.mean((x64 - v) ** 2)), rtol=1e-5)
    nxt, _ = strategy.ask(jax.random.key(3), state, params)
    np.testing.assert_array_equal(np.asarray(nxt), np.asarray(state.particles))  # ask returns the particles


def test_evosax_interface_on_a_pytree_with_a_jitted_scan():
    template = {"a": jnp.zeros((2, 2)), "b": jnp.zeros(3)}
    strategy = make_strategy("CBO", 6, template, sigma=0.1, lr=0.0, antithetic=True, rank_shaping=True)
    params = strategy.default_params
    state = strategy.init(jax.random.key(0), template, params)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
    pop, _ = strategy.ask(jax.random.key(1), state, params)
    assert jax.tree.map(jnp.shape, pop) == {"a": (6, 2, 2), "b": (6, 3)}
    assert jax.tree.map(jnp.shape, strategy.get_mean(state)) == {"a": (2, 2), "b": (3,)}

    def gen(state, key):
        k1, k2 = jax.random.split(key)
        pop, state = strategy.ask(k1, state, params)
        fit = jax.vmap(lambda p: jnp.sum((p["a"] - 1.0) ** 2) + jnp.sum(p["b"] ** 2))(pop)
        state, metrics = strategy.tell(k2, pop, fit, state, params)
        return state, metrics["best_fitness"]

    final, best = jax.jit(lambda s: jax.lax.scan(gen, s, jax.random.split(jax.random.key(2), 40)))(state)
    assert int(final.generation_counter) == 40 and np.all(np.diff(np.asarray(best)) <= 0)
    assert jax.tree.structure(final) == jax.tree.structure(state)  # same pytree: checkpoints restore it


def _runs(name, f, dim, popsize, generations, seeds, sigma, shift, **kwargs):
    """f at the final mean (consensus) of ``seeds`` independent runs, all in one jitted, vmapped call."""
    strategy = make_strategy(name, popsize, jnp.zeros(dim), sigma=sigma, lr=0.1, antithetic=True, rank_shaping=True,
                             **kwargs)
    params = strategy.default_params
    target = jnp.full(dim, shift, jnp.float32)

    def one(key):
        k0, k1 = jax.random.split(key)
        state = strategy.init(k0, jnp.zeros(dim), params)

        def gen(state, key):
            ka, kt = jax.random.split(key)
            x, state = strategy.ask(ka, state, params)
            state, _ = strategy.tell(kt, x, jax.vmap(lambda z: f(z - target))(x), state, params)
            return state, None

        state, _ = jax.lax.scan(gen, state, jax.random.split(k1, generations))
        return f(strategy.get_mean(state) - target)

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), seeds)))


def sphere(z):
    return jnp.sum(z * z)


def rastrigin(z):
    return 10.0 * z.shape[-1] + jnp.sum(z * z - 10.0 * jnp.cos(2.0 * jnp.pi * z))


def test_cbo_converges_on_a_quadratic():
    final = _runs("CBO", sphere, dim=10, popsize=32, generations=100, seeds=4, sigma=2.0, shift=1.5)
    assert np.all(final < 1e-4), final  # from f = 22.5 at the start


def test_cbo_finds_the_global_minimum_of_rastrigin():
    # 2-D Rastrigin shifted to (1.5, 1.5), particles drawn around 0: local minima every unit, f = 0 only at the
    # shift. Most runs end in the global minimum, none farther than the nearest ring of local minima (f ~ 1).
    final = _runs("CBO", rastrigin, dim=2, popsize=64, generations=60, seeds=8, sigma=2.0, shift=1.5)
    assert np.median(final) < 0.01 and np.all(final < 2.1), final
    random_search = rastrigin(jax.random.normal(jax.random.key(1), (64 * 60, 2)) * 2.0 - 1.5)
    assert np.median(final) < float(jnp.min(random_search)) or np.median(final) < 1e-3  # beats random search


def test_cma_es_keeps_its_own_recombination_weights():
    # make_strategy must not hand CMA-ES centered ranks as weights (the best members would get negative ones).
    final = _runs("CMA_ES", sphere, dim=10, popsize=32, generations=100, seeds=2, sigma=2.0, shift=1.5)
    assert np.all(final < 1e-6), final


def test_cbo_is_chosen_by_name_in_both_configs():
    assert "CBO" in STRATEGY_NAMES and "CMA_ES" in STRATEGY_NAMES
    rl = load_config(RLSearchConfig, overrides=["es.strategy=CBO", "es.cbo_alpha=5", "es.cbo_dt=0.25"])
    assert rl.es.strategy == "CBO"
    assert cbo_options(rl.es) == {"alpha": 5.0, "lambda": cbo.DEFAULT_LAMBDA, "sigma": cbo.DEFAULT_SIGMA,
                                  "dt": 0.25}
    ur = load_config(SearchConfig, overrides=["refine.strategy=CBO", "refine.cbo_lambda=0.5", "refine.top_k=1"])
    strategy, params = _strategy(ur.refine, 8, 3)
    assert isinstance(strategy, cbo.CBO)
    assert (params.drift, params.alpha, params.std_init) == (0.5, cbo.DEFAULT_ALPHA, ur.refine.sigma)
    assert RefineSection().cbo_dt == cbo.DEFAULT_DT
    with pytest.raises(ConfigError, match="cbo_dt"):
        load_config(RLSearchConfig, overrides=["es.cbo_dt=0"])
    with pytest.raises(ConfigError, match="cbo_sigma"):
        load_config(SearchConfig, overrides=["refine.cbo_sigma=-1"])
    with pytest.raises(ValueError, match="unknown CBO option"):
        make_strategy("CBO", 4, jnp.zeros(2), sigma=1.0, lr=0.0, antithetic=False, rank_shaping=True,
                      cbo={"beta": 1.0})
    with pytest.raises(ValueError, match="dt must be > 0"):
        cbo.CBO(4, jnp.zeros(2), dt=0.0)


def test_es_weight_decay_pulls_the_mean_toward_zero_where_the_fitness_is_flat():
    # es.weight_decay (RL search): AdamW on the Open_ES mean. Flat fitness gives a zero gradient, so Adam alone
    # leaves the mean where it is and the decay shrinks it by lr x weight_decay per generation.
    mean0 = jnp.array([1.0, -2.0, 0.5])
    out = {}
    for wd in (0.0, 0.5):
        strategy = make_strategy("Open_ES", 4, mean0, sigma=0.1, lr=0.1, antithetic=True, rank_shaping=False,
                                 weight_decay=wd)
        params = strategy.default_params
        state = strategy.init(jax.random.key(0), mean0, params)
        for g in range(3):
            population, state = strategy.ask(jax.random.key(g + 1), state, params)
            state = strategy.tell(jax.random.key(g + 1), population, jnp.zeros(4), state, params)[0]
        out[wd] = np.asarray(state.mean)
    np.testing.assert_allclose(out[0.0], mean0, rtol=1e-6)
    np.testing.assert_allclose(out[0.5], mean0 * (1 - 0.1 * 0.5) ** 3, rtol=1e-5)
    with pytest.raises(ValueError, match="has no optimizer"):
        make_strategy("CMA_ES", 4, mean0, sigma=0.1, lr=0.1, antithetic=False, rank_shaping=True, weight_decay=0.5)
    with pytest.raises(ValueError, match="has no optimizer"):
        make_strategy("CBO", 4, mean0, sigma=0.1, lr=0.1, antithetic=False, rank_shaping=True, weight_decay=0.5)
    assert load_config(RLSearchConfig, overrides=["es.weight_decay=0.5"]).es.weight_decay == 0.5
    with pytest.raises(ConfigError, match="strategy CBO has no optimizer"):
        load_config(RLSearchConfig, overrides=["es.strategy=CBO", "es.weight_decay=0.5"])
