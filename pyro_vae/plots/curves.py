"""Learning curves from the metric logs of runs, several seeds per variant."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from pyro_vae.plots._common import _grid_shape, _panels, _variants


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


def _points(run: list[Mapping], key: str) -> dict[float, float]:
    """A run's finite values of `key` by epoch (the last line of an epoch wins)."""
    seen = {}
    for line in run:
        if "epoch" not in line or line.get(key) is None:
            continue
        try:
            ep, val = float(line["epoch"]), float(line[key])
        except (TypeError, ValueError):
            continue
        if math.isfinite(ep) and math.isfinite(val):
            seen[ep] = val
    return seen


def _aggregate(runs: list[list[Mapping]], key: str):
    """Per epoch: mean, min, max, std over the seeds that report a finite value."""
    per_epoch: dict[float, list[float]] = {}
    for run in runs:
        for ep, val in _points(run, key).items():
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


def _each_run(ax, runs: list[list[Mapping]], key: str, color: str) -> list[np.ndarray]:
    """Every run's own curve of `key`, a dot at its end; the values the y limits should cover."""
    shown = []
    for run in runs:
        points = _points(run, key)
        if not points:
            continue
        ep = np.array(sorted(points))
        val = np.array([points[e] for e in ep])
        ax.plot(ep, val, color=color, linewidth=0.9, alpha=0.75)
        ax.plot(ep[-1:], val[-1:], color=color, marker="o", markersize=3.5, linestyle="none")
        shown.append(val[max(1, ep.size // 10):] if ep.size > 3 else val)
    return shown


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
    max over seeds) or ``"std"`` (mean ± sample std); ``"each"`` draws every
    seed's own curve instead, a dot at its last epoch (for runs of different
    lengths, such as runs stopped on a plateau, whose mean would jump where a
    seed ends).  By default the shared y limits ignore each curve's first epoch
    (usually far off the scale) when there are more than 3 epochs, and with
    ``"each"`` its first tenth; pass ``ylim`` to override.
    """
    fn = "training_curves"
    if band not in ("minmax", "std", "each"):
        raise ValueError(f"{fn}: band must be 'minmax', 'std' or 'each', got {band!r}")
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError(f"{fn}: no metric keys given")
    data, runs_of = {}, {}
    for k, v in _variants(curves, fn, "list of metric dicts").items():
        runs = _runs(v, fn, k)
        agg = {key: _aggregate(runs, key) for key in keys}
        if all(a is None for a in agg.values()):
            raise ValueError(f"{fn}: variant {k!r} has no line with 'epoch' and a finite value "
                             f"for any of {keys}")
        data[k] = (len(runs), agg)
        runs_of[k] = runs

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
            if band == "each":
                y_for_limits += _each_run(ax, runs_of[k], key, color)
                continue
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
    if band == "each":
        handles.append(Line2D([], [], color="0.4", marker="o", linestyle="none", markersize=4, label="a seed's last epoch"))
    elif any(n > 1 for n, _ in data.values()):
        handles.append(Patch(color="0.6", alpha=0.4,
                             label="min–max over seeds" if band == "minmax" else "± 1 sd"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False,
               fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def fidelity_by_distance(bands: Mapping[str, tuple[Any, Any, Any]], title: str | None = None) -> Figure:
    """Claim 1 at a glance: decode fidelity of the recipe codes against their distance to the nearest
    training code, one line per variant.

    ``bands`` maps a variant to (distance, precision, reencode), arrays over the distance bands
    (nearest first): the band's mean distance in nearest-neighbour spacings, its k-NN precision and its
    re-encoding error, each relative to the model's reconstructions (1: as good as they are).
    """
    fn = "fidelity_by_distance"
    series = _variants(bands, fn, "(distance, precision, reencode) arrays")
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for name, (distance, precision, reencode) in series.items():
        d = np.asarray(distance, dtype=float)
        if d.ndim != 1 or len(d) != len(precision) or len(d) != len(reencode):
            raise ValueError(f"{fn}: {name!r} needs three arrays of one length (one value per band)")
        for ax, y in zip(axes, (precision, reencode)):
            ax.plot(np.maximum(d, 1e-3), np.asarray(y, dtype=float), marker="o", label=name)
    for ax, label in zip(axes, ("k-NN precision / reconstructions'", "re-encoding error / reconstructions'")):
        ax.set_xscale("log")
        ax.axhline(1.0, color="0.5", linestyle="--", linewidth=1)
        ax.set_xlabel("distance to the nearest training code (spacings), band mean")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    return fig
