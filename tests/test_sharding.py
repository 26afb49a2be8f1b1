"""Sharding the population over devices and processes gives bitwise the numbers of one device.

The reference runs in this (one-device) pytest process. The sharded runs need a fresh JAX, so they run as
subprocesses of this very file (``python tests/test_sharding.py devices|process ...``):

* ``devices``: one process with ``--xla_force_host_platform_device_count=4``; the update-rule trainer
  (interpreter, 30 programs padded to 32, in chunks of 8, and in one batch per device) and the PPO
  population trainer (6 members, one chunk of 6 per device) over 4 devices;
* ``search``: the tiny update-rule search (``experiments/search_tiny.yaml``, shortened) on 4 devices, whose
  hall of fame must be byte-identical to the same search on one device;
* ``process``: two processes x 2 devices on 127.0.0.1 (``jax.distributed`` + gloo CPU collectives): the same
  update-rule population over the 4 global devices, and an orbax checkpoint saved and restored by both.

Floats are compared as bit patterns (0 ulp).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # when run as a worker script
    sys.path.insert(0, str(ROOT))

N_PROGRAMS = 30  # padded to 32: 4 chunks of 8 on one device, 1 per device on 4
N_MEMBERS_RL = 6  # padded to 8
STEPS = 10
TASK = "noisy_quadratic_proxy"
WORKER_TIMEOUT_S = 300


# ----------------------------------------------------------------------------------------------------------
# What is trained (shared by the reference and the workers)


def _programs(n: int):
    from discover.language.mutation import mutate
    from search_spaces.update_rules import UpdateRuleSpace, seeds

    space = UpdateRuleSpace()
    base = [p for name, p in seeds().items() if name != "sophia"]  # sophia reads h
    rng = np.random.default_rng(0)
    out = list(base[:n])
    while len(out) < n:  # mutants: many different ops at every statement
        out.append(mutate(out[len(out) % len(base)], rng, space)[0])
    return out


def _update_rule_case():
    import jax

    from discover.language import interpreter
    from envs.tasks import get_task
    from envs.train import make_population_trainer, task_layout
    from search_spaces.update_rules import UpdateRuleSpace

    space = UpdateRuleSpace()
    task = dataclasses.replace(get_task(TASK), num_steps=STEPS)
    layout = task_layout(task)
    train = make_population_trainer(
        task,
        interpreter.population_update_fn(layout.segments),
        interpreter.population_init_fn(space.max_len, space.n_state),
    )
    enc = interpreter.encode(_programs(N_PROGRAMS), space.max_len, space.n_state)
    keys = jax.random.split(jax.random.key(0), N_PROGRAMS)
    lrs = np.geomspace(0.3, 3.0, N_PROGRAMS).astype(np.float32) * np.float32(task.lr)
    return train, (keys, lrs, enc)


def _rl_case():
    import jax

    from envs.ppo import PPOConfig, make_population_train
    from search_spaces.drift import DriftConfig, make_drift

    tiny = PPOConfig(
        num_envs=2, num_steps=16, total_timesteps=32 * 6, update_epochs=2, num_minibatches=2, hidden_size=16
    )
    drift = make_drift(DriftConfig(family="talpo"))
    train = make_population_train("CartPole-v1", tiny, drift.apply)
    params = jax.vmap(drift.init)(jax.random.split(jax.random.PRNGKey(1), N_MEMBERS_RL))
    keys = jax.random.split(jax.random.PRNGKey(2), N_MEMBERS_RL).reshape(N_MEMBERS_RL, 1, -1)
    return train, (keys, params)


# The tiny update-rule search, shortened; `devices` is added per run.
SEARCH_OVERRIDES = ["evolution.generations=4", "refine.top_k=0"]


def _tiny_search(devices: str, root: pathlib.Path) -> dict[str, str]:
    """Runs experiments/search_tiny.yaml on ``devices``; returns its hall of fame and best program (text)."""
    from discover.infra.rundir import new_run_dir
    from discover.searches import update_rules as search

    config = search.load_search_config(
        ROOT / "experiments" / "search_tiny.yaml",
        [*SEARCH_OVERRIDES, f"devices={devices}", f"fitness.reference_cache={root / 'baselines.json'}"],
    )
    run_dir = new_run_dir(config, root / f"devices-{devices}")
    summary = search.run_search(config, run_dir)
    assert summary["generations_done"] == 4
    return {name: run_dir.file(name).read_text() for name in ("hall_of_fame.json", "best.py")}


def _flat(prefix: str, out: dict) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": np.asarray(v) for k, v in out.items()}


def _key_data_of_seed(seed: int) -> np.ndarray:
    import jax

    return np.asarray(jax.random.key_data(jax.random.key(seed)))


def _assert_bitwise_equal(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), what
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape and g.dtype == w.dtype, f"{what} {name}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        if w.dtype.kind == "f":
            bits = np.dtype(f"u{w.dtype.itemsize}")
            differ = np.flatnonzero(g.view(bits).ravel() != w.view(bits).ravel())
            assert differ.size == 0, f"{what} {name}: {differ.size} values differ, first {g.ravel()[differ[:3]]} " \
                                     f"vs {w.ravel()[differ[:3]]}"
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{what} {name}")


# ----------------------------------------------------------------------------------------------------------
# Workers (subprocesses)


def _worker_devices(out: str) -> None:
    import jax

    from discover.infra import sharding

    assert jax.device_count() == 4, jax.devices()
    mesh = sharding.population_mesh("all")
    train, args = _update_rule_case()
    results = _flat("update_rule", sharding.sharded(train, mesh)(*args))
    rl_train, rl_args = _rl_case()
    results |= _flat("rl", sharding.sharded(rl_train, mesh)(*rl_args))
    # What each device holds: the 32 padded members, 8 per device.
    placed = sharding.shard_population(np.arange(32), mesh)
    results["shard_rows"] = np.array([s.data.shape[0] for s in placed.addressable_shards])
    np.savez(out, **results)


def _worker_search(out: str) -> None:
    import jax

    assert jax.device_count() == 4, jax.devices()
    texts = _tiny_search("all", pathlib.Path(out).parent)
    pathlib.Path(out).write_text(json.dumps(texts))


def _worker_process(out: str, port: int, process_id: int) -> None:
    from discover.infra import rundir, sharding

    info = sharding.initialize_distributed(
        {"coordinator_address": f"127.0.0.1:{port}", "num_processes": 2, "process_id": process_id}
    )
    import jax


    assert info.process_count == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    mesh = sharding.population_mesh("all")
    train, args = _update_rule_case()
    results = _flat("update_rule", sharding.sharded(train, mesh)(*args))
    results["primary"] = np.asarray([rundir.is_main_process()])
    np.savez(out, **results)
    # A search checkpoint written and read back by both processes: NumPy arrays (the update-rule search's
    # state), process-local jax.Arrays and a typed key (the RL search's ES state), JSON meta. Each process
    # offers its own numbers; process 0's are written, so both must read process 0's back. A failure is
    # recorded (the test shows it) rather than raised, so the training comparison above is still checked.

    ckpt_out = pathlib.Path(out).with_suffix(".ckpt.npz")
    try:
        np.savez(ckpt_out, **_checkpoint_round_trip(pathlib.Path(out).parent / "ckpt", process_id, results))
    except Exception as exc:  # noqa: BLE001 - reported by the test, in one line
        pathlib.Path(out).with_suffix(".ckpt.err").write_text(f"{type(exc).__name__}: {exc}")


def _checkpoint_round_trip(directory: pathlib.Path, process_id: int, results: dict) -> dict:
    import jax
    import jax.numpy as jnp

    from discover.infra.checkpointing import Checkpointer

    state = {
        "fitness": results["update_rule/val_loss"].astype(np.float64) + process_id,
        "step": np.arange(3),
        "es_mean": jnp.arange(4, dtype=jnp.float32) + process_id,
        "key": jax.random.key(process_id),
    }
    like = {"fitness": np.zeros(N_PROGRAMS), "step": np.zeros(3, np.int64), "es_mean": jnp.zeros(4),
            "key": jax.random.key(5)}
    with Checkpointer(directory, max_to_keep=2) as ckpt:
        ckpt.save(1, state, {"generation": 1, "writer": process_id}, force=True)
        ckpt.wait()
        step, back, meta = ckpt.restore(like)
    assert isinstance(back["es_mean"], jax.Array) and back["es_mean"].is_fully_addressable
    return {
        "fitness": back["fitness"],
        "es_mean": np.asarray(back["es_mean"]),
        "key": np.asarray(jax.random.key_data(back["key"])),
        "step": np.asarray([step]),
        "writer": np.asarray([meta["writer"]]),
    }


def _worker_env(devices: int) -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)
    return env


class _Workers:
    """Worker subprocesses started together (they overlap with the reference computed in this process)."""

    def __init__(self, commands: list[list[str]], env: dict):
        self.commands = commands
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, *cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
            )
            for cmd in commands
        ]

    def wait(self) -> None:
        """Waits for all; on a failure or a timeout kills them all and shows the failing one's output."""
        outputs = []
        try:
            for p in self.procs:
                outputs.append(p.communicate(timeout=WORKER_TIMEOUT_S)[0])
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"sharding workers {self.commands} timed out after {WORKER_TIMEOUT_S}s")
        failed = [(cmd, p.returncode, o) for cmd, p, o in zip(self.commands, self.procs, outputs) if p.returncode]
        if failed:
            cmd, rc, output = failed[0]
            pytest.fail(f"worker {cmd} exited with {rc}:\n{output[-4000:]}")

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def workers(request, tmp_path_factory):
    """Starts the workers of the selected tests at once (they overlap); yields their output files."""
    selected = {item.name for item in request.session.items}
    root = tmp_path_factory.mktemp("sharding")

    def start(test_names: str | tuple[str, ...], commands: list[list[str]], devices: int) -> _Workers:
        wanted = {test_names} if isinstance(test_names, str) else set(test_names)
        return _Workers(commands if wanted & selected else [], _worker_env(devices))

    devices = start("test_four_devices_match_one_device_bitwise", [["devices", str(root / "devices.npz")]], 4)
    port = _free_port()
    processes = start(
        ("test_two_processes_match_one_process_bitwise", "test_checkpoints_work_across_processes"),
        [["process", str(root / f"process{i}.npz"), str(port), str(i)] for i in range(2)], 2,
    )
    search = start("test_a_search_on_four_devices_finds_the_same_hall_of_fame",
                   [["search", str(root / "search.json")]], 4)
    yield {"devices": (devices, root / "devices.npz"),
           "processes": (processes, [root / f"process{i}.npz" for i in range(2)]),
           "search": (search, root / "search.json"), "root": root}
    for w in (devices, processes, search):
        w.kill()


@pytest.fixture(scope="module")
def one_device(workers):
    """The reference: a one-device mesh in this process (computed while the workers run)."""
    from discover.infra import sharding

    mesh = sharding.population_mesh(1)
    train, args = _update_rule_case()
    results = _flat("update_rule", sharding.sharded(train, mesh)(*args))
    rl_train, rl_args = _rl_case()
    results |= _flat("rl", sharding.sharded(rl_train, mesh)(*rl_args))
    return results


def test_the_reference_trained_real_distinct_members(one_device):
    results = one_device
    val = results["update_rule/val_loss"]
    assert val.shape == (N_PROGRAMS,) and np.isfinite(val).sum() >= N_PROGRAMS // 2  # real training, not NaNs
    assert len(np.unique(val)) > N_PROGRAMS // 2  # the programs differ
    assert results["rl/final_return"].shape == (N_MEMBERS_RL, 1) and np.isfinite(results["rl/final_return"]).all()


def test_four_devices_match_one_device_bitwise(one_device, workers):
    reference = one_device
    procs, out = workers["devices"]
    procs.wait()
    got = dict(np.load(out))
    np.testing.assert_array_equal(got.pop("shard_rows"), [8, 8, 8, 8])  # really spread over 4 devices
    _assert_bitwise_equal(got, reference, "4 devices vs 1 device:")


@pytest.mark.slow
def test_two_processes_match_one_process_bitwise(one_device, workers):
    reference = one_device
    procs, outs = workers["processes"]
    procs.wait()
    got = [dict(np.load(o)) for o in outs]
    want = {k: v for k, v in reference.items() if k.startswith("update_rule/")}
    for i, g in enumerate(got):
        assert bool(g.pop("primary")[0]) == (i == 0)
        _assert_bitwise_equal(g, want, f"process {i} of 2 (2 devices each) vs 1 process:")


@pytest.mark.slow
def test_checkpoints_work_across_processes(one_device, workers):
    """Both processes save (NumPy state, process-local jax.Arrays, a typed key) and read back process 0's."""
    procs, outs = workers["processes"]
    procs.wait()
    errors = [o.with_suffix(".ckpt.err") for o in outs]
    problems = [f"process {i}: {e.read_text()[:600]}" for i, e in enumerate(errors) if e.is_file()]
    assert not problems, "checkpoint across processes failed: " + " | ".join(problems)
    fitness = one_device["update_rule/val_loss"].astype(np.float64)
    for o in outs:
        g = dict(np.load(o.with_suffix(".ckpt.npz")))
        assert int(g["writer"][0]) == 0 and int(g["step"][0]) == 1
        np.testing.assert_array_equal(g["fitness"], fitness)
        np.testing.assert_array_equal(g["es_mean"], np.arange(4, dtype=np.float32))
        np.testing.assert_array_equal(g["key"], _key_data_of_seed(0))


@pytest.fixture(scope="module")
def one_device_search(workers):
    """The tiny search on one device in this process: the reference for the sharded searches."""
    return _tiny_search("1", workers["root"])


@pytest.mark.slow
def test_a_search_on_four_devices_finds_the_same_hall_of_fame(workers, one_device_search):
    """The update-rule search with ``devices: all`` on 4 devices vs ``devices: 1``: byte-identical outputs."""
    procs, out = workers["search"]
    one = one_device_search
    procs.wait()
    four = json.loads(out.read_text())
    assert len(json.loads(one["hall_of_fame.json"])["entries"]) >= 2
    assert four["hall_of_fame.json"] == one["hall_of_fame.json"]
    assert four["best.py"] == one["best.py"]


def _cli_processes(args_of: list[list[str]], env_of: list[dict]) -> list[str]:
    """Runs ``python -m discover.cli ARGS`` once per process, all at once; their outputs (each must exit 0)."""
    procs = [subprocess.Popen([sys.executable, "-m", "discover.cli", *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for args, env in zip(args_of, env_of)]
    try:
        outputs = [p.communicate(timeout=WORKER_TIMEOUT_S)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"discover {args_of[0][:2]} in {len(procs)} processes timed out after {WORKER_TIMEOUT_S}s")
    for i, (p, o) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{o[-3000:]}"
    return outputs


@pytest.mark.slow
def test_the_cli_search_and_resume_in_two_processes(workers, one_device_search):
    """``discover search`` as two processes (2 devices each, gloo on 127.0.0.1): one run directory, written
    by process 0 only, with the one-device hall of fame; then ``discover resume`` in two processes, from an
    earlier checkpoint, with a new coordinator port and the ranks from $JAX_PROCESS_ID, ends the same."""
    root = workers["root"] / "cli"
    config = ROOT / "experiments" / "search_tiny.yaml"
    common = [*(f"--set={o}" for o in SEARCH_OVERRIDES), f"--set=fitness.reference_cache={workers['root'] / 'baselines.json'}"]
    port = _free_port()
    outputs = _cli_processes(
        [["search", str(config), *common, f"--set=distributed.coordinator_address=127.0.0.1:{port}",
          "--set=distributed.num_processes=2", f"--set=distributed.process_id={i}", "--out", str(root)]
         for i in range(2)],
        [_worker_env(2)] * 2,
    )
    assert "best fitness" in outputs[0] and "best fitness" not in outputs[1]
    assert "process 1 of 2: done" in outputs[1]
    (run,) = root.iterdir()  # both processes agreed on one run directory
    files = ("hall_of_fame.json", "best.py")
    for name in files:
        assert (run / name).read_text() == one_device_search[name], name
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1  # only process 0 logs
    recorded = (run / "config.yaml").read_text()
    assert "num_processes: 2" in recorded and "process_id: null" in recorded  # each process gives its own rank

    # Back to generation 2: drop the newest checkpoint and the results, then resume as two processes.
    steps = sorted(int(d.name) for d in (run / "ckpt").iterdir() if d.name.isdigit())
    assert steps[-1] == 4 and 2 in steps, steps
    shutil.rmtree(run / "ckpt" / "4")
    for name in (*files, "results.json"):
        (run / name).unlink()
    port = _free_port()
    outputs = _cli_processes(
        [["resume", str(run), f"--set=distributed.coordinator_address=127.0.0.1:{port}"] for _ in range(2)],
        [_worker_env(2) | {"JAX_PROCESS_ID": str(i)} for i in range(2)],
    )
    assert "process 1 of 2: done" in outputs[1]
    for name in files:
        assert (run / name).read_text() == one_device_search[name], name


def test_resume_refuses_to_change_the_search(tmp_path):
    from typer.testing import CliRunner

    from discover.cli import app

    result = CliRunner().invoke(app, ["resume", str(tmp_path), "--set", "evolution.generations=9"])
    assert result.exit_code == 2
    assert "--set evolution.generations: only devices and distributed.* can change on resume" in result.output


# -- small pieces ------------------------------------------------------------------------------------------


def test_pad_population_and_mesh():
    import jax
    from jax.sharding import AxisType

    from discover.infra import sharding

    mesh = sharding.population_mesh("all")
    assert mesh.axis_names == ("pop",) and mesh.axis_types == (AxisType.Auto,)
    assert mesh.devices.size == jax.device_count()
    one = sharding.population_mesh(1)
    assert [sharding.pad_population(n, one) for n in (1, 2, 6, 7)] == [2, 2, 6, 7]  # >= 2 per device
    assert [sharding.pad_population(n, one, chunk=8) for n in (1, 6, 8, 9, 30)] == [1, 6, 8, 16, 32]
    assert [sharding.chunk_size(n, 8) for n in (1, 6, 30)] == [1, 6, 8] and sharding.chunk_size(5, None) is None
    assert sharding.parse_devices("all") == sharding.parse_devices(None) == jax.device_count()
    assert sharding.parse_devices("1") == sharding.parse_devices(1) == 1
    with pytest.raises(ValueError, match="pad_population"):
        sharding.pad_population(0, one)


@pytest.mark.parametrize("bad", [0, -2, True, "two", 1.5, 10_000])
def test_bad_devices_value_is_one_clear_line(bad):
    from discover.infra import sharding

    with pytest.raises(ValueError, match=r"^devices: ") as err:
        sharding.population_mesh(bad)
    assert "\n" not in str(err.value)


def test_sharded_rejects_inputs_without_a_common_population_axis():
    from discover.infra import sharding

    f = sharding.sharded(lambda a, b: {"s": a + b[:, 0]}, sharding.population_mesh(1))
    np.testing.assert_array_equal(f(np.arange(3.0), np.ones((3, 2)))["s"], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="leading axis"):
        f(np.arange(3.0), np.ones((4, 2)))


def test_chunked_and_padded_members_match_their_own_runs():
    """The wrapper trains each member as the bare trainer does, in the same order; a member's numbers depend
    on the chunk size only: bitwise the same in a population of 5 chunks as in a population of one chunk."""
    import jax.numpy as jnp

    from discover.infra import sharding

    def train(x, w):  # a tiny 'trainer' with a population-wide reduction, like the interpreter's conds
        used = (jnp.sum(w) > 0).astype(x.dtype)  # steers nothing here, but is taken over the call's members
        return {"y": jnp.einsum("pij,pjk->pik", x, w).sum(axis=-1) * used}

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 16, 40)).astype(np.float32)
    w = np.abs(rng.normal(size=(20, 40, 12))).astype(np.float32)
    f = sharding.sharded(train, sharding.population_mesh(1), chunk=4)
    whole = f(x, w)["y"]
    assert whole.shape == (20, 16)
    np.testing.assert_allclose(whole, np.asarray(train(x, w)["y"]), rtol=1e-5)  # same members, same order
    for lo in range(0, 20, 4):
        np.testing.assert_array_equal(f(x[lo:lo + 4], w[lo:lo + 4])["y"], whole[lo:lo + 4])
    assert f.compiles() == 2  # populations of 20 (5 chunks) and of 4 (1 chunk)


def test_padding_repeats_the_last_member():
    import jax

    from discover.infra import sharding

    keys = jax.random.split(jax.random.key(0), 3)
    padded = sharding._pad_rows(keys, 5)
    data = np.asarray(jax.random.key_data(padded))
    np.testing.assert_array_equal(data[3], data[2])
    np.testing.assert_array_equal(data[4], data[2])
    np.testing.assert_array_equal(sharding._pad_rows(np.arange(3), 4), [0, 1, 2, 2])


def test_initialize_distributed_single_process_is_a_no_op(monkeypatch):
    from discover.infra import rundir, sharding

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert sharding.initialize_distributed(None) == sharding.ProcessInfo(0, 1, False)
    assert sharding.initialize_distributed(sharding.DistributedSection(num_processes=1)).initialized is False
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert sharding.initialize_distributed({}).process_count == 1
    assert rundir.is_main_process()


def test_initialize_distributed_names_what_is_missing(monkeypatch):
    from discover.infra import sharding

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match=r"coordinator_address \(or \$JAX_COORDINATOR_ADDRESS\) and process_id"):
        sharding.initialize_distributed(None)
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\), got 5"):
        sharding.initialize_distributed({"coordinator_address": "127.0.0.1:1", "process_id": 5})
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES: expected an integer, got 'two'"):
        sharding.initialize_distributed(None)


def test_distributed_section_is_read_from_the_experiment_file_and_overrides(tmp_path):
    from discover.infra.config import ConfigError
    from discover.infra.sharding import DistributedSection, distributed_section

    path = tmp_path / "x.yaml"
    path.write_text("kind: update_rule\nevolution: {population: 8}\ndistributed:\n  num_processes: 2\n")
    assert distributed_section(path, ["distributed.process_id=1", "evolution.batch=4"]) == DistributedSection(
        num_processes=2, process_id=1)
    assert distributed_section(None) == DistributedSection()
    path.write_text("kind: update_rule\ndistributed:\n  num_processes: two\n")
    with pytest.raises(ConfigError, match=r"x.yaml:3: distributed.num_processes: expected int, got 'two'"):
        distributed_section(path)
    with pytest.raises(ConfigError, match=r"--set distributed.bogus: unknown key"):
        distributed_section(None, ["distributed.bogus=1"])


# ----------------------------------------------------------------------------------------------------------

if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "devices":
        _worker_devices(sys.argv[2])
    elif mode == "search":
        _worker_search(sys.argv[2])
    elif mode == "process":
        _worker_process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown worker mode {mode!r}")
    print(json.dumps({"worker": mode, "ok": True}))
