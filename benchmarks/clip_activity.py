"""Does PPO's trust region bind? Where it does not, no drift function can differ from PPO.

    JAX_PLATFORMS=cpu python benchmarks/clip_activity.py [--envs CartPole-v1 Acrobot-v1 Catch-bsuite]
        [--horizons 0.25 1 4] [--seeds 8] [--set lr=1e-3 --set update_epochs=10]

For each env and lifetime (multiples of the env's 1e5-step reference, the transfer tables' 1x) under the env's
PureJaxRL PPO settings (plus any ``--set``), trains plain PPO on ``--seeds`` seeds and reports

* ``outside``: the share of the samples in PPO's minibatches whose ratio r left the band [0.8, 1.2],
* ``penalized``: the share where PPO's drift relu((r - clip(r)) A) is positive, the only samples where a drift
  acts that is zero with zero gradient inside the band;
* PPO's final return, and the paired difference (same seeds) of PPO without its clip (eps = 1e6, plain policy
  gradient on the same data) minus PPO, with a 95% t interval: if removing the clip changes nothing, the
  trust region is idle, and a PPO-shaped drift (``ppo_schedule``) can only tie PPO there.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from discover.infra.config import ConfigError, load_config
from envs import rl_envs
from envs.ppo import make_train
from search_spaces.drift import ppo_drift

REFERENCE_STEPS = 100_000  # the 1x lifetime of the CPU configs and transfer tables
PPO_CLIP = 0.2
NO_CLIP = 1e6


def measure(env_name: str, ppo, seeds: int) -> dict:
    counts = np.zeros(3)  # samples, outside the band, penalized

    def record(*sums):  # per-call sums, counted in the trainer: only three numbers cross to the host
        counts[:] += [np.sum(x) for x in sums]

    def drift_fn(params, ratio, advantage, progress, log_horizon):
        drift = ppo_drift(ratio, advantage, PPO_CLIP)
        jax.debug.callback(record, jnp.float32(ratio.size), jnp.sum(jnp.abs(ratio - 1.0) > PPO_CLIP),
                           jnp.sum(drift > 0))
        return drift

    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    recorded = make_train(env_name, ppo, drift_fn)
    ppo_returns = np.asarray(jax.jit(jax.vmap(lambda k: recorded(k, None)))(keys)["final_return"])
    no_clip = make_train(env_name, ppo, None, plain_ppo_clip_eps=NO_CLIP)
    free_returns = np.asarray(jax.jit(jax.vmap(lambda k: no_clip(k, None)))(keys)["final_return"])
    diff = free_returns - ppo_returns
    half = stats.t.ppf(0.975, seeds - 1) * diff.std(ddof=1) / np.sqrt(seeds) if seeds > 1 else float("nan")
    return {"outside": counts[1] / counts[0], "penalized": counts[2] / counts[0], "ppo": float(ppo_returns.mean()),
            "diff": float(diff.mean()), "ci": (float(diff.mean() - half), float(diff.mean() + half)),
            "identical": int(np.sum(np.isclose(free_returns, ppo_returns, rtol=0, atol=1e-6)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1", "Catch-bsuite"])
    parser.add_argument("--horizons", nargs="+", type=float, default=[0.25, 1.0, 4.0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    try:  # the same keys, types, bounds and one-line errors as a config's ppo: section
        settings = load_config(rl_envs.PPOSettings, overrides=args.sets)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"PPO settings: each env's PureJaxRL defaults{', with ' + ', '.join(args.sets) if args.sets else ''}; "
          f"{args.seeds} seeds")
    print("| env | horizon | outside [0.8, 1.2] | penalized | PPO return | no clip - PPO [95% CI] | seeds equal |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for env_name in args.envs:
        for multiple in args.horizons:
            ppo = rl_envs.ppo_config(env_name, settings, total_timesteps=round(REFERENCE_STEPS * multiple))
            m = measure(env_name, ppo, args.seeds)
            print(f"| {env_name} | {multiple:g}x | {m['outside']:.4f} | {m['penalized']:.4f} | {m['ppo']:.1f} | "
                  f"{m['diff']:+.1f} [{m['ci'][0]:+.1f}, {m['ci'][1]:+.1f}] | {m['identical']}/{args.seeds} |",
                  flush=True)


if __name__ == "__main__":
    main()
