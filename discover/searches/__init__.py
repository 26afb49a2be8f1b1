"""The kinds of search, by the name a config's ``kind:`` gives them.

A new kind of search is one new module implementing :class:`discover.shared.runner.Search` plus one entry here;
the CLI knows searches only through this registry. Entries are import paths, imported on first use: the CLI
must be able to list kinds and read a config's kind before JAX starts (``jax.distributed`` must be initialized
first in a multi-process run, and importing a search brings in evosax, which starts JAX) — this is the one
documented place where imports are deferred.
"""

from __future__ import annotations

import importlib

SEARCHES = {
    "update_rule": "discover.searches.update_rules.search:UpdateRuleSearch",
    "rl_objective": "discover.searches.rl.search:RLObjectiveSearch",
    "distill": "discover.searches.distill.search:DistillSearch",
}
KINDS = tuple(SEARCHES)


def get_search(kind: str):
    """A fresh instance of the search registered as ``kind`` (KeyError if none is)."""
    module, name = SEARCHES[kind].split(":")
    return getattr(importlib.import_module(module), name)()
