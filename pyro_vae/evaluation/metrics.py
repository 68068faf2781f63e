"""Every metric a run's evaluation reports, defined once: its label, which way is better, its group.

Adding a metric means computing it (in evaluation/) and adding its row to :data:`METRICS`; reports,
tables, figures and claims read everything they need about it from here.

    metric("share_in_95").label         # "share in 95% ball"
    direction("max_radius", n_codes=2000, latent_dim=2)   # ("target", 3.6...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from scipy.stats import chi2

__all__ = ["Metric", "METRICS", "GROUPS", "SAMPLERS", "REFERENCE_SAMPLERS", "QUALITIES", "metric", "direction",
           "expected_max_radius", "sample_key", "flat_metrics", "expected_keys", "requirements_met", "ranked",
           "headline_summary"]

NATS = "nats / image"
LIKELIHOOD, CENTRE, SPREAD, HOLES, QUALITY, BOOKKEEPING = (
    "Likelihood and bounds", "Centre and bounds", "Class spread", "Holes", "Sample quality", "Bookkeeping")
GROUPS = [LIKELIHOOD, CENTRE, SPREAD, HOLES, QUALITY, BOOKKEEPING]  # display order of the metric tables

# When a metric exists at all, as predicates on a run's config and evaluation: the report shows "—"
# where it does not, and the tests check evaluate_run against these.
REQUIREMENTS: dict[str, Callable[[dict, dict], bool]] = {
    "probabilistic guide": lambda config, evaluation: not evaluation.get("deterministic_guide"),
    "2-D codes": lambda config, evaluation: config.get("latent_dim") == 2,
    "codes above 2-D": lambda config, evaluation: config.get("latent_dim") != 2,
    "N(0, I) prior": lambda config, evaluation: config.get("prior", "standard-normal") == "standard-normal",
    "trained prior": lambda config, evaluation: config.get("beta", 1.0) > 0,  # beta = 0 drops the prior's terms
}


def expected_max_radius(n_codes: int, latent_dim: int) -> float:
    """Median of the largest norm among n_codes draws from N(0, I_d): where max_radius should sit."""
    return float(math.sqrt(chi2.ppf(0.5 ** (1.0 / max(int(n_codes), 1)), latent_dim)))


Target = float | Callable[[int, int | None, int | None], float | None]  # (n_classes, n_codes, latent_dim)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    group: str
    better: str | None = None  # "lower", "higher", "target", or None for numbers without a better side
    target: Target | None = None  # the ideal value when better == "target"
    requires: tuple[str, ...] = ()  # names in REQUIREMENTS; the metric is absent from runs failing one
    headline: int = 0  # > 0: column position in the report's table comparing all variants
    bar: int = 0  # > 0: position among the report's headline metric figures
    stands_in_for: str | None = None  # in figures: shown only where no variant has that metric
    unit: str = ""
    point: bool = False  # plotted as points: bars from zero would hide differences far from zero
    sampler: str | None = None  # sample-quality metrics: which codes were decoded...
    quality: str | None = None  # ...and which score of the images this is
    # Names in REQUIREMENTS a variant must meet for its value to be ranked (bolded, judged in a claim);
    # a variant failing one still shows the value, marked with ``caveat``.
    ranked_when: tuple[str, ...] = ()
    caveat: str = ""


def _max_radius(n_classes: int, n_codes: int | None, latent_dim: int | None) -> float | None:
    return expected_max_radius(n_codes, latent_dim) if n_codes and latent_dim else None


# Mardia's statistics of n draws from N(0, I_d): E b1 = d(d+1)(d+2)/n, E b2 -> d(d+2).
def _mardia_skewness(n_classes: int, n_codes: int | None, latent_dim: int | None) -> float | None:
    return latent_dim * (latent_dim + 1) * (latent_dim + 2) / n_codes if n_codes and latent_dim else None


def _mardia_kurtosis(n_classes: int, n_codes: int | None, latent_dim: int | None) -> float | None:
    return latent_dim * (latent_dim + 2) * (n_codes - 1) / (n_codes + 1) if n_codes and latent_dim else None



_PROBABILISTIC_2D = ("probabilistic guide", "2-D codes")
# Closeness to N(0, I) is a virtue only where N(0, I) is the prior (a learned prior has other targets).
_NULL = dict(ranked_when=("N(0, I) prior",), caveat="an N(0, I) statistic; this variant's prior is not N(0, I)")
_ROWS = [
    Metric("test_elbo", "test ELBO", LIKELIHOOD, "higher", requires=("probabilistic guide",), headline=1,
           unit=NATS, point=True),
    Metric("log_px_is", "log p(x) IS", LIKELIHOOD, "higher", requires=("probabilistic guide",), headline=2,
           bar=6, stands_in_for="log_px_exact", unit=NATS, point=True),
    Metric("log_px_exact", "log p(x) exact", LIKELIHOOD, "higher", requires=("2-D codes",), headline=3, bar=6,
           unit=NATS, point=True, ranked_when=("probabilistic guide",),
           caveat="under an N(0, I) prior a delta guide never trained its decoder with: not ranked"),
    Metric("gap_exact_minus_elbo", "gap exact − ELBO", LIKELIHOOD, "lower", requires=_PROBABILISTIC_2D, headline=4,
           unit=NATS),
    Metric("gap_exact_minus_is", "gap exact − IS", LIKELIHOOD, "target", 0.0, requires=_PROBABILISTIC_2D, headline=5,
           unit=NATS),
    Metric("pareto_k_share_above_0_7", "share Pareto k > 0.7", LIKELIHOOD, "lower", requires=("probabilistic guide",)),
    # The sample-size-aware threshold min(1 - 1/log10 K, 0.7) of Vehtari et al. (PSIS, 2024).
    Metric("pareto_k_share_above_threshold", "share Pareto k > threshold", LIKELIHOOD, "lower",
           requires=("probabilistic guide",), headline=6),
    Metric("pareto_k_threshold", "Pareto k threshold", BOOKKEEPING, requires=("probabilistic guide",)),
    Metric("pareto_k_median", "median Pareto k", LIKELIHOOD, "lower", requires=("probabilistic guide",)),
    Metric("recon_bce", "recon BCE", LIKELIHOOD, "lower", headline=7, unit=NATS),
    # The training objective's own value (β-scaled): comparable only between variants with one objective.
    Metric("final_train_elbo", "final train bound", LIKELIHOOD, unit=NATS, point=True),
    Metric("final_test_elbo", "final test bound", LIKELIHOOD, unit=NATS, point=True),
    Metric("active_units", "active units", LIKELIHOOD, "higher", requires=("codes above 2-D",), headline=17),
    Metric("mean_norm", "‖mean code‖", CENTRE, "lower", **_NULL),
    Metric("gaussian_kl", "Gaussian KL to N(0,I)", CENTRE, "lower", headline=8, bar=3, **_NULL),
    Metric("share_in_95", "share in 95% ball", CENTRE, "target", 0.95, headline=9, bar=4, **_NULL),
    Metric("max_abs_skewness", "max |skewness|", CENTRE, "lower", **_NULL),
    Metric("max_radius", "max radius", CENTRE, "target", _max_radius, **_NULL),
    Metric("spread_ratio", "spread ratio", SPREAD, "lower"),
    Metric("spread_cv", "spread CV", SPREAD, "lower"),
    Metric("silhouette", "silhouette", SPREAD, "higher", headline=12),
    Metric("white_spread_ratio", "whitened spread ratio", SPREAD, "lower", headline=10),
    Metric("white_spread_cv", "whitened spread CV", SPREAD, "lower", headline=11, bar=5),
    Metric("white_silhouette", "whitened silhouette", SPREAD, "higher"),
    # Claim 2 against its null: p-values of each statistic among simulated N(0, I) code sets of the
    # same size (the null's 95% ranges are in the evaluation's "null_ranges"). Not ranked: a p-value
    # says how surprising a value is under N(0, I), not how good it is.
    *(Metric(f"null_p_{key}", f"N(0,I) p-value: {label}", CENTRE) for key, label in (
        ("mean_norm", "‖mean code‖"), ("gaussian_kl", "Gaussian KL"), ("share_in_95", "share in 95% ball"),
        ("max_abs_skewness", "max |skewness|"), ("max_radius", "max radius"), ("mardia_skewness", "Mardia skewness"),
        ("mardia_kurtosis", "Mardia kurtosis"), ("mmd_normal", "MMD"))),
    Metric("mardia_skewness", "Mardia skewness", CENTRE, "target", _mardia_skewness),
    Metric("mardia_kurtosis", "Mardia kurtosis", CENTRE, "target", _mardia_kurtosis),
    Metric("mmd_normal", "MMD² to N(0,I)", CENTRE, "lower"),
    # The same statistics of one posterior draw per test image: a sample of the aggregate posterior.
    Metric("sampled_mean_norm", "sampled codes: ‖mean‖", CENTRE, "lower", **_NULL),
    Metric("sampled_gaussian_kl", "sampled codes: Gaussian KL to N(0,I)", CENTRE, "lower", **_NULL),
    Metric("sampled_share_in_95", "sampled codes: share in 95% ball", CENTRE, "target", 0.95, **_NULL),
    Metric("sampled_max_abs_skewness", "sampled codes: max |skewness|", CENTRE, "lower", **_NULL),
    Metric("sampled_max_radius", "sampled codes: max radius", CENTRE, "target", _max_radius, **_NULL),
    Metric("sampled_mardia_skewness", "sampled codes: Mardia skewness", CENTRE, "target", _mardia_skewness, **_NULL),
    Metric("sampled_mardia_kurtosis", "sampled codes: Mardia kurtosis", CENTRE, "target", _mardia_kurtosis, **_NULL),
    Metric("sampled_mmd_normal", "sampled codes: MMD² to N(0,I)", CENTRE, "lower", **_NULL),
    *(Metric(f"null_p_sampled_{key}", f"N(0,I) p-value, sampled codes: {key.replace('_', ' ')}", CENTRE) for key in (
        "mean_norm", "gaussian_kl", "share_in_95", "max_abs_skewness", "max_radius", "mardia_skewness",
        "mardia_kurtosis", "mmd_normal")),
    # ELBO surgery over the aggregate posterior of the encoded training images (I(x; z) <= log of their count).
    # Claim 2's primary: the aggregate posterior (every training posterior) against the prior, exact on a
    # converged grid in 2-D; its floor is the same estimator on a hole-free mixture of as many posteriors.
    Metric("aggregate_kl", "KL(q(z) ‖ p(z))", CENTRE, "target", 0.0, requires=("probabilistic guide",), unit="nats"),
    Metric("aggregate_kl_floor", "KL(q(z) ‖ p(z)) of an ideal q, same N", CENTRE, requires=("probabilistic guide",), unit="nats"),
    Metric("mutual_information", "I(x; z)", CENTRE, requires=("probabilistic guide",), unit="nats"),
    Metric("avg_kl", "mean KL(q(z|x) ‖ p(z))", CENTRE, requires=("probabilistic guide",), unit="nats"),
    # Claim 3: half the log det of each class's robust covariance; its sd over the classes, with a
    # bootstrap interval.
    Metric("logdet_spread_sd", "sd of class log-volumes", SPREAD, "lower"),
    Metric("logdet_spread_sd_low", "sd of class log-volumes, 2.5%", SPREAD),
    Metric("logdet_spread_sd_high", "sd of class log-volumes, 97.5%", SPREAD),
    Metric("log_px_exact_fitted", "log p(x) exact, fitted-Gaussian prior", LIKELIHOOD, "higher",
           requires=("2-D codes",), unit=NATS, point=True),
    # Claim 1, measured directly: codes by one recipe inside the training codes' hull; fidelity is
    # k-NN precision or re-encoding error relative to the model's own reconstructions (1 = as good).
    Metric("hole_precision", "recipe codes: k-NN precision / recon", HOLES, "higher"),
    Metric("hole_reencode", "recipe codes: re-encoding error / recon", HOLES, "lower"),
    # Claim 1's primary: fidelity of the decodes of the farthest tenth of the recipe codes (by distance to
    # the nearest training code) against the nearest tenth.
    Metric("far_precision_drop", "precision / recon, nearest − farthest tenth", HOLES, "lower"),
    Metric("far_reencode_rise", "re-encoding error / recon, farthest − nearest tenth", HOLES, "lower"),
    Metric("near_band_distance", "nearest tenth: mean distance (spacings)", HOLES),
    Metric("far_band_distance", "farthest tenth: mean distance (spacings)", HOLES),
    Metric("hole_mass_fitted", "hole mass under the fitted Gaussian (void test)", HOLES, "lower"),
    Metric("hole_mass_prior", "hole mass under the prior (void test)", HOLES, "lower", requires=("trained prior",)),
    Metric("hole_resolution_fitted", "void radius, fitted Gaussian (spacings)", HOLES),
    Metric("hole_resolution_prior", "void radius, prior (spacings)", HOLES, requires=("trained prior",)),
    Metric("perturb_precision_drop", "precision drop at 1 spread of noise", HOLES, "lower"),
    Metric("perturb_reencode_at_1", "re-encoding error at 1 spread of noise / at 0", HOLES, "lower"),
    Metric("hole_share_inside_hull", "recipe draws inside the hull", HOLES),
    Metric("hole_neighbour_distance", "recipe codes: median distance to a training code (spacings)", HOLES),
]

def sample_key(sampler: str, quality: str) -> str:
    return f"{sampler}_{quality}"


# Sample quality: every sampler's images get every score, so these rows are a product of two tables.
SAMPLERS = {"prior": "prior", "box": "box", "mid_same": "midpoint same-class", "mid_diff": "midpoint diff-class",
            "recon": "reconstruction", "real": "real images"}
# Reference rows, shown beside every sample-quality number and never ranked: the held-out half of the
# real test images scored against the other half, and the model's reconstructions of that half.
REFERENCE_SAMPLERS = ("real", "recon")
QUALITIES: dict[str, dict] = {
    "precision": dict(label="k-NN precision", better="higher"),
    "fid": dict(label="FID", better="lower"),
    "confidence": dict(label="confidence", better="higher"),
    "label_entropy": dict(label="label entropy", better="target", target=lambda n_classes, n_codes, latent_dim:
                          math.log(n_classes)),  # uniform over the classes: every class generated alike
    "class_coverage": dict(label="class coverage", better="higher"),
}
_PLACES = {"prior_fid": dict(headline=13, bar=1), "prior_confidence": dict(headline=14, bar=2),
           "prior_label_entropy": dict(headline=15), "box_fid": dict(headline=16)}
_ROWS += [Metric(sample_key(s, q), f"{s_label} {spec['label']}", QUALITY, spec["better"], spec.get("target"),
                 sampler=s, quality=q, **_PLACES.get(sample_key(s, q), {}))
          for s, s_label in SAMPLERS.items() for q, spec in QUALITIES.items()]

# Midpoint FID over the FID of as many reconstructions: what the midpoints lose beyond the model's blur.
_ROWS += [Metric(f"{s}_fid_ratio", f"{SAMPLERS[s]} FID / recon FID", QUALITY, "lower") for s in ("mid_same", "mid_diff")]

# Bookkeeping: numbers worth recording that are better neither way.
_ROWS += [
    Metric("epochs_trained", "epochs trained", BOOKKEEPING),
    Metric("classifier_accuracy", "classifier test accuracy", BOOKKEEPING),
    Metric("code_spread", "training codes' spread", BOOKKEEPING),
    Metric("recon_reencode", "reconstructions' re-encoding error (spreads)", BOOKKEEPING),
    Metric("grid_points", "grid points", BOOKKEEPING, requires=("2-D codes",)),
    Metric("grid_step", "KL(q(z) ‖ p(z)) grid step", BOOKKEEPING, requires=_PROBABILISTIC_2D),
    Metric("grid_cells", "KL(q(z) ‖ p(z)) grid cells per axis", BOOKKEEPING, requires=_PROBABILISTIC_2D),
    Metric("grid_mass", "KL(q(z) ‖ p(z)) grid: mass of q(z)", BOOKKEEPING, requires=_PROBABILISTIC_2D),
    Metric("train_codes_used", "training codes (hull, distances, holes, q(z))", BOOKKEEPING),
    Metric("code_spacing", "median nearest-neighbour spacing / spread", BOOKKEEPING),
    Metric("eval_seconds", "evaluation seconds", BOOKKEEPING),
    Metric("train_seconds", "training seconds", BOOKKEEPING),
    Metric("active_units_threshold", "active units threshold", BOOKKEEPING, requires=("codes above 2-D",)),
    Metric("active_units_latent_dim", "active units latent dim", BOOKKEEPING, requires=("codes above 2-D",)),
]

METRICS: dict[str, Metric] = {m.key: m for m in _ROWS}


def metric(key: str) -> Metric:
    """The metric of that key; a key missing from the table (a plugin's number) is shown as bookkeeping."""
    return METRICS.get(key) or Metric(key, key.replace("_", " "), BOOKKEEPING)


def direction(key: str, n_classes: int = 10, n_codes: int | None = None,
              latent_dim: int | None = None) -> tuple[str | None, float | None]:
    """("lower" | "higher" | "target" | None, target value) for a metric key.

    Targets that depend on the data (max_radius on the code count and size) are None without it.
    """
    m = metric(key)
    if m.better != "target":
        return m.better, None
    target = m.target(n_classes, n_codes, latent_dim) if callable(m.target) else m.target
    return ("target", float(target)) if target is not None else (None, None)


def _scalar(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def flat_metrics(result: dict) -> dict[str, float]:
    """Every scalar number of a run's results (a results.json entry): evaluation, final bounds, seconds."""
    out = {k: float(v) for k, v in result["evaluation"].items() if _scalar(v)}
    if "pareto_k_share_above_0_7" in out and not math.isfinite(out.get("pareto_k_median", math.nan)):
        out["pareto_k_share_above_0_7"] = math.nan  # no k was fitted (too few samples): untested, not 0
        if "pareto_k_share_above_threshold" in out:
            out["pareto_k_share_above_threshold"] = math.nan
    for key in ("final_train_elbo", "final_test_elbo", "train_seconds"):
        if _scalar(result.get(key)):
            out[key] = float(result[key])
    return out


def requirements_met(config: dict, evaluation: dict) -> set[str]:
    """The names in REQUIREMENTS that a run with this config and evaluation meets."""
    return {name for name, holds in REQUIREMENTS.items() if holds(config, evaluation)}


def ranked(key: str, met: set[str] | None) -> bool:
    """Whether a variant meeting ``met`` (None: unknown, taken as all) may have its value ranked."""
    return met is None or set(metric(key).ranked_when) <= set(met)


def expected_keys(config: dict, evaluation: dict) -> set[str]:
    """The metric keys a run with this config and evaluation should have, by the table's requirements."""
    return {m.key for m in METRICS.values() if all(REQUIREMENTS[r](config, evaluation) for r in m.requires)}


def headline_summary(evaluation: dict) -> list[str]:
    """A few readable lines of a run's evaluation: its headline metrics, one line per group, in table order."""
    lines = []
    for group in GROUPS:
        shown = sorted((m for m in METRICS.values() if m.group == group and m.headline and _scalar(evaluation.get(m.key))),
                       key=lambda m: m.headline)
        units = ", ".join(dict.fromkeys(m.unit for m in shown if m.unit))  # said once per line, not per number
        if shown:
            lines.append(f"{group}{f' ({units})' if units else ''}: "
                         + ", ".join(f"{m.label} {evaluation[m.key]:.4g}" for m in shown))
    return lines
