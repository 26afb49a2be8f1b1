"""The searches' config schemas on discover.infra.config: one shared base, renamed keys, lazy registries."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from discover.infra.config import ConfigError, dump_config, load_config, peek_kind
from discover.infra.search_config import BaseSearchConfig, CheckpointSection
from discover.searches import get_search
from discover.searches.rl.config import RLSearchConfig
from discover.searches.update_rules.config import SearchConfig
from discover.shared.es import STRATEGY_NAMES
from envs import tasks as task_registry

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
BASE_KEYS = ["kind", "name", "seed", "devices", "distributed", "checkpoint"]


def test_both_searches_share_one_base_section():
    for schema in (SearchConfig, RLSearchConfig):
        assert issubclass(schema, BaseSearchConfig)
        assert [f.name for f in dataclasses.fields(schema)][: len(BASE_KEYS)] == BASE_KEYS
        own = vars(schema)["__annotations__"]
        assert not {"seed", "devices", "distributed"} & set(own)  # defined once, in the base
    # Each search keeps its own defaults where they differ.
    assert SearchConfig().checkpoint == CheckpointSection(every=10, max_to_keep=3)
    assert RLSearchConfig().checkpoint == CheckpointSection(every=5, max_to_keep=3)
    assert (SearchConfig().kind, SearchConfig().name) == ("update_rule", "search")
    assert (RLSearchConfig().kind, RLSearchConfig().name) == ("rl_objective", "talpo")
    with pytest.raises(ConfigError, match=r"^x.yaml:1: kind: must be one of 'rl_objective', got 'update_rule'"):
        load_config(RLSearchConfig, "x.yaml", text="kind: update_rule\n")
    with pytest.raises(ConfigError, match=r"^x.yaml:\d+: devices: expected 'all' or a positive integer, got 0$"):
        load_config(RLSearchConfig, "x.yaml", text="kind: rl_objective\ndevices: 0\n")


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiments_use_the_current_names(path, capsys):
    schema = get_search(peek_kind(str(path))).config_type
    config = load_config(schema, path)
    assert capsys.readouterr().err == ""  # no deprecation notice
    assert load_config(schema, text=dump_config(config)) == config


def test_update_rule_old_keys_read_as_the_new_ones(capsys):
    new = load_config(SearchConfig, "new.yaml", text=(
        "kind: update_rule\nstart_from: [adamw, lion]\nfitness:\n  train_seeds: 2\nfunnel:\n  train_seeds: 3\n"))
    old = load_config(SearchConfig, "old.yaml", text=(
        "kind: update_rule\nseeds: [adamw, lion]\nfitness:\n  seeds: 2\nfunnel:\n  seeds: 3\n"))
    assert old == new and new.start_from == ["adamw", "lion"]
    assert (new.fitness.train_seeds, new.funnel.train_seeds) == (2, 3)
    assert capsys.readouterr().err.splitlines() == [
        "warning: old.yaml:2: 'seeds' is renamed 'start_from'",
        "warning: old.yaml:4: 'fitness.seeds' is renamed 'fitness.train_seeds'",
        "warning: old.yaml:6: 'funnel.seeds' is renamed 'funnel.train_seeds'",
    ]
    assert load_config(SearchConfig, overrides=["seeds=[adamw, lion]", "fitness.seeds=2", "funnel.seeds=3"]) == new
    assert len(capsys.readouterr().err.splitlines()) == 3


def test_rl_old_key_reads_as_the_new_one(capsys):
    new = load_config(RLSearchConfig, text="kind: rl_objective\nes:\n  train_seeds: 2\n")
    old = load_config(RLSearchConfig, path="old.yaml", text="kind: rl_objective\nes:\n  seeds_per_member: 2\n")
    assert old == new and new.es.train_seeds == 2
    assert capsys.readouterr().err == "warning: old.yaml:3: 'es.seeds_per_member' is renamed 'es.train_seeds'\n"
    assert load_config(RLSearchConfig, overrides=["es.seeds_per_member=2"]) == new
    with pytest.raises(ConfigError, match=r"^old.yaml:4: es.seeds_per_member: 'seeds_per_member' is the old name"):
        load_config(RLSearchConfig, path="old.yaml", text="kind: rl_objective\nes:\n  train_seeds: 2\n"
                                                          "  seeds_per_member: 2\n")


def test_registry_choices_are_lazy_and_read_at_load_time(monkeypatch):
    refine = {f.name: f for f in dataclasses.fields(SearchConfig)}["refine"].default_factory
    strategy = {f.name: f for f in dataclasses.fields(refine)}["strategy"]
    assert strategy.metadata["choices"] is STRATEGY_NAMES  # the lazy sequence itself, not a copy
    with pytest.raises(ConfigError, match=r"fitness.tasks\[0\]: must be one of .* got 'late_proxy'"):
        load_config(SearchConfig, overrides=["fitness.tasks=[late_proxy]"])
    entry = task_registry._REGISTRY["mlp_regression_proxy"]
    monkeypatch.setitem(task_registry._REGISTRY, "late_proxy", entry)  # registered after the schema is built
    assert load_config(SearchConfig, overrides=["fitness.tasks=[late_proxy]"]).fitness.tasks == ["late_proxy"]
