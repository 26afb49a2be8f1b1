"""The update-rule search's held-out evaluation: rotating proxy tasks with loss-scale augmentation, robustness of
the finalists (fresh seeds, jittered constants), faithful simplify, the winner written as best.py."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from discover.infra.rundir import RunDir, new_run_dir
from discover.language.program import parse
from discover.searches import update_rules as search
from discover.searches.update_rules.config import HeldoutSection
from discover.searches.update_rules.heldout import (
    is_structural,
    jittered_copies,
    largest_task_move,
    program_name,
    selected_on,
    transfer_verdicts,
)
from discover.searches.update_rules.search import UpdateRuleSummary
from discover.searches.update_rules.steps import generation_tasks
from search_spaces.update_rules import seed

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "search_tiny.yaml"


def test_generations_rotate_through_the_tasks_with_reproducible_loss_scales():
    config = search.load_search_config(TINY, ["fitness.per_generation=2", "fitness.loss_scale_range=[0.001, 1000]"])
    seen = [generation_tasks(config, 5, g) for g in range(5)]
    assert [t for t, _ in seen] == [[0, 1], [2, 3], [4, 0], [1, 2], [3, 4]]
    scales = np.array([s for _, s in seen])
    assert np.all((scales >= 1e-3) & (scales <= 1e3)) and len(np.unique(scales)) == scales.size
    assert generation_tasks(config, 5, 3) == seen[3]  # a resumed run draws the same
    plain = search.load_search_config(TINY)
    assert generation_tasks(plain, 1, 7) == ([0], [1.0])


def test_jitter_moves_tuned_constants_only_and_keeps_rates_below_one():
    adamw = seed("adamw")
    assert is_structural(1.0) and is_structural(2.0) and is_structural(0.5) and not is_structural(0.999)
    copies = jittered_copies(adamw, HeldoutSection(jitter=0.01, jitters=8), np.random.default_rng(0))
    assert len(copies) == 8
    for copy in copies:
        for before, after in zip(adamw.constants, copy.constants):
            if is_structural(before):
                assert after == before  # the 1 of 1 - b^t, ...
            elif 0.5 < before < 1.0:
                assert after < 1.0 and abs((1 - after) / (1 - before) - 1) == pytest.approx(0.01, abs=1e-4)
            else:
                assert abs(after / before - 1) == pytest.approx(0.01, abs=1e-4)
    assert jittered_copies(parse("def f(g, w, lr, t):\n    return lr * g\n"), HeldoutSection(), np.random.default_rng(0)) == []


def test_program_names_are_identifiers():
    config = search.load_search_config(TINY, ["name=my-run 2"])
    assert program_name(config, 1) == "my_run_2_1"
    assert program_name(search.load_search_config(TINY, ["name=9lives"]), 2) == "rule_9lives_2"


def test_the_result_says_which_meta_validation_task_a_finalist_moved_on():
    per_task = {"noisy_quadratic_metaval": [0.77, 0.73], "cnn_digits_metaval": [0.75, 0.46]}
    assert largest_task_move(per_task) == ("cnn_digits_metaval", 0.75, 0.46)
    assert largest_task_move({}) is None
    finalist = {"rank": 1, "fresh": 0.595, "seed_move": 0.21, "jitter_move": 0.01, "fragile": True,
                "per_task": per_task}
    summary = UpdateRuleSummary(kind="update_rule", name="x", run_dir="x", generations_done=1, generations=1,
                                heldout={"finalists": [finalist], "verdicts": []})
    line = next(x for x in summary.headline() if x.startswith("#1"))
    assert "moved 21.0%; most on cnn_digits_metaval: 0.7500 -> 0.4600" in line and "fragile" in line


def test_a_verdict_on_a_meta_validation_family_says_it_is_not_out_of_sample(tmp_path):
    metaval = ("noisy_quadratic_metaval", "charlm_metaval")
    assert selected_on("charlm_target", metaval) == "charlm_metaval"
    assert selected_on("cnn_digits_target", metaval) is None  # cnn_digits_metaval is not in this funnel
    assert selected_on("mlp_wine_target", metaval) is None and selected_on("not_a_task", metaval) is None
    paired = {"AdamW": {"mean_a": 0.98, "mean_b": 1.0, "ci": [-0.03, -0.01], "n": 5, "verdict": "better"}}
    run = RunDir(tmp_path)
    run.write_json("transfer/transfer.json", {"tasks": {
        task: {"optimizers": {"rule_1": {"paired": paired}}} for task in ("charlm_target", "mlp_wine_target")}})
    verdicts = {v["task"]: v for v in transfer_verdicts(run, ["rule_1"], metaval)}
    assert verdicts["charlm_target"]["selected_on"] == "charlm_metaval"
    assert "rule_1 beats tuned AdamW" in verdicts["charlm_target"]["line"]
    assert "meta-validation's charlm_metaval: not out of sample" in verdicts["charlm_target"]["line"]
    assert verdicts["mlp_wine_target"]["selected_on"] is None
    assert "out of sample" not in verdicts["mlp_wine_target"]["line"]
    assert verdicts["mlp_wine_target"]["confirmed"] is None  # no replication in this report


def test_a_verdict_says_whether_its_replication_on_further_seeds_confirmed_it(tmp_path):
    replication = {"mean_a": 0.99, "mean_b": 1.0, "ci": [-0.02, 0.004], "n": 10, "verdict": "tie", "confirmed": False}
    paired = {"AdamW": {"mean_a": 0.98, "mean_b": 1.0, "ci": [-0.03, -0.01], "n": 5, "verdict": "better",
                        "replication": replication}}
    run = RunDir(tmp_path)
    run.write_json("transfer/transfer.json", {"tasks": {"mlp_wine_target": {"optimizers": {"rule_1": {"paired": paired}}}}})
    (v,) = transfer_verdicts(run, ["rule_1"])
    assert v["verdict"] == "better" and v["confirmed"] is False
    assert "rule_1 beats tuned AdamW" in v["line"]
    assert "replicated on 10 new seeds: x0.990, tie (95% CI [-0.02, +0.004]): NOT confirmed" in v["line"]
    assert HeldoutSection().replicate_seeds == 10
    with pytest.raises(ValueError, match="replicate_seeds"):
        HeldoutSection(replicate_seeds=1)


@pytest.mark.slow
def test_a_search_ends_with_robustness_and_a_faithfully_simplified_best_program(tmp_path):
    config = search.load_search_config(TINY, [
        f"fitness.reference_cache={tmp_path / 'r.json'}", "evolution.generations=2", "refine.top_k=0",
        "heldout.enabled=true", "heldout.top_k=2", "heldout.jitters=2", "heldout.train_seeds=1",
        "fitness.per_generation=1", "fitness.loss_scale_range=[0.001, 1000.0]"])
    run_dir = new_run_dir(config, tmp_path)
    summary = search.run_search(config, run_dir)
    report = json.loads(run_dir.file("heldout.json").read_text())
    finalists = report["finalists"]
    assert len(finalists) == 2 and [f["rank"] for f in finalists] == [1, 2]
    metaval = {e["fingerprint"]: e["metaval"] for e in json.loads(run_dir.file("hall_of_fame.json").read_text())["entries"]}
    for f in finalists:
        assert np.isfinite(f["fresh"]) and len(f["jittered"]) in (0, 2)
        # per task: [search seeds, fresh seeds]; their means are the hall's meta-validation fitness and the fresh one
        assert set(f["per_task"]) == set(config.funnel.tasks)
        on_search, on_fresh = np.array(list(f["per_task"].values())).T
        assert on_search.mean() == pytest.approx(metaval[f["entry"]], rel=1e-6)
        assert on_fresh.mean() == pytest.approx(f["fresh"], rel=1e-6)
        assert f["fragile"] == (f["seed_move"] > 0.05 or f["jitter_move"] > 0.05)
        assert (f["simplified"] is None) == f["fragile"]
    assert "heldout.json" in summary["files"]
    assert json.loads(json.dumps(summary["heldout"]["finalists"])) == finalists
    robust = [f for f in finalists if not f["fragile"]]
    best = parse(run_dir.file("best.py").read_text())
    if robust:  # best.py is the simplified best robust program, named after the run
        assert best.name == program_name(config, robust[0]["rank"]) == report["winner"]
        assert str(best).split("\n", 1)[1] == robust[0]["simplified"].split("\n", 1)[1]
    else:
        assert best.name == "discovered"
