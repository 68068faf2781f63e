"""Figures of latent codes: scatters against the prior's circles, marginals, a learned prior's density."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle
from matplotlib.ticker import FuncFormatter

from pyro_vae.evaluation.grid import check_extent
from pyro_vae.plots._common import (
    _class_colors,
    _code_axes,
    _codes,
    _finish,
    _grid_shape,
    _panels,
    _prepare_labels,
    _robust_limit,
    _scatter,
    _to_numpy,
    _variants,
)


def code_scatter(
    codes: Mapping[str, Any],
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    sigmas: Sequence[float] = (1, 2, 3),
    limit: float | None = None,
    title: str | None = None,
) -> Figure:
    """Scatter of the (first two) code dimensions, one panel per variant.

    Points are coloured by ``labels`` (one (N,) array shared by all variants,
    or a dict of per-variant arrays).  Dashed circles of radius ``sigmas``
    show the N(0, I) prior.  All panels use the same square limits
    ``[-limit, limit]``: by default the 99.5th percentile of |code| over all
    variants, times 1.1, and never smaller than the largest circle.
    """
    fn = "code_scatter"
    cd = {k: _codes(v, fn, k) for k, v in _variants(codes, fn, "(N, 2) codes").items()}
    for k, a in cd.items():
        if a.shape[1] < 2:
            raise ValueError(f"{fn}: codes for {k!r} have {a.shape[1]} dimension(s); need at least 2")
    sig = [float(s) for s in sigmas]
    if any(not math.isfinite(s) or s <= 0 for s in sig):
        raise ValueError(f"{fn}: sigmas must be positive finite numbers, got {tuple(sigmas)}")
    idx, names = _prepare_labels(labels, {k: a.shape[0] for k, a in cd.items()}, class_names, fn)
    colors = _class_colors(len(names))
    if limit is None:
        lim = _robust_limit([a[:, :2] for a in cd.values()], floor=1.1 * max(sig, default=0.0))
    else:
        lim = float(limit)
        if not math.isfinite(lim) or lim <= 0:
            raise ValueError(f"{fn}: limit must be a positive finite number, got {limit!r}")

    nrows, ncols = _grid_shape(len(cd))
    fig = Figure(figsize=(3.6 * ncols + (1.6 if names else 0.3), 3.7 * nrows + 0.3),
                 layout="constrained")
    axes = _panels(fig, len(cd))
    for ax, (k, a) in zip(axes, cd.items()):
        hidden = _scatter(ax, a[:, :2], idx[k], colors)
        for r in sig:
            ax.add_patch(Circle((0.0, 0.0), r, fill=False, linestyle="--", linewidth=0.9,
                                edgecolor="0.25", zorder=3))
        # label the circles unless they are too close together to read
        rs = sorted(sig)
        crowded = len(rs) > 1 and min(b - a for a, b in zip(rs, rs[1:])) < 0.08 * lim
        for r in (rs[-1:] if crowded else rs):
            t = r / math.sqrt(2.0)
            if t < 0.9 * lim:
                text = "–".join(f"{v:g}" for v in rs) + "σ" if crowded else f"{r:g}σ"
                ax.text(t, t, text, fontsize=7, color="0.25", ha="left", va="bottom",
                        zorder=4, clip_on=True)
        _code_axes(ax, (-lim, lim, -lim, lim))
        t = k
        notes = []
        if a.shape[1] > 2:
            notes.append(f"first 2 of {a.shape[1]} dims")
        if hidden:
            notes.append(f"{hidden} non-finite hidden")
        if notes:
            t += "\n(" + ", ".join(notes) + ")"
        ax.set_title(t, fontsize=10)
    return _finish(fig, title, names, colors)


def marginal_densities(
    codes: Mapping[str, Any],
    max_axes: int = 4,
    limit: float | None = None,
    title: str | None = None,
) -> Figure:
    """KDE (ArviZ) of each latent axis' marginal vs. the N(0, 1) density.

    One row per variant, one column per latent axis (at most ``max_axes``);
    every panel has the same x limits ``[-limit, limit]`` (default: robust
    limit over all variants, at least 4).
    """
    fn = "marginal_densities"
    cd = {k: _codes(v, fn, k) for k, v in _variants(codes, fn, "(N, d) codes").items()}
    if max_axes < 1:
        raise ValueError(f"{fn}: max_axes must be >= 1, got {max_axes}")
    dmax = max(a.shape[1] for a in cd.values())
    ncols = min(dmax, max_axes)
    if limit is None:
        lim = _robust_limit([a[:, :ncols] for a in cd.values()], floor=4.0)
    else:
        lim = float(limit)
        if not math.isfinite(lim) or lim <= 0:
            raise ValueError(f"{fn}: limit must be a positive finite number, got {limit!r}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arviz 0.x refactor notice
        import arviz as az

    nrows = len(cd)
    fig = Figure(figsize=(3.2 * ncols + 1.6, 2.3 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    xs = np.linspace(-lim, lim, 400)
    normal = np.exp(-0.5 * xs**2) / math.sqrt(2.0 * math.pi)
    for i, (k, a) in enumerate(cd.items()):
        for j in range(ncols):
            ax = axes[i, j]
            if j >= a.shape[1]:
                ax.set_axis_off()
                continue
            x = a[:, j]
            x = x[np.isfinite(x)]
            if x.size >= 2 and np.ptp(x) > 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    az.plot_kde(x, ax=ax, plot_kwargs={"color": f"C{i}", "linewidth": 1.6},
                                legend=False)
            else:
                ax.text(0.5, 0.5, "too few distinct finite values", transform=ax.transAxes,
                        ha="center", va="center", fontsize=8)
            ax.plot(xs, normal, linestyle="--", color="k", linewidth=1.0)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(bottom=0)
            ax.tick_params(labelsize=8)
            if i == 0:
                ax.set_title(f"$z_{{{j + 1}}}$")
            if j == 0:
                ax.set_ylabel(f"{k}\ndensity")
            if i == nrows - 1:
                ax.set_xlabel("code value")
    handles = [Line2D([], [], color="0.4", linewidth=1.6, label="code KDE"),
               Line2D([], [], color="k", linestyle="--", linewidth=1.0, label="N(0, 1)")]
    fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize=9)
    t = title or ""
    if dmax > ncols:
        t = (t + " " if t else "") + f"(first {ncols} of {dmax} dims)"
    if t:
        fig.suptitle(t)
    return fig


def prior_density(
    codes: Any,
    labels: Any,
    log_density: Any,
    extent: Sequence[float],
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    dynamic_range: float = 12.0,
) -> Figure:
    """Heatmap + contours of a (learned) prior's log density under the codes.

    ``codes`` is an (N, 2) array (one panel) or a dict ``{variant: (N, 2)}``.
    ``log_density`` is a (G, G) array of log p(z) on the grid of
    :func:`pyro_vae.evaluation.grid.density_grid_points` (row i <-> y, column j <-> x, origin lower
    left), either one shared array or a dict with the same keys as ``codes``.
    ``extent = (xmin, xmax, ymin, ymax)`` is shared by all panels, as is the
    colour scale ``[max - dynamic_range, max]`` (in nats).
    """
    fn = "prior_density"
    single = not isinstance(codes, Mapping)
    cd = {"": codes} if single else _variants(codes, fn, "(N, 2) codes")
    cd = {k: _codes(v, fn, k or "codes") for k, v in cd.items()}
    for k, a in cd.items():
        if a.shape[1] != 2:
            raise ValueError(f"{fn}: codes for {k or 'codes'!r} must be (N, 2), got {a.shape}")
    if isinstance(log_density, Mapping):
        ld = {str(k): v for k, v in log_density.items()}
        if single or set(ld) != set(cd):
            raise ValueError(f"{fn}: log_density dict keys {sorted(ld)} must match the "
                             f"codes variants {sorted(cd)}")
    else:
        ld = {k: log_density for k in cd}
    dens = {}
    for k in cd:
        z = _to_numpy(ld[k])
        if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 2:
            raise ValueError(f"{fn}: log_density for {k or 'codes'!r} must be a (G, G) grid, "
                             f"got shape {z.shape}")
        z = np.where(np.isfinite(z), z, np.nan)
        if np.all(np.isnan(z)):
            raise ValueError(f"{fn}: log_density for {k or 'codes'!r} has no finite values")
        dens[k] = z
    e = check_extent(extent, fn)
    if not (dynamic_range > 0):
        raise ValueError(f"{fn}: dynamic_range must be > 0, got {dynamic_range}")
    idx, names = _prepare_labels(labels, {k: a.shape[0] for k, a in cd.items()}, class_names, fn)
    colors = _class_colors(len(names))

    vmax = max(float(np.nanmax(z)) for z in dens.values())
    vmin = vmax - float(dynamic_range)
    levels = np.linspace(vmin, vmax, 13)
    nrows, ncols = _grid_shape(len(cd))
    fig = Figure(figsize=(3.8 * ncols + (2.6 if names else 1.2), 3.7 * nrows + 0.3),
                 layout="constrained")
    axes = _panels(fig, len(cd))
    cf = None
    for ax, (k, a) in zip(axes, cd.items()):
        z = np.clip(dens[k], vmin, vmax)
        g_y, g_x = z.shape
        xs = np.linspace(e[0], e[1], g_x)
        ys = np.linspace(e[2], e[3], g_y)
        cf = ax.contourf(xs, ys, z, levels=levels, cmap="Greys", alpha=0.75,
                         vmin=vmin, vmax=vmax, zorder=0)
        ax.contour(xs, ys, z, levels=levels[1::2], colors="0.35", linewidths=0.5, zorder=1)
        _scatter(ax, a, idx[k], colors, alpha=0.7)
        _code_axes(ax, e)
        if k:
            ax.set_title(k, fontsize=10)
    cb = fig.colorbar(cf, ax=axes, shrink=0.8, pad=0.02,
                      format=FuncFormatter(lambda v, _: f"{round(v, 1) + 0.0:g}"))
    cb.set_label("log p(z)")
    return _finish(fig, title, names, colors)
