"""Errors that bad input causes, as opposed to bugs.

The CLI prints these as one line with exit code 2; any other exception is a bug and keeps its traceback.
(:class:`discover.infra.config.ConfigError` and :class:`discover.infra.checkpointing.CheckpointError` are the
other two: a bad config or run directory, a damaged checkpoint.) Both classes here subclass ``ValueError``, so
library callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations

import pathlib


class InputError(ValueError):
    """A bad argument from the user: an unknown task or environment name, an empty grid, a seed count < 1."""


class DriftFileError(InputError):
    """A file given as a drift that is not one (or is damaged); ``str()`` is one line naming the file."""

    def __init__(self, path: str | pathlib.Path, message: str) -> None:
        self.path = str(path)
        self.message = " ".join(str(message).split())
        super().__init__(f"{self.path}: {self.message}")
