"""Holes in a code space, measured directly: where codes are sampled, how dense the training codes are
there, and what share of the prior's mass falls where the codes never go.

Arrays in, arrays out (numpy, float64). The sampling recipe is the same for every model, so an AE and
a VAE are judged on equal terms: draws from a Gaussian fitted to the model's training codes (and from
its prior, where it was trained with one), kept only inside the convex hull of the training codes, so
a bad decode there is a hole between codes rather than extrapolation beyond them.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.stats
import torch
from scipy.spatial import Delaunay, cKDTree

__all__ = ["fit_gaussian", "code_spread", "Hull", "recipe_codes", "neighbour_distance", "mixture_log_density",
           "kde_log_density", "decile_means", "hole_mass"]

HOLE_RATIO = 0.1  # q(z) / p(z) below this is a hole
BANDWIDTH_FACTORS = (1.0, 0.5, 0.25, 0.125)  # KDE bandwidths tried, relative to Scott's
_ELEMENTS = 2**22  # points x components per block of the mixture density


def fit_gaussian(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of the codes."""
    codes = np.asarray(codes, dtype=np.float64)
    return codes.mean(0), np.atleast_2d(np.cov(codes, rowvar=False))


def code_spread(codes: np.ndarray) -> float:
    """The codes' typical scale: the root mean variance per axis (a unit for distances between codes)."""
    return float(math.sqrt(np.trace(fit_gaussian(codes)[1]) / np.shape(codes)[1]))


class Hull:
    """Membership in the convex hull of the training codes.

    2-D (and 1-D): exact (a Delaunay triangulation; an interval). Above 2-D an exact hull of thousands
    of points is too costly, so the test is the hull's outer polytope along `directions` random unit
    directions and the principal axes (both signs): a code is kept when no such direction sees it
    beyond every training code. This removes codes beyond the data along any of those directions and
    keeps a thin shell just outside the true hull.
    """

    def __init__(self, train: np.ndarray, directions: int = 256, seed: int = 0):
        train = np.asarray(train, dtype=np.float64)
        self.dim = train.shape[1]
        if self.dim == 2:
            self._tri = Delaunay(train)
            return
        centre = train.mean(0)
        axes = np.linalg.eigh(np.atleast_2d(np.cov(train, rowvar=False)))[1].T
        random = np.random.default_rng(seed).standard_normal((directions if self.dim > 1 else 0, self.dim))
        u = np.concatenate([axes, random / np.linalg.norm(random, axis=1, keepdims=True)])
        self._u, self._centre = np.concatenate([u, -u]), centre
        self._reach = ((train - centre) @ self._u.T).max(0)

    def contains(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        if self.dim == 2:
            return self._tri.find_simplex(points) >= 0
        return np.all((points - self._centre) @ self._u.T <= self._reach, axis=1)


def recipe_codes(train: np.ndarray, n: int, seed: int, prior_sample: Callable[[int, int], np.ndarray] | None = None,
                 oversample: int = 20) -> tuple[np.ndarray, np.ndarray, float]:
    """n codes by the shared recipe: (codes (m, d) with m <= n, source (m,) 0 fitted / 1 prior, share inside).

    Half the codes come from N(mean, cov) fitted to `train` and half from `prior_sample(count, seed)`
    when given (all from the fitted Gaussian otherwise); each source draws oversample x its share and
    keeps the draws inside the training codes' hull. `share inside` is the share of all draws kept.
    """
    hull = Hull(train, seed=seed)
    mean, cov = fit_gaussian(train)
    rng = np.random.default_rng(seed)
    sources = [lambda m: rng.multivariate_normal(mean, cov, size=m)]
    if prior_sample is not None:
        sources.append(lambda m: np.asarray(prior_sample(m, seed + 1), dtype=np.float64))
    kept, labels, inside, drawn = [], [], 0, 0
    for i, draw in enumerate(sources):
        want = n // len(sources) + (i < n % len(sources))
        z = draw(oversample * want)
        ok = hull.contains(z)
        inside, drawn = inside + int(ok.sum()), drawn + len(z)
        kept.append(z[ok][:want])
        labels.append(np.full(len(kept[-1]), i))
    return np.concatenate(kept), np.concatenate(labels), inside / max(drawn, 1)


def neighbour_distance(train: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest training code, in units of the training codes' median
    nearest-neighbour spacing (1: as close as training codes sit to each other)."""
    tree = cKDTree(np.asarray(train, dtype=np.float64))
    spacing = float(np.median(tree.query(train, k=2)[0][:, 1]))
    return tree.query(np.asarray(points, dtype=np.float64), k=1)[0] / max(spacing, 1e-300)


def mixture_log_density(points: np.ndarray, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """log q(z) for q = the equal-weight mixture of N(means_i, diag scales_i^2): the aggregate posterior
    of a Gaussian guide over the images whose posteriors these are (exact for a diagonal guide)."""
    z, mu, s = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (points, means, scales))
    inv = 1.0 / s**2
    const = -0.5 * (mu**2 * inv).sum(1) - s.log().sum(1) - 0.5 * mu.shape[1] * math.log(2 * math.pi)
    block = max(1, _ELEMENTS // len(mu))
    # -0.5 sum_d (z - mu)^2 / s^2 expanded into matrix products over the components.
    return torch.cat([torch.logsumexp(torch.addmm(const, zb, (mu * inv).T).sub_(0.5 * (zb**2) @ inv.T), 1)
                      for zb in z.split(block)]).numpy() - math.log(len(mu))


def kde_log_density(points: np.ndarray, train: np.ndarray, seed: int = 0) -> np.ndarray:
    """log of a Gaussian KDE of the training codes: a delta guide's aggregate posterior is a set of
    points, so its density is only defined once smoothed. Scott's bandwidth follows the codes' global
    covariance and fills the gaps between clusters (it would hide the very holes measured), so the
    bandwidth is Scott's times the factor in BANDWIDTH_FACTORS that gives a random half of the codes
    the highest likelihood under a KDE of the other half."""
    train = np.asarray(train, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(train))
    fit, held = train[order[: len(train) // 2]], train[order[len(train) // 2 :]]
    scott = len(fit) ** (-1.0 / (train.shape[1] + 4))
    best = max(BANDWIDTH_FACTORS, key=lambda f: scipy.stats.gaussian_kde(fit.T, scott * f).logpdf(held.T).mean())
    factor = best * len(train) ** (-1.0 / (train.shape[1] + 4))
    return scipy.stats.gaussian_kde(train.T, factor).logpdf(np.asarray(points, dtype=np.float64).T)


def decile_means(density: np.ndarray, values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Mean of `values` within each quantile bin of `density`, lowest density first: (bins,)."""
    order = np.argsort(np.asarray(density), kind="stable")
    return np.array([np.mean(np.asarray(values, dtype=np.float64)[part]) for part in np.array_split(order, bins)])


def hole_mass(log_q: np.ndarray, log_p: np.ndarray, ratio: float = HOLE_RATIO) -> float:
    """Share of draws from p where q / p < ratio: the Monte Carlo estimate of p's mass in the holes of q
    (both log densities evaluated at the same draws from p)."""
    return float(np.mean(np.asarray(log_q) - np.asarray(log_p) < math.log(ratio)))
