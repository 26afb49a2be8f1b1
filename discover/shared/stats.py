"""Statistics for claims, shared by update-rule and RL transfer: paired comparisons on common seeds, interquartile
means with stratified-bootstrap intervals (rliable's method), the probability of improvement, and verdicts.

Everything is built on ``scipy.stats`` (``ttest_rel``, ``bootstrap``, ``trim_mean``); nothing here hand-rolls a
distribution. Resampling uses a NumPy generator seeded by the caller, so a report is reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 2000
# Differences below this fraction of the means are float32 rounding, not an effect: an AdamW program and optax's
# AdamW, the same algorithm through two code paths, differed by 1e-7 of the loss on every seed, and a t-interval
# on such constant offsets excludes 0.
ROUNDING = 1e-5


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """``a`` against ``b`` on the same seeds: the mean of the per-seed differences ``a - b`` with its interval."""

    mean_a: float
    mean_b: float
    difference: float  # mean of a - b
    ci: tuple[float, float]  # confidence interval of the mean difference
    n: int
    confidence: float = CONFIDENCE

    @property
    def ratio(self) -> float:
        """mean(a) / mean(b), for tables (the verdict uses the paired interval, not this)."""
        return self.mean_a / self.mean_b if self.mean_b else math.inf

    def verdict(self, lower_is_better: bool = True) -> str:
        """``better`` / ``worse`` when the interval excludes 0, else ``tie`` (``a``'s verdict against ``b``); also
        ``tie`` when the whole interval lies within float32 rounding (:data:`ROUNDING` of the means) of 0."""
        lo, hi = self.ci
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return "tie"
        if max(abs(lo), abs(hi)) <= ROUNDING * max(abs(self.mean_a), abs(self.mean_b)):
            return "tie"  # the whole interval is within float32 rounding of 0
        if hi < 0:
            return "better" if lower_is_better else "worse"
        if lo > 0:
            return "worse" if lower_is_better else "better"
        return "tie"

    def to_json(self) -> dict:
        return {"mean_a": self.mean_a, "mean_b": self.mean_b, "difference": self.difference, "ci": list(self.ci),
                "n": self.n, "confidence": self.confidence}


def paired(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedComparison:
    """The paired t-interval of mean(a - b) (``scipy.stats.ttest_rel``); ``a[i]`` and ``b[i]`` share seed i.
    With fewer than two seeds, or no spread at all, the interval is degenerate (a point or infinite)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired: a and b must be 1-D of the same length, got {a.shape} and {b.shape}")
    diff = a - b
    n = len(diff)
    mean = float(diff.mean()) if n else math.nan
    if n < 2:
        ci = (-math.inf, math.inf)
    elif np.all(diff == diff[0]):
        ci = (mean, mean)  # no spread: t is undefined, the difference is exactly known on these seeds
    else:
        result = stats.ttest_rel(a, b)
        interval = result.confidence_interval(confidence_level=confidence)
        ci = (float(interval.low), float(interval.high))
    return PairedComparison(float(a.mean()), float(b.mean()), mean, ci, n, confidence)


def iqm(x: Sequence[float]) -> float:
    """The interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``)."""
    return float(stats.trim_mean(np.asarray(x, np.float64), 0.25))


def bootstrap_ci(x: Sequence[float], statistic=np.mean, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of ``statistic`` over the values ``x`` (``scipy.stats.bootstrap``)."""
    x = np.asarray(x, np.float64)
    if len(x) < 2 or np.all(x == x[0]):
        value = float(statistic(x)) if len(x) else math.nan
        return (value, value)
    res = stats.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", vectorized=False, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def stratified_bootstrap(cells: Sequence[Sequence[float]], statistic=None, confidence: float = CONFIDENCE,
                         n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """An aggregate over several cells (e.g. env x horizon) with rliable's stratified bootstrap: each
    resample redraws the runs of every cell within that cell, then pools them. ``statistic`` (default
    :func:`iqm`) is applied to the pooled values. Returns (point estimate, interval)."""
    statistic = statistic or iqm
    cells = [np.asarray(c, np.float64) for c in cells if len(c)]
    if not cells:
        return math.nan, (math.nan, math.nan)
    point = float(statistic(np.concatenate(cells)))
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for i in range(n_resamples):
        values[i] = statistic(np.concatenate([c[rng.integers(0, len(c), len(c))] for c in cells]))
    alpha = (1.0 - confidence) / 2.0
    return point, (float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha)))


def paired_bootstrap(x: Sequence[float], y: Sequence[float], statistic: Callable[[np.ndarray, np.ndarray], float],
                     confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                     seed: int = 0) -> tuple[float, tuple[float, float]]:
    """``statistic(x, y)`` with a percentile interval that redraws the pairs (x_i, y_i) jointly
    (``scipy.stats.bootstrap``, paired): for two methods trained on the same seeds, where y's part of the
    statistic (a normalizer, a reference) is as uncertain as x's."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    point = float(statistic(x, y))
    if len(x) < 2:
        return point, (point, point)
    result = stats.bootstrap((x, y), statistic, paired=True, vectorized=False, n_resamples=n_resamples,
                             confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return point, (float(result.confidence_interval.low), float(result.confidence_interval.high))


def probability_of_improvement(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE,
                               n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """P(X > Y) for a run X of one method and a run Y of another (higher is better), ties counting one half:
    the Mann-Whitney U statistic over (n * m), with a bootstrap interval that redraws both samples."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def prob(a, b):
        return float(stats.mannwhitneyu(a, b, alternative="two-sided").statistic) / (len(a) * len(b))

    point = prob(x, y)
    if len(x) < 2 or len(y) < 2:
        return point, (point, point)
    rng = np.random.default_rng(seed)
    values = np.array([prob(x[rng.integers(0, len(x), len(x))], y[rng.integers(0, len(y), len(y))])
                       for _ in range(n_resamples)])
    alpha = (1.0 - confidence) / 2.0
    return point, (float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha)))


__all__ = [
    "CONFIDENCE",
    "PairedComparison",
    "bootstrap_ci",
    "iqm",
    "paired",
    "paired_bootstrap",
    "probability_of_improvement",
    "stratified_bootstrap",
]
