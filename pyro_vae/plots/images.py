"""Figures of images: mosaics of samples, the decoded code grid (manifold), reconstructions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pyro_vae.plots._common import (
    IMAGE_SHAPE,
    _gray_cmap,
    _grid_shape,
    _images,
    _intensity_range,
    _panels,
    _tile,
    _to_numpy,
    _variants,
)


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


def manifold(
    images: Mapping[str, Any],
    grid_size: int,
    axis_values: Mapping[str, Any] | Any | None = None,
    image_shape: tuple[int, int] = IMAGE_SHAPE,
    title: str | None = None,
) -> Figure:
    """Decoded images of a regular GxG code grid, stitched, one panel per variant.

    ``images[v]`` has G*G rows in the order of :func:`pyro_vae.evaluation.grid.manifold_codes`
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
