"""Seed programs (search_spaces.update_rules) against their references.

Every seed runs 100 float32 steps three ways: through its reference (optax's own optimizer with the same
constants where optax has one, else the paper's formula written out below), through the batched
interpreter (all seeds in ONE population call) and through ``to_optax`` + ``optax.apply_updates``.

The parameters are a tree with two parts, trained together so that one compile serves both:
``mlp``, an 8-16-1 tanh MLP regressing fixed random data (the final MLP parameters must agree to a
relative error under 1e-5), and ``wide``, three rows of 14 parameters starting at 0 whose gradient and
Hessian estimate are fixed random sequences with magnitudes 1e-12 .. 10 by column, so the small
constants (eps, eps_root, Sophia's 1e-12) that a well-scaled MLP never feels decide the steps there
(the final ``wide`` parameters must agree column by column to a relative error under 1e-5).
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from discover.language.interpreter import encode, init_registers, run_population
from discover.language.optax_export import to_optax
from discover.language.program import parse
from search_spaces import update_rules
from search_spaces.update_rules import SEED_NAMES, UpdateRuleSpace, seed, seed_text, seeds

STEPS = 100
TOL = 1e-5
# Sign-like rules take unit-size steps, so a 10x smaller lr. RMSProp too: its first step is lr*sqrt(10)*sign(g)
# and at lr 1e-2 the *reference itself* is chaotic on this task (a 1e-7 relative perturbation of the initial
# params grows to 5e-4 by step 100), so no float32 reimplementation could be compared there; at 1e-3 it grows
# to 1.6e-7.
# The Lion-K seeds take Lion's unit-size steps too.
SMALL_LR = {"lion", "signum", "sophia", "rmsprop", "lion_tanh", "lion_clip", "lion_l2"}
LR = {name: 1e-3 if name in SMALL_LR else 1e-2 for name in SEED_NAMES}
# AdaGrad-Norm's one step size is set by the global norm, which the `wide` gradients (up to 10) dominate: the
# MLP part moves by lr g / b with b ~ 17 sqrt(t), so a 10x larger lr to move it measurably.
LR["adagradnorm"] = 1e-1
SEEDS_DIR = pathlib.Path(update_rules.__file__).parent / "seeds"
WIDE_SCALES = jnp.logspace(-12, 1, 14, dtype=jnp.float32)  # gradient magnitude of each `wide` column


# --- the task ---------------------------------------------------------------------------------------
def _task():
    kx, ky, k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 6)
    x = jax.random.normal(kx, (32, 8), jnp.float32)
    y = jnp.sin(x @ jax.random.normal(ky, (8, 1), jnp.float32))
    mlp = {
        "w1": 0.5 * jax.random.normal(k1, (8, 16), jnp.float32),
        "b1": 0.1 * jax.random.normal(k2, (16,), jnp.float32),
        "w2": 0.5 * jax.random.normal(k3, (16, 1), jnp.float32),
        "b2": 0.1 * jax.random.normal(k4, (1,), jnp.float32),
    }
    return x, y, {"mlp": mlp, "wide": jnp.zeros((3, 14), jnp.float32)}


X, Y, PARAMS0 = _task()
FLAT0, UNRAVEL = ravel_pytree(PARAMS0)
N = FLAT0.shape[0]


def mlp_loss(mlp):
    hidden = jnp.tanh(X @ mlp["w1"] + mlp["b1"])
    return jnp.mean(jnp.square(hidden @ mlp["w2"] + mlp["b2"] - Y))


# Random sequences drawn once (indexing constants costs less to compile than a PRNG in every loop).
_KP, _KG, _KH = jax.random.split(jax.random.PRNGKey(1), 3)
PROBES = jax.random.rademacher(_KP, (STEPS, ravel_pytree(PARAMS0["mlp"])[0].size), jnp.float32)
WIDE_G = WIDE_SCALES * jax.random.normal(_KG, (STEPS, 3, 14), jnp.float32)
WIDE_H = WIDE_SCALES * jax.random.normal(_KH, (STEPS, 3, 14), jnp.float32)


def hutchinson(mlp, t):
    """diag(H) estimate u * (H u) of the MLP loss (Sophia-H's estimator), Rademacher probe u of step t."""
    u = ravel_pytree(mlp)[1](PROBES[t - 1])
    _, hu = jax.jvp(jax.grad(mlp_loss), (mlp,), (u,))
    return jax.tree.map(jnp.multiply, u, hu)


def gradients(params, t, with_h=True):
    """(g, h) trees of step t: the MLP's gradient and Hutchinson estimate; `wide`'s fixed random ones."""
    g = {"mlp": jax.grad(mlp_loss)(params["mlp"]), "wide": WIDE_G[t - 1]}
    h = {"mlp": hutchinson(params["mlp"], t), "wide": WIDE_H[t - 1]} if with_h else None
    return g, h


def flat_gradients(w, t):
    g, h = gradients(UNRAVEL(w), t)
    return ravel_pytree(g)[0], ravel_pytree(h)[0]


# --- references written out from the papers (optax has no such optimizer) ---------------------------
class FormulaState(NamedTuple):
    count: jax.Array
    slots: tuple


def formula(step, n_slots, reads_h=False):
    """An optax transformation from a per-leaf ``step(g, w, h, t, *slots) -> (update, *slots)``,
    ``update`` being what is subtracted from w (returned negated, optax's convention)."""

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return FormulaState(jnp.zeros([], jnp.int32), (zeros,) * n_slots)

    def update_fn(updates, state, params=None, h=None):
        t = state.count + 1
        hs = h if reads_h else jax.tree.map(jnp.zeros_like, updates)
        leaves, treedef = jax.tree.flatten(updates)
        flat = treedef.flatten_up_to
        slots = [flat(s) for s in state.slots]
        outs = [step(g, w, hh, t, *ss) for g, w, hh, *ss in
                zip(leaves, flat(params), flat(hs), *slots)]
        new = tuple(treedef.unflatten([o[1 + k] for o in outs]) for k in range(n_slots))
        return treedef.unflatten([-o[0] for o in outs]), FormulaState(t, new)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def signum_ref(lr):  # Bernstein et al. 2018, Algorithm (Signum): m = b m + (1 - b) g; w -= lr sign(m)
    def step(g, w, h, t, m):
        m = 0.9 * m + (1 - 0.9) * g
        return lr * jnp.sign(m), m
    return formula(step, 1)


def diffgrad_ref(lr):  # Dubey et al. 2019: Adam with w -= lr xi m_hat / (sqrt(v_hat) + eps),
    # friction xi = 1 / (1 + exp(-|g_{t-1} - g_t|)), g_0 = 0
    def step(g, w, h, t, m, v, g_prev):
        m = 0.9 * m + (1 - 0.9) * g
        v = 0.999 * v + (1 - 0.999) * g**2
        xi = 1.0 / (1.0 + jnp.exp(-jnp.abs(g_prev - g)))
        m_hat = m / (1 - 0.9 ** t)
        v_hat = v / (1 - 0.999 ** t)
        return lr * (xi * m_hat / (jnp.sqrt(v_hat) + 1e-8)), m, v, g
    return formula(step, 3)


def powersign_ref(lr):  # Bello et al. 2017: w -= lr alpha^(f(t) sign(g) sign(m)) g, alpha = e, f = 1
    def step(g, w, h, t, m):
        m = 0.9 * m + (1 - 0.9) * g
        return lr * (jnp.exp(jnp.sign(g) * jnp.sign(m)) * g), m
    return formula(step, 1)


def addsign_ref(lr):  # Bello et al. 2017: w -= lr (alpha + f(t) sign(g) sign(m)) g, alpha = 1, f = 1
    def step(g, w, h, t, m):
        m = 0.9 * m + (1 - 0.9) * g
        return lr * ((1.0 + jnp.sign(g) * jnp.sign(m)) * g), m
    return formula(step, 1)


def sophia_ref(lr):  # Liu et al. 2023, Algorithm 3 with the Hessian EMA refreshed every step (k = 1)
    def step(g, w, h, t, m, v):
        m = 0.965 * m + (1 - 0.965) * g
        v = 0.99 * v + (1 - 0.99) * h
        ratio = jnp.clip(m / jnp.maximum(0.01 * v, 1e-12), -1.0, 1.0)
        return lr * (ratio + 1e-4 * w), m, v  # decoupled weight decay 1e-4
    return formula(step, 2, reads_h=True)


def lion_k_ref(grad_k):
    """Lion-K (Chen, Liu, Liang & Liu 2023): c = b1 m + (1 - b1) g; w -= lr (grad_K(c) + lambda w);
    m = b2 m + (1 - b2) g, with Lion's b1 0.9, b2 0.99, lambda 1e-3."""
    def make(lr):
        def step(g, w, h, t, m):
            c = 0.9 * m + (1 - 0.9) * g
            m = 0.99 * m + (1 - 0.99) * g
            return lr * (grad_k(c) + 1e-3 * w), m
        return formula(step, 1)
    return make


def _unit_l2(c):  # grad of K(c) = ||c||_2 over one tensor: c / ||c|| (0 at c = 0)
    n = jnp.sqrt(jnp.sum(c * c))
    return jnp.where(n > 1e-30, c / jnp.where(n > 1e-30, n, 1.0), 0.0)


class AdaGradNormState(NamedTuple):
    b2: jax.Array  # the scalar b^2


def adagradnorm_ref(lr):  # Ward, Wu & Bottou 2019: b^2 += ||g||^2 (over the whole tree); w -= lr g / b
    def init_fn(params):
        return AdaGradNormState(jnp.zeros([], jnp.float32))

    def update_fn(updates, state, params=None):
        b2 = state.b2 + sum(jnp.sum(g * g) for g in jax.tree.leaves(updates))
        return jax.tree.map(lambda g: -lr * g / jnp.sqrt(b2), updates), AdaGradNormState(b2)

    return optax.GradientTransformation(init_fn, update_fn)


# optax's optimizers with their 0.2.8 defaults spelled out, so the constants compared are explicit.
REFERENCES = {
    "adamw": lambda lr: optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-4),
    "nadamw": lambda lr: optax.nadamw(lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-4),
    "adam": lambda lr: optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0),
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda lr: optax.rmsprop(lr, decay=0.9, eps=1e-8, eps_in_sqrt=True),
    "adagrad": lambda lr: optax.adagrad(lr, initial_accumulator_value=0.1, eps=1e-7),
    "adabelief": lambda lr: optax.adabelief(lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16),
    "lion": lambda lr: optax.lion(lr, b1=0.9, b2=0.99, weight_decay=1e-3),
    "signum": signum_ref,
    "diffgrad": diffgrad_ref,
    "powersign": powersign_ref,
    "addsign": addsign_ref,
    "sophia": sophia_ref,
    "lion_tanh": lion_k_ref(lambda c: jnp.tanh(1000.0 * c)),  # K = sum log cosh(1000 x) / 1000
    "lion_clip": lion_k_ref(lambda c: jnp.clip(10.0 * c, -1.0, 1.0)),  # K = 10 sum huber_{0.1}
    "lion_l2": lion_k_ref(_unit_l2),  # K = the l2 norm of each tensor
    "adagradnorm": adagradnorm_ref,
}


# --- the three training loops --------------------------------------------------------------------
def train_optax(opt, reads_h):
    """STEPS steps of an optax transformation from PARAMS0; the final params (a tree)."""

    def body(carry, t):
        params, state = carry
        g, h = gradients(params, t, with_h=reads_h)
        updates, state = opt.update(g, state, params, **({"h": h} if reads_h else {}))
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(body, (PARAMS0, opt.init(PARAMS0)), jnp.arange(1, STEPS + 1))
    return params


@jax.jit
def _all_optax_runs(_):
    """Every reference and every to_optax export, in one compiled function."""
    ref = {n: train_optax(REFERENCES[n](LR[n]), n == "sophia") for n in SEED_NAMES}
    exp = {n: train_optax(to_optax(seed(n), LR[n]), seed(n).reads_h) for n in SEED_NAMES}
    return ref, exp


def segments_of(params):
    sizes = [leaf.size for leaf in jax.tree.leaves(params)]
    starts = np.cumsum([0] + sizes[:-1])
    return tuple((int(s), int(n)) for s, n in zip(starts, sizes))


def train_population(programs, lrs, space: UpdateRuleSpace):
    """All programs in one population (params flat, (P, N)), one compiled scan: the final params as trees."""
    enc = encode(programs, space.max_len, space.n_state)
    P = len(programs)
    segments = segments_of(PARAMS0)

    @jax.jit
    def run(enc, lr):
        def body(carry, t):
            w, regs = carry
            g, h = jax.vmap(flat_gradients, in_axes=(0, None))(w, t)
            update, regs = run_population(enc, regs, g, w, lr, t.astype(jnp.float32), h, segments=segments)
            return (w - update, regs), None

        w0 = jnp.tile(FLAT0, (P, 1))
        regs0 = init_registers(P, N, space.max_len, space.n_state)
        (w, _), _ = jax.lax.scan(body, (w0, regs0), jnp.arange(1, STEPS + 1))
        return w

    w = run(enc, jnp.asarray(lrs, jnp.float32))
    return [UNRAVEL(w[i]) for i in range(P)]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def mlp_err(params, ref) -> float:
    return rel_err(ravel_pytree(params["mlp"])[0], ravel_pytree(ref["mlp"])[0])


def wide_err(params, ref) -> float:
    """Worst relative error over the `wide` columns (one gradient magnitude each)."""
    a, b = np.asarray(params["wide"], np.float64), np.asarray(ref["wide"], np.float64)
    return float(np.max(np.linalg.norm(a - b, axis=0) / np.linalg.norm(b, axis=0)))


@pytest.fixture(scope="module")
def runs():
    ref, exp = _all_optax_runs(0)
    space = UpdateRuleSpace(allow_h=True)
    batched = train_population([seed(n) for n in SEED_NAMES], [LR[n] for n in SEED_NAMES], space)
    return ref, exp, dict(zip(SEED_NAMES, batched))


# --- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SEED_NAMES)
def test_batched_interpreter_matches_reference(runs, name):
    ref, _, batched = runs
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(batched[name]))
    err = mlp_err(batched[name], ref[name])
    assert err < TOL, f"{name}: batched vs reference, MLP params relative error {err:.3g}"
    err = wide_err(batched[name], ref[name])
    assert err < TOL, f"{name}: batched vs reference, wide-range params relative error {err:.3g}"


@pytest.mark.parametrize("name", SEED_NAMES)
def test_to_optax_matches_reference(runs, name):
    ref, exp, _ = runs
    err = mlp_err(exp[name], ref[name])
    assert err < TOL, f"{name}: to_optax vs reference, MLP params relative error {err:.3g}"
    err = wide_err(exp[name], ref[name])
    assert err < TOL, f"{name}: to_optax vs reference, wide-range params relative error {err:.3g}"


def test_references_train_and_are_told_apart(runs):
    """The comparison has teeth: every rule moves the MLP and lowers its loss, and rules that differ only
    slightly (AdamW vs Adam: decay 1e-4) differ by far more than the tolerance."""
    ref, _, _ = runs
    loss0 = float(mlp_loss(PARAMS0["mlp"]))
    for name in SEED_NAMES:
        assert mlp_err(PARAMS0, ref[name]) > 1e-2, name
        assert float(mlp_loss(ref[name]["mlp"])) < loss0, name
    assert mlp_err(ref["adamw"], ref["adam"]) > 5 * TOL
    assert mlp_err(ref["nesterov"], ref["momentum"]) > 10 * TOL
    assert mlp_err(ref["powersign"], ref["addsign"]) > 10 * TOL
    for a, b in [("lion", "lion_tanh"), ("lion", "lion_clip"), ("lion_tanh", "lion_clip"), ("lion", "lion_l2")]:
        assert mlp_err(ref[a], ref[b]) > 10 * TOL, (a, b)


def test_lion_k_and_adagradnorm_steps_follow_their_k_and_norm():
    """One step from zero state, by hand: grad K of each Lion-K seed (tanh, clip, per-tensor unit l2) applied
    to c = 0.1 g, and AdaGrad-Norm's step lr g / ||g|| with the norm over the WHOLE tree."""
    g = {"a": jnp.array([3e-4, -2e-3, 0.0], jnp.float32), "b": jnp.array([[4.0, 0.0]], jnp.float32)}
    w = {"a": jnp.array([1.0, 3.0, -1.0], jnp.float32), "b": jnp.array([[0.5, -0.5]], jnp.float32)}

    def step(name):
        opt = to_optax(seed(name), 0.1)
        u, _ = opt.update(g, opt.init(w), w)
        return {k: -np.asarray(v, np.float64) for k, v in u.items()}

    ga = {k: np.asarray(v, np.float64) for k, v in g.items()}
    wa = {k: np.asarray(v, np.float64) for k, v in w.items()}
    expect = {
        "lion_tanh": {k: 0.1 * (np.tanh(1000 * 0.1 * ga[k]) + 1e-3 * wa[k]) for k in ga},
        "lion_clip": {k: 0.1 * (np.clip(10 * 0.1 * ga[k], -1, 1) + 1e-3 * wa[k]) for k in ga},
        "lion_l2": {k: 0.1 * (ga[k] / np.linalg.norm(ga[k]) + 1e-3 * wa[k]) for k in ga},
        "adagradnorm": {k: 0.1 * ga[k] / np.sqrt(sum(np.sum(x * x) for x in ga.values())) for k in ga},
    }
    for name, want in expect.items():
        got = step(name)
        for k in ga:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-12, err_msg=f"{name}/{k}")
    # tanh and clip differ in the linear-to-saturated region (tanh(1000 c) vs clip(10 c)), l2 is per tensor
    assert not np.allclose(expect["lion_tanh"]["a"], expect["lion_clip"]["a"], rtol=1e-3)
    assert np.linalg.norm(expect["lion_l2"]["b"] / 0.1 - 1e-3 * wa["b"]) == pytest.approx(1.0)


def test_sophia_reads_h():
    """Sophia's update depends on h: a different Hessian estimate gives a different step."""
    opt = to_optax(seed("sophia"), 1e-3)
    g = {"w": jnp.array([0.3, -0.2, 0.1], jnp.float32)}
    state = opt.init(g)
    # m = 0.035 g, 0.01 v = 1e-4 h: h = 1e4 gives an unclipped ratio 0.35 g, h = 1 a clipped one (sign(g)).
    u1, _ = opt.update(g, state, g, h={"w": jnp.full(3, 1e4, jnp.float32)})
    u2, _ = opt.update(g, state, g, h={"w": jnp.full(3, 1.0, jnp.float32)})
    w = np.asarray(g["w"])
    np.testing.assert_allclose(-np.asarray(u1["w"]), 1e-3 * (0.035 * w / (1e-4 * 1e4) + 1e-4 * w), rtol=1e-5)
    np.testing.assert_allclose(-np.asarray(u2["w"]), 1e-3 * (np.sign(w) + 1e-4 * w), rtol=1e-5)
    assert seed("sophia").reads_h and not any(seed(n).reads_h for n in SEED_NAMES if n != "sophia")


# --- the registry -----------------------------------------------------------------------------------
def test_seed_files_and_names_agree():
    files = sorted(p.stem for p in SEEDS_DIR.glob("*.py"))
    assert files == sorted(SEED_NAMES)
    assert len(set(SEED_NAMES)) == len(SEED_NAMES) == 19


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_text_is_a_cited_program(name):
    text = seed_text(name)
    assert text.startswith("# "), f"{name}.py must start with a comment citing its source"
    program = seed(name)
    assert program.name == name
    assert parse(str(program)) == program  # canonical form round-trips
    assert seeds()[name] == program


def test_seeds_are_ordered_and_fit_the_default_space():
    assert tuple(seeds()) == SEED_NAMES
    space = UpdateRuleSpace()
    assert space.max_len == 24 and space.n_state == 4 and not space.allow_h
    assert set(space.seeds()) == set(SEED_NAMES) - {"sophia"}
    assert space.problems(seed("sophia")) == ["reads h but allow_h is False"]
    assert UpdateRuleSpace(allow_h=True).seeds() == seeds()


def test_unknown_seed_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown seed 'adamx'.*adamw.*sophia"):
        seed("adamx")
    with pytest.raises(ValueError, match="known seeds"):
        seed_text("../program")


def test_space_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown op.*'softmax'"):
        UpdateRuleSpace(ops=("add", "softmax"))
    with pytest.raises(ValueError, match="max_len"):
        UpdateRuleSpace(max_len=0)
    with pytest.raises(ValueError, match="const_log10_range"):
        UpdateRuleSpace(const_log10_range=(1.0, -4.0))
    with pytest.raises(ValueError, match="const_negative_prob"):
        UpdateRuleSpace(const_negative_prob=1.5)


def test_space_membership():
    small = UpdateRuleSpace(ops=("add", "mul", "sign", "interp"), max_len=6)
    assert small.admits(seed("lion"))
    assert small.problems(seed("signum")) == []
    assert any("max_len" in p for p in small.problems(seed("adam")))
    assert any("sqrt" in p for p in small.problems(seed("adam")))
    assert UpdateRuleSpace(n_state=2).problems(seed("diffgrad")) == ["3 state variables > n_state 2"]
    # `copy` (diffgrad's `p = g`) is plain assignment, allowed whatever `ops` lists.
    no_copy = UpdateRuleSpace(ops=tuple(o for o in UpdateRuleSpace().ops if o != "copy"))
    assert no_copy.admits(seed("diffgrad"))


def test_constant_sampling_follows_the_space():
    space = UpdateRuleSpace(common_constant_prob=0.0, const_log10_range=(-3.0, -1.0), const_negative_prob=0.5)
    rng = np.random.default_rng(0)
    draws = np.array([space.sample_constant(rng) for _ in range(400)])
    assert np.all((np.abs(draws) >= 1e-3 * (1 - 1e-4)) & (np.abs(draws) <= 0.1 * (1 + 1e-4)))
    assert 0.35 < np.mean(draws < 0) < 0.65
    assert all(float(f"{d:.4g}") == d for d in draws)  # rounded to const_digits significant digits
    again = np.random.default_rng(0)
    assert [space.sample_constant(again) for _ in range(400)] == draws.tolist()  # same seed, same draws
    common = UpdateRuleSpace(common_constant_prob=1.0)
    assert {common.sample_constant(rng) for _ in range(200)} <= set(common.common_constants)
    factors = np.array([space.perturb_constant(0.5, rng) / 0.5 for _ in range(400)])
    assert np.all(factors > 0) and 0.7 < np.std(np.log2(factors)) < 1.3
