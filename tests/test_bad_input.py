"""Bad input at the CLI: one line naming what is wrong and where, exit code 2, no traceback, and nothing
already written is lost.

- drift files given to ``discover transfer`` that are not drifts (not a zip, a zip of something else, an npz
  whose ``__meta__`` is missing, not JSON, of another kind, or holds mistyped / unknown fields);
- run names that cannot be a folder name (too long, control characters, NUL, a path separator);
- checkpoints whose JSON was edited (caught by the digest), and checkpoints written consistently but holding
  what the run must not accept: a random generator that is not one of NumPy's, a program outside the run's
  search space. Those two are crafted through the public ``Checkpointer`` API (so the digest is right) and
  also tested on ``state_from_checkpoint`` / ``rng_from_json`` directly.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import zipfile

import jax
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from discover.cli import app
from discover.infra.checkpointing import Checkpointer, CheckpointError, rng_from_json
from discover.searches.update_rules.config import load_search_config
from discover.searches.update_rules.state import state_from_checkpoint
from discover.shared.drift_io import DriftFileError, load_drift, save_drift
from envs.ppo import PPOConfig
from search_spaces.drift import DriftConfig, make_drift

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ROOT / "experiments" / "search_tiny.yaml"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *words) -> str:
    """The single error line of a failed command (``warning:`` lines about the config aside)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------------------------
# Drift files


@pytest.fixture(scope="module")
def good_drift(tmp_path_factory) -> pathlib.Path:
    config = DriftConfig(family="talpo", hidden_size=8)
    params = make_drift(config).init(jax.random.PRNGKey(0))
    meta = {"drift": dataclasses.asdict(config), "env": "CartPole-v1", "ppo": dataclasses.asdict(PPOConfig())}
    return save_drift(tmp_path_factory.mktemp("drift") / "good.npz", params, meta)


def _good_meta(good: pathlib.Path) -> dict:
    with np.load(good) as data:
        return json.loads(str(data["__meta__"]))


def _with_meta(good: pathlib.Path, target: pathlib.Path, meta) -> pathlib.Path:
    """``good``'s parameters with ``__meta__`` replaced (a dict is written as JSON; None drops it)."""
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files if k != "__meta__"}
    if isinstance(meta, dict):
        meta = np.array(json.dumps(meta))
    if meta is not None:
        arrays["__meta__"] = meta
    with open(target, "wb") as f:
        np.savez(f, **arrays)
    return target


def _edited(**changes):
    """The good drift with its meta edited: ``key=value`` sets a top-level key (``None`` deletes it),
    ``drift__key=value`` a nested one."""

    def make(good: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
        meta = _good_meta(good)
        for key, value in changes.items():
            section, _, sub = key.partition("__")
            where = meta[section] if sub else meta
            name = sub or section
            if value is None:
                where.pop(name, None)
            else:
                where[name] = value
        return _with_meta(good, target, meta)

    return make


def _text_file(good, target):
    target.write_text("drift: not really\n")
    return target


def _zip_of_text(good, target):
    with zipfile.ZipFile(target, "w") as z:
        z.writestr("readme.txt", "a zip archive, but not a drift")
    return target


DRIFT_CASES = {
    "not-a-zip": (_text_file, ["not a saved drift", "not an npz archive"]),
    "zip-not-drift": (_zip_of_text, ["not a saved drift", "without __meta__"]),
    "npz-no-meta": (lambda good, t: _with_meta(good, t, None), ["without __meta__"]),
    "meta-not-text": (lambda good, t: _with_meta(good, t, np.arange(3)), ["__meta__ must be JSON text"]),
    "meta-not-json": (lambda good, t: _with_meta(good, t, np.array("{drift: 1")), ["__meta__ is not JSON"]),
    "meta-a-list": (lambda good, t: _with_meta(good, t, np.array("[1, 2]")), ["must be a JSON object, got list"]),
    "no-kind": (_edited(kind=None), ["__meta__ has no 'kind'"]),
    "unknown-kind": (_edited(kind="update_rule"), ["__meta__ kind is 'update_rule'", "not a drift"]),
    "no-drift": (_edited(drift=None), ["__meta__ has no 'drift'"]),
    "drift-not-object": (_edited(drift="talpo"), ["__meta__ drift: expected a JSON object, got str"]),
    "wrong-type": (_edited(drift__hidden_size="big"), ["__meta__ drift.hidden_size"]),
    "bool-for-number": (_edited(drift__init_scale=True), ["__meta__ drift.init_scale"]),
    "unknown-family": (_edited(drift__family="rainbow"), ["__meta__ drift.family"]),
    "unknown-drift-key": (_edited(drift__colour="blue"), ["__meta__ drift.colour"]),
    "ppo-init-on-schedule": (_edited(drift__family="ppo_schedule", drift__ppo_init=True),
                             ["__meta__ drift:", "ppo_schedule starts at PPO's drift already"]),
    "env-not-text": (_edited(env=3), ["__meta__ env: expected an environment name, got int"]),
    "unknown-env": (_edited(env="Pong-v9"), ["__meta__ env: unknown environment 'Pong-v9'"]),
    "ppo-wrong-type": (_edited(ppo__num_envs="4"), ["__meta__ ppo.num_envs"]),
    "no-ppo": (_edited(ppo=None), ["__meta__ has no 'ppo'"]),
    "params-mismatch": (_edited(drift__hidden_size=16), ["parameter", "hidden_size 16"]),
}


@pytest.mark.parametrize("case", list(DRIFT_CASES))
def test_transfer_refuses_a_file_that_is_not_a_drift(good_drift, tmp_path, case):
    make, words = DRIFT_CASES[case]
    target = make(good_drift, tmp_path / f"{case}.npz")
    before = target.read_bytes()
    out = tmp_path / "out"
    result = invoke("transfer", target, "--envs", "CartPole-v1", "--horizons", "1", "--seeds", "1", "--out", out)
    line = one_line_error(result, str(target), *words)
    assert line.startswith(f"error: {target}: ")
    assert not out.exists()  # failed at load, before any training or output
    assert target.read_bytes() == before


def test_the_good_drift_loads(good_drift):
    family, _, meta = load_drift(good_drift)
    assert family.config == DriftConfig(family="talpo", hidden_size=8) and meta["kind"] == "rl_drift"
    with pytest.raises(DriftFileError) as info:
        load_drift(good_drift.parent / "missing.npz")
    assert str(info.value) == f"{good_drift.parent / 'missing.npz'}: drift file not found"


# ----------------------------------------------------------------------------------------------------------
# Run names


@pytest.mark.parametrize(
    "value, words",
    [
        ("x" * 300, ["name: 300 bytes long", "at most 235 bytes fit"]),
        ('"' + "é" * 120 + '"', ["name: 240 bytes long"]),
        ('"tab\\there"', ["name: 'tab\\there' holds the control character U+0009"]),
        ('"bell\\a"', ["name:", "control character U+0007"]),
        ('"bad\\0name"', ["name: 'bad\\x00name' holds a NUL character"]),
        ("runs/mine", ["name: 'runs/mine' holds the path separator '/'"]),
        ('""', ["name: must not be empty"]),
    ],
    ids=["too-long", "too-many-bytes", "tab", "bell", "nul", "separator", "empty"],
)
def test_search_refuses_a_bad_run_name_before_creating_anything(tmp_path, value, words):
    out = tmp_path / "runs"
    result = invoke("search", TINY, "--set", f"name={value}", "--out", out)
    line = one_line_error(result, *words)
    assert line.startswith("error: name: ")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------
# Checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> pathlib.Path:
    """A finished tiny update-rule search (checkpoints at steps 0 and 2), written by `discover search`."""
    root = tmp_path_factory.mktemp("search")
    result = invoke("search", TINY, "--set", "evolution.generations=2", "--set", "refine.top_k=0", "--out", root)
    assert result.exit_code == 0, result.output
    (run,) = [p for p in root.iterdir() if (p / "config.yaml").is_file()]
    return run


def _copy_run(run: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the run (and of the reference cache next to it) that a test may damage."""
    for extra in run.parent.iterdir():
        if extra.is_file():
            shutil.copy2(extra, tmp_path / extra.name)
    return pathlib.Path(shutil.copytree(run, tmp_path / run.name))


def _files(run: pathlib.Path, under: str = "") -> dict[str, bytes]:
    base = run / under if under else run
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def _outside_ckpt(run: pathlib.Path) -> dict[str, bytes]:
    return {k: v for k, v in _files(run).items() if not k.startswith("ckpt/")}


def _steps(run: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (run / "ckpt").iterdir() if p.name.isdigit())


def _template(run: pathlib.Path) -> dict:
    population = yaml.safe_load((run / "config.yaml").read_text())["evolution"]["population"]
    return {"fitness": np.zeros((population,), np.float64), "birth": np.zeros((population,), np.int64)}


def _restore(run: pathlib.Path, step: int) -> tuple[dict, dict]:
    with Checkpointer(run / "ckpt", read_only=True) as ckpt:
        _, arrays, meta = ckpt.restore(_template(run), step=step)
    return arrays, meta


def _rewrite_step(run: pathlib.Path, step: int, edit) -> None:
    """Writes ``step`` again, consistently (right digests), with ``edit`` applied to its meta: what a buggy
    or foreign writer could leave behind."""
    arrays, meta = _restore(run, step)
    shutil.rmtree(run / "ckpt" / str(step))
    with Checkpointer(run / "ckpt", max_to_keep=None) as ckpt:
        assert ckpt.save(step, arrays, edit(meta))


def _foreign_rng(meta: dict) -> dict:
    state = json.loads(meta["rng"])
    state["bit_generator"] = "os.system"
    meta["rng"] = json.dumps(state)
    return meta


LONG_PROGRAM = "def rule(g, w, m, lr, t):\n" + "    m = interp(g, m, 0.9)\n" * 25 + "    return lr * m, m\n"


def test_resume_detects_edited_checkpoint_json(finished_run, tmp_path):
    """Every step's JSON edited (valid JSON, the rng renamed): the digest catches it, nothing is trusted."""
    run = _copy_run(finished_run, tmp_path)
    steps = _steps(run)
    assert len(steps) >= 2
    for step in steps:
        meta_file = run / "ckpt" / str(step) / "meta" / "metadata"
        record = json.loads(meta_file.read_text())
        record["user"] = _foreign_rng(record["user"])
        meta_file.write_text(json.dumps(record))
    before = _outside_ckpt(run)
    result = invoke("resume", run)
    one_line_error(result, "no readable checkpoint", "meta does not match its recorded checksum")
    assert _outside_ckpt(run) == before  # results, config and TensorBoard events untouched
    # The damaged steps are moved aside whole, not deleted.
    moved = sorted(p for p in (run / "ckpt").iterdir() if p.name.startswith("corrupt-"))
    assert len(moved) == len(steps)
    assert all("os.system" in (p / "meta" / "metadata").read_text() for p in moved)


def test_resume_refuses_a_foreign_bit_generator(finished_run, tmp_path):
    """A consistently written checkpoint naming an arbitrary attribute as its bit generator."""
    run = _copy_run(finished_run, tmp_path)
    step = _steps(run)[-1]
    _rewrite_step(run, step, _foreign_rng)
    before = _outside_ckpt(run)
    checkpoints = _files(run, "ckpt")
    result = invoke("resume", run)
    one_line_error(result, f"checkpoint step {step}", "bit generator 'os.system'")
    assert _outside_ckpt(run) == before and _files(run, "ckpt") == checkpoints


def test_resume_refuses_a_program_outside_the_search_space(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path)
    step = _steps(run)[-1]

    def too_long(meta):
        meta["population"][0]["program"] = LONG_PROGRAM
        return meta

    _rewrite_step(run, step, too_long)
    before = _files(run)
    result = invoke("resume", run)
    one_line_error(result, f"checkpoint step {step}: population[0]", "outside the run's search space",
                   "26 statements > max_len 20")
    assert _files(run) == before


# Unit level: the same checks without the CLI (they do not depend on how the search calls them).


@pytest.fixture(scope="module")
def saved_state(finished_run):
    step = _steps(finished_run)[-1]
    arrays, meta = _restore(finished_run, step)
    space = load_search_config(finished_run / "config.yaml").space.space()
    return step, arrays, meta, space


def test_state_from_checkpoint_accepts_the_saved_state(saved_state):
    step, arrays, meta, space = saved_state
    state = state_from_checkpoint(arrays, json.loads(json.dumps(meta)), space)
    assert state.generation + int(state.refined) == step
    assert len(state.population) == len(arrays["fitness"]) and state.hall


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda m: m["population"][1].__setitem__("program", LONG_PROGRAM),
         ["population[1]: program is outside the run's search space (26 statements > max_len 20)"]),
        (lambda m: m["hall"][0].__setitem__("program", "def rule(g, w, lr, t):\n    return lr * sign(g\n"),
         ["hall of fame[0]: program does not parse (line 2"]),
        (lambda m: m["hall"][0].__setitem__("program",
                                            "def rule(g, w, a, b, c, d, lr, t):\n    return lr * g, a, b, c, d\n"),
         ["hall of fame[0]: program is outside", "4 state variables > n_state 3"]),
        (lambda m: m["population"][0].__setitem__("program", 42), ["population[0]: program does not parse"]),
        (_foreign_rng, ["random generator state names bit generator 'os.system'"]),
        (lambda m: m.pop("totals"), ["search state has no 'totals'"]),
        (lambda m: m.__setitem__("population", m["population"][:-1]), ["search state is malformed"]),
    ],
    ids=["too-long", "unparsable", "too-much-state", "not-text", "foreign-rng", "missing-key", "short"],
)
def test_state_from_checkpoint_refuses(saved_state, edit, words):
    step, arrays, meta, space = saved_state
    meta = json.loads(json.dumps(meta))
    edit(meta)
    with pytest.raises(CheckpointError) as info:
        state_from_checkpoint(arrays, meta, space)
    text = str(info.value)
    assert text.startswith(f"checkpoint step {step}: ") and "\n" not in text
    for word in words:
        assert word in text, text


def test_rng_from_json_never_builds_an_arbitrary_attribute():
    for name in ("os.system", "RandomState", "Generator", "__import__", "bit_generator"):
        with pytest.raises(CheckpointError, match="known: PCG64, PCG64DXSM, MT19937, Philox, SFC64"):
            rng_from_json(json.dumps({"bit_generator": name, "state": {}}))
