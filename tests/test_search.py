"""Update-rule search (discover/search.py, discover/evolution.py): config, fitness, generations, outputs."""

import dataclasses
import math
import pathlib

import numpy as np
import pytest

from discover.infra.config import ConfigError
from discover.infra.rundir import RunDir, new_run_dir
from discover.language.optax_export import to_optax
from discover.language.program import parse
from discover.searches import update_rules as search
from discover.shared import evolution
from search_spaces.update_rules import seed

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ROOT / "experiments" / "search_tiny.yaml"


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("yaml_text, key, what", [
    ("evolution:\n  populaton: 8\n", "evolution.populaton", "did you mean 'population'"),
    ("evolution:\n  population: many\n", "evolution.population", "expected int"),
    ("evolution:\n  population: 1\n", "evolution.population", "must be >= 2"),
    ("fitness:\n  tasks: [mlp_regression_prox]\n", "fitness.tasks[0]", "mlp_regression_proxy"),
    ("start_from: [adamx]\n", "start_from[0]", "adamw"),
    ("evolution:\n  population: 4\n  tournament: 9\n", "evolution", "tournament (9) must be <= population (4)"),
    ("start_from: [sophia]\n", "", "outside the search space"),
    ("evolution:\n  mutation: {swap: 1.0}\n", "evolution", "unknown mutation 'swap'"),
    ("funnel:\n  aggregate: median\n", "funnel.aggregate", "must be one of"),
    ("fitness:\n  lr_schedule: linear\n", "fitness.lr_schedule", "must be one of"),
])
def test_config_errors_are_one_line_naming_file_and_key(tmp_path, yaml_text, key, what):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: update_rule\n" + yaml_text)
    with pytest.raises(ConfigError) as info:
        search.load_search_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    assert key in message and what in message


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match=r"--set evolution.batch: must be >= 1"):
        search.load_search_config(TINY, ["evolution.batch=0"])


def test_shipped_configs_load():
    for name in ("quickstart", "lion_search", "lion_search_cosine", "lion_search_gpu", "search_tiny"):
        config = search.load_search_config(ROOT / "experiments" / f"{name}.yaml")
        assert config.kind == "update_rule" and config.start_from
    assert search.load_search_config(None).name == "quickstart"


def test_the_lr_schedule_of_a_run_reaches_its_proxy_and_meta_validation_tasks():
    from discover.searches.update_rules.steps import funnel_tasks, proxy_tasks

    config = search.load_search_config(TINY, ["fitness.lr_schedule=cosine", "funnel.tasks=[charlm_metaval]"])
    assert {t.lr_schedule for t in proxy_tasks(config) + funnel_tasks(config)} == {"cosine"}
    constant = search.load_search_config(TINY, ["funnel.tasks=[charlm_metaval]"])
    assert {t.lr_schedule for t in proxy_tasks(constant) + funnel_tasks(constant)} == {"constant"}
    assert [t.name for t in funnel_tasks(config)] == ["charlm_metaval"]


# ----------------------------------------------------------------------------------------------------------
# Fitness aggregation
# ----------------------------------------------------------------------------------------------------------
def test_aggregate_means_seeds_keeps_the_best_lr_and_gives_nonfinite_the_worst():
    ref = 2.0
    val = np.array([
        [[1.0, 3.0], [0.5, 0.5]],  # lr 0: mean 2 -> 1.0; lr 1: 0.5 -> 0.25 (best)
        [[np.nan, 1.0], [2.0, 2.0]],  # lr 0 has a NaN seed: only lr 1 counts -> 1.0
        [[np.inf, np.inf], [np.nan, 1.0]],  # every lr failed -> worst, flagged
        [[1e9, 1e9], [1e9, 1e9]],  # finite but huge -> capped at worst, not flagged
    ])
    rel, bad = search.aggregate(val, ref, worst=100.0)
    np.testing.assert_allclose(rel, [0.25, 1.0, 100.0, 100.0])
    assert bad.tolist() == [False, False, True, False]


# ----------------------------------------------------------------------------------------------------------
# Evolution pieces (no training)
# ----------------------------------------------------------------------------------------------------------
def _ind(fitness, birth, fp=None):
    return evolution.Individual(seed("sgd"), fitness, fp or f"fp{birth}", birth)


def test_tournament_picks_the_fittest_of_the_sample_and_adding_kills_the_oldest():
    pop = [_ind(f, b) for b, f in enumerate([3.0, 1.0, 2.0, 0.5])]
    rng = np.random.default_rng(0)
    assert evolution.tournament(pop, rng, 4).birth == 3  # whole population: the best
    picks = [evolution.tournament(pop, rng, 1).birth for _ in range(200)]
    assert set(picks) == {0, 1, 2, 3}  # size 1: uniform
    pop = evolution.add_member(pop, _ind(9.0, 4), capacity=4)
    assert [i.birth for i in pop] == [1, 2, 3, 4]  # the oldest (birth 0) died, even though it was not the worst


def test_scale_constants_scales_by_powers_of_two_and_keeps_interp_rates_below_one():
    adamw = seed("adamw")
    slots = evolution.constant_slots(adamw)
    assert len(slots) == len(adamw.constants)
    rates = [s for s in slots if s[2]]
    assert len(rates) == 2  # interp(g, m, 0.9), interp(_, v, 0.999)
    scaled = evolution.scale_constants(adamw, [1.0] * len(slots))
    for (i, k, is_rate), before, after in zip(slots, adamw.constants, scaled.constants):
        expected = 1 - (1 - before) * 2 if is_rate else before * 2
        assert after == pytest.approx(expected, rel=1e-6)
    assert evolution.scale_constants(adamw, [0.0] * len(slots)).constants == adamw.constants


class FakeScorer:
    """Fitness = number of live statements relative to AdamW's (times ``scale``); records every call."""

    def __init__(self, batch, scale=1.0):
        self.batch, self.scale, self.calls = batch, scale, []
        self.tasks = [dataclasses.make_dataclass("FakeTask", ["name"])("fake_task")]

    def score(self, programs, tasks=None, loss_scales=None):
        self.calls.append(list(programs))
        f = np.array([self.scale * len(p) / len(seed("adamw")) for p in programs])
        return search.Scores(f, f[:, None], np.zeros(len(programs), bool))


def test_a_stale_adamw_reference_is_reported(tmp_path):
    config = search.load_search_config(TINY, ["funnel.tasks=[]", f"fitness.reference_cache={tmp_path / 'r.json'}"])
    references = search.load_or_compute_references(config, RunDir(tmp_path))
    task = config.fitness.tasks[0]
    fresh = search.make_context(config, references).proxy.references[task]
    assert fresh["val_loss_at_1x"] == pytest.approx(fresh["tuned_val_loss"], rel=1e-4)  # the same trainer run
    stale = {"proxy": {task: {**references["proxy"][task], "val_loss": 0.8 * fresh["tuned_val_loss"]}}}
    with pytest.warns(UserWarning, match=rf"on {task}, its cached reference says .* may be stale"):
        search.make_context(config, {**references, **stale})


def test_adamw_scores_exactly_one_against_adamw_tuned_over_the_same_sweep(tmp_path):
    config = search.load_search_config(TINY, ["funnel.tasks=[]", f"fitness.reference_cache={tmp_path / 'r.json'}",
                                              "fitness.lr_multipliers=[0.25, 0.5, 1.0, 2.0, 4.0]",
                                              "fitness.steps=29"])  # its own task: other tests count compiles
    ctx = search.make_context(config, search.load_or_compute_references(config, RunDir(tmp_path)))
    adamw = seed("adamw")
    doubled = parse(str(adamw).replace("return update, m, v", "update = update * 2.0\n    return update, m, v"))
    scores = ctx.proxy.score([adamw, doubled])
    # A step-size hack gains nothing: 2 x AdamW at multiplier m is AdamW at 2m, on the same sweep.
    assert scores.fitness[0] == pytest.approx(1.0, abs=1e-9) and scores.fitness[1] == scores.fitness[0]
    assert scores.multiplier[1, 0] == scores.multiplier[0, 0] / 2


def test_a_generation_scores_only_novel_distinct_children_in_one_batched_call():
    config = search.load_search_config(TINY, ["funnel.tasks=[]", "evolution.max_rounds=6"])
    scorer = FakeScorer(config.evolution.batch)
    ctx = search.SearchContext(config=config, space=config.space.space(), proxy=scorer, metaval=None)
    state = search.initial_state(ctx)
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 2  # adamw and lion: scored once each
    for _ in range(3):
        scorer.calls.clear()
        cached = set(state.cache)
        births = state.births
        state, stats = search.run_generation(state, ctx)
        assert len(scorer.calls) <= 1
        scored = scorer.calls[0] if scorer.calls else []
        assert stats.get("scored", 0) == len(scored) <= config.evolution.batch
        fps = evolution.analyse(scored, ctx.max_len, ctx.n_state, pad_to=8)[1]
        assert len(set(fps)) == len(fps) and not set(fps) & cached  # novel and distinct
        assert stats["children"] == state.births - births
        assert stats["children"] == stats.get("hits", 0) + stats.get("scored", 0)
        assert len(state.population) == config.evolution.population
        assert min(i.birth for i in state.population) >= state.births - config.evolution.population
        for ind in state.population:  # every member carries the cached fitness of its live code
            assert ind.fitness == state.cache[ind.fingerprint]
    assert state.totals["hits"] > 0  # mutations of dead code and twins are recognised


def test_a_plateau_restarts_the_population_from_the_best():
    config = search.load_search_config(TINY, ["funnel.tasks=[]", "restart.patience=2"])
    ctx = search.SearchContext(config=config, space=config.space.space(), proxy=FakeScorer(8), metaval=None)
    state = search.initial_state(ctx)
    best = state.hall[0]
    state = dataclasses.replace(state, generation=1)
    state, restarted = search.maybe_restart(state, ctx)
    assert not restarted
    state = dataclasses.replace(state, generation=2)
    state, restarted = search.maybe_restart(state, ctx)
    assert restarted and state.restarts == 1
    assert {i.fingerprint for i in state.population} == {best.fingerprint}
    assert state.best_generation == 2


# ----------------------------------------------------------------------------------------------------------
# A real (tiny) search
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    config = search.load_search_config(TINY, [f"fitness.reference_cache={root / 'baselines.json'}"])
    runs = []
    for _ in range(2):
        run_dir = new_run_dir(config, root)
        runs.append((run_dir, search.run_search(config, run_dir)))
    return config, runs


def test_tiny_search_writes_its_outputs_and_improves_on_the_seeds(tiny_runs):
    config, [(run_dir, summary), _] = tiny_runs
    assert not summary["interrupted"] and summary["generations_done"] == config.evolution.generations
    for name in ("config.yaml", "references.json", "best.py", "hall_of_fame.json", "results.json"):
        assert run_dir.file(name).is_file(), name
    assert summary["seed_fitness"] == pytest.approx(1.0, abs=1e-4)  # AdamW against tuned AdamW
    assert summary["best_fitness"] < summary["seed_fitness"]
    assert 0.0 < summary["cache_hit_rate"] < 1.0 and 0.0 <= summary["dead_share"] < 1.0
    assert summary["candidates_scored"] > config.evolution.batch
    hall = run_dir.read_json("hall_of_fame.json")["entries"]
    assert [e["metaval"] for e in hall] == sorted(e["metaval"] for e in hall)
    assert len({e["fingerprint"] for e in hall}) == len(hall) <= config.hall_of_fame.size
    assert summary["best_metaval"] == hall[0]["metaval"] <= summary["seed_metaval"]


def test_best_py_is_a_program_that_exports_to_optax(tiny_runs):
    _, [(run_dir, summary), _] = tiny_runs
    program = parse(run_dir.file("best.py").read_text())
    assert program.name == "discovered"
    assert str(program.replace(name="adamw")).split("\n", 1)[1] == summary["best_program"].split("\n", 1)[1]
    import jax.numpy as jnp

    tx = to_optax(program, 1e-2)
    params = {"w": jnp.ones(3)}
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    assert np.all(np.isfinite(np.asarray(updates["w"])))


def test_same_config_and_seed_give_the_same_hall_of_fame(tiny_runs):
    _, [(a, _), (b, _)] = tiny_runs
    assert a.file("hall_of_fame.json").read_text() == b.file("hall_of_fame.json").read_text()
    assert a.file("best.py").read_text() == b.file("best.py").read_text()


def test_one_trainer_compilation_per_task_shape(tiny_runs):
    _, [(_, summary), (_, second)] = tiny_runs
    # proxy (batch 8) and meta-validation (top_k 2): two task shapes, compiled once, shared by the second run
    assert summary["trainer_compiles"] == 2 and second["trainer_compiles"] == 2


def test_tensorboard_events_hold_scalars_programs_and_histograms(tiny_runs):
    from tensorboard.backend.event_processing import event_accumulator

    config, [(run_dir, _), _] = tiny_runs
    acc = event_accumulator.EventAccumulator(str(run_dir.tb_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in ("fitness/best", "fitness/median", "fitness/metaval_best", "cache/hit_rate", "children/invalid",
                "children/nonfinite", "children/dead_share", "speed/candidates_per_s"):
        assert tag in scalars, tag
    steps = [e.step for e in acc.Scalars("fitness/best")]
    assert steps == list(range(1, config.evolution.generations + 1))
    best = [e.value for e in acc.Scalars("fitness/best")]
    assert best[-1] <= best[0]
    assert "fitness/population" in acc.Tags()["histograms"]
    texts = set(acc.Tags()["tensors"])
    assert {"programs/top/text_summary", "programs/best/text_summary", "hall_of_fame/text_summary"} <= texts
    top = acc.Tensors("programs/top/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "```python" in top and "fitness" in top and "def " in top


def test_diverging_programs_get_the_worst_fitness_and_are_counted(tiny_runs):
    config, _ = tiny_runs
    refs = search.load_or_compute_references(config, tiny_runs[1][0][0])
    ctx = search.make_context(config, refs)
    blowup = parse("def blowup(g, w, lr, t):\n    update = -exp(t) * 1e30 * sign(g)\n    return update\n")
    nan = parse("def nan(g, w, lr, t):\n    update = exp(100.0) * exp(100.0) * g\n    return update\n")
    scores = ctx.proxy.score([seed("adamw"), blowup, nan])
    assert scores.fitness[0] == pytest.approx(1.0, abs=1e-4)
    assert scores.fitness[1] == scores.fitness[2] == config.fitness.worst
    assert scores.nonfinite.tolist() == [False, True, True]
    assert math.isfinite(scores.fitness.sum())


class ConstantScorer(FakeScorer):
    """Fitness = |log2(c / 0.4)| of the program's one constant: best at c = 0.4."""

    def score(self, programs):
        f = np.array([abs(math.log2(p.constants[0] / 0.4)) for p in programs])
        return search.Scores(f, f[:, None], np.zeros(len(programs), bool))


@pytest.mark.parametrize("strategy", ["CMA_ES", "Open_ES"])
def test_constant_refinement_finds_better_constants_through_the_scorer(strategy):
    import jax

    config = search.load_search_config(TINY, [f"refine.strategy={strategy}", "refine.generations=12",
                                              "refine.sigma=1.0", "refine.lr=0.3"])
    ctx = search.SearchContext(config=config, space=config.space.space(), proxy=ConstantScorer(8), metaval=None)
    program = parse("def p(g, w, lr, t):\n    update = 0.1 * g\n    return update\n")
    before = ctx.proxy.score([program]).fitness[0]  # log2(4) = 2
    refined, fitness = search.refine_program(program, before, ctx, jax.random.key(0))
    assert fitness < 0.5 * before
    assert fitness == pytest.approx(ctx.proxy.score([refined]).fitness[0])
    assert refined.statements[0].op == "mul" and refined.constants[0] != 0.1
