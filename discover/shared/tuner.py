"""Batch Bayesian optimization (Frazier 2018, "A Tutorial on Bayesian Optimization") for hyperparameter tuning.

A Gaussian process (scikit-learn's ``GaussianProcessRegressor``: a constant times a Matern-5/2 kernel with one
length scale per dimension, plus a white-noise kernel for the seed-to-seed noise; targets normalized) models the
objective on the unit cube that the search box maps to; the next points maximize expected improvement (EI,
Frazier's eq. 7, for minimization). Proposals come in batches so that each round is ONE vmapped trainer call:
within a batch, every point after the first is chosen by the *kriging believer* heuristic (the GP is told its
own posterior mean at the points already chosen, kernel hyperparameters held, and EI is maximized again), so
the batch spreads out instead of repeating the best point.

The first rounds are a Latin-hypercube design (``scipy.stats.qmc``); EI is maximized over random candidates in
the cube plus Gaussian perturbations of the best points seen (a cheap, deterministic inner search that is
ample in the 2 dimensions of lr x weight decay). Failed trials (NaN or inf) are told as the worst finite
value seen plus the observed range, so the model learns to avoid them. Everything random comes from ``seed``.

    bo = BayesOpt([(-4.0, -1.0), (-4.0, 0.0)], seed=0)     # e.g. log10 lr and log10 wd
    for points in rounds:  x = bo.ask(q); bo.tell(x, f(x))  # see plan() for q and the number of rounds
    x_best, y_best = bo.best()
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats
from scipy.stats import qmc
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

EI_XI = 0.01  # exploration margin of EI, in units of the normalized target's standard deviation
N_CANDIDATES = 2048  # random candidates per EI maximization (plus local ones around the best points)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a budget is spent: ``rounds`` calls of ``batch`` trials each, the first ``init_rounds`` of them a
    Latin-hypercube design; the last round may use only ``last`` of its ``batch`` slots (the others are
    padding, so that every round has the same shape and reuses one compilation)."""

    budget: int
    batch: int
    rounds: int
    init_rounds: int
    last: int


def plan(budget: int, dims: int, batch: int | None = None) -> Plan:
    """A plan for ``budget`` trials in ``dims`` dimensions: by default about 4 rounds (batch =
    ceil(budget / 4), at least 2), with at least ``2 * dims`` (and at least one round of) initial design points."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if batch is None:
        batch = max(2, math.ceil(budget / 4))
    batch = max(1, min(batch, budget))
    rounds = math.ceil(budget / batch)
    init_rounds = min(rounds, max(1, math.ceil(2 * dims / batch)))
    return Plan(budget=budget, batch=batch, rounds=rounds, init_rounds=init_rounds,
                last=budget - batch * (rounds - 1))


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """EI for minimization: E[max(best - xi - Y, 0)] with Y ~ N(mu, sd^2) (0 where sd = 0 and mu >= best - xi)."""
    mu, sd = np.asarray(mu, np.float64), np.asarray(sd, np.float64)
    gain = best - xi - mu
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, gain / sd, 0.0)
    ei = gain * stats.norm.cdf(z) + sd * stats.norm.pdf(z)
    return np.where(sd > 0, ei, np.maximum(gain, 0.0))


class BayesOpt:
    """Batch BO over the box ``bounds`` (a (low, high) pair per dimension, in the coordinates searched, e.g.
    log10 lr), minimizing. ``ask(n)`` proposes n points, ``tell(x, y)`` records their values."""

    def __init__(self, bounds: Sequence[tuple[float, float]], seed: int = 0, xi: float = EI_XI,
                 n_candidates: int = N_CANDIDATES):
        self.low = np.asarray([b[0] for b in bounds], np.float64)
        self.high = np.asarray([b[1] for b in bounds], np.float64)
        if self.low.ndim != 1 or not len(self.low) or np.any(~np.isfinite(self.low)) \
                or np.any(~np.isfinite(self.high)) or np.any(self.high < self.low):
            raise ValueError(f"BayesOpt: bounds must be finite (low, high) pairs with low <= high, got {bounds}")
        self.dims = len(self.low)
        self.xi = xi
        self.n_candidates = n_candidates
        self.rng = np.random.default_rng(seed)
        self._seed = seed
        self.x = np.zeros((0, self.dims))  # unit-cube coordinates of every trial told
        self.y = np.zeros((0,))
        self._design: list[np.ndarray] = []  # initial-design points not asked yet

    # --- coordinates ---------------------------------------------------------------------------------------
    def _to_unit(self, x: np.ndarray) -> np.ndarray:
        span = np.where(self.high > self.low, self.high - self.low, 1.0)
        return (np.asarray(x, np.float64) - self.low) / span

    def _from_unit(self, u: np.ndarray) -> np.ndarray:
        return self.low + np.clip(u, 0.0, 1.0) * (self.high - self.low)

    # --- the model -----------------------------------------------------------------------------------------
    def _targets(self) -> np.ndarray:
        y = self.y.copy()
        ok = np.isfinite(y)
        if ok.any():
            lo, hi = y[ok].min(), y[ok].max()
            y[~ok] = hi + max(hi - lo, 1e-3 * max(1.0, abs(hi)))
        return y

    def _gp(self) -> GaussianProcessRegressor:
        kernel = (ConstantKernel(1.0, (1e-3, 1e3))
                  * Matern(length_scale=np.full(self.dims, 0.3), length_scale_bounds=(1e-2, 1e1), nu=2.5)
                  + WhiteKernel(1e-3, (1e-8, 1e-1)))
        return GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=2,
                                        random_state=int(self.rng.integers(2**31 - 1)))

    @staticmethod
    def _fit(gp: GaussianProcessRegressor, x: np.ndarray, y: np.ndarray) -> GaussianProcessRegressor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return gp.fit(x, y)

    def fit(self) -> GaussianProcessRegressor:
        """The GP fitted (kernel hyperparameters by maximum likelihood) to every trial told so far."""
        return self._fit(self._gp(), self.x, self._targets())

    def _candidates(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        uniform = self.rng.random((self.n_candidates, self.dims))
        top = x[np.argsort(y)[: min(4, len(y))]]
        local = (top[:, None, :] + 0.05 * self.rng.normal(size=(len(top), 64, self.dims))).reshape(-1, self.dims)
        return np.clip(np.concatenate([uniform, local]), 0.0, 1.0)

    # --- ask / tell ----------------------------------------------------------------------------------------
    def design(self, n: int) -> np.ndarray:
        """``n`` Latin-hypercube points (search coordinates)."""
        return self._from_unit(qmc.LatinHypercube(d=self.dims, seed=self.rng).random(n))

    def ask(self, n: int, initial: bool | None = None) -> np.ndarray:
        """``n`` points to try next (search coordinates, shape (n, dims)): a Latin-hypercube design while
        ``initial`` (default: until some finite value has been told; always while none has), else EI with
        kriging believer (the believer GPs keep the fitted kernel: not re-optimized)."""
        if n < 1:
            raise ValueError(f"ask: n must be >= 1, got {n}")
        if initial or not np.isfinite(self.y).any():
            return self.design(n)
        gp = self.fit()
        x, y = self.x.copy(), self._targets()
        best = float(y.min())
        chosen = []
        for k in range(n):
            if k:
                believer = GaussianProcessRegressor(kernel=gp.kernel_, normalize_y=True, optimizer=None)
                model = self._fit(believer, x, y)
            else:
                model = gp
            cand = self._candidates(x, y)
            mu, sd = model.predict(cand, return_std=True)
            scale = float(np.std(y)) if len(y) > 1 and np.std(y) > 0 else 1.0
            ei = expected_improvement(mu, sd, best, self.xi * scale)
            u = cand[int(np.argmax(ei))]
            chosen.append(u)
            x = np.vstack([x, u])
            y = np.append(y, float(model.predict(u[None])[0]))  # the believer: its own posterior mean
        return self._from_unit(np.asarray(chosen))

    def tell(self, x: np.ndarray, y: np.ndarray) -> None:
        """Records trials: ``x`` (n, dims) in search coordinates, ``y`` (n,) values (NaN/inf = failed)."""
        x = np.atleast_2d(np.asarray(x, np.float64))
        y = np.asarray(y, np.float64).reshape(-1)
        if x.shape != (len(y), self.dims):
            raise ValueError(f"tell: x must be (n, {self.dims}) for n = {len(y)} values, got {x.shape}")
        self.x = np.vstack([self.x, self._to_unit(x)])
        self.y = np.concatenate([self.y, np.where(np.isnan(y), np.inf, y)])

    def best(self) -> tuple[np.ndarray, float]:
        """The best trial told so far (search coordinates, value); value inf when every trial failed."""
        if not len(self.y):
            raise ValueError("best: nothing told yet")
        i = int(np.argmin(self.y))
        return self._from_unit(self.x[i]), float(self.y[i])


def minimize(fn: Callable[[np.ndarray], np.ndarray], bounds: Sequence[tuple[float, float]], budget: int,
             batch: int | None = None, seed: int = 0) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Minimizes ``fn`` (a batch of points (q, dims) -> values (q,)) over ``bounds`` with ``budget`` trials
    in rounds of one ``fn`` call each (:func:`plan`). Returns (best x, best value, every x, every value); a
    short last round is padded to the batch with repeats of its first point (their values are discarded)."""
    bo = BayesOpt(bounds, seed=seed)
    p = plan(budget, bo.dims, batch)
    init = bo.design(p.init_rounds * p.batch)
    for r in range(p.rounds):
        x = init[r * p.batch:(r + 1) * p.batch] if r < p.init_rounds else bo.ask(p.batch, initial=False)
        used = p.last if r == p.rounds - 1 else p.batch
        x = x[:used]
        padded = np.concatenate([x, np.repeat(x[:1], p.batch - used, axis=0)]) if used < p.batch else x
        y = np.asarray(fn(padded), np.float64)[:used]
        bo.tell(x, y)
    x_best, y_best = bo.best()
    return x_best, y_best, bo._from_unit(bo.x), bo.y.copy()


__all__ = ["BayesOpt", "Plan", "expected_improvement", "minimize", "plan"]
