"""How far does PPO itself move from PPO in an RL transfer table, when it is scored on other seeds? A placebo for
the issue's targets (IQM >= 0.9 in every cell, an interval above PPO in 2 cells, held-out aggregate >= 1.0).

    discover transfer DRIFT --out A                        # seed offset 0: the seeds of every earlier table
    discover transfer DRIFT --fresh-seed-offset 1 --out B  # every method again, on other seeds
    JAX_PLATFORMS=cpu python benchmarks/rl_placebo.py A/transfer.json B/transfer.json [--json out.json]

A transfer table normalizes every method by PPO's mean over the same 16 seeds, and its intervals count the
method's seeds only: PPO's own 16-seed mean is treated as exact. Here PPO's runs from B are normalized by A's PPO
and random-policy means, exactly as a learned drift's runs are in A: a method that *is* PPO, as the table reads it.
Printed per cell: that placebo's IQM [95% stratified-bootstrap interval], and the learned drift's IQM in A and in
B (its own table on other seeds); then the placebo's aggregate over the held-out cells, and how many cells it
puts under 0.9 or above PPO's IQM in A (the weak reading of "above PPO").
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from discover.shared import stats
from envs import rl_envs


def _cells(report: dict) -> dict[tuple[str, float], dict[str, dict]]:
    out: dict[tuple[str, float], dict[str, dict]] = {}
    for cell in report["cells"]:
        out.setdefault((cell["env"], float(cell["horizon"])), {})[cell["method"]] = cell
    return out


def placebo(a: dict, b: dict, seed: int = 0) -> dict:
    """Per cell defined in ``a``: PPO's runs of ``b`` normalized by ``a``'s normalizer; the learned drift in both."""
    cells_a, cells_b = _cells(a), _cells(b)
    rows, held_out_scores = [], []
    for key, methods in cells_a.items():
        ppo_a = methods["PPO"]
        if not ppo_a["defined"] or key not in cells_b:
            continue
        ppo_b = cells_b[key]["PPO"]
        returns = np.asarray([np.nan if r is None else r for r in ppo_b["returns"]], np.float64)
        scores = rl_envs.normalized_runs(returns, ppo_a["ppo_return"], ppo_a["random_return"])
        iqm, ci = stats.stratified_bootstrap([scores], seed=seed)
        learned_b = cells_b[key].get("learned", {})
        rows.append({"env": key[0], "horizon": key[1], "held_out": ppo_a.get("held_out", False),
                     "ppo_iqm_a": ppo_a["iqm"], "placebo_iqm": iqm, "placebo_ci": [ci[0], ci[1]],
                     "placebo_mean": float(scores.mean()),
                     "ppo_return_a": ppo_a["ppo_return"], "ppo_return_b": ppo_b["ppo_return"],
                     "learned_a": methods.get("learned", {}).get("iqm"), "learned_b": learned_b.get("iqm")})
        if rows[-1]["held_out"]:
            held_out_scores.append(scores)
    summary = {
        "cells": len(rows),
        "placebo_below_0.9": sum(r["placebo_iqm"] < 0.9 for r in rows),
        "placebo_lower_bound_above_ppo_iqm": sum(r["placebo_ci"][0] > r["ppo_iqm_a"] for r in rows),
    }
    if held_out_scores:
        point, ci = stats.stratified_bootstrap(held_out_scores, seed=seed + 1)
        summary["placebo_held_out_aggregate"] = {"iqm": point, "ci": [ci[0], ci[1]], "cells": len(held_out_scores)}
    return {"rows": rows, "summary": summary}


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=pathlib.Path, help="transfer.json on the default seeds (offset 0)")
    parser.add_argument("b", type=pathlib.Path, help="transfer.json of the same drift with --fresh-seed-offset K")
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args()
    a, b = (json.loads(p.read_text()) for p in (args.a, args.b))
    if a.get("seed_offset", 0) == b.get("seed_offset", 0):
        raise SystemExit("the two tables share their seeds: transfer B with --fresh-seed-offset K > 0")
    result = placebo(a, b)
    print("| env | horizon | PPO return A / B | PPO (B's seeds) normalized by A | learned in A | learned in B |")
    print("|---|---:|---:|---|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['env']} | {r['horizon']:g}x | {r['ppo_return_a']:.1f} / {r['ppo_return_b']:.1f} | "
              f"{_fmt(r['placebo_iqm'])} [{_fmt(r['placebo_ci'][0])}, {_fmt(r['placebo_ci'][1])}] | "
              f"{_fmt(r['learned_a'])} | {_fmt(r['learned_b'])} |")
    print(json.dumps(result["summary"]))
    if args.json:
        args.json.write_text(json.dumps({"a": str(args.a), "b": str(args.b), **result}, indent=1))


if __name__ == "__main__":
    main()
