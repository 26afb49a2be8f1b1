"""Runs every benchmark and rewrites ``benchmarks/BENCHMARKS.md``: each figure with its baseline, the ratio,
the machine and the command that produced it.

    python benchmarks/run_all.py                  # default profile: modest sizes, < ~10 min on 2 CPU cores
    python benchmarks/run_all.py --profile long   # paper-sized CPU runs (+ quickstart search, MinAtar)
    python benchmarks/run_all.py --profile gpu --out /tmp/BENCHMARKS_gpu.md   # see benchmarks/gpu_check.sh
    python benchmarks/run_all.py --only scaling rl_throughput
    python benchmarks/run_all.py --only search_throughput --update   # re-measure one section of BENCHMARKS.md

Each benchmark runs as its own subprocess (a fresh JAX, its own flags), through this script's ``--child``
mode, which also records the process's peak RSS. Baselines always run in the same process as what they are
compared with, interleaved, and medians are reported (the machine is shared: absolute times are noisy, the
ratios much less so). A benchmark that fails or times out is reported as such, with its output's tail, and
the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import re
import resource
import runpy
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "BENCHMARKS.md"


@dataclasses.dataclass(frozen=True)
class Bench:
    key: str
    title: str
    script: str  # relative to the repo root
    args: tuple[str, ...]  # "{json}" is replaced by the path of the JSON output
    timeout_s: int
    output: str = "json_file"  # or "stdout_json": the script prints one JSON object
    about: str = ""  # one paragraph: what is measured against what
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables of the child process


QUICK_ARGS = {  # --quick: tiny sizes that only check the plumbing (the figures mean nothing)
    "interpreter_overhead": ("--task", "noisy_quadratic_proxy", "--population", "8", "--repeats", "1",
                             "--json", "{json}"),
    "search_throughput": ("--task", "noisy_quadratic_proxy", "--candidates", "8", "--batch", "8",
                          "--one-by-one", "2"),
    "rl_throughput": ("--envs", "CartPole-v1", "--members", "2", "--steps", "1024", "--repeats", "1",
                      "--json", "{json}"),
    "rl_throughput_minatar": ("--envs", "CartPole-v1", "--members", "4", "--steps", "1024", "--repeats", "1",
                              "--json", "{json}"),
    "scaling_devices": ("--task", "noisy_quadratic_proxy", "--populations", "16", "--lengths", "8",
                        "--population-length", "8", "--length-population", "16", "--steps", "5", "--repeats", "1",
                        "--json", "{json}"),
    "scaling": ("--task", "noisy_quadratic_proxy", "--populations", "4", "8", "--lengths", "8",
                "--length-population", "8", "--steps", "5", "--repeats", "1", "--json", "{json}"),
    "search_profile": ("--config", "search_tiny", "--generations", "2", "--json", "{json}"),
}


def _benches(profile: str, quick: bool = False) -> list[Bench]:
    benches = _profile_benches(profile)
    if quick:
        benches = [dataclasses.replace(b, args=QUICK_ARGS[b.key]) for b in benches]
    return benches


def _profile_benches(profile: str) -> list[Bench]:
    gpu = profile == "gpu"
    long = profile == "long"
    overhead = Bench(
        "interpreter_overhead", "Interpreter overhead", "benchmarks/interpreter_overhead.py",
        ("--population", "1024" if gpu else "64", "--repeats", "7" if long else "5", "--json", "{json}"),
        timeout_s=110 if gpu else 600,
        about="A population of small models trained with interpreted programs vs the same population trained "
              "with vmapped `optax.adamw` (same trainer, task, keys; same process, interleaved). Baseline: "
              "vmapped optax.adamw.",
    )
    search = Bench(
        "search_throughput", "Search throughput", "benchmarks/search_throughput.py",
        (("--candidates", "1024", "--batch", "512", "--one-by-one", "4") if gpu
         else ("--candidates", "128", "--batch", "64") if long else ("--candidates", "64", "--batch", "32"))
        + (("--quickstart",) if long else ()),
        timeout_s=110 if gpu else 900, output="stdout_json",
        about="Candidates scored per second by the batched search (one trainer call per padded batch, one "
              "compilation) vs the obvious alternative: each candidate exported with `to_optax` and its "
              "training loop jitted on its own, compared cold (compilation included on both sides) and warm "
              "(execution only on both sides). Baseline: one by one.",
    )
    rl = []
    if gpu:  # 1024+ environments per call: CartPole 4 envs x 256 members, MinAtar 64 envs x 16 members
        rl = [
            Bench("rl_throughput", "RL throughput (CartPole, 1024 envs)", "benchmarks/rl_throughput.py",
                  ("--envs", "CartPole-v1", "--members", "256", "--json", "{json}"), timeout_s=150),
            Bench("rl_throughput_minatar", "RL throughput (MinAtar, 1024 envs)", "benchmarks/rl_throughput.py",
                  ("--envs", "SpaceInvaders-MinAtar", "--members", "16", "--json", "{json}"), timeout_s=90),
        ]
    else:
        envs = ("CartPole-v1", "SpaceInvaders-MinAtar") if long else ("CartPole-v1",)
        rl = [Bench("rl_throughput", "RL throughput", "benchmarks/rl_throughput.py",
                    ("--envs", *envs, "--members", "64" if long else "32", "--json", "{json}"),
                    timeout_s=900)]
    rl = [dataclasses.replace(
        b, about="Environment steps per second of the RL search's population trainer (members x seeds, one "
                 "jitted call, each member with its own drift network) vs PureJaxRL-style PPO, one agent per "
                 "call, same config. Baseline: plain PPO.") for b in rl]
    scaling = Bench(
        "scaling", "Scaling with population size and program length", "benchmarks/scaling.py",
        (("--populations", "256", "1024", "4096", "--lengths", "16", "--length-population", "1024")
         if gpu else ()) + ("--steps", "150" if long else "50", "--repeats", "5" if long else "3",
                            "--json", "{json}"),
        timeout_s=150 if gpu else 900,
        about="Time per training step of the interpreter vs vmapped AdamW at each population size and program "
              "length, in the same process, interleaved; XLA working memory of both compiled trainers. "
              "Baseline: vmapped optax.adamw.",
    )
    # Sharding over devices: on a CPU, XLA splits the host into N devices; on a GPU machine, its GPUs.
    cpu_devices = str(min(4, os.cpu_count() or 1) if (os.cpu_count() or 1) > 1 else 2)
    devices = Bench(
        "scaling_devices", "Sharding the population over devices", "benchmarks/scaling.py",
        ("--populations", "64", "256", "--lengths", "16", "--length-population", "64",
         "--steps", "150" if long else "50", "--repeats", "5" if long else "3", "--json", "{json}"),
        timeout_s=900,
        about="The interpreter trainer through `discover.infra.sharding.sharded` on a mesh over all devices vs the same "
              "on a 1-device mesh, same process, interleaved. On a CPU the devices are virtual "
              f"(`XLA_FLAGS=--xla_force_host_platform_device_count={cpu_devices}`): XLA:CPU then runs one "
              "device per thread. Baseline: the 1-device mesh.",
        env=(() if gpu else (("XLA_FLAGS", f"--xla_force_host_platform_device_count={cpu_devices}"),)),
    )
    profile_bench = Bench(
        "search_profile", "Where the quickstart's wall time goes", "benchmarks/search_profile.py",
        ("--generations", "60" if long else "20", "--json", "{json}"),
        timeout_s=300 if gpu else 1200,
        about="`experiments/quickstart.yaml` shortened (held-out stage skipped) and profiled section by section "
              "(`discover search --profile`): the trainer's share of the generations' wall time and of the whole "
              "run (references, compilation, start population included), and a projection to the quickstart's "
              "60 generations. Trainer = the scorers' trainer calls with the wait for their results, "
              "compilation apart. Baseline: the wall time it is a share of.",
    )
    return [overhead, search, *rl, scaling, devices, profile_bench]


# ----------------------------------------------------------------------------------------------------------
# Running


def _child(rss_path: str, script: str, args: list[str]) -> None:
    """Runs ``script`` as __main__ in this process, then records the peak RSS (MB) in ``rss_path``."""
    sys.argv = [script, *args]
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
        pathlib.Path(rss_path).write_text(str(peak_kb / 1024))
    raise SystemExit(code)


def child_env(profile: str, bench: Bench | None = None) -> dict:
    env = dict(os.environ)
    if bench is not None:
        env.update(dict(bench.env))
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if profile != "gpu":
        env["JAX_PLATFORMS"] = "cpu"
    return env


def display_command(bench: Bench, profile: str) -> str:
    args = [a if a != "{json}" else "out.json" for a in bench.args]
    prefix = "".join(f"{k}={v} " for k, v in bench.env) + ("" if profile == "gpu" else "JAX_PLATFORMS=cpu ")
    return prefix + shlex.join(["python", bench.script, *args])


@dataclasses.dataclass
class Outcome:
    bench: Bench
    ok: bool
    result: Any = None
    wall_s: float = 0.0
    peak_rss_mb: float | None = None
    error: str = ""


def run_bench(bench: Bench, profile: str, workdir: pathlib.Path) -> Outcome:
    json_path = workdir / f"{bench.key}.json"
    rss_path = workdir / f"{bench.key}.rss"
    args = [str(json_path) if a == "{json}" else a for a in bench.args]
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", str(rss_path), bench.script, *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, env=child_env(profile, bench), capture_output=True,
                              text=True, timeout=bench.timeout_s)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return Outcome(bench, False, wall_s=time.perf_counter() - start,
                       error=f"timed out after {bench.timeout_s} s\n{tail}")
    wall = time.perf_counter() - start
    rss = float(rss_path.read_text()) if rss_path.is_file() else None
    if proc.returncode != 0:
        return Outcome(bench, False, wall_s=wall, peak_rss_mb=rss,
                       error=f"exit status {proc.returncode}\n{(proc.stdout + proc.stderr)[-3000:]}")
    try:
        if bench.output == "stdout_json":
            text = proc.stdout
            result = json.loads(text[text.index("{"):])
            json_path.write_text(json.dumps(result, indent=2) + "\n")  # kept with the others (--json-dir)
        else:
            result = json.loads(json_path.read_text())
    except (ValueError, OSError) as exc:
        return Outcome(bench, False, wall_s=wall, peak_rss_mb=rss,
                       error=f"no readable JSON result ({exc})\n{proc.stdout[-2000:]}")
    return Outcome(bench, True, result, wall, rss)


def describe_machine(profile: str) -> str:
    """One line: accelerator(s) as JAX sees them, CPU model and cores, JAX version."""
    probe = (
        "import jax, json; d = jax.devices(); "
        "print(json.dumps([len(d), getattr(d[0], 'device_kind', d[0].platform), jax.default_backend(), "
        "jax.__version__]))"
    )
    try:
        out = subprocess.run([sys.executable, "-c", probe], env=child_env(profile), capture_output=True,
                             text=True, timeout=120, check=True).stdout
        count, kind, backend, version = json.loads(out.strip().splitlines()[-1])
        devices = f"{count} x {kind} ({backend}), JAX {version}"
    except (subprocess.SubprocessError, ValueError, IndexError):
        devices = "JAX devices unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{devices}; {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}"


# ----------------------------------------------------------------------------------------------------------
# Rendering: one table of headline figures per benchmark (figure, value, baseline, baseline value, ratio)


def _f(x: float) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}" if abs(x) >= 0.01 else f"{x:.2e}"


def _rows_interpreter_overhead(r: dict) -> tuple[list[tuple], list[str]]:
    base = next(row for row in r["rows"] if "optax" in row["variant"])
    rows = [(f"{row['variant']}: ms / step", _f(row["ms_per_step"]), base["variant"], _f(base["ms_per_step"]),
             f"{row['ratio']:.2f}x") for row in r["rows"] if row is not base]
    notes = [(f"Task `{r['task']}` ({r['params_per_member']} params/member, {r['steps']} steps), population "
             f"{r['population']}, max program length {r['max_len']}, median of {r['repeats']} interleaved runs. "
             f"Interpreter compilations for three different populations: {r['interpreter_compilations']}.")]
    return rows, notes


def _rows_search_throughput(r: dict) -> tuple[list[tuple], list[str]]:
    rows = [
        ("cold: batched, its one compilation included: candidates / s",
         _f(r["batched_cold_candidates_per_s"]), "one by one (to_optax + jit each), compilations included",
         _f(r["one_by_one_cold_candidates_per_s"]), f"{r['speedup_cold']:.1f}x as fast"),
        ("warm: batched, already compiled: candidates / s", _f(r["batched_warm_candidates_per_s"]),
         "one by one, already compiled (execution only)", _f(r["one_by_one_warm_candidates_per_s"]),
         f"{r['speedup_warm']:.2f}x as fast"),
    ]
    notes = [(f"Task `{r['task']}`, {r['candidates']} candidates in batches of {r['batch']}; one by one over the "
             f"first {r['one_by_one_candidates']}; each variant timed once. Cold: every function compiled on first use (a search's case: "
             f"each candidate is a new program); the batched cold rate spreads one compilation over "
             f"{r['candidates']} candidates, a search spreads it over thousands. Warm: the same candidates again, "
             f"execution only. Trainer compilations: {r['trainer_compiles']}. Both paths agree on the validation "
             f"losses: {r['val_losses_agree']} ({r['finite_candidates']} finite candidates).")]
    q = r.get("quickstart")
    if q:
        notes.append(f"`experiments/quickstart.yaml` end to end: {q['wall_time_s']:.0f} s, peak RSS "
                     f"{q['peak_rss_mb']:.0f} MB, trainer compilations {q['trainer_compiles']}, best fitness "
                     f"{q['best_fitness']:.4g} vs the AdamW seed's {q['seed_fitness']:.4g}.")
    return rows, notes


def _rows_rl_throughput(r: list) -> tuple[list[tuple], list[str]]:
    rows, notes = [], []
    for row in r:
        env, members = row["env"], row["members"]
        plain_s = row["steps_per_agent"] / row["plain_steps_per_s"]
        rows.append((f"{env}: env steps / s, {members} members (all)", _f(row["population_steps_per_s"]),
                     "plain PPO, 1 agent", _f(row["plain_steps_per_s"]),
                     f"{row['population_steps_per_s'] / row['plain_steps_per_s']:.1f}x as fast"))
        wall = row.get("cost_vs_plain_wall", row.get("per_member_cost_vs_plain"))
        rows.append((f"{env}: wall seconds per member (TA-LPO drift)", _f(wall * plain_s),
                     "plain PPO, seconds per agent", _f(plain_s), f"{wall:.2f}x"))
        if "cost_vs_plain_cpu" in row:
            cpu = row.get("plain_cpu_s")
            rows.append((f"{env}: CPU seconds per member (TA-LPO drift)",
                         "-" if cpu is None else _f(row["cost_vs_plain_cpu"] * cpu),
                         "plain PPO, CPU seconds per agent", "-" if cpu is None else _f(cpu),
                         f"{row['cost_vs_plain_cpu']:.2f}x"))
        if "batched_ppo_cost_vs_plain_wall" in row:
            rows.append((f"{env}: wall seconds per member, clipped PPO vmapped (no drift network)",
                         _f(row["batched_ppo_cost_vs_plain_wall"] * plain_s), "plain PPO, seconds per agent",
                         _f(plain_s), f"{row['batched_ppo_cost_vs_plain_wall']:.2f}x"))
        compile_s = row.get("compile_s") or {"plain": row.get("plain_compile_s"),
                                              "population": row.get("population_compile_s")}
        shown = ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items() if v is not None)
        rounds = f"best of {row['repeats']} interleaved rounds each; " if "repeats" in row else ""
        on = f" on the {row['backend'].upper()}" if "backend" in row else ""
        notes.append(f"{env}{on}: {row['steps_per_agent']:,} env steps per agent; {rounds}compile times: {shown}.")
    return rows, notes


def _rows_scaling(r: dict) -> tuple[list[tuple], list[str]]:
    rows = []
    for p in r["by_population"]:
        rows.append((f"P={p['population']}, {p['length']} statements: interpreter ms / step",
                     _f(p["ms_per_step"]["interpreter"]), "vmapped AdamW", _f(p["ms_per_step"]["adamw"]),
                     f"{p['ratio']:.2f}x"))
        if "interpreter_sharded" in p["ms_per_step"]:
            rows.append((f"P={p['population']}: the same via `sharded` (1 device) ms / step",
                         _f(p["ms_per_step"]["interpreter_sharded"]), "vmapped AdamW",
                         _f(p["ms_per_step"]["adamw"]), f"{p['sharded_ratio']:.2f}x"))
    for p in r["by_length"]:
        rows.append((f"{p['length']} statements, P={p['population']}: interpreter ms / step",
                     _f(p["ms_per_step"]["interpreter"]), "vmapped AdamW", _f(p["ms_per_step"]["adamw"]),
                     f"{p['ratio']:.2f}x"))
    notes = [(f"Task `{r['task']}` ({r['params_per_member']} params/member), {r['steps']} steps per call, median "
             f"of {r['repeats']} interleaved runs. Programs: seeds grown by random insertions to the exact length, "
             "then random op / argument changes: nearly every member runs a different op at every statement, the "
             "interpreter's worst case (a search population, mostly seeds and their near mutants, costs less: see "
             "Interpreter overhead). `sharded` on a CPU trains the members in chunks of 8 (what makes the numbers "
             "independent of the device count), which is also faster than one batch here.")]
    return rows, notes


def _rows_scaling_devices(r: dict) -> tuple[list[tuple], list[str]]:
    rows = []
    for p in r["by_population"]:
        if "all_devices_vs_one" not in p:
            continue
        one = p["ms_per_step"]["interpreter_sharded"]
        rows.append((f"P={p['population']}: sharded over {p['devices']} devices, ms / step",
                     _f(one * p["all_devices_vs_one"]), "the same on a 1-device mesh", _f(one),
                     f"{p['all_devices_vs_one']:.2f}x"))
    notes = [(f"Task `{r['task']}`, programs of {r['population_length']} statements, {r['steps']} steps per call, "
             f"median of {r['repeats']} interleaved runs; {r['machine']}.")]
    if not rows:
        notes.append("Only one device was visible: nothing to compare.")
    return rows, notes


def _rows_search_profile(r: dict) -> tuple[list[tuple], list[str]]:
    trainer = {view: r[f"seconds_{view}"].get("training", 0.0) for view in ("steps", "run")}
    rows = [
        (f"trainer seconds in the {r['generations']} generations", _f(trainer["steps"]),
         "the generations' wall time", _f(r["steps_wall_s"]), f"{r['trainer_share_steps']:.1%}"),
        ("trainer seconds in the whole run", _f(trainer["run"]), "the run's wall time", _f(r["wall_s"]),
         f"{r['trainer_share_run']:.1%}"),
        (f"trainer share projected for {r['full_generations']} generations", "-", "-", "-",
         f"{r['trainer_share_projected']:.1%}"),
    ]
    shown = "; ".join(f"{name} {run_share} / {step_share}" for name, _s, run_share, step_share, _c in r["table"])
    notes = [(f"Share of the run / of the generations, per section: {shown}. Median over the generations of the "
              f"trainer's share: {r['trainer_share_steps_median']:.1%}.")]
    if r.get("off_thread_s"):
        notes.append("Off the critical path (a worker thread, while the next generation computes): "
                     + ", ".join(f"{k} {v:.2f} s" for k, v in r["off_thread_s"].items()) + ".")
    return rows, notes


def _rows_memory(outcomes: list[Outcome]) -> tuple[list[tuple], list[str]]:
    rows = []
    scaling = next((o for o in outcomes if o.bench.key == "scaling" and o.ok), None)
    if scaling is not None:
        for p in scaling.result["by_population"]:
            mem = p["temp_bytes"]
            if mem["interpreter"] is not None and mem["adamw"]:
                rows.append((f"P={p['population']}: XLA working memory of the interpreter trainer (MB)",
                             _f(mem["interpreter"] / 2**20), "vmapped AdamW trainer",
                             _f(mem["adamw"] / 2**20), f"{mem['interpreter'] / mem['adamw']:.2f}x"))
    notes = [("XLA working memory: `temp_size_in_bytes` of the compiled trainer (`memory_analysis()`); "
             "parameters, gradients and optimizer state of every member live there.")]
    peaks = [f"{o.bench.key} {o.peak_rss_mb:.0f} MB" for o in outcomes if o.peak_rss_mb is not None]
    if peaks:
        notes.append("Peak RSS of each benchmark process: " + ", ".join(peaks) + ".")
    return rows, notes


# Each benchmark's goal (from its issue), checked on the figures of this run: (text, met?).
def _goal_interpreter_overhead(r: dict) -> tuple[str, bool]:
    ratio = next(row["ratio"] for row in r["rows"] if "AdamW" in row["variant"] and "optax" not in row["variant"])
    mixed = next(row["ratio"] for row in r["rows"] if "mixed" in row["variant"])
    return (f"interpreted AdamW within 1.5x of vmapped optax.adamw (measured {ratio:.2f}x), a mixed population "
            f"within 2x (measured {mixed:.2f}x)"), ratio <= 1.5 and mixed <= 2.0


def _goal_scaling(r: dict) -> tuple[str, bool]:
    worst = next((p["ratio"] for p in r["by_population"] if p["population"] == 64 and p["length"] == 16), None)
    if worst is None:
        return "worst case (P = 64, 16 statements) within 4x of vmapped AdamW: not measured in this run", False
    return f"worst case (P = 64, 16 statements) within 4x of vmapped AdamW (measured {worst:.2f}x)", worst <= 4.0


def _goal_search_throughput(r: dict) -> tuple[str, bool]:
    # Like with like: compilation included on both sides (a search compiles every new one-by-one program).
    text = (f"batched search >= 10x the one-by-one candidates / s, compilation included on both sides "
            f"(measured {r['speedup_cold']:.1f}x; warm, both compiled: {r['speedup_warm']:.2f}x)")
    # Issue 13: the batched search at least as fast as already-compiled programs one by one (the warm row).
    text += f"; warm >= 1.0x (issue 13; measured {r['speedup_warm']:.2f}x)"
    met = r["speedup_cold"] >= 10 and r["speedup_warm"] >= 1.0
    q = r.get("quickstart")
    if q:
        text += f"; quickstart peak RSS < 1 GiB (measured {q['peak_rss_mb']:.0f} MB)"
        met = met and q["peak_rss_mb"] < 1024
    return text, met


def _goal_rl_throughput(r: list) -> tuple[str, bool]:
    # Judged on both clocks: wall time flatters the population on a shared machine (it keeps both cores busy
    # where one agent leaves one idle), CPU seconds count the work.
    shown = ", ".join(f"{row['env']} wall {row['cost_vs_plain_wall']:.2f}x, CPU {row['cost_vs_plain_cpu']:.2f}x"
                      for row in r)
    met = all(row["cost_vs_plain_wall"] <= 1.25 and row["cost_vs_plain_cpu"] <= 1.25 for row in r)
    return f"per-member cost within 1.25x of plain PPO in wall and in CPU seconds (measured {shown})", met


def _goal_search_profile(r: dict) -> tuple[str, bool]:
    share = r["trainer_share_projected"]
    return (f"share of the quickstart's wall time spent in the trainer >= 85% (projected for its "
            f"{r['full_generations']} generations, held-out stage skipped, compilation not counted as the trainer: "
            f"{share:.1%}; the generations alone: {r['trainer_share_steps']:.1%})"), share >= 0.85


GOALS: dict[str, Callable[[Any], tuple[str, bool]]] = {
    "search_profile": _goal_search_profile,
    "interpreter_overhead": _goal_interpreter_overhead,
    "scaling": _goal_scaling,
    "search_throughput": _goal_search_throughput,
    "rl_throughput": _goal_rl_throughput,
    "rl_throughput_minatar": _goal_rl_throughput,
}

# Findings from development that a run does not re-measure (kept here so that regenerating the file keeps them).
NOTES = {
    "interpreter_overhead": (
        "Development notes (interpreter, not re-measured here): a per-member `lax.switch` loop (`lax.map` over "
        "members) ran at 8.7x (about 16 us of XLA:CPU control-flow overhead per statement and member); one "
        "select over every op at 14.7x; grouping costly ops 9 to a cond instead of one each: 2.1x / 5.0x; "
        "computing costly ops on compacted member rows when few members use them: 3.1x / 5.5x. Issue 13 (best of "
        "9 interleaved runs on a loaded 2-core machine, AdamW x 64 / mixed, each row against optax in the same "
        "process): before, 1.96x / 3.44x; scalar statements (elementwise on lr, t and constants, such as the bias "
        "corrections) on (P,) values in a scalar file, dead statements not encoded, lr and t no longer broadcast "
        "to (P, N) rows: 1.64x / 2.58x (kept). Tried on top of that and dropped: one `lax.switch` per statement "
        "that gathers, computes and writes in one pass when every member uses one op group (7.1x / 11.5x: the "
        "register file as a branch operand and result is copied; returning only the new row: 2.0x / 3.6x); "
        "gathering the third argument outside the conds so no cond takes the register file (1.68x / 2.83x); the "
        "cheap `linear` group without a cond (2.05x / 3.09x); writing back only the state slots the population "
        "uses, in a loop (2.26x / 3.43x); `promise_in_bounds` gathers (no change); reordering each member's "
        "statements at encode time so members run the same op group at the same position (greedy list "
        "scheduling: 55 -> 60 group passes on the mixed population, 46 -> 51 on mutants of AdamW: worse). What "
        "remains is memory traffic per statement: two gathered (P, N) arguments, each used group's pass and the "
        "written row, where optax's AdamW is one fused loop."
    ),
    "scaling_devices": (
        "The gain is more than the core count alone explains (one device already has both cores); we have not "
        "found out why. End to end, measured by hand on the same 2-core machine (`XLA_FLAGS=--xla_force_host_"
        "platform_device_count=N JAX_PLATFORMS=cpu discover search --set evolution.generations=40`, one run each): "
        "the quickstart took 55 s on 1 device, 38.5 s on 2 and 47 s on 4, with the same hall of fame; 3 "
        "generations of `experiments/talpo_cartpole.yaml` (`--set es.generations=3`) took 108 s on 1 device and "
        "85 s on 2 (the RL search's result changes with the device count in the last bits: see README)."
    ),
    "rl_throughput": (
        "The CPU-seconds ratio varies between runs on a shared machine more than the wall ratio. Before the three "
        "variants were timed in interleaved rounds (the plain PPO best of 3, the population once), one run "
        "gave 1.07x wall and 1.35x CPU; a one-round run of the current script under heavy load from other "
        "processes gave 1.03x wall and 0.90x CPU."
    ),
    "search_profile": (
        "Development notes (2026-11-30, same machine, load 5-9 from other jobs; 20 generations, one run each): "
        "with TensorBoard logging and checkpoint writes after each generation on the main thread, the trainer "
        "took 97.5% and 97.6% of the generations (TensorBoard 0.3%, checkpoints 0.1-0.5%); with them on a worker "
        "thread while the next generation trains, 98.4%, 98.5% and 98.2% (what waits for them: under 0.05%). The "
        "rest of a generation is mutation (0.3-1.1%) and fingerprinting (0.6-1.5%), which the next round of the "
        "same generation needs. Outside the generations, compilation (68 XLA compilations, most of the time in the ten "
        "trainers: eight pool tasks, two meta-validation tasks) took 19-107 s by load: the goal's gap. JAX's persistent compilation cache "
        "(`JAX_COMPILATION_CACHE_DIR`, 1.7 MB here) cut it from 29.6 s to 3.1 s on a second run (whole run 63% "
        "-> 93%, projected 80% -> 96%). Compiling on two threads does not help here: four toy jitted functions took "
        "3x as long on two threads as one after another (one try, loaded machine; not investigated)."
        " The full quickstart as shipped (`JAX_PLATFORMS=cpu /usr/bin/time -v discover search --profile`, 2026-11-30 08:36, idle machine, after the data-as-argument trainer): 4 min 18 s wall, 350 s user CPU, peak RSS 958 MiB; the trainer 97.3% of the 60 generations but 28.7% of the run: the held-out stage (robustness, simplify, transfer) was one untimed section (52.3%), compilation 17.5%. With the held-out stage's trainer calls counted as training (08:48, same command; 4 min 41 s, peak RSS 940 MiB): trainer 77.6% of the run, compilation 15.7%, the transfer stage (lr x wd tuning, fresh seeds, report) 5.0%, everything else under 2%. Same hall of fame and verdicts as before the interpreter and trainer changes. With JAX's persistent compilation cache (`JAX_COMPILATION_CACHE_DIR=DIR`, same command run twice, 08:55-09:00, 2.2 MB of cache): first run 4 min 07 s, trainer 74.0%; the rerun 3 min 31 s, trainer 84.5% of the run (compile 18.1 s = 8.7%: compilations under JAX's 1 s caching threshold are not cached; transfer 5.6%), peak RSS 877 MiB, the same hall of fame and verdicts."
    ),
    "search_throughput": (
        "Once compiled, one specialized program trains faster than one interpreted candidate (the warm row); "
        "the batched search wins because every new program otherwise pays its own compilation (the cold row)."
    ),
}


RENDER: dict[str, Callable[[Any], tuple[list[tuple], list[str]]]] = {
    "interpreter_overhead": _rows_interpreter_overhead,
    "search_throughput": _rows_search_throughput,
    "rl_throughput": _rows_rl_throughput,
    "rl_throughput_minatar": _rows_rl_throughput,
    "scaling": _rows_scaling,
    "scaling_devices": _rows_scaling_devices,
    "search_profile": _rows_search_profile,
}


def _table(rows: list[tuple]) -> list[str]:
    lines = ["| figure | value | baseline | baseline value | ratio |", "|---|---:|---|---:|---:|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def section(o: Outcome, profile: str, machine: str, measured: str | None = None) -> list[str]:
    """A benchmark's markdown section; ``measured`` (a date and the command) when it was re-run alone."""
    b = o.bench
    lines = [f"## {b.title}", "", b.about, "", f"- Command: `{display_command(b, profile)}`",
             f"- Machine: {machine}"]
    if measured:
        lines.append(f"- Re-measured alone: {measured}")
    rss = f", peak RSS {o.peak_rss_mb:.0f} MB" if o.peak_rss_mb is not None else ""
    lines.append(f"- Wall time of the benchmark: {o.wall_s:.0f} s{rss}")
    lines.append("")
    if not o.ok:
        return [*lines, "**Failed:** " + o.error.splitlines()[0], "", "```", *o.error.splitlines()[1:][-30:],
                "```", ""]
    try:
        rows, notes = RENDER[b.key](o.result)
    except (KeyError, TypeError, StopIteration, ZeroDivisionError) as exc:
        return [*lines, f"**Could not read the figures** ({type(exc).__name__}: {exc}); raw result:", "",
                "```json", json.dumps(o.result, indent=1)[:4000], "```", ""]
    if b.key in GOALS:
        try:
            text, met = GOALS[b.key](o.result)
            notes = [f"Goal: {text}: **{'met' if met else 'not met'}**.", *notes]
        except (KeyError, TypeError, StopIteration):
            notes = ["Goal: could not be read from this result.", *notes]
    if b.key in NOTES:
        notes = [*notes, "", NOTES[b.key]]
    return [*lines, *_table(rows), "", *notes, ""]


def render(outcomes: list[Outcome], profile: str, machine: str, started: str, total_s: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        (f"Generated by `python benchmarks/run_all.py{'' if profile == 'default' else ' --profile ' + profile}` "
        f"on {started} in {total_s / 60:.1f} min (profile `{profile}`). Do not edit by hand: rerun it."),
        "",
        f"Machine: {machine}.",
        "",
        ("Every ratio compares two variants run in the same process, with the same statistic on both sides "
        "(each section says which: median or best of interleaved runs, or one timing each): the "
        "machine may be shared, so absolute times are noisy, the ratios much less so. Ratio = candidate / "
        "baseline: for times and memory lower is better; rows marked 'as fast' are throughput ratios (higher "
        "is better)."),
        "",
    ]
    for o in outcomes:
        lines += section(o, profile, machine)
    rows, notes = _rows_memory(outcomes)
    lines += ["## Memory", "", ("Working memory of the population trainers and peak memory of the benchmark "
              "processes (from the runs above)."), "", f"- Machine: {machine}", ""]
    if rows:
        lines += [*_table(rows), ""]
    lines += [*notes, ""]
    return "\n".join(lines)


def update_sections(text: str, outcomes: list[Outcome], profile: str, machine: str, measured: str) -> str:
    """``text`` (a BENCHMARKS.md) with the sections of ``outcomes`` replaced (a missing one goes before Memory)
    and their peak RSS updated in the Memory notes; every other section is kept as it was."""
    blocks, current = [], []  # blocks[0]: the header; then one block per "## " section
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("## ") and (current or blocks):
            blocks.append(current)
            current = []
        current.append(line)
    blocks.append(current)
    for o in outcomes:
        new = section(o, profile, machine, measured)
        at = next((i for i, b in enumerate(blocks) if b and b[0] == new[0]), None)
        if at is None:
            at = next((i for i, b in enumerate(blocks) if b and b[0] == "## Memory"), len(blocks))
            blocks.insert(at, new)
        else:
            blocks[at] = new
        if o.peak_rss_mb is not None:
            blocks = [[re.sub(rf"(?<![\w]){re.escape(o.bench.key)} \d+ MB", f"{o.bench.key} {o.peak_rss_mb:.0f} MB",
                              line) if line.startswith("Peak RSS of each benchmark") else line for line in b]
                      for b in blocks]
    return "\n".join(line for b in blocks for line in b).rstrip("\n") + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=["default", "long", "gpu"], default="default")
    ap.add_argument("--only", nargs="+", help="run only these benchmarks (keys: interpreter_overhead, "
                                              "search_throughput, rl_throughput, rl_throughput_minatar, scaling, scaling_devices, "
                                              "search_profile)")
    ap.add_argument("--out", type=pathlib.Path, default=None,
                    help=f"markdown written here (default {DEFAULT_OUT.relative_to(ROOT)}; with --only: not "
                         "written unless given)")
    ap.add_argument("--json-dir", type=pathlib.Path, default=None, help="keep the raw JSON results here")
    ap.add_argument("--print", action="store_true", help="also print the markdown")
    ap.add_argument("--update", action="store_true",
                    help="with --only: replace just those sections of the existing markdown (BENCHMARKS.md, or "
                         "--out), keeping every other section as it is; each replaced section says when it was "
                         "re-measured")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes: checks that everything runs (figures meaningless; never written to the "
                         "default BENCHMARKS.md)")
    args = ap.parse_args()
    if args.quick and args.out is not None and args.out.resolve() == DEFAULT_OUT:
        raise SystemExit("--quick figures are meaningless: write them somewhere else than BENCHMARKS.md")
    if args.update and (not args.only or args.quick):
        raise SystemExit("--update replaces the sections named by --only (and never with --quick figures)")
    benches = _benches(args.profile, args.quick)
    if args.only:
        known = {b.key for b in benches}
        unknown = [k for k in args.only if k not in known]
        if unknown:
            raise SystemExit(f"--only: unknown benchmark {unknown[0]!r} (known: {', '.join(sorted(known))})")
        benches = [b for b in benches if b.key in args.only]
    out = args.out if args.out is not None else (None if (args.only and not args.update) or args.quick
                                                 else DEFAULT_OUT)
    if args.update and not out.is_file():
        raise SystemExit(f"--update: {out} does not exist yet (run every benchmark once without --only)")
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = describe_machine(args.profile)
    t0 = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.json_dir or pathlib.Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for b in benches:
            print(f"[run_all] {b.key}: {display_command(b, args.profile)}", file=sys.stderr, flush=True)
            o = run_bench(b, args.profile, workdir)
            status = "ok" if o.ok else "FAILED: " + o.error.splitlines()[0]
            print(f"[run_all] {b.key}: {status} ({o.wall_s:.0f} s)", file=sys.stderr, flush=True)
            outcomes.append(o)
    if args.update:
        shown, skip = [], False  # the command as recorded: without where the raw JSON was kept
        for arg in sys.argv[1:]:
            if skip or arg == "--print":
                skip = False
            elif arg == "--json-dir":
                skip = True
            elif not arg.startswith("--json-dir="):
                shown.append(arg)
        command = shlex.join(["python", "benchmarks/run_all.py", *shown])
        text = update_sections(out.read_text(), outcomes, args.profile, machine, f"{started}, `{command}`")
    else:
        text = render(outcomes, args.profile, machine, started, time.perf_counter() - t0)
    if args.quick:
        text = text.replace("# Benchmarks\n", "# Benchmarks (--quick: plumbing check, figures meaningless)\n", 1)
    if out is not None:
        out.write_text(text)
        print(f"[run_all] wrote {out}", file=sys.stderr)
    if args.print or out is None:
        print(text)
    if not all(o.ok for o in outcomes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
