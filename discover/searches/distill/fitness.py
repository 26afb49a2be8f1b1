"""The two fitnesses of a drift program (lower is better; see the package doc).

:class:`FitScorer` (fitness 1): the error of the program's constrained drift against the network on the
recorded states, ``mse(drift) / mean(net^2) + slope_weight * mse(d/dr) / mean((d net/dr)^2)`` plus
``parsimony`` per live statement (with ``samples.uniform_share`` > 0, that relative error is computed on the
recorded and on the uniform draws separately, each normalized by its own scale, and mixed in the proportions
``1 - uniform_share : uniform_share``: the network's tiny drift where PPO goes is not drowned by its large one
far from r = 1); one jitted call scores a batch of encoded programs (fixed shapes: it
compiles once per run, and ES refinement only swaps the constants). :class:`RLCheck` (fitness 2): PPO trained
with the program as its drift on the drift's env and horizon, on the seeds the samples were recorded with;
the normalized return (PPO = 1). Its trainer takes the encoded program as the drift's parameters, so it
compiles once for every program (and for PPO's, the normalizer).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from discover.language.drift_program import (
    DriftProgram,
    Encoded,
    encode,
    encoded_drift,
    live_mask,
    stack,
    value_and_slope,
)
from discover.searches.distill.samples import FIELDS, Source, check_keys
from envs import rl_envs
from envs.ppo import make_train

TINY = 1e-12


@dataclasses.dataclass
class FitScorer:
    """Fitness 1 on one part of the samples (``fit`` or ``holdout``)."""

    inputs: tuple[np.ndarray, ...]  # r, A, progress, log_n: [N] each
    value: np.ndarray  # the network's drift [N]
    slope: np.ndarray  # its d/dr [N]
    max_len: int
    cap: float
    slope_weight: float
    parsimony: float
    worst: float
    batch: int
    uniform: np.ndarray | None = None  # [N] bool: a uniform draw (None: none is)
    uniform_share: float = 0.0

    @classmethod
    def on(cls, samples: dict, part: str, source: Source, value, slope, **kw) -> FitScorer:
        r, a, n = (np.asarray(samples[f"{part}_{f}"], np.float32) for f in FIELDS)
        uniform = samples.get(f"{part}_uniform")
        return cls(inputs=(r, a, n, np.full_like(r, source.log_n)), value=value, slope=slope,
                   uniform=None if uniform is None else np.asarray(uniform, bool), **kw)

    @property
    def visited(self) -> np.ndarray:
        """[N] bool: the samples recorded from PPO (not uniform draws)."""
        return np.ones(len(self.value), bool) if self.uniform is None else ~self.uniform

    def weights(self, target: np.ndarray) -> np.ndarray:
        """Per-sample weights w with ``sum(w (x - target)^2)`` = the groups' relative mean squared errors
        ``mean_g((x - target)^2) / mean_g(target^2)`` mixed in the proportions of ``uniform_share``."""
        target = np.asarray(target, np.float64)
        groups = [(self.visited, 1.0 - self.uniform_share), (~self.visited, self.uniform_share)]
        groups = [(mask, share) for mask, share in groups if mask.any()]
        total = sum(share for _, share in groups)
        w = np.zeros(len(target), np.float64)
        for mask, share in groups:
            share = share / total if total > 0 else 1.0 / len(groups)
            w[mask] = share / (mask.sum() * (np.mean(np.square(target[mask])) + TINY))
        return w.astype(np.float32)

    @functools.cached_property
    def _errors(self):
        r, a, n, h = (jnp.asarray(x) for x in self.inputs)
        value, slope = jnp.asarray(self.value), jnp.asarray(self.slope)
        w_value, w_slope = jnp.asarray(self.weights(self.value)), jnp.asarray(self.weights(self.slope))

        def one(enc: Encoded):
            d, g = value_and_slope(enc, r, a, n, h, self.cap)
            err = jnp.sum(w_value * jnp.square(d - value))
            return err + self.slope_weight * jnp.sum(w_slope * jnp.square(g - slope))

        return jax.jit(jax.vmap(one))

    def errors(self, encoded: Encoded) -> np.ndarray:
        """The error part of fitness 1 for a stacked batch of ``self.batch`` encoded programs (worst where
        non-finite, capped at worst)."""
        err = np.asarray(self._errors(encoded), np.float64)
        return np.where(np.isfinite(err), np.minimum(err, self.worst), self.worst)

    def score(self, programs: Sequence[DriftProgram]) -> np.ndarray:
        """Fitness 1 of each program (error + parsimony per live statement), in batches of ``self.batch``."""
        out = []
        for start in range(0, len(programs), self.batch):
            chunk = list(programs[start:start + self.batch])
            encoded = [encode(p, self.max_len) for p in chunk]
            encoded += [encoded[0]] * (self.batch - len(encoded))
            err = self.errors(stack(encoded))[: len(chunk)]
            sizes = np.array([sum(live_mask(p)) for p in chunk], np.float64)
            out.append(np.minimum(err + self.parsimony * sizes, self.worst))
        return np.concatenate(out) if out else np.zeros((0,), np.float64)

    def error_of(self, program: DriftProgram) -> float:
        """The error part of fitness 1 of one program (no parsimony term)."""
        encoded = [encode(program, self.max_len)] * self.batch
        return float(self.errors(stack(encoded))[0])

    def score_constants(self, program: DriftProgram, constants: np.ndarray) -> np.ndarray:
        """Fitness 1 of ``program`` with each row of ``constants`` [batch, n_constants] in its constants."""
        enc = encode(program, self.max_len)
        k = constants.shape[1]
        consts = np.repeat(enc.consts[None], len(constants), axis=0)
        consts[:, :k] = constants
        batch = Encoded(*(np.repeat(np.asarray(x)[None], len(constants), axis=0) for x in enc[:3]),
                        consts.astype(np.float32), np.repeat(enc.out[None], len(constants)))
        err = self.errors(batch)
        return np.minimum(err + self.parsimony * sum(live_mask(program)), self.worst)


class RLCheck:
    """Fitness 2: normalized return of PPO trained with a program as its drift (PPO's own = 1)."""

    def __init__(self, source: Source, seeds: int, seed: int, cap: float):
        self.source, self.cap = source, cap
        self.keys = check_keys(seed, seeds)
        drift_fn = lambda enc, r, a, n, h: encoded_drift(enc, r, a, n, h, cap)
        self._train = jax.jit(jax.vmap(make_train(source.env, source.ppo, drift_fn), in_axes=(0, None)))
        self.floor = rl_envs.spec(source.env).return_floor
        self.ppo_return = float("nan")

    def returns(self, program: DriftProgram, max_len: int) -> np.ndarray:
        """Final return of each seed (NaN where training produced non-finite parameters)."""
        metrics = jax.device_get(self._train(self.keys, encode(program, max_len)))
        finals = np.asarray(metrics["final_return"], np.float64)
        return np.where(np.asarray(metrics["finite"]) & np.isfinite(finals), finals, np.nan)

    def normalize(self, returns) -> float:
        """Mean normalized return (PPO = 1, the env's floor = 0); -inf if any run failed."""
        returns = np.asarray(returns, np.float64)
        if not np.isfinite(returns).all():
            return float("-inf")
        return float(rl_envs.normalize_return(returns.mean(), self.ppo_return, self.floor))

    def score(self, program: DriftProgram, max_len: int) -> float:
        return self.normalize(self.returns(program, max_len))
