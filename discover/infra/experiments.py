"""The experiment configs shipped with discover (``experiments/*.yaml``) and how a command line names one.

The configs are package data of the top-level ``experiments`` package, so they are found the same way in a
source checkout, an editable install and a plain ``pip install .`` (then they sit in site-packages).

Public API
----------
- ``DEFAULT_EXPERIMENT = "quickstart.yaml"``: the default of ``discover search``.
- ``experiments_dir() -> pathlib.Path``: the folder holding the shipped ``*.yaml``.
- ``shipped_experiments() -> list[str]``: their names (file stems), sorted.
- ``default_config_path() -> pathlib.Path``: the shipped ``quickstart.yaml``.
- ``resolve_config(name_or_path) -> pathlib.Path``: an existing file as given (relative to the current
  directory); else a shipped experiment by file name or stem (``talpo_tiny``, ``talpo_tiny.yaml`` and
  ``experiments/talpo_tiny.yaml`` all name it); else :class:`~discover.infra.config.ConfigError`, one line
  listing the shipped experiments. ``None`` gives :func:`default_config_path`.
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import pathlib

from discover.infra.config import ConfigError

__all__ = [
    "DEFAULT_EXPERIMENT", "default_config_path", "experiments_dir", "resolve_config", "shipped_experiments",
]

DEFAULT_EXPERIMENT = "quickstart.yaml"
_PACKAGE = "experiments"
_SUFFIXES = (".yaml", ".yml")


def experiments_dir() -> pathlib.Path:
    """The folder of the shipped configs: the ``experiments`` package found by ``importlib.resources``, else
    the ``experiments/`` folder next to the ``discover`` package (a checkout, or an editable install made
    before ``experiments`` became a package). A folder counts only if it holds ``quickstart.yaml``, so an
    unrelated module named ``experiments`` is passed over."""
    candidates = []
    try:
        found = importlib.resources.files(_PACKAGE)
    except (ModuleNotFoundError, TypeError):
        found = None
    if isinstance(found, pathlib.Path):  # a real folder (not a zip import)
        candidates.append(found)
    candidates.append(pathlib.Path(__file__).resolve().parents[2] / _PACKAGE)
    for folder in candidates:
        if (folder / DEFAULT_EXPERIMENT).is_file():
            return folder
    raise ConfigError(
        f"the shipped experiment configs are missing (no {DEFAULT_EXPERIMENT} in "
        f"{' or '.join(str(c) for c in candidates)}); reinstall discover or pass a config file"
    )


def shipped_experiments() -> list[str]:
    """The names (file stems) of the shipped configs, sorted."""
    folder = experiments_dir()
    return sorted(p.stem for p in folder.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def default_config_path() -> pathlib.Path:
    """The shipped ``quickstart.yaml`` (the default of ``discover search``)."""
    return experiments_dir() / DEFAULT_EXPERIMENT


def resolve_config(name_or_path: str | os.PathLike | None) -> pathlib.Path:
    """The config file that ``discover search NAME_OR_PATH`` means (see the module docstring)."""
    if name_or_path is None:
        return default_config_path()
    path = pathlib.Path(name_or_path)
    if path.exists():
        return path
    parent = path.parent.as_posix()
    if parent in (".", _PACKAGE) and path.name:  # `talpo_tiny`, `talpo_tiny.yaml`, `experiments/talpo_tiny.yaml`
        folder = experiments_dir()
        names = [path.name] if path.suffix in _SUFFIXES else [path.name + s for s in _SUFFIXES]
        for name in names:
            if (folder / name).is_file():
                return folder / name
    shipped = shipped_experiments()
    hint = difflib.get_close_matches(path.stem, shipped, n=1)
    did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
    raise ConfigError(
        f"no such file, and no shipped experiment of that name; {did_you_mean}"
        f"shipped: {', '.join(shipped)} (in {experiments_dir()})",
        source=str(name_or_path),
    )
