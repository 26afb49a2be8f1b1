"""SIGINT/SIGTERM as a polite request to checkpoint and stop.

``GracefulExit(signals=(SIGINT, SIGTERM), notice=True)``: a context manager; inside it those signals set
``.requested = True`` (and ``.signal_name``) instead of stopping the program, so the search loop can
checkpoint and stop; a second SIGINT raises ``KeyboardInterrupt`` as usual. Previous handlers are restored on
exit. Handlers are only installed in the main thread (elsewhere it is inert, ``.active`` is False).
``.request()`` asks for a stop programmatically.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any


class GracefulExit:
    """Turns SIGINT/SIGTERM into a polite request to checkpoint and stop (see the module docstring)."""

    def __init__(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM), notice: bool = True) -> None:
        self.signals = tuple(signals)
        self.notice = notice
        self.requested = False
        self.signal_name: str | None = None
        self.active = False
        self._previous: dict[int, Any] = {}

    def request(self, reason: str = "request") -> None:
        self.requested = True
        self.signal_name = self.signal_name or reason

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        first = not self.requested
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if first and self.notice:
            again = " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""
            print(
                f"discover: {self.signal_name} received; checkpointing and stopping after this step{again}",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
            self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            # None means the handler was not set from Python: the default is the closest equivalent.
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        self.active = False
