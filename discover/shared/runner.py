"""One runner for every kind of search.

A search implements the small :class:`Search` protocol (in the spirit of evosax's ``init / ask / tell``):
``prepare`` builds what a run needs once (references, trainers, caches), ``init`` the first state, ``step`` one
generation, ``finish`` the held-out work and the files, returning a typed :class:`Summary`. The runner owns the
rest, once: resume from the newest good checkpoint, checkpoint cadence, SIGINT/SIGTERM (checkpoint, then stop),
the TensorBoard writer's life, ``results.json``, compile counting, and progress through a callback (the engine
never imports rich; the CLI supplies a :class:`Progress`).

A search's steps are numbered 1..``total``; a state's ``position`` is the number of steps it has completed.
Checkpoint ``k`` holds the state after step ``k`` (``0``: the initial state), so a killed run resumes from its
newest checkpoint to the same result as a run never stopped.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import jax

from discover.infra.checkpointing import Checkpointer, CheckpointError
from discover.infra.config import config_to_dict, dump_config, flat_config
from discover.infra.rundir import RunDir, TBLogger
from discover.infra.signals import GracefulExit

# The name of JAX's backend-compile event (jax.monitoring's public listener API; the constant itself is private).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


# Keys of results.json that describe this process's run rather than what the search found: a resumed run
# differs from an uninterrupted one only in these.
RUN_FACTS = ("run_dir", "resumed_from", "wall_time_s", "xla_compiles_this_run", "peak_rss_mb")


def search_result(results: dict) -> dict:
    """``results.json`` without :data:`RUN_FACTS`: equal for equal searches, however they were run."""
    return {k: v for k, v in results.items() if k not in RUN_FACTS}


class CompileCounter:
    """Counts XLA compilations in this process (one listener, installed once)."""

    count = 0
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return

        def listener(name, *_args, **_kwargs):
            if name == BACKEND_COMPILE_EVENT:
                cls.count += 1

        jax.monitoring.register_event_duration_secs_listener(listener)
        cls._installed = True


@dataclasses.dataclass
class Summary:
    """What a run reports. Subclasses add the search's figures and say them in :meth:`headline`."""

    kind: str
    name: str
    run_dir: str
    generations_done: int
    generations: int
    interrupted: bool = False
    resumed_from: int | None = None
    wall_time_s: float = 0.0
    files: list[str] = dataclasses.field(default_factory=list)  # written into the run directory, existing

    def headline(self) -> list[str]:
        """Lines for the CLI's result block (plain text)."""
        return []

    def hparam_metrics(self) -> dict[str, float]:
        """The figures TensorBoard's hparams tab shows next to the config."""
        return {}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Progress(Protocol):
    """What the runner tells its caller while it works (the CLI draws it with rich)."""

    def phase(self, description: str) -> None: ...

    def advance(self, done: int, total: int, description: str) -> None: ...

    def note(self, message: str) -> None: ...


class NullProgress:
    def phase(self, description: str) -> None:
        pass

    def advance(self, done: int, total: int, description: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass


class Search(Protocol):
    """One kind of search. ``State`` is anything :meth:`save` can turn into (arrays, JSON meta)."""

    kind: ClassVar[str]
    config_type: ClassVar[type]

    def load_config(self, path: Any, overrides: Sequence[str]) -> Any: ...

    def prepare(self, config: Any, run_dir: RunDir, progress: Progress) -> Any: ...

    def init(self, ctx: Any) -> Any: ...

    def position(self, state: Any) -> int: ...

    def total(self, ctx: Any) -> int: ...

    def step(self, state: Any, ctx: Any) -> tuple[Any, dict]: ...

    def log(self, tb: TBLogger, state: Any, metrics: dict, seconds: float, ctx: Any) -> str: ...

    def save(self, state: Any) -> tuple[Any, dict]: ...

    def restore_like(self, ctx: Any) -> Any: ...

    def restore(self, arrays: Any, meta: dict, ctx: Any) -> Any: ...

    def start_log(self, tb: TBLogger, state: Any, ctx: Any) -> None: ...

    def finish(self, state: Any, ctx: Any, tb: TBLogger) -> Summary: ...


class NothingToResume(CheckpointError):
    """``discover resume`` on a run directory that has no checkpoint."""


def run(search: Search, config: Any, run_dir: RunDir, *, resume: bool = False,
        progress: Progress | None = None) -> Summary:
    """Runs ``search`` (or continues it from the newest readable checkpoint of ``run_dir``) and returns its
    summary; ``summary.interrupted`` after SIGINT/SIGTERM (checkpoint saved, nothing else written)."""
    started = time.time()
    progress = progress or NullProgress()
    CompileCounter.install()
    compiles_before = CompileCounter.count
    checkpoint = config.checkpoint
    checkpointer = Checkpointer(run_dir.checkpoint_dir, max_to_keep=checkpoint.max_to_keep)
    if resume and checkpointer.latest_step() is None:
        checkpointer.close()
        raise NothingToResume(f"{run_dir.path}: no checkpoint to resume from (the run stopped before its first "
                              f"checkpoint); start it again with `discover search {run_dir.config_path}`")
    progress.phase(f"{search.kind} {config.name}: preparing (references, compilation)")
    ctx = search.prepare(config, run_dir, progress)
    state, resumed_from = None, None
    if resume:
        step, arrays, meta = checkpointer.restore(search.restore_like(ctx))
        state = search.restore(arrays, meta, ctx)
        resumed_from = search.position(state)
        progress.note(f"resuming from checkpoint {step} in {run_dir.checkpoint_dir} (step {resumed_from} of "
                      f"{search.total(ctx)} done)")
    tb = TBLogger(run_dir, purge_step=None if resumed_from is None else resumed_from + 1)
    total = search.total(ctx)
    try:
        if state is None:
            tb.text("config", "```yaml\n" + dump_config(config) + "```", 0)
            state = search.init(ctx)
            search.start_log(tb, state, ctx)
            checkpointer.save(0, *search.save(state))
        progress.advance(search.position(state), total, f"{search.kind} {config.name}")
        interrupted = False
        with GracefulExit(notice=True) as stop:
            while search.position(state) < total:
                t0 = time.time()
                state, metrics = search.step(state, ctx)
                done = search.position(state)
                line = search.log(tb, state, metrics, time.time() - t0, ctx)
                progress.advance(done, total, line)
                if done % checkpoint.every == 0 or done == total or stop.requested:
                    checkpointer.save(done, *search.save(state))
                if stop.requested and done < total:
                    interrupted = True
                    break
        checkpointer.wait()
        if interrupted:
            summary = Summary(kind=search.kind, name=config.name, run_dir=str(run_dir.path),
                              generations_done=search.position(state), generations=total, interrupted=True)
        else:
            summary = search.finish(state, ctx, tb)
            tb.hparams(flat_config(config), summary.hparam_metrics())
    finally:
        checkpointer.close()
        tb.close()
    summary.resumed_from = resumed_from
    summary.wall_time_s = time.time() - started
    if not interrupted:
        extra = {"xla_compiles_this_run": CompileCounter.count - compiles_before,
                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
        summary.files = sorted({*summary.files, "results.json"})
        run_dir.write_json("results.json", {"config": config_to_dict(config), **summary.to_json(), **extra})
    return summary
