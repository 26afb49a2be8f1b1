"""Where a run's wall time goes (``discover search --profile``): named sections timed on a plain object.

Sections nest; a section's seconds exclude the sections opened inside it, so every second lands in exactly one
section or in the remainder (``other``), and the shares add up to 1. The runner marks each step with
:meth:`Profile.step`, which keeps a per-step breakdown beside the totals of the whole run. A disabled profile
hands out one shared no-op context, so instrumented code costs one method call when profiling is off.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

OTHER = "other"
TRAINING = "training"
COMPILE = "compile"
# The section names of the update-rule search, in the order reports list them (others follow, by name).
ORDER = ("prepare", "references", "init", TRAINING, COMPILE, "mutation", "fingerprint", "cache", "funnel",
         "refine", "checkpoint", "tensorboard", "outputs_wait", "finish")

_NULL = contextlib.nullcontext()


class _Section:
    __slots__ = ("children", "name", "profile", "start")

    def __init__(self, profile: Profile, name: str) -> None:
        self.profile, self.name = profile, name

    def __enter__(self) -> None:
        self.children = 0.0
        self.profile._stack.append(self)
        self.start = self.profile._clock()

    def __exit__(self, *exc: object) -> None:
        elapsed = self.profile._clock() - self.start
        p = self.profile
        p._stack.pop()
        p.seconds[self.name] += elapsed - self.children
        p.counts[self.name] += 1
        if p._stack:
            p._stack[-1].children += elapsed


class Profile:
    """Seconds and calls per section (exclusive of nested sections), for the run and per step."""

    def __init__(self, enabled: bool = True, clock=time.perf_counter) -> None:
        self.enabled = enabled
        self._clock = clock
        self._stack: list[_Section] = []
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.counts: collections.Counter[str] = collections.Counter()
        self.steps: list[dict] = []  # per step: {"step", "wall_s", "sections": {name: seconds}}
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self.off_thread: collections.defaultdict[str, float] = collections.defaultdict(float)

    def section(self, name: str):
        """A context manager timing ``name`` (a no-op when disabled, and on other threads than the profile's)."""
        if not self.enabled or threading.get_ident() != self._thread:
            return _NULL
        return _Section(self, name)

    def overlapped(self, name: str, job: Callable[[], Any]) -> Any:
        """Runs ``job`` (on a worker thread): its seconds go to ``off_thread[name]``, outside the wall time's
        sections, since the profile's thread went on meanwhile."""
        if not self.enabled:
            return job()
        start = self._clock()
        try:
            return job()
        finally:
            with self._lock:
                self.off_thread[name] += self._clock() - start

    def compiled(self, seconds: float, counted: bool = True) -> None:
        """``seconds`` of compilation that just happened (inside whatever section is open): moved to
        ``compile``; ``counted``: one more compilation (its lowering is reported apart). Compilations on other
        threads are not this profile's."""
        if not self.enabled or threading.get_ident() != self._thread:
            return
        self.seconds[COMPILE] += seconds
        self.counts[COMPILE] += int(counted)
        if self._stack:
            self._stack[-1].children += seconds

    @contextlib.contextmanager
    def step(self, number: int):
        """Marks one step of the run loop: its wall time and what each section took in it."""
        if not self.enabled:
            yield
            return
        before, start = dict(self.seconds), self._clock()
        try:
            yield
        finally:
            wall = self._clock() - start
            spent = {k: v - before.get(k, 0.0) for k, v in self.seconds.items() if v - before.get(k, 0.0) > 0}
            self.steps.append({"step": int(number), "wall_s": wall, "sections": spent})

    def report(self, wall_s: float) -> dict[str, Any]:
        """JSON-able totals: the whole run (``wall_s``) and the steps alone, each section's seconds, calls and
        share, the remainder as ``other``; and the per-step breakdown."""
        step_seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
        for s in self.steps:
            for k, v in s["sections"].items():
                step_seconds[k] += v
        steps_wall = sum(s["wall_s"] for s in self.steps)
        return {
            "run": _view(dict(self.seconds), wall_s, self.counts),
            "steps": {**_view(dict(step_seconds), steps_wall), "count": len(self.steps)},
            "off_thread_s": {k: round(v, 6) for k, v in _ordered(dict(self.off_thread))},
            "per_step": [{"step": s["step"], "wall_s": round(s["wall_s"], 6),
                          "sections": {k: round(v, 6) for k, v in _ordered(s["sections"])}} for s in self.steps],
        }


def _ordered(seconds: dict[str, float]) -> list[tuple[str, float]]:
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(seconds.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0]))


def _view(seconds: dict[str, float], wall: float, counts: collections.Counter | None = None) -> dict[str, Any]:
    other = max(wall - sum(seconds.values()), 0.0)
    total = max(wall, sum(seconds.values()), 1e-12)  # clock jitter never gives shares above 1 in sum
    sections = {}
    for name, s in [*_ordered(seconds), (OTHER, other)]:
        row = {"seconds": round(s, 6), "share": round(s / total, 6)}
        if counts is not None and name != OTHER:
            row["count"] = counts[name]
        sections[name] = row
    return {"wall_s": round(wall, 6), "sections": sections,
            "trainer_share": round(seconds.get(TRAINING, 0.0) / total, 6)}


def table_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(section, run seconds, run share, steps share, calls) per section, for a plain or rich table."""
    run, steps = report["run"]["sections"], report["steps"]["sections"]
    rows = []
    for name, row in run.items():
        in_steps = steps.get(name)
        rows.append((name, f"{row['seconds']:.2f}", f"{row['share']:.1%}",
                     "-" if in_steps is None else f"{in_steps['share']:.1%}", str(row.get("count", "-"))))
    return rows
