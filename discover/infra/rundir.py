"""The run directory of a search, and TensorBoard logging into it.

A run directory holds everything one search writes::

    <root>/<name>-<YYYYmmdd-HHMMSS>[-N]/
        config.yaml     the resolved config (what `load_config` reads back), written at creation
        ckpt/           orbax checkpoints (``RunDir.checkpoint_dir``, see ``discover.infra.checkpointing``)
        tb/             TensorBoard events (``RunDir.tb_dir``, see ``TBLogger``)
        *.json, *.py    results (best programs, transfer tables), written atomically

Public API
----------
- ``RunDirError(ConfigError)``: one-line user error (missing directory, no ``config.yaml``, bad file name,
  a run name that cannot be a folder name: ``name: ...``).
- ``RunDir(path)`` dataclass:
  ``RunDir.create(root="checkpoints", name="run", config_yaml="") -> RunDir``,
  ``RunDir.open(path) -> RunDir``, properties ``config_yaml``, ``checkpoint_dir``, ``tb_dir``,
  ``is_main_process``; ``file(name) -> Path``, ``write_text(name, text) -> Path``,
  ``write_json(name, obj) -> Path``, ``read_json(name)``.
  Writes are atomic (temporary file in the same folder, fsync, ``os.replace``): an interrupted write leaves the
  previous file whole. On a JAX process other than 0 every write is a no-op (all processes compute the same
  paths; in a multi-process run the directory name chosen by process 0 is broadcast to the others).
- ``check_run_name(name, root=".")``: what ``RunDir.create`` checks before making anything (no path
  separator, NUL or control character; ``<name>-<time>[-N]`` within the file system's folder-name limit).
- ``TBLogger(target)``: TensorBoard events through tensorboardX, written under ``target.tb_dir`` (or under the
  folder ``target`` when it is a path). The writer is created on first use; off process 0 everything is a
  no-op. ``scalars(step, {tag: value})``, ``text(tag, markdown, step)``, ``histogram(tag, values, step)``,
  ``figure(tag, fig, step, close=True)``, ``image_png(tag, png_path, step)``, ``hparams(flat_config, metrics)``,
  ``flush()``, ``close()``; also a context manager. Values may be Python, NumPy or JAX scalars/arrays.
- ``program_markdown(code, title="", extra="") -> str``: a program as a fenced ```python block (with an
  optional ``###`` title and trailing markdown) for TensorBoard's text tab.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
import sys
import tempfile
import unicodedata
from collections.abc import Mapping
from typing import Any

import numpy as np

from discover.infra.config import ConfigError, dump_config

__all__ = [
    "RunDir", "RunDirError", "TBLogger", "atomic_write_bytes", "check_run_name", "is_main_process",
    "new_run_dir", "program_markdown",
]

CONFIG_FILE = "config.yaml"
_TIME_FORMAT = "%Y%m%d-%H%M%S"
NAME_MAX = 255  # bytes in one folder name on the usual file systems (ext4, xfs, btrfs, APFS, NTFS)
_SUFFIX_ROOM = len("-999")  # room kept for the -N of runs started in the same second


class RunDirError(ConfigError):
    """A run directory that is missing, is not a run directory, or a file name that escapes it."""


def is_main_process() -> bool:
    """True on JAX process 0 (the only one that writes files and logs)."""
    import jax

    return jax.process_index() == 0


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the new one, never a torn one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: pathlib.Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    # NumPy/JAX scalars and arrays become plain numbers and lists; anything else is a real error.
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__array__") and hasattr(obj, "dtype"):
        return np.asarray(obj).tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def _broadcast_from_main(values: tuple[int, ...]) -> tuple[int, ...]:
    """Process 0's ``values`` on every process (identity on a single process)."""
    import jax

    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    out = multihost_utils.broadcast_one_to_all(np.asarray(values, dtype=np.int32))
    return tuple(int(v) for v in np.asarray(out))


@dataclasses.dataclass
class RunDir:
    """One search's output folder; see the module docstring for the layout."""

    path: pathlib.Path

    def __post_init__(self) -> None:
        self.path = pathlib.Path(self.path)

    # -- creation / opening ---------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, root: str | os.PathLike = "checkpoints", name: str = "run", config_yaml: str = ""
    ) -> RunDir:
        """Makes ``<root>/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken) and writes ``config.yaml``.
        A ``name`` that cannot be a folder name is refused (:func:`check_run_name`) before anything is
        made."""
        root = pathlib.Path(root)
        check_run_name(name, root)
        main = is_main_process()
        stamp = int(datetime.datetime.now().timestamp())
        suffix = 1
        if main:
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RunDirError(
                    f"cannot create the run root: {exc.strerror or exc}", source=str(root)
                ) from None
            while True:
                candidate = root / _dir_name(name, stamp, suffix)
                try:
                    candidate.mkdir()  # exist_ok=False: two runs started in the same second never share a folder
                    break
                except FileExistsError:
                    suffix += 1
                except OSError as exc:  # e.g. a character this file system refuses
                    raise RunDirError(
                        f"cannot create the run directory {_shown(candidate.name)}: {exc.strerror or exc}",
                        key="name",
                    ) from None
        stamp, suffix = _broadcast_from_main((stamp, suffix))
        run = cls(root / _dir_name(name, stamp, suffix))
        if main:
            run.write_text(CONFIG_FILE, config_yaml)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        """An existing run directory; :class:`RunDirError` if it is missing or has no ``config.yaml``."""
        path = pathlib.Path(path)
        if not path.exists():
            raise RunDirError("run directory not found", source=str(path))
        if not path.is_dir():
            raise RunDirError("is a file, not a run directory", source=str(path))
        if not (path / CONFIG_FILE).is_file():
            raise RunDirError(f"not a run directory (no {CONFIG_FILE})", source=str(path))
        return cls(path)

    # -- layout ---------------------------------------------------------------------------------------------

    @property
    def config_yaml(self) -> str:
        return (self.path / CONFIG_FILE).read_text(encoding="utf-8")

    @property
    def config_path(self) -> pathlib.Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        return self.path / "ckpt"

    @property
    def tb_dir(self) -> pathlib.Path:
        return self.path / "tb"

    @property
    def is_main_process(self) -> bool:
        return is_main_process()

    def file(self, name: str | os.PathLike) -> pathlib.Path:
        """``path / name``, refusing names that would leave the run directory."""
        relative = pathlib.PurePath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise RunDirError(f"file name {str(name)!r} must be relative and stay inside the run directory")
        return self.path / relative

    # -- atomic writes --------------------------------------------------------------------------------------

    def write_text(self, name: str | os.PathLike, text: str) -> pathlib.Path:
        target = self.file(name)
        if self.is_main_process:
            atomic_write_bytes(target, text.encode("utf-8"))
        return target

    def write_json(self, name: str | os.PathLike, obj: Any) -> pathlib.Path:
        """Writes ``obj`` as indented JSON (NumPy/JAX values become numbers and lists)."""
        text = json.dumps(obj, indent=2, default=_json_default) + "\n"
        return self.write_text(name, text)

    def read_json(self, name: str | os.PathLike) -> Any:
        return json.loads(self.file(name).read_text(encoding="utf-8"))


def _name_max(root: pathlib.Path) -> int:
    """The longest folder name (bytes) on the file system of ``root`` (or of its nearest existing parent)."""
    probe = root.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows) or no answer
        return NAME_MAX
    return min(NAME_MAX, limit) if limit and limit > 0 else NAME_MAX


def _shown(name: str, limit: int = 40) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "...")


def check_run_name(name: object, root: str | os.PathLike = ".") -> None:
    """Raises :class:`RunDirError` (``name: ...``, one line) unless ``<name>-<YYYYmmdd-HHMMSS>[-N]`` is a
    valid folder name under ``root``: not empty, no path separator, NUL or other control character, encodable
    for the file system, and short enough for its name limit (255 bytes; the time and ``-N`` take 20)."""
    if not isinstance(name, str):
        raise RunDirError(f"must be text, got {type(name).__name__}", key="name")
    if not name:
        raise RunDirError("must not be empty (it names the run directory <name>-<time>)", key="name")
    for separator in filter(None, (os.sep, os.altsep, "/")):
        if separator in name:
            raise RunDirError(
                f"{_shown(name)} holds the path separator {separator!r}; the run directory is "
                "<out>/<name>-<time>, choose the parent folder with --out", key="name",
            )
    if "\0" in name:
        raise RunDirError(f"{_shown(name)} holds a NUL character (\\0): no folder name may", key="name")
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise RunDirError(
            f"{_shown(name)} holds the control character U+{ord(control):04X} at position "
            f"{name.index(control)}; a folder name must be printable", key="name",
        )
    try:
        size = len(os.fsencode(name))
    except UnicodeEncodeError as exc:
        raise RunDirError(
            f"{_shown(name)} cannot be written as a file name here ({exc.reason} at position {exc.start})",
            key="name",
        ) from None
    limit = _name_max(pathlib.Path(root))
    room = limit - len(_dir_name("", 0, 1)) - _SUFFIX_ROOM
    if size > room:
        raise RunDirError(
            f"{size} bytes long ({_shown(name)}); at most {room} bytes fit: the run directory "
            f"<name>-<YYYYmmdd-HHMMSS>[-N] is one folder name, at most {limit} bytes", key="name",
        )


def _dir_name(name: str, stamp: int, suffix: int) -> str:
    text = f"{name}-{datetime.datetime.fromtimestamp(stamp).strftime(_TIME_FORMAT)}"
    return text if suffix == 1 else f"{text}-{suffix}"


# ----------------------------------------------------------------------------------------------------------
# TensorBoard


def program_markdown(code: str, title: str = "", extra: str = "") -> str:
    """Markdown for TensorBoard's text tab: an optional ``### title``, the code fenced as python, ``extra``."""
    longest = max((len(run) for run in _backtick_runs(code)), default=0)
    fence = "`" * max(3, longest + 1)  # a fence longer than any run of backticks inside the code
    parts = []
    if title:
        parts.append(f"### {title}")
    parts.append(f"{fence}python\n{code.rstrip(chr(10))}\n{fence}")
    if extra:
        parts.append(extra)
    return "\n\n".join(parts)


def _backtick_runs(text: str) -> list[str]:
    runs, current = [], ""
    for ch in text:
        if ch == "`":
            current += ch
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    return runs


def _scalar(tag: str, value: Any) -> float:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"TensorBoard scalar {tag!r} needs one value, got shape {array.shape}")
    return float(array.reshape(()))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_pixels(path: pathlib.Path) -> np.ndarray:
    """The pixels of a PNG file as ``uint8`` HWC (grey, RGB or RGBA; palettes and 16-bit images converted)."""
    from PIL import Image  # matplotlib's own image dependency

    with open(path, "rb") as f:
        if f.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
            raise ValueError(f"{path}: not a PNG file")
    with Image.open(path) as image:
        if image.mode not in ("L", "RGB", "RGBA"):
            transparent = "A" in image.mode or "transparency" in image.info
            image = image.convert("RGBA" if transparent else "RGB")
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if value is None:
        return "null"
    return json.dumps(value, default=_json_default)


def new_run_dir(config: Any, out: str | os.PathLike | None = None) -> RunDir:
    """A fresh run directory ``<out or checkpoints>/<config.name>-<time>`` holding a search's resolved config.

    ``distributed.process_id`` is not recorded: each process of a multi-process run has its own rank, given
    again on resume (``--set distributed.process_id`` or ``$JAX_PROCESS_ID``)."""
    section = getattr(config, "distributed", None)
    if section is not None and section.process_id is not None:
        config = dataclasses.replace(config, distributed=dataclasses.replace(section, process_id=None))
    return RunDir.create(root=out or "checkpoints", name=config.name, config_yaml=dump_config(config))


class TBLogger:
    """TensorBoard events under a run directory's ``tb/`` (see the module docstring)."""

    def __init__(self, target: RunDir | str | os.PathLike, flush_secs: int = 30,
                 purge_step: int | None = None) -> None:
        self.logdir = target.tb_dir if isinstance(target, RunDir) else pathlib.Path(target)
        self.flush_secs = flush_secs
        # A resumed run passes its checkpoint's step + 1: TensorBoard then hides the events that the
        # stopped run wrote after that checkpoint, so no step is shown twice.
        self.purge_step = purge_step
        self.enabled = is_main_process()
        self._writer = None

    @property
    def writer(self):
        """The tensorboardX ``SummaryWriter`` (created on first use; ``None`` off process 0)."""
        if self._writer is None and self.enabled:
            from tensorboardX import SummaryWriter

            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(logdir=str(self.logdir), flush_secs=self.flush_secs,
                                         purge_step=self.purge_step)
        return self._writer

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        step = int(step)
        for tag, value in values.items():
            if value is None:
                continue
            self.writer.add_scalar(tag, _scalar(tag, value), global_step=step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        if self.enabled:
            self.writer.add_text(tag, markdown, global_step=int(step))

    def histogram(self, tag: str, values: Any, step: int) -> None:
        """A histogram of the finite entries of ``values`` (NaN/inf dropped; nothing written if none are left)."""
        if not self.enabled:
            return
        array = np.asarray(values, dtype=np.float64).ravel()
        array = array[np.isfinite(array)]
        if array.size:
            self.writer.add_histogram(tag, array, global_step=int(step), bins="auto")

    def figure(self, tag: str, fig: Any, step: int, close: bool = True) -> None:
        """Renders a matplotlib figure with the Agg backend and logs it as an image."""
        if not self.enabled:
            return
        if "matplotlib.pyplot" not in sys.modules:
            import matplotlib

            matplotlib.use("Agg")  # headless; only chosen when nothing else has picked a backend yet
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., :3]
        self.writer.add_image(tag, image, global_step=int(step), dataformats="HWC")
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)

    def image_png(self, tag: str, png_path: str | os.PathLike, step: int) -> None:
        """Logs an existing PNG file as an image (decoded, then written with ``SummaryWriter.add_image``: the
        pixels are kept exactly, the PNG bytes are re-encoded)."""
        if not self.enabled:
            return
        pixels = _png_pixels(pathlib.Path(png_path))
        self.writer.add_image(tag, pixels, global_step=int(step), dataformats="HWC")

    def hparams(
        self, flat_config: Mapping[str, Any], metrics: Mapping[str, Any], name: str = "hparams"
    ) -> None:
        """One HParams-tab entry: config values (lists/None shown as text) against final ``metrics``."""
        if not self.enabled:
            return
        hparam_dict = {str(k): _hparam_value(v) for k, v in flat_config.items()}
        metric_dict = {str(k): _scalar(k, v) for k, v in metrics.items() if v is not None}
        metric_dict = {k: (v if math.isfinite(v) else float("nan")) for k, v in metric_dict.items()}
        self.writer.add_hparams(hparam_dict, metric_dict, name=name)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
