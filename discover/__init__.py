"""discover: a JAX platform for discovering learning algorithms.

Update rules are small symbolic programs (:func:`parse`, :class:`Program`) run by a batched
interpreter over whole populations (:mod:`discover.language.interpreter`) and exported as ordinary optax
optimizers (:func:`to_optax`, :func:`export_module`).
"""

# A module reference, not `from ... import seed`: search_spaces.update_rules imports discover.language.*, so
# when it is imported first, this file runs while it is still partially initialized; its names are looked up
# when seed()/seeds() are called.
import search_spaces.update_rules as _update_rules
from discover.language.analysis import (
    dead_fraction,
    fingerprint,
    fingerprints,
    remove_dead_code,
    structural_hash,
)
from discover.language.optax_export import export_module, to_optax
from discover.language.program import Program, ProgramError, Statement, parse

__version__ = "0.1.0"


def seed(name: str) -> Program:
    """A baseline optimizer written in the language (see :data:`search_spaces.update_rules.SEED_NAMES`)."""
    return _update_rules.seed(name)


def seeds() -> dict[str, Program]:
    """Every baseline seed program, by name."""
    return _update_rules.seeds()


__all__ = [
    "Program",
    "ProgramError",
    "Statement",
    "dead_fraction",
    "export_module",
    "fingerprint",
    "fingerprints",
    "parse",
    "remove_dead_code",
    "seed",
    "seeds",
    "structural_hash",
    "to_optax",
]
