"""Claim 2 against its null: are a model's codes like N(0, I) draws of the same size? (The aggregate
posterior's divergence from the prior, ELBO surgery, is evaluation/aggregate.py.)

Every statistic of :func:`null_statistics` is computed on `draws` simulated N(0, I) samples of the
codes' size: its null 95% range and a two-sided simulation p-value stand beside the code's value, so
"0.80 inside the 95% ball" reads against what 10,000 true N(0, I) codes give. Mardia's multivariate
skewness and kurtosis are affine invariant (no axis or rotation chosen); the MMD test compares the
whole distribution with N(0, I), location and scale included.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.stats

__all__ = ["NULL_STATISTICS", "mardia", "null_statistics", "null_test", "mmd_standard_normal", "mmd_test"]

NULL_STATISTICS = ("mean_norm", "gaussian_kl", "share_in_95", "max_abs_skewness", "max_radius",
                   "mardia_skewness", "mardia_kurtosis")


_ELEMENTS = 2**22  # numbers per block of simulated code sets


def _statistics(x: np.ndarray) -> dict[str, np.ndarray]:
    """Each of NULL_STATISTICS for code sets x of shape (..., n, d): arrays of shape (...,). The centre
    statistics are those of :func:`pyro_vae.evaluation.latent.centre_metrics`, here batched."""
    n, d = x.shape[-2:]
    mean = x.mean(-2)
    c = x - mean[..., None, :]
    cov = np.einsum("...ni,...nj->...ij", c, c) / (n - 1)
    sign, logdet = np.linalg.slogdet(cov)
    kl = np.where(sign > 0, 0.5 * (np.trace(cov, axis1=-2, axis2=-1) + (mean**2).sum(-1) - d - logdet), np.inf)
    sq = (x**2).sum(-1)
    m2, m3 = (c**2).mean(-2), (c**3).mean(-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.nan_to_num(m3 / m2**1.5, nan=0.0)
    # Mardia: codes standardised by their own mean and (maximum-likelihood) covariance.
    evals, evecs = np.linalg.eigh(cov * (n - 1) / n)
    w = c @ ((evecs / np.sqrt(np.maximum(evals, 1e-300))[..., None, :]) @ np.swapaxes(evecs, -1, -2))
    # sum_ij (w_i . w_j)^3 / n^2 = sum_abc (mean_i w_ia w_ib w_ic)^2: O(n d^3), not O(n^2).
    third = np.stack([np.swapaxes(w * w[..., [a]], -1, -2) @ w for a in range(d)], -3) / n
    return {"mean_norm": np.sqrt((mean**2).sum(-1)), "gaussian_kl": kl,
            "share_in_95": (sq <= scipy.stats.chi2.ppf(0.95, d)).mean(-1), "max_abs_skewness": np.abs(skew).max(-1),
            "max_radius": np.sqrt(sq.max(-1)), "mardia_skewness": (third**2).sum((-3, -2, -1)),
            "mardia_kurtosis": ((w**2).sum(-1) ** 2).mean(-1)}


def mardia(codes: np.ndarray) -> tuple[float, float]:
    """Mardia's b1 (skewness: 0 for any Gaussian, about d(d+1)(d+2)/n for n draws) and b2 (kurtosis:
    d(d+2) for a Gaussian), on the codes standardised by their own mean and covariance."""
    stats = _statistics(np.asarray(codes, dtype=np.float64))
    return float(stats["mardia_skewness"]), float(stats["mardia_kurtosis"])


def null_statistics(codes: np.ndarray) -> dict[str, float]:
    """The centre and shape statistics that have an N(0, I) null."""
    return {k: float(v) for k, v in _statistics(np.asarray(codes, dtype=np.float64)).items()}


@functools.lru_cache(maxsize=16)
def _null(n: int, d: int, draws: int, seed: int) -> dict[str, np.ndarray]:
    """The statistics of `draws` N(0, I) sets of n codes (cached: every run of a study shares them)."""
    rng = np.random.default_rng(seed)
    block = max(1, _ELEMENTS // (n * d))
    parts = [_statistics(rng.standard_normal((min(block, draws - i), n, d))) for i in range(0, draws, block)]
    return {k: np.concatenate([p[k] for p in parts]) for k in NULL_STATISTICS}


def _two_sided_p(value: float, null: np.ndarray) -> float:
    above, below = np.sum(null >= value), np.sum(null <= value)
    return float(min(1.0, 2 * (1 + min(above, below)) / (len(null) + 1)))


def null_test(codes: np.ndarray, draws: int = 200, seed: int = 0) -> tuple[dict, dict, dict]:
    """({statistic: value}, {statistic: two-sided p-value}, {statistic: [2.5%, 97.5%] of its null})
    against `draws` samples of N(0, I) as large as the codes."""
    codes = np.asarray(codes, dtype=np.float64)
    observed = null_statistics(codes)
    null = _null(*codes.shape, draws, seed)
    return (observed, {k: _two_sided_p(observed[k], null[k]) for k in NULL_STATISTICS},
            {k: [float(v) for v in np.percentile(null[k], [2.5, 97.5])] for k in NULL_STATISTICS})


def mmd_standard_normal(codes: np.ndarray, bandwidth: float = 1.0) -> float:
    """Unbiased squared MMD between the codes and N(0, I) with the kernel exp(-|a - b|^2 / (2 bw^2)).

    The N(0, I) side is exact: E_y k(x, y) = (bw^2 / (bw^2 + 1))^(d/2) exp(-|x|^2 / (2 (bw^2 + 1))) and
    E k(y, y') = (bw^2 / (bw^2 + 2))^(d/2), so only the codes' own pairs are summed.
    """
    x = np.asarray(codes, dtype=np.float64)
    n, d = x.shape
    b2 = bandwidth**2
    sq = np.einsum("ij,ij->i", x, x)
    gram = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0) / (2 * b2))
    within = (gram.sum() - n) / (n * (n - 1))
    cross = (b2 / (b2 + 1)) ** (d / 2) * np.exp(-sq / (2 * (b2 + 1))).mean()
    return float(within - 2 * cross + (b2 / (b2 + 2)) ** (d / 2))


@functools.lru_cache(maxsize=16)
def _mmd_null(n: int, d: int, draws: int, seed: int, bandwidth: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([mmd_standard_normal(rng.standard_normal((n, d)), bandwidth) for _ in range(draws)])


def mmd_test(codes: np.ndarray, draws: int = 200, seed: int = 0, max_codes: int = 500,
             bandwidth: float = 1.0) -> tuple[float, float]:
    """(MMD^2 of up to max_codes seeded codes against N(0, I), its one-sided simulation p-value)."""
    codes = np.asarray(codes, dtype=np.float64)
    if len(codes) > max_codes:
        codes = codes[np.random.default_rng(seed).choice(len(codes), max_codes, replace=False)]
    value = mmd_standard_normal(codes, bandwidth)
    null = _mmd_null(*codes.shape, draws, seed + 1, bandwidth)
    return value, float((1 + np.sum(null >= value)) / (draws + 1))
