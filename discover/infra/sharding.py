"""Scale-out: the population axis over every visible device (and every process), with `jax.sharding`.

Both searches train a whole population in one jitted call whose inputs and outputs all have the population
as their leading axis P (the update-rule trainer: ``train(keys (P,), lrs (P,), opt_args (P, ...))``; the RL
trainer: ``train(keys (P, S, 2), drift_params (P, ...))``). Members never talk to each other except through
a few population-wide reductions (the interpreter's "does any member use this op group here"), so the
population axis is the natural one to shard:

- :func:`population_mesh` builds a 1-D :class:`~jax.sharding.Mesh` with one axis ``pop`` over all devices
  (``devices="all"``) or the first N (``devices=N``; with several processes, N / process_count from each).
  Its axis type is ``Auto`` (``jax.make_mesh`` defaults to Explicit axes).
- :func:`pad_population` rounds P up to a multiple of the device count (and of the chunk size);
  :func:`shard_population` places a pytree's leading axis on the mesh, from the host copy that every process
  holds (so it also builds global arrays across processes).
- :func:`sharded` wraps a jitted trainer: pads every input (repeating the last member, so padding rows train
  a real, finite member), shards, lets every device train its own members with ``shard_map`` (the
  population-wide reductions become per-device ones: no communication during training), and returns the
  first P rows of every output as NumPy, gathered from all processes. One compilation per input shape.
- :func:`initialize_distributed` starts ``jax.distributed`` from a config section or the environment, and is
  a no-op for a single process; :func:`discover.infra.rundir.is_main_process` says which process logs and
  writes results.

Determinism: a member's numbers do not depend on the device count or the process count. XLA chooses
kernels by shape (XLA:CPU hands reductions past a size threshold to YNNPACK, which sums in another order:
a row sum of 10 values changed in the last bit from 511 rows on), so on CPU each device trains its members in
fixed-size chunks (``chunk``). Checked bitwise against a one-device process by ``tests/test_sharding.py``
(4 forced host devices; 2 processes x 2 devices over gloo CPU collectives; a whole search's hall of fame).

Multi-GPU / TPU pod: one process per host, each seeing its local devices; every process runs the same
program with the same config and seed (``distributed:`` config section, or ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``; ``auto_detect: true`` under SLURM / Open MPI / TPU pods).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from discover.infra.config import load_config

__all__ = [
    "AXIS",
    "DistributedSection",
    "Pending",
    "ProcessInfo",
    "Sharded",
    "check_devices",
    "chunk_size",
    "distributed_section",
    "initialize_distributed",
    "pad_population",
    "parse_devices",
    "population_mesh",
    "replicate",
    "shard_population",
    "sharded",
]

AXIS = "pop"


# ----------------------------------------------------------------------------------------------------------
# Meshes and placement


def check_devices(devices: str | int | None) -> str | int:
    """``devices`` normalized to "all" or a positive int, without starting JAX (configs are checked before
    ``jax.distributed.initialize``, which must come first); ValueError, one line, if it is neither."""
    if devices is None or (isinstance(devices, str) and devices.strip().lower() == "all"):
        return "all"
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices.strip())
    # bool is an int subclass: `devices: true` is a mistake, not 1 device
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1:
        raise ValueError(f"devices: expected 'all' or a positive integer, got {devices!r}")
    return int(devices)


def parse_devices(devices: str | int | None) -> int:
    """How many devices ``devices`` ("all", None, a positive int or its text) asks for; one line if invalid."""
    devices = check_devices(devices)
    available = jax.device_count()
    if devices == "all":
        return available
    if devices > available:
        raise ValueError(
            f"devices: {devices} requested but only {available} {jax.default_backend()} device(s) are visible"
        )
    processes = jax.process_count()
    if processes > 1 and devices % processes:
        raise ValueError(
            f"devices: {devices} is not a multiple of the {processes} processes (each process must hold "
            "the same number of devices)"
        )
    return devices


def _mesh_devices(count: int) -> list:
    """``count`` devices, the same number from every process, ordered by (process, id)."""
    processes = jax.process_count()
    per_process = count // processes
    chosen = []
    for p in range(processes):
        local = sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
        chosen += local[:per_process]
    return chosen


def population_mesh(devices: str | int | None = "all") -> Mesh:
    """1-D mesh, axis ``pop`` (Auto), over all visible devices or the first ``devices`` of them."""
    chosen = _mesh_devices(parse_devices(devices))
    return Mesh(np.array(chosen), (AXIS,), axis_types=(AxisType.Auto,))


# Without chunks, every device gets at least two members: XLA specializes a batch of one (a vmapped
# matrix-vector product becomes a plain one, summed in another order).
MIN_PER_DEVICE = 2
# Members per chunk on CPU meshes (see `sharded`): measured faster than one batch of 64 on the proxy tasks.
CPU_CHUNK = 8


def chunk_size(n: int, chunk: int | None) -> int | None:
    """Members per chunk for a population of n: ``chunk``, or n itself when smaller. Depends on n and
    ``chunk`` only, never on the device count, so a member's numbers do not either."""
    if chunk is None:
        return None
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of members, got {chunk}")
    return min(chunk, n)


def pad_population(n: int, mesh: Mesh, chunk: int | None = None) -> int:
    """The padded population size: a multiple of the mesh's device count (and of the chunk size), >= n;
    without chunks, >= 2 members per device."""
    if n < 1:
        raise ValueError(f"pad_population: a population needs at least one member, got {n}")
    d = mesh.devices.size
    c = chunk_size(n, chunk)
    if c is None:
        return max(-(-n // d), MIN_PER_DEVICE) * d
    return -(-n // (c * d)) * c * d


def _population_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf whole on every device of ``mesh`` (a global array with several processes)."""
    sharding = NamedSharding(mesh, P())

    def place(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


def shard_population(tree: Any, mesh: Mesh) -> Any:
    """Every leaf (leading axis divisible by the device count) placed with ``NamedSharding(mesh, P('pop'))``.

    Built from the host copy that every process holds (``jax.make_array_from_callback``), so with several
    processes the result is one global array; each process only transfers its own devices' rows."""
    sharding = _population_sharding(mesh)
    d = mesh.devices.size

    def place(x):
        if _is_key(x):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(place(np.asarray(jax.random.key_data(x))), impl=impl)
        host = np.asarray(x)
        if host.ndim == 0 or host.shape[0] % d:
            raise ValueError(
                f"shard_population: leading axis {host.shape[:1]} is not a multiple of the {d} devices "
                "(pad it with pad_population first)"
            )
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


# ----------------------------------------------------------------------------------------------------------
# The sharded trainer


def _leading_size(args: tuple) -> int:
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else None for leaf in jax.tree.leaves(args)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"sharded: every input must have the population as its leading axis, got leading sizes {sizes}"
        )
    return sizes.pop()


def _pad_rows(x: Any, size: int) -> Any:
    """Rows appended by repeating the last member (host side; typed keys stay typed)."""
    n = x.shape[0]
    if n == size:
        return x
    if _is_key(x):
        impl = jax.random.key_impl(x)
        return jax.random.wrap_key_data(_pad_rows(np.asarray(jax.random.key_data(x)), size), impl=impl)
    host = np.asarray(x)
    return np.concatenate([host, np.repeat(host[-1:], size - n, axis=0)], axis=0)


def _to_host(x: jax.Array, n: int) -> np.ndarray:
    """The first n rows of an output as NumPy (gathered from every process when needed)."""
    if _is_key(x):
        x = jax.random.key_data(x)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    host = np.asarray(x)
    return host[:n] if host.ndim else host


class Pending:
    """Outputs of a dispatched :class:`Sharded` call; ``result()`` waits and returns NumPy (first n rows)."""

    def __init__(self, out: Any, n: int):
        self._out, self._n = out, n

    def result(self) -> Any:
        return jax.tree.map(lambda x: _to_host(x, self._n), self._out)


def _resolve_chunk(chunk: int | str | None, mesh: Mesh) -> int | None:
    if chunk == "auto":
        return CPU_CHUNK if mesh.devices.flat[0].platform == "cpu" else None
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk: expected 'auto', null or a positive integer, got {chunk!r}")
    return chunk


class Sharded:
    """``train_fn`` with its population axis sharded over ``mesh``; see :func:`sharded`."""

    def __init__(self, train_fn: Callable, mesh: Mesh, chunk: int | str | None = "auto", replicated: int = 0):
        self.train_fn = train_fn
        self.mesh = mesh
        self.devices = mesh.devices.size
        self.chunk = _resolve_chunk(chunk, mesh)
        self.replicated = replicated
        spec = P(AXIS)

        def local(shared, args):
            # One device's members (its slice of the padded population), in chunks when asked; `shared`: the
            # replicated leading arguments, whole on every device.
            size = _leading_size(args)
            c = chunk_size(size, self.chunk)  # == the chunk of the global population: local size >= chunk
            if c is None or c == size:
                return train_fn(*shared, *args)
            split = jax.tree.map(lambda x: x.reshape((size // c, c) + x.shape[1:]), args)
            out = jax.lax.map(lambda chunk_args: train_fn(*shared, *chunk_args), split)
            return jax.tree.map(lambda x: x.reshape((size,) + x.shape[2:]), out)

        # Each device trains its own members: population-wide reductions inside the trainer (the
        # interpreter's "does any member use this op group here") are taken over the local members, so a
        # step needs no communication between devices.
        self._run = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), spec), out_specs=spec, check_vma=False))
        self._signatures: set = set()  # the distinct (structure, shapes, dtypes) called with: one compile each

    def padded_size(self, n: int) -> int:
        return pad_population(n, self.mesh, self.chunk)

    def _prepare(self, args: tuple) -> tuple[int, tuple]:
        shared, args = args[: self.replicated], args[self.replicated :]
        n = _leading_size(args)
        size = self.padded_size(n)
        padded = jax.tree.map(lambda x: _pad_rows(x, size), args)
        leaves, treedef = jax.tree.flatten((shared, padded))
        self._signatures.add((treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves)))
        return n, (replicate(shared, self.mesh), shard_population(padded, self.mesh))

    def dispatch(self, *args) -> Pending:
        """Starts the call and returns at once (JAX dispatch is asynchronous); ``.result()`` collects it."""
        n, placed = self._prepare(args)
        return Pending(self._run(*placed), n)

    def __call__(self, *args) -> Any:
        return self.dispatch(*args).result()

    def compiles(self) -> int:
        """Compilations so far: one per distinct input structure, shapes and dtypes it was called with."""
        return len(self._signatures)

    def lower(self, *args):
        """The lowered computation for padded, sharded ``args`` (for cost / memory analysis)."""
        return self._run.lower(*self._prepare(args)[1])


@functools.lru_cache(maxsize=64)
def sharded(train_fn: Callable, mesh: Mesh, *, chunk: int | str | None = "auto", replicated: int = 0) -> Sharded:
    """Wraps a population trainer whose inputs and outputs all have the population as their leading axis P,
    and whose members are independent (each member's outputs depend only on its own inputs; population-wide
    reductions may only decide *how* to compute, as in both searches' trainers).

    Calling the result with P members pads every input (repeating the last member) to
    :func:`pad_population`, shards the members over ``mesh``'s ``pop`` axis, and each device trains its own
    members (``shard_map``: no communication) in one jitted call; returns every output's first P rows as
    NumPy (gathered from all processes). ``.dispatch(...)`` returns without waiting. Cached: the same
    (train_fn, mesh, chunk) gives the same wrapper, so it compiles once per input shape.

    ``chunk``: each device runs its members in sequential chunks of this many (``lax.map``). XLA picks
    kernels by shape (on CPU, YNNPACK reductions for arrays past a size threshold sum in another order),
    so a member's last bits can depend on how many members share a call; with chunks they depend only on
    the chunk size, never on the device count. "auto" (default): 8 on CPU (also faster there than one big
    batch: 0.7-0.85x the time at P=64), None (one batch per device) on GPU/TPU.

    ``replicated``: the first this many arguments have no population axis (a task's data): every device gets
    them whole, unpadded and unchunked.
    """
    return Sharded(train_fn, mesh, chunk, replicated)


# ----------------------------------------------------------------------------------------------------------
# Several processes


@dataclasses.dataclass(frozen=True)
class DistributedSection:
    """Config section ``distributed:`` of a search (all null = single process unless the environment says
    otherwise: JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or a SLURM / Open MPI / TPU pod
    launch with ``auto_detect: true``)."""

    coordinator_address: str | None = dataclasses.field(
        default=None, metadata={"help": "host:port of process 0's coordinator; null = $JAX_COORDINATOR_ADDRESS"})
    num_processes: int | None = dataclasses.field(
        default=None, metadata={"min": 1, "help": "processes in the job; null = $JAX_NUM_PROCESSES or 1"})
    process_id: int | None = dataclasses.field(
        default=None, metadata={"min": 0, "help": "this process's rank; null = $JAX_PROCESS_ID"})
    auto_detect: bool = dataclasses.field(
        default=False, metadata={"help": "let JAX detect a SLURM / Open MPI / TPU-pod / k8s launch"})


@dataclasses.dataclass(frozen=True)
class _DistributedOnly:
    """An experiment file read for its ``distributed:`` section alone."""

    distributed: DistributedSection = dataclasses.field(default_factory=DistributedSection)


_DistributedOnly.__pydantic_config__ = {"extra": "ignore"}  # other keys: left to the search's own config check


def distributed_section(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> DistributedSection:
    """The validated ``distributed:`` section of an experiment YAML (with ``--set`` overrides), read without
    importing the searches: importing evosax starts JAX's backend, after which ``jax.distributed`` cannot
    start. Other keys are left to the search's own config check. Raises ConfigError (file, line, key)."""
    return load_config(_DistributedOnly, path, overrides).distributed


class ProcessInfo(NamedTuple):
    process_index: int
    process_count: int
    initialized: bool  # True when this call (or an earlier one) started jax.distributed


def _get(section: Any, name: str) -> Any:
    if section is None:
        return None
    if isinstance(section, Mapping):
        return section.get(name)
    return getattr(section, name, None)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an integer, got {raw!r}") from None


def _distributed_is_initialized() -> bool:
    return jax.distributed.is_initialized()


def initialize_distributed(section: Any = None) -> ProcessInfo:
    """Starts ``jax.distributed`` for a multi-process run; a no-op for a single process.

    ``section`` (a :class:`DistributedSection`, a mapping with the same keys, or None) wins over the
    environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``). With
    ``auto_detect`` JAX fills whatever is missing from a SLURM / Open MPI / TPU-pod / k8s launch. Must run
    before any other JAX computation. Calling it again once started is a no-op."""
    if _distributed_is_initialized():
        return ProcessInfo(jax.process_index(), jax.process_count(), True)
    address = _get(section, "coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num = _get(section, "num_processes")
    num = num if num is not None else _env_int("JAX_NUM_PROCESSES")
    pid = _get(section, "process_id")
    pid = pid if pid is not None else _env_int("JAX_PROCESS_ID")
    auto = bool(_get(section, "auto_detect"))
    if not auto and (num is None or num == 1):
        return ProcessInfo(0, 1, False)  # single process: nothing to start
    if not auto:
        missing = [f"{key} (or ${env})" for key, env, value in (
            ("coordinator_address", "JAX_COORDINATOR_ADDRESS", address), ("process_id", "JAX_PROCESS_ID", pid),
        ) if value is None]
        if missing:
            raise ValueError(f"distributed: {num} processes need {' and '.join(missing)}")
        if not 0 <= pid < num:
            raise ValueError(f"distributed: process_id must be in [0, {num}), got {pid}")
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    return ProcessInfo(jax.process_index(), jax.process_count(), True)
