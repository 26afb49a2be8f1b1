"""Pictures of the RL search: drift surfaces over (r, A) and return curves."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from search_spaces.drift import DriftConfig, DriftFamily, drift_surface, make_drift

# ----------------------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------------------
RATIO_RANGE = (0.5, 1.5)
ADVANTAGE_RANGE = (-2.0, 2.0)


@functools.lru_cache(maxsize=32)
def _surface_fn(drift: DriftConfig):
    """Jitted ``(params, progress, log_horizon) -> drift on the picture grid`` (compiled once per family)."""
    family = make_drift(drift)
    ratios = jnp.linspace(*RATIO_RANGE, 101)
    advantages = jnp.linspace(*ADVANTAGE_RANGE, 81)
    return jax.jit(
        lambda params, progress, horizon: drift_surface(family, params, ratios, advantages, progress, horizon)
    )


def drift_figure(family: DriftFamily, params: Any, horizon: float, title: str = "learned drift"):
    """Heatmaps of the drift over (r, A): the learned one at n/N = 0, 0.5, 1, then PPO's and DPO's."""
    from matplotlib.figure import Figure

    panels = [(f"{title}, n/N={p:g}", family.config, params, p) for p in (0.0, 0.5, 1.0)]
    for name in ("ppo", "dpo"):
        panels.append(
            (
                f"{name.upper()} drift",
                dataclasses.replace(family.config, family=name, ppo_init=False),
                {},
                0.0,
            )
        )
    fig = Figure(figsize=(4.0 * len(panels), 3.4))
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.16, top=0.88, wspace=0.35)
    for i, (label, drift_config, prm, progress) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        surface = np.asarray(_surface_fn(drift_config)(prm, jnp.float32(progress), jnp.float32(horizon)))
        image = ax.imshow(
            surface,
            origin="lower",
            aspect="auto",
            cmap="viridis",
            extent=(*RATIO_RANGE, *ADVANTAGE_RANGE),
        )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("ratio r")
        ax.set_ylabel("advantage A")
        fig.colorbar(image, ax=ax)
    return fig


def curves_figure(curves: dict[str, np.ndarray], steps_per_update: int, title: str):
    """Mean episodic return against environment steps, one line per label."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.9)
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        curve = np.asarray(curve, np.float64)
        x = (np.arange(len(curve)) + 1) * steps_per_update
        ax.plot(x[np.isfinite(curve)], curve[np.isfinite(curve)], label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return")
    ax.set_title(title, fontsize=10)
    ax.legend()
    return fig
