"""Distillation of drifts: the drift language (parse, print, three evaluators that agree), the constraints for any
program (property test), the safe loader of written formulas, and recovery of a known closed form (DPO)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discover.infra.config import dump_config, load_config
from discover.infra.errors import DriftFileError
from discover.infra.rundir import RunDir
from discover.language.drift_program import (
    DRIFT_OPS,
    INPUTS,
    DriftProgram,
    drift_function,
    encode,
    encoded_drift,
    formula,
    parse_drift,
    remove_dead_code,
)
from discover.language.ops import OP_BY_NAME
from discover.language.program import ProgramError, Statement
from discover.searches.distill.config import DEFAULT_OPS, DistillConfig
from discover.searches.distill.export import program_json, python_module
from discover.searches.distill.fitness import FitScorer
from discover.searches.distill.mutation import (
    DriftSpace,
    fit_taylor,
    mutate,
    random_programs,
    start_program,
    taylor_text,
)
from discover.searches.distill.search import DistillSearch
from discover.searches.rl.config import RLSearchConfig
from discover.shared import runner
from discover.shared.drift_io import load_distilled, save_drift
from envs import rl_envs
from search_spaces.drift import DriftConfig, dpo_drift, ppo_drift

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "distill_tiny.yaml"
TALPO_TINY = REPO / "experiments" / "talpo_tiny.yaml"
CAP = 100.0


def _points(n=512, seed=0):
    rng = np.random.default_rng(seed)
    r = np.concatenate([[1.0, 1.0 + 1e-7, 1.0 - 1e-7], rng.uniform(0.2, 3.0, n - 3)]).astype(np.float32)
    return r, rng.normal(0.0, 2.0, n).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# The language


def test_start_programs_round_trip_and_match_the_fixed_drifts():
    r, a, n = _points()
    for name in ("ppo", "dpo", "quadratic", "linear", "zero", "taylor"):
        program = start_program(name)
        assert parse_drift(str(program)) == program
    np.testing.assert_allclose(drift_function(start_program("dpo"))(r, a, n, 2.0), dpo_drift(r, a), atol=2e-6)
    np.testing.assert_allclose(drift_function(start_program("ppo"))(r, a, n, 2.0), ppo_drift(r, a), atol=2e-6)
    assert formula(start_program("ppo")) == "relu((r - 1.0 - clip(r - 1.0, 0.2)) * A)"


@pytest.mark.parametrize("ppo_clip", [None, 0.2])
def test_taylor_start_program_is_fitted_to_a_network_like_drift(ppo_clip):
    """Near r = 1 an LPO network is relu((r - 1) L(A, n/N) - 1e-4) (plus PPO's drift when trained with ppo_init):
    the taylor start program recovers L, and with PPO's clip it matches the drift away from r = 1 as well."""
    r, a, n = _points(4000, seed=5)
    r = np.where(np.arange(len(r)) % 10 == 0, r, 1.0 + (r - 1.0) * 0.01).astype(np.float32)  # mostly near 1
    truth = parse_drift(taylor_text((-0.4, 0.05, 1.0, 0.25), ppo_clip=ppo_clip))
    _, slope = jax.jvp(lambda x: drift_function(truth, CAP)(x, a, n, 2.0), (r,), (np.ones_like(r),))
    near = np.abs(r - 1.0) < 0.05
    fitted = fit_taylor(r if ppo_clip else r[near], a if ppo_clip else a[near], n if ppo_clip else n[near],
                        np.asarray(slope) if ppo_clip else np.asarray(slope)[near], ppo_clip)
    np.testing.assert_allclose(sorted(fitted.constants[:4]), sorted((-0.4, 0.05, 1.0, 0.25)), atol=0.02)
    if ppo_clip:
        far = np.asarray(drift_function(truth, CAP)(r, a, n, 2.0))[~near]
        np.testing.assert_allclose(np.asarray(drift_function(fitted, CAP)(r, a, n, 2.0))[~near], far,
                                   rtol=0.05, atol=0.02)


def test_fit_error_weighs_recorded_and_uniform_draws_separately():
    """The network's drift where PPO goes is tiny next to its drift far from r = 1: each group's error is
    relative to its own scale, the two mixed in the proportions of uniform_share."""
    rng = np.random.default_rng(0)
    target = np.concatenate([rng.normal(0, 1e-4, 300), rng.normal(0, 1.0, 100)])
    uniform = np.arange(400) >= 300
    kw = {"inputs": (), "slope": target, "max_len": 4, "cap": CAP, "slope_weight": 1.0, "parsimony": 0.0,
          "worst": 1e3, "batch": 1}
    scorer = FitScorer(value=target, uniform=uniform, uniform_share=0.25, **kw)
    guess = target * 1.1
    guess[uniform] = target[uniform] * 1.2
    expected = 0.75 * 0.1**2 + 0.25 * 0.2**2
    np.testing.assert_allclose(np.sum(scorer.weights(target) * (guess - target) ** 2), expected, rtol=1e-3)
    # without uniform draws: the plain relative mean squared error
    plain = FitScorer(value=target, **kw)
    np.testing.assert_allclose(np.sum(plain.weights(target) * (guess - target) ** 2),
                               np.mean((guess - target) ** 2) / np.mean(target**2), rtol=1e-5)


@pytest.mark.parametrize("text, words", [
    ("def drift(r, A, progress):\n    return r\n", "parameters must be exactly"),
    ("def drift(r, A, progress, log_n):\n    return norm(r)\n", "not a drift op"),
    ("def drift(r, A, progress, log_n):\n    return interp(r, A, 0.5)\n", "not a drift op"),
    ("def drift(r, A, progress, log_n):\n    r = A\n    return r\n", "cannot assign to the input 'r'"),
    ("def drift(r, A, progress, log_n):\n    return x\n", "undefined variable 'x'"),
    ("def drift(r, A, progress, log_n):\n    return __import__('os')\n", "unknown op '__import__'"),
    ("import os\ndef drift(r, A, progress, log_n):\n    return r\n", "an import outside the function"),
    ("def drift(r, A, progress, log_n):\n    exec('1')\n    return r\n", "not allowed"),
    ("def drift(r, A, progress, log_n):\n    return r.real\n", "attribute access"),
    ("def drift(r, A, progress, log_n):\n", "syntax error"),
])
def test_bad_programs_are_refused_with_a_location(text, words):
    with pytest.raises(ProgramError, match=words):
        parse_drift(text)


def test_three_evaluators_agree_and_the_exported_module_imports_only_jax(tmp_path):
    """Direct evaluation, the encoded interpreter (what the search scores) and the written module."""
    r, a, n = _points()
    space = DriftSpace(tuple(DRIFT_OPS), 24)
    programs = random_programs(space, np.random.default_rng(3), 6, [start_program("dpo"), start_program("ppo")])
    for i, program in enumerate(programs):
        direct = np.asarray(drift_function(program, CAP)(r, a, n, 2.0))
        encoded = np.asarray(jax.jit(encoded_drift)(encode(program, 32), r, a, n, 2.0, CAP))
        path = tmp_path / f"formula_{i}.py"
        path.write_text(python_module(program, CAP, "test"))
        imports = [line for line in path.read_text().splitlines() if line.startswith(("import", "from"))]
        assert imports == ["import jax", "import jax.numpy as jnp"]
        spec = importlib.util.spec_from_file_location(f"formula_{i}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # a file this test wrote
        written = np.asarray(module.drift(r, a, n, 2.0))
        finite = np.isfinite(direct)
        np.testing.assert_allclose(encoded[finite], direct[finite], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(written[finite], direct[finite], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# The drift constraints hold for any program


_NAMES = ("x", "y", "z", "u")
_CONSTANTS = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, -3.4e38, 80.0]),
                       st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32))


@st.composite
def drift_programs(draw):
    """Any valid drift program: ops of the whole drift vocabulary, arguments any defined name or constant."""
    defined, statements = list(INPUTS), []
    for _ in range(draw(st.integers(1, 10))):
        op = draw(st.sampled_from(("copy",) + DRIFT_OPS))
        arity = 1 if op == "copy" else OP_BY_NAME[op].arity
        args = tuple(draw(st.one_of(st.sampled_from(defined), _CONSTANTS)) for _ in range(arity))
        dst = draw(st.sampled_from(_NAMES))
        statements.append(Statement(dst, op, args))
        if dst not in defined:
            defined.append(dst)
    return DriftProgram("drift", tuple(statements), draw(st.sampled_from(defined)))


_ENC_DRIFT = jax.jit(lambda enc, r, a, n: encoded_drift(enc, r, a, n, 2.0, CAP))
_ENC_GRAD = jax.jit(jax.vmap(jax.grad(lambda r, enc, a, n: encoded_drift(enc, r, a, n, 2.0, CAP)),
                             in_axes=(0, None, 0, 0)))


@settings(max_examples=60, deadline=None)
@given(drift_programs(), st.integers(0, 2**31 - 1))
def test_any_program_is_a_valid_drift(program, seed):
    """Non-negative everywhere, exactly 0 with an exactly 0 gradient at r = 1, and below cap (r-1)^2 near it
    (so the derivative at 1 is 0 whatever the program computes)."""
    program = parse_drift(str(program))  # what the printer writes parses back to the same program
    enc = encode(program, 16)
    r, a, n = _points(64, seed)
    d = np.asarray(_ENC_DRIFT(enc, r, a, n))
    assert np.all(d[np.isfinite(d)] >= 0.0) and not np.isnan(d).any()
    ones = np.ones_like(r)
    assert np.all(np.asarray(_ENC_DRIFT(enc, ones, a, n)) == 0.0)
    assert np.all(np.asarray(_ENC_GRAD(ones, enc, a, n)) == 0.0)
    for h in (1e-2, 1e-3):
        near = np.asarray(_ENC_DRIFT(enc, ones + h, a, n)), np.asarray(_ENC_DRIFT(enc, ones - h, a, n))
        assert all(np.all(x <= CAP * h * h * (1 + 1e-4)) for x in near)


def test_every_mutation_child_is_a_valid_program_of_the_space():
    space = DriftSpace(tuple(DEFAULT_OPS), 24)
    rng = np.random.default_rng(0)
    program, kinds = start_program("dpo"), set()
    for _ in range(300):
        child, kind, _ = mutate(program, rng, space)
        assert space.parse(str(child)) == child and len(child) <= 24
        assert {s.op for s in child.statements} <= set(DEFAULT_OPS) | {"copy"}
        kinds.add(kind)
        program = child if rng.random() < 0.7 else start_program("ppo")
    assert kinds >= {"insert", "wrap", "delete", "modify_arg", "modify_const", "modify_op"}


# ----------------------------------------------------------------------------------------------------------
# The safe loader of written formulas


def test_load_distilled_reads_the_program_and_never_runs_the_module(tmp_path):
    program = start_program("dpo")
    (tmp_path / "distilled_drift.json").write_text(program_json(program, CAP, env="CartPole-v1"))
    (tmp_path / "distilled_drift.py").write_text("raise SystemExit('the module must not be executed')\n")
    r, a, n = _points()
    expected = np.asarray(drift_function(program, CAP)(r, a, n, 2.0))
    for path in (tmp_path / "distilled_drift.json", tmp_path / "distilled_drift.py", tmp_path):
        np.testing.assert_array_equal(np.asarray(load_distilled(path)(r, a, n, 2.0)), expected)
    grad = jax.grad(lambda x: load_distilled(tmp_path)(x, 1.5, 0.5, 2.0))(1.0)
    assert float(grad) == 0.0


@pytest.mark.parametrize("content, words", [
    (None, "distilled drift not found"),
    ("{not json", "not JSON"),
    ('{"kind": "rl_drift"}', "not a distilled drift"),
    ('{"kind": "distilled_drift", "program": 3, "cap": 1}', "program: expected"),
    ('{"kind": "distilled_drift", "program": "def drift(r, A, progress, log_n):\\n    return r\\n", "cap": -1}',
     "cap: expected a positive number"),
    ('{"kind": "distilled_drift", "program": "import os\\n", "cap": 1}', "program: line 1"),
    (('{"kind": "distilled_drift", "program": "def drift(r, A, progress, log_n):\\n    return exec(r)\\n", '
      '"cap": 1}'), "unknown op 'exec'"),
])
def test_load_distilled_refuses_anything_else_in_one_line(tmp_path, content, words):
    path = tmp_path / "f.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DriftFileError) as info:
        load_distilled(path)
    assert words in str(info.value) and "\n" not in str(info.value) and str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# Recovery of a known closed form


def dpo_drift_file(path: pathlib.Path, alpha: float, beta: float) -> pathlib.Path:
    """A drift file of DPO's closed form on the tiny PPO setting of talpo_tiny."""
    ppo = load_config(RLSearchConfig, TALPO_TINY).ppo_config
    drift = DriftConfig(family="dpo", dpo_alpha=alpha, dpo_beta=beta)
    return save_drift(path, {}, {"drift": dataclasses.asdict(drift), "env": "CartPole-v1",
                                 "ppo": dataclasses.asdict(ppo)})


def test_distillation_recovers_dpo_with_other_constants(tmp_path):
    """Samples of DPO with alpha 1, beta 0.3 (uniform over r in [0.5, 1.5], A in [-3, 3]: no PPO run needed); the
    search starts from DPO's paper constants (2, 0.6), PPO and a quadratic, and must find a formula with a small
    error that matches DPO's surface."""
    source = dpo_drift_file(tmp_path / "dpo.npz", alpha=1.0, beta=0.3)
    search = DistillSearch()
    config = search.load_config(TINY, [f"source={source}", "funnel.top_k=0", "samples.uniform_share=1.0",
                                       "evolution.batch=32", "evolution.generations=6", "refine.top_k=4",
                                       "refine.generations=30"])
    run_dir = RunDir.create(tmp_path, "recover", dump_config(config))
    summary = runner.run(search, config, run_dir)
    assert summary.start_fitness > 0.2  # DPO with its paper constants is far from this drift
    assert summary.fit_error < 0.03 and summary.holdout_error < 0.03, summary.best_program
    learned = load_distilled(run_dir.path)
    rng = np.random.default_rng(1)
    r, a = rng.uniform(0.7, 1.3, 2000).astype(np.float32), rng.uniform(-2, 2, 2000).astype(np.float32)
    target = np.asarray(dpo_drift(r, a, 1.0, 0.3))
    err = np.mean((np.asarray(learned(r, a, 0.5, 1.0)) - target) ** 2) / np.mean(target**2)
    assert err < 0.05
    written = json.loads(run_dir.file("distilled_drift.json").read_text())
    assert written["kind"] == "distilled_drift" and written["env"] == "CartPole-v1"
    assert remove_dead_code(parse_drift(written["program"])) == parse_drift(written["program"])


def test_shipped_configs_load_and_round_trip():
    for name in ("distill_tiny.yaml", "distill_cartpole.yaml"):
        config = load_config(DistillConfig, REPO / "experiments" / name)
        assert config.kind == "distill" and config.source is None
        assert load_config(DistillConfig, text=dump_config(config)) == config
    assert rl_envs.spec("CartPole-v1").return_floor == 0.0
