"""discover.infra.checkpointing: exact orbax round trips, fallback over damaged steps, graceful signals."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import signal
import sys
import threading
import typing
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from discover.infra.checkpointing import (
    Checkpointer,
    CheckpointError,
    CheckpointFallbackWarning,
    pack_key,
    rng_from_json,
    rng_to_json,
    unpack_key,
)
from discover.infra.signals import GracefulExit


class SearchState(typing.NamedTuple):
    population: jax.Array
    fitness: np.ndarray
    key: jax.Array
    generation: int
    best: float
    flags: jax.Array
    ages: np.ndarray
    hall: np.ndarray  # empty at the start of a search
    scale: np.float32


def _state(generation: int) -> SearchState:
    key = jax.random.key(generation)
    return SearchState(
        population=jax.random.normal(jax.random.key(100 + generation), (4, 3), jnp.float32),
        fitness=np.linspace(0.1, 0.9, 4) / (generation + 1),
        key=key,
        generation=generation,
        best=0.1 / (generation + 1),
        flags=jnp.array([True, False, generation % 2 == 0]),
        ages=np.arange(4, dtype=np.int64) + generation,
        hall=np.zeros((0, 5), np.int32),
        scale=np.float32(1.5 + generation),
    )


def _meta(generation: int) -> dict:
    return {
        "generation": generation,
        "fitness_cache": {"abc": [0.5, float("inf")], "def": [np.float32(0.25)]},
        "hall_of_fame": ["def rule(g):\n    return g"] * generation,
        "counts": np.arange(3),
    }


def _assert_same(a: SearchState, b: SearchState) -> None:
    for name, x, y in zip(SearchState._fields, a, b):
        assert type(x) is type(y), name
        if name == "key":
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            np.testing.assert_array_equal(jax.random.key_data(x), jax.random.key_data(y))
        else:
            assert np.asarray(x).dtype == np.asarray(y).dtype, name
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


def _save_steps(directory: pathlib.Path, steps) -> None:
    with Checkpointer(directory, max_to_keep=5) as ckpt:
        for step in steps:
            assert ckpt.save(step, _state(step), _meta(step))


def test_round_trip_is_exact(tmp_path):
    _save_steps(tmp_path, [1, 2, 3])
    ckpt = Checkpointer(tmp_path)
    assert ckpt.all_steps() == [1, 2, 3] and ckpt.latest_step() == 3
    step, restored, meta = ckpt.restore(_state(0))
    assert step == 3
    _assert_same(restored, _state(3))
    assert isinstance(restored.population, jax.Array) and isinstance(restored.fitness, np.ndarray)
    assert meta == {
        "generation": 3,
        "fitness_cache": {"abc": [0.5, float("inf")], "def": [0.25]},
        "hall_of_fame": ["def rule(g):\n    return g"] * 3,
        "counts": [0, 1, 2],
    }
    # The restored key continues the same random stream.
    np.testing.assert_array_equal(
        jax.random.uniform(restored.key, (3,)), jax.random.uniform(_state(3).key, (3,))
    )
    step, restored, meta = ckpt.restore(_state(0), step=1)
    assert step == 1 and meta["generation"] == 1
    _assert_same(restored, _state(1))
    # An abstract target works too.
    abstract = SearchState(
        *(
            jax.ShapeDtypeStruct(np.shape(x), x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
            for x in _state(0)
        )
    )
    _, from_abstract, _ = ckpt.restore(abstract)
    from_abstract = from_abstract._asdict()
    assert isinstance(from_abstract["population"], jax.Array)
    np.testing.assert_array_equal(from_abstract["population"], _state(3).population)
    assert from_abstract["ages"].dtype == np.int64  # 64-bit without jax_enable_x64: kept as NumPy, exact
    np.testing.assert_array_equal(
        jax.random.key_data(from_abstract["key"]), jax.random.key_data(_state(3).key)
    )
    # Saving a step that exists is a no-op, not an error.
    assert ckpt.save(3, _state(0), {}) is False
    ckpt.close()


def test_max_to_keep_and_empty_trees(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in range(4):
            ckpt.save(step, {}, {"step": step})
        assert ckpt.all_steps() == [2, 3]
        step, arrays, meta = ckpt.restore({})
        assert (step, arrays, meta) == (3, {}, {"step": 3})


def test_structure_mismatch_is_an_error_not_a_fallback(tmp_path):
    _save_steps(tmp_path, [1, 2])
    ckpt = Checkpointer(tmp_path)
    wrong = _state(0)._replace(population=jnp.zeros((5, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning may be issued
        with pytest.raises(
            CheckpointError, match=r"\.population is float32\[4, 3\] in the checkpoint, the run expects"
        ):
            ckpt.restore(wrong)
    assert ckpt.all_steps() == [1, 2]  # nothing was moved aside
    with pytest.raises(CheckpointError, match="no checkpoint step 7"):
        ckpt.restore(_state(0), step=7)
    ckpt.close()


def _damage_truncate_data(step_dir: pathlib.Path) -> None:
    for f in (step_dir / "arrays" / "d").iterdir():
        with open(f, "r+b") as fh:
            fh.truncate(max(1, f.stat().st_size // 3))


def _damage_delete_metadata(step_dir: pathlib.Path) -> None:
    (step_dir / "arrays" / "_METADATA").unlink()


def _damage_truncate_meta(step_dir: pathlib.Path) -> None:
    meta = step_dir / "meta" / "metadata"
    meta.write_bytes(meta.read_bytes()[:10])


def _damage_no_commit_marker(step_dir: pathlib.Path) -> None:
    (step_dir / "commit_success.txt").unlink()


def _damage_flip_bytes(step_dir: pathlib.Path) -> None:
    # Valid JSON, wrong contents: only the recorded checksum can notice.
    meta = step_dir / "meta" / "metadata"
    meta.write_text(meta.read_text().replace('"digest": "', '"digest": "00', 1))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_damage_truncate_data, "arrays unreadable"),
        (_damage_delete_metadata, "arrays unreadable"),
        (_damage_truncate_meta, "meta unreadable"),
        (_damage_no_commit_marker, "no commit marker"),
        (_damage_flip_bytes, "checksum"),
    ],
)
def test_fallback_over_a_damaged_latest_step(tmp_path, damage, reason):
    _save_steps(tmp_path, [1, 2, 3])
    damage(tmp_path / "3")
    ckpt = Checkpointer(tmp_path)
    with pytest.warns(CheckpointFallbackWarning) as record:
        step, restored, meta = ckpt.restore(_state(0))
    assert step == 2 and meta["generation"] == 2
    _assert_same(restored, _state(2))
    messages = [str(w.message) for w in record if issubclass(w.category, CheckpointFallbackWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith("checkpoint step 3 ") and reason in messages[0]
    assert "falling back to step 2" in messages[0]
    # The damaged step is moved aside, so the resumed run can write step 3 again.
    assert ckpt.all_steps() == [1, 2]
    assert any(p.name.startswith("corrupt-3-") for p in tmp_path.iterdir())
    assert ckpt.save(3, _state(3), _meta(3))
    ckpt.wait()
    step, restored, _ = ckpt.restore(_state(0))
    assert step == 3
    _assert_same(restored, _state(3))
    ckpt.close()


def test_no_good_step_raises(tmp_path):
    _save_steps(tmp_path, [1, 2])
    _damage_no_commit_marker(tmp_path / "1")
    _damage_truncate_meta(tmp_path / "2")
    ckpt = Checkpointer(tmp_path, read_only=True)
    with (
        pytest.warns(CheckpointFallbackWarning),
        pytest.raises(CheckpointError, match="no readable checkpoint") as info,
    ):
        ckpt.restore(_state(0))
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # read-only: nothing moved
    assert ckpt.latest_step() == 2  # has a commit marker; its contents are checked by restore
    with pytest.raises(CheckpointError, match="damaged"):
        ckpt.restore(_state(0), step=2)
    with pytest.raises(CheckpointError, match="no checkpoint to restore"):
        Checkpointer(tmp_path / "fresh").restore(_state(0))


def test_unsavable_values_are_clear_errors(tmp_path):
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError, match=r"arrays\['name'\]: cannot checkpoint a str"):
        ckpt.save(0, {"name": "x"}, {})
    with pytest.raises(CheckpointError, match=r"meta\['bad'\]: cannot write a object as JSON"):
        ckpt.save(0, {}, {"bad": object()})
    with pytest.raises(CheckpointError, match="keys must be str"):
        ckpt.save(0, {}, {"cache": {1: 0.5}})
    ckpt.close()


def test_pack_unpack_key():
    key = jax.random.key(7)
    data = pack_key(key)
    assert data.dtype == jnp.uint32 and data.shape == (2,)
    again = unpack_key(data)
    np.testing.assert_array_equal(jax.random.normal(again, (2,)), jax.random.normal(key, (2,)))
    legacy = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(pack_key(legacy), legacy)


def test_graceful_exit_on_sigterm_and_second_sigint(capsys):
    before_int = signal.getsignal(signal.SIGINT)
    before_term = signal.getsignal(signal.SIGTERM)
    with GracefulExit() as stop:
        assert stop.active and not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # repeated SIGTERM: still just a request
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after a request aborts at once
    assert signal.getsignal(signal.SIGINT) is before_int
    assert signal.getsignal(signal.SIGTERM) is before_term
    assert capsys.readouterr().err.count("SIGTERM received") == 1

    with GracefulExit(notice=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before_int


def test_graceful_exit_is_inert_off_the_main_thread():
    seen = {}

    def worker():
        with GracefulExit() as stop:
            seen["active"] = stop.active
            stop.request()
            seen["requested"] = stop.requested

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"active": False, "requested": True}


# ----------------------------------------------------------------------------------------------------------
# The JSON record is covered by a digest too


def _edit_meta_json(step_dir: pathlib.Path, edit) -> None:
    """Rewrites a step's JSON record as valid JSON with ``edit`` applied (what a checksum must catch)."""
    path = step_dir / "meta" / "metadata"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r["user"].__setitem__("generation", 7),  # the population / counters part
        lambda r: r["user"]["hall_of_fame"].append("def rule(g):\n    return -g"),
        lambda r: r["user"]["fitness_cache"].__setitem__("abc", [0.5, 0.25]),
        lambda r: r["signature"][0].__setitem__(1, [8, 3]),  # the arrays' recorded shape
    ],
    ids=["counter", "hall", "cache", "signature"],
)
def test_edited_meta_json_falls_back(tmp_path, edit):
    _save_steps(tmp_path, [1, 2, 3])
    _edit_meta_json(tmp_path / "3", edit)
    ckpt = Checkpointer(tmp_path)
    with pytest.warns(CheckpointFallbackWarning, match=r"step 3 .*meta does not match its recorded checksum"):
        step, restored, meta = ckpt.restore(_state(0))
    assert step == 2 and meta["generation"] == 2
    _assert_same(restored, _state(2))
    with pytest.raises(CheckpointError, match="no checkpoint step 3"):  # moved aside
        ckpt.restore(_state(0), step=3)
    ckpt.close()


def test_edited_meta_json_without_an_older_step_is_an_error(tmp_path):
    _save_steps(tmp_path, [1])
    _edit_meta_json(tmp_path / "1", lambda r: r["user"].__setitem__("generation", 0))
    with (
        pytest.warns(CheckpointFallbackWarning),
        pytest.raises(CheckpointError, match="no readable checkpoint .*meta does not match") as info,
    ):
        Checkpointer(tmp_path, read_only=True).restore(_state(0))
    assert "\n" not in str(info.value)


def test_format_1_steps_are_still_read(tmp_path):
    _save_steps(tmp_path, [1])

    def as_format_1(record):
        record["format"] = 1
        del record["meta_digest"]

    _edit_meta_json(tmp_path / "1", as_format_1)
    step, restored, meta = Checkpointer(tmp_path, read_only=True).restore(_state(0))
    assert step == 1 and meta["generation"] == 1
    _assert_same(restored, _state(1))


def test_restore_keeps_sys_stderr(tmp_path, monkeypatch):
    """Orbax's noise is held back by logging filters, not by swapping the process's stderr."""
    _save_steps(tmp_path, [1, 2])
    _damage_truncate_data(tmp_path / "2")
    seen = []
    original = Checkpointer._restore_step

    def spy(self, step, arrays_like):
        seen.append(sys.stderr)
        return original(self, step, arrays_like)

    monkeypatch.setattr(Checkpointer, "_restore_step", spy)
    stderr = sys.stderr
    with pytest.warns(CheckpointFallbackWarning):
        step, _, _ = Checkpointer(tmp_path).restore(_state(0))
    assert step == 1 and seen == [stderr, stderr] and sys.stderr is stderr
    assert not logging.getLogger("absl").filters or all(
        not hasattr(f, "records") for f in logging.getLogger("absl").filters
    )


def test_abstract_key_of_another_impl(tmp_path):
    key = jax.random.split(jax.random.key(3, impl="rbg"), 2)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, {"key": key}, {})
    abstract = {"key": jax.ShapeDtypeStruct(key.shape, key.dtype)}
    _, restored, _ = Checkpointer(tmp_path, read_only=True).restore(abstract)
    assert jax.random.key_impl(restored["key"]) == jax.random.key_impl(key)
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(key))


# ----------------------------------------------------------------------------------------------------------
# NumPy generators as JSON


@pytest.mark.parametrize("name", ["PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"])
def test_rng_json_round_trip(name):
    rng = np.random.Generator(getattr(np.random, name)(11))
    rng.random(7)
    text = rng_to_json(rng)
    again = rng_from_json(json.loads(json.dumps(text)))
    assert type(again.bit_generator).__name__ == name
    np.testing.assert_array_equal(again.random(5), rng.random(5))


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"bit_generator": "os.system", "state": {}}', "names bit generator 'os.system'"),
        ('{"bit_generator": "RandomState", "state": {}}', "names bit generator 'RandomState'"),
        ('{"bit_generator": "Generator"}', "names bit generator 'Generator'"),
        ('{"state": {}}', "names bit generator"),
        ('["PCG64"]', "names bit generator"),
        ("not json", "not JSON"),
        ('{"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}', "state for PCG64 is malformed"),
        ('{"bit_generator": "MT19937", "state": {"key": [1, 2], "pos": 0}}', "state for MT19937 is malformed"),
    ],
)
def test_rng_from_json_only_builds_numpy_bit_generators(text, message):
    with pytest.raises(CheckpointError, match=re.escape(message)) as info:
        rng_from_json(text)
    assert "\n" not in str(info.value)


def test_rng_to_json_refuses_a_foreign_bit_generator():
    class Mine(np.random.PCG64):
        pass

    with pytest.raises(CheckpointError, match="cannot checkpoint a generator on Mine"):
        rng_to_json(np.random.Generator(Mine(0)))
