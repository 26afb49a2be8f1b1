"""The profile's accounting: nested sections are exclusive, the remainder is `other`, shares add up to 1."""

import pytest

from discover.shared.profile import Profile


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_nested_sections_are_exclusive_and_shares_add_up():
    clock = Clock()
    p = Profile(clock=clock)
    with p.step(1):
        with p.section("funnel"):
            clock.now += 1.0
            with p.section("training"):
                clock.now += 3.0
            clock.now += 0.5
            p.compiled(0.5)  # a compilation inside the funnel: taken out of it
        clock.now += 0.5  # in no section: other
    with p.section("tensorboard"):
        clock.now += 1.0
    report = p.report(wall_s=clock.now)
    run = report["run"]["sections"]
    assert run["funnel"]["seconds"] == pytest.approx(1.0) and run["training"]["seconds"] == pytest.approx(3.0)
    assert run["compile"]["seconds"] == pytest.approx(0.5) and run["other"]["seconds"] == pytest.approx(0.5)
    assert sum(s["share"] for s in run.values()) == pytest.approx(1.0)
    assert report["run"]["trainer_share"] == pytest.approx(0.5)
    steps = report["steps"]
    assert steps["wall_s"] == pytest.approx(5.0) and "tensorboard" not in steps["sections"]
    assert steps["sections"]["other"]["seconds"] == pytest.approx(0.5)
    assert report["per_step"] == [{"step": 1, "wall_s": 5.0,
                                   "sections": {"training": 3.0, "compile": 0.5, "funnel": 1.0}}]


def test_a_disabled_profile_records_nothing():
    p = Profile(enabled=False)
    with p.step(1), p.section("training"):
        p.compiled(1.0)
    assert not p.seconds and not p.counts and not p.steps
