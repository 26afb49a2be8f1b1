"""The config keys every search shares, defined once: ``kind``, ``name``, ``seed``, ``devices``,
``distributed`` and ``checkpoint``.

A search's schema subclasses :class:`BaseSearchConfig` and re-declares the keys whose defaults are its own
(``kind`` always: its one allowed value)::

    @dataclasses.dataclass(frozen=True)
    class RLSearchConfig(BaseSearchConfig):
        kind: str = redefault("kind", "rl_objective", choices=["rl_objective"])
        checkpoint: CheckpointSection = dataclasses.field(default_factory=lambda: CheckpointSection(every=5))
"""

from __future__ import annotations

import dataclasses
from typing import Any

from discover.infra.sharding import DistributedSection, check_devices

__all__ = ["BaseSearchConfig", "CheckpointSection", "redefault"]


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    every: int = dataclasses.field(default=10, metadata={"min": 1, "help": "generations between checkpoints"})
    max_to_keep: int = dataclasses.field(default=3, metadata={"min": 1, "help": "checkpoints kept"})


@dataclasses.dataclass(frozen=True)
class BaseSearchConfig:
    kind: str = dataclasses.field(
        default="", metadata={"help": "which search this config is for: update_rule or rl_objective"})
    name: str = dataclasses.field(default="search", metadata={"help": "run name (run directory prefix)"})
    seed: int = dataclasses.field(default=0, metadata={"min": 0, "help": "seed of the whole search"})
    devices: Any = dataclasses.field(
        default="all", metadata={"help": "devices the population is sharded over: all or a number"})
    distributed: DistributedSection = dataclasses.field(
        default_factory=DistributedSection, metadata={"help": "multi-process (multi-host) runs"})
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)

    def __post_init__(self) -> None:
        check_devices(self.devices)


def redefault(name: str, default: Any, **metadata: Any) -> Any:
    """Field ``name`` of :class:`BaseSearchConfig` with another (immutable) default and more metadata (e.g.
    ``choices``); its type, bounds and help are kept."""
    meta = {**BaseSearchConfig.__dataclass_fields__[name].metadata, **metadata}
    return dataclasses.field(default=default, metadata=meta)
