"""Environment steps per second of the population trainer vs a plain single-agent PPO, same config.

The population trainer is what the RL-objective search runs every generation: ``members`` agents, each
with its own TA-LPO drift network, vmapped into one jitted call (``envs.ppo.make_population_train``). The
baseline is PureJaxRL-style PPO with the clipped objective and no drift network, one agent per call
(``envs.ppo.make_train(..., drift_fn=None)``). Both use the env's PureJaxRL PPO settings; only the horizon
is shortened to keep runs short (``run_all.py``'s CartPole with 32 members: about a minute on 2 CPU
cores; this script's own default, both envs with 64 members, takes longer).

    python benchmarks/rl_throughput.py                     # CartPole-v1 and SpaceInvaders-MinAtar, 64 members
    python benchmarks/rl_throughput.py --envs CartPole-v1 --members 16 --json out.json

Goal: per-member cost (population seconds / members) within 1.25x of the plain PPO's seconds, in wall seconds
and in process CPU seconds (both reported, the goal judged on both: on a shared or multi-core machine wall time
can flatter the population, which keeps every core busy where one agent may leave some idle). The three
variants are compiled first, then timed in interleaved rounds (``--repeats``), and the best round of each is
kept. The table also shows the clipped objective vmapped over the same members without a drift network, which
separates the cost of batching from the cost of the drift network itself.
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
# JAX picks its default backend (a GPU where there is one): gpu_check.sh measures there, run_all.py sets
# JAX_PLATFORMS=cpu for its CPU profiles.

import jax

from envs import rl_envs
from envs.ppo import make_population_train, make_train
from search_spaces.drift import DriftConfig, make_drift

# Shortened horizons (env steps per agent) that keep the default run short: a few updates each.
DEFAULT_STEPS = {"CartPole-v1": 25_600, "Acrobot-v1": 25_600}
MINATAR_STEPS = 2 * 64 * 128


def _timed(variants: dict, repeats: int) -> dict:
    """``{name: (jitted fn, args)}`` -> ``{name: {compile_s, wall_s, cpu_s}}``: every variant compiled first,
    then run in ``repeats`` interleaved rounds, the best wall and best process-CPU seconds of each kept (the same
    statistic for every variant). CPU seconds matter on a shared machine: other processes stretch a long run's
    wall time more than a short one's."""
    compiled, out = {}, {}
    for name, (fn, args) in variants.items():
        start = time.perf_counter()
        compiled[name] = fn.lower(*args).compile()
        out[name] = {"compile_s": time.perf_counter() - start, "wall_s": float("inf"), "cpu_s": float("inf")}
    for _ in range(repeats):
        for name, (_, args) in variants.items():
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled[name](*args))
            out[name]["wall_s"] = min(out[name]["wall_s"], time.perf_counter() - wall)
            out[name]["cpu_s"] = min(out[name]["cpu_s"], time.process_time() - cpu)
    return out


def measure(env_name: str, members: int, steps: int | None, repeats: int) -> dict:
    steps = steps or DEFAULT_STEPS.get(env_name, MINATAR_STEPS)
    config = dataclasses.replace(rl_envs.ppo_config(env_name), total_timesteps=steps)
    drift = make_drift(DriftConfig(family="talpo"))
    keys = jax.random.split(jax.random.PRNGKey(2), members).reshape(members, 1, -1)

    params = jax.vmap(drift.init)(jax.random.split(jax.random.PRNGKey(1), members))
    timed = _timed({
        "plain": (jax.jit(make_train(env_name, config, None)), (jax.random.PRNGKey(0), {})),
        # The same clipped objective vmapped over members: the cost of batching alone.
        "batched_ppo": (make_population_train(env_name, config, None), (keys, {})),
        "talpo": (make_population_train(env_name, config, drift.apply), (keys, params)),
    }, repeats=repeats)
    plain, batched, talpo = timed["plain"], timed["batched_ppo"], timed["talpo"]

    def per_member_cost(population: dict, clock: str) -> float:
        return population[clock] / members / plain[clock]

    return {
        "backend": jax.default_backend(),
        "env": env_name,
        "steps_per_agent": config.total_timesteps,
        "members": members,
        "plain_steps_per_s": config.total_timesteps / plain["wall_s"],
        "plain_cpu_s": plain["cpu_s"],  # process CPU seconds of one plain agent (best round)
        "population_steps_per_s": members * config.total_timesteps / talpo["wall_s"],
        "cost_vs_plain_wall": per_member_cost(talpo, "wall_s"),
        "cost_vs_plain_cpu": per_member_cost(talpo, "cpu_s"),
        "batched_ppo_cost_vs_plain_wall": per_member_cost(batched, "wall_s"),
        "batched_ppo_cost_vs_plain_cpu": per_member_cost(batched, "cpu_s"),
        "compile_s": {name: v["compile_s"] for name, v in timed.items()},
        "repeats": repeats,
    }


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| env | steps/agent | members | plain PPO steps/s | TA-LPO population steps/s (all members) "
            "| per-member cost vs plain: wall / CPU | same, vmapped PPO without drift net: wall / CPU |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['steps_per_agent']:,} | {r['members']} | {r['plain_steps_per_s']:,.0f} | "
            f"{r['population_steps_per_s']:,.0f} | {r['cost_vs_plain_wall']:.2f}x / {r['cost_vs_plain_cpu']:.2f}x | "
            f"{r['batched_ppo_cost_vs_plain_wall']:.2f}x / {r['batched_ppo_cost_vs_plain_cpu']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "SpaceInvaders-MinAtar"])
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="env steps per agent (default: per env)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved timed rounds of every variant (the best of each is kept)")
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
