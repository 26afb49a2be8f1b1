"""Interpreter overhead: a population of P small models trained with interpreted programs vs the same
population trained with vmapped ``optax.adamw`` (the same trainer, the same task, the same process).

    JAX_PLATFORMS=cpu python benchmarks/interpreter_overhead.py [--task mlp_regression_proxy] [--population 64]

Prints the median time per training step of each variant, its ratio to vmapped optax.adamw, and the
number of compilations the interpreted trainer needed for three different populations (goal: 1).
Variants: 64 copies of the AdamW seed (the same work as optax.adamw, interpreted), and a mixed
population (every seed, cycled, plus mutated children: many different ops at every statement).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

from discover.language import interpreter
from discover.language.mutation import mutate
from envs.tasks import get_task
from envs.train import adamw_init_opt_state, adamw_update_fn, make_population_trainer, task_layout
from search_spaces.update_rules import UpdateRuleSpace, seeds


def mixed_population(P: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = [p for name, p in seeds().items() if name != "sophia"]  # sophia reads h
    space = UpdateRuleSpace()
    pop = []
    while len(pop) < P:
        parent = base[len(pop) % len(base)]
        pop.append(parent if len(pop) < len(base) else mutate(parent, rng, space)[0])
    return pop


def run(task_name: str, P: int, repeats: int, max_len: int, n_state: int) -> dict:
    task = get_task(task_name)
    layout = task_layout(task)
    traces = []

    def counted(fn):
        def update_fn(*args):
            traces.append(1)  # runs once per trace, i.e. per compilation
            return fn(*args)

        return update_fn

    interp_train = make_population_trainer(
        task, counted(interpreter.population_update_fn(layout.segments)),
        interpreter.population_init_fn(max_len, n_state))
    adamw_train = make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state)
    keys = jax.random.split(jax.random.key(0), P)
    lrs = np.full((P,), task.lr, np.float32)
    all_seeds = seeds()
    populations = {
        "interpreted AdamW x P": interpreter.encode([all_seeds["adamw"]] * P, max_len, n_state),
        "interpreted mixed seeds + mutants": interpreter.encode(mixed_population(P), max_len, n_state),
    }
    cases = {"optax.adamw (vmapped)": (adamw_train, None)}
    cases.update({name: (interp_train, enc) for name, enc in populations.items()})
    for fn, enc in cases.values():  # compile + warm up
        jax.block_until_ready(fn(keys, lrs, enc))
    times = {name: [] for name in cases}
    for _ in range(repeats):  # interleaved, so machine noise hits every variant alike
        for name, (fn, enc) in cases.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(keys, lrs, enc))
            times[name].append(time.perf_counter() - t0)
    # A third, different population: must reuse the compiled trainer.
    third = interpreter.encode(mixed_population(P, seed=1), max_len, n_state)
    jax.block_until_ready(interp_train(keys, lrs, third))
    base = float(np.median(times["optax.adamw (vmapped)"]))
    rows = [
        {
            "variant": name,
            "ms_per_step": 1e3 * float(np.median(ts)) / task.num_steps,
            "ratio": float(np.median(ts)) / base,
        }
        for name, ts in times.items()
    ]
    return {
        "task": task_name, "population": P, "params_per_member": layout.size, "steps": task.num_steps,
        "max_len": max_len, "repeats": repeats, "rows": rows, "interpreter_compilations": len(traces),
        "machine": f"{platform.machine()}, {jax.device_count()} x {jax.devices()[0].platform}, "
                   f"{platform.processor() or platform.platform()}",
    }


def to_markdown(result: dict) -> str:
    header = (f"Task `{result['task']}` ({result['params_per_member']} params/member, {result['steps']} steps), "
              f"population {result['population']}, max program length {result['max_len']}, "
              f"median of {result['repeats']} interleaved runs; {result['machine']}.")
    lines = [
        header,
        "",
        "| variant | ms / step | ratio vs optax.adamw |",
        "|---|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['ms_per_step']:.3f} | {r['ratio']:.2f} |" for r in result["rows"]]
    lines += ["", f"Interpreter compilations for three different populations: {result['interpreter_compilations']}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="mlp_regression_proxy")
    ap.add_argument("--population", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--max-len", type=int, default=UpdateRuleSpace().max_len)
    ap.add_argument("--n-state", type=int, default=UpdateRuleSpace().n_state)
    ap.add_argument("--json", help="also write the result as JSON here")
    args = ap.parse_args()
    result = run(args.task, args.population, args.repeats, args.max_len, args.n_state)
    print(to_markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
