"""A finished update-rule run's hall of fame, scored per meta-validation task on fresh seeds: does its ranking (the
mean over tasks) hide a loss on one task, and what would ranking by the worst task have chosen?

    JAX_PLATFORMS=cpu python benchmarks/hall_per_task.py RUN_DIR [--top 20] [--seeds 3] [--json out.json]

The run's own meta-validation setup is rebuilt from its ``config.yaml`` and ``references.json`` (tasks, steps, lr
sweep, lr schedule; AdamW tuned over the same sweep, as the search compared). Every hall entry is then scored on
``--seeds`` fresh training seeds (the robustness check's, not the search's), one trainer call per task for all
of them. Printed per program: each task's score, the mean and the worst; then the hall's order by each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import numpy as np

from discover.language.program import parse
from discover.searches.update_rules.config import load_search_config
from discover.searches.update_rules.heldout import FRESH_SEED
from discover.searches.update_rules.steps import metaval_scorer, swept_against_adamw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    config = load_search_config(args.run_dir / "config.yaml")
    if not config.funnel.tasks:
        raise SystemExit(f"{args.run_dir}: the run has no meta-validation tasks")
    references = json.loads((args.run_dir / "references.json").read_text())
    hall = json.loads((args.run_dir / "hall_of_fame.json").read_text())["entries"][: args.top]
    programs = [parse(e["program"], max_len=10**6) for e in hall]
    scorer = dataclasses.replace(metaval_scorer(config, references), train_seeds=args.seeds, first_seed=FRESH_SEED,
                                 batch=len(programs))
    started = time.perf_counter()
    scorer = swept_against_adamw(scorer)  # AdamW over the same sweep and fresh seeds: it scores 1.0 per task
    scores = scorer.score(programs)
    seconds = time.perf_counter() - started
    names = [t.name for t in scorer.tasks]
    mean, worst = scores.per_task.mean(axis=1), scores.per_task.max(axis=1)
    print(f"{args.run_dir.name}: top {len(programs)} of the hall on {args.seeds} fresh seeds ({seconds:.0f} s)")
    print("rank  hall metaval  " + "  ".join(f"{n:>24}" for n in names) + "      mean     worst")
    for i, (entry, row) in enumerate(zip(hall, scores.per_task), 1):
        print(f"{i:>4}  {entry['metaval']:12.4f}  " + "  ".join(f"{x:24.4f}" for x in row)
              + f"  {mean[i - 1]:8.4f}  {worst[i - 1]:8.4f}")
    below = np.flatnonzero(worst < 1.0)
    print(f"ranked by the mean, the best is #{int(np.argmin(mean)) + 1}; by the worst task, "
          f"#{int(np.argmin(worst)) + 1} ({worst.min():.4f}); {len(below)} of {len(programs)} programs beat AdamW "
          "on every task")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"run": str(args.run_dir), "seeds": args.seeds, "tasks": names, "seconds": seconds,
                       "programs": [{"rank": i + 1, "program": e["program"], "hall_metaval": e["metaval"],
                                     "per_task": [float(x) for x in row], "mean": float(m), "worst": float(w)}
                                    for i, (e, row, m, w) in enumerate(zip(hall, scores.per_task, mean, worst))]},
                      f, indent=1)


if __name__ == "__main__":
    main()
