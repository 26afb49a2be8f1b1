"""Is a learned drift's caution learned, or is it what weight noise alone does to its family?

    JAX_PLATFORMS=cpu python benchmarks/drift_noise.py DRIFT.npz [DRIFT.npz ...] [--draws 10]

For each drift file: on (r, A) drawn like the states PPO's updates visit (log r ~ N(0, 0.15), A ~ N(0, 1)), at
n/N = 0.5 and the 1x lifetime of CartPole (195 updates), the mean of drift - PPO's drift for

* the learned parameters,
* the family's initial parameters (seed 0, as a search starts),
* ``--draws`` random walks: the initial parameters plus Gaussian noise whose per-array RMS equals the learned
  parameters' displacement from the initial ones (same size of move, no direction from fitness).

A ``relu(net)`` drift (talpo / lpo, with or without PPO's drift added) can only gain penalty from noise, so its
random walks sit above PPO; ``ppo_schedule`` moves both ways. PPO's own mean drift on these states is printed
for scale.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from discover.shared.drift_io import load_drift
from search_spaces.drift import ppo_drift

CARTPOLE_1X_UPDATES = 195  # 1e5 env steps / (4 envs x 128 steps)


def excess_over_ppo(family, params, ratio, advantage, progress: float = 0.5) -> float:
    log_n = jnp.float32(math.log10(CARTPOLE_1X_UPDATES))
    drift = jax.vmap(lambda r, a: family.apply(params, r, a, jnp.float32(progress), log_n))(ratio, advantage)
    return float(jnp.mean(drift - ppo_drift(ratio, advantage, family.config.ppo_clip)))


def random_walks(start, learned, draws: int, seed: int = 100) -> list:
    """``start`` plus noise of the learned displacement's per-array RMS, ``draws`` times."""
    leaves0, treedef = jax.tree.flatten(start)
    sizes = [jnp.sqrt(jnp.mean((a - b) ** 2)) for a, b in zip(jax.tree.leaves(learned), leaves0)]
    walks = []
    for d in range(draws):
        keys = jax.random.split(jax.random.PRNGKey(seed + d), len(leaves0))
        walks.append(treedef.unflatten([w + s * jax.random.normal(k, w.shape)
                                        for k, w, s in zip(keys, leaves0, sizes)]))
    return walks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("drifts", nargs="+")
    parser.add_argument("--draws", type=int, default=10)
    args = parser.parse_args()
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    ratio = jnp.exp(0.15 * jax.random.normal(k1, (20000,)))
    advantage = jax.random.normal(k2, (20000,))
    print(f"PPO's mean drift on these states: {float(jnp.mean(ppo_drift(ratio, advantage))):.4f}")
    print("| drift | family | learned - PPO | initial - PPO | random walks of the same size: median [min, max] |")
    print("|---|---|---:|---:|---|")
    for path in args.drifts:
        family, params, _ = load_drift(path)
        start = family.init(jax.random.PRNGKey(0))
        walks = [excess_over_ppo(family, w, ratio, advantage) for w in random_walks(start, params, args.draws)]
        print(f"| {path} | {family.config.family} | {excess_over_ppo(family, params, ratio, advantage):+.4f} | "
              f"{excess_over_ppo(family, start, ratio, advantage):+.4f} | {np.median(walks):+.4f} "
              f"[{min(walks):+.4f}, {max(walks):+.4f}] |")


if __name__ == "__main__":
    main()
