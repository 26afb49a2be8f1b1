"""The update-rule search space: seed programs (baseline optimizers) and the vocabulary mutation draws from.

Each seed is a program text in ``search_spaces/seeds/<name>.py``: a plain ``def`` in the program
language with a comment on top citing its source and constants. Those files are *data*: they are read
as text and parsed by :func:`discover.language.program.parse`, never imported or executed as Python.

Rules a search found and this project ships live in ``search_spaces/discovered/<name>.py``, in the same form,
their header giving the config, command, date and the transfer table they earned. Their names
(:data:`DISCOVERED_NAMES`) work wherever a seed's does (``start_from``, ``discover show``/``export``/``transfer``).

The seeds reproduce their references (optax's optimizer with its default constants where optax has one,
else the paper's formula) to float32 rounding; ``tests/test_seeds.py`` checks both execution paths.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources

import numpy as np

from discover.language.ops import OP_BY_NAME, OPS
from discover.language.program import Program, parse
from discover.language.time_use import tie_bias_corrections, time_problems

TIME_USES = ("free", "bias_corrections")  # where programs may read t (discover.language.time_use)

SEED_NAMES: tuple[str, ...] = (
    "adamw", "adam", "sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adabelief",
    "lion", "signum", "diffgrad", "powersign", "addsign", "sophia",
    "lion_tanh", "lion_clip", "lion_l2", "adagradnorm", "nadamw",
)



def _discovered_names() -> tuple[str, ...]:
    folder = importlib.resources.files("search_spaces").joinpath("discovered")
    # Update rules only: the RL discoveries beside them (a drift network, its distilled closed form) have "drift"
    # in their file names.
    return tuple(sorted(f.name[:-3] for f in folder.iterdir()
                        if f.name.endswith(".py") and "drift" not in f.name and f.name != "__init__.py"))


DISCOVERED_NAMES: tuple[str, ...] = _discovered_names()
PROGRAM_NAMES: tuple[str, ...] = SEED_NAMES + DISCOVERED_NAMES  # every program known by name


def _unknown(name) -> ValueError:
    return ValueError(f"unknown seed {name!r}; known seeds: {', '.join(PROGRAM_NAMES)}")


def seed_text(name: str) -> str:
    """The program text of seed or shipped discovery `name` (comment header included)."""
    if not isinstance(name, str) or name not in PROGRAM_NAMES:
        raise _unknown(name)
    folder = "seeds" if name in SEED_NAMES else "discovered"
    return importlib.resources.files("search_spaces").joinpath(folder, f"{name}.py").read_text("utf-8")


def seed(name: str) -> Program:
    """Seed or shipped discovery `name` parsed into a :class:`Program` (ValueError naming the known ones)."""
    if not isinstance(name, str) or name not in PROGRAM_NAMES:
        raise _unknown(name)
    return _parsed(name)


@functools.cache
def _parsed(name: str) -> Program:
    return parse(seed_text(name), allow_h=True)


def seeds() -> dict[str, Program]:
    """Every baseline seed, in :data:`SEED_NAMES` order."""
    return {name: seed(name) for name in SEED_NAMES}


def discovered() -> dict[str, Program]:
    """Every shipped discovery, by name."""
    return {name: seed(name) for name in DISCOVERED_NAMES}


@dataclasses.dataclass(frozen=True)
class UpdateRuleSpace:
    """What mutation may produce.

    ops: op names a mutation may draw (default: the whole vocabulary of :mod:`discover.language.ops`; ``copy``,
    the plain assignment ``x = y``, is always allowed). max_len: most statements a program may have;
    n_state: most state variables (they start at zero); allow_h: whether programs may read the Hessian
    estimate ``h``.
    Constants (:meth:`sample_constant`, :meth:`perturb_constant`): a fresh constant is one of
    ``common_constants`` with probability ``common_constant_prob``, else ``10**U(*const_log10_range)``,
    negated with probability ``const_negative_prob``; a mutated constant is scaled by
    ``2**N(0, const_perturb_log2_sigma)``; both rounded to ``const_digits`` significant digits.
    """

    ops: tuple[str, ...] = tuple(op.name for op in OPS)
    max_len: int = 24
    n_state: int = 4
    allow_h: bool = False
    common_constants: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 1.0, 2.0, 1e-8, 1e-3, 0.1)
    common_constant_prob: float = 0.5
    const_log10_range: tuple[float, float] = (-4.0, 1.0)
    const_negative_prob: float = 0.2
    const_perturb_log2_sigma: float = 1.0
    const_digits: int = 4
    time: str = "free"

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "common_constants", tuple(float(c) for c in self.common_constants))
        unknown = [o for o in self.ops if o not in OP_BY_NAME]
        if unknown:
            raise ValueError(f"UpdateRuleSpace.ops: unknown op(s) {', '.join(map(repr, unknown))}; "
                             f"known ops: {', '.join(OP_BY_NAME)}")
        if not self.ops:
            raise ValueError("UpdateRuleSpace.ops: at least one op is needed")
        if len(set(self.ops)) != len(self.ops):
            raise ValueError("UpdateRuleSpace.ops: duplicate op names")
        if self.max_len < 1:
            raise ValueError(f"UpdateRuleSpace.max_len must be >= 1, got {self.max_len}")
        if self.n_state < 0:
            raise ValueError(f"UpdateRuleSpace.n_state must be >= 0, got {self.n_state}")
        lo, hi = self.const_log10_range
        if not lo < hi:
            raise ValueError(f"UpdateRuleSpace.const_log10_range must be (low, high) with low < high, "
                             f"got {self.const_log10_range}")
        for field in ("common_constant_prob", "const_negative_prob"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"UpdateRuleSpace.{field} must be in [0, 1], got {getattr(self, field)}")
        if self.common_constant_prob > 0 and not self.common_constants:
            raise ValueError("UpdateRuleSpace.common_constants is empty but common_constant_prob > 0")
        if self.const_perturb_log2_sigma < 0:
            raise ValueError(f"UpdateRuleSpace.const_perturb_log2_sigma must be >= 0, "
                             f"got {self.const_perturb_log2_sigma}")
        if self.time not in TIME_USES:
            raise ValueError(f"UpdateRuleSpace.time must be one of {', '.join(TIME_USES)}, got {self.time!r}")
        if self.const_digits < 1:
            raise ValueError(f"UpdateRuleSpace.const_digits must be >= 1, got {self.const_digits}")

    def _round(self, x: float) -> float:
        return float(f"{x:.{self.const_digits}g}")

    def sample_constant(self, rng: np.random.Generator) -> float:
        """A fresh constant for a mutation."""
        if self.common_constants and rng.random() < self.common_constant_prob:
            return float(rng.choice(self.common_constants))
        value = 10.0 ** rng.uniform(*self.const_log10_range)
        return self._round(-value if rng.random() < self.const_negative_prob else value)

    def perturb_constant(self, c: float, rng: np.random.Generator) -> float:
        """`c` scaled by a random factor ``2**N(0, const_perturb_log2_sigma)``."""
        return self._round(c * 2.0 ** (self.const_perturb_log2_sigma * rng.normal()))

    def problems(self, program: Program) -> list[str]:
        """Why `program` lies outside this space (empty when it fits)."""
        out = []
        if len(program) > self.max_len:
            out.append(f"{len(program)} statements > max_len {self.max_len}")
        if len(program.state) > self.n_state:
            out.append(f"{len(program.state)} state variables > n_state {self.n_state}")
        if program.reads_h and not self.allow_h:
            out.append("reads h but allow_h is False")
        used = sorted({s.op for s in program.statements} - set(self.ops) - {"copy"})
        if used:
            out.append(f"uses op(s) outside the space: {', '.join(used)}")
        if self.time == "bias_corrections":
            out.extend(time_problems(program))
        return out

    def canonical(self, program: Program) -> Program:
        """The form a mutated child takes in this space: with ``time: bias_corrections``, each bias
        correction's base follows its EMA's rate (a mutation of the rate moves both)."""
        return tie_bias_corrections(program) if self.time == "bias_corrections" else program

    def admits(self, program: Program) -> bool:
        return not self.problems(program)

    def seeds(self) -> dict[str, Program]:
        """The seeds this space admits (e.g. without ``sophia`` unless ``allow_h``)."""
        return {name: p for name, p in seeds().items() if self.admits(p)}
