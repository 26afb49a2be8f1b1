"""Keeping orbax quiet: its absl/asyncio log records are held during a save or restore and passed on unless
the step turned out damaged (which the checkpointer reports itself, in one line). Logging filters only: no
process-wide stream is swapped while orbax's threads run."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
import threading
from typing import Any

_NOISY_LOGGERS = ("absl", "asyncio")  # orbax logs through absl; its dropped coroutines through asyncio


class _Held(logging.Filter):
    """Holds back the records of :data:`_NOISY_LOGGERS` while :func:`_quiet_orbax` runs (see there)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = False
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_discover_released", False):
            return True
        with self._lock:
            self.records.append(record)
        return False

    def release(self) -> None:
        with self._lock:
            records, self.records = self.records, []
        if self.drop:
            return
        for record in records:
            record._discover_released = True  # passes this filter (and any nested one) this time
            logging.getLogger(record.name).handle(record)


class _DamagedStepEchoes(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" reports about steps already reported damaged.

    Reads that orbax abandoned in a damaged step fail again when the garbage collector finds their tasks, at
    any later time (often at exit, outside :func:`_quiet_orbax`). Installed on the asyncio logger at the first
    damaged step; it only drops records whose text names a step directory in ``paths``."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        return not any(path in text for path in self.paths)


_ECHOES = _DamagedStepEchoes()


def forget_damaged(step_dir: pathlib.Path) -> None:
    """Silences later asyncio echoes of the failed reads of ``step_dir`` (see :class:`_DamagedStepEchoes`)."""
    asyncio_logger = logging.getLogger("asyncio")
    if _ECHOES not in asyncio_logger.filters:
        asyncio_logger.addFilter(_ECHOES)
    _ECHOES.paths.add(os.path.join(str(step_dir), ""))


def _is_closed_loop_noise(unraisable: Any) -> bool:
    exc = getattr(unraisable, "exc_value", None)
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


@contextlib.contextmanager
def quiet_orbax():
    """Keeps orbax/tensorstore's multi-line complaints about a damaged step off the console.

    The fallback reports each damaged step in one warning line; what orbax logs (through absl), the
    exceptions its background coroutines drop (logged by asyncio), and the "Event loop is closed" tracebacks
    tensorstore reports as unraisable when reads abandoned by a failed restore complete on a closed event loop
    (during the next restore) would otherwise bury that line. Only those loggers' records are held back,
    through a logging filter (no stream is swapped, so other threads' output is untouched); they are passed on
    at the end unless ``drop`` was set on the yielded object, or an exception left the block.
    """
    held = _Held()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    previous_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _is_closed_loop_noise(unraisable):
            previous_hook(unraisable)

    for noisy in loggers:
        noisy.addFilter(held)
    sys.unraisablehook = hook
    try:
        yield held
    except BaseException:
        held.drop = True
        raise
    finally:
        if sys.unraisablehook is hook:  # unless someone else replaced it meanwhile
            sys.unraisablehook = previous_hook
        for noisy in loggers:
            noisy.removeFilter(held)
        held.release()
