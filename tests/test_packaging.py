"""Packaging: a plain (non-editable) wheel carries the experiment configs, the seed programs and the license,
and an install of it finds the default config from any directory.

The wheel is built from a copy of the sources in a temporary folder (``pip wheel . --no-deps
--no-build-isolation``, about 1-2 s), so the build never writes ``build/`` or ``*.egg-info`` into the
checkout. Without build isolation the environment's setuptools must satisfy ``[build-system] requires``
(``setuptools>=77``, in the ``dev`` extra); an older one skips the build tests with that reason.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from discover.infra.config import ConfigError
from discover.infra.experiments import default_config_path, resolve_config, shipped_experiments

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What the build reads: the project files and the top-level packages of [tool.setuptools.packages.find].
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "discover", "search_spaces", "envs", "experiments")


def _setuptools_ok() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    if not _setuptools_ok():
        pytest.skip("needs setuptools>=77 in this environment (pip install -e '.[dev]')")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        cwd=src, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("discover_algorithms-*.whl")
    return built


def test_wheel_ships_experiments_seeds_and_license(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "experiments/quickstart.yaml" in names
    assert "experiments/__init__.py" in names
    for config in (ROOT / "experiments").glob("*.yaml"):
        assert f"experiments/{config.name}" in names
    seeds = sorted((ROOT / "search_spaces" / "seeds").glob("*.py"))
    assert seeds
    for program in seeds:
        assert f"search_spaces/seeds/{program.name}" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert not any(n.startswith(("tests/", "benchmarks/", "checkpoints/")) for n in names)


def test_installed_wheel_finds_default_config_from_elsewhere(wheel, tmp_path):
    """The wheel unpacked as site-packages would hold it, imported from an unrelated working directory."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import discover, pathlib\n"
        "from discover.infra.experiments import default_config_path, resolve_config\n"
        "print(pathlib.Path(discover.__file__).resolve())\n"
        "print(default_config_path().resolve())\n"
        "print(resolve_config('talpo_tiny').resolve())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    package, default, tiny = (pathlib.Path(line) for line in result.stdout.split())
    site = site.resolve()
    assert package == site / "discover" / "__init__.py"  # the unpacked wheel, not this checkout
    assert default == site / "experiments" / "quickstart.yaml" and default.is_file()
    assert tiny == site / "experiments" / "talpo_tiny.yaml"


def test_default_config_path_exists():
    path = default_config_path()
    assert path.name == "quickstart.yaml" and path.is_file()
    assert "quickstart" in shipped_experiments()


def test_resolve_config(tmp_path, monkeypatch):
    tiny = default_config_path().parent / "talpo_tiny.yaml"
    for name in ("talpo_tiny", "talpo_tiny.yaml", "experiments/talpo_tiny.yaml"):
        assert resolve_config(name).resolve() == tiny.resolve()
    assert resolve_config(None) == default_config_path()
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "talpo_tiny.yaml"
    own.write_text("kind: rl_objective\n")
    assert resolve_config("talpo_tiny.yaml") == pathlib.Path("talpo_tiny.yaml")  # an existing file wins
    with pytest.raises(ConfigError) as err:
        resolve_config("talpo_tinyy")
    message = str(err.value)
    assert "\n" not in message and message.startswith("talpo_tinyy: ")
    assert "did you mean 'talpo_tiny'" in message and "quickstart" in message
    with pytest.raises(ConfigError):
        resolve_config("some/where/else.yaml")
