"""The proxy-task pool (envs/task_pool.py, vector_families.py, pool_data.py), the family split, and the
loss-scale augmentation of the population trainer (envs/train.py)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from discover.infra import sharding
from discover.shared.scoring import Scorer, with_steps
from envs import task_pool, vector_families
from envs.pool_data import POOL_ROWS, teacher_split, text_source_split
from envs.supervised import program_fields, supervised_fields
from envs.tasks import Task, task_names
from envs.train import adamw_init_opt_state, adamw_update_fn, make_population_trainer, task_layout
from envs.vector_families import POOL_DATASETS
from search_spaces.update_rules import seed


@pytest.fixture(scope="module")
def pool16():
    return task_pool.sample_task_pool(0, 16)


def test_the_pool_is_deterministic_in_its_seed(pool16):
    again = task_pool.sample_task_pool(0, 16)
    assert [t.spec for t in again] == [t.spec for t in pool16]
    assert all(a is b for a, b in zip(again, pool16))  # the same Task objects: their trainers are reused
    other = task_pool.sample_task_pool(1, 16)
    assert not {t.spec for t in other} & {t.spec for t in pool16}


def test_names_and_specs_are_unique_and_specs_describe_the_task(pool16):
    pool = pool16 + task_pool.sample_task_pool(1, 12)
    assert (
        len({t.name for t in pool}) == len({t.spec for t in pool}) == len({t.fingerprint for t in pool}) == 28
    )
    assert not {t.name for t in pool} & set(task_names())
    for task in pool:
        spec = json.loads(task.spec)
        assert spec["builder"] == "_build_pool_mlp" and spec["kind"] == task.kind == "proxy"
        assert spec["family"] == task.family == f"pool_{spec['params']['dataset']}"
        assert (
            spec["data"] and spec["params"]["num_steps"] == task.num_steps and spec["params"]["lr"] == task.lr
        )
        assert set(spec["params"]) >= {
            "width",
            "depth",
            "activation",
            "init_scale",
            "batch_size",
            "data_seed",
        }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_16_task_pool_needs_few_compile_shapes_and_covers_every_dataset(seed):
    pool = task_pool.sample_task_pool(seed, 16)
    assert task_pool.default_buckets(16) == 5
    assert task_pool.shape_buckets(pool) == 5
    assert sum(len(v) for v in task_pool.bucket_tasks(pool).values()) == 16
    # every shape group (one per real dataset's input/output shape + teacher regression) gets a bucket
    in_out = {(task_layout(t).shapes[1][0], task_layout(t).shapes[-1][-1]) for t in pool}
    assert in_out == {(16, 10), (32, 10), (13, 3), (30, 2), (16, 4)}
    assert len({json.loads(t.spec)["params"]["activation"] for t in pool}) >= 2


def test_buckets_and_families_can_be_chosen():
    two = task_pool.sample_task_pool(5, 12, buckets=2)
    assert task_pool.shape_buckets(two) <= 2
    wine = task_pool.sample_task_pool(5, 6, families=("pool_wine", "pool_teacher_classification"))
    assert {t.family for t in wine} <= {"pool_wine", "pool_teacher_classification"}
    assert {task_layout(t).shapes[-1][-1] for t in wine} == {3}  # the teachers take wine's shape
    with pytest.raises(ValueError, match="non-empty subset"):
        task_pool.sample_task_pool(0, 4, families=("cnn_digits",))
    with pytest.raises(ValueError, match="buckets must be"):
        task_pool.sample_task_pool(0, 4, buckets=5)


def test_pool_meta_validation_and_targets_are_disjoint(pool16):
    metaval, targets = task_pool.meta_validation_tasks(), task_pool.target_tasks()
    assert [t.name for t in metaval] == list(task_pool.META_VALIDATION_TASKS)
    assert {t.family for t in metaval} == set(task_pool.META_VALIDATION_FAMILIES)
    assert all(t.kind == "metaval" for t in metaval) and all(t.kind == "target" for t in targets)
    assert set(task_pool.POOL_FAMILIES) == {f"pool_{d}" for d in POOL_DATASETS}
    assert not set(task_pool.POOL_FAMILIES) & set(task_pool.META_VALIDATION_FAMILIES)
    assert not set(task_pool.POOL_FAMILIES) & {t.family for t in targets}
    assert {t.family for t in pool16} <= set(task_pool.POOL_FAMILIES)
    pool_specs, metaval_specs = {t.spec for t in pool16}, {t.spec for t in metaval}
    assert not {t.spec for t in targets} & (pool_specs | metaval_specs)
    assert not {t.name for t in targets} & {t.name for t in pool16 + metaval}
    assert len(targets) >= 8 and len({t.family for t in targets}) >= 8


@pytest.mark.parametrize("dataset", list(POOL_DATASETS))
def test_every_pool_dataset_trains_a_few_steps_to_a_finite_loss(dataset):
    task = task_pool.sample_task_pool(3, 1, families=(f"pool_{dataset}",))[0]
    task = dataclasses.replace(task, num_steps=5)
    train = make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state)
    out = jax.device_get(train(jax.random.split(jax.random.key(0), 2), jnp.full((2,), task.lr), None))
    assert np.all(np.isfinite(out["val_loss"])) and not np.any(out["diverged"])
    assert np.all(np.isfinite(out["train_loss"]))


def test_pool_data_shapes_and_labels():
    for dataset, (in_dim, out_dim, loss) in POOL_DATASETS.items():
        in_dim, out_dim = in_dim or 7, out_dim or 3
        task = task_pool._pool_task(
            f"t_{dataset}", f"pool_{dataset}",
            tuple(sorted({"dataset": dataset, "in_dim": in_dim, "out_dim": out_dim, "width": 4, "depth": 1,
                          "activation": "tanh", "init_scale": 1.0, "batch_size": 8, "num_steps": 2, "lr": 0.01,
                          "data_seed": 0}.items())))  # fmt: skip
        params = jax.eval_shape(task.init, jax.random.key(0))
        assert [p["w"].shape for p in params] == [(in_dim, 4), (4, out_dim)]
        y = jax.eval_shape(task.batch, jax.random.key(0), 0)["y"]
        assert y.shape == ((8,) if loss == "classification" else (8, out_dim))
        assert (task.accuracy is not None) == (loss == "classification")
    tx, ty, _, vy = text_source_split(0)
    assert (
        tx.shape[1] == 32 and np.bincount(ty).tolist() == [600] * 10 and np.bincount(vy).tolist() == [60] * 10
    )
    _, ty, _, vy = teacher_split("classification", 5, 3, 0)
    assert set(np.unique(ty)) == set(np.unique(vy)) == {0, 1, 2}


# ------------------------------------------------------------------------- one compiled trainer per shape bucket


def _baked(task: Task) -> Task:
    """A pool task as it was built before its data became a trainer argument: closures with the activation and
    init scale fixed (``_mlp``), unpadded data, all of it constants of its own trainer."""
    p = json.loads(task.spec)["params"]
    init, apply = vector_families._mlp([p["in_dim"]] + [p["width"]] * p["depth"] + [p["out_dim"]], p["activation"],
                                       p["init_scale"])
    data = vector_families.pool_data(p["dataset"], p["in_dim"], p["out_dim"], p["data_seed"])
    fields = supervised_fields(apply, init, *data, batch_size=p["batch_size"], num_steps=task.num_steps,
                               lr=task.lr, kind=POOL_DATASETS[p["dataset"]][2])
    return Task(name=f"{task.name}_baked", num_steps=task.num_steps, lr=task.lr,
                **program_fields(fields["program"], fields["data"]))


@pytest.fixture(scope="module")
def bucket():
    """Two pool tasks of one shape bucket with different datasets (so row counts), activations and init scales,
    trained 12 steps."""
    pool = {t.name: t for t in task_pool.sample_task_pool(0, 8)}
    names = ["pool0_01_text_gelu_w32d1", "pool0_02_teacher_classification_relu_w32d1"]
    assert names in task_pool.bucket_tasks(list(pool.values())).values()
    return [with_steps(pool[n], 12) for n in names]


def test_one_bucket_shares_one_compiled_trainer_and_keeps_each_tasks_losses(bucket):
    a, b = bucket
    assert task_pool.shape_signature(a) == task_pool.shape_signature(b)
    assert a.data["train_x"].shape == (POOL_ROWS[0], 32) and int(a.data["rows"]) == 6000 and int(b.data["rows"]) == 4096
    trainers = [make_population_trainer(t, adamw_update_fn(), adamw_init_opt_state, curve_every=4) for t in bucket]
    assert trainers[0] is not trainers[1] and trainers[0].core is trainers[1].core
    keys, lrs = jax.random.split(jax.random.key(4), 3), jnp.asarray([3e-3, 1e-2, 3e-2])
    for task, trainer in zip(bucket, trainers):
        out = jax.device_get(trainer(keys, lrs, None))
        baked = make_population_trainer(_baked(task), adamw_update_fn(), adamw_init_opt_state, curve_every=4)
        ref = jax.device_get(baked(keys, lrs, None))
        # training is the same bit for bit; the masked validation mean sums in another order (last bits)
        for k in ("curve", "train_loss", "diverged"):
            np.testing.assert_array_equal(out[k], ref[k])
        np.testing.assert_allclose(out["val_loss"], ref["val_loss"], rtol=1e-6)
        np.testing.assert_allclose(out["val_accuracy"], ref["val_accuracy"], rtol=1e-6)
    assert trainers[0].core._cache_size() == 1  # compiled once for both tasks


def test_the_sharded_trainer_takes_the_data_replicated(bucket):
    mesh = sharding.population_mesh(1)
    keys, lrs = jax.random.split(jax.random.key(5), 3), jnp.full((3,), 1e-2)
    for task in bucket:
        trainer = make_population_trainer(task, adamw_update_fn(), adamw_init_opt_state)
        wrapped = sharding.sharded(trainer.core, mesh, chunk=2, replicated=1)  # padded to 4, in 2 chunks
        np.testing.assert_allclose(wrapped(trainer.data, keys, lrs, None)["val_loss"],
                                   jax.device_get(trainer(keys, lrs, None))["val_loss"], rtol=1e-5)
    assert wrapped.compiles() == 1


def test_the_scorer_compiles_one_trainer_for_a_bucket(bucket):
    references = {t.name: {"lr": t.lr, "val_loss": 1.0} for t in bucket}
    scorer = Scorer(tasks=bucket, references=references, train_seeds=1, lr_multipliers=(0.5, 1.0), worst=1e3,
                    batch=2, max_len=4, n_state=1, loss_scale=True)
    scores = scorer.score([seed("sgd"), seed("momentum")], loss_scales=[1.0, 10.0])
    assert scorer.compiles() == 1 and scorer.trainer(bucket[0]) is scorer.trainer(bucket[1])
    assert np.isfinite(scores.per_task).all() and not np.allclose(scores.per_task[:, 0], scores.per_task[:, 1])
    np.testing.assert_allclose(scores.fitness, scores.per_task.mean(axis=1))
    worst = dataclasses.replace(scorer, aggregate="worst").score([seed("sgd"), seed("momentum")],
                                                                 loss_scales=[1.0, 10.0])
    np.testing.assert_allclose(worst.per_task, scores.per_task)  # same training, combined differently
    np.testing.assert_allclose(worst.fitness, scores.per_task.max(axis=1))
    assert (worst.fitness > scores.fitness).all()  # the tasks differ, so the worst is above the mean
    with pytest.raises(ValueError, match="aggregate must be one of"):
        dataclasses.replace(scorer, aggregate="median")


# ------------------------------------------------------------------------------------- loss-scale augmentation

SCALES = np.asarray([1e-3, 1.0, 1e3], np.float32)


def _sgd(opt_state, g, w, lr, t, h, opt_args):
    return lr[:, None] * g, opt_state


def _no_state(num_members, size):
    return ()


def _scaled_runs(update_fn, init_fn, task, lr):
    train = make_population_trainer(task, update_fn, init_fn, loss_scale=True)
    keys = jnp.stack([jax.random.key(0)] * len(SCALES))  # same init and data: only the scale differs
    return jax.device_get(train(keys, jnp.full((len(SCALES),), lr), None, SCALES))


@pytest.fixture(scope="module")
def small_task():
    task = task_pool.sample_task_pool(0, 1, families=("pool_teacher_regression",))[0]
    return dataclasses.replace(task, num_steps=20)


def test_adam_is_invariant_to_the_loss_scale_and_sgd_is_not(small_task):
    adam = _scaled_runs(adamw_update_fn(eps=1e-12), adamw_init_opt_state, small_task, small_task.lr)
    np.testing.assert_allclose(adam["val_loss"], adam["val_loss"][1], rtol=1e-4)
    np.testing.assert_allclose(adam["train_loss"], adam["train_loss"][1], rtol=1e-4)  # reported unscaled
    sgd = _scaled_runs(_sgd, _no_state, small_task, 0.05)
    val = sgd["val_loss"]
    assert np.isfinite(val[1]) and val[1] < 0.9 * val[0]  # scale 1 learns, 1e-3 barely moves
    assert (
        not np.isfinite(val[2]) or abs(val[2] - val[1]) > 0.1 * val[1]
    )  # 1e3 diverges (or at least differs)


def test_a_unit_loss_scale_is_the_plain_trainer(small_task):
    plain = make_population_trainer(small_task, adamw_update_fn(), adamw_init_opt_state)
    scaled = make_population_trainer(small_task, adamw_update_fn(), adamw_init_opt_state, loss_scale=True)
    assert scaled is not plain
    keys, lrs = jax.random.split(jax.random.key(1), 2), jnp.full((2,), small_task.lr)
    a, b = jax.device_get(plain(keys, lrs, None)), jax.device_get(scaled(keys, lrs, None, jnp.ones(2)))
    for k in a:  # x * 1.0 is exact, but XLA may fuse (FMA) the update differently
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6)


def test_the_sharded_trainer_takes_the_loss_scales(small_task):
    train = make_population_trainer(small_task, adamw_update_fn(), adamw_init_opt_state, loss_scale=True)
    keys, lrs = jax.random.split(jax.random.key(2), 3), jnp.full((3,), small_task.lr)
    bare = jax.device_get(train(keys, lrs, None, SCALES))
    wrapped = sharding.sharded(train, sharding.population_mesh(1), chunk=2)(keys, lrs, None, SCALES)  # padded
    np.testing.assert_allclose(wrapped["val_loss"], bare["val_loss"], rtol=1e-5)


def test_the_hessian_estimate_is_scaled_too():
    diag = jnp.asarray([1.0, 4.0, 0.5], jnp.float32)  # Hutchinson is exact for a diagonal Hessian
    task = Task(
        "diag", init=lambda key: {"w": jnp.ones(3)}, loss=lambda p, b: 0.5 * jnp.sum(diag * p["w"] ** 2) + 0 * b,
        batch=lambda key, step: jnp.zeros(()), val_loss=lambda p: jnp.sum(p["w"]), num_steps=3, lr=0.1,
    )  # fmt: skip

    def step_by_h(opt_state, g, w, lr, t, h, opt_args):
        return lr[:, None] * h, opt_state

    train = make_population_trainer(task, step_by_h, _no_state, needs_hessian=True, loss_scale=True)
    out = train(jnp.stack([jax.random.key(0)] * 2), jnp.full((2,), 0.1), None, jnp.asarray([1.0, 2.0]))
    expected = [3.0 - 3 * 0.1 * s * float(jnp.sum(diag)) for s in (1.0, 2.0)]
    np.testing.assert_allclose(np.asarray(out["val_loss"]), expected, rtol=1e-5)


def test_loss_scales_are_log_uniform_in_range():
    scales = task_pool.sample_loss_scales(np.random.default_rng(0), (20000,))
    assert scales.dtype == np.float32 and scales.min() >= 1e-3 and scales.max() <= 1e3
    logs = np.log10(scales)
    assert abs(logs.mean()) < 0.05 and abs(np.mean(logs < -1.5) - 0.25) < 0.02
