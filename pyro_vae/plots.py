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

import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # never clobber an interactive session
    matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch
from matplotlib.ticker import FuncFormatter

from pyro_vae.io import atomic_write

__all__ = [
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

IMAGE_SHAPE = (28, 28)
DEFAULT_DPI = 100
_MAX_COLS = 4  # panels per row before wrapping


# --------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DEFAULT_DPI) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and return the path.

    The PNG is rendered into a temporary file in the destination folder and
    moved into place with :func:`os.replace`, so readers never see a partial
    file.  Missing parent folders are created.  The figure is not closed (it is
    not registered with pyplot, so it is freed when no longer referenced).
    The output is always PNG, whatever the file suffix.
    """
    if not isinstance(fig, Figure):
        raise ValueError(f"save_figure: expected a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ValueError(f"save_figure: {str(path)!r} is not a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, facecolor="white"), mode=0o644)
    return path


# --------------------------------------------------------------------------
# input helpers
# --------------------------------------------------------------------------


def _to_numpy(x: Any, dtype=float) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _variants(d: Any, fn: str, what: str = "arrays") -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(
            f"{fn}: expected a dict {{variant_name: {what}}}, got {type(d).__name__}"
        )
    if len(d) == 0:
        raise ValueError(f"{fn}: got an empty dict of variants")
    return {str(k): v for k, v in d.items()}


def _codes(x: Any, fn: str, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{fn}: codes for {name!r} must be an (N, d) array, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{fn}: codes for {name!r} are empty")
    return arr


def _images(x: Any, fn: str, name: str, image_shape: tuple[int, int]) -> np.ndarray:
    """Return an (M, h, w) float array; accepts (M, h*w), (M, h, w), (M, 1, h, w)."""
    arr = _to_numpy(x)
    h, w = image_shape
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        if arr.shape[1] != h * w:
            raise ValueError(
                f"{fn}: images for {name!r} have {arr.shape[1]} pixels per row, "
                f"expected {h * w} ({h}x{w}); got shape {arr.shape}"
            )
        arr = arr.reshape(-1, h, w)
    elif arr.ndim == 3:
        if arr.shape[1:] != (h, w):
            raise ValueError(
                f"{fn}: images for {name!r} have size {arr.shape[1]}x{arr.shape[2]}, "
                f"expected {h}x{w}; got shape {arr.shape}"
            )
    else:
        raise ValueError(
            f"{fn}: images for {name!r} must have shape (M, {h * w}) or (M, {h}, {w}), "
            f"got {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{fn}: no images given for {name!r}")
    return arr


def _intensity_range(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """(0, 1) for probability-like images, else the common finite range."""
    finite = [a[np.isfinite(a)] for a in arrays]
    finite = [a for a in finite if a.size]
    if not finite:
        return 0.0, 1.0
    lo = float(min(a.min() for a in finite))
    hi = float(max(a.max() for a in finite))
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if hi <= lo:
        return lo - 0.5, hi + 0.5
    return lo, hi


def _tile(images: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
    """Stitch (M, h, w) images into a mosaic; gaps are NaN (drawn as background)."""
    m, h, w = images.shape
    ncols = max(1, min(ncols, m))
    nrows = math.ceil(m / ncols)
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), np.nan)
    for k in range(m):
        r, c = divmod(k, ncols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = images[k]
    return out


def _gray_cmap():
    return matplotlib.colormaps["gray"].with_extremes(bad="white")


def _grid_shape(n: int, max_cols: int = _MAX_COLS) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return math.ceil(n / ncols), ncols


def _panels(fig: Figure, n: int, max_cols: int = _MAX_COLS, **kw) -> list:
    """``n`` axes in a grid of at most ``max_cols`` columns (unused cells removed)."""
    nrows, ncols = _grid_shape(n, max_cols)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw).ravel()
    for ax in axes[n:]:
        ax.remove()
    return list(axes[:n])


def _robust_limit(arrays: Sequence[np.ndarray], q: float = 99.5, margin: float = 1.1,
                  floor: float = 0.0) -> float:
    vals = [np.abs(a[np.isfinite(a)]) for a in arrays]
    vals = [v for v in vals if v.size]
    lim = float(np.percentile(np.concatenate(vals), q)) * margin if vals else 0.0
    lim = max(lim, floor)
    return lim if lim > 0 else 1.0


def _class_colors(n: int) -> list:
    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(i / (n - 1)) for i in range(n)]


def _prepare_labels(labels: Any, sizes: Mapping[str, int], class_names, fn: str):
    """Map labels to class indices.

    Returns ``({variant: idx array or None}, class_names_list)``.  ``labels``
    is None, one (N,) array shared by all variants, or a dict of per-variant
    label arrays.  With ``class_names`` the labels must be integers in
    ``[0, len(class_names))``; without, the sorted distinct label values are
    the classes.
    """
    if labels is None:
        return {k: None for k in sizes}, []
    if isinstance(labels, Mapping):
        labels = {str(k): v for k, v in labels.items()}
        missing = [k for k in sizes if k not in labels]
        if missing:
            raise ValueError(f"{fn}: labels dict has no entry for variant(s) {missing}")
        raw = {k: labels[k] for k in sizes}
    else:
        raw = {k: labels for k in sizes}
    arrs = {}
    for k, v in raw.items():
        a = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        a = a.reshape(-1) if a.ndim == 2 and 1 in a.shape else a
        if a.ndim != 1:
            raise ValueError(f"{fn}: labels for {k!r} must be 1-D, got shape {a.shape}")
        if a.shape[0] != sizes[k]:
            raise ValueError(
                f"{fn}: {a.shape[0]} labels for {k!r} but {sizes[k]} codes; lengths must match"
            )
        arrs[k] = a
    if class_names is not None:
        names = [str(c) for c in class_names]
        if not names:
            raise ValueError(f"{fn}: class_names is empty")
        out = {}
        for k, a in arrs.items():
            if a.dtype.kind not in "iub":
                af = np.asarray(a, dtype=float)
                if not np.all(np.isfinite(af)) or not np.all(af == np.round(af)):
                    raise ValueError(
                        f"{fn}: with class_names the labels must be integer class ids; "
                        f"labels for {k!r} have dtype {a.dtype}"
                    )
                a = af
            idx = np.asarray(a, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
                raise ValueError(
                    f"{fn}: labels for {k!r} range over [{idx.min()}, {idx.max()}] but there "
                    f"are only {len(names)} class_names"
                )
            out[k] = idx
        return out, names
    uniq = np.unique(np.concatenate([a for a in arrs.values()]))
    out = {k: np.searchsorted(uniq, a) for k, a in arrs.items()}
    return out, [str(u) for u in uniq]


def _scatter(ax, xy: np.ndarray, idx: np.ndarray | None, colors: list, alpha: float = 0.6):
    """Scatter 2-D points coloured by class index, in a fixed shuffled order
    so that no class systematically hides another."""
    keep = np.all(np.isfinite(xy), axis=1)
    xy = xy[keep]
    n = xy.shape[0]
    order = np.random.default_rng(0).permutation(n)
    size = 2.0 if n > 5000 else 4.0 if n > 1000 else 9.0
    if idx is None:
        c = "C0"
    else:
        c = np.asarray(colors)[idx[keep][order]]
    ax.scatter(xy[order, 0], xy[order, 1], s=size, c=c, alpha=alpha, linewidths=0,
               rasterized=n > 20000)
    return int((~keep).sum())


def _class_legend(fig: Figure, names: list[str], colors: list, title: str | None = None):
    if not names:
        return
    handles = [Line2D([], [], marker="o", linestyle="", color=c, markersize=6, label=nm)
               for nm, c in zip(names, colors)]
    fig.legend(handles=handles, loc="outside right center", frameon=False,
               title=title, fontsize=9)


# --------------------------------------------------------------------------
# latent codes
# --------------------------------------------------------------------------


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
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        t = k
        notes = []
        if a.shape[1] > 2:
            notes.append(f"first 2 of {a.shape[1]} dims")
        if hidden:
            notes.append(f"{hidden} non-finite hidden")
        if notes:
            t += "\n(" + ", ".join(notes) + ")"
        ax.set_title(t, fontsize=10)
    _class_legend(fig, names, colors)
    if title:
        fig.suptitle(title)
    return fig


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


def density_grid_points(extent: Sequence[float], grid_size: int) -> np.ndarray:
    """(G*G, 2) points of a regular grid over ``extent = (xmin, xmax, ymin, ymax)``.

    Evaluate the log density at these points and ``reshape(G, G)`` the result
    to get the array :func:`prior_density` expects (row i is y = ys[i],
    column j is x = xs[j], ys increasing).
    """
    x0, x1, y0, y1 = _extent(extent, "density_grid_points")
    if int(grid_size) < 2:
        raise ValueError(f"density_grid_points: grid_size must be >= 2, got {grid_size}")
    xs = np.linspace(x0, x1, int(grid_size))
    ys = np.linspace(y0, y1, int(grid_size))
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _extent(extent: Any, fn: str) -> tuple[float, float, float, float]:
    try:
        e = tuple(float(v) for v in extent)
    except TypeError:
        raise ValueError(f"{fn}: extent must be (xmin, xmax, ymin, ymax), got {extent!r}") from None
    if len(e) != 4 or not all(math.isfinite(v) for v in e) or e[0] >= e[1] or e[2] >= e[3]:
        raise ValueError(f"{fn}: extent must be finite (xmin, xmax, ymin, ymax) with "
                         f"xmin < xmax and ymin < ymax, got {extent!r}")
    return e


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
    :func:`density_grid_points` (row i <-> y, column j <-> x, origin lower
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
    e = _extent(extent, fn)
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
        ax.set_xlim(e[0], e[1])
        ax.set_ylim(e[2], e[3])
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        if k:
            ax.set_title(k, fontsize=10)
    cb = fig.colorbar(cf, ax=axes, shrink=0.8, pad=0.02,
                      format=FuncFormatter(lambda v, _: f"{round(v, 1) + 0.0:g}"))
    cb.set_label("log p(z)")
    _class_legend(fig, names, colors)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------


def image_grid(
    images: Mapping[str, Any],
    ncols: int,
    title: str | None = None,
    image_shape: tuple[int, int] = IMAGE_SHAPE,
) -> Figure:
    """Per variant a mosaic of images with ``ncols`` columns; panels side by side.

    Images may be (M, h*w), (M, h, w) or (M, 1, h, w).  All panels share the
    grey scale: [0, 1] when every value lies there, else the common range.
    """
    fn = "image_grid"
    if int(ncols) < 1:
        raise ValueError(f"{fn}: ncols must be >= 1, got {ncols}")
    ims = {k: _images(v, fn, k, image_shape) for k, v in _variants(images, fn, "images").items()}
    vmin, vmax = _intensity_range(list(ims.values()))
    mosaics = {k: _tile(v, int(ncols)) for k, v in ims.items()}
    ratio = max(m.shape[0] / m.shape[1] for m in mosaics.values())
    nrows, pcols = _grid_shape(len(ims))
    pw = min(0.45 * min(int(ncols), max(v.shape[0] for v in ims.values())) + 0.3, 5.5)
    fig = Figure(figsize=(pw * pcols + 0.3, (pw * ratio + 0.3) * nrows + (0.4 if title else 0.1)),
                 layout="constrained")
    axes = _panels(fig, len(ims))
    cmap = _gray_cmap()
    for ax, (k, m) in zip(axes, mosaics.items()):
        ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(k, fontsize=10)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def manifold_codes(axis_values: Any) -> np.ndarray:
    """(G*G, 2) codes of the regular grid that :func:`manifold` expects.

    Code k = i*G + j is ``(axis_values[j], axis_values[i])``: j walks along
    z1 (left to right), i along z2 (drawn bottom to top).
    """
    v = _to_numpy(axis_values).reshape(-1)
    if v.size < 1:
        raise ValueError("manifold_codes: axis_values is empty")
    g1, g2 = np.meshgrid(v, v)
    return np.stack([g1.ravel(), g2.ravel()], axis=1)


def manifold(
    images: Mapping[str, Any],
    grid_size: int,
    axis_values: Mapping[str, Any] | Any | None = None,
    image_shape: tuple[int, int] = IMAGE_SHAPE,
    title: str | None = None,
) -> Figure:
    """Decoded images of a regular GxG code grid, stitched, one panel per variant.

    ``images[v]`` has G*G rows in the order of :func:`manifold_codes`
    (image k = i*G + j decodes ``(values[j], values[i])``); z1 increases to the
    right, z2 upwards.  ``axis_values`` (a (G,) array shared by all variants or
    a dict of them) labels the ticks with the code values, e.g. normal
    quantiles for a VAE.  The stitched image is (G*h, G*w) pixels, no gaps.
    """
    fn = "manifold"
    g = int(grid_size)
    if g < 1:
        raise ValueError(f"{fn}: grid_size must be >= 1, got {grid_size}")
    h, w = image_shape
    ims = {k: _images(v, fn, k, image_shape) for k, v in _variants(images, fn, "images").items()}
    for k, v in ims.items():
        if v.shape[0] != g * g:
            raise ValueError(f"{fn}: {v.shape[0]} images for {k!r} but grid_size={g} needs "
                             f"{g * g} (= grid_size**2)")
    if axis_values is None:
        vals = {k: None for k in ims}
    elif isinstance(axis_values, Mapping):
        av = {str(k): v for k, v in axis_values.items()}
        missing = [k for k in ims if k not in av]
        if missing:
            raise ValueError(f"{fn}: axis_values has no entry for variant(s) {missing}")
        vals = {k: None if av[k] is None else _to_numpy(av[k]).reshape(-1) for k in ims}
    else:
        v = _to_numpy(axis_values).reshape(-1)
        vals = {k: v for k in ims}
    for k, v in vals.items():
        if v is not None and v.size != g:
            raise ValueError(f"{fn}: axis_values for {k!r} has {v.size} values, expected "
                             f"grid_size={g}")
    vmin, vmax = _intensity_range(list(ims.values()))
    nrows, ncols = _grid_shape(len(ims))
    side = 4.2 if g <= 15 else 5.2
    fig = Figure(figsize=(side * ncols + 0.3, side * nrows + (0.5 if title else 0.2)),
                 layout="constrained")
    axes = _panels(fig, len(ims))
    cmap = _gray_cmap()
    step = max(1, math.ceil(g / 8))
    for ax, (k, v) in zip(axes, ims.items()):
        big = np.empty((g * h, g * w))
        for i in range(g):
            row = g - 1 - i  # z2 increases upwards
            for j in range(g):
                big[row * h:(row + 1) * h, j * w:(j + 1) * w] = v[i * g + j]
        ax.imshow(big, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(k, fontsize=10)
        values = vals[k]
        if values is None:
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            sel = list(range(0, g, step))
            ax.set_xticks([j * w + w / 2 - 0.5 for j in sel])
            ax.set_xticklabels([f"{values[j]:.2g}" for j in sel], fontsize=8)
            ax.set_yticks([(g - 1 - i) * h + h / 2 - 0.5 for i in sel])
            ax.set_yticklabels([f"{values[i]:.2g}" for i in sel], fontsize=8)
            ax.set_xlabel("$z_1$")
            ax.set_ylabel("$z_2$")
    if title:
        fig.suptitle(title)
    return fig


def reconstructions(
    originals: Any,
    recons: Mapping[str, Any],
    image_shape: tuple[int, int] = IMAGE_SHAPE,
    title: str | None = None,
) -> Figure:
    """First row the M originals, then one row per variant with its reconstructions.

    One axes per row (labelled on the left); all rows share the grey scale.
    """
    fn = "reconstructions"
    orig = _images(originals, fn, "originals", image_shape)
    rec = {k: _images(v, fn, k, image_shape) for k, v in _variants(recons, fn, "images").items()}
    m = orig.shape[0]
    for k, v in rec.items():
        if v.shape[0] != m:
            raise ValueError(f"{fn}: {v.shape[0]} reconstructions for {k!r} but {m} "
                             f"originals; lengths must match")
    rows = {"original": orig, **rec}
    vmin, vmax = _intensity_range(list(rows.values()))
    h, w = image_shape
    cell = 0.55 if m <= 16 else max(0.3, 9.0 / m)
    label_w = 0.25 + 0.075 * max(len(k) for k in rows)
    fig = Figure(figsize=(cell * m + label_w + 0.2,
                          cell * (h / w) * len(rows) + 0.15 * len(rows) + (0.5 if title else 0.2)),
                 layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    cmap = _gray_cmap()
    for ax, (k, v) in zip(axes, rows.items()):
        ax.imshow(_tile(v, m), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_ylabel(k, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------
# scalar summaries
# --------------------------------------------------------------------------


def _mean_std(a: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1) over finite seeds; std is 0 with one seed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(a, axis=axis)
        n = np.sum(np.isfinite(a), axis=axis)
        std = np.where(n > 1, np.nanstd(a, axis=axis, ddof=1) if a.shape[axis] > 1 else 0.0, 0.0)
    return mean, np.nan_to_num(std)


def spread_bars(
    spreads: Mapping[str, Any],
    class_names: Sequence[str] | None = None,
    title: str = "Per-class spread of the codes",
    ylabel: str = "spread",
) -> Figure:
    """Grouped bars: one group per class, one bar per variant.

    ``spreads[v]`` is an (n_seeds, n_classes) array (a 1-D (n_classes,) array
    counts as one seed).  Bars show the mean over seeds, error bars the sample
    standard deviation across seeds (none with a single seed).
    """
    fn = "spread_bars"
    sp = {}
    for k, v in _variants(spreads, fn, "(n_seeds, n_classes) arrays").items():
        a = _to_numpy(v)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{fn}: spreads for {k!r} must be a non-empty (n_seeds, n_classes) "
                             f"array, got shape {a.shape}")
        sp[k] = a
    ncls = {a.shape[1] for a in sp.values()}
    if len(ncls) != 1:
        raise ValueError(f"{fn}: variants disagree on the number of classes: "
                         f"{ {k: a.shape[1] for k, a in sp.items()} }")
    c = ncls.pop()
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    if len(names) != c:
        raise ValueError(f"{fn}: {len(names)} class_names for {c} classes")
    nv = len(sp)
    width = 0.8 / nv
    fig = Figure(figsize=(min(max(6.0, 0.12 * c * nv + 0.3 * c + 2.0), 16.0), 4.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(c)
    for i, (k, a) in enumerate(sp.items()):
        mean, std = _mean_std(a)
        ax.bar(x + (i - (nv - 1) / 2) * width, mean, width,
               yerr=std if a.shape[0] > 1 else None, capsize=2, label=k,
               color=f"C{i}", error_kw={"linewidth": 0.8})
    ax.set_xticks(x)
    long = max(len(n) for n in names) > 3
    ax.set_xticklabels(names, rotation=30 if long else 0, ha="right" if long else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(frameon=False, fontsize=9, ncols=min(nv, 4))
    seeds = sorted({a.shape[0] for a in sp.values()})
    if max(seeds) > 1:
        ax.text(1.0, 1.0, f"mean ± sd over {'/'.join(map(str, seeds))} seeds",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="0.35")
    return fig


def metric_bars(
    values: Mapping[str, Any],
    title: str = "",
    ylabel: str = "",
    style: str = "bar",
) -> Figure:
    """One bar per variant: mean over seeds, sample-std error bar, seeds as dots.

    ``style="point"`` draws the mean as a marker instead of a bar from zero,
    so the y axis zooms in on the values (better for e.g. ELBOs around -100).
    """
    fn = "metric_bars"
    if style not in ("bar", "point"):
        raise ValueError(f"{fn}: style must be 'bar' or 'point', got {style!r}")
    vals = {}
    for k, v in _variants(values, fn, "(n_seeds,) arrays").items():
        a = _to_numpy(v).reshape(-1)
        if a.size == 0:
            raise ValueError(f"{fn}: no values for {k!r}")
        vals[k] = a
    nv = len(vals)
    fig = Figure(figsize=(max(3.5, 1.0 * nv + 1.5), 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(nv)
    for i, (k, a) in enumerate(vals.items()):
        mean, std = _mean_std(a[:, None])
        yerr = std[0] if a.size > 1 else None
        if style == "bar":
            ax.bar(x[i], mean[0], 0.6, yerr=yerr, capsize=4, color=f"C{i}", alpha=0.85,
                   error_kw={"linewidth": 1.0})
        else:
            ax.errorbar(x[i], mean[0], yerr=yerr, fmt="o", color=f"C{i}", capsize=4,
                        markersize=7, linewidth=1.2)
        fin = a[np.isfinite(a)]
        if fin.size > 1:
            dx = 0.0 if style == "bar" else 0.15
            ax.scatter(np.full(fin.size, x[i] + dx), fin, s=10, color="k", zorder=3,
                       linewidths=0, alpha=0.7)
    ax.set_xticks(x)
    long = max(len(k) for k in vals) > 8
    ax.set_xticklabels(list(vals), rotation=30 if long else 0, ha="right" if long else "center")
    if style == "bar":
        ax.axhline(0.0, color="0.3", linewidth=0.6)
    else:
        ax.set_xlim(-0.6, nv - 0.4)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


# --------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------


def _runs(v: Any, fn: str, name: str) -> list[list[Mapping]]:
    if not isinstance(v, Sequence) or isinstance(v, (str, bytes)) or len(v) == 0:
        raise ValueError(f"{fn}: curves for {name!r} must be a non-empty list of metric dicts "
                         f"(or a list of such lists, one per seed)")
    if all(isinstance(r, Mapping) for r in v):
        return [list(v)]
    runs = []
    for r in v:
        if (not isinstance(r, Sequence) or isinstance(r, (str, bytes))
                or not all(isinstance(x, Mapping) for x in r)):
            raise ValueError(f"{fn}: curves for {name!r} mix metric dicts and other items; "
                             f"expected list[dict] or list[list[dict]]")
        runs.append(list(r))
    return runs


def _aggregate(runs: list[list[Mapping]], key: str):
    """Per epoch: mean, min, max, std over the seeds that report a finite value."""
    per_epoch: dict[float, list[float]] = {}
    for run in runs:
        seen = {}
        for line in run:
            if "epoch" not in line or line.get(key) is None:
                continue
            try:
                ep, val = float(line["epoch"]), float(line[key])
            except (TypeError, ValueError):
                continue
            if math.isfinite(ep) and math.isfinite(val):
                seen[ep] = val  # the last line of an epoch wins
        for ep, val in seen.items():
            per_epoch.setdefault(ep, []).append(val)
    if not per_epoch:
        return None
    ep = np.array(sorted(per_epoch))
    vals = [np.array(per_epoch[e]) for e in ep]
    mean = np.array([v.mean() for v in vals])
    lo = np.array([v.min() for v in vals])
    hi = np.array([v.max() for v in vals])
    std = np.array([v.std(ddof=1) if v.size > 1 else 0.0 for v in vals])
    n = np.array([v.size for v in vals])
    return ep, mean, lo, hi, std, n


def training_curves(
    curves: Mapping[str, Any],
    keys: Sequence[str] = ("train_elbo", "test_elbo"),
    band: str = "minmax",
    ylim: tuple[float, float] | None = None,
    ylabel: str | None = None,
    title: str | None = None,
) -> Figure:
    """Learning curves, one panel per variant, shared y axis.

    ``curves[v]`` is a list of metric dicts (one run) or a list of such lists
    (one per seed); each dict needs ``"epoch"`` and any of ``keys`` (lines
    missing a key, or with a non-finite value, are skipped for that key).  With
    several seeds the mean is drawn with a shaded band: ``"minmax"`` (min to
    max over seeds) or ``"std"`` (mean ± sample std).  By default the shared y
    limits ignore each curve's first epoch (usually far off the scale) when
    there are more than 3 epochs; pass ``ylim`` to override.
    """
    fn = "training_curves"
    if band not in ("minmax", "std"):
        raise ValueError(f"{fn}: band must be 'minmax' or 'std', got {band!r}")
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError(f"{fn}: no metric keys given")
    data = {}
    for k, v in _variants(curves, fn, "list of metric dicts").items():
        runs = _runs(v, fn, k)
        agg = {key: _aggregate(runs, key) for key in keys}
        if all(a is None for a in agg.values()):
            raise ValueError(f"{fn}: variant {k!r} has no line with 'epoch' and a finite value "
                             f"for any of {keys}")
        data[k] = (len(runs), agg)

    nrows, ncols = _grid_shape(len(data))
    fig = Figure(figsize=(3.8 * ncols + 0.4, 3.2 * nrows + 0.6), layout="constrained")
    axes = _panels(fig, len(data), sharey=True)
    y_for_limits = []
    for ax, (k, (nseeds, agg)) in zip(axes, data.items()):
        for c, key in enumerate(keys):
            a = agg[key]
            if a is None:
                continue
            ep, mean, lo, hi, std, _ = a
            if band == "std":
                lo, hi = mean - std, mean + std
            color = f"C{c}"
            ax.plot(ep, mean, color=color, linewidth=1.5,
                    marker="o" if ep.size <= 25 else None, markersize=3)
            if nseeds > 1:
                ax.fill_between(ep, lo, hi, color=color, alpha=0.2, linewidth=0)
            start = 1 if ep.size > 3 else 0
            y_for_limits += [mean[start:], lo[start:], hi[start:]]
        ax.set_title(k if nseeds == 1 else f"{k} ({nseeds} seeds)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if ylabel is None:
        ylabel = "ELBO" if all(key.lower().endswith("elbo") for key in keys) else ", ".join(keys)
    for ax in axes:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)
    if ylim is not None:
        axes[0].set_ylim(*ylim)
    elif y_for_limits:
        allv = np.concatenate(y_for_limits)
        allv = allv[np.isfinite(allv)]
        if allv.size:
            lo, hi = float(allv.min()), float(allv.max())
            pad = 0.05 * (hi - lo) if hi > lo else max(1.0, abs(hi) * 0.05)
            axes[0].set_ylim(lo - pad, hi + pad)
    names = {"train_elbo": "train", "test_elbo": "test"}
    handles = [Line2D([], [], color=f"C{c}", linewidth=1.5, label=names.get(key, key))
               for c, key in enumerate(keys)]
    if any(n > 1 for n, _ in data.values()):
        handles.append(Patch(color="0.6", alpha=0.4,
                             label="min–max over seeds" if band == "minmax" else "± 1 sd"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False,
               fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
