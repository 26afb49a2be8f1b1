"""Tasks (envs/tasks.py, task_families.py, task_data.py): registry, determinism, data, and that AdamW makes
progress on every task."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import task_data, task_families, tasks, vector_families
from envs.tasks import get_task, task_names
from envs.train import adamw_init_opt_state, adamw_update_fn, make_population_trainer, task_layout

FAMILIES = ("mlp_regression", "softmax_digits", "cnn_digits", "charlm", "noisy_quadratic")
TARGETS = (
    "cnn_digits_target", "transformer_charlm_target", "mlp_wine_target", "mlp_digits_target",
    "mlp_breast_cancer_target", "mlp_diabetes_target", "autoencoder_digits_target", "charlm_target",
)  # fmt: skip
BUILDERS = {**task_families.BUILDERS, **vector_families.BUILDERS}


def test_registry_has_a_proxy_and_a_metaval_version_of_each_family_and_the_targets():
    assert task_names("proxy") == sorted(f"{f}_proxy" for f in FAMILIES)
    assert task_names("metaval") == sorted(f"{f}_metaval" for f in FAMILIES)
    assert task_names("target") == sorted(TARGETS)
    assert task_names() == sorted(task_names("proxy") + task_names("metaval") + task_names("target"))
    for kind in tasks.KINDS:
        for name in task_names(kind):
            task = get_task(name)
            assert (task.name, task.kind) == (name, kind)
            assert name.startswith(task.family)


def test_unknown_names_give_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown task 'nope' \(known: .*charlm_proxy"):
        get_task("nope")
    with pytest.raises(ValueError, match=r"unknown task kind 'big'"):
        task_names("big")
    with pytest.raises(ValueError, match="already registered"):
        tasks.register_task("charlm_proxy", "proxy", "charlm", task_families.BUILDERS["charlm"])
    with pytest.raises(ValueError, match="kind must be one of"):
        tasks.register_task("new_task", "huge", "charlm", task_families.BUILDERS["charlm"])


def test_get_task_returns_the_same_object_and_fingerprints_differ():
    assert get_task("charlm_proxy") is get_task("charlm_proxy")
    prints = {get_task(n).fingerprint for n in task_names()}
    assert len(prints) == len(task_names())


def test_specs_name_each_family_builder_and_the_code_version():
    # A spec keys the tuned-AdamW cache: the builder's name and the code version are part of it.
    for name in task_names():
        task = get_task(name)
        spec = json.loads(task.spec)
        assert spec["builder"] == f"_build_{task.family}" == BUILDERS[task.family].__name__
        assert spec["code_version"] == tasks.TASK_CODE_VERSION and spec["name"] == name

def test_build_task_gives_a_registered_task_its_spec_without_the_registry():
    entry = tasks._REGISTRY["mlp_wine_target"]
    built = tasks.build_task("mlp_wine_target", entry.kind, entry.family, entry.builder, **dict(entry.params))
    assert built.spec == get_task("mlp_wine_target").spec and built is not get_task("mlp_wine_target")
    with pytest.raises(ValueError, match="kind must be one of"):
        tasks.build_task("x", "huge", "mlp_wine", entry.builder, **dict(entry.params))


@pytest.mark.parametrize("family", FAMILIES)
def test_metaval_is_larger_than_proxy(family):
    proxy, metaval = get_task(f"{family}_proxy"), get_task(f"{family}_metaval")
    assert metaval.num_steps >= 3 * proxy.num_steps
    assert task_layout(metaval).size >= task_layout(proxy).size


@pytest.mark.parametrize("name", task_names())
def test_params_are_float32_and_batches_have_fixed_shapes(name):
    task = get_task(name)  # shapes only: no compilation
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert jax.tree.leaves(params) and all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    b0, b9 = (jax.eval_shape(task.batch, jax.random.key(0), s) for s in (0, 9))
    assert jax.tree.structure(b0) == jax.tree.structure(b9)
    assert [x.shape for x in jax.tree.leaves(b0)] == [x.shape for x in jax.tree.leaves(b9)]
    assert jax.eval_shape(task.loss, params, b0).shape == ()
    assert jax.eval_shape(task.val_loss, params).shape == ()


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("name", task_names("proxy"))
def test_batches_depend_on_key_and_step_only(name):
    task = get_task(name)
    k0, k1 = jax.random.key(0), jax.random.key(1)
    b, b_again, b_next_step, b_other_key = jax.jit(
        lambda: (task.batch(k0, 3), task.batch(k0, 3), task.batch(k0, 4), task.batch(k1, 3))
    )()
    assert _same(b, b_again) and not _same(b, b_next_step) and not _same(b, b_other_key)


def _adamw_progress(name, steps):
    """(val loss at init, trainer outputs, outputs of a second identical call, outputs with other keys) of
    AdamW for two members at the task's nominal lr."""
    task = dataclasses.replace(get_task(name), num_steps=steps)
    train = make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state)
    keys, lrs = jax.random.split(jax.random.key(0), 2), jnp.full((2,), task.lr)
    out, again, other = (
        jax.device_get(train(k, lrs, None)) for k in (keys, keys, jax.random.split(keys[0], 2))
    )
    before = np.asarray(jax.jit(jax.vmap(lambda k: task.val_loss(task.init(jax.random.fold_in(k, 0)))))(keys))
    return before, out, again, other


@pytest.mark.parametrize("name", task_names("proxy"))
def test_proxy_training_is_deterministic_and_adamw_decreases_the_val_loss(name):
    before, out, again, other = _adamw_progress(name, 30)
    assert _same(out, again)
    assert not np.allclose(out["val_loss"], other["val_loss"])  # keys change the init and the data
    assert np.all(np.isfinite(before)) and not np.any(out["diverged"])
    assert np.all(out["val_loss"] < 0.9 * before), (before, out["val_loss"])
    assert np.all(np.isfinite(out["train_loss"]))
    if get_task(name).accuracy is not None:
        assert np.all((out["val_accuracy"] > 0.1) & (out["val_accuracy"] <= 1.0))


@pytest.mark.slow
@pytest.mark.parametrize("name", task_names("metaval") + task_names("target"))
def test_adamw_decreases_the_val_loss_of_larger_tasks(name):
    before, out, _, _ = _adamw_progress(name, 30)
    assert np.all(out["val_loss"] < 0.95 * before), (before, out["val_loss"])


def test_charlm_corpus_is_stdlib_text_mostly_in_vocabulary():
    train, val = tasks.charlm_corpus()
    assert len(train) > 100_000 and len(val) > 10_000
    assert len(val) < 0.2 * len(train)
    for ids in (train, val):
        assert ids.min() >= 0 and ids.max() < tasks.CHARLM_VOCAB
        assert np.mean(ids == 0) < 0.01  # unknown characters are rare in stdlib source
    decoded = "".join(tasks.CHARLM_ALPHABET[i - 1] if i else "?" for i in train[:2000])
    assert "import" in decoded or "def " in decoded


def test_text_encoding_maps_ascii_and_unknowns():
    ids = task_data.encode_text("a\n é")
    assert ids.tolist() == [tasks.CHARLM_ALPHABET.index(c) + 1 for c in "a\n "] + [0]


def test_patch_convolution_matches_a_direct_convolution():
    rng = np.random.default_rng(0)
    x, w, bias = rng.normal(size=(3, 6, 6, 4)), rng.normal(size=(3, 3, 4, 5)), np.arange(5.0)
    ours = jax.jit(task_families._conv3x3_valid)(jnp.asarray(x, jnp.float32), {"w": w.reshape(36, 5), "b": bias})
    ref = np.zeros((3, 4, 4, 5)) + bias
    for i in range(4):
        for j in range(4):
            ref[:, i, j] += np.einsum("bhwc,hwco->bo", x[:, i : i + 3, j : j + 3], w)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_noisy_quadratic_has_the_requested_conditioning_and_noise():
    task = get_task("noisy_quadratic_proxy")
    params = task.init(jax.random.key(0))
    hess = jax.jit(jax.hessian(lambda w: task.val_loss({"w": w})))(params["w"])
    eig = np.linalg.eigvalsh(np.asarray(hess, np.float64))
    assert eig.max() / eig.min() == pytest.approx(1e3, rel=1e-2)
    assert np.max(np.abs(np.diag(hess))) < 0.9 * eig.max()  # rotated: not axis-aligned
    # gradient noise covariance = noise^2 * H
    zero = {"w": jnp.zeros_like(params["w"])}
    grads = jax.jit(jax.vmap(lambda k: jax.grad(task.loss)(zero, task.batch(k, 0))["w"]))(
        jax.random.split(jax.random.key(2), 20000)
    )
    cov = np.cov(np.asarray(grads, np.float64).T)
    np.testing.assert_allclose(cov, 0.1**2 * np.asarray(hess), atol=0.1**2 * 0.05)


def test_digit_splits_are_disjoint_and_fixed():
    tx, _ty, vx, vy = task_data.digits_split(400, 0)
    assert len(vx) == 400 and len(tx) == 1797 - 400
    rows = {r.tobytes() for r in tx}
    assert sum(r.tobytes() in rows for r in vx) < 5  # digits has a few duplicate images, no shared rows
    assert set(np.unique(vy)) == set(range(10))


def test_hash_random_numbers_are_well_distributed_and_keyed():
    k0, k1 = jax.random.key(0), jax.random.key(1)

    @jax.jit
    def draw():
        return (
            tasks.hash_normal(k0, 0, (100_000,)),
            tasks.hash_normal(k0, 1, (100_000,)),
            tasks.hash_normal(k1, 0, (100_000,)),
            tasks.hash_randint(k0, 7, (100_000,), 10),
        )

    z00, z01, z10, ints = (np.asarray(a, np.float64) for a in draw())
    assert abs(z00.mean()) < 0.015 and abs(z00.std() - 1.0) < 0.015
    assert abs(np.mean(z00**4) - 3.0) < 0.1  # Gaussian tails, not uniform-ish
    for other in (z01, z10):  # another stream or another key: an independent-looking sequence
        assert abs(np.corrcoef(z00, other)[0, 1]) < 0.015
    counts = np.bincount(ints.astype(int), minlength=10)
    assert ints.min() == 0 and ints.max() == 9
    assert np.sum((counts - 10_000) ** 2 / 10_000) < 30  # chi-square, 9 dof: p ~ 4e-4
