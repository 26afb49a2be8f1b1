"""discover.infra.config: typed YAML configs whose errors name the file, the line and the key."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from discover.infra.config import (
    ConfigError,
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


def test_anchors_and_merge_keys():
    text = "base: &base {population: 16, mutation: insert}\n"
    # `base` is not a key of the schema: merge keys are resolved before keys are checked.
    with pytest.raises(ConfigError, match=r"exp.yaml:1: base: unknown key"):
        load_config(Experiment, path="exp.yaml", text=text + "search:\n  <<: *base\n")
    cfg = load_config(
        Experiment,
        text="search: &s\n  population: 16\n  mutation: insert\nsmall:\n  <<: *s\n  population: 4\n",
    )
    assert (cfg.search.population, cfg.search.mutation) == (16, "insert")
    assert (cfg.small.population, cfg.small.mutation) == (4, "insert")  # own key overrides the merged one


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
