"""The two execution paths agree: batched interpreter == to_optax == exported module (float32 rounding),
and the batched interpreter compiles once however the programs change."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import discover
from discover.language import interpreter, ops

STEPS = 40
SHAPES = {"a": (3, 4), "b": (5,), "c": (2, 1, 3)}


def _args(op):
    return {1: "m", 2: "m, g", 3: "g, m, 0.3"}[op.arity]


def op_program(op) -> discover.Program:
    """A small stateful program that routes every step through `op`."""
    return discover.parse(
        f"""
def use_{op.name}(g, w, m, lr, t):
    m = interp(g, m, 0.9)
    a = {op.name}({_args(op)})
    u = tanh(a)
    u = u + w * 0.01
    u = u * lr
    return u, m
"""
    )


PROGRAMS = [op_program(op) for op in ops.OPS] + [
    discover.parse(
        """
def mixed(g, w, m, v, lr, t):
    m = interp(g, m, 0.9)
    v = interp(square(g), v, 0.999)
    mh = m / (1.0 - pow(0.9, t))
    vh = v / (1.0 - pow(0.999, t))
    c = cosine(g, m) + rms(m) - mean(g) * max_abs(v) / (global_norm(g) + norm(w))
    update = mh / (sqrt(vh) + 1e-8) + clip(c, 0.5) * 0.01
    update = update * lr
    return update, m, v
"""
    )
]


# The exported module is the specialized path's own code; checking a spread of ops keeps the test fast.
EXPORT_CHECKED = {"mixed", "use_interp", "use_reciprocal", "use_cosine", "use_norm", "use_pow", "use_erf"}


def _params():
    key = jax.random.PRNGKey(0)
    keys = jax.random.split(key, len(SHAPES))
    return {k: jax.random.normal(kk, s) for (k, s), kk in zip(SHAPES.items(), keys)}


def _grad(w, i):
    # A deterministic gradient field that depends on the parameters (so the paths' feedback matters).
    return jax.tree.map(lambda x: jnp.sin(3.0 * x + 0.1 * i) + 0.05 * x, w)


def run_specialized(opt, steps=STEPS):
    w = _params()

    @jax.jit
    def train(w):
        def step(carry, i):
            w, s = carry
            u, s = opt.update(_grad(w, i), s, w)
            return (optax.apply_updates(w, u), s), None

        (w, _), _ = jax.lax.scan(step, (w, opt.init(w)), jnp.arange(steps, dtype=jnp.float32))
        return w

    return train(w)


def run_batched(programs, lr=1e-2, steps=STEPS):
    params = _params()
    leaves, treedef = jax.tree.flatten(params)
    sizes = [x.size for x in leaves]
    starts = np.cumsum([0] + sizes[:-1])
    segments = tuple((int(s), int(n)) for s, n in zip(starts, sizes))
    P, N = len(programs), sum(sizes)
    L, S = max(len(p) for p in programs), max(len(p.state) for p in programs)
    enc = interpreter.encode(programs, L, S)

    def unflat(x):
        return treedef.unflatten([x[s:s + n].reshape(leaf.shape) for (s, n), leaf in zip(segments, leaves)])

    def flat(tree):
        return jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(tree)])

    @jax.jit
    def train(enc, w):
        def step(carry, i):
            w, regs = carry
            g = jax.vmap(lambda x: flat(_grad(unflat(x), i)))(w)
            u, regs = interpreter.run_population(enc, regs, g, w, jnp.full((P,), lr), i + 1.0, segments=segments)
            return (w - u, regs), None

        regs = interpreter.init_registers(P, N, L, S)
        (w, _), _ = jax.lax.scan(step, (w, regs), jnp.arange(steps, dtype=jnp.float32))
        return w

    w0 = jnp.broadcast_to(flat(params), (P, N))
    out = train(enc, w0)
    return [unflat(x) for x in out]


def _close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _import(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def batched_results():
    return run_batched(PROGRAMS)


@pytest.mark.parametrize("index", range(len(PROGRAMS)), ids=[p.name for p in PROGRAMS])
def test_batched_equals_specialized_equals_exported(index, batched_results, tmp_path):
    prog = PROGRAMS[index]
    specialized = run_specialized(discover.to_optax(prog, 1e-2))
    _close(batched_results[index], specialized)
    if prog.name not in EXPORT_CHECKED:
        return
    path = tmp_path / f"{prog.name}_rule.py"
    path.write_text(discover.export_module(prog))
    exported = run_specialized(getattr(_import(path, f"{prog.name}_rule"), prog.name)(1e-2))
    _close(specialized, exported, rtol=0, atol=0)  # the same code: bit for bit
    moved = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(specialized),
                                                              jax.tree.leaves(_params())))
    assert moved > 0.0  # the program did something


def test_interpreter_compiles_once_across_populations():
    traces = []
    P, N, L, S = 4, 7, 12, 2

    @jax.jit
    def step(enc, regs, g, w):
        traces.append(1)
        return interpreter.run_population(enc, regs, g, w, jnp.full((P,), 0.1), 1.0)

    rng = np.random.default_rng(0)
    pool = [p for p in PROGRAMS if len(p) <= L and len(p.state) <= S]
    g = jnp.asarray(rng.normal(size=(P, N)), jnp.float32)
    results = []
    for k in range(3):
        progs = [pool[i] for i in rng.choice(len(pool), P, replace=False)]
        u, _ = step(interpreter.encode(progs, L, S), interpreter.init_registers(P, N, L, S), g, g)
        results.append(np.asarray(u))
    assert len(traces) == 1
    assert not np.allclose(results[0], results[1])  # different programs, different updates


def test_non_finite_programs_do_not_crash():
    prog = discover.parse("def boom(g, w, lr, t):\n    u = exp(g) * 1e30\n    u = u * u\n    return u\n")
    out = run_batched([prog, op_program(ops.OP_BY_NAME["add"])], steps=3)
    assert not np.all(np.isfinite(np.asarray(jax.tree.leaves(out[0])[0])))
    assert np.all(np.isfinite(np.asarray(jax.tree.leaves(out[1])[0])))


def test_to_optax_composes_and_accepts_schedules_vmap_and_bfloat16():
    prog = PROGRAMS[-1]
    sched = optax.linear_schedule(1e-2, 1e-3, 10)
    opt = optax.chain(optax.clip_by_global_norm(1.0), discover.to_optax(prog, sched))
    w = run_specialized(opt, steps=5)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(w))

    injected = optax.inject_hyperparams(lambda learning_rate: discover.to_optax(prog, learning_rate))(
        learning_rate=1e-2)
    _close(run_specialized(injected, steps=5), run_specialized(discover.to_optax(prog, 1e-2), steps=5))

    opt = discover.to_optax(prog, 1e-2)
    ws = jax.vmap(lambda k: {"x": jax.random.normal(k, (3,))})(jax.random.split(jax.random.PRNGKey(1), 4))
    states = jax.vmap(opt.init)(ws)
    u, _ = jax.vmap(opt.update)(ws, states, ws)
    assert u["x"].shape == (4, 3)

    wb = {"x": jnp.ones((3,), jnp.bfloat16)}
    u, s = opt.update(wb, opt.init(wb), wb)
    assert u["x"].dtype == jnp.bfloat16 and s.m["x"].dtype == jnp.float32


def test_program_reading_h_takes_it_as_extra_arg():
    prog = discover.parse(
        "def hess(g, w, m, v, lr, t, h):\n    m = interp(g, m, 0.9)\n    v = interp(h, v, 0.99)\n"
        "    u = m / max(v, 1e-3)\n    u = clip(u, 1.0) * lr\n    return u, m, v\n")
    opt = discover.to_optax(prog, 1e-2)
    assert isinstance(opt, optax.GradientTransformationExtraArgs)
    w = {"x": jnp.ones(3)}
    with pytest.raises(ValueError, match="reads h"):
        opt.update(w, opt.init(w), w)
    u, _ = opt.update(w, opt.init(w), w, h={"x": jnp.full(3, 2.0)})
    assert np.allclose(u["x"], -1e-2 * np.clip(0.1 / max(0.02, 1e-3), -1, 1))


def test_encoding_splits_scalar_statements_and_drops_dead_ones():
    # Bias corrections are functions of t and constants only: they run on (P,) values, not (P, N) rows; a dead
    # statement is not encoded at all. Neither changes what the program computes.
    prog = discover.parse("""
def adam_like(g, w, m, lr, t):
    m = interp(g, m, 0.9)
    unused = exp(g) * 3.0
    c = 1.0 - pow(0.9, t)
    u = m / c
    u = u * lr
    return u, m
""")
    clean = discover.parse("""
def adam_like(g, w, m, lr, t):
    m = interp(g, m, 0.9)
    c = 1.0 - pow(0.9, t)
    u = m / c
    u = u * lr
    return u, m
""")
    enc = interpreter.encode([prog], 8, 1)
    assert int(enc.s_length[0]) == 2  # pow(0.9, t), 1 - that
    assert int(enc.length[0]) == 3  # interp, the division, the lr scaling; the two dead statements are gone
    P, N = 2, 5
    rng = np.random.default_rng(0)
    g = jnp.broadcast_to(jnp.asarray(rng.normal(size=(N,)), jnp.float32), (P, N))  # the same for both
    both = interpreter.encode([prog, clean], 8, 1)
    regs = interpreter.init_registers(P, N, 8, 1)
    for t in (1.0, 2.0, 3.0):
        u, regs = interpreter.run_population(both, regs, g, g, jnp.full((P,), 0.1), t)
        np.testing.assert_array_equal(np.asarray(u[0]), np.asarray(u[1]))
        # by hand: m_t = 0.1 g (1 + 0.9 + ...), bias-corrected to g exactly
        np.testing.assert_allclose(np.asarray(u[0]), 0.1 * np.asarray(g[0]), rtol=1e-5)
