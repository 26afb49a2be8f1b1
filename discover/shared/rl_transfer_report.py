"""The RL transfer's report: its markdown tables, ``transfer.json`` and the figure (``discover transfer`` on a
learned drift; the numbers come from :mod:`discover.shared.rl_transfer`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _fmt_interval(point: float, ci: Sequence[float]) -> str:
    return f"{_fmt(point)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


UNDEFINED = "PPO ≈ random"


def transfer_table(rows: list[dict], methods: Sequence[str]) -> str:
    challengers = [m for m in methods if m != "PPO"]
    head = ["env", "horizon", "env steps", "random return", "PPO return", *methods,
            *[f"P({m} > PPO)" for m in challengers]]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    for row in rows:
        cells = [row["env"], f"{row['horizon']:g}x", f"{row['total_timesteps']:,}", f"{row['random_return']:.1f}",
                 f"{row['ppo_return']:.1f}"]
        if row["defined"]:
            cells += [_fmt_interval(row[m]["iqm"], row[m]["ci"]) for m in methods]
            cells += [_fmt_interval(row[m]["poi"], row[m]["poi_ci"]) for m in challengers]
        else:
            cells += [UNDEFINED] * len(methods) + ["–"] * len(challengers)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def normalizer_table(rows: list[dict], methods: Sequence[str]) -> str:
    lines = ["| env | horizon | " + " | ".join(methods) + " |",
             "| --- | ---: | " + " | ".join(["---:"] * len(methods)) + " |"]
    for row in rows:
        values = ([_fmt_interval(row[m]["iqm"], row[m]["ci_with_normalizer"]) for m in methods] if row["defined"]
                  else [UNDEFINED] * len(methods))
        lines.append(f"| {row['env']} | {row['horizon']:g}x | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def aggregate_table(aggregates: list[dict], methods: Sequence[str]) -> str:
    lines = ["| cells | count | " + " | ".join(methods) + " |",
             "| --- | ---: | " + " | ".join(["---:"] * len(methods)) + " |"]
    for agg in aggregates:
        values = [_fmt_interval(agg[m]["iqm"], agg[m]["ci"]) for m in methods]
        lines.append(f"| {agg['cells']} | {agg['count']} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def transfer_figure(rows: list[dict], methods: Sequence[str]):
    from matplotlib.figure import Figure

    envs = list(dict.fromkeys(row["env"] for row in rows))
    fig = Figure(figsize=(4.6 * len(envs), 3.8))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.15, top=0.88, wspace=0.3)
    for i, env in enumerate(envs):
        ax = fig.add_subplot(1, len(envs), i + 1)
        mine = [row for row in rows if row["env"] == env and row["defined"]]
        x = np.array([row["horizon"] for row in mine])
        for method in methods:
            iqm = np.array([row[method]["iqm"] for row in mine])
            lo = np.array([row[method]["ci"][0] for row in mine])
            hi = np.array([row[method]["ci"][1] for row in mine])
            ax.errorbar(x, iqm, yerr=[iqm - lo, hi - iqm], marker="o", capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training horizon (x reference)")
        ax.set_ylabel("IQM score (PPO = 1, random = 0)")
        ax.set_title(env, fontsize=10)
        ax.legend(fontsize=8)
    return fig


def frozen_table(rows: list[dict]) -> str:
    """Per cell: the learned drift's score minus its time-frozen twin's, paired over their shared seeds."""
    lines = ["| env | horizon | learned - frozen [95% CI] | verdict |", "| --- | ---: | ---: | --- |"]
    for row in rows:
        if "vs_frozen" not in row["learned"]:
            lines.append(f"| {row['env']} | {row['horizon']:g}x | {UNDEFINED} | – |")
            continue
        d = row["learned"]["vs_frozen"]
        verdict = {"better": "learned better", "worse": "frozen better"}.get(d["verdict"], "tie")
        lines.append(f"| {row['env']} | {row['horizon']:g}x | {d['difference']:+.3f} [{d['ci'][0]:+.3f}, "
                     f"{d['ci'][1]:+.3f}] | {verdict} |")
    return "\n".join(lines) + "\n"


def markdown_report(drift_file, meta, train_env, train_ppo, seeds, rows, aggregates, methods, changed: dict,
                    seed_offset: int = 0, frozen_time: tuple[float, float] | None = None) -> str:
    """``transfer.md``: the title, how to read it, the per-cell table, the same with the normalizer redrawn,
    the learned drift against its time-frozen twin (when run) and the aggregates."""
    trained = meta.get("horizons")
    lifetimes = f", lifetimes {', '.join(f'{m:g}x' for m in trained)}" if trained else ""
    for env, multiples in (meta.get("env_horizons") or {}).items():  # horizon.per_env
        lifetimes += f" ({env}: {', '.join(f'{m:g}x' for m in multiples)})"
    title = (f"Transfer of {drift_file.name} (meta-trained on {train_env}, {train_ppo.total_timesteps:,} steps"
             f"{lifetimes}), {seeds} seeds per method and cell"
             + (f" (seed offset {seed_offset})" if seed_offset else ""))
    if changed:
        title += "; PPO settings on every env: PureJaxRL's with " + ", ".join(f"{k}={v:g}" if isinstance(v, float)
                                                                           else f"{k}={v}" for k, v in changed.items())
    undefined = sum(not r["defined"] for r in rows)
    notes = [
        ("Score of a run: (R - R_random) / (R_PPO - R_random), with R_PPO the mean of PPO's runs in the same cell "
         "and R_random a uniformly random policy's mean return there. Each cell: IQM over seeds [95% bootstrap "
         "interval]; P(X > PPO): the probability that a run of X beats a run of PPO [95% interval]."),
    ]
    if undefined:
        notes.append(f"{UNDEFINED}: PPO is not above the random policy beyond 2 standard errors there, so no score "
                     f"is defined ({undefined} cell{'s' if undefined > 1 else ''}).")
    failures = sum(r[m]["failures"] for r in rows for m in methods)
    if failures:
        notes.append(f"{failures} run(s) produced NaN/inf and score 0.")
    if frozen_time is not None:
        notes.append(f"frozen: the learned drift blind to time, always fed n/N = {frozen_time[0]:g} and "
                     f"log10 N = {frozen_time[1]:.3f} (the meta-training lifetime's), on the same seeds.")
    text = f"### {title}\n\n" + " ".join(notes) + "\n\n" + transfer_table(rows, methods)
    text += ("\nThe same IQMs with intervals that also redraw PPO's runs, the normalizer (a joint bootstrap over "
             "the seeds every method shares): a cell's interval above counts the method's runs only.\n\n"
             + normalizer_table(rows, methods))
    if frozen_time is not None:
        text += ("\nDoes the learned drift use time? Its score minus the frozen drift's, paired over the seeds both "
                 "train on (mean [95% t interval]):\n\n" + frozen_table(rows))
    if aggregates:
        text += ("\nAggregate IQM over cells (stratified bootstrap, 95% interval); held-out envs are those other "
                 f"than {train_env}:\n\n" + aggregate_table(aggregates, methods))
    return text


def json_report(drift_file, meta, seeds, rows, aggregates, methods, frozen_time=None) -> dict:
    """``transfer.json``: one entry per (cell, method) in ``cells``, then the aggregates."""
    cells = []
    for row in rows:
        for method in methods:
            entry = row[method]
            cell = {"env": row["env"], "horizon": row["horizon"], "method": method, "seeds": seeds,
                    "defined": row["defined"], "iqm": entry.get("iqm"), "ci": entry.get("ci"),
                    "mean": entry.get("mean"), "total_timesteps": row["total_timesteps"],
                    "held_out": row["held_out"], "ppo_return": row["ppo_return"],
                    "random_return": row["random_return"], "returns": entry["returns"],
                    "failures": entry["failures"]}
            if row["defined"]:
                cell["ci_with_normalizer"] = entry["ci_with_normalizer"]
            if method != "PPO" and row["defined"]:
                cell.update(poi=entry["poi"], poi_ci=entry["poi_ci"])
            if "vs_frozen" in entry:
                cell["vs_frozen"] = entry["vs_frozen"]
            cells.append(cell)
    report = {"drift": str(drift_file), "meta": meta, "seeds": seeds, "methods": list(methods), "cells": cells,
              "aggregates": aggregates}
    if frozen_time is not None:
        report["frozen_time"] = {"progress": frozen_time[0], "log_horizon": frozen_time[1]}
    return report
