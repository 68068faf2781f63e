"""Input checks and layout helpers shared by the figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

IMAGE_SHAPE = (28, 28)
_MAX_COLS = 4  # panels per row before wrapping


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


def _code_axes(ax, extent: Sequence[float]) -> None:
    """A code-space panel: limits ``(xmin, xmax, ymin, ymax)``, equal scales, axes named z1 and z2."""
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")


def _finish(fig: Figure, title: str | None, names: Sequence[str] = (), colors: Sequence = ()) -> Figure:
    """The class legend (if there are classes) and the figure title (if any)."""
    _class_legend(fig, list(names), list(colors))
    if title:
        fig.suptitle(title)
    return fig
