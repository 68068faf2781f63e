"""Numbers for the claims about latent code spaces.

All functions take plain numpy arrays -- ``codes`` of shape (N, d) and
``labels`` of shape (N,) -- and return flat dicts of JSON-serialisable
floats (lists of floats for per-axis / per-class values), so results can be
written straight into a report.

Claims they quantify (AE vs MAP-AE vs VAE):

* centring / boundedness: :func:`centre_metrics` (a VAE's aggregate codes
  should look like N(0, I));
* even class spreads: :func:`spread_metrics`, also after whitening so a model
  cannot look "even" just by shrinking or stretching its whole space;
* sample quality in a feature space: :func:`frechet_distance`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg
import scipy.stats
from sklearn.covariance import MinCovDet
from sklearn.metrics import silhouette_score

__all__ = [
    "centre_metrics",
    "spread_metrics",
    "frechet_distance",
    "latent_metrics",
    "whiten",
    "logdet_spread",
]


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------

def _check_codes(codes, name: str = "codes", min_rows: int = 2) -> np.ndarray:
    """Return ``codes`` as a finite float64 (N, d) array or raise ValueError."""
    arr = np.asarray(codes, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, d); got shape {arr.shape}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ValueError(
            f"{name} needs at least {min_rows} rows and 1 column; got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_labels(labels, n: int) -> np.ndarray:
    """Return ``labels`` as a 1-D array of length ``n`` with >= 2 classes."""
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be a 1-D array (N,); got shape {lab.shape}")
    if lab.shape[0] != n:
        raise ValueError(f"codes and labels differ in length: {n} codes vs {lab.shape[0]} labels")
    if np.unique(lab).size < 2:
        raise ValueError("labels must contain at least 2 distinct classes")
    return lab


def _mean_cov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d), also for d == 1."""
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


# --------------------------------------------------------------------------
# centring
# --------------------------------------------------------------------------

def centre_metrics(codes) -> dict:
    """How close the code cloud is to the N(0, I) prior.

    Returns
    -------
    dict with
      ``mean_norm``: Euclidean norm of the mean code (0 for a centred cloud);
      ``gaussian_kl``: KL( N(mean, cov) || N(0, I) ), closed form, in nats;
      ``share_in_95``: share of codes inside the 95% ball of N(0, I)
      (squared norm <= chi2.ppf(0.95, d)); 0.95 for prior-like codes;
      ``skewness`` (per axis) and ``max_abs_skewness``;
      ``max_radius``: largest code norm (boundedness).
    """
    x = _check_codes(codes)
    d = x.shape[1]
    mean, cov = _mean_cov(x)

    # KL(N(m, S) || N(0, I)) = 0.5 * (tr S + m.m - d - log det S).
    # slogdet gives -inf for a degenerate cloud -> KL = inf, which is the honest
    # answer (a collapsed code space is infinitely far from the prior).
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        kl = float("inf")
    else:
        kl = 0.5 * (np.trace(cov) + mean @ mean - d - logdet)

    sq_norm = np.einsum("ij,ij->i", x, x)
    threshold = scipy.stats.chi2.ppf(0.95, d)
    # Constant axes make skew undefined (nan); report 0 so the dict stays JSON-clean.
    skew = np.nan_to_num(scipy.stats.skew(x, axis=0), nan=0.0)

    return {
        "mean_norm": float(np.linalg.norm(mean)),
        "gaussian_kl": float(kl),
        "share_in_95": float(np.mean(sq_norm <= threshold)),
        "skewness": [float(s) for s in skew],
        "max_abs_skewness": float(np.max(np.abs(skew))),
        "max_radius": float(np.sqrt(sq_norm.max())),
    }


# --------------------------------------------------------------------------
# class spreads
# --------------------------------------------------------------------------

def whiten(codes, eps: float = 1e-12) -> np.ndarray:
    """Centre ``codes`` and multiply by cov^(-1/2) so the result has identity covariance.

    Eigenvalues are floored at ``eps`` so degenerate axes do not blow up to inf.
    """
    x = _check_codes(codes)
    mean, cov = _mean_cov(x)
    evals, evecs = np.linalg.eigh(cov)
    inv_sqrt = (evecs / np.sqrt(np.maximum(evals, eps))) @ evecs.T
    return (x - mean) @ inv_sqrt


def _spread(x: np.ndarray, labels: np.ndarray, sample_size: int | None, seed: int) -> dict:
    classes = np.unique(labels)  # sorted
    spreads = np.array([
        # RMS distance of a class's codes to that class's centre.
        np.sqrt(np.mean(np.sum((x[labels == c] - x[labels == c].mean(axis=0)) ** 2, axis=1)))
        for c in classes
    ])
    n = x.shape[0]
    # Full silhouette is O(N^2); subsample for speed, seeded for reproducibility.
    sub = sample_size if sample_size is not None and sample_size < n else None
    sil = silhouette_score(x, labels, sample_size=sub, random_state=seed)
    smin = spreads.min()
    return {
        "class_spread": [float(s) for s in spreads],
        "spread_ratio": float(spreads.max() / smin) if smin > 0 else float("inf"),
        "spread_cv": float(spreads.std() / spreads.mean()) if spreads.mean() > 0 else 0.0,
        "silhouette": float(sil),
    }


def spread_metrics(codes, labels, sample_size: int | None = 2000, seed: int = 0) -> dict:
    """Per-class spread of the codes, raw and after whitening.

    Returns
    -------
    dict with ``class_spread`` (RMS distance to class centre, one per class in
    sorted label order), ``spread_ratio`` (max/min; 1 = all classes equally
    spread), ``spread_cv`` (std/mean of the spreads), ``silhouette``
    (sklearn, on up to ``sample_size`` seeded points), and the same four keys
    prefixed ``white_`` computed on :func:`whiten`-ed codes, which are
    invariant to any global affine rescaling of the code space.
    """
    x = _check_codes(codes)
    lab = _check_labels(labels, x.shape[0])
    out = _spread(x, lab, sample_size, seed)
    white = _spread(whiten(x), lab, sample_size, seed)
    out.update({f"white_{k}": v for k, v in white.items()})
    return out


# --------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------

def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (as in FID).

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).
    If the matrix square root is not finite (singular covariances), ``eps`` is
    added to both diagonals and it is retried; tiny imaginary parts coming from
    numerical error are dropped.
    """
    a = _check_codes(feats_a, "feats_a")
    b = _check_codes(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, cov_a = _mean_cov(a)
    mu_b, cov_b = _mean_cov(b)

    with warnings.catch_warnings():
        # sqrtm warns (and may return garbage) on singular products; treat that like
        # a non-finite result and retry with the eps offset, which makes both factors
        # positive definite.
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
            ok = np.all(np.isfinite(covmean))
        except scipy.linalg.LinAlgWarning:
            ok = False
    if not ok:
        offset = np.eye(cov_a.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        # Imaginary parts are rounding noise for PSD inputs; a large one means a bug.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * max(1.0, np.abs(covmean).max())):
            raise ValueError("matrix square root has a large imaginary component")
        covmean = covmean.real

    diff = mu_a - mu_b
    dist = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
    # Clamp tiny negative values caused by rounding (e.g. identical sets).
    return float(max(dist, 0.0))


# --------------------------------------------------------------------------

def latent_metrics(codes, labels, sample_size: int | None = 2000, seed: int = 0) -> dict:
    """All latent-space numbers: :func:`centre_metrics` merged with :func:`spread_metrics`."""
    out = centre_metrics(codes)
    out.update(spread_metrics(codes, labels, sample_size=sample_size, seed=seed))
    return out


# --------------------------------------------------------------------------
# class spread as a volume
# --------------------------------------------------------------------------

def _class_volume(members: np.ndarray, rng: np.random.Generator, max_per_class: int, seed: int) -> float:
    """1/2 log det of the robust covariance of up to max_per_class seeded codes of one class."""
    if len(members) > max_per_class:
        members = members[rng.choice(len(members), max_per_class, replace=False)]
    with warnings.catch_warnings():  # resampled codes repeat: FastMCD's "determinant has increased" is expected,
        warnings.simplefilter("ignore", RuntimeWarning)  # and its "not full rank" where a singular support is NaN below
        warnings.filterwarnings("ignore", "The covariance matrix associated to your dataset is not full rank")
        try:
            support = members[MinCovDet(random_state=seed).fit(members).support_]
        except ValueError:  # a support of zero covariance (a resample of a small class repeating few codes): no volume
            return math.nan
    centred = support - support.mean(0)
    volume = 0.5 * float(np.linalg.slogdet(centred.T @ centred / (len(support) - 1))[1])
    return volume if math.isfinite(volume) else math.nan


def logdet_spread(codes, labels, bootstrap: int = 50, max_per_class: int = 500, seed: int = 0) -> dict:
    """Spread of class c = 1/2 log det of its robust covariance; evenness = their sd over classes.

    The robust covariance of a class is the covariance of the support that sklearn's MinCovDet keeps
    (its reweighted inliers, about 97.5% of a Gaussian class), fitted on up to `max_per_class` seeded
    codes of the class (FastMCD's cost jumps above 500). A global linear map A adds log|det A| to
    every class's spread, so the evenness needs no whitening. Its 95% interval repeats the whole
    recipe `bootstrap` times on each class's codes resampled with replacement: a fresh subsample and
    a fresh MCD support each time, so the interval carries the subsample's and the support's variation.

    A class with too few codes for a robust covariance (at most 2(d + 1)), or whose robust covariance is
    singular, gets NaN and is left out of the evenness; with fewer than two classes left every number is
    NaN. A resample whose robust covariance is singular (a small class resampled into a few repeated
    codes) is left out of the interval, which is NaN when no resample is left.

    Returns ``class_logdet_spread`` (per class, sorted labels), ``logdet_spread_sd`` and its interval
    ``logdet_spread_sd_low`` / ``logdet_spread_sd_high``.
    """
    x = _check_codes(codes)
    lab = _check_labels(labels, x.shape[0])
    rng = np.random.default_rng(seed)
    classes = [x[lab == c] for c in np.unique(lab)]
    # too few codes for a robust covariance: NaN, as is a singular one
    per_class = [_class_volume(m, rng, max_per_class, seed) if len(m) > 2 * (x.shape[1] + 1) else math.nan for m in classes]
    members = [m for m, v in zip(classes, per_class) if math.isfinite(v)]
    if len(members) < 2:
        return {"class_logdet_spread": [math.nan] * len(classes), "logdet_spread_sd": math.nan,
                "logdet_spread_sd_low": math.nan, "logdet_spread_sd_high": math.nan}
    values = np.array([v for v in per_class if math.isfinite(v)])
    boot = np.array([np.std([_class_volume(m[rng.integers(len(m), size=len(m))], rng, max_per_class, seed + 1 + b)
                             for m in members]) for b in range(bootstrap)])
    boot = boot[np.isfinite(boot)]
    low, high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (np.nan, np.nan)
    return {"class_logdet_spread": [float(v) for v in per_class], "logdet_spread_sd": float(values.std()),
            "logdet_spread_sd_low": float(low), "logdet_spread_sd_high": float(high)}
