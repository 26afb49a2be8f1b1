"""discover transfer: same-budget tuning (grid or BO) of programs and baselines on a tiny target task, selection on
tuning seeds and report on fresh ones, paired verdicts, reports and TensorBoard."""

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
from tests.benchmark_scripts import load_benchmark

LRS = (0.3, 1.0, 3.0)
WDS = (0.0, 0.5)
SEEDS = 2
FRESH = 3


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
                                     seeds=SEEDS, fresh_seeds=FRESH, out_dir=out)
    return out, task, markdown


def test_reports_are_written(transferred):
    out, task, markdown = transferred
    assert (out / "transfer.md").read_text() == markdown
    png = (out / f"curves_{task.name}.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    def strict(constant):
        raise AssertionError(f"transfer.json holds {constant}: not strict JSON")

    report = json.loads((out / "transfer.json").read_text(), parse_constant=strict)
    settings = report["settings"]
    assert settings["lr_multipliers"] == list(LRS) and settings["seeds"] == SEEDS
    assert (settings["tuner"], settings["budget"], settings["fresh_seeds"]) == ("grid", len(LRS) * len(WDS), FRESH)
    results = report["tasks"][task.name]["optimizers"]
    assert list(results) == ["adam-program", "signum-program", "AdamW"]
    for name, r in results.items():
        grid = np.array(r["val_loss_grid"], dtype=float)
        assert grid.shape == (len(LRS), len(WDS), SEEDS) and np.isfinite(grid).all()
        assert r["budget"] == len(r["trials"]) == len(LRS) * len(WDS)
        best = r["best"]
        # the chosen point is the grid's best mean over the tuning seeds ...
        means = grid.mean(axis=2)
        i, j = np.unravel_index(np.argmin(means), means.shape)
        assert best["lr"] == pytest.approx(task.lr * LRS[i]) and best["wd"] == WDS[j]
        assert best["tuning_val_loss_mean"] == pytest.approx(means[i, j])
        assert best["tuning_val_loss_se"] == pytest.approx(grid[i, j].std(ddof=1) / math.sqrt(SEEDS))
        # ... and what is reported there comes from FRESH seeds: other values, their own mean and s.e.
        fresh = np.array(best["val_loss_seeds"], dtype=float)
        assert fresh.shape == (FRESH,) and np.isfinite(fresh).all() and best["fresh_diverged"] == 0
        assert not np.isin(fresh, grid[i, j]).any()
        assert best["val_loss_mean"] == pytest.approx(fresh.mean())
        assert best["val_loss_se"] == pytest.approx(fresh.std(ddof=1) / math.sqrt(FRESH))
        assert 0.0 <= best["accuracy_mean"] <= 1.0
        assert len(best["curve_mean"]) == len(best["curve_steps"]) > 0
    # every program is compared with every baseline, paired on the fresh seeds
    for name in ("adam-program", "signum-program"):
        c = results[name]["paired"]["AdamW"]
        a, b = (np.array(results[n]["best"]["val_loss_seeds"]) for n in (name, "AdamW"))
        assert c["n"] == FRESH and c["difference"] == pytest.approx((a - b).mean(), abs=1e-12)
        assert c["ci"][0] <= c["difference"] <= c["ci"][1] and c["verdict"] in ("better", "worse", "tie")
    # the table has a row per optimizer with mean ± s.e., accuracy and the budget, and the verdict names the
    # programs, the best baseline and the paired interval
    for name, r in results.items():
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name}"))
        assert "±" in row and row.count("|") == 10
        assert f"| {r['budget']} |" in row
    assert f"{len(LRS) * len(WDS)} lr x wd trials per optimizer" in markdown and f"{FRESH} fresh seeds" in markdown
    verdict = report["tasks"][task.name]["verdict"]
    assert verdict in markdown and "adam-program" in verdict and "signum-program" in verdict
    assert "AdamW" in verdict and "95% CI" in verdict


def test_a_program_runs_exactly_like_the_optax_optimizer_it_reproduces(transferred):
    # The Adam seed through to_optax plus the grid's decoupled weight decay is optax.adamw(lr, weight_decay=wd).
    out, task, _ = transferred
    results = json.loads((out / "transfer.json").read_text())["tasks"][task.name]["optimizers"]
    np.testing.assert_allclose(results["adam-program"]["val_loss_grid"], results["AdamW"]["val_loss_grid"],
                               rtol=1e-4)
    np.testing.assert_allclose(results["adam-program"]["best"]["val_loss_seeds"],
                               results["AdamW"]["best"]["val_loss_seeds"], rtol=1e-4)  # same fresh seeds
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


def test_summaries_skip_diverged_points_and_verdicts_are_paired_on_fresh_seeds():
    val = np.array([[[1.0, 1.2]], [[0.1, np.inf]], [[0.5, 0.7]]])  # lr 1 had a diverged seed
    grid = {"val_loss": val, "diverged": ~np.isfinite(val), "curve": np.ones((3, 1, 2, 4)),
            "curve_steps": np.arange(1, 5)}
    s = transfer.summarize(grid, [1e-3, 1e-2, 1e-1], [0.1, 1.0, 10.0], [0.0])
    assert s["best"]["lr"] == 1e-1 and s["best"]["tuning_val_loss_mean"] == pytest.approx(0.6)
    assert s["best"]["at_lr_edge"] and s["diverged_runs"] == 1

    def result(values):
        values = np.asarray(values, float)
        ok = np.isfinite(values).all()
        return {"best": {"val_loss_mean": float(values.mean()) if ok else math.inf,
                         "val_loss_se": float(values.std(ddof=1) / math.sqrt(len(values))) if ok else math.nan,
                         "val_loss_seeds": [float(v) if np.isfinite(v) else None for v in values]}}

    kinds = {"new": "program", "AdamW": "baseline", "Lion": "baseline"}
    # seed effects shared by every optimizer (seed 5 is hard for everyone): Lion = AdamW - 0.1 on every seed
    adamw = np.array([0.6, 0.7, 0.8, 0.9, 1.0])
    lion = adamw - 0.1 + np.array([0.0, 0.001, -0.001, 0.002, -0.002])
    jitter = np.array([0.001, -0.002, 0.0, 0.002, -0.001])
    line = transfer.verdict("t", {"new": result(lion - 0.2 + jitter), "AdamW": result(adamw), "Lion": result(lion)},
                            kinds)
    assert "new beats the best baseline Lion" in line and "-28.6%" in line and "95% CI" in line
    # a consistent 0.01 gain on every seed: the unpaired 2-standard-error rule called this a tie (the seeds'
    # spread, 0.07 s.e. per optimizer, hides it); the paired interval sees it
    small = result(lion - 0.01 + jitter)
    b, r = small["best"], result(lion)["best"]
    assert abs(b["val_loss_mean"] - r["val_loss_mean"]) < 2 * math.hypot(b["val_loss_se"], r["val_loss_se"])
    assert "new beats" in transfer.verdict("t", {"new": small, "AdamW": result(adamw), "Lion": result(lion)}, kinds)
    noisy = lion + np.array([0.05, -0.04, 0.03, -0.05, 0.01])  # no consistent difference
    line = transfer.verdict("t", {"new": result(noisy), "AdamW": result(adamw), "Lion": result(lion)}, kinds)
    assert "new ties with the best baseline Lion" in line
    line = transfer.verdict("t", {"new": result(adamw + 0.1 + jitter), "AdamW": result(adamw),
                                  "Lion": result(lion)}, kinds)
    assert "new loses to the best baseline Lion" in line
    # a program that diverged on a fresh seed loses, whatever its other seeds
    diverged = result(np.where(np.arange(5) == 2, np.inf, lion - 0.2))
    line = transfer.verdict("t", {"new": diverged, "AdamW": result(adamw), "Lion": result(lion)}, kinds)
    assert "new loses to the best baseline Lion (diverged on 1 of 5 fresh seeds)" in line
    c = transfer.compare(small["best"], result(lion)["best"])
    assert c["verdict"] == "better" and c["ci"][1] < 0 and c["n"] == 5


def test_grid_budgets_cut_the_grid_evenly():
    lrs, wds = transfer.DEFAULT_LR_MULTIPLIERS, transfer.DEFAULT_WD_GRID
    assert transfer.cut_grid(lrs, wds, None) == (lrs, wds)
    assert transfer.cut_grid(lrs, wds, 16) == (lrs, wds)
    assert transfer.cut_grid(lrs, wds, 12) == ((0.03, 0.1, 1.0, 3.0, 30.0, 100.0), wds)
    assert transfer.cut_grid(lrs, wds, 8) == ((0.03, 0.3, 10.0, 100.0), wds)
    assert transfer.cut_grid(lrs, wds, 1) == ((1.0,), (0.0,))
    assert transfer.check_tuning("grid", 12, lrs, wds, 3, 5) == 12
    assert transfer.check_tuning("grid", 7, lrs, wds, 3, 5) == 6  # 3 lrs x 2 wds: the budget is not exceeded
    assert transfer.check_tuning("bo", None, lrs, wds, 3, 5) == 16 and transfer.check_tuning("bo", 9, lrs, wds, 3, 5) == 9
    box = transfer.bo_box(lrs, wds)
    assert [d[0] for d in box] == ["log10_lr_multiplier", "log10_wd"]
    assert box[0][1:] == pytest.approx((math.log10(0.03), 2.0)) and box[1][1:] == pytest.approx((-4.0, -1.0))
    assert transfer.bo_box([1.0, 10.0], [0.0]) == [("log10_lr_multiplier", 0.0, 1.0)]


@pytest.fixture(scope="module")
def tuned_by_bo(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer_bo")
    task = _tiny_classifier()
    markdown = transfer.run_transfer({"signum-program": seed("signum")}, tasks=[task], baselines=["adamw"],
                                     lr_grid=(0.1, 10.0), wd_grid=(0.0, 0.5), seeds=SEEDS, fresh_seeds=FRESH,
                                     tuner="bo", budget=6, out_dir=out, tb=False)
    return out, task, markdown


def test_bo_tuner_spends_the_same_budget_in_rounds_and_reports_fresh_seeds(tuned_by_bo):
    out, task, markdown = tuned_by_bo
    report = json.loads((out / "transfer.json").read_text())
    assert report["settings"]["tuner"] == "bo" and report["settings"]["budget"] == 6
    results = report["tasks"][task.name]["optimizers"]
    for name, r in results.items():
        trials = r["trials"]
        assert r["budget"] == len(trials) == 6 and (r["rounds"], r["batch"]) == (3, 2)
        mults = np.array([t["lr_multiplier"] for t in trials])
        wds = np.array([t["wd"] for t in trials])
        assert np.all((mults >= 0.1 * (1 - 1e-9)) & (mults <= 10.0 * (1 + 1e-9)))
        assert np.all((wds >= 0.5e-3 * (1 - 1e-9)) & (wds <= 0.5 * (1 + 1e-9)))
        assert len({(t["lr"], t["wd"]) for t in trials}) == 6  # six distinct points
        means = [t["val_loss_mean"] if t["val_loss_mean"] is not None else np.inf for t in trials]
        chosen = trials[int(np.argmin(means))]
        best = r["best"]
        assert (best["lr"], best["wd"]) == (chosen["lr"], chosen["wd"])
        assert best["tuning_val_loss_mean"] == pytest.approx(min(means))
        assert len(best["val_loss_seeds"]) == FRESH and best["val_loss_mean"] == pytest.approx(
            np.mean(best["val_loss_seeds"]))
        assert all(len(t["val_loss_seeds"]) == SEEDS for t in trials)
    # the first round (the Latin-hypercube design) is the same for every optimizer
    first = [[(t["lr_multiplier"], t["wd"]) for t in r["trials"][:4]] for r in results.values()]
    assert first[0] == first[1]
    for name in results:
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name}"))
        assert "| 6 |" in row
    assert "Bayesian optimization" in markdown and "6 lr x wd trials per optimizer" in markdown


def test_bo_rounds_reuse_one_compiled_call(tuned_by_bo):
    # Another BO run (another tuner seed: other points) of the same budget compiles nothing new: every round
    # has the same shape, and the fresh-seed evaluation the same as before.
    out, task, _ = tuned_by_bo
    before = json.loads((out / "transfer.json").read_text())["tasks"][task.name]["optimizers"]["signum-program"]
    opt = transfer.program_optimizer("signum-program", seed("signum"))
    CompileCounter.install()
    count = CompileCounter.count
    again = transfer.tune_bo(task, opt, (0.1, 10.0), (0.0, 0.5), SEEDS, 6, bo_seed=1)
    transfer.evaluate_fresh(task, opt, again["best"], FRESH)
    assert CompileCounter.count == count
    assert [t["lr"] for t in again["trials"]] != [t["lr"] for t in before["trials"]]


def test_another_fresh_seed_offset_replicates_the_report_on_new_seeds(tuned_by_bo):
    # The same chosen point, retrained: the default offset gives back the report's seeds, another offset new ones.
    out, task, _ = tuned_by_bo
    best = json.loads((out / "transfer.json").read_text())["tasks"][task.name]["optimizers"]["signum-program"]["best"]
    opt = transfer.program_optimizer("signum-program", seed("signum"))
    same = transfer.evaluate_fresh(task, opt, best, FRESH)
    np.testing.assert_allclose(same["val_loss_seeds"], best["val_loss_seeds"], rtol=1e-6)
    other = transfer.evaluate_fresh(task, opt, best, FRESH, offset=20_000)
    assert np.isfinite(other["val_loss_seeds"]).all()
    assert not np.isin(other["val_loss_seeds"], best["val_loss_seeds"]).any()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown baseline 'adamx'"):
        transfer.run_transfer({}, tasks=["mlp_wine_target"], baselines=["adamx"])
    with pytest.raises(ValueError, match="lr_grid must be > 0"):
        transfer.run_transfer({}, tasks=["mlp_wine_target"], lr_grid=[0.0])
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        transfer.run_transfer({}, tasks=["nope"])
    with pytest.raises(ValueError, match="unknown tuner 'random'"):
        transfer.run_transfer({}, tasks=["mlp_wine_target"], tuner="random")
    with pytest.raises(ValueError, match="budget must be >= 1"):
        transfer.run_transfer({}, tasks=["mlp_wine_target"], tuner="bo", budget=0)
    with pytest.raises(ValueError, match="budget 20 exceeds the grid's 8 x 2 = 16 points"):
        transfer.run_transfer({}, tasks=["mlp_wine_target"], budget=20)
    with pytest.raises(ValueError, match="fresh_seeds must be >= 2"):
        transfer.run_transfer({}, tasks=["mlp_wine_target"], fresh_seeds=1)
    with pytest.raises(ValueError, match="nothing to tune"):
        transfer.run_transfer({}, tasks=["mlp_wine_target"], tuner="bo", lr_grid=[1.0], wd_grid=[0.0])
    with pytest.raises(ValueError, match="two optimizers are called 'AdamW'"):
        transfer.run_transfer({"AdamW": parse("def f(g, lr, t):\n    u = lr * g\n    return u\n")},
                              tasks=["mlp_wine_target"])


def test_target_kind_expands_to_the_registered_target_tasks():
    names = [t.name for t in transfer.resolve_tasks(["target"])]
    assert {"cnn_digits_target", "transformer_charlm_target", "mlp_wine_target"} <= set(names)


@pytest.mark.parametrize("args,message", [
    (["--tuner", "random"], "transfer: unknown tuner 'random' (known: grid, bo)"),
    (["--budget", "0"], "transfer: budget must be >= 1 trial, got 0"),
    (["--tuner", "bo", "--budget", "-3"], "transfer: budget must be >= 1 trial, got -3"),
    (["--budget", "17"], "transfer: budget 17 exceeds the grid's 8 x 2 = 16 points"),
    (["--fresh-seeds", "1"], "transfer: fresh_seeds must be >= 2"),
    (["--seeds", "3", "--fresh-seed-offset", "2"], "transfer: seeds must be <= the fresh seed offset 2"),
])
def test_cli_names_bad_tuning_in_one_line(tmp_path, args, message):
    from typer.testing import CliRunner

    from discover.cli import app

    result = CliRunner().invoke(app, ["transfer", "lion", "--tasks", "mlp_wine_target", *args,
                                      "--out", str(tmp_path / "x")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()
    rl = CliRunner().invoke(app, ["transfer", str(tmp_path / "drift.npz"), "--tuner", "bo"])
    assert rl.exit_code == 2 and "an RL transfer has no lr x wd to tune" in rl.output


def test_cli_tunes_with_bo_at_a_budget(tmp_path):
    from typer.testing import CliRunner

    from discover.cli import app

    out = tmp_path / "bo"
    result = CliRunner().invoke(app, ["transfer", "lion", "--tasks", "noisy_quadratic_proxy", "--steps", "10",
                                      "--seeds", "1", "--fresh-seeds", "2", "--baselines", "adamw", "--tuner", "bo",
                                      "--budget", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "transfer.json").read_text())
    assert (report["settings"]["tuner"], report["settings"]["budget"]) == ("bo", 3)
    for r in report["tasks"]["noisy_quadratic_proxy"]["optimizers"].values():
        assert r["budget"] == len(r["trials"]) == 3 and len(r["best"]["val_loss_seeds"]) == 2
    assert "3 lr x wd trials per optimizer" in (out / "transfer.md").read_text()


def test_cli_replicates_every_verdict_that_is_not_a_tie_on_further_seeds(tmp_path):
    # A program that barely moves loses to AdamW on every seed: the verdict is tested again on 3 further seeds
    # (keys 20000 ..), which no other number used, and confirmed; a tie is not retested.
    from typer.testing import CliRunner

    from discover.cli import app

    program = tmp_path / "crawl.py"
    program.write_text("def crawl(g, lr, t):\n    u = lr * g\n    u = 0.0001 * u\n    return u\n")
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["transfer", str(program), "--tasks", "mlp_regression_proxy", "--steps", "30",
                                      "--seeds", "1", "--fresh-seeds", "3", "--baselines", "adamw",
                                      "--lr-grid", "1", "--wd-grid", "0", "--replicate-seeds", "3",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "transfer.json").read_text())
    assert (report["settings"]["replicate_seeds"], report["settings"]["replication_seed_offset"]) == (3, 20_000)
    results = report["tasks"]["mlp_regression_proxy"]["optimizers"]
    c = results["crawl"]["paired"]["AdamW"]
    assert c["verdict"] == "worse" and c["replication"]["verdict"] == "worse" and c["replication"]["confirmed"]
    assert c["replication"]["n"] == 3 and c["replication"]["seed_offset"] == 20_000
    # the replication's values are new runs, not the report's fresh seeds again
    assert c["replication"]["mean_a"] != pytest.approx(results["crawl"]["best"]["val_loss_mean"])
    markdown = (out / "transfer.md").read_text()
    assert "tested again on 3 further seeds" in markdown and "replicated on 3 new seeds" in markdown
    assert ": confirmed" in markdown
    bad = CliRunner().invoke(app, ["transfer", str(program), "--tasks", "noisy_quadratic_proxy",
                                   "--replicate-seeds", "1", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "replicate_seeds must be 0 (off) or >= 2" in bad.output
    assert not (tmp_path / "x").exists()


PANEL_NATIVE = ("nadamw", "radam", "amsgrad", "adan", "adopt", "ademamix", "muon")


def test_the_published_optimizer_panel_trains_a_tiny_task_as_baselines():
    # Each optax optimizer of benchmarks/optimizer_panel.py runs through the transfer trainer (population-vmapped,
    # per-member parameter pytree) and learns; Muon's orthogonalized step on the 2-D weight is not AdamW's.
    task = _tiny_classifier()
    start = float(task.val_loss(task.init(jax.random.key(0))))
    finals = {}
    for name in ("adamw",) + PANEL_NATIVE:
        opt = transfer.baseline_optimizer(name)
        grid = transfer.run_grid(task, opt, [task.lr * 3.0], [0.0], 1)
        finals[name] = float(np.asarray(grid["val_loss"]).ravel()[0])
        assert math.isfinite(finals[name]) and finals[name] < 0.8 * start, (name, finals[name], start)
    assert finals["muon"] != pytest.approx(finals["adamw"], rel=1e-3)


def _panel_module():
    return load_benchmark("optimizer_panel")


def _cell(mean, verdict=None, confirmed=None):
    best = {"val_loss_mean": mean}
    if verdict is None:
        return {"best": best}
    c = {"verdict": verdict}
    if confirmed is not None:
        c["replication"] = {"confirmed": confirmed}
    return {"best": best, "paired": {"AdamW": c}}


def test_the_panel_counts_only_confirmed_wins_and_the_worst_ratio():
    panel = _panel_module()
    tasks = {f"t{i}": {"optimizers": {"AdamW": _cell(1.0)}} for i in range(4)}
    # A: confirmed wins on 2 of 4, never > 5% worse: meets the target. B: 2 wins, one not confirmed. C: 2
    # confirmed wins but 8% worse on a tie. D: diverged on one task.
    plan = {"A": [(0.9, "better", True), (0.95, "better", True), (1.04, "tie", None), (1.0, "tie", None)],
            "B": [(0.9, "better", True), (0.95, "better", False), (1.0, "tie", None), (1.0, "tie", None)],
            "C": [(0.9, "better", True), (0.95, "better", True), (1.08, "tie", None), (1.0, "tie", None)],
            "D": [(0.9, "better", True), (0.95, "better", True), (1.0, "tie", None), None]}
    for label, cells in plan.items():
        for i, c in enumerate(cells):
            tasks[f"t{i}"]["optimizers"][label] = {"best": None} if c is None else _cell(*c)
    rows, table = panel.summarize({"tasks": tasks})
    by = {r["optimizer"]: r for r in rows}
    assert [by[k]["meets_target"] for k in "ABCD"] == [True, False, False, False]
    assert by["B"]["confirmed_wins"] == 1 and "better, not confirmed" in by["B"]["cells"]["t1"]
    assert by["C"]["worst_ratio"] == pytest.approx(1.08) and by["D"]["worst_ratio"] == math.inf
    assert by["D"]["cells"]["t3"] == "diverged" and table.count("\n") == 1 + len(plan)


def test_the_panel_replicates_each_verdict_against_adamw_on_further_seeds(tmp_path, monkeypatch):
    panel = _panel_module()
    monkeypatch.setattr("sys.argv", ["optimizer_panel.py", "--out", str(tmp_path), "--tasks", "mlp_regression_proxy",
                                     "--optimizers", "adamw,amsgrad,sgd", "--lr-grid", "0.01", "--wd-grid", "0",
                                     "--seeds", "1", "--fresh-seeds", "3", "--replicate", "3"])
    panel.main()
    report = json.loads((tmp_path / "panel.json").read_text())
    results = report["tasks"]["mlp_regression_proxy"]["optimizers"]
    crawl = results["sgd"]["paired"]["AdamW"]  # plain SGD at 1/100 of AdamW's lr barely moves: a sure loss
    assert crawl["verdict"] == "worse" and crawl["replication"]["n"] == 3 and crawl["replication"]["confirmed"]
    assert crawl["replication"]["mean_a"] != pytest.approx(results["sgd"]["best"]["val_loss_mean"])
    rows = {r["optimizer"]: r for r in report["panel"]["rows"]}
    assert rows["sgd"]["confirmed_losses"] == 1 and not rows["sgd"]["meets_target"]
    assert "AMSGrad" in rows and "AdamW" not in rows
