"""The shared statistics: intervals cover known truths at about their nominal rate; verdicts follow them."""

from __future__ import annotations

import numpy as np
import pytest

from discover.shared import stats


def test_paired_interval_covers_the_true_difference_at_its_nominal_rate():
    rng = np.random.default_rng(0)
    trials, n, true_difference = 2000, 5, 0.3
    covered = 0
    for _ in range(trials):
        seed_effect = rng.normal(0.0, 2.0, n)  # shared by both arms: pairing removes it
        a = 1.0 + true_difference + seed_effect + rng.normal(0.0, 0.5, n)
        b = 1.0 + seed_effect + rng.normal(0.0, 0.5, n)
        lo, hi = stats.paired(a, b).ci
        covered += lo <= true_difference <= hi
    assert 0.93 <= covered / trials <= 0.97


def test_pairing_removes_the_shared_seed_effect():
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0.0, 10.0, 8)
    a, b = seed_effect + 1.0 + rng.normal(0, 0.01, 8), seed_effect
    comparison = stats.paired(a, b)
    assert comparison.verdict(lower_is_better=True) == "worse" and comparison.verdict(False) == "better"
    assert comparison.ci[0] > 0.9 and comparison.ci[1] < 1.1


def test_verdict_is_a_tie_when_the_interval_holds_zero_and_with_one_seed():
    assert stats.paired([1.0, 2.0, 3.0], [1.1, 1.9, 3.05]).verdict() == "tie"
    assert stats.paired([1.0], [2.0]).verdict() == "tie"  # one seed: no interval, no claim
    assert stats.paired([1.0, 1.0], [2.0, 2.0]).verdict() == "better"  # no spread: exactly known


def test_a_difference_within_float32_rounding_is_a_tie():
    # The AdamW program against optax's AdamW (the same algorithm, two code paths) on breast cancer: 5 seeds whose
    # losses differ by about 1e-7 relative, consistently enough for a t-interval to exclude 0.
    b = np.array([0.0514, 0.0523, 0.0509, 0.0531, 0.0518])
    a = b * (1 - np.array([6e-7, 4e-7, 7e-7, 5e-7, 6e-7]))
    comparison = stats.paired(a, b)
    assert comparison.ci[1] < 0  # the interval alone would call it a win
    assert comparison.verdict() == "tie"
    assert stats.paired(b * 0.99 + np.array([0, 1e-5, -1e-5, 2e-5, 0]), b).verdict() == "better"  # 1%: an effect


def test_paired_refuses_unpaired_inputs():
    with pytest.raises(ValueError, match="same length"):
        stats.paired([1.0, 2.0], [1.0])


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm([0, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(np.mean([2, 3, 4, 5]))


def test_bootstrap_interval_covers_a_known_mean_at_about_its_nominal_rate():
    rng = np.random.default_rng(2)
    trials, covered = 300, 0
    for t in range(trials):
        x = rng.normal(5.0, 1.0, 30)
        lo, hi = stats.bootstrap_ci(x, seed=t, n_resamples=500)
        covered += lo <= 5.0 <= hi
    assert 0.90 <= covered / trials <= 0.98


def test_stratified_bootstrap_resamples_within_cells():
    cells = [np.full(10, 1.0), np.full(10, 3.0)]  # no spread inside a cell: every resample pools the same values
    point, (lo, hi) = stats.stratified_bootstrap(cells, statistic=np.mean, n_resamples=200)
    assert point == lo == hi == pytest.approx(2.0)
    rng = np.random.default_rng(3)
    noisy = [rng.normal(1.0, 0.2, 16), rng.normal(2.0, 0.2, 16)]
    point, (lo, hi) = stats.stratified_bootstrap(noisy, n_resamples=500)
    assert lo < point < hi and lo > 1.0 and hi < 2.0


def test_probability_of_improvement():
    assert stats.probability_of_improvement([2, 3, 4], [0, 1, 1.5])[0] == 1.0
    assert stats.probability_of_improvement([1, 1], [1, 1])[0] == 0.5
    rng = np.random.default_rng(4)
    p, (lo, hi) = stats.probability_of_improvement(rng.normal(1, 1, 40), rng.normal(0, 1, 40), n_resamples=300)
    assert 0.6 < p < 0.9 and lo < p < hi


def test_a_normalizer_drawn_from_the_same_seeds_is_uncertain_in_the_interval():
    """A method equal to PPO in distribution, scored against PPO's 16-run mean: the paired bootstrap, which redraws
    both, covers the true normalized IQM at about its nominal rate; holding the normalizer fixed under-covers."""
    rng = np.random.default_rng(1)
    population = rng.normal(100.0, 30.0, 1_000_000)
    truth = stats.iqm((population - 20.0) / (100.0 - 20.0))

    def normalized_iqm(a, b):
        return stats.iqm((a - 20.0) / (b.mean() - 20.0))

    joint = fixed = 0
    trials = 120
    for t in range(trials):
        x, y = rng.normal(100.0, 30.0, 16), rng.normal(100.0, 30.0, 16)
        point, (lo, hi) = stats.paired_bootstrap(x, y, normalized_iqm, n_resamples=300, seed=t)
        assert point == pytest.approx(stats.iqm((x - 20.0) / (y.mean() - 20.0)))
        joint += lo <= truth <= hi
        _, (lo, hi) = stats.stratified_bootstrap([(x - 20.0) / (y.mean() - 20.0)], n_resamples=300, seed=t)
        fixed += lo <= truth <= hi
    assert joint / trials >= 0.85 and joint - fixed >= 0.05 * trials, (joint, fixed)
