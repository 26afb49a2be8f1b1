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

import concurrent.futures
import dataclasses
import functools
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import jax

from discover.infra.checkpointing import Checkpointer, CheckpointError
from discover.infra.config import config_to_dict, dump_config, flat_config
from discover.infra.rundir import RunDir, TBLogger
from discover.infra.signals import GracefulExit
from discover.shared.profile import Profile
from envs.train import BACKEND_COMPILE_EVENT

# What a profile counts as "compile": lowering to MLIR and XLA's compilation (tracing is left to the enclosing
# section: a jit traced inside another's trace reports its own, nested, duration).
COMPILE_EVENTS = (BACKEND_COMPILE_EVENT, "/jax/core/compile/jaxpr_to_mlir_module_duration")


# Keys of results.json that describe this process's run rather than what the search found: a resumed run
# differs from an uninterrupted one only in these.
RUN_FACTS = ("run_dir", "resumed_from", "wall_time_s", "xla_compiles_this_run", "peak_rss_mb")


def search_result(results: dict) -> dict:
    """``results.json`` without :data:`RUN_FACTS`: equal for equal searches, however they were run."""
    return {k: v for k, v in results.items() if k not in RUN_FACTS}


class CompileCounter:
    """Counts XLA compilations in this process (one listener, installed once); while a profiled run is on, its
    compile time (lowering and XLA) also goes to that run's profile (``sink``)."""

    count = 0
    sink: Callable[[float, bool], None] | None = None  # (seconds, is an XLA compilation)
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return

        def listener(name, duration, *_args, **_kwargs):
            if name == BACKEND_COMPILE_EVENT:
                cls.count += 1
            if name in COMPILE_EVENTS and cls.sink is not None:
                cls.sink(duration, name == BACKEND_COMPILE_EVENT)

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
    profile: dict | None = None  # with run(profile=...): where the wall time went (also profile.json)

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

    # Optional: ``attach_profile(profile)``, called before ``prepare`` when the run is profiled, lets the
    # search time its own sections (training, mutation...). ``outputs_in_background = True``: ``log`` and the
    # checkpoint write of ``save``'s result may run on a worker thread while the next step computes (``log``
    # must only read the state and metrics it is given, which later steps must not change in place).


class _Outputs:
    """What each step writes (its log and progress line, then its checkpoint when one is due), in step order:
    inline, or on one worker thread while the next step computes. One step's outputs at a time; an error
    surfaces at the next ``flush`` or ``wait``."""

    def __init__(self, background: bool, profile: Profile) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "discover-outputs") if background else None
        self._pending: concurrent.futures.Future | None = None
        self._parts: list[tuple[str, Callable[[], Any]]] = []
        self._profile = profile

    def add(self, name: str, job: Callable[[], Any]) -> None:
        """Inline: runs ``job`` now, timed as section ``name``; in the background: at the next ``flush``."""
        if self._pool is None:
            with self._profile.section(name):
                job()
        else:
            self._parts.append((name, job))

    def flush(self) -> None:
        """Hands this step's outputs to the worker (after the previous step's are written)."""
        if self._pool is None or not self._parts:
            return
        parts, self._parts = self._parts, []
        with self._profile.section("outputs_wait"):
            self.wait()
        self._pending = self._pool.submit(lambda: [self._profile.overlapped(name, job) for name, job in parts])

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Waits for the last step's outputs (their error, only possible when the run already failed, is
        dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class NothingToResume(CheckpointError):
    """``discover resume`` on a run directory that has no checkpoint."""


def run(search: Search, config: Any, run_dir: RunDir, *, resume: bool = False,
        progress: Progress | None = None, profile: Profile | None = None) -> Summary:
    """Runs ``search`` (or continues it from the newest readable checkpoint of ``run_dir``) and returns its
    summary; ``summary.interrupted`` after SIGINT/SIGTERM (checkpoint saved, nothing else written). With an
    enabled ``profile`` the wall time is split into sections (``summary.profile`` and ``profile.json``)."""
    started = time.time()
    progress = progress or NullProgress()
    profile = profile or Profile(enabled=False)
    CompileCounter.install()
    compiles_before = CompileCounter.count
    checkpoint = config.checkpoint
    checkpointer = Checkpointer(run_dir.checkpoint_dir, max_to_keep=checkpoint.max_to_keep)
    if resume and checkpointer.latest_step() is None:
        checkpointer.close()
        raise NothingToResume(f"{run_dir.path}: no checkpoint to resume from (the run stopped before its first "
                              f"checkpoint); start it again with `discover search {run_dir.config_path}`")
    progress.phase(f"{search.kind} {config.name}: preparing (references, compilation)")
    if profile.enabled:
        CompileCounter.sink = profile.compiled
        if hasattr(search, "attach_profile"):
            search.attach_profile(profile)
    try:
        return _run(search, config, run_dir, resume, progress, profile, checkpointer, started, compiles_before)
    finally:
        CompileCounter.sink = None


def _log_job(search: Search, tb: TBLogger, state: Any, metrics: dict, seconds: float, ctx: Any,
             progress: Progress, done: int, total: int) -> Callable[[], None]:
    return lambda: progress.advance(done, total, search.log(tb, state, metrics, seconds, ctx))


def _run(search: Search, config: Any, run_dir: RunDir, resume: bool, progress: Progress, profile: Profile,
         checkpointer: Checkpointer, started: float, compiles_before: int) -> Summary:
    section, checkpoint = profile.section, config.checkpoint
    with section("prepare"):
        ctx = search.prepare(config, run_dir, progress)
    state, resumed_from = None, None
    if resume:
        with section("checkpoint"):
            step, arrays, meta = checkpointer.restore(search.restore_like(ctx))
            state = search.restore(arrays, meta, ctx)
        resumed_from = search.position(state)
        progress.note(f"resuming from checkpoint {step} in {run_dir.checkpoint_dir} (step {resumed_from} of "
                      f"{search.total(ctx)} done)")
    tb = TBLogger(run_dir, purge_step=None if resumed_from is None else resumed_from + 1)
    total = search.total(ctx)
    # Several processes keep them inline: orbax coordinates their saves, which stay on the main thread.
    outputs = _Outputs(getattr(search, "outputs_in_background", False) and jax.process_count() == 1, profile)
    try:
        if state is None:
            with section("tensorboard"):
                tb.text("config", "```yaml\n" + dump_config(config) + "```", 0)
            with section("init"):
                state = search.init(ctx)
            with section("tensorboard"):
                search.start_log(tb, state, ctx)
            with section("checkpoint"):
                checkpointer.save(0, *search.save(state))
        progress.advance(search.position(state), total, f"{search.kind} {config.name}")
        interrupted = False
        with GracefulExit(notice=True) as stop:
            while search.position(state) < total:
                with profile.step(search.position(state) + 1):
                    t0 = time.time()
                    state, metrics = search.step(state, ctx)
                    done = search.position(state)
                    outputs.add("tensorboard", _log_job(search, tb, state, metrics, time.time() - t0, ctx, progress,
                                                        done, total))
                    stopping = stop.requested  # read once (after an inline log): a stop is always checkpointed
                    if done % checkpoint.every == 0 or done == total or stopping:
                        with section("checkpoint"):  # now: the state's RNG goes on with the next step
                            saved = search.save(state)
                        outputs.add("checkpoint", functools.partial(checkpointer.save, done, *saved))
                    outputs.flush()
                if stopping and done < total:
                    interrupted = True
                    break
        with section("outputs_wait"):
            outputs.wait()
        with section("checkpoint"):
            checkpointer.wait()
        if interrupted:
            summary = Summary(kind=search.kind, name=config.name, run_dir=str(run_dir.path),
                              generations_done=search.position(state), generations=total, interrupted=True)
        else:
            with section("finish"):
                summary = search.finish(state, ctx, tb)
            with section("tensorboard"):
                tb.hparams(flat_config(config), summary.hparam_metrics())
    finally:
        with section("outputs_wait"):
            outputs.close()
        with section("checkpoint"):
            checkpointer.close()
        with section("tensorboard"):
            tb.close()
    summary.resumed_from = resumed_from
    summary.wall_time_s = time.time() - started
    if profile.enabled:
        summary.profile = profile.report(summary.wall_time_s)
        run_dir.write_json("profile.json", summary.profile)
        summary.files = sorted({*summary.files, "profile.json"})
    if not interrupted:
        extra = {"xla_compiles_this_run": CompileCounter.count - compiles_before,
                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
        summary.files = sorted({*summary.files, "results.json"})
        recorded = {k: v for k, v in summary.to_json().items() if k != "profile"}  # profile.json has it
        run_dir.write_json("results.json", {"config": config_to_dict(config), **recorded, **extra})
    return summary
