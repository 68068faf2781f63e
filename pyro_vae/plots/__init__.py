"""Figures comparing autoencoder variants side by side.

Every public plotting function takes numpy arrays (torch tensors are accepted
too and moved to CPU) and returns a :class:`matplotlib.figure.Figure` built with
the object API only -- no pyplot state is touched, so the functions are
headless and safe to call from several threads.  Nothing is saved here: pass
the figure to :func:`save_figure`.

Variants are always given as ``{variant_name: array}`` dicts whose insertion
order is the display order.  Panels that show the same kind of quantity for
different variants share their axis limits (and colour scales), so the
variants can be compared by eye.

Bad inputs (empty dicts, mismatched lengths, wrong image sizes, ...) raise
``ValueError`` with a message naming the function, the variant and the
offending shape.
"""

from __future__ import annotations

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # never clobber an interactive session
    matplotlib.use("Agg")

# Grid helpers live with the evaluation, which decodes and scores the same grids.
from pyro_vae.evaluation.grid import density_grid_points, manifold_codes  # noqa: E402
from pyro_vae.plots.bars import metric_bars, spread_bars  # noqa: E402
from pyro_vae.plots.codes import code_scatter, marginal_densities, prior_density  # noqa: E402
from pyro_vae.plots.curves import fidelity_by_distance, training_curves  # noqa: E402
from pyro_vae.plots.images import image_grid, manifold, reconstructions  # noqa: E402
from pyro_vae.plots.saving import DEFAULT_DPI, save_figure  # noqa: E402

__all__ = [
    "DEFAULT_DPI",
    "save_figure",
    "code_scatter",
    "image_grid",
    "manifold",
    "manifold_codes",
    "reconstructions",
    "spread_bars",
    "training_curves",
    "marginal_densities",
    "metric_bars",
    "prior_density",
    "density_grid_points",
]
