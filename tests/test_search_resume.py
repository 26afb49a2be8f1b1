"""A search killed with SIGKILL, stopped with SIGTERM, and resumed from a damaged checkpoint ends with exactly
the hall of fame of a run never stopped."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from discover.infra.rundir import new_run_dir
from discover.searches import update_rules as search

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ROOT / "experiments" / "search_tiny.yaml"

SCRIPT = """
import json, sys
from discover.searches import update_rules as search
from discover.infra.rundir import RunDir, new_run_dir
mode, target, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
if mode == "new":
    config = search.load_search_config({tiny!r}, overrides)
    run_dir = new_run_dir(config, target)
else:
    run_dir = RunDir.open(target)
    config = search.resume_config(run_dir)
print("RUN_DIR", run_dir.path, flush=True)
summary = search.run_search(config, run_dir, resume=(mode == "resume"))
print("SUMMARY", json.dumps({{k: summary[k] for k in ("interrupted", "resumed_from", "generations_done")}}), flush=True)
"""


def _start(args, cache_dir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           # subprocesses share compiled code through JAX's persistent cache: only the first one compiles
           "JAX_COMPILATION_CACHE_DIR": str(cache_dir), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT.format(tiny=str(TINY)), *map(str, args)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _committed(ckpt: pathlib.Path, step: int) -> bool:
    return (ckpt / str(step) / "commit_success.txt").is_file()


def _wait_for_step(proc, ckpt: pathlib.Path, step: int, timeout=240.0):
    deadline = time.time() + timeout
    while not _committed(ckpt, step):
        if proc.poll() is not None:
            pytest.fail(f"the search ended before checkpoint {step}: {proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint {step} within {timeout} s")
        time.sleep(0.02)


def _finish(proc, timeout=300.0):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.split("SUMMARY", 1)[1])
    return summary, err


def _only_run_dir(root: pathlib.Path) -> pathlib.Path:
    (run,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("search-tiny")]
    return run


@pytest.mark.slow
def test_sigkill_sigterm_and_a_damaged_checkpoint_do_not_change_the_result(tmp_path):
    overrides = [f"fitness.reference_cache={tmp_path / 'baselines.json'}", "evolution.generations=10",
                 "checkpoint.every=2"]
    # The run never stopped (in this process).
    config = search.load_search_config(TINY, overrides)
    clean_dir = new_run_dir(config, tmp_path / "clean")
    clean = search.run_search(config, clean_dir)
    assert clean["generations_done"] == 10 and not clean["interrupted"]
    expected = clean_dir.file("hall_of_fame.json").read_text()

    cache_dir = tmp_path / "jax_cache"
    root = tmp_path / "stopped"
    # 1. SIGKILL right after the first checkpoint past the seed population.
    proc = _start(["new", root, *overrides], cache_dir)
    deadline = time.time() + 120
    while not root.exists() or not any(root.iterdir()):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    ckpt = _only_run_dir(root) / "ckpt"
    _wait_for_step(proc, ckpt, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = _only_run_dir(root)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "results.json").exists() and not _committed(ckpt, 10)

    # 2. Resume, then SIGTERM: the search checkpoints where it is and exits cleanly.
    proc = _start(["resume", run], cache_dir)
    _wait_for_step(proc, ckpt, 4)
    proc.send_signal(signal.SIGTERM)
    summary, _ = _finish(proc)
    assert summary["resumed_from"] >= 2
    assert summary["interrupted"] and 4 <= summary["generations_done"] < 10
    assert _committed(ckpt, summary["generations_done"]) and not (run / "results.json").exists()

    # 3. Damage the newest checkpoint (a truncated meta file): the resume falls back to the one before.
    steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit() and _committed(ckpt, int(p.name)))
    newest = ckpt / str(steps[-1])
    meta_file = newest / "meta" / "metadata"
    meta_file.write_bytes(meta_file.read_bytes()[: meta_file.stat().st_size // 2])
    proc = _start(["resume", run], cache_dir)
    summary, err = _finish(proc)
    assert f"checkpoint step {steps[-1]}" in err and "falling back" in err
    assert summary["resumed_from"] == steps[-2] and not summary["interrupted"]
    assert summary["generations_done"] == 10
    assert (run / "hall_of_fame.json").read_text() == expected
    assert (run / "best.py").read_text() == clean_dir.file("best.py").read_text()
