"""discover.infra.rundir: run directory layout, atomic writes, TensorBoard events read back."""

from __future__ import annotations

import io
import json
import os
import re

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from discover.infra import rundir as rundir_module
from discover.infra.config import ConfigError
from discover.infra.rundir import RunDir, RunDirError, TBLogger, program_markdown


def _events(logdir) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(
        str(logdir),
        size_guidance={
            event_accumulator.SCALARS: 0,
            event_accumulator.TENSORS: 0,
            event_accumulator.HISTOGRAMS: 0,
            event_accumulator.IMAGES: 0,
        },
    )
    acc.Reload()
    return acc


def test_create_names_and_suffixes(tmp_path):
    first = RunDir.create(root=tmp_path / "ck", name="lion", config_yaml="seed: 1\n")
    assert re.fullmatch(r"lion-\d{8}-\d{6}", first.path.name)
    assert first.config_yaml == "seed: 1\n"
    assert first.checkpoint_dir == first.path / "ckpt"
    assert first.tb_dir == first.path / "tb"
    assert first.is_main_process
    # Several runs in the same second get distinct folders.
    others = [RunDir.create(root=tmp_path / "ck", name="lion") for _ in range(3)]
    names = {first.path.name, *(o.path.name for o in others)}
    assert len(names) == 4
    suffixed = [n for n in names if re.fullmatch(r"lion-\d{8}-\d{6}-\d+", n)]
    assert len(suffixed) >= 1  # at least two of four runs shared a second
    with pytest.raises(RunDirError):
        RunDir.create(root=tmp_path, name="a/b")


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "must not be empty"),
        ("a/b", "path separator '/'"),
        ("bad\x00name", "NUL character"),
        ("tab\there", "control character U+0009 at position 3"),
        ("new\nline", "control character U+000A"),
        ("del\x7f", "control character U+007F"),
        ("x" * 236, "236 bytes long"),
        ("é" * 118, "236 bytes long"),  # bytes, not characters, count
    ],
)
def test_bad_run_names_create_nothing(tmp_path, name, message):
    root = tmp_path / "runs"
    with pytest.raises(RunDirError, match=re.escape(message)) as info:
        RunDir.create(root=root, name=name)
    text = str(info.value)
    assert text.startswith("name: ") and "\n" not in text and len(text) < 300
    assert not root.exists()


def test_longest_run_name_fits(tmp_path):
    name = "x" * (rundir_module.NAME_MAX - 20)
    run = RunDir.create(root=tmp_path, name=name)
    assert run.path.is_dir() and len(run.path.name) == rundir_module.NAME_MAX - 4
    with pytest.raises(RunDirError, match="at most 235 bytes fit"):
        RunDir.create(root=tmp_path, name=name + "x")


def test_open(tmp_path):
    run = RunDir.create(root=tmp_path, name="r", config_yaml="kind: update_rule\n")
    again = RunDir.open(str(run.path))
    assert again == run and again.config_yaml == "kind: update_rule\n"
    with pytest.raises(RunDirError, match="run directory not found"):
        RunDir.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match=r"not a run directory \(no config.yaml\)") as info:
        RunDir.open(tmp_path / "empty")
    assert isinstance(info.value, ConfigError)  # the CLI catches one error type
    assert str(info.value).startswith(str(tmp_path / "empty") + ": ")


def test_write_text_and_json_are_atomic(tmp_path, monkeypatch):
    run = RunDir.create(root=tmp_path, name="r")
    path = run.write_json("results/best.json", {"fitness": np.float32(0.5), "curve": jnp.arange(3), "n": 2})
    assert json.loads(path.read_text()) == {"fitness": 0.5, "curve": [0, 1, 2], "n": 2}
    assert run.read_json("results/best.json")["n"] == 2
    run.write_text("best.py", "def rule(): ...\n")

    # A crash in the middle of a write leaves the previous file whole and no temporary file behind.
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rundir_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        run.write_text("best.py", "half written")
    monkeypatch.undo()
    assert (run.path / "best.py").read_text() == "def rule(): ...\n"
    assert sorted(p.name for p in run.path.iterdir()) == ["best.py", "config.yaml", "results"]
    with pytest.raises(TypeError):
        run.write_json("bad.json", {"x": object()})
    assert not (run.path / "bad.json").exists()
    for bad in ("../escape.txt", "/abs.txt"):
        with pytest.raises(RunDirError):
            run.write_text(bad, "x")


def test_other_processes_write_nothing(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "r")
    monkeypatch.setattr(rundir_module, "is_main_process", lambda: False)
    run.write_text("a.txt", "x")
    run.write_json("b.json", {})
    logger = TBLogger(run)
    logger.scalars(0, {"x": 1.0})
    logger.text("t", "hi", 0)
    logger.close()
    assert not (tmp_path / "r").exists()


def test_tensorboard_events_read_back(tmp_path):
    run = RunDir.create(root=tmp_path, name="tb")
    with TBLogger(run) as tb:
        for step in range(3):
            tb.scalars(step, {"fitness/best": jnp.float32(1.0 / (step + 1)), "count/nan": np.int32(step)})
        code = "def rule(g, w, m, v, lr, t):\n    return -lr * g, m, v"
        tb.text("programs/best", program_markdown(code, title="best", extra="fitness 0.1"), 2)
        tb.histogram("fitness/population", np.array([0.1, 0.2, np.nan, np.inf, 0.3]), 2)
        tb.histogram("fitness/empty", np.array([np.nan]), 2)  # nothing finite: nothing written

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(2, 2), dpi=20)
        ax.plot([0, 1], [1, 0])
        tb.figure("curves/loss", fig, 2)
        png = tmp_path / "fig.png"
        fig2, _ = plt.subplots(figsize=(1, 1), dpi=16)
        fig2.savefig(png)
        plt.close(fig2)
        tb.image_png("plots/saved", png, 3)
        (tmp_path / "text.png").write_text("not an image")
        with pytest.raises(ValueError, match="not a PNG file"):
            tb.image_png("plots/bad", tmp_path / "text.png", 4)
        tb.flush()

    acc = _events(run.tb_dir)
    best = acc.Scalars("fitness/best")
    assert [e.step for e in best] == [0, 1, 2]
    assert [round(e.value, 6) for e in best] == [1.0, 0.5, round(1 / 3, 6)]
    text = acc.Tensors("programs/best/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "```python\ndef rule(g, w, m, v, lr, t):" in text and text.startswith("### best")
    hist = acc.Histograms("fitness/population")[0]
    assert hist.step == 2 and hist.histogram_value.num == 3
    assert hist.histogram_value.min == pytest.approx(0.1) and hist.histogram_value.max == pytest.approx(0.3)
    assert "fitness/empty" not in acc.Tags()["histograms"]
    image = acc.Images("curves/loss")[0]
    assert (image.width, image.height) == (40, 40)
    saved = acc.Images("plots/saved")[0]
    assert (saved.width, saved.height, saved.step) == (16, 16, 3)
    # Written through SummaryWriter.add_image: the PNG is re-encoded, its pixels are the file's.
    from PIL import Image

    with Image.open(png) as original, Image.open(io.BytesIO(saved.encoded_image_string)) as logged:
        np.testing.assert_array_equal(np.asarray(logged), np.asarray(original.convert(logged.mode)))


def test_hparams_and_scalar_errors(tmp_path):
    tb = TBLogger(tmp_path / "tb")
    with pytest.raises(ValueError, match="needs one value"):
        tb.scalars(0, {"x": np.ones(3)})
    tb.hparams(
        {"search.population": 64, "search.lrs": [0.1, 0.2], "funnel": None, "name": "q"}, {"final/best": 0.25}
    )
    tb.close()
    runs = [d for d in os.listdir(tmp_path / "tb") if (tmp_path / "tb" / d).is_dir()]
    assert runs == ["hparams"]
    acc = _events(tmp_path / "tb" / "hparams")
    assert "_hparams_/session_start_info" in acc.summary_metadata
    assert acc.Scalars("final/best")[0].value == 0.25


def test_program_markdown_fences():
    md = program_markdown("x = 1\n")
    assert md == "```python\nx = 1\n```"
    tricky = program_markdown("s = '```'", title="t", extra="*note*")
    assert tricky.startswith("### t\n\n````python\n") and tricky.endswith("````\n\n*note*")
