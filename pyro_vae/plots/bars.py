"""Bar charts of scalar summaries: per-class spreads, one metric per variant; mean and spread over seeds."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pyro_vae.plots._common import _to_numpy, _variants


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
