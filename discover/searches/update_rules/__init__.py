"""Update-rule search: regularized evolution over symbolic programs, after the Lion paper (Chen et al. 2023).

Modules: ``config`` (schema), ``state`` (state and its checkpoint encoding), ``steps`` (one generation, the
meta-validation funnel, restarts), ``refine`` (constants refined by an ES), ``report`` (TensorBoard and files),
``search`` (the :class:`~discover.shared.runner.Search` the runner drives).
"""

from discover.searches.update_rules.config import SearchConfig, load_search_config
from discover.searches.update_rules.refine import refine_program, run_refinement
from discover.searches.update_rules.search import resume_config, run_search
from discover.searches.update_rules.state import SearchState, state_from_checkpoint, state_to_checkpoint
from discover.searches.update_rules.steps import (
    SearchContext,
    initial_state,
    load_or_compute_references,
    make_context,
    maybe_restart,
    run_funnel,
    run_generation,
)
from discover.shared.scoring import Scorer, Scores, aggregate, with_steps

__all__ = [
    "Scorer", "Scores", "SearchConfig", "SearchContext", "SearchState", "aggregate", "initial_state",
    "load_or_compute_references", "load_search_config", "make_context", "maybe_restart", "refine_program",
    "resume_config", "run_funnel", "run_generation", "run_refinement", "run_search", "state_from_checkpoint",
    "state_to_checkpoint", "with_steps",
]
