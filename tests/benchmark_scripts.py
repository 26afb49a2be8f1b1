"""The benchmark scripts (``benchmarks/*.py``: scripts, not a package) loaded as modules, for the tests that
check what they compute."""

from __future__ import annotations

import importlib.util
import pathlib
import types

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> types.ModuleType:
    """``benchmarks/<name>.py`` as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
