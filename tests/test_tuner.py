"""The Bayesian-optimization tuner (discover.shared.tuner): EI, batch plans, and a 2-D function with a known minimum."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from discover.shared import tuner

BRANIN_MIN = 0.397887  # at (-pi, 12.275), (pi, 2.275), (9.42478, 2.475)
BRANIN_BOX = [(-5.0, 10.0), (0.0, 15.0)]


def branin(x):
    x1, x2 = x[:, 0], x[:, 1]
    b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10


def test_expected_improvement_is_frazier_eq_7():
    mu, sd, best = np.array([0.0, 1.0, 2.0, 1.5]), np.array([1.0, 0.5, 0.1, 0.0]), 1.0
    z = (best - mu[:3]) / sd[:3]
    want = (best - mu[:3]) * stats.norm.cdf(z) + sd[:3] * stats.norm.pdf(z)
    got = tuner.expected_improvement(mu, sd, best)
    np.testing.assert_allclose(got[:3], want, rtol=1e-12)
    assert got[3] == 0.0 and tuner.expected_improvement(np.array([0.5]), np.array([0.0]), 1.0)[0] == 0.5
    # EI = E[max(best - Y, 0)] by Monte Carlo
    draws = np.random.default_rng(0).normal(1.0, 0.5, 400_000)
    assert got[1] == pytest.approx(np.maximum(best - draws, 0).mean(), rel=1e-2)


@pytest.mark.parametrize("budget,batch,rounds,init_rounds,last", [
    (8, 2, 4, 2, 2), (12, 3, 4, 2, 3), (16, 4, 4, 1, 4), (10, 3, 4, 2, 1), (1, 1, 1, 1, 1), (3, 2, 2, 2, 1)])
def test_plans_spend_exactly_the_budget_in_equal_rounds(budget, batch, rounds, init_rounds, last):
    p = tuner.plan(budget, dims=2)
    assert (p.batch, p.rounds, p.init_rounds, p.last) == (batch, rounds, init_rounds, last)
    assert p.batch * (p.rounds - 1) + p.last == budget
    with pytest.raises(ValueError, match="budget must be >= 1"):
        tuner.plan(0, dims=2)


def test_bo_finds_the_minimum_of_branin_and_beats_random_search():
    calls = []

    def f(x):
        calls.append(x.shape)
        return branin(x)

    finals = []
    for seed in range(4):
        calls.clear()
        x_best, y_best, xs, ys = tuner.minimize(f, BRANIN_BOX, budget=30, batch=5, seed=seed)
        assert calls == [(5, 2)] * 6  # six rounds, one batch call each, always the same shape
        assert len(xs) == len(ys) == 30 and y_best == ys.min() == pytest.approx(branin(x_best[None])[0])
        assert np.all((xs >= [-5, 0]) & (xs <= [10, 15]))
        finals.append(y_best)
    assert max(finals) < 0.6, finals  # the minimum is 0.3979; the box's values reach 308
    rng = np.random.default_rng(0)
    random_search = [branin(rng.uniform([-5, 0], [10, 15], (30, 2))).min() for _ in range(200)]
    assert np.median(finals) < np.percentile(random_search, 10)


def test_the_batch_spreads_out_and_failed_trials_are_avoided():
    # f fails (inf) on the right half of the box; BO must keep proposing on the left, and a batch must not
    # repeat one point (kriging believer).
    def f(x):
        return np.where(x[:, 0] > 0.0, np.inf, (x[:, 0] + 0.5) ** 2 + (x[:, 1] - 0.2) ** 2)

    _, y_best, xs, ys = tuner.minimize(f, [(-1.0, 1.0), (-1.0, 1.0)], budget=20, batch=4, seed=0)
    assert y_best < 0.02 and np.isinf(ys).any()
    bo = tuner.BayesOpt([(-1.0, 1.0), (-1.0, 1.0)], seed=1)
    bo.tell(xs, ys)
    batch = bo.ask(4)
    assert np.min([np.linalg.norm(a - b) for i, a in enumerate(batch) for b in batch[:i]]) > 1e-3
    assert np.mean(batch[:, 0] <= 0.0) >= 0.75
    # an unpadded short last round: budget 7 in batches of 3 -> calls of 3, 3, 3 (the last padded)
    shapes = []
    tuner.minimize(lambda x: shapes.append(x.shape) or np.sum(x * x, axis=1), [(-1.0, 1.0)], budget=7, batch=3)
    assert shapes == [(3, 1)] * 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="bounds"):
        tuner.BayesOpt([(1.0, 0.0)])
    bo = tuner.BayesOpt([(0.0, 1.0)])
    with pytest.raises(ValueError, match="nothing told"):
        bo.best()
    with pytest.raises(ValueError, match="must be"):
        bo.tell(np.zeros((2, 2)), np.zeros(2))
    # nothing finite told yet: asks fall back to the space-filling design
    bo.tell(np.array([[0.5]]), np.array([np.nan]))
    assert bo.ask(3).shape == (3, 1) and bo.best()[1] == np.inf
