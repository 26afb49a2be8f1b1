"""Population trainer (envs/train.py) and tuned-AdamW baselines (envs/baselines.py)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from discover.infra.errors import InputError
from envs import baselines
from envs.tasks import LR_SCHEDULES, Task, get_task, with_lr_schedule
from envs.train import (
    adamw_init_opt_state,
    adamw_update_fn,
    as_typed_keys,
    flat_layout,
    hutchinson_diagonal,
    make_population_trainer,
    ravel,
    segment_ids,
    task_layout,
    unravel,
)

DIAG = jnp.asarray([1.0, 4.0, 0.25, 2.0, 0.5], jnp.float32)


def _diag_quadratic(num_steps=12) -> Task:
    """0.5 * sum(DIAG * (w - c)^2) with tiny noise c: cheap to compile, Hessian known exactly."""

    def init(key):
        return {
            "a": jax.random.normal(key, (2,)),
            "b": {"c": jax.random.normal(jax.random.fold_in(key, 1), (3,))},
        }

    def flat(p):
        return jnp.concatenate([p["a"], p["b"]["c"]])

    def batch(key, step):
        return 0.01 * jax.random.normal(jax.random.fold_in(key, step), (5,))

    def loss(p, c):
        return 0.5 * jnp.sum(DIAG * (flat(p) - c) ** 2)

    def val_loss(p):
        return 0.5 * jnp.sum(DIAG * flat(p) ** 2)

    return Task("diag_quadratic", init, loss, batch, val_loss, num_steps=num_steps, lr=0.1)


def _sgd(opt_state, g, w, lr, t, h, opt_args):
    return lr[:, None] * g, opt_state


def _no_state(num_members, size):
    return ()


KEYS4 = jax.random.split(jax.random.key(0), 4)


def test_flat_layout_round_trips_a_nested_pytree():
    params = {"z": jnp.ones((2, 3)), "a": (jnp.arange(4.0), {"k": jnp.full((1, 1, 2), 7.0)})}
    layout = flat_layout(params)
    assert layout.size == 12
    assert layout.segments == ((0, 4), (4, 2), (6, 6))  # jax.tree order: a[0], a[1].k, z
    vec = ravel(layout, params)
    assert vec.shape == (12,) and float(vec[4]) == 7.0
    back = unravel(layout, vec)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(params)))
    assert segment_ids(layout).tolist() == [0] * 4 + [1] * 2 + [2] * 6
    assert task_layout(get_task("softmax_digits_proxy")).segments == ((0, 10), (10, 640))
    with pytest.raises(ValueError, match="float32"):
        flat_layout({"i": jnp.zeros(3, jnp.int32)})


def test_adamw_update_fn_is_optax_adamw_per_member():
    num_members, size = 3, 7
    lrs = jnp.asarray([1e-3, 1e-2, 1e-1])
    update_fn, state = adamw_update_fn(b1=0.8, wd=0.1), adamw_init_opt_state(num_members, size)
    w = jax.random.normal(jax.random.key(0), (num_members, size))
    ref_w = [w[p] for p in range(num_members)]
    ref_tx = [optax.adamw(float(lr), b1=0.8, weight_decay=0.1) for lr in lrs]
    ref_state = [tx.init(x) for tx, x in zip(ref_tx, ref_w)]
    for t in range(1, 4):
        g = jnp.sin(w * t)
        update, state = update_fn(state, g, w, lrs, jnp.float32(t), None, None)
        w = w - update
        for p in range(num_members):
            u, ref_state[p] = ref_tx[p].update(jnp.sin(ref_w[p] * t), ref_state[p], ref_w[p])
            ref_w[p] = optax.apply_updates(ref_w[p], u)
    np.testing.assert_allclose(w, jnp.stack(ref_w), rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def counted_trainer():
    traces = []

    def update_fn(opt_state, g, w, lr, t, h, opt_args):
        traces.append(h)  # runs once per trace: counts compilations (h is None: no Hessian asked for)
        return opt_args["scale"][:, None] * lr[:, None] * g, opt_state

    task = _diag_quadratic()
    return make_population_trainer(task, update_fn, _no_state, curve_every=4), traces


def test_new_opt_args_of_the_same_shape_do_not_recompile(counted_trainer):
    train, traces = counted_trainer
    lrs = jnp.full((4,), 0.1)
    out_a = train(KEYS4, lrs, {"scale": jnp.ones(4)})
    out_b = train(KEYS4, lrs, {"scale": jnp.asarray([0.0, 1.0, 2.0, 3.0])})
    assert traces == [None]  # traced (so compiled) once
    # the programs really differ: scale 0 leaves member 0 at its init, the others move
    assert not np.allclose(out_a["val_loss"], out_b["val_loss"])
    init_val = jax.vmap(
        lambda k: _diag_quadratic().val_loss(_diag_quadratic().init(jax.random.fold_in(k, 0)))
    )(KEYS4)
    np.testing.assert_allclose(out_b["val_loss"][0], init_val[0], rtol=1e-6)
    assert float(out_b["val_loss"][3]) < float(out_b["val_loss"][1]) < float(init_val[1])


def test_outputs_shapes_and_determinism(counted_trainer):
    train, _ = counted_trainer
    args = (jnp.full((4,), 0.1), {"scale": jnp.ones(4)})
    out = train(KEYS4, *args)
    assert out["val_loss"].shape == out["train_loss"].shape == out["diverged"].shape == (4,)
    assert out["curve"].shape == (4, 12 // 4)
    assert np.all(out["curve"][:, 0] > out["curve"][:, -1])
    again = train(jax.random.key_data(KEYS4), *args)  # raw uint32 keys mean the same keys
    for k in out:
        np.testing.assert_array_equal(out[k], again[k])
    other = train(jax.random.split(jax.random.key(1), 4), *args)
    assert not np.allclose(out["val_loss"], other["val_loss"])
    assert as_typed_keys(jax.random.key_data(KEYS4)).dtype == KEYS4.dtype


def test_late_window_val_loss_averages_the_validation_loss_of_earlier_iterates():
    """val_points=3 on 40 steps (last window 4, stride 1): the mean of the final validation losses of the same
    run stopped after 38, 39 and 40 steps (same keys, so the same data stream and iterates)."""
    task = _diag_quadratic(num_steps=40)
    lrs = jnp.full((4,), 0.3)
    out = make_population_trainer(task, _sgd, _no_state, val_points=3)(KEYS4, lrs, ())
    finals = [make_population_trainer(dataclasses.replace(task, num_steps=n), _sgd, _no_state)(KEYS4, lrs, ())
              for n in (38, 39, 40)]
    np.testing.assert_allclose(out["val_loss"], finals[-1]["val_loss"], rtol=1e-6)
    expected = np.mean([np.asarray(f["val_loss"]) for f in finals], axis=0)
    np.testing.assert_allclose(out["val_loss_window"], expected, rtol=1e-5)
    assert not np.allclose(out["val_loss_window"], out["val_loss"])
    assert "val_loss_window" not in finals[-1]  # only when asked for
    with pytest.raises(ValueError, match="val_points must be >= 1"):
        make_population_trainer(task, _sgd, _no_state, val_points=0)


def test_a_cosine_task_moves_every_rule_s_lr_by_optax_cosine_decay():
    """Under the task's cosine schedule, SGD trains exactly as SGD with optax's cosine factor applied by hand on a
    constant-lr task; and the schedule changes what is learned (the last steps are almost still)."""
    task = _diag_quadratic(num_steps=30)
    cosine = with_lr_schedule(task, "cosine")
    decay = optax.cosine_decay_schedule(1.0, 30)

    def sgd_by_hand(opt_state, g, w, lr, t, h, opt_args):
        return (lr * decay(t.astype(jnp.int32) - 1))[:, None] * g, opt_state  # t = step index + 1

    lrs = jnp.full((4,), 0.3)
    scheduled = make_population_trainer(cosine, _sgd, _no_state)(KEYS4, lrs, ())
    by_hand = make_population_trainer(task, sgd_by_hand, _no_state)(KEYS4, lrs, ())
    constant = make_population_trainer(task, _sgd, _no_state)(KEYS4, lrs, ())
    np.testing.assert_allclose(scheduled["val_loss"], by_hand["val_loss"], rtol=1e-5)
    assert not np.allclose(scheduled["val_loss"], constant["val_loss"], rtol=1e-3)


def test_with_lr_schedule_keys_the_reference_cache_and_checks_the_name():
    task = get_task("noisy_quadratic_proxy")
    cosine = with_lr_schedule(task, "cosine")
    assert cosine.lr_schedule == "cosine" and cosine.fingerprint != task.fingerprint
    assert json.loads(cosine.spec)["lr_schedule"] == "cosine"
    back = with_lr_schedule(cosine, "constant")
    assert back.spec == task.spec and back.fingerprint == task.fingerprint  # old cache entries still hold
    assert with_lr_schedule(task, "constant") is task
    assert set(LR_SCHEDULES) == {"constant", "cosine"}
    with pytest.raises(InputError, match="unknown lr schedule 'linear'"):
        with_lr_schedule(task, "linear")


def test_non_finite_updates_give_inf_val_loss_without_crashing():
    def update_fn(opt_state, g, w, lr, t, h, opt_args):
        poisoned = jnp.where(jnp.arange(w.shape[0])[:, None] == 0, jnp.nan, g)  # member 0: NaN
        return lr[:, None] * poisoned, opt_state

    task = _diag_quadratic()
    train = make_population_trainer(task, update_fn, _no_state, curve_every=3)
    lrs = jnp.asarray([0.1, 0.1, 100.0, 0.1])  # member 2 explodes: lr 100 on curvature 4
    out = jax.device_get(train(KEYS4, lrs, None))
    assert out["diverged"].tolist() == [True, False, True, False]
    assert np.isposinf(out["val_loss"][[0, 2]]).all() and np.isfinite(out["val_loss"][[1, 3]]).all()
    assert np.isposinf(out["train_loss"][[0, 2]]).all()
    assert np.isposinf(out["curve"][0]).all()  # non-finite from the first step on, and it stays so
    assert np.isfinite(out["curve"][1]).all()


def test_hutchinson_estimate_is_unbiased():
    a = np.asarray([[2.0, 0.5, -0.3], [0.5, 1.0, 0.8], [-0.3, 0.8, 3.0]], np.float32)

    def loss(v, b):
        return 0.5 * v @ (jnp.asarray(a) @ v) + b * jnp.sum(v**3)

    w, n = jnp.asarray([0.1, -0.2, 0.3]), 4000
    keys = jax.random.split(jax.random.key(2), n)
    est = np.asarray(jax.jit(jax.vmap(lambda k: hutchinson_diagonal(loss, w, 1.0, k)))(keys))
    hess = a + np.diag(6.0 * np.asarray(w))
    spread = np.sqrt(np.sum(hess**2, axis=1) - np.diag(hess) ** 2)  # std of one sample
    np.testing.assert_allclose(est.mean(0), np.diag(hess), atol=float(5 * spread.max() / np.sqrt(n)))
    assert not np.allclose(est[0], np.diag(hess), atol=0.1)  # one sample is noisy: off-diagonal terms enter


def test_newton_step_with_the_hessian_estimate_solves_a_diagonal_quadratic():
    traced_h = []

    def newton(opt_state, g, w, lr, t, h, opt_args):
        traced_h.append(h is not None)
        return lr[:, None] * g / jnp.maximum(h, 1e-3), opt_state

    train = make_population_trainer(_diag_quadratic(num_steps=3), newton, _no_state, needs_hessian=True)
    out = train(KEYS4, jnp.ones(4), None)
    assert traced_h == [True]
    # Hutchinson is exact for a diagonal Hessian, so a unit Newton step lands on the (noisy) optimum
    assert np.all(np.asarray(out["val_loss"]) < 1e-3)


W0 = np.linspace(0.5, 1.5, 5).astype(np.float32)


@pytest.mark.parametrize("every", [1, 2, 5])
def test_hessian_is_refreshed_every_k_steps_and_held_in_between(every):
    # loss sum(w^4)/12 has the diagonal Hessian w^2, estimated exactly; the rule steps w <- w - 0.1 h
    quartic = Task(
        "quartic",
        init=lambda key: {"w": jnp.asarray(W0)},
        loss=lambda p, b: jnp.sum(p["w"] ** 4) / 12 + 0 * b,
        batch=lambda key, step: jnp.zeros(()),
        val_loss=lambda p: jnp.sum(p["w"]),
        num_steps=3,
        lr=0.1,
    )
    step_h = lambda opt_state, g, w, lr, t, h, opt_args: (lr[:, None] * h, opt_state)
    train = make_population_trainer(quartic, step_h, _no_state, needs_hessian=True, hessian_every=every)
    w = W0.astype(np.float64)
    for i in range(3):
        if i % every == 0:
            h = w**2
        w = w - 0.1 * h
    np.testing.assert_allclose(train(KEYS4[:2], jnp.full((2,), 0.1), None)["val_loss"], w.sum(), rtol=1e-5)


# ----------------------------------------------------------------------------------------------- baselines


def test_adamw_reference_is_computed_once_and_cached(tmp_path, monkeypatch):
    cache = tmp_path / "sub" / "baselines.json"
    calls = []
    real = baselines.tune_adamw
    monkeypatch.setattr(baselines, "tune_adamw", lambda *a, **k: calls.append(1) or real(*a, **k))
    grid = (0.01, 0.1, 1.0)
    ref = baselines.adamw_reference("noisy_quadratic_proxy", lr_grid=grid, seeds=2, cache_path=cache)
    assert calls == [1] and cache.exists()
    per_lr = ref["val_loss_per_lr"]
    assert ref["lr"] == grid[int(np.nanargmin([np.inf if v is None else v for v in per_lr]))]
    assert ref["val_loss"] == min(v for v in per_lr if v is not None) and np.isfinite(ref["val_loss"])
    assert ref["lr"] == 0.1  # the tuned lr sits inside the grid (0.01 too slow, 1.0 too noisy on this task)

    again = baselines.adamw_reference("noisy_quadratic_proxy", lr_grid=grid, seeds=2, cache_path=cache)
    assert calls == [1] and again == ref
    stored = json.loads(cache.read_text())
    assert len(stored) == 1
    (key,) = stored
    assert get_task("noisy_quadratic_proxy").fingerprint in key and jax.__version__ in key

    baselines.adamw_reference("noisy_quadratic_proxy", lr_grid=grid, seeds=1, cache_path=cache)
    assert calls == [1, 1] and len(json.loads(cache.read_text())) == 2
    assert not list(cache.parent.glob("*.tmp"))  # atomic write leaves no temporaries


def test_adamw_reference_reproduces_one_trainer_call_per_grid(tmp_path):
    task = dataclasses.replace(get_task("noisy_quadratic_proxy"), num_steps=20)
    ref = baselines.adamw_reference(task, lr_grid=(0.05, 0.2), seeds=3, cache_path=tmp_path / "b.json")
    train = make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state)
    val = train(baselines.reference_keys(3), jnp.full((3,), ref["lr"]), None)["val_loss"]
    assert ref["val_loss"] == pytest.approx(float(np.mean(val)), rel=1e-5)


def test_bad_reference_arguments_and_relative_loss():
    with pytest.raises(ValueError, match="lr_grid"):
        baselines.adamw_reference("noisy_quadratic_proxy", lr_grid=(0.1, -1.0))
    with pytest.raises(ValueError, match="seeds"):
        baselines.adamw_reference("noisy_quadratic_proxy", seeds=0)
    rel = baselines.relative_loss(jnp.asarray([1.0, jnp.nan, jnp.inf, 4.0]), 2.0)
    assert rel.tolist() == [0.5, float("inf"), float("inf"), 2.0]


def test_trainers_are_shared_for_the_same_task_and_rule():
    task = get_task("noisy_quadratic_proxy")
    first = make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state)
    assert make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state) is first
    assert make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state, curve_every=5) is not first
    with pytest.raises(ValueError, match="hessian_every"):
        make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state, hessian_every=0)


def test_a_rule_that_blows_the_weights_up_does_not_read_as_a_zero_loss():
    """Adding a huge constant to every weight, ignoring the gradient, makes every logit ~1e30. logsumexp(z) - z_y
    then rounds to 0 (a perfect score that a search found and exploited); the loss must stay at least log K."""
    from envs.supervised import cross_entropy_rows

    assert np.allclose(cross_entropy_rows(jnp.full((2, 3), 1e30), jnp.asarray([0, 2])), np.log(3.0))

    def blow_up(opt_state, g, w, lr, t, h, opt_args):
        return -jnp.full_like(w, 1e6), opt_state  # w <- w + 1e6 at every step

    task = dataclasses.replace(get_task("softmax_digits_proxy"), num_steps=20)
    train = make_population_trainer(task, blow_up, _no_state)
    out = jax.device_get(train(KEYS4[:2], jnp.asarray([1e-3, 1e-3]), None))
    assert not out["diverged"].any()
    assert (out["val_loss"] >= np.log(10.0) - 1e-3).all(), out["val_loss"]
