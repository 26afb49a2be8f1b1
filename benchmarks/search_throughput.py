"""Search throughput: candidates scored per second by the batched search vs one by one.

    JAX_PLATFORMS=cpu python benchmarks/search_throughput.py [--task mlp_regression_proxy] [--candidates 64]
        [--batch 32] [--one-by-one 12] [--quickstart] [--sweep [--repeats 5]]

* **batched** (what ``discover search`` does): the candidates, padded to ``--batch``, train together in ONE call of
  the population trainer running the batched interpreter (one compilation for the task shape, reused by every
  batch).
* **one by one** (the obvious alternative): each candidate becomes an ``optax.GradientTransformation``
  (``discover.to_optax``, the specialized path that ``discover export`` writes out) and its training loop gets its
  own ``jax.jit``: a new program means a new compilation. Timed over the first ``--one-by-one`` candidates.

Both are reported twice, and compared like with like:

* **cold** (compilation included on both sides; what a search pays, since every candidate is a new program):
  batched = all ``--candidates`` scored by a trainer not compiled yet (its one compilation spread over them);
  one by one = export, jit, compile and run each candidate.
* **warm** (execution only on both sides): the same candidates again, every function already compiled.

The cold batched rate depends on ``--candidates``: a search spreads the one compilation over thousands of
candidates, so its rate tends to the warm one, while one by one stays at its cold rate.

Both train the same candidates (mutants of the seeds, dead code removed, as a search makes them) on the same
task, with the same keys, steps and learning rate; the script checks that both paths agree on the validation
losses. ``--quickstart`` also runs the shipped ``experiments/quickstart.yaml`` and reports its wall time, peak memory and
compilations (the trainer's, and every XLA compilation of the run).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from discover.infra.experiments import default_config_path
from discover.infra.rundir import new_run_dir
from discover.language.analysis import remove_dead_code
from discover.language.optax_export import to_optax
from discover.searches import update_rules as search
from discover.shared import evolution
from discover.shared.scoring import ROBUST_LR_MULTIPLIERS, Scorer
from envs.baselines import reference_keys
from envs.tasks import get_task
from search_spaces.update_rules import UpdateRuleSpace, seed


def candidates(n: int, rng_seed: int = 0) -> list:
    """``n`` distinct live programs: mutation chains from the AdamW, Lion and momentum seeds."""
    space = UpdateRuleSpace(max_len=20, n_state=3)
    rng = np.random.default_rng(rng_seed)
    pool = [seed("adamw"), seed("lion"), seed("momentum")]
    out, seen = [], set()
    while len(out) < n:
        parent = pool[int(rng.integers(len(pool)))]
        child, _, _ = evolution.make_child(parent, rng, space, None, 20)
        pool.append(child)
        live = remove_dead_code(child)
        if str(live) not in seen:
            seen.add(str(live))
            out.append(live)
    return out


def specialized_trainer(task, program, lr):
    """One candidate's training as its own jitted function (same keys/data/steps as the population trainer)."""
    tx = to_optax(program, lr)

    def train(key):
        init_key, data_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        params = task.init(init_key)
        state = tx.init(params)

        def step(carry, i):
            params, state = carry
            g = jax.grad(task.loss)(params, task.batch(data_key, i))
            updates, state = tx.update(g, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, state), jnp.arange(task.num_steps, dtype=jnp.int32))
        return task.val_loss(params)

    return jax.jit(train)


def run(task_name: str, n: int, batch: int, one_by_one: int, lr: float | None) -> dict:
    task = get_task(task_name)
    lr = task.lr if lr is None else lr
    programs = candidates(n)
    scorer = Scorer(tasks=[task], references={task.name: {"lr": lr, "val_loss": 1.0}}, train_seeds=1,
                    lr_multipliers=(1.0,), worst=float("inf"), batch=batch, max_len=20, n_state=3)

    t0 = time.perf_counter()
    scorer.score(programs)  # cold: includes the one compilation of the trainer
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = scorer.score(programs)  # warm: the same candidates, trainer compiled
    warm_s = time.perf_counter() - t0
    batched_val = warm.fitness  # relative to 1.0: the val loss itself

    key = reference_keys(1)[0]
    t0 = time.perf_counter()
    single_val, compiled = [], []
    for program in programs[:one_by_one]:  # cold: export, jit, compile and run each candidate
        fn = specialized_trainer(task, program, lr)
        single_val.append(float(fn(key)))
        compiled.append(fn)
    one_cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for fn in compiled:  # warm: the same functions again, compiled
        fn(key).block_until_ready()
    one_warm_s = time.perf_counter() - t0

    a, b = np.asarray(single_val), batched_val[:one_by_one]
    ok = np.isfinite(a) & np.isfinite(b)
    agree = bool(np.allclose(a[ok], b[ok], rtol=2e-2, atol=1e-5)) if ok.any() else None
    max_rel = float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12))) if ok.any() else None
    rates = {
        "batched_cold": n / cold_s, "batched_warm": n / warm_s,
        "one_by_one_cold": one_by_one / one_cold_s, "one_by_one_warm": one_by_one / one_warm_s,
    }
    return {
        "task": task_name,
        "candidates": n,
        "batch": batch,
        "one_by_one_candidates": one_by_one,
        "batched_cold_s": round(cold_s, 3),
        "batched_warm_s": round(warm_s, 3),
        "one_by_one_cold_s": round(one_cold_s, 3),
        "one_by_one_warm_s": round(one_warm_s, 3),
        # candidates / s; "cold" includes compilation, "warm" is execution only
        **{f"{k}_candidates_per_s": round(v, 3) for k, v in rates.items()},
        "speedup_cold": round(rates["batched_cold"] / rates["one_by_one_cold"], 2),
        "speedup_warm": round(rates["batched_warm"] / rates["one_by_one_warm"], 2),
        "trainer_compiles": scorer.compiles(),
        "val_losses_agree": agree,
        "val_losses_max_rel_diff": max_rel,
        "val_losses_one_by_one": [float(x) for x in a],
        "val_losses_batched": [float(x) for x in b],
        "finite_candidates": int(np.isfinite(b).sum()),
    }


def sweep_rows(task_name: str, batch: int, repeats: int) -> dict:
    """Trainer rows per second (a row: one candidate x task x lr point x seed), warm, for one lr point (the old
    fitness) and the robust fitness's sweep, timed in interleaved rounds in this process (the machine's load
    hits both alike): the sweep must add rows, not overhead."""
    task = get_task(task_name)
    programs = candidates(batch)
    scorers = {label: Scorer(tasks=[task], references={task.name: {"lr": task.lr, "val_loss": 1.0}}, train_seeds=1,
                             lr_multipliers=tuple(m), worst=float("inf"), batch=batch, max_len=20, n_state=3)
               for label, m in (("one_lr", (1.0,)), ("sweep", ROBUST_LR_MULTIPLIERS))}
    times = {label: [] for label in scorers}
    for scorer in scorers.values():
        scorer.score(programs)  # compile
    for _ in range(repeats):
        for label, scorer in scorers.items():
            t0 = time.perf_counter()
            scorer.score(programs)
            times[label].append(time.perf_counter() - t0)
    out = {}
    for label, scorer in scorers.items():
        rows, median = batch * len(scorer.lr_multipliers), float(np.median(times[label]))
        out[label] = {"rows": rows, "median_s": round(median, 4), "rows_per_s": round(rows / median, 1)}
    out["rows_per_s_ratio_sweep_over_one_lr"] = round(out["sweep"]["rows_per_s"] / out["one_lr"]["rows_per_s"], 3)
    out["candidates_per_s_ratio"] = round(out["one_lr"]["median_s"] / out["sweep"]["median_s"], 3)
    return out


def quickstart() -> dict:
    import tempfile

    config = search.load_search_config(default_config_path())
    with tempfile.TemporaryDirectory() as root:
        summary = search.run_search(config, new_run_dir(config, root))
    keys = ("wall_time_s", "peak_rss_mb", "trainer_compiles", "xla_compiles_this_run", "best_fitness",
            "best_metaval", "seed_fitness", "seed_metaval", "cache_hit_rate", "dead_share", "candidates_scored")
    return {k: summary[k] for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="mlp_regression_proxy")
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--one-by-one", type=int, default=12)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--quickstart", action="store_true", help="also run the quickstart (memory, compilations)")
    ap.add_argument("--sweep", action="store_true", help="also: trainer rows/s with the robust lr sweep vs one lr")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    result = {"backend": jax.default_backend(), "devices": str(jax.devices()), "machine": platform.machine(),
              **run(args.task, args.candidates, args.batch, args.one_by_one, args.lr)}
    if args.sweep:
        result["sweep_rows"] = sweep_rows(args.task, args.batch, args.repeats)
    if args.quickstart:
        result["quickstart"] = quickstart()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
