"""Pictures of a distillation: the network's drift surface over (r, A) against the formula's, and their
difference, at n/N = 0, 0.5 and 1."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from discover.language.drift_program import DriftProgram, drift_function
from discover.searches.distill.samples import Source
from search_spaces.drift import drift_surface

RATIO_RANGE = (0.5, 1.5)
ADVANTAGE_RANGE = (-2.0, 2.0)
PROGRESS = (0.0, 0.5, 1.0)


def surfaces(source: Source, program: DriftProgram, cap: float, progress: float) -> tuple[np.ndarray, np.ndarray]:
    """(network, formula) on the picture grid (rows A, columns r)."""
    ratios = jnp.linspace(*RATIO_RANGE, 101)
    advantages = jnp.linspace(*ADVANTAGE_RANGE, 81)
    net = drift_surface(source.family, source.params, ratios, advantages, progress, source.log_n)
    r, a = jnp.meshgrid(ratios, advantages)
    fit = drift_function(program, cap)(r, a, progress, source.log_n)
    return np.asarray(net, np.float64), np.asarray(fit, np.float64)


def distill_figure(source: Source, program: DriftProgram, cap: float, title: str = "distilled"):
    """A 3 x 3 grid: network, formula (same colour scale per column), formula - network."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.0, 10.0))
    fig.subplots_adjust(left=0.06, right=0.97, bottom=0.06, top=0.93, wspace=0.3, hspace=0.35)
    extent = (*RATIO_RANGE, *ADVANTAGE_RANGE)
    for col, progress in enumerate(PROGRESS):
        net, fit = surfaces(source, program, cap, progress)
        top = max(float(np.nanmax(net)), float(np.nanmax(fit)), 1e-8)
        diff = fit - net
        bound = max(float(np.nanmax(np.abs(diff))), 1e-8)
        panels = [(f"network, n/N={progress:g}", net, "viridis", 0.0, top),
                  (f"{title}, n/N={progress:g}", fit, "viridis", 0.0, top),
                  (f"{title} - network, n/N={progress:g}", diff, "RdBu_r", -bound, bound)]
        for row, (label, values, cmap, lo, hi) in enumerate(panels):
            ax = fig.add_subplot(3, len(PROGRESS), row * len(PROGRESS) + col + 1)
            image = ax.imshow(values, origin="lower", aspect="auto", cmap=cmap, vmin=lo, vmax=hi, extent=extent)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("ratio r")
            ax.set_ylabel("advantage A")
            fig.colorbar(image, ax=ax)
    fig.suptitle(f"drift: network vs {title} ({source.env})", fontsize=11)
    return fig
