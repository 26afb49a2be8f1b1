"""Can tuned AdamW be beaten on the update-rule targets at all? A panel of published optimizers, each tuned like
AdamW, against issue 11's quality target (a 95% win over tuned AdamW on at least half of the targets, never more
than 5% worse on any). A reference for the search's results, like benchmarks/rl_placebo.py for the RL targets.

    JAX_PLATFORMS=cpu python benchmarks/optimizer_panel.py --out /tmp/panel [--lr-schedule cosine]
    JAX_PLATFORMS=cpu python benchmarks/optimizer_panel.py --summarize /tmp/panel   # the table again, no training

Every optimizer goes through ``discover transfer`` (:func:`discover.shared.transfer.run_transfer`) as a baseline:
the same 16-point lr x decoupled-wd grid, 3 tuning seeds, the chosen point retrained on 5 fresh seeds, a paired
95% t-interval of the per-seed difference against AdamW's fresh seeds. Every verdict that is not a tie is then
tested again, both optimizers at their chosen points, on ``--replicate`` further seeds (the seeds of
``transfer --replicate-seeds``); only a confirmed verdict counts, since 9 optimizers x 7 targets are 63 tests.
The panel is optax's implementation at its default hyperparameters (transfer_tuning._NATIVE), plus the AdaBelief
seed program. Nothing here feeds a search config: the targets are the ones the searches report on, and
the panel only says how hard the target is.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

from discover.shared import transfer, transfer_tuning
from discover.shared.transfer_report import compare, strict_json
from envs import tasks as task_registry

TARGETS = ("mlp_wine_target", "mlp_breast_cancer_target", "mlp_diabetes_target", "mlp_digits_target",
           "autoencoder_digits_target", "charlm_target", "cnn_digits_target")  # experiments/lion_search*.yaml
PANEL = ("adamw", "nadamw", "radam", "amsgrad", "adan", "adopt", "ademamix", "muon", "adabelief", "lion")
REFERENCE = "AdamW"
WIN_SHARE, WORST_RATIO = 0.5, 1.05  # issue 11: a 95% win on at least half of the targets, never > 5% worse


def pair_with_reference(report: dict, lr_schedule: str, replicate_seeds: int) -> None:
    """Gives every optimizer the paired comparison with AdamW that a program gets in transfer.json (``paired``),
    and tests each that is not a tie again on ``replicate_seeds`` further seeds (:func:`transfer.replicate`)."""
    optimizers = [transfer_tuning.baseline_optimizer(name) for name in report["settings"]["baselines"]]
    offset = report["settings"]["fresh_seed_offset"] + transfer_tuning.REPLICATION_SHIFT
    for task_name, t in report["tasks"].items():
        results, ref = t["optimizers"], t["optimizers"][REFERENCE]["best"]
        for label, r in results.items():
            if label != REFERENCE and r["best"] is not None and ref is not None:
                r["paired"] = {REFERENCE: compare(r["best"], ref)}
        if replicate_seeds:
            task = task_registry.with_lr_schedule(transfer.resolve_tasks([task_name])[0], lr_schedule)
            transfer.replicate(task, optimizers, results, replicate_seeds, offset)


def summarize(report: dict) -> tuple[list[dict], str]:
    """Per optimizer: confirmed wins / losses against AdamW, the worst ratio of fresh means, and the target."""
    tasks = list(report["tasks"])
    labels = [label for label in next(iter(report["tasks"].values()))["optimizers"] if label != REFERENCE]
    rows = []
    for label in labels:
        wins = losses = 0
        ratios, cells = [], []
        for task_name in tasks:
            t = report["tasks"][task_name]
            r, ref = t["optimizers"][label], t["optimizers"][REFERENCE]["best"]
            c = r.get("paired", {}).get(REFERENCE)
            if r["best"] is None or c is None:
                ratios.append(math.inf)
                cells.append("diverged")
                continue
            mean, ref_mean = r["best"]["val_loss_mean"], ref["val_loss_mean"]
            ratio = mean / ref_mean if mean is not None and ref_mean else math.inf
            ratios.append(ratio)
            word = c["verdict"]
            rep = c.get("replication")
            if word != "tie" and rep is not None and not rep["confirmed"]:
                word = f"{word}, not confirmed"
            elif word == "better":
                wins += 1
            elif word == "worse":
                losses += 1
            cells.append(f"{ratio:.3f} {word}")
        worst = max(ratios)
        meets = wins >= math.ceil(WIN_SHARE * len(tasks)) and worst <= WORST_RATIO
        rows.append({"optimizer": label, "confirmed_wins": wins, "confirmed_losses": losses, "worst_ratio": worst,
                     "meets_target": meets, "cells": dict(zip(tasks, cells))})
    head = "| optimizer | " + " | ".join(tasks) + " | confirmed wins / losses | worst ratio | meets target |"
    lines = [head, "|" + "---|" * (len(tasks) + 4)]
    for row in rows:
        lines.append(f"| {row['optimizer']} | " + " | ".join(row["cells"][t] for t in tasks)
                     + f" | {row['confirmed_wins']} / {row['confirmed_losses']} | {row['worst_ratio']:.3f} | "
                     + ("yes" if row["meets_target"] else "no") + " |")
    return rows, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, help="output folder (transfer.md, transfer.json, panel.json)")
    parser.add_argument("--summarize", type=pathlib.Path, help="a finished panel folder: print its table again")
    parser.add_argument("--tasks", default=",".join(TARGETS))
    parser.add_argument("--optimizers", default=",".join(PANEL), help="the first is the reference, AdamW")
    parser.add_argument("--lr-schedule", default="constant", choices=list(task_registry.LR_SCHEDULES))
    parser.add_argument("--replicate", type=int, default=10, help="further seeds for every non-tie verdict")
    parser.add_argument("--seeds", type=int, default=transfer.DEFAULT_SEEDS)
    parser.add_argument("--fresh-seeds", type=int, default=transfer.DEFAULT_FRESH_SEEDS)
    parser.add_argument("--lr-grid", default=None, help="lr multipliers (default: transfer's 8)")
    parser.add_argument("--wd-grid", default=None, help="weight decays (default: transfer's 0, 0.1)")
    args = parser.parse_args()
    if args.summarize is not None:
        panel = json.loads((args.summarize / "panel.json").read_text())
        print(summarize(panel)[1])
        return
    if args.out is None:
        parser.error("--out or --summarize is required")
    names = args.optimizers.split(",")
    if transfer_tuning.baseline_optimizer(names[0]).name != REFERENCE:
        parser.error(f"--optimizers: the first must be adamw (the reference), not '{names[0]}'")
    grid = {}
    if args.lr_grid:
        grid["lr_grid"] = [float(x) for x in args.lr_grid.split(",")]
    if args.wd_grid:
        grid["wd_grid"] = [float(x) for x in args.wd_grid.split(",")]
    transfer.run_transfer({}, tasks=args.tasks.split(","), baselines=names, seeds=args.seeds,
                          fresh_seeds=args.fresh_seeds, lr_schedule=args.lr_schedule, out_dir=args.out, tb=False,
                          **grid)
    report = json.loads((args.out / "transfer.json").read_text())
    pair_with_reference(report, args.lr_schedule, args.replicate)
    rows, table = summarize(report)
    report["panel"] = {"rows": rows, "replicate_seeds": args.replicate, "win_share": WIN_SHARE,
                       "worst_ratio": WORST_RATIO}
    (args.out / "panel.json").write_text(json.dumps(strict_json(report), indent=1))
    print(table)
    print(f"{sum(r['meets_target'] for r in rows)} of {len(rows)} optimizers meet the target "
          f"(lr schedule {args.lr_schedule}); wrote {args.out / 'panel.json'}")


if __name__ == "__main__":
    main()
