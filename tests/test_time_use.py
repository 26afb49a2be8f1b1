"""space.time: bias_corrections: programs read t only as Adam's bias corrections, tied to their EMA's rate;
mutation keeps the tie; a seed outside the space is refused at the CLI."""

import numpy as np
import pytest
from typer.testing import CliRunner

import discover
from discover.cli import app
from discover.language.program import parse
from discover.language.time_use import tie_bias_corrections, time_problems
from discover.shared.evolution import make_child
from search_spaces.update_rules import UpdateRuleSpace

ADAMW = discover.seed("adamw")


def _program(body: str, params: str = "g, w, m, lr, t"):
    return parse(f"def r({params}):\n" + "".join(f"    {line}\n" for line in body.strip().splitlines()))


def test_adam_style_corrections_pass_and_schedules_built_from_t_do_not():
    assert time_problems(ADAMW) == [] and time_problems(discover.seed("lion")) == []
    warmup = _program("""
m = interp(g, m, 0.9)
v = interp(square(g), v, 0.999)
update = lr * m / (1.0 - pow(0.9, t)) / sqrt(v / pow(0.999, t))
return update, m, v""", "g, w, m, v, lr, t")  # v / 0.999^t: the step grows as v warms up, a schedule of the rule's own
    assert any("other than as 1 - pow(b, t)" in p for p in time_problems(warmup))
    linear = _program("""
m = interp(g, m, 0.9)
update = lr * m / (0.999 * t)
return update, m""")
    assert any("reads t outside a bias correction" in p for p in time_problems(linear))
    untied = _program("""
m = interp(g, m, 0.8)
update = lr * (m / (1.0 - pow(0.9, t)))
return update, m""")
    assert any("rate 0.8, not 0.9" in p for p in time_problems(untied))
    raw = _program("""
m = interp(g, m, 0.9)
mh = m / (1.0 - pow(0.9, t))
update = lr * mh * (1.0 - pow(0.9, t))
return update, m""")  # the same correction used as a factor: a schedule again
    assert time_problems(raw)
    assert tie_bias_corrections(untied) != untied and time_problems(tie_bias_corrections(untied)) == []
    assert tie_bias_corrections(ADAMW) is ADAMW


def test_mutation_keeps_corrections_tied_and_can_still_change_the_rates():
    """Children of AdamW in the restricted space never read t freely, and some change an EMA's rate with its
    correction following it; the unrestricted space does produce free uses of t from the same lineage."""
    for time, expect_free in (("bias_corrections", False), ("free", True)):
        space = UpdateRuleSpace(max_len=20, n_state=3, time=time)
        rng = np.random.default_rng(0)
        population, free, moved = [ADAMW], 0, 0
        for _ in range(600):
            child, _, _ = make_child(population[int(rng.integers(len(population)))], rng, space,
                                        {"insert": 1.0, "delete": 1.0, "modify_arg": 1.0, "modify_const": 1.0,
                                         "modify_op": 1.0}, 20)
            free += bool(time_problems(child))
            rates = {st.args[2] for st in child.statements if st.op == "interp" and isinstance(st.args[2], float)}
            bases = {st.args[0] for st in child.statements if st.op == "pow" and st.args[1:] == ("t",)}
            moved += bool(bases) and bases <= rates and not bases <= {0.9, 0.999}
            population.append(child)
        assert (free > 0) == expect_free, (time, free)
        if not expect_free:
            assert moved > 0


def test_cli_refuses_a_seed_that_reads_t_freely(tmp_path):
    result = CliRunner().invoke(app, ["search", "--set", "space.time=bias_corrections", "--set",
                                      "start_from=[adagrad]", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "start_from" in result.stderr and "adagrad" in result.stderr and "reads t" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("value", ["sometimes", "1"])
def test_cli_refuses_an_unknown_time_use(tmp_path, value):
    result = CliRunner().invoke(app, ["search", "--set", f"space.time={value}", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "space.time" in result.stderr and "Traceback" not in result.output
