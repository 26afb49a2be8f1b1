"""discover transfer: same-budget tuning of programs and baselines on a tiny target task, reports and TensorBoard."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from discover.language.program import parse
from discover.shared import transfer
from discover.shared.runner import CompileCounter
from envs.tasks import Task
from search_spaces.update_rules import seed

LRS = (0.3, 1.0, 3.0)
WDS = (0.0, 0.5)
SEEDS = 2


def _tiny_classifier(num_steps=40) -> Task:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(256, 4)), jnp.float32)
    y = jnp.asarray((x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32))

    def init(key):
        return {"w": 0.1 * jax.random.normal(key, (4, 2)), "b": jnp.zeros((2,))}

    def logits(p, xs):
        return xs @ p["w"] + p["b"]

    def xent(p, xs, ys):
        z = logits(p, xs)
        return jnp.mean(jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, ys[:, None], -1)[:, 0])

    def batch(key, step):
        return jax.random.randint(jax.random.fold_in(key, step), (32,), 0, 192)

    return Task("tiny_target", init, lambda p, idx: xent(p, x[idx], y[idx]), batch,
                lambda p: xent(p, x[192:], y[192:]), num_steps=num_steps, lr=0.05,
                accuracy=lambda p: jnp.mean(jnp.argmax(logits(p, x[192:]), -1) == y[192:]), kind="target")


@pytest.fixture(scope="module")
def transferred(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer")
    task = _tiny_classifier()
    programs = {"adam-program": seed("adam"), "signum-program": seed("signum")}
    markdown = transfer.run_transfer(programs, tasks=[task], baselines=["adamw"], lr_grid=LRS, wd_grid=WDS,
                                     seeds=SEEDS, out_dir=out)
    return out, task, markdown


def test_reports_are_written(transferred):
    out, task, markdown = transferred
    assert (out / "transfer.md").read_text() == markdown
    png = (out / f"curves_{task.name}.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    report = json.loads((out / "transfer.json").read_text())
    assert report["settings"]["lr_multipliers"] == list(LRS) and report["settings"]["seeds"] == SEEDS
    results = report["tasks"][task.name]["optimizers"]
    assert list(results) == ["adam-program", "signum-program", "AdamW"]
    for name, r in results.items():
        grid = np.array(r["val_loss_grid"], dtype=float)
        assert grid.shape == (len(LRS), len(WDS), SEEDS) and np.isfinite(grid).all()
        best = r["best"]
        # the reported point is the grid's best mean, with the mean and s.e. of its seeds
        means = grid.mean(axis=2)
        i, j = np.unravel_index(np.argmin(means), means.shape)
        assert best["lr"] == pytest.approx(task.lr * LRS[i]) and best["wd"] == WDS[j]
        assert best["val_loss_mean"] == pytest.approx(means[i, j])
        assert best["val_loss_se"] == pytest.approx(grid[i, j].std(ddof=1) / math.sqrt(SEEDS))
        assert 0.0 <= best["accuracy_mean"] <= 1.0
        assert len(best["curve_mean"]) == len(best["curve_steps"]) > 0
    # the table has a row per optimizer with mean ± s.e. and accuracy, and the verdict names the programs
    for name in results:
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name}"))
        assert "±" in row and row.count("|") == 8
    verdict = report["tasks"][task.name]["verdict"]
    assert verdict in markdown and "adam-program" in verdict and "signum-program" in verdict
    assert "AdamW" in verdict


def test_a_program_runs_exactly_like_the_optax_optimizer_it_reproduces(transferred):
    # The Adam seed through to_optax plus the grid's decoupled weight decay is optax.adamw(lr, weight_decay=wd).
    out, task, _ = transferred
    results = json.loads((out / "transfer.json").read_text())["tasks"][task.name]["optimizers"]
    np.testing.assert_allclose(results["adam-program"]["val_loss_grid"], results["AdamW"]["val_loss_grid"],
                               rtol=1e-4)
    # ... and weight decay has an effect (the grid is really used)
    grid = np.array(results["AdamW"]["val_loss_grid"])
    assert not np.allclose(grid[:, 0], grid[:, 1])


def test_each_optimizer_grid_is_one_compiled_call(transferred):
    _, task, _ = transferred
    CompileCounter.install()
    for opt in (transfer.program_optimizer("signum-program", seed("signum")), transfer.baseline_optimizer("adamw")):
        before = CompileCounter.count
        other_lrs = [x * 1.5 for x in LRS]  # another grid of the same size: the compiled call is reused
        grid = transfer.run_grid(task, opt, [task.lr * x for x in other_lrs], WDS, SEEDS)
        assert CompileCounter.count == before and np.isfinite(grid["val_loss"]).all()


def test_tensorboard_has_curves_metrics_images_and_the_report(transferred):
    from tensorboard.backend.event_processing import event_accumulator

    out, task, markdown = transferred
    acc = event_accumulator.EventAccumulator(str(out / "tb"), size_guidance={"tensors": 0, "scalars": 0,
                                                                             "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert f"transfer/{task.name}/val_loss/AdamW" in tags["scalars"]
    curve = acc.Scalars(f"transfer/{task.name}/train_loss/signum-program")
    assert len(curve) == task.num_steps // transfer.curve_every_for(task.num_steps)
    assert f"transfer/{task.name}/val_accuracy/adam-program" in tags["scalars"]
    assert f"transfer/curves/{task.name}" in tags["images"]
    text = acc.Tensors("transfer/report/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text == markdown


def test_weight_decay_is_decoupled_and_scaled_by_lr():
    opt = transfer.program_optimizer("sgd", seed("sgd"))
    params = {"w": jnp.array([2.0, -4.0])}
    grads = {"w": jnp.array([1.0, 1.0])}
    tx = transfer.with_weight_decay(opt, 0.1, 0.5)
    updates, _ = tx.update(grads, tx.init(params), params)
    # w <- w - lr * g - lr * wd * w
    np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], [2.0 - 0.1 - 0.1, -4.0 - 0.1 + 0.2],
                               rtol=1e-6)


def test_summaries_skip_diverged_points_and_verdicts_use_standard_errors():
    val = np.array([[[1.0, 1.2]], [[0.1, np.inf]], [[0.5, 0.7]]])  # lr 1 had a diverged seed
    grid = {"val_loss": val, "diverged": ~np.isfinite(val), "curve": np.ones((3, 1, 2, 4)),
            "curve_steps": np.arange(1, 5)}
    s = transfer.summarize(grid, [1e-3, 1e-2, 1e-1], [0.1, 1.0, 10.0], [0.0])
    assert s["best"]["lr"] == 1e-1 and s["best"]["val_loss_mean"] == pytest.approx(0.6)
    assert s["best"]["at_lr_edge"] and s["diverged_runs"] == 1

    def result(mean, se):
        return {"best": {"val_loss_mean": mean, "val_loss_se": se}}

    kinds = {"new": "program", "AdamW": "baseline", "Lion": "baseline"}
    line = transfer.verdict("t", {"new": result(0.5, 0.01), "AdamW": result(0.8, 0.01), "Lion": result(0.7, 0.01)},
                            kinds)
    assert "new beats the best baseline Lion" in line and "-28.6%" in line
    line = transfer.verdict("t", {"new": result(0.71, 0.02), "AdamW": result(0.8, 0.01), "Lion": result(0.7, 0.01)},
                            kinds)
    assert "ties with" in line
    line = transfer.verdict("t", {"new": result(0.9, 0.01), "AdamW": result(0.8, 0.01), "Lion": result(0.7, 0.01)},
                            kinds)
    assert "loses to" in line


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown baseline 'adamx'"):
        transfer.run_transfer({}, tasks=["mlp_wine_target"], baselines=["adamx"])
    with pytest.raises(ValueError, match="lr_grid must be > 0"):
        transfer.run_transfer({}, tasks=["mlp_wine_target"], lr_grid=[0.0])
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        transfer.run_transfer({}, tasks=["nope"])
    with pytest.raises(ValueError, match="two optimizers are called 'AdamW'"):
        transfer.run_transfer({"AdamW": parse("def f(g, lr, t):\n    u = lr * g\n    return u\n")},
                              tasks=["mlp_wine_target"])


def test_target_kind_expands_to_the_registered_target_tasks():
    names = [t.name for t in transfer.resolve_tasks(["target"])]
    assert {"cnn_digits_target", "transformer_charlm_target", "mlp_wine_target"} <= set(names)
