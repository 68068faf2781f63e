"""Holes in a code space, measured by one recipe for every model: where codes are drawn, how far each
lies from the codes the decoder was trained on, and how much of a reference density's mass lies in
empty regions.

Arrays in, arrays out (numpy, float64). The training codes are what the decoder saw: one code per
training image (a delta guide's code; one draw of q(z|x) for a Gaussian guide, so that together they
are draws of the aggregate posterior q(z) that the KL term shapes). Both models get the same
estimators on the same number of codes:

- **Distance** from a point to its nearest training code, in units of the training codes' median
  nearest-neighbour spacing: scale-free (a model that stretches its code space gets the same numbers)
  and fixed by the code count, which is the same on both sides.
- **Hole mass**, the void test: a point is in a hole when its nearest training code is farther than
  the radius in which the reference density p (a Gaussian fitted to the codes) expects
  :data:`VOID_CODES` codes. For N codes drawn from a density q, the chance of that is exp(-VOID_CODES
  q / p) (a Poisson count), for any N: about 1 where q << p, e^-10 = 4.5e-5 where q = p, a soft step at
  q / p ~ 0.1. So the estimate needs no bandwidth, has a known false-hole rate, and converges as N
  grows; its resolution (that radius) is reported with it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy.spatial import Delaunay, QhullError, cKDTree

__all__ = ["fit_gaussian", "code_spread", "Hull", "recipe_codes", "CodeIndex", "hull_draws", "band_means",
           "nested_subsets", "hole_mass", "VOID_CODES", "CONVERGENCE_SIZES"]

VOID_CODES = 10.0  # codes the reference density expects in an empty ball before it counts as a hole
CONVERGENCE_SIZES = (2000, 10000)  # training-code counts a convergence table shows beside "all"


def fit_gaussian(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of the codes."""
    codes = np.asarray(codes, dtype=np.float64)
    return codes.mean(0), np.atleast_2d(np.cov(codes, rowvar=False))


def code_spread(codes: np.ndarray) -> float:
    """The codes' typical scale: the root mean variance per axis (a unit for distances between codes)."""
    return float(math.sqrt(np.trace(fit_gaussian(codes)[1]) / np.shape(codes)[1]))


class Hull:
    """Membership in the convex hull of the training codes.

    2-D: exact (a Delaunay triangulation). Otherwise (and for 2-D codes too degenerate to triangulate)
    the hull's outer polytope along `directions` random unit directions and the principal axes (both
    signs): a code is kept when no such direction sees it beyond every training code. Above 2-D this
    removes codes beyond the data along any of those directions and keeps a thin shell just outside.
    """

    def __init__(self, train: np.ndarray, directions: int = 256, seed: int = 0):
        train = np.asarray(train, dtype=np.float64)
        self.dim = train.shape[1]
        self._tri = None
        if self.dim == 2:
            try:
                self._tri = Delaunay(train)
                return
            except QhullError:  # all codes on a line (or too few): the polytope test still answers
                pass
        centre = train.mean(0)
        axes = np.linalg.eigh(np.atleast_2d(np.cov(train, rowvar=False)))[1].T
        random = np.random.default_rng(seed).standard_normal((directions if self.dim > 1 else 0, self.dim))
        u = np.concatenate([axes, random / np.linalg.norm(random, axis=1, keepdims=True)])
        self._u, self._centre = np.concatenate([u, -u]), centre
        self._reach = ((train - centre) @ self._u.T).max(0)

    def contains(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        if self._tri is not None:
            return self._tri.find_simplex(points) >= 0
        return np.all((points - self._centre) @ self._u.T <= self._reach + 1e-12, axis=1)


def hull_draws(hull: Hull, draw: Callable[[int], np.ndarray], n: int, oversample: int = 20) -> tuple[np.ndarray, float]:
    """The first n draws that fall inside the hull (fewer if `oversample` x n draws hold fewer), and the
    share of draws inside. Draws come in rounds sized by the share seen so far, so a source that mostly
    lands inside costs little more than n draws; `draw(m)` must return the first m of one seeded stream."""
    want, inside, tried = max(int(n), 0), 0, 0
    m = min(2 * want, oversample * want)
    while True:
        z = np.asarray(draw(m), dtype=np.float64)
        ok = hull.contains(z)
        inside, tried = int(ok.sum()), len(z)
        if inside >= want or m >= oversample * want:
            return z[ok][:want], inside / tried if tried else 0.0
        m = min(oversample * want, int(1.5 * want * tried / max(inside, 1)) + 1)


def recipe_codes(train: np.ndarray, n: int, seed: int, prior_sample: Callable[[int, int], np.ndarray] | None = None,
                 oversample: int = 20, hull: Hull | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """n codes by the shared recipe: (codes (m, d) with m <= n, source (m,) 0 fitted / 1 prior, share inside).

    Half the codes come from N(mean, cov) fitted to `train` and half from `prior_sample(count, seed)`
    when given (all from the fitted Gaussian otherwise); each source draws oversample x its share and
    keeps the draws inside the training codes' hull. `share inside` is the share of all draws kept.
    """
    hull = hull or Hull(train, seed=seed)
    mean, cov = fit_gaussian(train)
    rng = np.random.default_rng(seed)
    sources = [lambda m: rng.multivariate_normal(mean, cov, size=m)]
    if prior_sample is not None:
        sources.append(lambda m: np.asarray(prior_sample(m, seed + 1), dtype=np.float64))
    kept, labels, shares = [], [], []
    for i, draw in enumerate(sources):
        want = n // len(sources) + (i < n % len(sources))
        z, share = hull_draws(hull, draw, want, oversample)
        kept.append(z)
        labels.append(np.full(len(z), i))
        shares.append(share)
    return np.concatenate(kept), np.concatenate(labels), float(np.mean(shares))


class CodeIndex:
    """The training codes, indexed for nearest-neighbour questions: distances in spacings, the void test."""

    def __init__(self, train: np.ndarray):
        self.train = np.asarray(train, dtype=np.float64)
        self.n, self.dim = self.train.shape
        self._tree = cKDTree(self.train)
        spacing = self._tree.query(self.train, k=2)[0][:, 1]
        self.spacing = float(np.median(spacing))  # the codes' median nearest-neighbour distance

    def nearest(self, points: np.ndarray) -> np.ndarray:
        """Distance from each point to its nearest training code (in the codes' units)."""
        return self._tree.query(np.asarray(points, dtype=np.float64), k=1)[0]

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Distance to the nearest training code in median nearest-neighbour spacings (1: as close as
        training codes sit to each other)."""
        return self.nearest(points) / max(self.spacing, 1e-300)

    def void_radius(self, log_p: np.ndarray, codes: float = VOID_CODES) -> np.ndarray:
        """The radius of the ball in which N codes drawn from p would number `codes` on average."""
        unit_ball = math.pi ** (self.dim / 2) / math.gamma(self.dim / 2 + 1)
        return (codes / (self.n * unit_ball * np.exp(np.asarray(log_p, dtype=np.float64)))) ** (1.0 / self.dim)

    def in_void(self, points: np.ndarray, log_p: np.ndarray, codes: float = VOID_CODES) -> np.ndarray:
        """(n,) bool: no training code within the ball where p expects `codes` of them (see the module notes)."""
        return self.nearest(points) > self.void_radius(log_p, codes)


def band_means(key: np.ndarray, values: np.ndarray, bands: int = 10) -> np.ndarray:
    """Mean of `values` within each quantile band of `key`, lowest key first: (bands,)."""
    order = np.argsort(np.asarray(key), kind="stable")
    values = np.asarray(values, dtype=np.float64)
    return np.array([np.mean(values[part]) if len(part) else math.nan for part in np.array_split(order, bands)])


def nested_subsets(n: int, sizes: Sequence[int], seed: int) -> dict[int, np.ndarray]:
    """{size: indices}: the first `size` of one seeded permutation of range(n) for each size below n,
    and all n, so every smaller set lies inside the larger (a convergence table changes one thing)."""
    order = np.random.default_rng(seed).permutation(n)
    return {**{s: np.sort(order[:s]) for s in sizes if s < n}, n: np.arange(n)}


def hole_mass(codes: np.ndarray, draw: Callable[[int], np.ndarray], log_p: Callable[[np.ndarray], np.ndarray],
              draws: int, index: CodeIndex | None = None, hull: Hull | None = None) -> dict:
    """The void test (evaluation/holes.py) of `draws` draws of p kept inside the codes' hull:
    {"mass": share of them in a hole, "resolution": the median void radius in spacings}."""
    index = index or CodeIndex(codes)
    hull = hull or Hull(codes)
    z, _ = hull_draws(hull, draw, draws)
    if not len(z):
        return {"mass": math.nan, "resolution": math.nan}
    log_pz = log_p(z)
    return {"mass": float(index.in_void(z, log_pz).mean()),
            "resolution": float(np.median(index.void_radius(log_pz)) / max(index.spacing, 1e-300))}
