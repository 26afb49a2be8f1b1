"""Environment steps per second of the population trainer vs a plain single-agent PPO, same config.

The population trainer is what the RL-objective search runs every generation: ``members`` agents, each
with its own TA-LPO drift network, vmapped into one jitted call (``envs.ppo.make_population_train``). The
baseline is PureJaxRL-style PPO with the clipped objective and no drift network, one agent per call
(``envs.ppo.make_train(..., drift_fn=None)``). Both use the env's PureJaxRL PPO settings; only the horizon
is shortened so the default run stays under ~3 minutes on 2 CPU cores.

    python benchmarks/rl_throughput.py                     # CartPole-v1 and SpaceInvaders-MinAtar, 64 members
    python benchmarks/rl_throughput.py --envs CartPole-v1 --members 16 --json out.json

Goal: per-member cost (population seconds / members) within 1.25x of the plain PPO's seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a plain checkout
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

from envs import rl_envs
from envs.ppo import make_population_train, make_train
from search_spaces.drift import DriftConfig, make_drift

# Shortened horizons (env steps per agent) that keep the default run short; a few updates each.
DEFAULT_STEPS = {"CartPole-v1": 25_600, "Acrobot-v1": 25_600}
MINATAR_STEPS = 3 * 64 * 128


def _timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile seconds, best wall seconds of ``repeats`` runs)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return compile_s, best


def measure(env_name: str, members: int, steps: int | None, repeats: int) -> dict:
    steps = steps or DEFAULT_STEPS.get(env_name, MINATAR_STEPS)
    config = dataclasses.replace(rl_envs.ppo_config(env_name), total_timesteps=steps)
    drift = make_drift(DriftConfig(family="talpo"))

    plain = jax.jit(make_train(env_name, config, None))
    plain_compile, plain_s = _timed(plain, jax.random.PRNGKey(0), {}, repeats=repeats)

    population = make_population_train(env_name, config, drift.apply)
    params = jax.vmap(drift.init)(jax.random.split(jax.random.PRNGKey(1), members))
    keys = jax.random.split(jax.random.PRNGKey(2), members).reshape(members, 1, -1)
    pop_compile, pop_s = _timed(population, keys, params, repeats=max(1, repeats // 2))

    per_member_s = pop_s / members
    return {
        "env": env_name,
        "steps_per_agent": config.total_timesteps,
        "members": members,
        "plain_steps_per_s": config.total_timesteps / plain_s,
        "population_steps_per_s": members * config.total_timesteps / pop_s,
        "per_member_steps_per_s": config.total_timesteps / per_member_s,
        "per_member_cost_vs_plain": per_member_s / plain_s,
        "plain_compile_s": plain_compile,
        "population_compile_s": pop_compile,
    }


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| env | steps/agent | members | plain PPO steps/s | population steps/s (all members) "
            "| per-member steps/s | per-member cost vs plain | compile plain / population (s) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['steps_per_agent']:,} | {r['members']} | {r['plain_steps_per_s']:,.0f} | "
            f"{r['population_steps_per_s']:,.0f} | {r['per_member_steps_per_s']:,.0f} | "
            f"{r['per_member_cost_vs_plain']:.2f}x | {r['plain_compile_s']:.1f} / {r['population_compile_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "SpaceInvaders-MinAtar"])
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="env steps per agent (default: per env)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the plain PPO (best is kept)")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    for env in args.envs:
        rl_envs.spec(env)
    rows = []
    for env in args.envs:
        rows.append(measure(env, args.members, args.steps, args.repeats))
        print(f"measured {env}", file=sys.stderr, flush=True)
    print(f"backend: {jax.default_backend()} ({jax.device_count()} device(s), {os.cpu_count()} CPU cores)")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
