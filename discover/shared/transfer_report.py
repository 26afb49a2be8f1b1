"""What `discover transfer` reports: paired comparisons on the fresh seeds and their verdicts, the per-task
tables, the training-curve pictures and the whole markdown report (the numbers come from
:mod:`discover.shared.transfer`)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

import numpy as np

from discover.infra.rundir import program_markdown
from discover.shared.stats import CONFIDENCE, paired


# ----------------------------------------------------------------------------------------------------------
# Summaries and verdicts
# ----------------------------------------------------------------------------------------------------------
def mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        return math.inf, math.nan
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


def json_float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def strict_json(obj):
    """``obj`` with every non-finite float as None (diverged runs): transfer.json stays strict JSON."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def plus_minus(mean: float, se: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "diverged"
    return f"{mean:.{digits}g} ± {se:.2g}"


def _seeds(best: dict) -> np.ndarray:
    return np.asarray([math.inf if x is None else x for x in best["val_loss_seeds"]], np.float64)


def compare(a: dict, b: dict) -> dict:
    """``a`` against ``b`` (their ``best`` dicts) on the same fresh seeds: the paired 95% interval of the mean
    difference a - b and the verdict (``better``/``worse``/``tie``; a run that diverged on a fresh seed loses
    to one that did not)."""
    va, vb = _seeds(a), _seeds(b)
    bad_a, bad_b = int((~np.isfinite(va)).sum()), int((~np.isfinite(vb)).sum())
    if bad_a or bad_b:  # no interval: the means are inf (null in transfer.json), so is the difference
        word = "tie" if bad_a and bad_b else ("worse" if bad_a else "better")
        return {"mean_a": a["val_loss_mean"], "mean_b": b["val_loss_mean"], "difference": math.nan,
                "ci": [math.nan, math.nan], "n": len(va), "confidence": CONFIDENCE, "verdict": word,
                "diverged_a": bad_a, "diverged_b": bad_b}
    c = paired(va, vb)
    return {**c.to_json(), "verdict": c.verdict(lower_is_better=True), "diverged_a": 0, "diverged_b": 0}


_WORDS = {"better": "beats", "worse": "loses to", "tie": "ties with"}


def verdict(task_name: str, results: Mapping[str, dict], kinds: Mapping[str, str]) -> str:
    """One line: how each program compares with the best baseline (lowest fresh mean among those that never
    diverged), paired on the fresh seeds with a 95% interval of the mean difference."""
    def best(name):
        return results[name].get("best")

    def clean(name):
        return best(name) is not None and math.isfinite(best(name)["val_loss_mean"])

    baselines = [n for n in results if kinds[n] == "baseline" and clean(n)]
    programs = [n for n in results if kinds[n] == "program"]
    ranked = sorted((n for n in results if clean(n)), key=lambda n: best(n)["val_loss_mean"])
    if not ranked and not any(best(n) for n in results):
        return f"**{task_name}**: every optimizer diverged at every tuning point."
    if not programs or not baselines:
        if not ranked:
            return f"**{task_name}**: every optimizer diverged on some fresh seed."
        top = ranked[0]
        return f"**{task_name}**: lowest val loss: {top} ({plus_minus(best(top)['val_loss_mean'], best(top)['val_loss_se'])})."
    ref = min(baselines, key=lambda n: best(n)["val_loss_mean"])
    rb = best(ref)
    parts = []
    for name in programs:
        b = best(name)
        if b is None:
            parts.append(f"{name} diverged at every tuning point")
            continue
        c = compare(b, rb)
        if c["diverged_a"] or c["diverged_b"]:
            parts.append(f"{name} {_WORDS[c['verdict']]} the best baseline {ref} (diverged on {c['diverged_a']} of "
                         f"{c['n']} fresh seeds)")
            continue
        lo, hi = c["ci"]
        rel = c["difference"] / abs(rb["val_loss_mean"]) if rb["val_loss_mean"] else math.nan
        parts.append(f"{name} {_WORDS[c['verdict']]} the best baseline {ref} "
                     f"({plus_minus(b['val_loss_mean'], b['val_loss_se'])} vs {plus_minus(rb['val_loss_mean'], rb['val_loss_se'])},"
                     f" {rel:+.1%}; paired difference {c['difference']:+.3g}, {c['confidence']:.0%} CI "
                     f"[{lo:+.3g}, {hi:+.3g}], {c['n']} fresh seeds)"
                     + replication_note(results[name].get("paired", {}).get(ref)))
    return f"**{task_name}**: " + "; ".join(parts) + "."


def replication_note(paired: dict | None) -> str:
    """``; replicated on N new seeds: ...`` for a paired comparison that ``replicate_seeds`` tested again, else
    ''. Confirmed: the second test, on seeds no earlier number used, gives the same verdict."""
    rep = (paired or {}).get("replication")
    if not rep:
        return ""
    if rep["mean_a"] is None or rep["mean_b"] is None or rep.get("diverged_a") or rep.get("diverged_b"):
        shown = f"{rep['verdict']} (a run diverged)"
    else:
        lo, hi = rep["ci"]
        shown = f"x{rep['mean_a'] / rep['mean_b']:.3f}, {rep['verdict']} (95% CI [{lo:+.3g}, {hi:+.3g}])"
    word = "confirmed" if rep["confirmed"] else "NOT confirmed"
    return f"; replicated on {rep['n']} new seeds: {shown}: {word}"


def _vs_cell(b: dict, ref: dict | None, is_ref: bool) -> str:
    if ref is None or not math.isfinite(b["val_loss_mean"]) or not math.isfinite(ref["val_loss_mean"]):
        return "-"
    if is_ref:
        return "1.000"
    c = compare(b, ref)
    if c["diverged_a"] or c["diverged_b"]:
        return f"{b['val_loss_mean'] / ref['val_loss_mean']:.3f} ({c['verdict']})"
    lo, hi = c["ci"]
    return f"{b['val_loss_mean'] / ref['val_loss_mean']:.3f} ({c['verdict']}: Δ [{lo:+.2g}, {hi:+.2g}])"


def task_markdown(task_name: str, info: dict, results: Mapping[str, dict], kinds: Mapping[str, str]) -> str:
    has_acc = any((r.get("best") or {}).get("accuracy_mean") is not None for r in results.values())
    ref = results.get("AdamW", {}).get("best")
    head = ("| optimizer | val loss, fresh seeds (mean ± s.e.) | vs AdamW (paired 95% CI) |"
            + (" val accuracy |" if has_acc else "")
            + " chosen lr (x nominal) | chosen wd | tuning val loss | trials | diverged (tuning, fresh) |")
    budgets = sorted({r["budget"] for r in results.values()})
    intro = (f"{info['steps']} steps, {info['params']} parameters, nominal lr {info['nominal_lr']:g}. Tuner "
             f"`{info['tuner']}`: {'/'.join(map(str, budgets))} lr x wd trials per optimizer, {info['seeds']} "
             f"tuning seeds each; the chosen point reported on {info['fresh_seeds']} fresh seeds.")
    lines = [f"### {task_name}", "", intro, "", head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        b = r.get("best")
        label = name + (" (program)" if kinds[name] == "program" else "")
        if b is None:
            cells = [label, "diverged", "-"] + (["-"] if has_acc else []) + ["-", "-", "diverged"]
            fresh_bad = "-"
        else:
            lr = f"{b['lr']:.3g} ({b['lr_multiplier']:.3g})" + (" edge" if b["at_lr_edge"] else "")
            cells = [label, plus_minus(b["val_loss_mean"], b["val_loss_se"]), _vs_cell(b, ref, name == "AdamW")]
            if has_acc:
                acc = b.get("accuracy_mean")
                cells.append(plus_minus(acc, b["accuracy_se"], 3) if acc is not None else "-")
            cells += [lr, f"{b['wd']:.3g}", plus_minus(b["tuning_val_loss_mean"], b["tuning_val_loss_se"])]
            fresh_bad = f"{b['fresh_diverged']}/{len(b['val_loss_seeds'])}"
        cells.append(str(r["budget"]))
        cells.append(f"{r['diverged_runs']}/{r['runs']}, {fresh_bad}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", verdict(task_name, results, kinds), "", f"![training loss](curves_{task_name}.png)", ""]
    return "\n".join(lines)


def curves_png(task_name: str, results: Mapping[str, dict]) -> bytes:
    """Training loss (mean ± s.e. over the fresh seeds) at each optimizer's chosen point, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for name, r in results.items():
        b = r.get("best")
        if b is None:
            continue
        steps = np.asarray(b["curve_steps"])
        mean = np.asarray([np.nan if x is None else x for x in b["curve_mean"]], np.float64)
        se = np.asarray([np.nan if x is None else x for x in b["curve_se"]], np.float64)
        line, = ax.plot(steps, mean, label=f"{name} (lr {b['lr']:.3g}, wd {b['wd']:.3g})")
        ax.fill_between(steps, mean - se, mean + se, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (window mean)")
    ax.set_title(f"{task_name}: each optimizer at its chosen (lr, wd), fresh seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _offset_note(settings: dict) -> str:
    """The fresh seeds' keys (``discover transfer --fresh-seed-offset`` moves them: a replication)."""
    offset = settings.get("fresh_seed_offset")
    return "" if offset is None else f" (keys {offset} .. {offset + settings['fresh_seeds'] - 1})"


def transfer_markdown(report: dict, sections: list[str], verdicts: list[str], optimizers) -> str:
    s = report["settings"]
    if s["tuner"] == "grid":
        tuning = (f"the grid lr = nominal lr x {s['lr_multipliers']} by decoupled weight decay {s['wd_grid']} "
                  f"(`w <- w - lr * wd * w`), {s['budget']} points, all in one vmapped call per optimizer and task")
    else:
        box = ", ".join(f"{d['name']} in [{d['low']:.3g}, {d['high']:.3g}]" for d in s["bo_box"])
        tuning = (f"Bayesian optimization ({s['bo']}) over {box}, decoupled weight decay (`w <- w - lr * wd * w`): "
                  f"{s['budget']} trials in rounds, one vmapped call per round")
    lines = [
        "# discover transfer", "",
        (f"Each optimizer is tuned with the same budget of {s['budget']} (lr, wd) trials: {tuning}; "
         f"{s['seeds']} tuning seeds per trial. The chosen point (lowest mean validation loss over the tuning "
         f"seeds) is trained again on {s['fresh_seeds']} fresh seeds{_offset_note(s)}, the same for every optimizer; "
         f"every number in the tables comes from them (± is the standard error over the fresh seeds), and each verdict is a "
         f"paired comparison on them: the {CONFIDENCE:.0%} t-interval of the mean per-seed difference "
         f"(`beats`/`loses to` when it excludes 0). 'edge' marks a chosen lr at the end of the lr range. "
         f"Programs run through `to_optax` (what `discover export` gives)."
         + (f" Every optimizer's lr follows the same {s['lr_schedule']} schedule over each task's steps (the tuned "
            f"lr is its peak)." if s.get("lr_schedule", "constant") != "constant" else "")
         + (f" Every program-vs-baseline verdict that is not a tie was tested again on {s['replicate_seeds']} "
            f"further seeds (keys from {s['replication_seed_offset']}), both optimizers at their chosen points: "
            f"'confirmed' when the second verdict is the same, a guard against the chance wins of many comparisons."
            if s.get("replicate_seeds") else "")), "",
        "## Verdicts", "",
        *[f"- {v}" for v in verdicts], "",
        "## Results", "",
        *sections,
    ]
    progs = [o for o in optimizers if o.program is not None]
    if progs:
        lines += ["## Programs", ""]
        for o in progs:
            lines += [program_markdown(str(o.program), title=f"{o.name} ({o.source})"), ""]
    return "\n".join(lines)
