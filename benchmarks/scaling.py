"""Scaling of the batched interpreter with population size and with program length, against vmapped AdamW.

    JAX_PLATFORMS=cpu python benchmarks/scaling.py [--task mlp_regression_proxy] [--populations 16 64 256]
        [--lengths 8 16 24] [--steps 50] [--repeats 5] [--json out.json]

Every point trains the same population on the same task twice in this process, timed interleaved so that
machine noise hits both alike: with interpreted programs (``discover.language.interpreter`` in the population
trainer) and with ``optax.adamw`` vmapped over the members (the baseline). Reported: median milliseconds
per training step, the ratio interpreter / AdamW, and the XLA working memory (temp buffers of the compiled
trainer, ``memory_analysis()``) of each, with its ratio.

* **population**: P = 16, 64, 256 programs of ``--population-length`` statements. Also timed: the same
  interpreter through ``discover.infra.sharding.sharded`` on a 1-device mesh, as the searches call it (padding,
  placement and, on CPU, the members trained in chunks of 8 so that results do not depend on the device
  count).
  With several devices visible (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on a CPU, or
  several GPUs), also sharded over all of them, reported against the 1-device mesh.
* **length**: P = ``--length-population`` programs of exactly 8, 16, 24 statements (the interpreter runs as
  many statements as the longest program has, so time should grow about linearly with length).

Programs: seeds grown by random ``insert`` mutations to the exact length, then a few op / argument changes,
so nearly every member runs a different op at every statement: the interpreter's worst case (a search
population, mostly seeds and near mutants, costs less; see ``interpreter_overhead.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a plain checkout
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from discover.infra import sharding
from discover.language import interpreter
from discover.language.mutation import mutate
from envs.tasks import get_task
from envs.train import adamw_init_opt_state, adamw_update_fn, make_population_trainer, task_layout
from search_spaces.update_rules import UpdateRuleSpace, seeds

N_STATE = 4


def machine() -> str:
    devices = jax.devices()
    kind = getattr(devices[0], "device_kind", devices[0].platform)
    return f"{len(devices)} x {kind} ({jax.default_backend()}), {os.cpu_count()} CPU cores, {platform.machine()}"


def programs_of_length(n: int, length: int, seed: int = 0) -> list:
    """``n`` valid programs of exactly ``length`` statements (grown from the short seeds)."""
    space = UpdateRuleSpace(max_len=length, n_state=N_STATE)
    rng = np.random.default_rng(seed)
    base = [p for name, p in seeds().items() if name != "sophia" and len(p) <= length and space.admits(p)]
    out = []
    while len(out) < n:
        program = base[len(out) % len(base)]
        while len(program) < length:
            program = mutate(program, rng, space, {"insert": 1.0})[0]
        for _ in range(2):  # op / argument variety at the grown statements
            child = mutate(program, rng, space, {"modify_op": 1.0, "modify_arg": 1.0})[0]
            program = child if len(child) == length else program
        out.append(program)
    return out


def interpreter_trainer(task, length: int):
    layout = task_layout(task)
    return make_population_trainer(
        task, interpreter.population_update_fn(layout.segments), interpreter.population_init_fn(length, N_STATE)
    )


def _compile_memory(fn, args) -> int | None:
    """XLA temp (working) bytes of the compiled trainer; None where the backend does not report it."""
    try:
        stats = fn.lower(*args).compile().memory_analysis()
    except Exception:  # noqa: BLE001 - some backends have no memory analysis: the figure is just missing
        return None
    return int(stats.temp_size_in_bytes) if stats is not None else None


def measure_point(task, P: int, length: int, repeats: int, with_sharded: bool) -> dict:
    programs = programs_of_length(P, length)
    enc = interpreter.encode(programs, length, N_STATE)
    keys = jax.random.split(jax.random.key(0), P)
    lrs = np.full((P,), task.lr, np.float32)
    interp = interpreter_trainer(task, length)
    adamw = make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state)
    cases = {"adamw": (adamw, (keys, lrs, None)), "interpreter": (interp, (keys, lrs, enc))}
    if with_sharded:
        cases["interpreter_sharded"] = (sharding.sharded(interp, sharding.population_mesh(1)), (keys, lrs, enc))
        if jax.device_count() > 1:  # e.g. XLA_FLAGS=--xla_force_host_platform_device_count=2 on a CPU
            cases["interpreter_sharded_all"] = (
                sharding.sharded(interp, sharding.population_mesh("all")), (keys, lrs, enc))
    compile_s = {}
    for name, (fn, args) in cases.items():  # compile + warm up
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        compile_s[name] = time.perf_counter() - start
    times = {name: [] for name in cases}
    for _ in range(repeats):  # interleaved
        for name, (fn, args) in cases.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * float(np.median(ts)) / task.num_steps for name, ts in times.items()}
    memory = {name: _compile_memory(cases[name][0], cases[name][1]) for name in ("adamw", "interpreter")}
    row = {
        "population": P,
        "length": length,
        "ms_per_step": ms,
        "ratio": ms["interpreter"] / ms["adamw"],
        "first_call_s": compile_s,
        "temp_bytes": memory,
        "memory_ratio": (memory["interpreter"] / memory["adamw"])
        if memory["interpreter"] is not None and memory["adamw"]
        else None,
    }
    if with_sharded:
        row["sharded_ratio"] = ms["interpreter_sharded"] / ms["adamw"]
        if "interpreter_sharded_all" in ms:
            row["devices"] = jax.device_count()
            row["all_devices_vs_one"] = ms["interpreter_sharded_all"] / ms["interpreter_sharded"]
    return row


def run(task_name: str, populations, lengths, population_length: int, length_population: int, steps: int,
        repeats: int) -> dict:
    task = get_task(task_name)
    if steps:
        task = dataclasses.replace(task, num_steps=steps)
    by_population = [
        measure_point(task, P, population_length, repeats, with_sharded=True) for P in populations
    ]
    by_length = [
        next((r for r in by_population if r["population"] == length_population and r["length"] == L), None)
        or measure_point(task, length_population, L, repeats, with_sharded=False)
        for L in lengths
    ]
    return {
        "task": task_name,
        "params_per_member": task_layout(task).size,
        "steps": task.num_steps,
        "repeats": repeats,
        "population_length": population_length,
        "length_population": length_population,
        "by_population": by_population,
        "by_length": by_length,
        "machine": machine(),
    }


def _mb(x: int | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:.1f}"


def to_markdown(result: dict) -> str:
    head = (
        f"Task `{result['task']}` ({result['params_per_member']} params/member, {result['steps']} steps), "
        f"median of {result['repeats']} interleaved runs; {result['machine']}."
    )
    lines = [
        head,
        "",
        f"By population size (programs of {result['population_length']} statements):",
        "",
        (
            "| population | AdamW ms/step | interpreter ms/step | ratio | via `sharded` (1 device) ratio "
            "| XLA temp MB AdamW / interpreter | memory ratio |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["by_population"]:
        mem_ratio = "n/a" if r["memory_ratio"] is None else f"{r['memory_ratio']:.2f}"
        lines.append(
            f"| {r['population']} | {r['ms_per_step']['adamw']:.3f} | {r['ms_per_step']['interpreter']:.3f} "
            f"| {r['ratio']:.2f} | {r.get('sharded_ratio', float('nan')):.2f} "
            f"| {_mb(r['temp_bytes']['adamw'])} / {_mb(r['temp_bytes']['interpreter'])} | {mem_ratio} |"
        )
    sharded_all = [r for r in result["by_population"] if "all_devices_vs_one" in r]
    if sharded_all:
        lines += ["", "| population | devices | sharded over all / over 1 device |", "|---:|---:|---:|"]
        lines += [f"| {r['population']} | {r['devices']} | {r['all_devices_vs_one']:.2f} |" for r in sharded_all]
    lines += [
        "",
        f"By program length (population {result['length_population']}):",
        "",
        "| statements | AdamW ms/step | interpreter ms/step | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for r in result["by_length"]:
        lines.append(
            f"| {r['length']} | {r['ms_per_step']['adamw']:.3f} | {r['ms_per_step']['interpreter']:.3f} "
            f"| {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="mlp_regression_proxy")
    ap.add_argument("--populations", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 24])
    ap.add_argument("--population-length", type=int, default=16, help="program length of the population sweep")
    ap.add_argument("--length-population", type=int, default=64, help="population of the length sweep")
    ap.add_argument("--steps", type=int, default=50, help="training steps per call (0 = the task's own)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=pathlib.Path, help="also write the result as JSON here")
    args = ap.parse_args()
    result = run(args.task, args.populations, args.lengths, args.population_length, args.length_population,
                 args.steps, args.repeats)
    print(to_markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
