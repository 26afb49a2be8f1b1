"""discover.infra.config: typed YAML configs whose errors name the file, the line and the key."""

from __future__ import annotations

import collections.abc
import dataclasses
import time
from typing import Literal

import pytest

from discover.infra.config import (
    ConfigError,
    config_reference,
    config_to_dict,
    dump_config,
    flat_config,
    load_config,
    peek_kind,
)


@dataclasses.dataclass
class Search:
    population: int = dataclasses.field(
        default=64, metadata={"min": 2, "max": 4096, "help": "programs alive"}
    )
    mutation: str = dataclasses.field(default="point", metadata={"choices": ("point", "insert", "delete")})
    lrs: list[float] = dataclasses.field(default_factory=lambda: [1e-3, 3e-4], metadata={"min": 0.0})
    weights: dict[str, float] = dataclasses.field(default_factory=lambda: {"mnist": 1.0, "lm": 0.5})
    envs: list[str] = dataclasses.field(default_factory=lambda: ["CartPole-v1"])
    widths: tuple[int, ...] = (8, 16)
    budget: int | None = None
    precision: Literal["f32", "bf16"] = "f32"


@dataclasses.dataclass
class Funnel:
    every: int = 10
    enabled: bool = True


@dataclasses.dataclass
class Experiment:
    kind: str = dataclasses.field(default="update_rule", metadata={"choices": ("update_rule",)})
    name: str = "quick"
    seed: int = 0
    temperature: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    search: Search = dataclasses.field(default_factory=Search)
    funnel: Funnel | None = None
    # A section whose default differs from its class defaults: file keys merge onto this default.
    small: Search = dataclasses.field(default_factory=lambda: Search(population=8))


def _error(text: str = "", overrides=(), path="exp.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        load_config(Experiment, path=path, text=text, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_when_empty():
    assert load_config(Experiment, text="") == Experiment()
    assert load_config(Experiment) == Experiment()


def test_valid_file_is_typed_and_merged_onto_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "kind: update_rule\n"
        "seed: 3\n"
        "temperature: 1          # an int is fine where a float is expected\n"
        "search:\n"
        "  population: 128\n"
        "  lrs: [1e-2, 0.5]      # YAML 1.1 reads 1e-2 as text; a float field takes it\n"
        "  weights: {mnist: 2}\n"
        "  widths: [4, 4, 4]\n"
        "funnel:\n"
        "  every: 5\n"
        "small:\n"
        "  mutation: insert\n"
    )
    cfg = load_config(Experiment, path=str(path))
    assert cfg.seed == 3
    assert cfg.temperature == 1.0 and isinstance(cfg.temperature, float)
    assert cfg.search.population == 128
    assert cfg.search.lrs == [0.01, 0.5] and all(isinstance(x, float) for x in cfg.search.lrs)
    assert cfg.search.weights == {"mnist": 2.0}  # a dict written in the file replaces the default
    assert cfg.search.widths == (4, 4, 4)
    assert cfg.search.mutation == "point"  # untouched keys keep their defaults
    assert cfg.funnel == Funnel(every=5, enabled=True)
    assert cfg.small.population == 8 and cfg.small.mutation == "insert"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "seed: 1\nsearch:\n  populaton: 3\n",
            "exp.yaml:3: search.populaton: unknown key; did you mean 'population'?",
        ),
        ("sed: 1\n", "exp.yaml:1: sed: unknown key; did you mean 'seed'?"),
        ("search:\n  population: abc\n", "exp.yaml:2: search.population: expected int, got 'abc'"),
        ("seed: true\n", "exp.yaml:1: seed: expected int, got true"),
        ("seed: 1.5\n", "exp.yaml:1: seed: expected int, got 1.5"),
        ("temperature: false\n", "exp.yaml:1: temperature: expected float, got false"),
        ("name: 12\n", "exp.yaml:1: name: expected str, got 12 (quote it to make it text)"),
        ("search:\n\n  population: 1\n", "exp.yaml:3: search.population: must be >= 2, got 1"),
        ("temperature: 1.5\n", "exp.yaml:1: temperature: must be <= 1.0, got 1.5"),
        ("search:\n  lrs: [0.1, -1.0]\n", "exp.yaml:2: search.lrs[1]: must be >= 0.0, got -1.0"),
        (
            "search:\n  mutation: insrt\n",
            (
                "exp.yaml:2: search.mutation: must be one of 'point', 'insert', 'delete', got 'insrt'"
                " (did you mean 'insert'?)"
            ),
        ),
        (
            "search:\n  precision: f16\n",
            "exp.yaml:2: search.precision: must be one of 'f32', 'bf16', got 'f16'",
        ),
        ("search:\n  lrs: 0.1\n", "exp.yaml:2: search.lrs: expected list of float, got 0.1"),
        ("search:\n  lrs:\n    - 0.1\n    - fast\n", "exp.yaml:4: search.lrs[1]: expected float, got 'fast'"),
        ("search:\n  weights: {mnist: x}\n", "exp.yaml:2: search.weights.mnist: expected float, got 'x'"),
        ("search: 3\n", "exp.yaml:1: search: expected a mapping of settings, got 3"),
        ("seed: null\n", "exp.yaml:1: seed: expected int, got null"),
        ("seed: 1\nname: a\nseed: 2\n", "exp.yaml:3: seed: duplicate key (already set above)"),
        ("- 1\n- 2\n", "exp.yaml:1: expected a mapping of settings at the top level, got a list"),
        (
            "funnel:\n  every: 5\n  enabld: false\n",
            "exp.yaml:3: funnel.enabld: unknown key; did you mean 'enabled'?",
        ),
    ],
)
def test_errors_name_file_line_and_key(text, expected):
    assert _error(text) == expected


def test_malformed_yaml_reports_the_line():
    message = _error("seed: 1\nsearch:\n  population: [1, 2\n  lrs: 3\n")
    assert message.startswith("exp.yaml:") and "invalid YAML" in message
    line = int(message.split(":")[1])
    assert line in (3, 4)  # the line where the parser noticed the unclosed bracket
    message = _error("seed: 1\n  bad: indentation\n")
    assert message.startswith("exp.yaml:2: invalid YAML")


def test_anchors_aliases_and_merge_keys_are_refused():
    # They were once read; an alias bomb made them a liability: now each is a one-line error at its line.
    text = "base: &base {population: 16, mutation: insert}\nsearch:\n  <<: *base\n"
    assert _error(text) == "exp.yaml:1: YAML anchors/aliases are not supported"
    assert _error("seed: 1\nsearch: *nowhere\n") == "exp.yaml:2: YAML anchors/aliases are not supported"
    assert _error("search:\n  <<: {population: 16}\n") == "exp.yaml:2: search: YAML merge keys (<<) are not supported"
    assert _error("", overrides=["search.lrs=[&a 0.1, *a]"]) == (
        "--set search.lrs: YAML anchors/aliases are not supported")


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_fails_fast():
    start = time.perf_counter()
    assert _error(_alias_bomb()) == "exp.yaml:1: YAML anchors/aliases are not supported"
    assert _error("", overrides=["seed=" + _alias_bomb().replace("\n", ", ").join("{}")]).startswith("--set seed: ")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deep_nesting_is_refused_without_recursion_error(depth):
    deep = "[" * depth + "]" * depth
    assert _error(f"seed: 1\nsearch:\n  lrs: {deep}\n") == "exp.yaml:3: YAML nested deeper than 32 levels"
    assert _error("", overrides=[f"search.lrs={deep}"]) == "--set search.lrs: YAML nested deeper than 32 levels"
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(depth if depth < 100 else 40))
    assert _error(block).startswith("exp.yaml:33: YAML nested deeper than 32 levels")
    # 32 levels (the top-level mapping is one) is still read: the schema says what is wrong with it
    assert _error("search:\n  lrs: " + "[" * 30 + "]" * 30 + "\n").startswith("exp.yaml:2: search.lrs[0]: ")


def test_unsafe_tags_are_refused():
    message = _error("name: !!python/object/apply:os.system ['true']\n")
    assert message.startswith("exp.yaml:1: name: invalid YAML value")


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found$"):
        load_config(Experiment, path=str(missing))
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(Experiment, path=str(tmp_path))


def test_overrides_apply_after_the_file_and_merge_dicts():
    cfg = load_config(
        Experiment,
        text="search:\n  population: 10\n",
        overrides=[
            "search.population=20",
            "search.lrs=[0.1, 1e-5]",
            "search.weights.rl=0.25",  # one dict key: the other keys stay
            "funnel.every=7",  # a None optional section comes to life with its defaults
            "search.budget=100",
            "name=hello world",
        ],
    )
    assert cfg.search.population == 20
    assert cfg.search.lrs == [0.1, 1e-5]
    assert cfg.search.weights == {"mnist": 1.0, "lm": 0.5, "rl": 0.25}
    assert cfg.funnel == Funnel(every=7)
    assert cfg.search.budget == 100
    assert cfg.name == "hello world"
    assert load_config(Experiment, overrides=["search.budget=null"]).search.budget is None


@pytest.mark.parametrize(
    "override, expected",
    [
        ("search.population=abc", "--set search.population: expected int, got 'abc'"),
        ("search.populaton=3", "--set search.populaton: unknown key; did you mean 'population'?"),
        ("search.population=1", "--set search.population: must be >= 2, got 1"),
        (
            "search.mutation=swap",
            "--set search.mutation: must be one of 'point', 'insert', 'delete', got 'swap'",
        ),
        ("search.lrs=[0.1, x]", "--set search.lrs[1]: expected float, got 'x'"),
        ("seed", "--set: expected key.sub=value, got 'seed'"),
        ("search..population=3", "--set: malformed key path 'search..population'"),
    ],
)
def test_override_errors(override, expected):
    assert _error("", overrides=[override]) == expected


def test_override_bad_yaml_value():
    message = _error("", overrides=["search.lrs=[0.1"])
    assert message.startswith("--set search.lrs: invalid YAML")


@dataclasses.dataclass
class Bounds:
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")


@dataclasses.dataclass
class WithBounds:
    bounds: Bounds = dataclasses.field(default_factory=Bounds)


@dataclasses.dataclass
class Needs:
    env: str
    steps: int = 1


def test_post_init_checks_become_config_errors():
    assert load_config(WithBounds, text="bounds: {low: 0.5}").bounds == Bounds(0.5, 1.0)
    with pytest.raises(ConfigError) as info:
        load_config(WithBounds, path="b.yaml", text="\nbounds:\n  low: 2\n")
    assert str(info.value) == "b.yaml:2: bounds: low (2.0) must be below high (1.0)"


def test_missing_required_key():
    assert load_config(Needs, text="env: CartPole-v1").env == "CartPole-v1"
    with pytest.raises(ConfigError) as info:
        load_config(Needs, path="n.yaml", text="steps: 2\n")
    assert str(info.value) == "n.yaml:1: env: missing required key"


def test_dump_load_round_trip():
    cfg = load_config(
        Experiment,
        overrides=[
            "name='yes'",  # YAML 1.1 would read an unquoted yes as a bool: dump must quote it
            "seed=123456789",
            "temperature=0.1",
            "search.lrs=[1e-10, 0.30000000000000004, 1.0e+20]",
            "search.envs=['a: b', '#c', 'null', '']",
            "search.weights={}",
            "funnel.enabled=false",
        ],
    )
    text = dump_config(cfg)
    assert "# programs alive" in text  # help becomes a comment
    again = load_config(Experiment, text=text)
    assert again == cfg
    assert dump_config(again) == text
    assert load_config(Experiment, text=dump_config(Experiment(), comments=False)) == Experiment()


def test_config_to_dict_and_flat_config():
    cfg = Experiment()
    data = config_to_dict(cfg)
    assert data["search"]["widths"] == [8, 16]
    assert data["funnel"] is None
    flat = flat_config(cfg)
    assert flat["search.population"] == 64
    assert flat["search.weights.mnist"] == 1.0
    assert flat["small.population"] == 8
    assert "search" not in flat


def test_peek_kind(tmp_path):
    assert peek_kind("kind: rl_objective\npopulation: 3\n") == "rl_objective"
    path = tmp_path / "e.yaml"
    path.write_text("# comment\nkind: update_rule\n")
    assert peek_kind(str(path)) == "update_rule"
    assert peek_kind(path, known=("update_rule", "rl_objective")) == "update_rule"
    with pytest.raises(ConfigError, match=r"<string>:1: kind: missing"):
        peek_kind("seed: 1\n")
    with pytest.raises(ConfigError, match=r"kind: expected str, got 3"):
        peek_kind("kind: 3\n")
    with pytest.raises(ConfigError, match=r"unknown kind 'rl_objectiv'; did you mean 'rl_objective'\?"):
        peek_kind("kind: rl_objectiv\n", known=("update_rule", "rl_objective"))
    with pytest.raises(ConfigError, match=r"missing\.yaml: file not found"):
        peek_kind(str(tmp_path / "missing.yaml"))


# ----------------------------------------------------------------------------------------------------------
# Renamed keys: the old name is still read, with a one-line warning on stderr.


@dataclasses.dataclass(frozen=True)
class Fit:
    train_seeds: int = dataclasses.field(default=1, metadata={"min": 1, "renamed_from": "seeds"})
    tasks: list[str] = dataclasses.field(default_factory=lambda: ["a"])


@dataclasses.dataclass(frozen=True)
class Renamed:
    start_from: list[str] = dataclasses.field(
        default_factory=lambda: ["adamw"], metadata={"choices": ("adamw", "lion"), "renamed_from": "seeds"})
    fitness: Fit = dataclasses.field(default_factory=Fit)


OLD = "seeds: [lion]\nfitness:\n  seeds: 3\n"
NEW = "start_from: [lion]\nfitness:\n  train_seeds: 3\n"


def test_old_keys_are_read_with_a_one_line_notice_each(capsys):
    new = load_config(Renamed, path="r.yaml", text=NEW)
    assert capsys.readouterr().err == ""
    assert new == Renamed(["lion"], Fit(train_seeds=3))
    assert load_config(Renamed, path="r.yaml", text=OLD) == new
    assert capsys.readouterr().err.splitlines() == [
        "warning: r.yaml:1: 'seeds' is renamed 'start_from'",
        "warning: r.yaml:3: 'fitness.seeds' is renamed 'fitness.train_seeds'",
    ]
    assert "seeds" not in dump_config(new).replace("train_seeds", "")  # written back under the new names


def test_old_keys_in_overrides(capsys):
    cfg = load_config(Renamed, overrides=["seeds=[lion]", "fitness.seeds=3"])
    assert cfg == load_config(Renamed, text=NEW)
    assert capsys.readouterr().err.splitlines() == [
        "warning: --set: 'seeds' is renamed 'start_from'",
        "warning: --set: 'fitness.seeds' is renamed 'fitness.train_seeds'",
    ]
    assert load_config(Renamed, overrides=["fitness={seeds: 3, tasks: [b]}"]).fitness == Fit(3, ["b"])
    # An override in the new name replaces a value the file gives under the old one, and vice versa.
    assert load_config(Renamed, text=OLD, overrides=["start_from=[adamw]"]).start_from == ["adamw"]
    assert load_config(Renamed, text=NEW, overrides=["fitness.seeds=5"]).fitness.train_seeds == 5


def test_old_and_new_key_together_is_an_error():
    with pytest.raises(ConfigError) as info:
        load_config(Renamed, path="r.yaml", text="start_from: [lion]\nseeds: [adamw]\n")
    assert str(info.value) == "r.yaml:2: seeds: 'seeds' is the old name of 'start_from'; set only 'start_from'"
    with pytest.raises(ConfigError, match=r"^r.yaml:3: fitness.seeds: 'seeds' is the old name of 'train_seeds'"):
        load_config(Renamed, path="r.yaml", text="fitness:\n  train_seeds: 2\n  seeds: 2\n")


def test_errors_under_an_old_key_name_it_as_written():
    with pytest.raises(ConfigError) as info:
        load_config(Renamed, path="r.yaml", text="seeds: [adamx]\n")
    assert str(info.value) == "r.yaml:1: seeds[0]: must be one of 'adamw', 'lion', got 'adamx' (did you mean 'adamw'?)"
    with pytest.raises(ConfigError) as info:
        load_config(Renamed, overrides=["fitness.seeds=0"])
    assert str(info.value) == "--set fitness.seeds: must be >= 1, got 0"


# ----------------------------------------------------------------------------------------------------------
# Choices from a registry are read when a config is loaded, not when the schema is defined.


class Registry(collections.abc.Sequence):
    names: tuple = ("a",)

    def __getitem__(self, i):
        return self.names[i]

    def __len__(self):
        return len(self.names)


@dataclasses.dataclass(frozen=True)
class FromRegistry:
    task: str = dataclasses.field(default="a", metadata={"choices": Registry()})


def test_registry_choices_are_read_at_load_time(monkeypatch):
    assert load_config(FromRegistry, text="task: a").task == "a"
    with pytest.raises(ConfigError, match=r"must be one of 'a', got 'late'"):
        load_config(FromRegistry, text="task: late")
    monkeypatch.setattr(Registry, "names", ("a", "late"))  # registered after the first load
    assert load_config(FromRegistry, text="task: late").task == "late"


# ----------------------------------------------------------------------------------------------------------
# The reference of every key.


def test_config_reference_lists_every_key_with_type_default_and_help():
    text = config_reference(Experiment)
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert text.splitlines()[0].split() == ["KEY", "TYPE", "DEFAULT", "HELP"]
    assert "search.population" in rows and "small.population" in rows and "funnel.every" in rows
    assert rows["search.population"].split()[1:5] == ["int,", ">=", "2,", "<="]
    assert " 64 " in rows["search.population"] and rows["search.population"].endswith("programs alive")
    assert " 8 " in rows["small.population"]  # the section's own default, not the class default
    assert "section or null" in rows["funnel"] and "[one of: point, insert, delete]" in rows["search.mutation"]
    assert "(formerly 'seeds')" in config_reference(Renamed)
