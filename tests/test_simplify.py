"""discover simplify: identity folds and edits (discover.language.rewrite), the greedy loop (cheap scorers), the
meta-validation entry point and the CLI on a run directory."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from discover import cli
from discover.cli import app, load_program
from discover.infra.config import ConfigError
from discover.infra.rundir import RunDir
from discover.language import interpreter
from discover.language.analysis import remove_dead_code, structural_hash
from discover.language.optax_export import export_module
from discover.language.program import parse
from discover.language.rewrite import (
    candidate_edits,
    canonicalize,
    complexity,
    constant_cost,
    rounded_constants,
)
from discover.shared import simplify as simplify_module
from discover.shared.scoring import ROBUST_LR_MULTIPLIERS
from discover.shared.simplify import make_score_fn, run_references, run_simplify, scoring_setup, simplify
from envs.tasks import Task
from search_spaces.update_rules import SEED_NAMES, seed
from tests.strategies import programs, typical_constants

# Lion with dead code (junk, a state v nobody reads), exact no-ops (x * 1.0, + 0.0 * g, d / abs(d),
# sign(arctan(c)), (1 - 0.5) + 0.5) and near no-ops (arcsin of a tiny weight-decay term, + 1e-12 * g).
BLOATED_LION = """
def lion(g, w, m, v, lr, t):
    junk = exp(g) * 3.0
    v = interp(square(g), v, 0.999)
    c = interp(g, m, 0.9)
    c = arctan(c)
    m = interp(g, m, 0.99)
    m = m * 1.0
    d = sign(c)
    d = d / abs(d)
    wd = arcsin(0.001 * w)
    u = d + wd
    u = u + 0.0 * g
    k = 1.0 - 0.5
    update = lr * u
    update = update * (k + 0.5)
    update = update + 1e-12 * g
    return update, m, v
"""

# --- a cheap scorer: how far a program's updates are from a reference rule's, on a fixed input stream ------
TRAJ_BATCH, TRAJ_LEN, TRAJ_STATE, TRAJ_N, TRAJ_STEPS = 16, 24, 3, 64, 10
_rng = np.random.default_rng(0)
_G = jnp.asarray(_rng.normal(size=(TRAJ_STEPS, TRAJ_N)) * _rng.choice([1e-2, 1.0, 10.0], TRAJ_N), jnp.float32)
_W0 = jnp.asarray(_rng.normal(size=TRAJ_N), jnp.float32)


@jax.jit
def _trajectories(enc):
    P = enc.op.shape[0]
    regs = interpreter.init_registers(P, TRAJ_N, TRAJ_LEN, TRAJ_STATE)

    def step(carry, x):
        w, regs = carry
        g, t = x
        g = g + 0.5 * w  # the gradient depends on w: the state's feedback matters
        u, regs = interpreter.run_population(enc, regs, g, w, jnp.full((P,), 0.01), t, jnp.abs(g) + 0.1)
        return (w - u, regs), u

    init = (jnp.broadcast_to(_W0, (P, TRAJ_N)), regs)
    _, us = jax.lax.scan(step, init, (_G, jnp.arange(1, TRAJ_STEPS + 1, dtype=jnp.float32)))
    return jnp.moveaxis(us, 0, 1)


def trajectories(progs) -> np.ndarray:
    out = []
    for i in range(0, len(progs), TRAJ_BATCH):
        chunk = list(progs[i:i + TRAJ_BATCH])
        padded = chunk + [chunk[0]] * (TRAJ_BATCH - len(chunk))
        out.append(np.asarray(_trajectories(interpreter.encode(padded, TRAJ_LEN, TRAJ_STATE)))[: len(chunk)])
    return np.concatenate(out)


def distance_scorer(reference, calls=None):
    """fitness = 1 + mean |u - u_ref| / mean |u_ref| (1.0 = behaves exactly like `reference`)."""
    ref = trajectories([reference])[0]

    def score(progs):
        if calls is not None:
            calls.append(len(progs))
        u = trajectories(progs)
        return 1.0 + np.abs(u - ref).mean(axis=(1, 2)) / np.abs(ref).mean()

    return score


# ----------------------------------------------------------------------------------------------------------
# Folds
# ----------------------------------------------------------------------------------------------------------
def _body(program) -> list[str]:
    return [str(s) for s in program.statements]


@pytest.mark.parametrize("text, expected", [
    ("def f(g, lr, t):\n    a = square(g)\n    b = sqrt(a)\n    return b\n", ["b = abs(g)"]),
    ("def f(g, m, lr, t):\n    m = interp(g, m, 0.9)\n    a = abs(m)\n    u = m / a\n    return u, m\n",
     ["m = interp(g, m, 0.9)", "u = sign(m)"]),
    ("def f(g, lr, t):\n    a = arctan(g)\n    u = sign(a)\n    return u\n", ["u = sign(g)"]),
    # evaluated as the program computes it, in float32 (rounding it to 0.1 is an edit, which gets scored)
    ("def f(g, lr, t):\n    a = 1.0 - 0.9\n    u = a * g\n    return u\n", ["u = 0.100000024 * g"]),
    ("def f(g, lr, t):\n    u = g * 1.0 + 0.0\n    u = u * lr\n    return u\n", ["u = g * lr"]),
    ("def f(g, lr, t):\n    a = -g\n    u = -a\n    return u\n", ["u = g"]),
    ("def f(g, lr, t):\n    u = max(g, 0.0)\n    return u\n", ["u = relu(g)"]),
    ("def f(g, lr, t):\n    u = interp(g, g, 0.3)\n    u = pow(u, 1.0)\n    return u\n", ["u = g"]),
])
def test_identities_fold(text, expected):
    assert _body(canonicalize(parse(text))) == expected


def test_a_state_variable_never_written_is_read_as_zero():
    p = parse("def f(g, m, lr, t):\n    u = g + m\n    return u, m\n")
    out = canonicalize(p)
    assert out.state == () and _body(out) == ["u = g"]


def test_folds_see_through_reassigned_names_only_when_the_value_is_unchanged():
    # b reads the first c; folding sqrt(square(c)) must not use the reassigned c.
    p = parse("def f(g, w, lr, t):\n    c = square(g)\n    c = w\n    b = sqrt(c)\n    u = b + c\n    return u\n")
    out = canonicalize(p)
    assert trajectories([out])[0] == pytest.approx(trajectories([p])[0], rel=1e-6)


def test_seeds_are_canonical_up_to_names():
    for name in SEED_NAMES:
        p = seed(name)
        out = canonicalize(p)
        assert len(out) <= len(p)
        assert canonicalize(out) == out  # idempotent


def test_canonicalize_keeps_what_every_seed_computes():
    progs = [seed(n) for n in SEED_NAMES]
    np.testing.assert_allclose(trajectories([canonicalize(p) for p in progs]), trajectories(progs), rtol=1e-5,
                               atol=1e-7)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(programs(max_statements=10, max_state=2, constants=typical_constants))
def test_canonicalize_is_valid_simpler_idempotent_and_computes_the_same(program):
    out = canonicalize(program)
    assert parse(str(out), max_len=10**6) == out  # a program `discover export` accepts
    assert complexity(out) <= complexity(program)
    assert canonicalize(out) == out
    before, after = trajectories([program, out])
    finite = np.isfinite(before)
    np.testing.assert_allclose(after[finite], before[finite], rtol=1e-4, atol=1e-6)


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_rounded_constants_are_shorter(c):
    for r in rounded_constants(c):
        assert r != c and constant_cost(r) < constant_cost(c)


def test_rounding_offers_the_short_neighbours():
    assert 0.9 in rounded_constants(0.899) and 0.999 in rounded_constants(0.9987)
    assert 0.0 in rounded_constants(1e-8) and rounded_constants(0.0) == []


def test_edits_are_simpler_valid_and_distinct():
    p = canonicalize(seed("adamw"))
    edits = candidate_edits(p)
    assert edits and all(complexity(e.program) < complexity(p) for e in edits)
    assert len({structural_hash(e.program) for e in edits}) == len(edits)
    kinds = {e.kind for e in edits}
    assert {"remove", "constant"} <= kinds
    adam = structural_hash(canonicalize(seed("adam")))
    assert any(structural_hash(e.program) == adam for e in edits)  # AdamW without its weight decay


# ----------------------------------------------------------------------------------------------------------
# The greedy loop
# ----------------------------------------------------------------------------------------------------------
def test_bloated_lion_simplifies_back_to_lion():
    lion = seed("lion")
    calls = []
    result = simplify(parse(BLOATED_LION), distance_scorer(lion, calls), tolerance=1e-4, batch=TRAJ_BATCH)
    assert structural_hash(result.program) == structural_hash(lion)
    assert len(result.program) == len(lion) and result.program.state == lion.state
    assert result.accepts(result.fitness_final)
    kinds = [(s.kind, s.accepted) for s in result.steps]
    assert ("dead code", True) in kinds and ("fold", True) in kinds
    assert any(not s.accepted for s in result.steps)  # removing a real statement of Lion was tried, and refused
    for s in result.steps:
        assert result.accepts(s.fitness_after) == s.accepted
    assert max(calls) <= TRAJ_BATCH
    assert export_module(parse(str(result.program)))  # `discover export` accepts it


def test_constants_are_rounded_when_fitness_allows():
    signum = seed("signum")
    p = parse("def f(g, w, m, lr, t):\n    m = interp(g, m, 0.90003)\n    update = lr * sign(m)\n    return update, m\n")
    result = simplify(p, distance_scorer(signum), tolerance=1e-3, batch=8)
    assert structural_hash(result.program) == structural_hash(signum)
    accepted = [s for s in result.steps if s.accepted and s.kind == "constant"]
    assert accepted and "0.9" in accepted[0].description


def test_tolerance_zero_keeps_every_statement_that_matters():
    adamw = seed("adamw")
    result = simplify(adamw, distance_scorer(adamw), tolerance=0.0, batch=TRAJ_BATCH)
    for s in result.steps:
        assert s.accepted == (s.fitness_after <= result.fitness_original)
    # Only eps = 1e-8 may go: next to sqrt(v) of these gradients it does not change a float32 bit.
    assert len(result.program) >= len(canonicalize(adamw)) - 1
    assert all(s.description.startswith("`_7 = _6 + 1e-08`") for s in result.steps[1:] if s.accepted)


def test_edits_that_keep_the_fitness_are_followed_greedily():
    # Every program scores the same: every edit is faithful, the result is the simplest reachable program.
    result = simplify(seed("adamw"), lambda progs: np.ones(len(progs)), tolerance=0.0)
    assert len(result.program) <= 2
    assert parse(str(result.program))


def test_an_edit_that_improves_the_fitness_is_refused_too():
    # Fitness = statement count: every removal *improves* the score, i.e. changes what the rule does. A faithful
    # simplify keeps a program's behaviour, not a better one: nothing beyond exact dead-code removal is kept.
    adamw = seed("adamw")
    result = simplify(adamw, lambda progs: np.array([float(len(p)) for p in progs]), tolerance=0.01)
    assert len(result.program) == len(remove_dead_code(adamw)) == result.fitness_final
    assert all(s.fitness_after == s.fitness_before for s in result.steps if s.accepted)
    assert any(s.fitness_after < s.fitness_before for s in result.steps)  # better edits were tried, and refused


def test_bad_arguments():
    with pytest.raises(ValueError, match="tolerance"):
        simplify(seed("sgd"), lambda ps: np.ones(len(ps)), tolerance=-1)
    with pytest.raises(ValueError, match="score returned"):
        simplify(seed("adamw"), lambda ps: np.ones(1))


# ----------------------------------------------------------------------------------------------------------
# Entry point: files, TensorBoard, meta-validation scoring
# ----------------------------------------------------------------------------------------------------------
def _tiny_task(num_steps=30) -> Task:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(256, 4)), jnp.float32)
    y = jnp.asarray((x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32))

    def init(key):
        return {"w": 0.1 * jax.random.normal(key, (4, 2)), "b": jnp.zeros((2,))}

    def xent(p, xs, ys):
        logits = xs @ p["w"] + p["b"]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, ys[:, None], -1)[:, 0])

    def batch(key, step):
        return jax.random.randint(jax.random.fold_in(key, step), (32,), 0, 192)

    return Task("tiny_logreg", init, lambda p, idx: xent(p, x[idx], y[idx]), batch,
                lambda p: xent(p, x[192:], y[192:]), num_steps=num_steps, lr=0.05, kind="metaval")


def _tb_events(path):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(path), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_run_simplify_scores_on_metavalidation_and_writes_reports(tmp_path):
    source = tmp_path / "bloated.py"
    source.write_text(BLOATED_LION)
    console = Console(record=True, width=200)
    out = tmp_path / "out"
    program, steps = run_simplify(source, tasks=[_tiny_task()], seeds=1, tolerance=0.01,
                                  reference_cache=tmp_path / "baselines.json", out_dir=out, console=console)
    assert len(program) < len(parse(BLOATED_LION))
    report = json.loads((out / "simplify.json").read_text())
    assert report["steps"] == [s.to_json() for s in steps]
    assert report["lower"] <= report["fitness_final"] <= report["threshold"] and math.isfinite(report["fitness_original"])
    assert "tiny_logreg" in report["scoring"]
    md = (out / "simplify.md").read_text()
    assert "### Steps" in md and md.count("\n| ") >= len(steps) + 1
    assert str(program).strip() in md
    loaded = load_program(str(out / "simplified.py"))  # what `discover export` reads
    assert structural_hash(loaded) == structural_hash(program)
    export_module(loaded)
    assert "simplify:" in console.export_text()
    acc = _tb_events(out / "tb")
    assert "simplify/report/text_summary" in acc.Tags()["tensors"]
    fitness = acc.Scalars("simplify/fitness")
    assert len(fitness) == 1 + sum(s.accepted for s in steps)


def _tiny_search_run(tmp_path) -> RunDir:
    root = pathlib.Path(__file__).resolve().parent.parent
    config = (root / "experiments" / "search_tiny.yaml").read_text()
    run = RunDir.create(root=tmp_path, name="search-tiny", config_yaml=config)
    run.write_text("best.py", "# from a search\n" + BLOATED_LION)
    return run


def test_run_simplify_on_a_run_directory_writes_into_it(tmp_path):
    run = _tiny_search_run(tmp_path)
    setup = scoring_setup(run)  # nothing given: the defaults, AdamW references cached beside the run
    assert setup.tasks == ("mlp_regression_metaval",) and setup.steps is None and setup.seeds == 1
    assert setup.reference_cache == tmp_path / ".baselines.json"
    program, _ = run_simplify(run.path, score=distance_scorer(seed("lion")), tolerance=1e-4, tb=False)
    assert structural_hash(program) == structural_hash(seed("lion"))
    assert (run.path / "simplify.md").is_file() and (run.path / "simplified.py").is_file()
    assert not (run.path / "tb").exists()


def test_run_references_are_the_saved_section_when_complete(tmp_path):
    run = _tiny_search_run(tmp_path)
    assert run_references(run.path, "metaval", ["noisy_quadratic_metaval"]) is None  # no references.json
    run.write_json("references.json", {"metaval": {"noisy_quadratic_metaval": {"lr": 0.03, "val_loss": 1.0}}})
    assert run_references(run.path, "metaval", ["noisy_quadratic_metaval"]) == {
        "noisy_quadratic_metaval": {"lr": 0.03, "val_loss": 1.0}}
    assert run_references(run.path, "metaval", ["noisy_quadratic_metaval", "charlm_metaval"]) is None
    assert run_references(run.path, "proxy", ["noisy_quadratic_proxy"]) is None


def test_cli_simplify_of_a_run_directory_scores_with_its_funnel_settings(tmp_path, monkeypatch):
    run = _tiny_search_run(tmp_path)
    saved = {"proxy": {"noisy_quadratic_proxy": {"lr": 0.1, "val_loss": 2.0}},
             "metaval": {"noisy_quadratic_metaval": {"lr": 0.03, "val_loss": 1.0}}}
    run.write_json("references.json", saved)
    calls = []

    def cheap_run_simplify(source, **kwargs):  # what the CLI passes, scored by a cheap scorer
        calls.append(kwargs)
        return run_simplify(source, score=distance_scorer(seed("lion")), tb=False, **kwargs)

    monkeypatch.setattr(simplify_module, "run_simplify", cheap_run_simplify)
    if hasattr(cli, "run_simplify"):  # imported at the CLI's top
        monkeypatch.setattr(cli, "run_simplify", cheap_run_simplify)
    cli_runner = CliRunner()
    result = cli_runner.invoke(app, ["simplify", str(run.path), "--tolerance", "1e-4"])
    assert result.exit_code == 0, result.output
    # search_tiny.yaml: funnel noisy_quadratic_metaval, 30 steps, 1 seed; fitness lr_multipliers [1.0]
    assert calls[0]["tasks"] == ["noisy_quadratic_metaval"] and calls[0]["steps"] == 30
    assert calls[0]["seeds"] == 1 and calls[0]["lr_multipliers"] == [1.0] and calls[0]["worst"] == 1000.0
    assert calls[0]["references"] == saved["metaval"] and calls[0]["reference_cache"] is None
    assert structural_hash(load_program(str(run.path / "simplified.py"))) == structural_hash(seed("lion"))
    # a setting given on the command line wins; the run's saved references then no longer apply
    result = cli_runner.invoke(app, ["simplify", str(run.path), "--steps", "10", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert calls[1]["steps"] == 10 and calls[1]["tasks"] == ["noisy_quadratic_metaval"]
    assert "references" not in calls[1] and (tmp_path / "o" / "simplify.md").is_file()


def test_run_simplify_reports_bad_sources_in_one_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(g, lr, t):\n    u = nope(g)\n    return u\n")
    with pytest.raises(ConfigError) as info:
        run_simplify(bad, score=lambda ps: np.ones(len(ps)))
    assert str(info.value).startswith(f"{bad}:2:") and "unknown op 'nope'" in str(info.value)
    with pytest.raises(ConfigError, match="no such program file or run directory"):
        run_simplify(tmp_path / "missing", score=lambda ps: np.ones(len(ps)))
    good = tmp_path / "good.py"
    good.write_text("def f(g, lr, t):\n    u = lr * g\n    return u\n")
    with pytest.raises(ConfigError, match="tasks: unknown task 'nope'"):
        run_simplify(good, tasks=["nope"])
    with pytest.raises(ConfigError, match="tolerance: must be a finite number >= 0"):
        run_simplify(good, tolerance=-0.1)


LONGHAND_LION_WD = """
def lion_wd(g, w, m, lr, t):
    one = 1.0
    b1 = 0.9
    b2 = 0.99
    k1 = one - b1
    a = b1 * m
    b = k1 * g
    c = a + b
    s = sign(c)
    junk = exp(w)
    k2 = one - b2
    d = b2 * m
    e = k2 * g
    m = d + e
    wd = 0.1 * w
    u = s + wd
    update = lr * u
    return update, m
"""


def test_lion_with_weight_decay_written_long_hand_simplifies_to_lion_not_sign_sgd(tmp_path):
    # Scored with the tuned fitness (best over the lr sweep): Lion is judged at its own step size, so neither
    # dropping its momentum nor its weight decay passes for a simplification.
    setup = scoring_setup(None, tasks=["noisy_quadratic_proxy"], seeds=2, reference_cache=tmp_path / "r.json")
    assert setup.lr_multipliers == ROBUST_LR_MULTIPLIERS
    program = parse(LONGHAND_LION_WD)
    result = simplify(program, make_score_fn(setup, program, 16), tolerance=0.01, batch=16)
    ops = [s.op for s in result.program.statements]
    assert ops.count("interp") == 2 and ops.count("sign") == 1  # both moving averages, the sign
    assert any(s.op == "mul" and "w" in s.args for s in result.program.statements)  # the weight decay
    assert len(result.program) <= 6
    # An edit that scored *better* than the original (a different optimizer) was tried and refused.
    assert any(not s.accepted and s.fitness_after < result.lower for s in result.steps)
