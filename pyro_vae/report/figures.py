"""The report's figures: which plot to draw from which arrays, and saving them under figures/.

Each entry of :data:`FIGURES` returns (file name, draw) pairs; draw() returns a matplotlib Figure
and its caption. A figure that cannot be drawn is skipped with a log line, never the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pyro_vae import plots
from pyro_vae.data import DATASETS
from pyro_vae.evaluation.evaluate import EVALUATION_ARRAYS
from pyro_vae.evaluation.metrics import METRICS, direction
from pyro_vae.report.document import Figure
from pyro_vae.report.tables import counted, direction_text

__all__ = ["FIGURES", "make_figures"]


@dataclass
class _Inputs:
    seed: str  # the figures of one seed stand for the study ("0", or "0/1" when the variants' runs differ)
    variants: list[str]
    arrays: dict[str, dict[str, np.ndarray]]  # variant -> evaluation.npz of that seed's run
    configs: dict[str, dict]
    results: list[dict]
    values: dict[str, dict[str, list[float]]]
    n_seeds: int

    def each(self, key: str) -> dict[str, np.ndarray]:
        return {v: self.arrays[v][key] for v in self.variants}

    def classes(self, variant: str) -> Sequence[str]:
        """The class names of the variant's own dataset."""
        return DATASETS[self.configs[variant]["dataset"]].class_names

    @property
    def class_names(self) -> Sequence[str]:
        """The classes of the variants' dataset: the figures that name classes are drawn per dataset (_by_dataset)."""
        return self.classes(self.variants[0])


Draw = Callable[[], tuple]  # () -> (matplotlib Figure, caption)


def _codes(d: _Inputs) -> list[tuple[str, Draw]]:
    two_d = [v for v in d.variants if d.arrays[v]["codes"].shape[1] >= 2]
    return [("codes", lambda: (plots.code_scatter(
        {v: d.arrays[v]["codes"] for v in two_d}, {v: d.arrays[v]["labels"] for v in two_d}, class_names=d.class_names,
        title=f"Test-image codes (posterior means), seed {d.seed}; dashed: 1, 2, 3 σ of N(0, I)"),
        f"Codes of the test images (seed {d.seed}), coloured by class, with the 1-2-3 σ circles of N(0, I); "
        "same axes for every variant."))] if two_d else []


def _sampled_codes(d: _Inputs) -> list[tuple[str, Draw]]:
    """One posterior draw per test image beside the means: the aggregate posterior the KL term shapes,
    and what the Generative Deep Learning book plots (its encoder returns z = mu + sigma * eps)."""
    shown = [v for v in d.variants if "sampled_codes" in d.arrays[v] and d.arrays[v]["sampled_codes"].shape[1] >= 2
             and not np.array_equal(d.arrays[v]["sampled_codes"], d.arrays[v]["codes"])]  # a delta guide's draws are its means
    if not shown:
        return []
    codes = {f"{v}: {kind}": d.arrays[v][key] for v in shown for kind, key in (("means", "codes"), ("sampled", "sampled_codes"))}
    labels = {f"{v}: {kind}": d.arrays[v]["labels"] for v in shown for kind in ("means", "sampled")}
    return [("codes_sampled", lambda: (plots.code_scatter(
        codes, labels, class_names=d.class_names,
        title=f"Test-image codes: posterior means beside one posterior draw each, seed {d.seed}"),
        f"Posterior means (as above) beside one draw z ~ q(z|x) per test image (seed {d.seed}): the draws are a sample "
        "of the aggregate posterior q(z), which the KL term pulls towards the prior and which claim 2 is judged on "
        "(variants with a delta guide are left out: their draw is their mean)."))]


def _fidelity_distance(d: _Inputs) -> list[tuple[str, Draw]]:
    shown = [v for v in d.variants if "hole_band_distance" in d.arrays[v]]
    if not shown:
        return []
    bands = {v: (d.arrays[v]["hole_band_distance"], d.arrays[v]["hole_band_precision"], d.arrays[v]["hole_band_reencode"])
             for v in shown}
    return [("fidelity_distance", lambda: (plots.fidelity_by_distance(
        bands, title=f"Decodes of the recipe codes by distance to the nearest training code, seed {d.seed}"),
        f"Claim 1 (seed {d.seed}): codes drawn by the shared recipe inside the training codes' hull, split into tenths by "
        "their distance to the nearest training code (in that model's median nearest-neighbour spacings); each point is "
        "a tenth's fidelity relative to the model's own reconstructions (dashed: as good). A model with holes loses "
        "fidelity as codes get farther from its training codes; the primary test is the nearest tenth's precision minus "
        "the farthest's."))]


def _samples(kind: str, title: str, caption: str) -> Callable[[_Inputs], list[tuple[str, Draw]]]:
    return lambda d: [(f"{kind}_samples", lambda: (plots.image_grid(
        d.each(f"{kind}_images"), ncols=8, title=f"{title}, seed {d.seed}"), caption))]


def _manifold(d: _Inputs) -> list[tuple[str, Draw]]:
    shown = [v for v in d.variants if "manifold" in d.arrays[v]]
    return [("manifold", lambda: (plots.manifold(
        {v: d.arrays[v]["manifold"] for v in shown}, grid_size=len(d.arrays[shown[0]]["manifold_axis"]),
        axis_values={v: d.arrays[v]["manifold_axis"] for v in shown}, title=f"Decoded code grid, seed {d.seed}"),
        "Decoded regular grid of codes: normal quantiles (3%–97%) for probabilistic guides, the 1st–99th "
        "percentile range of the codes for deterministic ones (tick labels give the code values)."))] if shown else []


# What the top row of the reconstructions shows, by the runs' binarisation.
_SEEN = {"dynamic": "binarised test images (one fixed draw)", "fixed": "binarised test images (one fixed draw)",
         "none": "the grey test images, as the models see them"}


def _reconstructions(d: _Inputs) -> list[tuple[str, Draw]]:
    originals = d.arrays[d.variants[0]]["originals"]
    same = all(np.array_equal(d.arrays[v]["originals"], originals) for v in d.variants)
    return [("reconstructions", lambda: (plots.reconstructions(
        originals, d.each("reconstructions"), title=f"Reconstructions of the same test images, seed {d.seed}"),
        f"Top row: {_SEEN.get(d.configs[d.variants[0]]['binarize'], 'the test images as the models see them')}; below: each variant's reconstruction of them "
        "(the mean image of p(x | z) at the posterior mean)."
        + ("" if same else " Note: the variants binarise the test images differently; the top row is the first variant's.")))]


def _spread(name: str, key: str, suptitle: str, ylabel: str, caption: str):
    def figures(d: _Inputs) -> list[tuple[str, Draw]]:
        def draw():
            spreads = {v: np.array([r["evaluation"][key] for r in d.results if r["variant"] == v]) for v in d.variants}
            fig = plots.spread_bars(spreads, class_names=d.class_names, title="", ylabel=ylabel)
            fig.suptitle(suptitle)  # a title of spread_bars' own would collide with its "mean ± sd over n seeds" note
            return fig, caption.format(seeds=counted(d.n_seeds, "seed"))
        return [(name, draw)]
    return figures


def _training_curves(d: _Inputs) -> list[tuple[str, Draw]]:
    curves = {v: [r["training_curve"] for r in d.results if r["variant"] == v] for v in d.variants}
    # Runs of different lengths (stopped on a plateau) are drawn seed by seed: a mean would jump where one ends.
    each = len({len(c) for runs in curves.values() for c in runs}) > 1
    shown = ("each seed's curve, a dot where it stopped" if each else "band: min–max over seeds")
    return [("training_curves", lambda: (plots.training_curves(
        curves, band="each" if each else "minmax", ylabel="objective bound (nats / image)",
        title="Training curves (each variant's own, β-scaled objective)"),
        f"Train and test value of each variant's training objective per epoch ({shown}). Bounds of "
        "different objectives (β = 0 drops the prior's terms) are not comparable across variants."))]


def _marginals(d: _Inputs) -> list[tuple[str, Draw]]:
    return [("marginals", lambda: (plots.marginal_densities(
        d.each("codes"), title=f"Marginal densities of the codes (ArviZ KDE) against N(0, 1), seed {d.seed}"),
        "Kernel density of each code axis against the N(0, 1) density (dashed), same x range for every variant."))]


def _prior_density(d: _Inputs) -> list[tuple[str, Draw]]:
    def draw(v: str):
        prior = d.configs[v]["prior"]
        return plots.prior_density(
            d.arrays[v]["codes"], d.arrays[v]["labels"], d.arrays[v]["prior_log_density"], d.arrays[v]["prior_extent"],
            class_names=d.classes(v), title=f"{v}: learned prior ({prior}) under its codes, seed {d.seed}"), \
            f"{v}: log density of the learned {prior} prior, with the test codes on top."
    learned = [v for v in d.variants
               if d.configs[v].get("prior") != "standard-normal" and "prior_log_density" in d.arrays[v]]
    return [(f"prior_density_{v}", lambda v=v: draw(v)) for v in learned]


def _metric_bars(d: _Inputs) -> list[tuple[str, Draw]]:
    def has(key: str) -> bool:
        return any(key in d.values[v] for v in d.variants)

    def draw(m):
        better, target = direction(m.key)
        fig = plots.metric_bars({v: d.values[v][m.key] for v in d.variants if m.key in d.values[v]},
                                title=f"{m.label} ({direction_text(better, target)} is better)"
                                if better != "target" else f"{m.label} (target {target:.4g})",
                                style="point" if m.point else "bar", ylabel=m.unit)
        if target is not None:
            fig.axes[0].axhline(target, color="C3", linestyle="--", linewidth=1.0)
        return fig, m.label
    shown = sorted((m for m in METRICS.values() if m.bar and has(m.key)
                    and not (m.stands_in_for and has(m.stands_in_for))), key=lambda m: m.bar)
    return [(f"metric_{m.key}", lambda m=m: draw(m)) for m in shown]


def _by_dataset(figures: Callable[[_Inputs], list[tuple[str, Draw]]]) -> Callable[[_Inputs], list[tuple[str, Draw]]]:
    """Figures that name classes, drawn once per dataset when the variants' datasets differ, each
    labelled with its own dataset's classes (MNIST's digits are not Fashion-MNIST's T-shirts)."""
    def split(d: _Inputs) -> list[tuple[str, Draw]]:
        datasets = dict.fromkeys(d.configs[v]["dataset"] for v in d.variants)
        if len(datasets) == 1:
            return figures(d)
        made = []
        for dataset in datasets:
            shown = [v for v in d.variants if d.configs[v]["dataset"] == dataset]
            for name, draw in figures(replace(d, variants=shown)):
                made.append((f"{name}_{dataset}", lambda draw=draw, dataset=dataset, shown=shown: _noted(
                    draw(), f" ({dataset}: {', '.join(shown)})")))
        return made
    return split


def _noted(drawn: tuple, note: str) -> tuple:
    fig, caption = drawn
    return fig, caption + note


# name -> the figures of that name, in drawing order; the report places them by name.
FIGURES: dict[str, Callable[[_Inputs], list[tuple[str, Draw]]]] = {
    "codes": _by_dataset(_codes),
    "codes_sampled": _by_dataset(_sampled_codes),
    "fidelity_distance": _fidelity_distance,
    "prior_samples": _samples("prior", "Decoded draws from each model's prior",
                              "Images decoded from codes drawn from each model's prior (N(0, I) unless a learned prior "
                              "is named; a β = 0 autoencoder never trained with it)."),
    "box_samples": _samples("box", "Decoded uniform draws over the box the codes occupy",
                            "Images decoded from codes drawn uniformly over the bounding box of each model's test "
                            "codes: how one samples a plain AE."),
    "manifold": _manifold,
    "reconstructions": _reconstructions,
    "class_spread": _by_dataset(_spread("class_spread", "class_spread", "Per-class spread of the codes (raw code units)",
                            "RMS distance to class centre",
                            "Per-class spread (RMS distance of a class's codes to its centre), mean ± sd over {seeds}. "
                            "Raw units differ between variants; compare the shape across classes, and the "
                            "whitened figure for scale-free spreads.")),
    "class_spread_whitened": _by_dataset(_spread("class_spread_whitened", "white_class_spread",
                                     "Per-class spread after whitening the codes (scale-free)", "whitened RMS distance",
                                     "The same after whitening each variant's codes to identity covariance: no variant "
                                     "can look even by shrinking its space.")),
    "training_curves": _training_curves,
    "marginals": _marginals,
    "prior_density": _prior_density,
    "metric_bars": _metric_bars,
}


def make_figures(chosen: dict[str, tuple[int, Path]], out_dir: Path, results: list[dict], values: dict,
                 n_seeds: int, log: Callable[[str], None]) -> dict[str, list[Figure]]:
    """Save the figures of the runs in `chosen` (variant -> (seed, run folder), one run standing for
    each variant) under out_dir/figures; returns name -> Figure blocks (paths relative), drawn ones only."""
    variants = list(chosen)
    arrays = {}
    for v, (_, run) in chosen.items():
        with np.load(run / EVALUATION_ARRAYS) as npz:
            arrays[v] = {k: npz[k] for k in npz.files}
    configs = {v: next(r["config"] for r in results if r["variant"] == v and r["seed"] == seed) for v, (seed, _) in chosen.items()}
    seed = "/".join(str(s) for s in dict.fromkeys(seed for seed, _ in chosen.values()))
    inputs = _Inputs(seed, variants, arrays, configs, results, values, n_seeds)
    made: dict[str, list[Figure]] = {}
    for name, figures in FIGURES.items():
        for file_name, draw in figures(inputs):
            try:
                fig, caption = draw()
            except (ValueError, KeyError, IndexError, np.linalg.LinAlgError) as e:  # one bad figure must not sink the report
                log(f"report: skipped figure {file_name} ({type(e).__name__}: {e})")
                continue
            plots.save_figure(fig, out_dir / "figures" / f"{file_name}.png")
            made.setdefault(name, []).append(Figure(f"figures/{file_name}.png", caption))
    return made
