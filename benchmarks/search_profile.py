"""Where the quickstart's wall time goes: a shortened quickstart, profiled section by section.

    JAX_PLATFORMS=cpu python benchmarks/search_profile.py [--generations 20] [--config quickstart]
        [--set key=value ...] [--reference-cache PATH] [--json out.json]

Runs ``experiments/quickstart.yaml`` (or ``--config``) through the library with ``evolution.generations`` set to
``--generations`` and the held-out stage skipped (``heldout.enabled=false``), with a
:class:`discover.shared.profile.Profile` (what ``discover search --profile`` does), and reports:

* the trainer's share of the generations' wall time (steps 1..N: mutation, fingerprinting, the fitness cache,
  training, the funnel, TensorBoard, checkpoints), its median over the generations, and the breakdown;
* the same for the whole run, which adds the fixed costs: AdamW references, compilation, the start population;
* a projection to the config's own length (its ``evolution.generations``): the fixed costs once, plus that
  many generations at this run's mean cost per generation. The quickstart's goal is judged on it.

"trainer" is the ``training`` section alone: the scorers' trainer calls including the wait for their results,
without XLA compilation (its own section, ``compile``). Shares are within one process, so the machine's load
hits every section alike; absolute seconds are not comparable across runs on a shared machine.

The AdamW references are cached in ``--reference-cache`` (default: a file in the temp directory), so only the
first run on a machine pays for them (reported as ``references``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import tempfile

import jax

from discover.infra.experiments import resolve_config
from discover.infra.rundir import new_run_dir
from discover.searches import update_rules as search
from discover.searches.update_rules.search import UpdateRuleSearch
from discover.shared.profile import TRAINING, Profile, table_rows


def profile_run(config_name: str | None, generations: int, overrides: list[str], reference_cache: str,
                outputs: str = "background") -> dict:
    path = resolve_config(config_name)
    UpdateRuleSearch.outputs_in_background = outputs == "background"
    full = search.load_search_config(path, overrides)
    config = search.load_search_config(path, [f"fitness.reference_cache={reference_cache}", *overrides,
                                              f"evolution.generations={generations}", "heldout.enabled=false"])
    with tempfile.TemporaryDirectory() as root:
        summary = search.run_search(config, new_run_dir(config, root), profile=Profile())
    report = summary["profile"]
    run, steps = report["run"], report["steps"]
    per_step = [s["sections"].get(TRAINING, 0.0) / s["wall_s"] for s in report["per_step"]
                if s["wall_s"] > 0 and s["step"] <= config.evolution.generations]
    return {
        "config": str(path),
        "outputs": outputs,
        "generations": config.evolution.generations,
        "full_generations": full.evolution.generations,
        "wall_s": run["wall_s"],
        "steps_wall_s": steps["wall_s"],
        "trainer_share_steps": steps["trainer_share"],
        "trainer_share_steps_median": round(statistics.median(per_step), 4) if per_step else None,
        "trainer_share_run": run["trainer_share"],
        "trainer_share_projected": projected_share(report, full.evolution.generations),
        "sections_run": {k: v["share"] for k, v in run["sections"].items()},
        "sections_steps": {k: v["share"] for k, v in steps["sections"].items()},
        "seconds_run": {k: v["seconds"] for k, v in run["sections"].items()},
        "seconds_steps": {k: v["seconds"] for k, v in steps["sections"].items()},
        "off_thread_s": report["off_thread_s"],
        "table": [list(row) for row in table_rows(report)],
        "best_fitness": summary["best_fitness"],
        "candidates_scored": summary["candidates_scored"],
    }


def projected_share(report: dict, generations: int) -> float | None:
    """The trainer's share of a run of ``generations`` generations: this run's fixed costs (everything outside
    the steps) once, plus ``generations`` steps at this run's mean step."""
    run, steps = report["run"], report["steps"]
    if not steps["count"]:
        return None
    trainer = {view: view_["sections"].get(TRAINING, {"seconds": 0.0})["seconds"] for view, view_ in
               (("run", run), ("steps", steps))}
    scale = generations / steps["count"]
    fixed_wall, fixed_trainer = run["wall_s"] - steps["wall_s"], trainer["run"] - trainer["steps"]
    return round((fixed_trainer + scale * trainer["steps"]) / (fixed_wall + scale * steps["wall_s"]), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="experiment YAML or shipped name (default: quickstart)")
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--reference-cache", default=str(pathlib.Path(tempfile.gettempdir())
                                                     / "discover_search_profile_baselines.json"))
    ap.add_argument("--outputs", choices=["background", "inline"], default="background",
                    help="TensorBoard and checkpoint writes while the next generation computes (the search's "
                         "way), or inline after each generation (for comparison)")
    ap.add_argument("--json", type=pathlib.Path, default=None, help="write the result here")
    args = ap.parse_args()
    result = {"backend": jax.default_backend(), "devices": str(jax.devices()), "machine": platform.machine(),
              **profile_run(args.config, args.generations, args.overrides, args.reference_cache, args.outputs)}
    print(f"{'section':<12} {'seconds':>9} {'run':>7} {'steps':>7} {'calls':>6}")
    for name, seconds, run_share, step_share, calls in result["table"]:
        print(f"{name:<12} {seconds:>9} {run_share:>7} {step_share:>7} {calls:>6}")
    print(f"trainer: {result['trainer_share_steps']:.1%} of the {result['generations']} generations' wall time "
          f"(median per generation {result['trainer_share_steps_median']:.1%}), {result['trainer_share_run']:.1%} "
          f"of the whole run; projected for {result['full_generations']} generations: "
          f"{result['trainer_share_projected']:.1%}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
